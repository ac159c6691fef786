//! `-p auto`: publish every TCP port the container listens on, and with `-p auto/udp` every
//! UDP port it serves, while it does (sans-IO).
//!
//! The container's kernel lists its sockets in `/proc/net/tcp`, `tcp6`, `udp` and `udp6`,
//! opened inside its network namespace when the TAP is set up ([`crate::ns::Tap::tables`]).
//! Once a second the runtime reads them ([`scan`]), asks the data path which ports are
//! published and lets [`AutoPublish::plan`] decide: a port the container started serving is
//! published on the same host port (as `-p [HOST_IP:]PORT:PORT[/udp]` would), one it stopped
//! serving is unpublished (its open connections carry on). Sockets bound to a loopback address
//! inside the container are left out: nothing reaches them through the TAP.
//!
//! A TCP service is a listening socket. UDP has no such state, so a UDP service is a socket
//! bound and not connected, on a port outside the namespace's ephemeral range: a client's
//! socket is either connected (the resolver's) or bound by the kernel to an ephemeral port
//! when it first sends. A server that binds a port inside the ephemeral range on purpose is
//! missed; `-p PORT/udp` publishes it.
//!
//! A host port that cannot be bound (taken, or privileged) is reported once and not tried
//! again until the container stops serving on it; so is a port the user unpublished with
//! `warren port rm`. Container ports that another forward already leads to are left alone.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use rustc_hash::{FxHashMap, FxHashSet};

use crate::forward::{Family, Forward, Proto};
use crate::runtime::ports::PortInfo;

/// Most ports auto-published at once (all host addresses together): each holds a host port
/// and an fd, and the container decides how many it serves.
pub const AUTO_MAX_PORTS: usize = 1024;

/// `st` of a listening socket in `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";

/// `st` of an unconnected socket in `/proc/net/udp` (`TCP_CLOSE`; a connected one is `01`).
const UDP_UNCONNECTED: &str = "07";

/// The container's services, by protocol and port: for each, whether IPv4 clients can reach
/// it (bound to an IPv4 address, or to `::`, which takes IPv4 too unless the socket is
/// IPv6-only).
pub type Listening = BTreeMap<(Proto, u16), bool>;

/// Which table is read, and what counts as a service in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// `/proc/net/tcp` or `tcp6`: listening sockets.
    Tcp,
    /// `/proc/net/udp` or `udp6`: unconnected sockets outside the `ephemeral` port range
    /// (inclusive).
    Udp {
        /// The namespace's `ip_local_port_range`.
        ephemeral: (u16, u16),
    },
}

impl Table {
    /// The protocol whose sockets the table lists.
    pub fn proto(self) -> Proto {
        match self {
            Table::Tcp => Proto::Tcp,
            Table::Udp { .. } => Proto::Udp,
        }
    }
}

/// What one table says, as far as it was read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TableScan {
    /// Services on non-loopback addresses: (address, port).
    pub sockets: Vec<(IpAddr, u16)>,
    /// Nothing further in the table can be a service: the kernel lists TCP's listening
    /// sockets before all others, so after another state the rest need not be read. (UDP
    /// tables are read whole.)
    pub done: bool,
}

/// Parses complete lines of a socket table (`v6`: `tcp6` or `udp6`), header included.
/// Malformed lines are skipped.
pub fn scan(text: &str, v6: bool, table: Table) -> TableScan {
    let mut scan = TableScan::default();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(sl), Some(local), Some(remote), Some(st)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if !sl.ends_with(':') {
            continue; // the header
        }
        match table {
            Table::Tcp if st != TCP_LISTEN => {
                scan.done = true;
                break;
            }
            Table::Tcp => {}
            Table::Udp { .. } if st != UDP_UNCONNECTED || parse_endpoint(remote, v6) != Some((unspecified(v6), 0)) => {
                continue;
            }
            Table::Udp { .. } => {}
        }
        let Some((ip, port)) = parse_endpoint(local, v6) else { continue };
        if let Table::Udp { ephemeral: (lo, hi) } = table
            && (port == 0 || (lo..=hi).contains(&port))
        {
            continue;
        }
        if !is_loopback(ip) {
            scan.sockets.push((ip, port));
        }
    }
    scan
}

