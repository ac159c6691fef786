//! Validated network configuration: what the CLI produces and the data path consumes.
//!
//! Every value a user can type is checked here, with an error that names the bad text and
//! what was expected, before any namespace or socket exists (nothing half-applied).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use ipnet::{Ipv4Net, Ipv6Net};

/// Smallest MTU accepted for an IPv4 network (the IPv6 minimum, so dual-stack stays possible).
pub const MTU_MIN: u32 = 1280;
/// Largest MTU accepted: the TAP limit slirp4netns and pasta use.
pub const MTU_MAX: u32 = 65520;
/// Default MTU.
pub const MTU_DEFAULT: u32 = 65520;
/// Default container network, as slirp4netns.
pub const CIDR_DEFAULT: &str = "10.0.2.0/24";
/// Default container IPv6 network, as slirp4netns (libslirp) with `--enable-ipv6`.
pub const CIDR6_DEFAULT: &str = "fd00::/64";

/// A configuration value that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// `--mtu` outside the accepted range.
    #[error("invalid MTU {0}: expected {MTU_MIN}..={MTU_MAX}")]
    Mtu(u32),
    /// `--cidr` that does not parse.
    #[error("invalid CIDR {0:?}: expected an IPv4 network like 10.0.2.0/24")]
    CidrSyntax(String),
    /// `--cidr` with a prefix outside 1..=25.
    #[error("invalid CIDR {0:?}: prefix length must be 1..=25")]
    CidrPrefix(String),
    /// `--cidr` with host bits set.
    #[error("invalid CIDR {0:?}: expected a network address like {1}, not a host address")]
    CidrHostBits(String, Ipv4Net),
    /// `--cidr6` that does not parse.
    #[error("invalid IPv6 prefix {0:?}: expected an IPv6 network like fd00::/64")]
    Cidr6Syntax(String),
    /// `--cidr6` with a prefix length other than 64.
    #[error("invalid IPv6 prefix {0:?}: the prefix length must be 64 (SLAAC needs a /64)")]
    Cidr6Prefix(String),
    /// `--cidr6` with host bits set.
    #[error("invalid IPv6 prefix {0:?}: expected a network address like {1}, not a host address")]
    Cidr6HostBits(String, Ipv6Net),
    /// `--cidr6` that is not a unicast prefix a container can use.
    #[error("invalid IPv6 prefix {0:?}: expected a unicast prefix (ULA fd00::/8 or global), not {1}")]
    Cidr6Scope(String, &'static str),
    /// `--mac` that does not parse or is not unicast.
    #[error("invalid MAC address {0:?}: expected a unicast address like 02:00:00:00:00:01")]
    Mac(String),
    /// `--dns-upstream` that does not parse.
    #[error(
        "invalid DNS upstream {0:?}: expected IP or IP:PORT (IPv6 as [ADDR]:PORT, link-local as ADDR%IFACE or [ADDR%IFACE]:PORT)"
    )]
    DnsUpstream(String),
    /// `--dns-route` that is not `DOMAIN=IP[:PORT]`.
    #[error("invalid --dns-route {0:?}: {1}; expected DOMAIN=IP[:PORT] like corp.example=10.8.0.1")]
    DnsRoute(String, &'static str),
    /// `--add-host` that is not `NAME:IP`.
    #[error(
        "invalid --add-host {spec:?}: {why}; expected NAME:IP or NAME=IP (IPv6 may be in brackets), IP may be host-gateway"
    )]
    AddHost {
        /// What was given.
        spec: String,
        /// What is wrong with it.
        why: String,
    },
    /// `--outbound-addr` / `--outbound-addr6` that names no address of this host.
    #[error(
        "invalid {option} {spec:?}: expected an {family} address of this host or the name of an interface that has one"
    )]
    Outbound {
        /// The option.
        option: &'static str,
        /// What was given.
        spec: String,
        /// `IPv4` or `IPv6`.
        family: &'static str,
    },
}

/// The address of an `--add-host` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostEntryAddr {
    /// This address.
    Ip(IpAddr),
    /// `host-gateway`: the container's gateway (which leads to the host; to its loopback with
    /// `--allow-host-loopback`).
    Gateway,
}

