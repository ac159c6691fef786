//! `-p auto`: publish every TCP port the container listens on, while it listens (sans-IO).
//!
//! The container's kernel lists its listening sockets in `/proc/net/tcp` and `tcp6`, opened
//! inside its network namespace when the TAP is set up ([`crate::ns::Tap::tables`]).
//! Once a second the runtime reads them ([`listening`]), asks the data path which ports are
//! published and lets [`AutoPublish::plan`] decide: a port the container started listening on
//! is published on the same host port (as `-p [HOST_IP:]PORT:PORT` would), one it stopped
//! listening on is unpublished (its open connections carry on). Sockets bound to a loopback
//! address inside the container are left out: nothing reaches them through the TAP.
//!
//! A host port that cannot be bound (taken, or privileged) is reported once and not tried
//! again until the container stops listening on it; so is a port the user unpublished with
//! `warren port rm`. Container ports that another forward already leads to are left alone.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use rustc_hash::{FxHashMap, FxHashSet};

use crate::forward::{Family, Forward, Proto};
use crate::runtime::ports::PortInfo;

/// Most ports auto-published at once (all host addresses together): each holds a host port
/// and an fd, and the container decides how many it listens on.
pub const AUTO_MAX_PORTS: usize = 1024;

/// `st` of a listening socket in `/proc/net/tcp`.
const LISTEN: &str = "0A";

/// The container's listening TCP ports: for each, whether IPv4 clients can reach it (bound to
/// an IPv4 address, or to `::`, which takes IPv4 too unless the socket is IPv6-only).
pub type Listening = BTreeMap<u16, bool>;

/// What one table says, as far as it lists listening sockets.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TableScan {
    /// Listening sockets on non-loopback addresses: (address, port).
    pub sockets: Vec<(IpAddr, u16)>,
    /// A socket in another state was seen. The kernel lists listening sockets before all
    /// others, so the rest of the table need not be read.
    pub done: bool,
}

/// Parses complete lines of `/proc/net/tcp` (`v6` false) or `/proc/net/tcp6`, header
/// included, up to the first socket that is not listening. Malformed lines are skipped.
pub fn listening(text: &str, v6: bool) -> TableScan {
    let mut scan = TableScan::default();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(sl), Some(local), Some(_remote), Some(st)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if !sl.ends_with(':') {
            continue; // the header
        }
        if st != LISTEN {
            scan.done = true;
            break;
        }
        let Some((addr, port)) = local.split_once(':') else { continue };
        let (Some(ip), Ok(port)) = (parse_addr(addr, v6), u16::from_str_radix(port, 16)) else { continue };
        if !is_loopback(ip) {
            scan.sockets.push((ip, port));
        }
    }
    scan
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

