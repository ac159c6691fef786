//! The opt-in multicast relay between the container and the host's network (`--multicast`).
//!
//! A relay names a group, a UDP port and optionally a host interface: mDNS
//! (`224.0.0.251:5353`, `[ff02::fb]:5353@eth0`), SSDP (`239.255.255.250:1900`) or an
//! application's own group. Nothing multicast crosses warren without one.
//!
//! - Host to container: a host socket bound to the group and port and joined to the group
//!   hands every datagram it gets to the container as a multicast frame of that group, from
//!   its real source (the runtime's relay listener).
//! - Container to host: a datagram the container sends to the group leaves from a host
//!   socket of its own, one per container endpoint as for any UDP flow, with the container's
//!   TTL (hop limit); whatever reaches that socket, unicast from anyone, goes back to the
//!   container endpoint from its source. Queries (SSDP `M-SEARCH`, one-shot mDNS) get their
//!   answers this way.
//!   A datagram from the group's own port (an mDNS responder's announcement or answer, an
//!   SSDP `NOTIFY`) leaves from that port instead, through the relay's listener
//!   ([`GroupSenders`]): receivers ignore mDNS from other ports.
//! - The host kernel loops the relay's own sends back to its listener when both use one
//!   interface: [`EchoPorts`] knows the ports of the per-endpoint sockets and
//!   [`GroupSenders`] the datagrams it sent, and such copies are not handed back to the
//!   container.
//!
//! The host sockets join groups and send as any unprivileged program may (no
//! `CAP_NET_ADMIN`, no raw sockets). IGMP and MLD reports of the container stay unanswered
//! (counted as drops): its kernel receives a relayed group once one of its sockets joins it.

use std::collections::VecDeque;
use std::hash::Hasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

/// Most relays one container may ask for.
pub const RELAYS_MAX: usize = 16;

/// One `--multicast GROUP:PORT[@IFACE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    /// The group (224.0.0.0/4 or ff00::/8).
    pub group: IpAddr,
    /// The UDP port.
    pub port: u16,
    /// The host interface (name, index) it joins and sends on; `None`: the one the host's
    /// routes choose for the group.
    pub iface: Option<(String, u32)>,
}

impl Relay {
    /// The group and port as one address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.group, self.port)
    }

    fn ifindex(&self) -> u32 {
        self.iface.as_ref().map_or(0, |i| i.1)
    }
}

impl std::fmt::Display for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.addr())?;
        if let Some((name, _)) = &self.iface {
            write!(f, "@{name}")?;
        }
        Ok(())
    }
}

/// An invalid `--multicast` value, or a relay the host refused.
#[derive(Debug, thiserror::Error)]
pub enum MulticastError {
    /// Not `GROUP:PORT[@IFACE]`.
    #[error(
        "invalid --multicast spec {spec:?}: {why}; expected GROUP:PORT[@IFACE], e.g. 224.0.0.251:5353 or [ff02::fb]:5353@eth0"
    )]
    Spec {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        why: String,
    },
    /// An IPv6 group for a container without IPv6.
    #[error("--multicast {0}: an IPv6 group, but the container has no IPv6 (--no-ipv6)")]
    NoIpv6(String),
    /// More than [`RELAYS_MAX`].
    #[error("too many --multicast relays: at most {RELAYS_MAX}")]
    TooMany,
    /// The host would not bind or join.
    #[error("--multicast {relay}: the host refused to {what}: {error}{hint}")]
    Host {
        /// The relay.
        relay: String,
        /// What was tried.
        what: &'static str,
        /// The kernel's error.
        error: std::io::Error,
        /// What to do about it, if known.
        hint: String,
    },
}

/// Parses one `GROUP:PORT[@IFACE]` (IPv6 groups in brackets), checking that the interface
/// exists.
///
/// # Errors
/// [`MulticastError::Spec`] naming the spec and the problem.
pub fn parse(spec: &str) -> Result<Relay, MulticastError> {
    let err = |why: String| MulticastError::Spec { spec: spec.to_string(), why };
    let (addr, iface) = match spec.rsplit_once('@') {
        Some((a, i)) => (a, Some(i)),
        None => (spec, None),
    };
    let sa = SocketAddr::from_str(addr).map_err(|_| err(format!("{addr:?} is not GROUP:PORT")))?;
    if !sa.ip().is_multicast() {
        return Err(err(format!("{} is not a multicast group (224.0.0.0/4 or ff00::/8)", sa.ip())));
    }
    if sa.port() == 0 {
        return Err(err("port 0: expected 1..=65535".into()));
    }
    // Interface- and link-scoped IPv6 groups (ff01::/16, ff02::/16) exist per interface.
    let link_scoped = matches!(sa.ip(), IpAddr::V6(g) if g.segments()[0] & 0x000f <= 2);
    if link_scoped && iface.is_none() {
        return Err(err(format!(
            "{} is link-scoped: name the host interface, [{}]:{}@IFACE",
            sa.ip(),
            sa.ip(),
            sa.port()
        )));
    }
    let iface = match iface {
        None => None,
        Some(name) => {
            crate::sys::check_ifname(name).map_err(|_| err(format!("{name:?} is not an interface name")))?;
            let index =
                nix::net::if_::if_nametoindex(name).map_err(|_| err(format!("no interface {name:?} on this host")))?;
            Some((name.to_string(), index))
        }
    };
    Ok(Relay { group: sa.ip(), port: sa.port(), iface })
}

