//! Address management of bridge networks (sans-IO): subnets from a pool, overlap checks,
//! gateways, container addresses in order, and the MAC and IPv6 address that go with each.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::{Ipv4Net, Ipv6Net};

/// The pool default subnets come from, in /24s.
pub const POOL: &str = "10.89.0.0/16";

/// An address request that cannot be met; each names the value and what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// `--subnet` that does not parse.
    #[error("invalid subnet {0:?}: expected an IPv4 network like 10.89.0.0/24")]
    SubnetSyntax(String),
    /// A prefix that leaves no room or is too wide.
    #[error("invalid subnet {0:?}: prefix length must be 8..=29")]
    SubnetPrefix(String),
    /// Host bits set.
    #[error("invalid subnet {0:?}: expected a network address like {1}, not a host address")]
    SubnetHostBits(String, Ipv4Net),
    /// Overlaps another network.
    #[error("subnet {subnet} overlaps network {other:?} ({other_subnet}); choose another with --subnet")]
    Overlap {
        /// The subnet asked for.
        subnet: String,
        /// The network it overlaps.
        other: String,
        /// That network's subnet.
        other_subnet: String,
    },
    /// Every /24 of the pool is used.
    #[error("no free /24 left in the default pool {POOL}; give one with --subnet")]
    PoolExhausted,
    /// A gateway outside the subnet or on its network/broadcast address.
    #[error("invalid gateway {gateway:?}: expected a host address inside {subnet}")]
    Gateway {
        /// The text given.
        gateway: String,
        /// The subnet.
        subnet: Ipv4Net,
    },
    /// `--ip` that does not parse or is outside the subnet.
    #[error("invalid --ip {ip:?}: expected a host address inside {subnet} (network {network:?})")]
    IpOutside {
        /// The text given.
        ip: String,
        /// The subnet.
        subnet: Ipv4Net,
        /// The network.
        network: String,
    },
    /// `--ip` that is the gateway's.
    #[error("invalid --ip {0}: that is the gateway of network {1:?}")]
    IpGateway(Ipv4Addr, String),
    /// `--ip` already taken.
    #[error("address {ip} on network {network:?} is already used by container {by:?}")]
    IpTaken {
        /// The address.
        ip: Ipv4Addr,
        /// The network.
        network: String,
        /// The container holding it.
        by: String,
    },
    /// No address left.
    #[error("network {network:?} ({subnet}) has no free address left")]
    Exhausted {
        /// The network.
        network: String,
        /// Its subnet.
        subnet: Ipv4Net,
    },
}

/// Parses a user subnet: IPv4, prefix 8..=29, no host bits.
///
/// # Errors
/// One of the `Subnet*` variants.
pub fn parse_subnet(text: &str) -> Result<Ipv4Net, IpamError> {
    let net = Ipv4Net::from_str(text).map_err(|_| IpamError::SubnetSyntax(text.to_string()))?;
    if !(8..=29).contains(&net.prefix_len()) {
        return Err(IpamError::SubnetPrefix(text.to_string()));
    }
    if net.addr() != net.network() {
        return Err(IpamError::SubnetHostBits(text.to_string(), net.trunc()));
    }
    Ok(net)
}

/// Whether two subnets share an address.
pub fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The first /24 of [`POOL`] that overlaps none of `used`.
///
/// # Errors
/// [`IpamError::PoolExhausted`].
pub fn default_subnet(used: &[Ipv4Net]) -> Result<Ipv4Net, IpamError> {
    let pool: Ipv4Net = POOL.parse().expect("valid pool");
    pool.subnets(24)
        .expect("/16 splits into /24s")
        .find(|s| used.iter().all(|u| !overlaps(*s, *u)))
        .ok_or(IpamError::PoolExhausted)
}

/// The gateway: the given host address inside `subnet`, else its first host address.
///
/// # Errors
/// [`IpamError::Gateway`].
pub fn gateway(subnet: Ipv4Net, text: Option<&str>) -> Result<Ipv4Addr, IpamError> {
    let Some(t) = text else {
        return Ok(Ipv4Addr::from(u32::from(subnet.network()) + 1));
    };
    let bad = || IpamError::Gateway { gateway: t.to_string(), subnet };
    let ip: Ipv4Addr = t.parse().map_err(|_| bad())?;
    if !subnet.contains(&ip) || ip == subnet.network() || ip == subnet.broadcast() {
        return Err(bad());
    }
    Ok(ip)
}

/// A container address on a network: `want` if it is free and valid, else the lowest free
/// host address (the gateway, network and broadcast addresses are never handed out).
///
/// # Errors
/// `IpOutside`, `IpGateway`, `IpTaken` or `Exhausted`, naming the network.
pub fn allocate(
    network: &str,
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    taken: &[(Ipv4Addr, String)],
    want: Option<&str>,
) -> Result<Ipv4Addr, IpamError> {
    let used: BTreeSet<Ipv4Addr> = taken.iter().map(|(a, _)| *a).collect();
    if let Some(w) = want {
        let outside = || IpamError::IpOutside { ip: w.to_string(), subnet, network: network.to_string() };
        let ip: Ipv4Addr = w.parse().map_err(|_| outside())?;
        if !subnet.contains(&ip) || ip == subnet.network() || ip == subnet.broadcast() {
            return Err(outside());
        }
        if ip == gateway {
            return Err(IpamError::IpGateway(ip, network.to_string()));
        }
        if let Some((_, by)) = taken.iter().find(|(a, _)| *a == ip) {
            return Err(IpamError::IpTaken { ip, network: network.to_string(), by: by.clone() });
        }
        return Ok(ip);
    }
    subnet
        .hosts()
        .find(|a| *a != gateway && !used.contains(a))
        .ok_or(IpamError::Exhausted { network: network.to_string(), subnet })
}

