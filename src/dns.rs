//! DNS upstream selection for the forwarder at network + 3, the local answers of bridge
//! networks (container names and aliases), and the failover of one query across upstreams.
//!
//! The forwarder is byte-transparent: a query the container sends to the DNS address over UDP
//! or TCP goes unchanged to an upstream from a host socket, and answers come back with the
//! DNS address as their source. This module decides *which* upstreams, in which order:
//!
//! - the servers of the longest `--dns-route DOMAIN=IP[:PORT]` whose domain holds the query's
//!   name (split-horizon: a VPN's resolver for its domains), else
//! - fixed ones from `--dns-upstream`, or the host's `/etc/resolv.conf` nameservers, re-read
//!   whenever the file changes (checked at most once a second, when a query is routed);
//! - in their given order, except that a server which recently left a query unanswered or
//!   refused it ([`Health`], for [`DOWN_FOR`]) is asked after the others.
//!
//! [`Queries`] then tries a UDP query on them in turn: the next one when the one asked is
//! silent for [`TRY_TIMEOUT`], refuses (ICMP), or answers SERVFAIL or REFUSED; the first
//! other answer goes to the container; after [`QUERY_TIMEOUT`] it gets the last error answer
//! heard or SERVFAIL. A TCP connection connects to the first server of the default list (no
//! name is known at its SYN); with routes, the first query's name ([`tcp_question`]) may move
//! it to a route's server before any byte is written. TCP queries do not fail over.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::config::DnsUpstreams;

/// How long the upstream asked may leave a query unanswered before the next one is asked
/// (the one asked first may still answer).
pub const TRY_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a query may wait for any upstream before the container gets an answer anyway (so
/// silent upstreams cost a client seconds, not its whole retry schedule).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a server that was silent or refused is asked after the others.
pub const DOWN_FOR: Duration = Duration::from_secs(30);
/// Queries tracked per container endpoint (the oldest beyond this are forgotten: no failover,
/// no SERVFAIL, and their late answers are dropped).
pub const PENDING_MAX: usize = 64;

/// Extracts the nameservers of a resolv.conf text, in order, as port-53 addresses. A
/// link-local IPv6 server keeps its interface (`fe80::1%eth0`, as routers announce by RA);
/// one whose interface does not exist is skipped.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "nameserver").then_some(())?;
            let server = w.next()?;
            server.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)).or_else(|| scoped(server, 53))
        })
        .collect()
}

/// `ADDR%IFACE` (or `ADDR%INDEX`), an IPv6 address on one interface, as a socket address on
/// `port`; `None` unless it is one and the interface exists.
pub fn scoped(text: &str, port: u16) -> Option<SocketAddr> {
    let (addr, scope) = text.split_once('%')?;
    let ip: Ipv6Addr = addr.parse().ok()?;
    let index = match scope.parse::<u32>() {
        Ok(i) => i,
        Err(_) => nix::net::if_::if_nametoindex(scope).ok()?,
    };
    (index != 0).then(|| std::net::SocketAddrV6::new(ip, port, 0, index).into())
}

/// A domain whose names are resolved by a server of its own (`--dns-route DOMAIN=IP[:PORT]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Lowercase, without the final dot (`corp.example`).
    pub domain: String,
    /// The server asked for names in it.
    pub server: SocketAddr,
}

impl Route {
    /// Whether `name` (lowercase, no final dot) is the domain or a name inside it.
    fn holds(&self, name: &str) -> bool {
        name.strip_suffix(self.domain.as_str()).is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.domain, self.server)
    }
}

/// Which upstreams recently failed a query (silent for [`TRY_TIMEOUT`], or refused), shared
/// by the data-path threads' selectors and their DNS flows, with their queries' counters.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<HealthInner>);

#[derive(Debug, Default)]
struct HealthInner {
    down: Mutex<HashMap<SocketAddr, Instant>>,
    /// UDP queries to the forwarder, moved on to another upstream, answered by warren.
    counts: [std::sync::atomic::AtomicU64; 3],
}

/// The DNS forwarder's counters (`warren stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// UDP queries the container sent to the forwarder.
    pub queries: u64,
    /// Times a query went on to another upstream (silence, refusal, an error answer).
    pub failovers: u64,
    /// Queries no upstream answered, given SERVFAIL (or the last error answer) by warren.
    pub unanswered: u64,
}