/// Parses every `--multicast` value: at most [`RELAYS_MAX`], each group and port once.
///
/// # Errors
/// The first bad spec.
pub fn parse_all<S: AsRef<str>>(specs: &[S]) -> Result<Vec<Relay>, MulticastError> {
    if specs.len() > RELAYS_MAX {
        return Err(MulticastError::TooMany);
    }
    let mut out: Vec<Relay> = Vec::with_capacity(specs.len());
    for s in specs {
        let r = parse(s.as_ref())?;
        if out.iter().any(|o| o.addr() == r.addr()) {
            return Err(MulticastError::Spec {
                spec: s.as_ref().to_string(),
                why: format!("{} is given twice", r.addr()),
            });
        }
        out.push(r);
    }
    Ok(out)
}

fn host_err<'a>(relay: &'a Relay, what: &'static str) -> impl FnOnce(std::io::Error) -> MulticastError + 'a {
    move |error| {
        let hint = match (error.raw_os_error(), &relay.iface) {
            (Some(libc::ENODEV), None) => {
                format!(" (no route for {} on this host: name the interface, {}@IFACE)", relay.group, relay.addr())
            }
            _ => String::new(),
        };
        MulticastError::Host { relay: relay.to_string(), what, error, hint }
    }
}

/// The host socket that receives the relay's group: bound to the group and port (so it gets
/// that group's datagrams only), shared with other programs listening there (an mDNS
/// responder of the host), joined to the group; it also sends the container's datagrams from
/// the group's port ([`GroupSenders`]). Non-blocking.
///
/// # Errors
/// [`MulticastError::Host`] saying what the kernel refused.
pub fn listen(relay: &Relay) -> Result<std::net::UdpSocket, MulticastError> {
    let domain = if relay.group.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let s = Socket::new(domain, Type::DGRAM.nonblocking().cloexec(), Some(Protocol::UDP))
        .map_err(host_err(relay, "open a socket"))?;
    s.set_reuse_address(true).map_err(host_err(relay, "share the port"))?;
    s.set_reuse_port(true).map_err(host_err(relay, "share the port"))?;
    let bind = match relay.group {
        IpAddr::V4(g) => {
            // Only the groups this socket joined, not every group of the host on the port.
            s.set_multicast_all_v4(false).map_err(host_err(relay, "limit the socket to its group"))?;
            s.join_multicast_v4_n(&g, &socket2::InterfaceIndexOrAddress::Index(relay.ifindex()))
                .map_err(host_err(relay, "join the group"))?;
            SocketAddr::new(g.into(), relay.port)
        }
        IpAddr::V6(g) => {
            s.set_only_v6(true).map_err(host_err(relay, "open an IPv6-only socket"))?;
            s.set_multicast_all_v6(false).map_err(host_err(relay, "limit the socket to its group"))?;
            s.join_multicast_v6(&g, relay.ifindex()).map_err(host_err(relay, "join the group"))?;
            SocketAddr::V6(std::net::SocketAddrV6::new(g, relay.port, 0, relay.ifindex()))
        }
    };
    send_on_interface(&s, relay).map_err(host_err(relay, "send on the interface"))?;
    s.bind(&bind.into()).map_err(host_err(relay, "bind the group's port"))?;
    Ok(s.into())
}

/// Makes a socket send its multicast datagrams on the relay's interface (without one: where
/// the routes say).
fn send_on_interface(s: &Socket, relay: &Relay) -> std::io::Result<()> {
    match (relay.group, relay.ifindex()) {
        (IpAddr::V4(_), 0) => Ok(()),
        (IpAddr::V4(_), i) => crate::sys::set_multicast_if_v4_index(std::os::fd::AsFd::as_fd(s), i),
        (IpAddr::V6(_), i) => s.set_multicast_if_v6(i),
    }
}