/// The default IPv6 /64 of the `n`th network: fd89:0:0:N::/64.
pub fn default_subnet6(used: &[Ipv6Net]) -> Ipv6Net {
    (0u16..=u16::MAX)
        .map(|n| Ipv6Net::new(Ipv6Addr::new(0xfd89, 0, 0, n, 0, 0, 0, 0), 64).expect("valid /64"))
        .find(|s| !used.contains(s))
        .unwrap_or_else(|| Ipv6Net::new(Ipv6Addr::new(0xfd89, 0, 0, 0, 0, 0, 0, 0), 64).expect("valid /64"))
}

/// The IPv6 address paired with an IPv4 one: the /64 prefix plus the IPv4 host part, so
/// 10.89.0.7 is fd89::7 (the gateway too: ::1).
pub fn v6_for(subnet6: Ipv6Net, subnet: Ipv4Net, ip4: Ipv4Addr) -> Ipv6Addr {
    let host = u32::from(ip4) & !u32::from(subnet.netmask());
    Ipv6Addr::from(u128::from(subnet6.network()) | u128::from(host))
}

/// The MAC of a container interface: 02:42 and its IPv4 address (Docker's scheme), unique on
/// the segment because the address is.
pub fn mac_for(ip4: Ipv4Addr) -> [u8; 6] {
    let o = ip4.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_from_the_pool_and_overlaps() {
        let a = default_subnet(&[]).unwrap();
        assert_eq!(a.to_string(), "10.89.0.0/24");
        let b = default_subnet(&[a, "10.89.1.0/25".parse().unwrap()]).unwrap();
        assert_eq!(b.to_string(), "10.89.2.0/24");
        assert!(overlaps("10.0.0.0/8".parse().unwrap(), a));
        assert!(!overlaps("10.90.0.0/16".parse().unwrap(), a));
        let all: Vec<Ipv4Net> = vec!["10.89.0.0/16".parse().unwrap()];
        assert_eq!(default_subnet(&all), Err(IpamError::PoolExhausted));
        assert_eq!(
            parse_subnet("10.1.2.3/24").unwrap_err().to_string(),
            "invalid subnet \"10.1.2.3/24\": expected a network address like 10.1.2.0/24, not a host address"
        );
        assert_eq!(
            parse_subnet("10.1.2.0/30").unwrap_err().to_string(),
            "invalid subnet \"10.1.2.0/30\": prefix length must be 8..=29"
        );
        assert_eq!(
            parse_subnet("nope").unwrap_err().to_string(),
            "invalid subnet \"nope\": expected an IPv4 network like 10.89.0.0/24"
        );
        assert_eq!(
            IpamError::PoolExhausted.to_string(),
            "no free /24 left in the default pool 10.89.0.0/16; give one with --subnet"
        );
    }

    #[test]
    fn addresses_in_order_and_requests_checked() {
        let s: Ipv4Net = "10.89.0.0/29".parse().unwrap();
        let gw = gateway(s, None).unwrap();
        assert_eq!(gw, Ipv4Addr::new(10, 89, 0, 1));
        assert!(gateway(s, Some("10.89.0.7")).is_err(), "broadcast");
        assert!(gateway(s, Some("10.89.1.1")).is_err());
        let mut taken = Vec::new();
        for want in 2..=6u8 {
            let a = allocate("dev", s, gw, &taken, None).unwrap();
            assert_eq!(a, Ipv4Addr::new(10, 89, 0, want));
            taken.push((a, format!("c{want}")));
        }
        assert_eq!(
            allocate("dev", s, gw, &taken, None).unwrap_err().to_string(),
            "network \"dev\" (10.89.0.0/29) has no free address left"
        );
        taken.pop();
        assert_eq!(
            allocate("dev", s, gw, &taken, Some("10.89.0.3")).unwrap_err().to_string(),
            "address 10.89.0.3 on network \"dev\" is already used by container \"c3\""
        );
        assert_eq!(allocate("dev", s, gw, &taken, Some("10.89.0.6")), Ok(Ipv4Addr::new(10, 89, 0, 6)));
        assert_eq!(
            allocate("dev", s, gw, &taken, Some("10.89.0.1")).unwrap_err().to_string(),
            "invalid --ip 10.89.0.1: that is the gateway of network \"dev\""
        );
        assert!(matches!(allocate("dev", s, gw, &taken, Some("10.9.0.5")), Err(IpamError::IpOutside { .. })));
        assert!(matches!(allocate("dev", s, gw, &taken, Some("x")), Err(IpamError::IpOutside { .. })));
    }

    #[test]
    fn v6_and_mac_follow_the_v4_address() {
        let s6: Ipv6Net = "fd89::/64".parse().unwrap();
        let s: Ipv4Net = "10.89.0.0/24".parse().unwrap();
        assert_eq!(v6_for(s6, s, Ipv4Addr::new(10, 89, 0, 7)), "fd89::7".parse::<Ipv6Addr>().unwrap());
        assert_eq!(mac_for(Ipv4Addr::new(10, 89, 0, 7)), [2, 0x42, 10, 89, 0, 7]);
        let used = vec![default_subnet6(&[])];
        assert_eq!(default_subnet6(&used).to_string(), "fd89:0:0:1::/64");
    }
}