impl Health {
    /// Adds to the counters.
    pub fn count(&self, c: Counts) {
        use std::sync::atomic::Ordering::Relaxed;
        for (a, n) in self.0.counts.iter().zip([c.queries, c.failovers, c.unanswered]) {
            if n > 0 {
                a.fetch_add(n, Relaxed);
            }
        }
    }

    /// The counters so far.
    pub fn counts(&self) -> Counts {
        use std::sync::atomic::Ordering::Relaxed;
        let [q, f, u] = &self.0.counts;
        Counts { queries: q.load(Relaxed), failovers: f.load(Relaxed), unanswered: u.load(Relaxed) }
    }

    /// `server` failed a query at `now`: it is asked last for [`DOWN_FOR`].
    pub fn failed(&self, server: SocketAddr, now: Instant) {
        let mut m = self.0.down.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !m.contains_key(&server) {
            tracing::info!(%server, "DNS upstream failed a query: asking the others first");
        }
        // Forget the servers that recovered long ago (resolv.conf may have replaced them).
        m.retain(|_, t| now.saturating_duration_since(*t) < DOWN_FOR);
        m.insert(server, now);
    }

    /// `server` answered: it is back in its place.
    pub fn answered(&self, server: SocketAddr) {
        let mut m = self.0.down.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if m.remove(&server).is_some() {
            tracing::info!(%server, "DNS upstream answers again");
        }
    }

    /// Whether `server` failed a query less than [`DOWN_FOR`] before `now`.
    pub fn is_down(&self, server: SocketAddr, now: Instant) -> bool {
        let m = self.0.down.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        m.get(&server).is_some_and(|t| now.saturating_duration_since(*t) < DOWN_FOR)
    }
}

/// The upstream list, kept current.
#[derive(Debug)]
pub struct Upstreams {
    policy: DnsUpstreams,
    routes: Arc<[Route]>,
    path: PathBuf,
    servers: Vec<SocketAddr>,
    stamp: Option<(SystemTime, u64)>,
    checked: Option<Instant>,
    health: Health,
}

impl Upstreams {
    /// Creates the selector; reads resolv.conf lazily.
    pub fn new(policy: DnsUpstreams, routes: Vec<Route>) -> Self {
        Self::with_path(policy, routes, PathBuf::from("/etc/resolv.conf"))
    }

    /// Like [`Upstreams::new`] with another resolv.conf path (tests).
    pub fn with_path(policy: DnsUpstreams, routes: Vec<Route>, path: PathBuf) -> Self {
        let servers = match &policy {
            DnsUpstreams::Fixed(v) => v.clone(),
            DnsUpstreams::HostResolvConf | DnsUpstreams::Disabled => Vec::new(),
        };
        let routes = routes.into();
        Self { policy, routes, path, servers, stamp: None, checked: None, health: Health::default() }
    }

    /// The health record this selector orders by (its flows report to it).
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Orders by `health` from now on (the data-path threads of one container share one).
    pub fn share_health(&mut self, health: Health) {
        self.health = health;
    }

    /// The upstreams to try for a query about `name` (`None`: unknown, as for TCP), in order:
    /// a route's servers if one holds the name, else the default ones; those that failed
    /// recently last. Empty when there is none.
    pub fn candidates(&mut self, name: Option<&str>, now: Instant) -> Vec<SocketAddr> {
        let route = name.and_then(|n| routed(&self.routes, n));
        let mut list: Vec<SocketAddr> = match route {
            Some(servers) => servers,
            None => {
                if self.policy == DnsUpstreams::HostResolvConf {
                    self.refresh(now);
                }
                self.servers.clone()
            }
        };
        // A stable sort: the order given, those down after those up.
        list.sort_by_key(|s| self.health.is_down(*s, now));
        list
    }

    /// The upstream for a query whose name is not known (a TCP connection), if there is any.
    pub fn pick(&mut self, now: Instant) -> Option<SocketAddr> {
        self.candidates(None, now).first().copied()
    }

    /// The `--dns-route` routes (shared with the TCP flows to the forwarder).
    pub fn routes(&self) -> &Arc<[Route]> {
        &self.routes
    }

    fn refresh(&mut self, now: Instant) {
        if self.checked.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            return;
        }
        self.checked = Some(now);
        let stamp = std::fs::metadata(&self.path).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
        if stamp == self.stamp && stamp.is_some() {
            return;
        }
        self.stamp = stamp;
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let servers = parse_resolv_conf(&text);
        if servers != self.servers {
            tracing::info!(?servers, path = %self.path.display(), "DNS upstreams (re)loaded");
        }
        if servers.is_empty() {
            tracing::warn!(path = %self.path.display(), "no usable nameserver in resolv.conf: DNS queries will be refused");
        }
        self.servers = servers;
    }
}