/// Parses Docker's `--add-host NAME:IP` (also `NAME=IP`, IPv6 bare or in brackets, IP
/// `host-gateway`) into a line of the container's `/etc/hosts`.
///
/// # Errors
/// [`ConfigError::AddHost`] naming what is wrong.
pub fn parse_add_host(spec: &str) -> Result<(String, HostEntryAddr), ConfigError> {
    let err = |why: &str| ConfigError::AddHost { spec: spec.to_string(), why: why.to_string() };
    let (name, addr) = spec.split_once('=').or_else(|| spec.split_once(':')).ok_or_else(|| err("no address"))?;
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    if name.is_empty() || name.len() > 253 || !name.chars().all(valid) || name.starts_with(['-', '.']) {
        return Err(err(&format!("{name:?} is not a host name")));
    }
    if addr == "host-gateway" {
        return Ok((name.to_string(), HostEntryAddr::Gateway));
    }
    let bare = addr.strip_prefix('[').and_then(|a| a.strip_suffix(']')).unwrap_or(addr);
    let ip = bare.parse::<IpAddr>().map_err(|_| err(&format!("{addr:?} is not an IP address")))?;
    Ok((name.to_string(), HostEntryAddr::Ip(ip)))
}

/// The container's `/etc/hosts` with `--add-host` entries: the host's file, then one line per
/// entry.
pub fn hosts_file_contents(host: &str, entries: &[(String, IpAddr)]) -> String {
    let mut out = host.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str("# added by warren (--add-host)\n");
    for (name, ip) in entries {
        out.push_str(&format!("{ip}\t{name}\n"));
    }
    out
}

/// Resolves an outbound source (slirp4netns `--outbound-addr`, pasta `-o`/`--outbound-if4`):
/// an IPv4 address, or an interface whose first IPv4 address is taken. `None` when `spec`
/// names neither.
pub fn outbound_v4(spec: &str) -> Option<Ipv4Addr> {
    if let Ok(ip) = spec.parse() {
        return Some(ip);
    }
    crate::sys::interface_addresses(spec).into_iter().find_map(|a| match a {
        std::net::IpAddr::V4(a) => Some(a),
        std::net::IpAddr::V6(_) => None,
    })
}

/// Like [`outbound_v4`] for IPv6 (`--outbound-addr6`); an interface's link-local addresses
/// are skipped.
pub fn outbound_v6(spec: &str) -> Option<Ipv6Addr> {
    if let Ok(ip) = spec.parse() {
        return Some(ip);
    }
    crate::sys::interface_addresses(spec).into_iter().find_map(|a| match a {
        std::net::IpAddr::V6(a) if !a.is_unicast_link_local() => Some(a),
        _ => None,
    })
}

/// The interface an `--outbound-addr[6]` spec names, if it names one rather than an address.
pub fn outbound_iface(spec: &str) -> Option<String> {
    spec.parse::<std::net::IpAddr>().is_err().then(|| spec.to_string())
}

/// [`outbound_v4`] for `option` (`--outbound-addr`), refused unless this host can send from
/// the address (it binds).
///
/// # Errors
/// [`ConfigError::Outbound`].
pub fn host_outbound_v4(spec: &str, option: &'static str) -> Result<Ipv4Addr, ConfigError> {
    outbound_v4(spec).filter(|ip| std::net::UdpSocket::bind((*ip, 0)).is_ok()).ok_or_else(|| ConfigError::Outbound {
        option,
        spec: spec.into(),
        family: "IPv4",
    })
}

/// [`host_outbound_v4`] for IPv6 (`--outbound-addr6`).
///
/// # Errors
/// [`ConfigError::Outbound`].
pub fn host_outbound_v6(spec: &str, option: &'static str) -> Result<Ipv6Addr, ConfigError> {
    outbound_v6(spec).filter(|ip| std::net::UdpSocket::bind((*ip, 0)).is_ok()).ok_or_else(|| ConfigError::Outbound {
        option,
        spec: spec.into(),
        family: "IPv6",
    })
}