/// A host socket for one container endpoint's datagrams to the relay's group: unconnected
/// (answers come from anyone), bound to `source` or an ephemeral port, sending on the
/// relay's interface, looping its datagrams to the host's own listeners (an mDNS responder
/// of the host answers too). Non-blocking.
///
/// # Errors
/// What the kernel refused.
pub fn sender(relay: &Relay, source: Option<SocketAddr>) -> std::io::Result<std::net::UdpSocket> {
    let v4 = relay.group.is_ipv4();
    let s = Socket::new(if v4 { Domain::IPV4 } else { Domain::IPV6 }, Type::DGRAM.nonblocking().cloexec(), None)?;
    let any = if v4 { SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0) } else { (Ipv6Addr::UNSPECIFIED, 0).into() };
    if !v4 {
        s.set_only_v6(true)?;
    }
    send_on_interface(&s, relay)?;
    s.bind(&source.unwrap_or(any).into())?;
    Ok(s.into())
}

/// Sets the multicast TTL (IPv4) or hop limit (IPv6) of a [`sender`] socket.
///
/// # Errors
/// What the kernel refused.
pub fn set_ttl(sock: std::os::fd::BorrowedFd<'_>, v4: bool, ttl: u8) -> std::io::Result<()> {
    let s = socket2::SockRef::from(&sock);
    if v4 { s.set_multicast_ttl_v4(ttl.into()) } else { s.set_multicast_hops_v6(ttl.into()) }
}

/// How long a datagram sent from a relay's own port is remembered for [`GroupSenders::is_echo`]
/// (the host loops it back within the send; this only bounds what a lost copy costs).
const ECHO_WINDOW: Duration = Duration::from_secs(2);
/// Most such datagrams remembered.
const RECENT_MAX: usize = 64;

/// The relays' listeners, shared by the data-path threads to send from the group's own port:
/// a container datagram to a group from that same port (an mDNS responder's announcement or
/// answer, which receivers ignore from any other port; an SSDP `NOTIFY`) leaves from the
/// relay's port on the host, through the listener itself. Bound to the group address, it
/// receives nothing unicast, so a host responder on the port keeps its unicast traffic. Its
/// sends come back to it through the host's multicast loopback with the port a host
/// responder uses too, so they are told apart by content: [`GroupSenders::is_echo`].
pub struct GroupSenders {
    socks: Vec<(SocketAddr, std::net::UdpSocket, AtomicU8)>,
    recent: Mutex<VecDeque<(u64, Instant)>>,
}

impl GroupSenders {
    /// The listeners (clones of the sockets the runtime serves), by group and port.
    pub fn new(socks: Vec<(SocketAddr, std::net::UdpSocket)>) -> Self {
        let socks = socks.into_iter().map(|(g, s)| (g, s, AtomicU8::new(1))).collect();
        Self { socks, recent: Mutex::new(VecDeque::new()) }
    }

    fn digest(payload: &[u8]) -> u64 {
        let mut h = rustc_hash::FxHasher::default();
        h.write_usize(payload.len());
        h.write(payload);
        h.finish()
    }

    /// Sends `payload` to `group` from its relay's listener with this TTL (hop limit), and
    /// remembers it. `None`: no relay for the group.
    pub fn send(&self, group: SocketAddr, payload: &[u8], ttl: u8, now: Instant) -> Option<std::io::Result<()>> {
        let (_, sock, set) = self.socks.iter().find(|(g, ..)| *g == group)?;
        if set.load(Ordering::Relaxed) != ttl {
            if let Err(e) = set_ttl(std::os::fd::AsFd::as_fd(sock), group.is_ipv4(), ttl) {
                return Some(Err(e));
            }
            set.store(ttl, Ordering::Relaxed);
        }
        if let Ok(mut r) = self.recent.lock() {
            while r.len() >= RECENT_MAX || r.front().is_some_and(|(_, t)| now.duration_since(*t) > ECHO_WINDOW) {
                r.pop_front();
            }
            r.push_back((Self::digest(payload), now));
        }
        Some(sock.send_to(payload, group).map(|_| ()))
    }

    /// Whether a datagram a relay's listener got from the relay's port is the host's loopback
    /// copy of one [`GroupSenders::send`] sent: the same bytes, sent within the last
    /// seconds. Each send is recognised once, so a host elsewhere that sends the same bytes
    /// just after is still heard.
    pub fn is_echo(&self, payload: &[u8], now: Instant) -> bool {
        let d = Self::digest(payload);
        let Ok(mut r) = self.recent.lock() else { return false };
        match r.iter().position(|(h, t)| *h == d && now.duration_since(*t) <= ECHO_WINDOW) {
            Some(i) => {
                r.remove(i);
                true
            }
            None => false,
        }
    }
}

/// The local ports of the relay's [`sender`] sockets, shared by the data-path threads: a
/// datagram from one of them reaching a relay listener is the host's loopback copy of the
/// container's own, and does not go back to it. (A host elsewhere that sends from the same
/// port number would go unheard; the ports are the host's ephemeral ones.) A count per port:
/// an IPv4 and an IPv6 sender may share a number.
pub struct EchoPorts(Box<[AtomicU8]>);