/// The servers of the longest route whose domain holds `name` (lowercase, no final dot), in
/// the order given, if a route does.
pub fn routed(routes: &[Route], name: &str) -> Option<Vec<SocketAddr>> {
    let longest = routes.iter().filter(|r| r.holds(name)).map(|r| r.domain.len()).max()?;
    Some(routes.iter().filter(|r| r.domain.len() == longest && r.holds(name)).map(|r| r.server).collect())
}

/// The first server of `routes` for `name` that has not failed recently (else the first).
pub fn route_server(routes: &[Route], name: &str, health: &Health, now: Instant) -> Option<SocketAddr> {
    let servers = routed(routes, name)?;
    servers.iter().find(|s| !health.is_down(**s, now)).or(servers.first()).copied()
}

/// The first query of a DNS-over-TCP stream, from its first bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpQuestion {
    /// Its name.
    Name(String),
    /// Not all of its question has arrived.
    Incomplete,
    /// The stream does not start with a standard query.
    Unreadable,
}

/// Reads the name of the first query of a DNS-over-TCP stream (two length bytes, then the
/// message) from `prefix`, its first bytes.
pub fn tcp_question(prefix: &[u8]) -> TcpQuestion {
    let Some(len) = prefix.get(..2).map(|l| usize::from(u16::from_be_bytes([l[0], l[1]]))) else {
        return TcpQuestion::Incomplete;
    };
    let msg = &prefix[2..prefix.len().min(2 + len)];
    match question(msg) {
        Some((name, _, _)) => TcpQuestion::Name(name),
        // The whole message is there, or more than any question takes: it is not one.
        None if msg.len() == len || msg.len() >= 12 + 256 + 4 => TcpQuestion::Unreadable,
        None => TcpQuestion::Incomplete,
    }
}

/// What the forwarder does next for the queries of one container endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this query to this upstream.
    Ask(SocketAddr, Vec<u8>),
    /// Give the container this answer.
    Answer(Vec<u8>),
    /// This upstream left a query unanswered for [`TRY_TIMEOUT`] (for [`Health`]).
    Silent(SocketAddr),
}

/// What to do with a datagram an upstream sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to the container: it answers a pending query.
    Deliver,
    /// Drop it (no pending query of that ID was sent to that server) and do nothing else.
    Drop,
    /// An error answer while other servers remain: kept, and the query goes on to the next.
    Next(SocketAddr, Vec<u8>),
}

/// A query waiting for its answer.
#[derive(Debug)]
struct Query {
    id: u16,
    bytes: Vec<u8>,
    started: Instant,
    /// When the server asked last was asked.
    asked: Instant,
    servers: Vec<SocketAddr>,
    /// How many of `servers` were asked (in order; at least one).
    tried: usize,
    /// The last error answer heard (SERVFAIL, REFUSED), given if nothing better comes.
    fallback: Option<Vec<u8>>,
}

impl Query {
    fn current(&self) -> SocketAddr {
        self.servers[self.tried - 1]
    }

    /// Moves on to the next server: the step asking it, or `None` when none is left.
    fn next(&mut self, now: Instant) -> Option<Step> {
        let server = *self.servers.get(self.tried)?;
        self.tried += 1;
        self.asked = now;
        Some(Step::Ask(server, self.bytes.clone()))
    }

    /// The answer the container gets when no server gave one.
    fn give_up(self) -> Option<Step> {
        self.fallback.or_else(|| error_answer(&self.bytes, 2)).map(Step::Answer)
    }
}

/// The UDP queries of one container endpoint to the forwarder, each tried on its upstreams in
/// turn. Time is passed in; sockets are the caller's.
#[derive(Debug, Default)]
pub struct Queries {
    pending: VecDeque<Query>,
    /// Counted since the last [`Queries::take_counts`].
    counts: Counts,
}

impl Queries {
    /// A query from the container, to be tried on `servers` in order: the step asking the
    /// first (`None` without servers). A datagram too short to be a query goes to the first
    /// server untracked; a retransmission of a pending query goes again to the server asked
    /// last.
    pub fn ask(&mut self, bytes: &[u8], servers: Vec<SocketAddr>, now: Instant) -> Option<Step> {
        let first = *servers.first()?;
        self.counts.queries += 1;
        if bytes.len() < 12 {
            return Some(Step::Ask(first, bytes.to_vec()));
        }
        let id = u16::from_be_bytes([bytes[0], bytes[1]]);
        if let Some(q) = self.pending.iter().find(|q| q.id == id && q.bytes == bytes) {
            return Some(Step::Ask(q.current(), bytes.to_vec()));
        }
        if self.pending.len() >= PENDING_MAX {
            self.pending.pop_front();
        }
        let q = Query { id, bytes: bytes.to_vec(), started: now, asked: now, servers, tried: 1, fallback: None };
        self.pending.push_back(q);
        Some(Step::Ask(first, bytes.to_vec()))
    }