/// Parses and validates an MTU.
///
/// # Errors
/// [`ConfigError::Mtu`] outside `MTU_MIN..=MTU_MAX`.
pub fn parse_mtu(mtu: u32) -> Result<u32, ConfigError> {
    if (MTU_MIN..=MTU_MAX).contains(&mtu) { Ok(mtu) } else { Err(ConfigError::Mtu(mtu)) }
}

/// Parses an IPv4 network such as `10.0.2.0/24` (prefix 1..=25, no host bits).
///
/// # Errors
/// One of the `Cidr*` variants, naming the text.
pub fn parse_cidr(text: &str) -> Result<Ipv4Net, ConfigError> {
    let net = Ipv4Net::from_str(text).map_err(|_| ConfigError::CidrSyntax(text.to_string()))?;
    if !(1..=25).contains(&net.prefix_len()) {
        return Err(ConfigError::CidrPrefix(text.to_string()));
    }
    if net.addr() != net.network() {
        return Err(ConfigError::CidrHostBits(text.to_string(), net.trunc()));
    }
    Ok(net)
}

/// Parses an IPv6 network such as `fd00::/64` (a /64 without host bits, unicast, not
/// link-local).
///
/// # Errors
/// One of the `Cidr6*` variants, naming the text.
pub fn parse_cidr6(text: &str) -> Result<Ipv6Net, ConfigError> {
    let net = Ipv6Net::from_str(text).map_err(|_| ConfigError::Cidr6Syntax(text.to_string()))?;
    if net.prefix_len() != 64 {
        return Err(ConfigError::Cidr6Prefix(text.to_string()));
    }
    if net.addr() != net.network() {
        return Err(ConfigError::Cidr6HostBits(text.to_string(), net.trunc()));
    }
    let a = net.network();
    let scope = if a.is_multicast() {
        Some("multicast")
    } else if a.is_unicast_link_local() {
        Some("link-local")
    } else if a.is_loopback() || a.is_unspecified() {
        Some("loopback or unspecified")
    } else if a.to_ipv4_mapped().is_some() {
        Some("IPv4-mapped")
    } else {
        None
    };
    match scope {
        Some(what) => Err(ConfigError::Cidr6Scope(text.to_string(), what)),
        None => Ok(net),
    }
}

/// Parses a unicast MAC address `xx:xx:xx:xx:xx:xx`.
///
/// # Errors
/// [`ConfigError::Mac`] on bad syntax, a multicast address or all zeros.
pub fn parse_mac(text: &str) -> Result<[u8; 6], ConfigError> {
    let bad = || ConfigError::Mac(text.to_string());
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in mac.iter_mut() {
        let p = parts.next().ok_or_else(bad)?;
        if p.len() != 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() || mac[0] & 1 == 1 || mac == [0; 6] {
        return Err(bad());
    }
    Ok(mac)
}

/// Parses a DNS upstream `IP`, `IP:PORT` or `[IPv6]:PORT`; the port defaults to 53.
///
/// # Errors
/// [`ConfigError::DnsUpstream`] naming the text.
pub fn parse_upstream(text: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(ip) = IpAddr::from_str(text) {
        return Ok(SocketAddr::new(ip, 53));
    }
    // A link-local server on one interface: fe80::1%eth0, [fe80::1%eth0]:5353.
    let bracketed = text.strip_prefix('[').and_then(|t| t.split_once("]:"));
    let scoped = match bracketed {
        Some((addr, port)) => port.parse::<u16>().ok().filter(|p| *p != 0).and_then(|p| crate::dns::scoped(addr, p)),
        None => crate::dns::scoped(text, 53),
    };
    if let Some(sa) = scoped {
        return Ok(sa);
    }
    match SocketAddr::from_str(text) {
        Ok(sa) if sa.port() != 0 => Ok(sa),
        _ => Err(ConfigError::DnsUpstream(text.to_string())),
    }
}

/// Parses a `--dns-route DOMAIN=IP[:PORT]`: names in DOMAIN (and DOMAIN itself) go to that
/// server; the port defaults to 53.
///
/// # Errors
/// [`ConfigError::DnsRoute`] naming the text and what is wrong with it.
pub fn parse_dns_route(text: &str) -> Result<crate::dns::Route, ConfigError> {
    let bad = |why| ConfigError::DnsRoute(text.to_string(), why);
    let (domain, server) = text.split_once('=').ok_or_else(|| bad("no '='"))?;
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if domain.is_empty() {
        return Err(bad("the domain is empty (the default upstreams are --dns-upstream)"));
    }
    let label_ok =
        |l: &str| (1..=63).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if domain.len() > 253 || !domain.split('.').all(label_ok) {
        return Err(bad("the domain is not a DNS name (labels of letters, digits, '-' and '_', 1-63 long)"));
    }
    let server = parse_upstream(server).map_err(|_| bad("the server is not IP or IP:PORT (IPv6 as [ADDR]:PORT)"))?;
    Ok(crate::dns::Route { domain, server })
}

/// Where the DNS forwarder sends queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsUpstreams {
    /// The host's `/etc/resolv.conf` nameservers, re-read when the file changes.
    HostResolvConf,
    /// Fixed upstreams from `--dns-upstream`.
    Fixed(Vec<SocketAddr>),
    /// No forwarder: the DNS address is just another unused address (slirp4netns
    /// `--disable-dns`).
    Disabled,
}