fn unspecified(v6: bool) -> IpAddr {
    if v6 { IpAddr::V6(Ipv6Addr::UNSPECIFIED) } else { IpAddr::V4(Ipv4Addr::UNSPECIFIED) }
}

/// `ADDR:PORT`, both in hex.
fn parse_endpoint(text: &str, v6: bool) -> Option<(IpAddr, u16)> {
    let (addr, port) = text.split_once(':')?;
    Some((parse_addr(addr, v6)?, u16::from_str_radix(port, 16).ok()?))
}

/// The kernel prints each 32-bit word of the address with `%08X` in the CPU's byte order.
fn parse_addr(hex: &str, v6: bool) -> Option<IpAddr> {
    let word = |i: usize| hex.get(i * 8..i * 8 + 8).and_then(|w| u32::from_str_radix(w, 16).ok()).map(u32::to_ne_bytes);
    if !v6 {
        return (hex.len() == 8).then(|| word(0)).flatten().map(|b| IpAddr::V4(Ipv4Addr::from(b)));
    }
    if hex.len() != 32 {
        return None;
    }
    let mut octets = [0u8; 16];
    for i in 0..4 {
        octets[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
    }
    Some(IpAddr::V6(Ipv6Addr::from(octets)))
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_loopback(),
        IpAddr::V6(a) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|m| m.is_loopback()),
    }
}

/// Adds a table's services of `proto` to `out`.
pub fn merge(out: &mut Listening, proto: Proto, sockets: &[(IpAddr, u16)]) {
    for &(ip, port) in sockets {
        let v4 = match ip {
            IpAddr::V4(_) => true,
            IpAddr::V6(a) => a.is_unspecified() || a.to_ipv4_mapped().is_some(),
        };
        *out.entry((proto, port)).or_default() |= v4;
    }
}

/// What to change: forwards to add (one at a time, so one refusal stops no other) and forward
/// ids to remove.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// New forwards.
    pub add: Vec<Forward>,
    /// Forward ids to unpublish.
    pub remove: Vec<u64>,
    /// Forwards left out because [`AUTO_MAX_PORTS`] are published.
    pub over_limit: usize,
}

/// The container family a forward on `host` leads to. A service reachable only over IPv6
/// gets IPv6 clients' way in for all. A UDP service that IPv4 reaches is reached over IPv4
/// from an IPv6 host address too (UDP has no fallback to try IPv6 first, as TCP does).
fn family(proto: Proto, host: IpAddr, v4: bool) -> Option<Family> {
    match (v4, proto, host) {
        (false, _, _) => Some(Family::V6),
        (true, Proto::Udp, IpAddr::V6(_)) => Some(Family::V4),
        (true, _, _) => None,
    }
}

/// A published or held port: protocol, host address, port.
type Key = (Proto, IpAddr, u16);

/// The auto-published ports of one container.
#[derive(Debug)]
pub struct AutoPublish {
    /// Host address and protocol of each `-p [HOST_IP:]auto[/udp]`.
    hosts: Vec<(IpAddr, Proto)>,
    /// What this published, and the forward id.
    mine: FxHashMap<Key, u64>,
    /// Not to be tried again while the container serves the port: refused by the host, or
    /// unpublished by the user.
    held: FxHashSet<Key>,
    max: usize,
}

impl AutoPublish {
    /// Publishes `proto` ports on each host address of `hosts` (a `-p [HOST_IP:]auto[/udp]`
    /// each).
    pub fn new(hosts: Vec<(IpAddr, Proto)>) -> Self {
        Self::with_limit(hosts, AUTO_MAX_PORTS)
    }

    /// Publishes at most `max` ports at once.
    pub fn with_limit(hosts: Vec<(IpAddr, Proto)>, max: usize) -> Self {
        Self { hosts, mine: FxHashMap::default(), held: FxHashSet::default(), max }
    }