impl Default for EchoPorts {
    fn default() -> Self {
        Self((0..=u16::MAX).map(|_| AtomicU8::new(0)).collect())
    }
}

impl EchoPorts {
    /// Records a sender's port; [`EchoGuard`] forgets it when dropped.
    pub fn insert(self: &std::sync::Arc<Self>, port: u16) -> EchoGuard {
        self.0[usize::from(port)].fetch_add(1, Ordering::Relaxed);
        EchoGuard { ports: self.clone(), port }
    }

    /// Whether `port` is one of the senders'.
    pub fn contains(&self, port: u16) -> bool {
        self.0[usize::from(port)].load(Ordering::Relaxed) != 0
    }
}

/// A sender's port in [`EchoPorts`] while it lives.
pub struct EchoGuard {
    ports: std::sync::Arc<EchoPorts>,
    port: u16,
}

impl Drop for EchoGuard {
    fn drop(&mut self) {
        self.ports.0[usize::from(self.port)].fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_are_named() {
        let r = parse("224.0.0.251:5353").unwrap();
        assert_eq!((r.addr(), r.iface), ("224.0.0.251:5353".parse().unwrap(), None));
        let r = parse("[ff02::fb]:5353@lo").unwrap();
        assert_eq!(r.addr(), "[ff02::fb]:5353".parse().unwrap());
        assert_eq!(r.iface.as_ref().map(|i| i.0.as_str()), Some("lo"));
        assert!(r.iface.unwrap().1 > 0);
        assert_eq!(parse("239.255.255.250:1900").unwrap().to_string(), "239.255.255.250:1900");
        assert_eq!(parse("[ff05::c]:1900").unwrap().to_string(), "[ff05::c]:1900", "site-scoped: any interface");
        for (spec, why) in [
            ("10.0.0.1:5353", "10.0.0.1 is not a multicast group (224.0.0.0/4 or ff00::/8)"),
            ("224.0.0.251", "\"224.0.0.251\" is not GROUP:PORT"),
            ("ff02::fb:5353", "is not GROUP:PORT"),
            ("224.0.0.251:0", "port 0: expected 1..=65535"),
            ("224.0.0.251:5353@no-such-if0", "no interface \"no-such-if0\" on this host"),
            ("224.0.0.251:5353@a/b", "\"a/b\" is not an interface name"),
            ("[ff02::fb]:5353", "ff02::fb is link-scoped: name the host interface, [ff02::fb]:5353@IFACE"),
        ] {
            let e = parse(spec).unwrap_err().to_string();
            assert!(e.contains(&format!("{spec:?}")) && e.contains(why), "{spec}: {e}");
            assert!(e.contains("expected GROUP:PORT[@IFACE]"), "{e}");
        }
        let e = parse_all(&["224.0.0.251:5353", "224.0.0.251:5353@lo"]).unwrap_err().to_string();
        assert!(e.contains("224.0.0.251:5353 is given twice"), "{e}");
        let many: Vec<String> = (1..=17).map(|p| format!("239.1.1.1:{p}")).collect();
        assert_eq!(parse_all(&many).unwrap_err().to_string(), "too many --multicast relays: at most 16");
        assert_eq!(parse_all(&many[..16]).unwrap().len(), 16);
    }

    #[test]
    fn a_send_from_the_groups_port_is_an_echo_once_and_only_for_a_while() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = peer.local_addr().unwrap();
        let s = GroupSenders::new(vec![(to, sock)]);
        let t0 = Instant::now();
        assert!(s.send("127.0.0.1:9".parse().unwrap(), b"x", 1, t0).is_none(), "no relay for that group");
        assert!(s.send(to, b"announce", 255, t0).unwrap().is_ok());
        let mut buf = [0u8; 16];
        assert_eq!(peer.recv(&mut buf).unwrap(), 8, "sent");
        assert!(!s.is_echo(b"announce!", t0), "other bytes");
        assert!(s.is_echo(b"announce", t0), "the copy");
        assert!(!s.is_echo(b"announce", t0), "a second identical datagram is someone else's");
        s.send(to, b"late", 255, t0).unwrap().unwrap();
        assert!(!s.is_echo(b"late", t0 + ECHO_WINDOW + Duration::from_millis(1)), "forgotten");
    }

    #[test]
    fn echo_ports_are_known_while_their_sockets_live() {
        let ports = std::sync::Arc::new(EchoPorts::default());
        let (a, b, c) = (ports.insert(40000), ports.insert(65535), ports.insert(40000));
        assert!(ports.contains(40000) && ports.contains(65535));
        assert!(!ports.contains(40001) && !ports.contains(0));
        drop(a);
        assert!(ports.contains(40000), "the other socket of that port lives");
        drop(c);
        assert!(!ports.contains(40000) && ports.contains(65535));
        drop(b);
        assert!(!ports.contains(65535));
    }
}