/// The addresses of a user-mode network derived from its CIDR (slirp4netns's layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// The network, e.g. 10.0.2.0/24.
    pub net: Ipv4Net,
    /// The gateway: network + 2.
    pub gateway: Ipv4Addr,
    /// The DNS forwarder: network + 3.
    pub dns: Ipv4Addr,
    /// The container: network + 100.
    pub container: Ipv4Addr,
}

impl Addresses {
    /// Derives the standard addresses from a validated network (prefix <= 25, so +100 fits).
    pub fn new(net: Ipv4Net) -> Self {
        let base = u32::from(net.network());
        Self {
            net,
            gateway: Ipv4Addr::from(base + 2),
            dns: Ipv4Addr::from(base + 3),
            container: Ipv4Addr::from(base + 100),
        }
    }
}

/// The IPv6 addresses of a user-mode network (libslirp's layout: gateway ::2, DNS ::3; the
/// container takes ::100 as on IPv4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses6 {
    /// The /64.
    pub net: Ipv6Net,
    /// The gateway: prefix::2.
    pub gateway: Ipv6Addr,
    /// The DNS forwarder: prefix::3.
    pub dns: Ipv6Addr,
    /// The container's static address: prefix::100.
    pub container: Ipv6Addr,
}

impl Addresses6 {
    /// Derives the standard addresses from a validated /64.
    pub fn new(net: Ipv6Net) -> Self {
        let base = u128::from(net.network());
        Self {
            net,
            gateway: Ipv6Addr::from(base + 2),
            dns: Ipv6Addr::from(base + 3),
            container: Ipv6Addr::from(base + 0x100),
        }
    }
}

/// Per-container limits on flows and TCP buffer memory; beyond them new TCP flows are reset,
/// UDP and ICMP dropped, and both counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open TCP flows (each has up to 1 MiB + 1 MiB of buffers, touched lazily).
    pub tcp_flows: usize,
    /// Open UDP flows (outbound and published-port clients, counted separately).
    pub udp_flows: usize,
    /// Open ICMP echo flows.
    pub ping_flows: usize,
    /// Idle time after which a UDP flow that got a reply is closed (one that never did: at
    /// most 30 s).
    pub udp_timeout: std::time::Duration,
    /// Outbound TCP connections to one destination address whose host connect has not
    /// completed yet (SYNs to a slow or blackholed host); more are reset at once, so one bad
    /// destination cannot hold every flow.
    pub handshakes: usize,
    /// Bytes all TCP flows' buffers may reserve together (see `runtime::tcp::BufferPool`):
    /// flows get smaller buffers as it fills; beyond it they are reset.
    pub buffer_memory: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            tcp_flows: 65536,
            udp_flows: 16384,
            ping_flows: 1024,
            handshakes: 1024,
            buffer_memory: 4096 << 20,
            udp_timeout: std::time::Duration::from_secs(120),
        }
    }
}