    /// Decides what to publish and unpublish, given what the container serves and the ports
    /// published now (by anyone).
    pub fn plan(&mut self, listening: &Listening, ports: &[PortInfo]) -> Plan {
        let ids: FxHashSet<u64> = ports.iter().map(|p| p.id).collect();
        let ours: FxHashSet<u64> = self.mine.values().copied().collect();
        // Unpublished by someone else (`warren port rm`): respected until the port closes.
        let gone: Vec<Key> = self.mine.iter().filter(|(_, id)| !ids.contains(id)).map(|(k, _)| *k).collect();
        for k in gone {
            self.mine.remove(&k);
            self.held.insert(k);
        }
        let others: FxHashSet<(&str, u16)> =
            ports.iter().filter(|p| !ours.contains(&p.id)).map(|p| (p.proto, p.container.port())).collect();
        let mut plan = Plan::default();
        self.mine.retain(|&(proto, _, port), id| {
            let keep = listening.contains_key(&(proto, port));
            if !keep {
                plan.remove.push(*id);
            }
            keep
        });
        plan.remove.sort_unstable();
        self.held.retain(|&(proto, _, port)| listening.contains_key(&(proto, port)));
        for (&(proto, port), &v4) in listening {
            if others.contains(&(proto.as_str(), port)) {
                continue;
            }
            for &(ip, _) in self.hosts.iter().filter(|(_, p)| *p == proto) {
                let key = (proto, ip, port);
                if self.mine.contains_key(&key) || self.held.contains(&key) {
                    continue;
                }
                if self.mine.len() + plan.add.len() >= self.max {
                    plan.over_limit += 1;
                    continue;
                }
                plan.add.push(Forward {
                    proto,
                    host: SocketAddr::new(ip, port),
                    container_port: port,
                    container_family: family(proto, ip, v4),
                    container_ip: None,
                });
            }
        }
        plan
    }

    /// A planned forward was published with this id.
    pub fn published(&mut self, fwd: &Forward, id: u64) {
        self.mine.insert((fwd.proto, fwd.host.ip(), fwd.host.port()), id);
    }