/// Adds a table's listening sockets to `out`.
pub fn merge(out: &mut Listening, sockets: &[(IpAddr, u16)]) {
    for &(ip, port) in sockets {
        let v4 = match ip {
            IpAddr::V4(_) => true,
            IpAddr::V6(a) => a.is_unspecified() || a.to_ipv4_mapped().is_some(),
        };
        *out.entry(port).or_default() |= v4;
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

/// The auto-published ports of one container.
#[derive(Debug)]
pub struct AutoPublish {
    hosts: Vec<IpAddr>,
    /// What this published: (host address, port) -> forward id.
    mine: FxHashMap<(IpAddr, u16), u64>,
    /// Not to be tried again while the container listens on the port: refused by the host,
    /// or unpublished by the user.
    held: FxHashSet<(IpAddr, u16)>,
    max: usize,
}

impl AutoPublish {
    /// Publishes on each of `hosts` (a `-p [HOST_IP:]auto` each).
    pub fn new(hosts: Vec<IpAddr>) -> Self {
        Self::with_limit(hosts, AUTO_MAX_PORTS)
    }

    /// Publishes at most `max` ports at once.
    pub fn with_limit(hosts: Vec<IpAddr>, max: usize) -> Self {
        Self { hosts, mine: FxHashMap::default(), held: FxHashSet::default(), max }
    }

    /// Decides what to publish and unpublish, given what the container listens on and the
    /// ports published now (by anyone).
    pub fn plan(&mut self, listening: &Listening, ports: &[PortInfo]) -> Plan {
        let ids: FxHashSet<u64> = ports.iter().map(|p| p.id).collect();
        let ours: FxHashSet<u64> = self.mine.values().copied().collect();
        // Unpublished by someone else (`warren port rm`): respected until the port closes.
        let gone: Vec<(IpAddr, u16)> = self.mine.iter().filter(|(_, id)| !ids.contains(id)).map(|(k, _)| *k).collect();
        for k in gone {
            self.mine.remove(&k);
            self.held.insert(k);
        }
        let others: FxHashSet<u16> = ports
            .iter()
            .filter(|p| !ours.contains(&p.id) && p.proto == Proto::Tcp.as_str())
            .map(|p| p.container.port())
            .collect();
        let mut plan = Plan::default();
        self.mine.retain(|(_, port), id| {
            let keep = listening.contains_key(port);
            if !keep {
                plan.remove.push(*id);
            }
            keep
        });
        plan.remove.sort_unstable();
        self.held.retain(|(_, port)| listening.contains_key(port));
        for (&port, &v4) in listening {
            if others.contains(&port) {
                continue;
            }
            for &ip in &self.hosts {
                if self.mine.contains_key(&(ip, port)) || self.held.contains(&(ip, port)) {
                    continue;
                }
                if self.mine.len() + plan.add.len() >= self.max {
                    plan.over_limit += 1;
                    continue;
                }
                plan.add.push(Forward {
                    proto: Proto::Tcp,
                    host: SocketAddr::new(ip, port),
                    container_port: port,
                    // A service reachable only over IPv6 gets IPv6 clients' way in for all.
                    container_family: (!v4).then_some(Family::V6),
                    container_ip: None,
                });
            }
        }
        plan
    }

    /// A planned forward was published with this id.
    pub fn published(&mut self, fwd: &Forward, id: u64) {
        self.mine.insert((fwd.host.ip(), fwd.host.port()), id);
    }

    /// A planned forward could not be published: not tried again while the port stays open.
    pub fn refused(&mut self, fwd: &Forward) {
        self.held.insert((fwd.host.ip(), fwd.host.port()));
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

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn tables_give_non_loopback_listeners_up_to_the_first_other_state() {
        let scan = listening(TCP, false);
        assert_eq!(scan.sockets, vec![(v4("0.0.0.0"), 8080)], "loopback left out, stopped at the connection");
        assert!(scan.done);
        let scan6 = listening(TCP6, true);
        assert_eq!(scan6.sockets, vec![(v4("::"), 3000), (v4("fd00::100"), 4000)]);
        assert!(!scan6.done);
        let mut l = Listening::new();
        merge(&mut l, &scan.sockets);
        merge(&mut l, &scan6.sockets);
        assert_eq!(l, Listening::from([(3000, true), (4000, false), (8080, true)]));
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let text = "   0: zz:1F90 00000000:0000 0A\n   1: 00000000:FFFFF 00000000:0000 0A\n   2: 0000:0050 x 0A\n3\n";
        assert_eq!(listening(text, false), TableScan::default());
        assert_eq!(listening("   0: 00000000:0050 00000000:0000 0A", true).sockets, vec![]);
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
        let mut a = AutoPublish::new(vec![any]);
        let listening = Listening::from([(3000, true), (4000, false)]);
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
        let plan = a.plan(&Listening::from([(4000, false)]), &now);
        assert_eq!(plan, Plan { add: vec![], remove: vec![1], over_limit: 0 }, "a closed port is unpublished");
        let plan = a.plan(&Listening::from([(3000, true), (4000, false)]), &[info(2, 4000, 4000)]);
        assert_eq!(
            plan.add.iter().map(|f| f.host.port()).collect::<Vec<_>>(),
            vec![3000],
            "and published again when it reopens"
        );
    }

    #[test]
    fn refusals_and_removals_hold_until_the_port_closes_and_other_forwards_win() {
        let mut a = AutoPublish::new(vec![v4("127.0.0.1")]);
        let listening = Listening::from([(80, true), (3000, true), (5000, true)]);
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
        assert_eq!(a.plan(&Listening::from([(5000, true)]), &[info(7, 9000, 5000)]), Plan::default());
        let plan = a.plan(&listening, &[info(7, 9000, 5000)]);
        assert_eq!(
            plan.add.iter().map(|f| f.host.port()).collect::<Vec<_>>(),
            vec![80, 3000],
            "both tried again after closing"
        );
    }

    #[test]
    fn at_most_the_limit_is_published() {
        let mut a = AutoPublish::with_limit(vec![v4("0.0.0.0")], 2);
        let listening: Listening = (1000..1005).map(|p| (p, true)).collect();
        let plan = a.plan(&listening, &[]);
        assert_eq!((plan.add.len(), plan.over_limit), (2, 3));
        a.published(&plan.add[0], 1);
        a.published(&plan.add[1], 2);
        let now = [info(1, 1000, 1000), info(2, 1001, 1001)];
        assert_eq!(a.plan(&listening, &now).over_limit, 3, "still full");
        let plan = a.plan(&(1001..1005).map(|p| (p, true)).collect(), &now);
        assert_eq!((plan.remove, plan.add.len(), plan.over_limit), (vec![1], 1, 2), "a place freed is taken");
    }
}