    /// A datagram from upstream `from`.
    pub fn answer(&mut self, from: SocketAddr, bytes: &[u8], now: Instant) -> Verdict {
        if bytes.len() < 12 {
            return Verdict::Drop;
        }
        let id = u16::from_be_bytes([bytes[0], bytes[1]]);
        let Some(i) = self.pending.iter().position(|q| q.id == id && q.servers[..q.tried].contains(&from)) else {
            return Verdict::Drop;
        };
        if matches!(bytes[3] & 0x0f, 2 | 5) {
            // SERVFAIL or REFUSED: kept, and given only if nothing better comes. From an
            // earlier server, the one asked since may still answer.
            let q = &mut self.pending[i];
            if from != q.current() {
                q.fallback = Some(bytes.to_vec());
                return Verdict::Drop;
            }
            if let Some(Step::Ask(next, query)) = q.next(now) {
                q.fallback = Some(bytes.to_vec());
                self.counts.failovers += 1;
                return Verdict::Next(next, query);
            }
        }
        self.pending.remove(i);
        Verdict::Deliver
    }

    /// Upstream `server` refused (ICMP unreachable): the queries it was the last asked for go
    /// on to their next server, or get their answer now.
    pub fn unreachable(&mut self, server: SocketAddr, now: Instant) -> Vec<Step> {
        let mut steps = Vec::new();
        let mut i = 0;
        while i < self.pending.len() {
            let q = &mut self.pending[i];
            if q.current() != server {
                i += 1;
                continue;
            }
            match q.next(now) {
                Some(step) => {
                    steps.push(step);
                    self.counts.failovers += 1;
                    i += 1;
                }
                None => {
                    steps.extend(self.pending.remove(i).and_then(Query::give_up));
                    self.counts.unanswered += 1;
                }
            }
        }
        steps
    }

    /// What is due at `now`: the next server for queries whose server was silent for
    /// [`TRY_TIMEOUT`] (reporting it), an answer for those older than [`QUERY_TIMEOUT`].
    pub fn poll(&mut self, now: Instant) -> Vec<Step> {
        let mut steps = Vec::new();
        let mut i = 0;
        while i < self.pending.len() {
            let q = &mut self.pending[i];
            if now >= q.started + QUERY_TIMEOUT {
                steps.extend(self.pending.remove(i).and_then(Query::give_up));
                self.counts.unanswered += 1;
                continue;
            }
            if now >= q.asked + TRY_TIMEOUT && q.tried < q.servers.len() {
                let silent = q.current();
                steps.extend(q.next(now));
                self.counts.failovers += 1;
                if !steps.contains(&Step::Silent(silent)) {
                    steps.push(Step::Silent(silent));
                }
            }
            i += 1;
        }
        steps
    }

    /// When [`Queries::poll`] next has something to do, if a query is pending.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending
            .iter()
            .map(|q| {
                let over = q.started + QUERY_TIMEOUT;
                if q.tried < q.servers.len() { over.min(q.asked + TRY_TIMEOUT) } else { over }
            })
            .min()
    }

    /// Whether a query is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// What was counted since the last call (then zero).
    pub fn take_counts(&mut self) -> Counts {
        std::mem::take(&mut self.counts)
    }
}

/// The name a standard query asks about, lowercase without the final dot.
pub fn query_name(query: &[u8]) -> Option<String> {
    question(query).map(|(name, _, _)| name)
}

/// Names a bridge network's DNS answers itself: container names and aliases, lowercased,
/// with their addresses, and the reverse map for PTR queries.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Records {
    /// Name -> addresses (both families).
    pub names: std::collections::HashMap<String, Vec<IpAddr>>,
    /// Address -> the container's name.
    pub reverse: std::collections::HashMap<IpAddr, String>,
}