    /// A planned forward could not be published: not tried again while the port stays open.
    pub fn refused(&mut self, fwd: &Forward) {
        self.held.insert((fwd.proto, fwd.host.ip(), fwd.host.port()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Abridged from a real /proc/net/tcp: a listener on 0.0.0.0:8080 and one on
    // 127.0.0.1:631, then an established connection.
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 41235 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 18839 1 0000000000000000 100 0 0 10 0
   2: 6402000A:1F90 0202000A:D2F0 01 00000000:00000000 00:00000000 00000000  1000        0 41236 1 0000000000000000 20 4 30 10 -1
   3: 6402000A:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 18840 1 0000000000000000 100 0 0 10 0
";

    // A listener on [::]:3000, one on [::1]:9229, one on [fd00::100]:4000.
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 51000 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:240D 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 51001 1 0000000000000000 100 0 0 10 0
   2: 000000FD000000000000000000010000:0FA0 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 51002 1 0000000000000000 100 0 0 10 0
";

    // Abridged from a real /proc/net/udp: a server on 0.0.0.0:53, a stub resolver on
    // 127.0.0.53:53, a client's socket bound by the kernel to ephemeral port 41000, a connected
    // socket (the resolver's) on 45000, a connected one on 5000 and a server on
    // 10.0.2.100:6000.
    const UDP: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  112: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 20001 2 0000000000000000 0
  112: 3500007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 20002 2 0000000000000000 0
  301: 00000000:A028 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 20003 2 0000000000000000 0
  455: 6402000A:AFC8 0302000A:0035 01 00000000:00000000 00:00000000 00000000  1000        0 20004 2 0000000000000000 0
  500: 6402000A:1388 0302000A:0035 01 00000000:00000000 00:00000000 00000000  1000        0 20005 2 0000000000000000 0
  601: 6402000A:1770 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 20006 2 0000000000000000 0
";

    // A server on [::]:5353, one on [::1]:7000, a client bound to [::]:50000.
    const UDP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 00000000000000000000000000000000:14E9 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 30001 2 0000000000000000 0
  200: 00000000000000000000000001000000:1B58 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 30002 2 0000000000000000 0
  300: 00000000000000000000000000000000:C350 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 30003 2 0000000000000000 0
";

    #[test]
    fn udp_services_are_unconnected_non_loopback_sockets_outside_the_ephemeral_range() {
        let table = Table::Udp { ephemeral: (32768, 60999) };
        let scan4 = scan(UDP, false, table);
        assert_eq!(scan4, TableScan { sockets: vec![(v4("0.0.0.0"), 53), (v4("10.0.2.100"), 6000)], done: false });
        let scan6 = scan(UDP6, true, table);
        assert_eq!(scan6.sockets, vec![(v4("::"), 5353)]);
        let narrow = scan(UDP, false, Table::Udp { ephemeral: (50000, 50100) });
        assert_eq!(narrow.sockets.len(), 3, "41000 is not ephemeral there: {narrow:?}");
        assert_eq!(scan(UDP, false, Table::Tcp), TableScan { sockets: vec![], done: true }, "not a TCP table");
        let mut l = Listening::new();
        merge(&mut l, Proto::Udp, &scan4.sockets);
        merge(&mut l, Proto::Udp, &scan6.sockets);
        merge(&mut l, Proto::Tcp, &[(v4("::"), 53)]);
        assert_eq!(
            l,
            Listening::from([
                ((Proto::Tcp, 53), true),
                ((Proto::Udp, 53), true),
                ((Proto::Udp, 5353), true),
                ((Proto::Udp, 6000), true)
            ])
        );
    }

    #[test]
    fn each_auto_spec_publishes_its_own_protocol() {
        let (any, lo) = (v4("0.0.0.0"), v4("127.0.0.1"));
        let mut a = AutoPublish::new(vec![(any, Proto::Tcp), (lo, Proto::Udp)]);
        let l = Listening::from([((Proto::Tcp, 53), true), ((Proto::Udp, 53), true), ((Proto::Udp, 6000), true)]);
        let plan = a.plan(&l, &[]);
        let added: Vec<_> = plan.add.iter().map(|f| (f.proto, f.host)).collect();
        assert_eq!(
            added,
            vec![
                (Proto::Tcp, SocketAddr::new(any, 53)),
                (Proto::Udp, SocketAddr::new(lo, 53)),
                (Proto::Udp, SocketAddr::new(lo, 6000))
            ]
        );
        a.published(&plan.add[0], 1);
        a.published(&plan.add[1], 2);
        let mut udp53 = info(2, 53, 53);
        udp53.proto = "udp";
        udp53.host = SocketAddr::new(lo, 53);
        let mut other = info(9, 16000, 6000);
        other.proto = "udp";
        let now = [info(1, 53, 53), udp53, other];
        assert_eq!(a.plan(&l, &now), Plan::default(), "UDP 6000 has a forward already; TCP 6000 would not");
        let plan = a.plan(&Listening::from([((Proto::Tcp, 53), true)]), &now);
        assert_eq!(plan.remove, vec![2], "the UDP port closed, the TCP one did not");
    }

    #[test]
    fn ipv6_host_addresses_lead_udp_to_the_containers_ipv4_when_it_answers_there() {
        let any6 = v4("::");
        let mut a = AutoPublish::new(vec![(any6, Proto::Udp), (any6, Proto::Tcp)]);
        let l = Listening::from([((Proto::Udp, 53), true), ((Proto::Udp, 54), false), ((Proto::Tcp, 80), true)]);
        let fams: Vec<_> =
            a.plan(&l, &[]).add.iter().map(|f| (f.proto, f.container_port, f.container_family)).collect();
        assert_eq!(
            fams,
            [(Proto::Tcp, 80, None), (Proto::Udp, 53, Some(Family::V4)), (Proto::Udp, 54, Some(Family::V6))],
            "TCP tries IPv6 first and falls back; UDP cannot"
        );
    }

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn tcp(ports: &[(u16, bool)]) -> Listening {
        ports.iter().map(|&(p, v4)| ((Proto::Tcp, p), v4)).collect()
    }

    #[test]
    fn tables_give_non_loopback_listeners_up_to_the_first_other_state() {
        let scan4 = scan(TCP, false, Table::Tcp);
        assert_eq!(scan4.sockets, vec![(v4("0.0.0.0"), 8080)], "loopback left out, stopped at the connection");
        assert!(scan4.done);
        let scan6 = scan(TCP6, true, Table::Tcp);
        assert_eq!(scan6.sockets, vec![(v4("::"), 3000), (v4("fd00::100"), 4000)]);
        assert!(!scan6.done);
        let mut l = Listening::new();
        merge(&mut l, Proto::Tcp, &scan4.sockets);
        merge(&mut l, Proto::Tcp, &scan6.sockets);
        assert_eq!(l, tcp(&[(3000, true), (4000, false), (8080, true)]));
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let text = "   0: zz:1F90 00000000:0000 0A\n   1: 00000000:FFFFF 00000000:0000 0A\n   2: 0000:0050 x 0A\n3\n";
        assert_eq!(scan(text, false, Table::Tcp), TableScan::default());
        assert_eq!(scan("   0: 00000000:0050 00000000:0000 0A", true, Table::Tcp).sockets, vec![]);
    }

    fn info(id: u64, host: u16, container: u16) -> PortInfo {
        PortInfo {
            id,
            proto: "tcp",
            host: SocketAddr::new(v4("0.0.0.0"), host),
            container: SocketAddr::new(v4("10.0.2.100"), container),
            fallback: None,
        }
    }

    #[test]
    fn ports_follow_the_listeners() {
        let any = v4("0.0.0.0");
        let mut a = AutoPublish::new(vec![(any, Proto::Tcp)]);
        let listening = tcp(&[(3000, true), (4000, false)]);
        let plan = a.plan(&listening, &[]);
        assert_eq!(plan.add.len(), 2);
        assert_eq!(
            (plan.add[0].host, plan.add[0].container_port, plan.add[0].container_family),
            (SocketAddr::new(any, 3000), 3000, None)
        );
        assert_eq!(plan.add[1].container_family, Some(Family::V6), "an IPv6-only listener is reached over IPv6");
        a.published(&plan.add[0], 1);
        a.published(&plan.add[1], 2);
        let now = [info(1, 3000, 3000), info(2, 4000, 4000)];
        assert_eq!(a.plan(&listening, &now), Plan::default(), "nothing changes while nothing does");
        let plan = a.plan(&tcp(&[(4000, false)]), &now);
        assert_eq!(plan, Plan { add: vec![], remove: vec![1], over_limit: 0 }, "a closed port is unpublished");
        let plan = a.plan(&tcp(&[(3000, true), (4000, false)]), &[info(2, 4000, 4000)]);
        assert_eq!(
            plan.add.iter().map(|f| f.host.port()).collect::<Vec<_>>(),
            vec![3000],
            "and published again when it reopens"
        );
    }

    #[test]
    fn refusals_and_removals_hold_until_the_port_closes_and_other_forwards_win() {
        let mut a = AutoPublish::new(vec![(v4("127.0.0.1"), Proto::Tcp)]);
        let listening = tcp(&[(80, true), (3000, true), (5000, true)]);
        let plan = a.plan(&listening, &[info(7, 9000, 5000)]);
        assert_eq!(
            plan.add.iter().map(|f| f.host.port()).collect::<Vec<_>>(),
            vec![80, 3000],
            "5000 has a forward already"
        );
        a.refused(&plan.add[0]);
        a.published(&plan.add[1], 8);
        let now = [info(7, 9000, 5000), info(8, 3000, 3000)];
        assert_eq!(a.plan(&listening, &now), Plan::default(), "a refused port is not retried");
        assert_eq!(a.plan(&listening, &[info(7, 9000, 5000)]), Plan::default(), "nor one the user removed");
        assert_eq!(a.plan(&tcp(&[(5000, true)]), &[info(7, 9000, 5000)]), Plan::default());
        let plan = a.plan(&listening, &[info(7, 9000, 5000)]);
        assert_eq!(
            plan.add.iter().map(|f| f.host.port()).collect::<Vec<_>>(),
            vec![80, 3000],
            "both tried again after closing"
        );
    }

    #[test]
    fn at_most_the_limit_is_published() {
        let mut a = AutoPublish::with_limit(vec![(v4("0.0.0.0"), Proto::Tcp)], 2);
        let listening: Listening = (1000..1005).map(|p| ((Proto::Tcp, p), true)).collect();
        let plan = a.plan(&listening, &[]);
        assert_eq!((plan.add.len(), plan.over_limit), (2, 3));
        a.published(&plan.add[0], 1);
        a.published(&plan.add[1], 2);
        let now = [info(1, 1000, 1000), info(2, 1001, 1001)];
        assert_eq!(a.plan(&listening, &now).over_limit, 3, "still full");
        let plan = a.plan(&(1001..1005).map(|p| ((Proto::Tcp, p), true)).collect(), &now);
        assert_eq!((plan.remove, plan.add.len(), plan.over_limit), (vec![1], 1, 2), "a place freed is taken");
    }
}