/// Everything the namespace setup and the data path need for one container network.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Network layout.
    pub addrs: Addresses,
    /// IPv6 layout; `None` when IPv6 is off.
    pub addrs6: Option<Addresses6>,
    /// Whether the container's IPv6 address is set statically (`warren run`); without it the
    /// container autoconfigures from router advertisements (the slirp4netns model).
    pub static_ipv6: bool,
    /// Link MTU of the TAP (and of the userspace stack).
    pub mtu: u32,
    /// Name of the TAP inside the namespace.
    pub tap_name: String,
    /// MAC of the TAP inside the namespace; `None` keeps the kernel's random one.
    pub mac: Option<[u8; 6]>,
    /// Whether connections to the gateway reach the host's 127.0.0.1.
    pub allow_host_loopback: bool,
    /// DNS upstream policy.
    pub dns: DnsUpstreams,
    /// `--dns-route`: domains whose names go to servers of their own.
    pub dns_routes: Vec<crate::dns::Route>,
    /// Source address for outbound IPv4 host sockets (slirp4netns `--outbound-addr`).
    pub outbound_v4: Option<Ipv4Addr>,
    /// Source address for outbound IPv6 host sockets (slirp4netns `--outbound-addr6`).
    pub outbound_v6: Option<Ipv6Addr>,
    /// The interfaces `--outbound-addr` and `--outbound-addr6` named (not addresses): their
    /// address is looked up again when the kernel no longer takes the one in use.
    pub outbound_ifaces: (Option<String>, Option<String>),
    /// Flow limits.
    pub limits: Limits,
    /// Whether the container gets a default route via the gateway (not for a second
    /// interface of a container on several networks).
    pub default_route: bool,
    /// Bridge-network behaviour when this is the gateway of a multi-container segment.
    pub bridge: Option<BridgeOpts>,
    /// TAP queues, each served by its own data-path thread (1: one queue, one thread).
    pub queues: usize,
    /// Longest adaptive busy-poll window of a data-path thread before it sleeps (zero: never
    /// poll; see `runtime::spin`).
    pub busy_poll: std::time::Duration,
    /// `-T`: ports of the container's loopback that lead to the host's loopback.
    pub to_host: Vec<crate::forward::ToHost>,
    /// `-U`: the same for UDP.
    pub to_host_udp: Vec<crate::forward::ToHost>,
    /// `--multicast`: the groups relayed between the container and the host's network.
    pub multicast: Vec<crate::multicast::Relay>,
    /// `-p auto`: which of the namespace's socket tables warren keeps open to read.
    pub auto_tables: AutoTables,
}

/// The socket tables of the container's network namespace `-p auto` reads (opened inside it
/// when the TAP is set up).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AutoTables {
    /// `/proc/net/tcp` and `tcp6` (`-p auto`).
    pub tcp: bool,
    /// `/proc/net/udp` and `udp6`, and the namespace's ephemeral port range (`-p auto/udp`).
    pub udp: bool,
}

impl AutoTables {
    /// The tables the `-p auto` specs (host address, protocol) read.
    pub fn of(autos: &[(std::net::IpAddr, crate::forward::Proto)]) -> Self {
        use crate::forward::Proto;
        Self { tcp: autos.iter().any(|(_, p)| *p == Proto::Tcp), udp: autos.iter().any(|(_, p)| *p == Proto::Udp) }
    }
}

/// The default longest busy-poll window, microseconds (`--busy-poll`). Polling stands aside
/// while other threads want the CPUs (`runtime::spin`), so it is on by default.
pub const BUSY_POLL_DEFAULT_US: u16 = 200;
/// The longest busy-poll window one may ask for, microseconds.
pub const BUSY_POLL_MAX_US: u16 = 1000;

/// The default longest busy-poll window.
pub fn default_busy_poll() -> std::time::Duration {
    std::time::Duration::from_micros(BUSY_POLL_DEFAULT_US.into())
}

/// Most TAP queues (data-path threads) a container may ask for.
pub const QUEUES_MAX: u8 = 16;

/// The default number of TAP queues: one per CPU this process may run on, at most 4 (the
/// container, its peers and the host's kernel work need the CPUs too).
pub fn default_queues() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// How a bridge network's gateway treats its containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeOpts {
    /// No outside access: only the gateway's DNS (local names) and published ports.
    pub internal: bool,
    /// Inter-container communication on the segment (`--icc=false` drops it).
    pub icc: bool,
}

