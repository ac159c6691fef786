//! DNS upstream selection for the forwarder at network + 3, and the local answers of bridge
//! networks (container names and aliases).
//!
//! The forwarder is byte-transparent: a query the container sends to the DNS address over UDP
//! or TCP is NATed onto a host socket connected to an upstream, and answers come back with
//! the DNS address as their source. This module only decides *which* upstream: fixed ones
//! from `--dns-upstream`, or the host's `/etc/resolv.conf` nameservers, re-read whenever the
//! file changes (checked at most once a second, when a new DNS flow starts).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use crate::config::DnsUpstreams;

/// Extracts the nameservers of a resolv.conf text, in order, as port-53 addresses.
/// IPv6 scope suffixes (`fe80::1%eth0`) are ignored: such servers are skipped.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "nameserver").then_some(())?;
            w.next()?.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

/// The upstream list, kept current.
#[derive(Debug)]
pub struct Upstreams {
    policy: DnsUpstreams,
    path: PathBuf,
    servers: Vec<SocketAddr>,
    stamp: Option<(SystemTime, u64)>,
    checked: Option<Instant>,
}

impl Upstreams {
    /// Creates the selector; reads resolv.conf lazily.
    pub fn new(policy: DnsUpstreams) -> Self {
        Self::with_path(policy, PathBuf::from("/etc/resolv.conf"))
    }

    /// Like [`Upstreams::new`] with another resolv.conf path (tests).
    pub fn with_path(policy: DnsUpstreams, path: PathBuf) -> Self {
        let servers = match &policy {
            DnsUpstreams::Fixed(v) => v.clone(),
            DnsUpstreams::HostResolvConf | DnsUpstreams::Disabled => Vec::new(),
        };
        Self { policy, path, servers, stamp: None, checked: None }
    }

    /// The upstream to use for a new flow at `now`, if there is any.
    pub fn pick(&mut self, now: Instant) -> Option<SocketAddr> {
        if self.policy == DnsUpstreams::HostResolvConf {
            self.refresh(now);
        }
        self.servers.first().copied()
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
        let t = "# x\nnameserver 127.0.0.53\nsearch a\nnameserver ::1\nnameserver fe80::1%eth0\nnameserver\n";
        assert_eq!(parse_resolv_conf(t), vec!["127.0.0.53:53".parse().unwrap(), "[::1]:53".parse().unwrap()]);
    }

    #[test]
    fn rereads_on_change() {
        let dir = std::env::temp_dir().join(format!("warren-dns-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("resolv.conf");
        std::fs::write(&path, "nameserver 127.0.0.1\n").unwrap();
        let mut u = Upstreams::with_path(DnsUpstreams::HostResolvConf, path.clone());
        let t0 = Instant::now();
        assert_eq!(u.pick(t0), Some("127.0.0.1:53".parse().unwrap()));
        std::fs::write(&path, "nameserver 127.0.0.2\nnameserver 127.0.0.3\n").unwrap();
        // Within a second the cached answer stands; after it, the new file is read.
        assert_eq!(u.pick(t0), Some("127.0.0.1:53".parse().unwrap()));
        assert_eq!(u.pick(t0 + Duration::from_secs(2)), Some("127.0.0.2:53".parse().unwrap()));
        std::fs::remove_dir_all(&dir).unwrap();
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