impl Records {
    /// Adds a container: `name` (canonical, for PTR) and `aliases`, at `addrs`.
    pub fn add(&mut self, name: &str, aliases: &[String], addrs: &[IpAddr]) {
        for n in std::iter::once(name).chain(aliases.iter().map(String::as_str)) {
            self.names.entry(n.to_ascii_lowercase()).or_default().extend_from_slice(addrs);
        }
        for a in addrs {
            self.reverse.insert(*a, name.to_ascii_lowercase());
        }
    }
}

/// Reads the question of a DNS query: (name lowercased without the final dot, qtype, offset
/// just after the question). `None` unless it is a standard query with one question.
fn question(q: &[u8]) -> Option<(String, u16, usize)> {
    if q.len() < 12 || q[2] & 0xf8 != 0 || u16::from_be_bytes([q[4], q[5]]) != 1 {
        return None;
    }
    let mut i = 12;
    let mut name = String::new();
    loop {
        let len = usize::from(*q.get(i)?);
        if len == 0 {
            i += 1;
            break;
        }
        if len > 63 || name.len() > 255 {
            return None;
        }
        let label = q.get(i + 1..i + 1 + len)?;
        if !name.is_empty() {
            name.push('.');
        }
        name.push_str(&String::from_utf8_lossy(label).to_ascii_lowercase());
        i += 1 + len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let class = u16::from_be_bytes([*q.get(i + 2)?, *q.get(i + 3)?]);
    (class == 1).then_some((name, qtype, i + 4))
}

/// The name a PTR query asks about, as an address (`4.3.2.1.in-addr.arpa`, nibble `ip6.arpa`).
fn ptr_addr(name: &str) -> Option<IpAddr> {
    if let Some(v4) = name.strip_suffix(".in-addr.arpa") {
        let o: Vec<u8> = v4.split('.').map(|x| x.parse().ok()).collect::<Option<_>>()?;
        return (o.len() == 4).then(|| Ipv4Addr::new(o[3], o[2], o[1], o[0]).into());
    }
    let v6 = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<u8> =
        v6.split('.').map(|x| u8::from_str_radix(x, 16).ok().filter(|_| x.len() == 1)).collect::<Option<_>>()?;
    if nibbles.len() != 32 {
        return None;
    }
    let mut b = [0u8; 16];
    for (i, n) in nibbles.iter().rev().enumerate() {
        b[i / 2] |= if i % 2 == 0 { n << 4 } else { *n };
    }
    Some(Ipv6Addr::from(b).into())
}

/// The answer to `query` from the local records, or `None` when the name is not local (then
/// the query goes upstream). Known names answer A/AAAA with their addresses of that family
/// (an empty NOERROR when they have none); PTR of a local address answers the name.
pub fn answer_local(query: &[u8], records: &Records) -> Option<Vec<u8>> {
    let (name, qtype, end) = question(query)?;
    let mut answers: Vec<(u16, Vec<u8>)> = Vec::new();
    if qtype == 12 {
        let target = records.reverse.get(&ptr_addr(&name)?)?;
        let mut rdata = Vec::new();
        for label in target.split('.') {
            rdata.push(label.len() as u8);
            rdata.extend_from_slice(label.as_bytes());
        }
        rdata.push(0);
        answers.push((12, rdata));
    } else {
        let addrs = records.names.get(&name)?;
        for a in addrs {
            match (a, qtype) {
                (IpAddr::V4(v4), 1) => answers.push((1, v4.octets().to_vec())),
                (IpAddr::V6(v6), 28) => answers.push((28, v6.octets().to_vec())),
                _ => {}
            }
        }
    }
    let mut r = query[..end].to_vec();
    r[2] = 0x80 | (query[2] & 0x01) | 0x04; // QR, authoritative, RD copied
    r[3] = 0x80; // RA, NOERROR
    r[6..8].copy_from_slice(&(answers.len() as u16).to_be_bytes());
    r[8..12].copy_from_slice(&[0, 0, 0, 0]);
    for (kind, rdata) in answers {
        r.extend_from_slice(&[0xc0, 12]);
        r.extend_from_slice(&kind.to_be_bytes());
        r.extend_from_slice(&[0, 1, 0, 0, 0, 10]); // class IN, TTL 10 s
        r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        r.extend_from_slice(&rdata);
    }
    Some(r)
}

/// A REFUSED answer to `query` (a name that is not local on a network without outside access).
pub fn refused(query: &[u8]) -> Option<Vec<u8>> {
    error_answer(query, 5)
}

/// An answer to `query` with no records and response code `rcode` (2 SERVFAIL, 5 REFUSED).
pub fn error_answer(query: &[u8], rcode: u8) -> Option<Vec<u8>> {
    let (_, _, end) = question(query)?;
    let mut r = query[..end].to_vec();
    r[2] = 0x80 | (query[2] & 0x01);
    r[3] = 0x80 | (rcode & 0x0f);
    r[6..12].copy_from_slice(&[0, 0, 0, 0, 0, 0]);
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nameservers() {
        let t = "# x\nnameserver 127.0.0.53\nsearch a\nnameserver ::1\nnameserver fe80::1%nosuchif0\nnameserver\n\
                 nameserver fe80::1%lo\nnameserver fe80::2%7\n";
        let lo = nix::net::if_::if_nametoindex("lo").unwrap();
        assert_eq!(
            parse_resolv_conf(t),
            vec![
                "127.0.0.53:53".parse().unwrap(),
                "[::1]:53".parse().unwrap(),
                std::net::SocketAddrV6::new("fe80::1".parse().unwrap(), 53, 0, lo).into(),
                std::net::SocketAddrV6::new("fe80::2".parse().unwrap(), 53, 0, 7).into(),
            ]
        );
    }

    #[test]
    fn rereads_on_change() {
        let dir = std::env::temp_dir().join(format!("warren-dns-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("resolv.conf");
        std::fs::write(&path, "nameserver 127.0.0.1\n").unwrap();
        let mut u = Upstreams::with_path(DnsUpstreams::HostResolvConf, Vec::new(), path.clone());
        let t0 = Instant::now();
        assert_eq!(u.pick(t0), Some("127.0.0.1:53".parse().unwrap()));
        std::fs::write(&path, "nameserver 127.0.0.2\nnameserver 127.0.0.3\n").unwrap();
        // Within a second the cached answer stands; after it, the new file is read.
        assert_eq!(u.pick(t0), Some("127.0.0.1:53".parse().unwrap()));
        assert_eq!(u.pick(t0 + Duration::from_secs(2)), Some("127.0.0.2:53".parse().unwrap()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// An answer from an upstream to `q` with response code `rcode`.
    fn reply(q: &[u8], rcode: u8) -> Vec<u8> {
        let mut r = q.to_vec();
        r[2] |= 0x80;
        r[3] = 0x80 | rcode;
        r
    }

    #[test]
    fn routes_pick_the_longest_domain_and_failed_servers_go_last() {
        let route = |d: &str, s: &str| Route { domain: d.into(), server: sa(s) };
        let routes = vec![
            route("corp.example", "10.8.0.1:53"),
            route("corp.example", "10.8.0.2:53"),
            route("lab.corp.example", "10.9.0.1:5353"),
            route("10.in-addr.arpa", "10.8.0.1:53"),
        ];
        let default = vec![sa("127.0.0.1:53"), sa("[::1]:53")];
        let mut u = Upstreams::with_path(DnsUpstreams::Fixed(default.clone()), routes, "/nonexistent".into());
        let t0 = Instant::now();
        assert_eq!(u.candidates(Some("www.corp.example"), t0), vec![sa("10.8.0.1:53"), sa("10.8.0.2:53")]);
        assert_eq!(u.candidates(Some("corp.example"), t0), vec![sa("10.8.0.1:53"), sa("10.8.0.2:53")]);
        assert_eq!(u.candidates(Some("a.lab.corp.example"), t0), vec![sa("10.9.0.1:5353")]);
        assert_eq!(u.candidates(Some("4.3.2.10.in-addr.arpa"), t0), vec![sa("10.8.0.1:53")]);
        // Only whole labels match; other names and TCP (no name) use the default list.
        assert_eq!(u.candidates(Some("notcorp.example"), t0), default);
        assert_eq!(u.candidates(Some("example"), t0), default);
        assert_eq!(u.candidates(None, t0), default);
        // A server that failed is asked last, for DOWN_FOR, and again first once it answers.
        u.health().failed(sa("127.0.0.1:53"), t0);
        assert_eq!(u.pick(t0), Some(sa("[::1]:53")));
        assert_eq!(u.candidates(Some("x.corp.example"), t0)[0], sa("10.8.0.1:53"));
        assert_eq!(u.pick(t0 + DOWN_FOR), Some(sa("127.0.0.1:53")));
        u.health().failed(sa("127.0.0.1:53"), t0);
        u.health().answered(sa("127.0.0.1:53"));
        assert_eq!(u.pick(t0), Some(sa("127.0.0.1:53")));
        // Nothing to ask: no candidates.
        let mut none = Upstreams::with_path(DnsUpstreams::Fixed(vec![]), vec![], "/nonexistent".into());
        assert_eq!(none.candidates(Some("a.b"), t0), Vec::<SocketAddr>::new());
    }

    #[test]
    fn a_query_fails_over_on_silence_refusal_and_error_answers() {
        let (a, b, c) = (sa("127.0.0.1:5301"), sa("127.0.0.1:5302"), sa("127.0.0.1:5303"));
        let t0 = Instant::now();
        let q = query("web.example", 1);
        let mut qs = Queries::default();
        assert_eq!(qs.ask(&q, vec![a, b, c], t0), Some(Step::Ask(a, q.clone())));
        assert_eq!(qs.deadline(), Some(t0 + TRY_TIMEOUT));
        assert!(qs.poll(t0 + TRY_TIMEOUT / 2).is_empty());
        // Silent: the next server is asked, and the silent one reported.
        let t1 = t0 + TRY_TIMEOUT;
        assert_eq!(qs.poll(t1), vec![Step::Ask(b, q.clone()), Step::Silent(a)]);
        // B refuses: on to C.
        assert_eq!(qs.unreachable(b, t1), vec![Step::Ask(c, q.clone())]);
        // A late answer from A still counts; one from a server never asked, or with another
        // ID, does not.
        assert_eq!(qs.answer(sa("127.0.0.1:9"), &reply(&q, 0), t1), Verdict::Drop);
        let mut other = reply(&q, 0);
        other[1] ^= 1;
        assert_eq!(qs.answer(a, &other, t1), Verdict::Drop);
        assert_eq!(qs.answer(a, &reply(&q, 0), t1), Verdict::Deliver);
        assert!(qs.is_empty());
        assert_eq!(qs.answer(c, &reply(&q, 0), t1), Verdict::Drop, "answered already");

        // SERVFAIL from the server asked: the next is asked; if it is silent too, the
        // container gets that SERVFAIL when the query times out.
        assert_eq!(qs.ask(&q, vec![a, b], t0), Some(Step::Ask(a, q.clone())));
        assert_eq!(qs.answer(a, &reply(&q, 2), t0), Verdict::Next(b, q.clone()));
        assert_eq!(qs.deadline(), Some(t0 + QUERY_TIMEOUT));
        assert_eq!(qs.poll(t0 + QUERY_TIMEOUT), vec![Step::Answer(reply(&q, 2))]);
        // The last server's error answer is delivered as it is.
        assert_eq!(qs.ask(&q, vec![a, b], t0), Some(Step::Ask(a, q.clone())));
        assert_eq!(qs.answer(a, &reply(&q, 5), t0), Verdict::Next(b, q.clone()));
        assert_eq!(qs.answer(b, &reply(&q, 5), t0), Verdict::Deliver);
        // An earlier server's late error answer waits for the one asked since.
        assert_eq!(qs.ask(&q, vec![a, b], t0), Some(Step::Ask(a, q.clone())));
        assert_eq!(qs.poll(t1), vec![Step::Ask(b, q.clone()), Step::Silent(a)]);
        assert_eq!(qs.answer(a, &reply(&q, 2), t1), Verdict::Drop);
        assert_eq!(qs.answer(b, &reply(&q, 0), t1), Verdict::Deliver);

        // Every server refuses: SERVFAIL at once. Nobody answers: SERVFAIL after QUERY_TIMEOUT.
        qs.ask(&q, vec![a], t0);
        let servfail = error_answer(&q, 2).unwrap();
        assert_eq!(qs.unreachable(a, t0), vec![Step::Answer(servfail.clone())]);
        qs.ask(&q, vec![a], t0);
        assert_eq!(qs.deadline(), Some(t0 + QUERY_TIMEOUT), "a single server is not asked twice");
        assert!(qs.poll(t0 + QUERY_TIMEOUT - Duration::from_millis(1)).is_empty());
        assert_eq!(qs.poll(t0 + QUERY_TIMEOUT), vec![Step::Answer(servfail)]);
        assert_eq!(qs.deadline(), None);

        // A retransmission is asked again of the current server, not tracked twice.
        qs.ask(&q, vec![a, b], t0);
        assert_eq!(qs.ask(&q, vec![a, b], t0), Some(Step::Ask(a, q.clone())));
        assert_eq!(qs.pending.len(), 1);
        // Short datagrams go to the first server untracked; no server: nothing.
        assert_eq!(qs.ask(&[1, 2, 3], vec![b], t0), Some(Step::Ask(b, vec![1, 2, 3])));
        assert_eq!(qs.pending.len(), 1);
        assert_eq!(qs.ask(&q, vec![], t0), None);
        // At most PENDING_MAX queries are tracked.
        for id in 0..PENDING_MAX as u16 * 2 {
            let mut q = q.clone();
            q[..2].copy_from_slice(&id.to_be_bytes());
            qs.ask(&q, vec![a], t0);
        }
        assert_eq!(qs.pending.len(), PENDING_MAX);
        // Garbage from an upstream never panics.
        for cut in 0..q.len() {
            let _ = qs.answer(a, &q[..cut], t0);
        }
        let c = qs.take_counts();
        assert_eq!((c.failovers, c.unanswered), (5, 3), "{c:?}");
        assert_eq!(c.queries, 9 + 2 * PENDING_MAX as u64, "every datagram asked, short and repeated ones too");
        assert_eq!(qs.take_counts(), Counts::default());
        let h = Health::default();
        h.count(c);
        h.count(c);
        assert_eq!(h.counts().failovers, 10);
    }

    #[test]
    fn the_first_question_of_a_tcp_stream() {
        let q = query("www.Corp.Example", 1);
        let mut stream = (q.len() as u16).to_be_bytes().to_vec();
        stream.extend_from_slice(&q);
        stream.extend_from_slice(&[0, 12, 1, 2]); // the next message's start
        assert_eq!(tcp_question(&stream), TcpQuestion::Name("www.corp.example".into()));
        for cut in 0..2 + q.len() {
            assert_eq!(tcp_question(&stream[..cut]), TcpQuestion::Incomplete, "{cut} bytes");
        }
        // A whole message that is not a standard query, or a question too long for one.
        let mut not_query = stream.clone();
        not_query[2 + 2] = 0x28; // UPDATE
        assert_eq!(tcp_question(&not_query), TcpQuestion::Unreadable);
        let long = [&[0xff, 0xff][..], &[0u8; 12], &[63u8; 300]].concat();
        assert_eq!(tcp_question(&long), TcpQuestion::Unreadable);
        let routes = vec![Route { domain: "corp.example".into(), server: sa("10.8.0.1:53") }];
        let health = Health::default();
        let t0 = Instant::now();
        assert_eq!(route_server(&routes, "www.corp.example", &health, t0), Some(sa("10.8.0.1:53")));
        assert_eq!(route_server(&routes, "example", &health, t0), None);
        health.failed(sa("10.8.0.1:53"), t0);
        assert_eq!(route_server(&routes, "corp.example", &health, t0), Some(sa("10.8.0.1:53")), "the only one");
    }

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.extend_from_slice(&[0]);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        q
    }

    #[test]
    fn local_names_aliases_and_ptr() {
        let mut r = Records::default();
        let web: Vec<IpAddr> = vec!["10.89.0.2".parse().unwrap(), "fd89::2".parse().unwrap()];
        r.add("Web", &["www".into()], &web);
        let a = answer_local(&query("web", 1), &r).unwrap();
        assert_eq!(&a[..2], &[0xab, 0xcd]);
        assert_eq!((a[3] & 0x0f, u16::from_be_bytes([a[6], a[7]])), (0, 1));
        assert_eq!(&a[a.len() - 4..], &[10, 89, 0, 2]);
        let a = answer_local(&query("WWW", 28), &r).unwrap();
        assert_eq!(&a[a.len() - 16..], &"fd89::2".parse::<Ipv6Addr>().unwrap().octets());
        let a = answer_local(&query("2.0.89.10.in-addr.arpa", 12), &r).unwrap();
        assert!(a.ends_with(&[3, b'w', b'e', b'b', 0]), "{a:?}");
        let v6ptr = "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.9.8.d.f.ip6.arpa";
        assert!(answer_local(&query(v6ptr, 12), &r).unwrap().ends_with(&[3, b'w', b'e', b'b', 0]));
        // Known name, no record of that type: empty NOERROR. Unknown: not answered here.
        let a = answer_local(&query("web", 15), &r).unwrap();
        assert_eq!((a[3] & 0x0f, a[7]), (0, 0));
        assert!(answer_local(&query("example.com", 1), &r).is_none());
        assert!(answer_local(&query("9.9.9.9.in-addr.arpa", 12), &r).is_none());
        assert_eq!(refused(&query("example.com", 1)).unwrap()[3] & 0x0f, 5);
        // Garbage never panics.
        for cut in 0..query("web", 1).len() {
            let _ = answer_local(&query("web", 1)[..cut], &r);
        }
    }
}