impl NetConfig {
    /// The MAC warren's gateway uses on the segment: 52:55 followed by the gateway IPv4
    /// address (the convention slirp uses, so captures look familiar).
    pub fn gateway_mac(&self) -> [u8; 6] {
        let o = self.addrs.gateway.octets();
        [0x52, 0x55, o[0], o[1], o[2], o[3]]
    }

    /// The gateway's link-local IPv6 address (EUI-64 of its MAC): the router address of
    /// neighbour discovery.
    pub fn gateway_link_local(&self) -> Ipv6Addr {
        crate::wire::link_local_of(self.gateway_mac())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_upstreams_name_their_interface() {
        let lo = nix::net::if_::if_nametoindex("lo").unwrap();
        let want = |port| SocketAddr::from(std::net::SocketAddrV6::new("fe80::1".parse().unwrap(), port, 0, lo));
        assert_eq!(parse_upstream("fe80::1%lo").unwrap(), want(53));
        assert_eq!(parse_upstream("[fe80::1%lo]:5353").unwrap(), want(5353));
        for bad in ["fe80::1%nosuchif0", "[fe80::1%lo]:0", "[fe80::1%lo]", "10.0.0.1%lo"] {
            assert!(parse_upstream(bad).unwrap_err().to_string().contains(&format!("{bad:?}")), "{bad}");
        }
    }

    #[test]
    fn dns_routes() {
        let r = parse_dns_route("Corp.Example.=10.8.0.1").unwrap();
        assert_eq!((r.domain.as_str(), r.server), ("corp.example", "10.8.0.1:53".parse().unwrap()));
        let r = parse_dns_route("10.in-addr.arpa=[fd00::1]:5353").unwrap();
        assert_eq!((r.domain.as_str(), r.server), ("10.in-addr.arpa", "[fd00::1]:5353".parse().unwrap()));
        assert_eq!(parse_dns_route("_tcp.local=::1").unwrap().server, "[::1]:53".parse().unwrap());
        for (bad, why) in [
            ("corp.example", "no '='"),
            ("=10.8.0.1", "the domain is empty"),
            (".=10.8.0.1", "the domain is empty"),
            ("a..b=10.8.0.1", "not a DNS name"),
            ("a b=10.8.0.1", "not a DNS name"),
            ("corp.example=resolver", "the server is not IP"),
            ("corp.example=10.8.0.1:0", "the server is not IP"),
        ] {
            let e = parse_dns_route(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")) && e.contains(why) && e.contains("DOMAIN=IP[:PORT]"), "{e}");
        }
    }

    #[test]
    fn add_host_takes_docker_forms_and_names_what_is_wrong() {
        let ip = |s: &str| HostEntryAddr::Ip(s.parse().unwrap());
        assert_eq!(parse_add_host("db:192.0.2.9").unwrap(), ("db".into(), ip("192.0.2.9")));
        assert_eq!(parse_add_host("db=192.0.2.9").unwrap(), ("db".into(), ip("192.0.2.9")));
        assert_eq!(parse_add_host("v6:2001:db8::33").unwrap(), ("v6".into(), ip("2001:db8::33")));
        assert_eq!(parse_add_host("v6=[2001:db8::33]").unwrap(), ("v6".into(), ip("2001:db8::33")));
        assert_eq!(parse_add_host("h.docker.internal:host-gateway").unwrap().1, HostEntryAddr::Gateway);
        for (bad, why) in [
            ("nohost", "no address"),
            (":1.2.3.4", "\"\" is not a host name"),
            ("a b:1.2.3.4", "\"a b\" is not a host name"),
            ("db:1.2.3", "\"1.2.3\" is not an IP address"),
        ] {
            let e = parse_add_host(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("invalid --add-host {bad:?}: {why}; expected NAME:IP")), "{e}");
        }
        let hosts = hosts_file_contents("127.0.0.1 localhost", &[("db".into(), "192.0.2.9".parse().unwrap())]);
        assert_eq!(hosts, "127.0.0.1 localhost\n# added by warren (--add-host)\n192.0.2.9\tdb\n");
    }

    #[test]
    fn cidr_rules() {
        assert_eq!(parse_cidr("10.0.2.0/24").unwrap().to_string(), "10.0.2.0/24");
        assert_eq!(parse_cidr("10.0.0.0/8").unwrap().prefix_len(), 8);
        assert!(matches!(parse_cidr("10.0.2.100/24"), Err(ConfigError::CidrHostBits(..))));
        assert!(matches!(parse_cidr("10.0.2.0/26"), Err(ConfigError::CidrPrefix(_))));
        assert!(matches!(parse_cidr("0.0.0.0/0"), Err(ConfigError::CidrPrefix(_))));
        assert!(matches!(parse_cidr("10.0.2.0"), Err(ConfigError::CidrSyntax(_))));
        assert!(matches!(parse_cidr("fd00::/64"), Err(ConfigError::CidrSyntax(_))));
        let e = parse_cidr("10.0.2.100/24").unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid CIDR \"10.0.2.100/24\": expected a network address like 10.0.2.0/24, not a host address"
        );
    }

    #[test]
    fn cidr6_rules() {
        let a = Addresses6::new(parse_cidr6("fd00::/64").unwrap());
        assert_eq!(
            (a.gateway, a.dns, a.container),
            ("fd00::2".parse().unwrap(), "fd00::3".parse().unwrap(), "fd00::100".parse().unwrap())
        );
        assert!(parse_cidr6("fd12:3456:789a:1::/64").is_ok());
        assert_eq!(
            parse_cidr6("fd00::/48").unwrap_err().to_string(),
            "invalid IPv6 prefix \"fd00::/48\": the prefix length must be 64 (SLAAC needs a /64)"
        );
        assert!(matches!(parse_cidr6("fd00::1/64"), Err(ConfigError::Cidr6HostBits(..))));
        assert!(matches!(parse_cidr6("fe80::/64"), Err(ConfigError::Cidr6Scope(..))));
        assert!(matches!(parse_cidr6("ff02::/64"), Err(ConfigError::Cidr6Scope(..))));
        assert!(matches!(parse_cidr6("10.0.2.0/24"), Err(ConfigError::Cidr6Syntax(_))));
        assert!(matches!(parse_cidr6("fd00::"), Err(ConfigError::Cidr6Syntax(_))));
    }

    #[test]
    fn derived_addresses() {
        let a = Addresses::new(parse_cidr("192.168.7.0/25").unwrap());
        assert_eq!(a.gateway, Ipv4Addr::new(192, 168, 7, 2));
        assert_eq!(a.dns, Ipv4Addr::new(192, 168, 7, 3));
        assert_eq!(a.container, Ipv4Addr::new(192, 168, 7, 100));
    }

    #[test]
    fn mtu_range() {
        assert_eq!(parse_mtu(1280), Ok(1280));
        assert_eq!(parse_mtu(65520), Ok(65520));
        assert_eq!(parse_mtu(1279), Err(ConfigError::Mtu(1279)));
        assert_eq!(parse_mtu(65521).unwrap_err().to_string(), "invalid MTU 65521: expected 1280..=65520");
    }

    #[test]
    fn mac_rules() {
        assert_eq!(parse_mac("02:00:00:aa:bb:cc"), Ok([2, 0, 0, 0xaa, 0xbb, 0xcc]));
        assert!(parse_mac("01:00:5e:00:00:01").is_err(), "multicast refused");
        assert!(parse_mac("00:00:00:00:00:00").is_err());
        assert!(parse_mac("02:00:00:aa:bb").is_err());
        assert!(parse_mac("02:00:00:aa:bb:cc:dd").is_err());
        assert!(parse_mac("02:00:00:aa:bb:c").is_err());
    }

    #[test]
    fn upstreams() {
        assert_eq!(parse_upstream("127.0.0.53"), Ok("127.0.0.53:53".parse().unwrap()));
        assert_eq!(parse_upstream("127.0.0.1:5353"), Ok("127.0.0.1:5353".parse().unwrap()));
        assert_eq!(parse_upstream("::1"), Ok("[::1]:53".parse().unwrap()));
        assert_eq!(parse_upstream("[::1]:5300"), Ok("[::1]:5300".parse().unwrap()));
        assert!(parse_upstream("localhost").is_err());
        assert!(parse_upstream("1.2.3.4:0").is_err());
    }
}
