//! Published ports: the `-p` spec grammar and the forward table (sans-IO).
//!
//! Spec: `[HOST_IP:][HOST_PORT[-END]:]CONTAINER_PORT[-END][/PROTO]`. `HOST_IP` is IPv4 or a
//! bracketed IPv6 address (default 0.0.0.0); an omitted or empty `HOST_PORT` means "any free
//! port" (reported after binding); ranges must have the same length on both sides. `PROTO` is
//! `tcp` (default) or `udp`, optionally with `4` or `6` to choose the container address family
//! (default: the host address's family, IPv4 when the container has no IPv6), so an IPv6
//! listener can lead to an IPv4-only service (`-p [::]:8080:80/tcp4`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Transport protocol of a forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// Container address family a forward leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// The container's IPv4 address.
    V4,
    /// The container's IPv6 address.
    V6,
}

/// A malformed `-p` spec.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid port spec {spec:?}: {why}; expected [HOST_IP:][HOST_PORT[-END]:]CONTAINER_PORT[-END][/tcp|/udp][4|6] or [HOST_IP:]auto[/udp]"
)]
pub struct SpecError {
    /// The text given.
    pub spec: String,
    /// What is wrong with it.
    pub why: String,
}

/// One forward to set up: a host socket address (port 0 = pick one) to a container port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// Protocol.
    pub proto: Proto,
    /// Host address to bind.
    pub host: SocketAddr,
    /// Container port.
    pub container_port: u16,
    /// Container address family, when the spec chose one.
    pub container_family: Option<Family>,
    /// An explicit container address (the slirp4netns API's `guest_addr6`); overrides the
    /// family.
    pub container_ip: Option<IpAddr>,
}

impl Forward {
    /// The `-p` spec that parses back into this forward (with its host address; an explicit
    /// container address, which no spec carries, is left out).
    pub fn spec(&self) -> String {
        let family = match self.container_family {
            None => "",
            Some(Family::V4) => "4",
            Some(Family::V6) => "6",
        };
        let ip = match self.host.ip() {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        // An empty host port picks one, as port 0 does.
        let port = match self.host.port() {
            0 => String::new(),
            p => p.to_string(),
        };
        format!("{ip}:{port}:{}/{}{family}", self.container_port, self.proto.as_str())
    }
}

fn parse_port(text: &str, what: &str, allow_zero: bool) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(0) if !allow_zero => Err(format!("{what} 0 is not a port")),
        Ok(p) => Ok(p),
        Err(_) => Err(format!("{what} {text:?} is not a number 1..=65535")),
    }
}

fn parse_range(text: &str, what: &str) -> Result<(u16, u16), String> {
    match text.split_once('-') {
        None => parse_port(text, what, false).map(|p| (p, p)),
        Some((a, b)) => {
            let (a, b) = (parse_port(a, what, false)?, parse_port(b, what, false)?);
            if a > b {
                return Err(format!("{what} range {text} is backwards"));
            }
            Ok((a, b))
        }
    }
}

/// Parses one `-p` spec into the forwards it denotes (one per port of a range, and without a
/// host address one on `0.0.0.0` and one on `[::]` when the host has IPv6; see
/// [`parse_spec_with`]).
///
/// # Errors
/// [`SpecError`] naming the spec and the problem.
pub fn parse_spec(spec: &str) -> Result<Vec<Forward>, SpecError> {
    parse_spec_with(spec, crate::sys::ipv6_available())
}

/// Parses one `-p` spec into the forwards it denotes: one per port of a range. A spec without
/// a host address publishes on every address, as Docker, pasta and RootlessKit do: on
/// `0.0.0.0` and, when `ipv6`, on `[::]` too (each IPv4 forward followed by its IPv6 twin, the
/// same host port). A TCP twin leads to the container's IPv6 address with the IPv4 fallback
/// of any IPv6 listener; a UDP twin, which has no fallback, to its IPv4 address (where a
/// service bound to `0.0.0.0` or a dual-stack `[::]` answers), unless the spec names a family.
///
/// # Errors
/// [`SpecError`] naming the spec and the problem.
pub fn parse_spec_with(spec: &str, ipv6: bool) -> Result<Vec<Forward>, SpecError> {
    let err = |why: String| SpecError { spec: spec.to_string(), why };
    if parse_auto(spec).is_some() {
        return Err(err("`auto` is only for `warren run -p` and `warren attach -p`, when the container starts".into()));
    }
    let (body, proto, family) = match spec.rsplit_once('/') {
        Some((b, p)) => {
            let (name, family) = match p.strip_suffix('4') {
                Some(n) => (n, Some(Family::V4)),
                None => match p.strip_suffix('6') {
                    Some(n) => (n, Some(Family::V6)),
                    None => (p, None),
                },
            };
            match name {
                "tcp" => (b, Proto::Tcp, family),
                "udp" => (b, Proto::Udp, family),
                _ => return Err(err(format!("protocol {p:?} is not tcp, udp, tcp4, udp4, tcp6 or udp6"))),
            }
        }
        None => (spec, Proto::Tcp, None),
    };
    // Split off a bracketed IPv6 host address first; it contains colons.
    let (host_ip, rest) = if let Some(r) = body.strip_prefix('[') {
        let (ip, rest) = r.split_once(']').ok_or_else(|| err("unclosed '[' in the host address".into()))?;
        let ip: IpAddr = ip.parse().map_err(|_| err(format!("{ip:?} is not an IPv6 address")))?;
        let rest = rest.strip_prefix(':').ok_or_else(|| err("expected ':' after the host address".into()))?;
        (Some(ip), rest)
    } else {
        (None, body)
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (host_ip, host_ports, cont) = match (host_ip, parts.as_slice()) {
        (Some(ip), [hp, c]) => (Some(ip), Some(*hp), *c),
        (Some(ip), [c]) => (Some(ip), None, *c),
        (None, [c]) => (None, None, *c),
        (None, [hp, c]) => (None, Some(*hp), *c),
        (None, [ip, hp, c]) => {
            let ip: Ipv4Addr = ip.parse().map_err(|_| err(format!("{ip:?} is not an IPv4 address")))?;
            (Some(IpAddr::V4(ip)), Some(*hp), *c)
        }
        _ => return Err(err("too many ':'".into())),
    };
    if cont.is_empty() {
        return Err(err("the container port is missing".into()));
    }
    let (c0, c1) = parse_range(cont, "container port").map_err(err)?;
    let host_ports = match host_ports {
        None | Some("") => None,
        Some(h) => Some(parse_range(h, "host port").map_err(err)?),
    };
    if let Some((h0, h1)) = host_ports
        && h1 - h0 != c1 - c0
    {
        return Err(err(format!("host range {h0}-{h1} and container range {c0}-{c1} differ in length")));
    }
    let ip = host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let twin = host_ip.is_none() && ipv6;
    let mut out = Vec::with_capacity(usize::from(c1 - c0 + 1) * (1 + usize::from(twin)));
    for (i, cp) in (c0..=c1).enumerate() {
        let fwd = Forward {
            proto,
            host: SocketAddr::new(ip, host_ports.map_or(0, |(h0, _)| h0 + i as u16)),
            container_port: cp,
            container_family: family,
            container_ip: None,
        };
        out.push(fwd);
        if twin {
            out.push(Forward {
                host: SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), fwd.host.port()),
                container_family: family.or((proto == Proto::Udp).then_some(Family::V4)),
                ..fwd
            });
        }
    }
    Ok(out)
}

/// Reads `[HOST_IP:]auto[/tcp|/udp]` (publish every TCP port the container listens on, or
/// every UDP port it serves, see [`crate::autopublish`]): `None` when `spec` is not of that
/// form, else the host address (`None`: every address) and protocol, or the error.
pub fn parse_auto(spec: &str) -> Option<Result<(Option<IpAddr>, Proto), SpecError>> {
    let err = |why: String| SpecError { spec: spec.to_string(), why };
    let (body, proto) = spec.rsplit_once('/').map_or((spec, None), |(b, p)| (b, Some(p)));
    let host = body.strip_suffix("auto")?;
    if !(host.is_empty() || host.ends_with(':')) {
        return None;
    }
    let proto = match proto {
        None | Some("tcp") => Proto::Tcp,
        Some("udp") => Proto::Udp,
        Some(p) => return Some(Err(err(format!("protocol {p:?}: `auto` takes /tcp or /udp")))),
    };
    let host = host.strip_suffix(':').unwrap_or(host);
    if host.is_empty() {
        return Some(Ok((None, proto)));
    }
    let ip = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => {
            v6.parse::<std::net::Ipv6Addr>().map(IpAddr::V6).map_err(|_| err(format!("{v6:?} is not an IPv6 address")))
        }
        None => host.parse::<Ipv4Addr>().map(IpAddr::V4).map_err(|_| err(format!("{host:?} is not an IPv4 address"))),
    };
    Some(ip.map(|ip| (Some(ip), proto)))
}

/// Most ports `-T` may lead to the host: each is a listening socket the container's
/// namespace holds for warren (two with IPv6), all handed over in one message.
pub const TO_HOST_MAX: usize = 16;

/// A `-T` port: connections to the container's loopback at `container_port` go to the host's
/// loopback at `host_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToHost {
    /// Port on the container's 127.0.0.1 and ::1.
    pub container_port: u16,
    /// Port on the host's 127.0.0.1 (or ::1).
    pub host_port: u16,
}

/// A malformed `-T` or `-U` spec.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("invalid {option} spec {spec:?}: {why}; expected [CONTAINER_PORT[-END]:]HOST_PORT[-END]")]
pub struct ToHostError {
    /// The option: `--to-host` or `--to-host-udp`.
    pub option: &'static str,
    /// The text given.
    pub spec: String,
    /// What is wrong with it.
    pub why: String,
}

/// Parses the specs of `option` (`--to-host`, `--to-host-udp`) into the ports they denote,
/// at most [`TO_HOST_MAX`] in all, each container port once.
///
/// # Errors
/// [`ToHostError`] naming the spec and the problem.
pub fn parse_to_host<S: AsRef<str>>(specs: &[S], option: &'static str) -> Result<Vec<ToHost>, ToHostError> {
    let mut out: Vec<ToHost> = Vec::new();
    for spec in specs {
        let spec = spec.as_ref();
        let err = |why: String| ToHostError { option, spec: spec.to_string(), why };
        let (c, h) = match spec.split_once(':') {
            Some((c, h)) => (parse_range(c, "container port").map_err(err)?, parse_range(h, "host port").map_err(err)?),
            None => {
                let r = parse_range(spec, "port").map_err(err)?;
                (r, r)
            }
        };
        if h.1 - h.0 != c.1 - c.0 {
            return Err(err(format!(
                "container range {}-{} and host range {}-{} differ in length",
                c.0, c.1, h.0, h.1
            )));
        }
        for (i, cp) in (c.0..=c.1).enumerate() {
            if out.iter().any(|t| t.container_port == cp) {
                return Err(err(format!("container port {cp} is given twice")));
            }
            if out.len() == TO_HOST_MAX {
                return Err(err(format!("more than {TO_HOST_MAX} ports in all")));
            }
            out.push(ToHost { container_port: cp, host_port: h.0 + i as u16 });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forward_spec_parses_back_into_the_forward() {
        for s in
            ["0.0.0.0:8080:80", "127.0.0.1::53/udp", "[::]:8443:443/tcp4", "[::1]:5353:53/udp6", "[::]:7000:7000/udp4"]
        {
            let f = one(s);
            assert_eq!(one(&f.spec()), f, "{s} -> {}", f.spec());
        }
    }

    fn one(s: &str) -> Forward {
        let v = parse_spec_with(s, false).unwrap();
        assert_eq!(v.len(), 1, "{s}");
        v[0]
    }

    #[test]
    fn forms() {
        assert_eq!(
            one("8080:80"),
            Forward {
                proto: Proto::Tcp,
                host: "0.0.0.0:8080".parse().unwrap(),
                container_port: 80,
                container_family: None,
                container_ip: None
            }
        );
        assert_eq!(
            one("127.0.0.1:5353:53/udp"),
            Forward {
                proto: Proto::Udp,
                host: "127.0.0.1:5353".parse().unwrap(),
                container_port: 53,
                container_family: None,
                container_ip: None
            }
        );
        assert_eq!(one("[::1]:8443:443").host, "[::1]:8443".parse().unwrap());
        assert_eq!(one("[::]:8080:80/tcp4").container_family, Some(Family::V4));
        assert_eq!((one("8080:80/udp6").proto, one("8080:80/udp6").container_family), (Proto::Udp, Some(Family::V6)));
        assert_eq!(one("80").host, "0.0.0.0:0".parse().unwrap(), "free host port");
        assert_eq!(one("127.0.0.1::80").host, "127.0.0.1:0".parse().unwrap());
        assert_eq!(one("[::]:80").host, "[::]:0".parse().unwrap());
        let r = parse_spec_with("9000-9002:9100-9102", false).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!((r[2].host.port(), r[2].container_port), (9002, 9102));
        assert_eq!(
            parse_spec_with("7000-7001", false).unwrap().iter().map(|f| f.host.port()).collect::<Vec<_>>(),
            [0, 0]
        );
    }

    #[test]
    fn without_a_host_address_both_families_are_published() {
        let hosts = |s: &str| -> Vec<(String, u16, Option<Family>)> {
            parse_spec_with(s, true)
                .unwrap()
                .iter()
                .map(|f| (f.host.to_string(), f.container_port, f.container_family))
                .collect()
        };
        let h = |a: &str, p, f| (a.to_string(), p, f);
        assert_eq!(hosts("8080:80"), [h("0.0.0.0:8080", 80, None), h("[::]:8080", 80, None)]);
        assert_eq!(
            hosts("5353:53/udp"),
            [h("0.0.0.0:5353", 53, None), h("[::]:5353", 53, Some(Family::V4))],
            "a UDP twin leads to the container's IPv4 address"
        );
        assert_eq!(hosts("5353:53/udp6")[1], h("[::]:5353", 53, Some(Family::V6)), "unless the spec names one");
        assert_eq!(
            hosts("9000-9001:80-81"),
            [
                h("0.0.0.0:9000", 80, None),
                h("[::]:9000", 80, None),
                h("0.0.0.0:9001", 81, None),
                h("[::]:9001", 81, None)
            ]
        );
        assert_eq!(hosts("80"), [h("0.0.0.0:0", 80, None), h("[::]:0", 80, None)], "one picked port for both");
        assert_eq!(hosts("127.0.0.1:8080:80").len(), 1, "an address given is the only one");
        assert_eq!(hosts("[::]:8080:80").len(), 1);
        assert_eq!(parse_spec_with("8080:80", false).unwrap().len(), 1, "a host without IPv6");
    }

    #[test]
    fn auto_forms() {
        let a = |s: &str| parse_auto(s).map(|r| r.map_err(|e| e.why));
        let ok = |ip: &str, proto| Some(Ok((Some(ip.parse().unwrap()), proto)));
        assert_eq!(a("auto"), Some(Ok((None, Proto::Tcp))));
        assert_eq!(a("auto/tcp"), Some(Ok((None, Proto::Tcp))));
        assert_eq!(a("auto/udp"), Some(Ok((None, Proto::Udp))));
        assert_eq!(a("0.0.0.0:auto/udp"), ok("0.0.0.0", Proto::Udp));
        assert_eq!(a("127.0.0.1:auto"), ok("127.0.0.1", Proto::Tcp));
        assert_eq!(a("[::1]:auto/udp"), ok("::1", Proto::Udp));
        assert_eq!(a("auto/sctp"), Some(Err("protocol \"sctp\": `auto` takes /tcp or /udp".into())));
        assert_eq!(a("8080:auto"), Some(Err("\"8080\" is not an IPv4 address".into())));
        assert_eq!(a("[zz]:auto"), Some(Err("\"zz\" is not an IPv6 address".into())));
        assert_eq!(a("8080:80"), None);
        assert_eq!(a("xauto"), None);
        assert!(parse_spec("auto").unwrap_err().why.contains("only for `warren run -p`"), "port add refuses it");
    }

    #[test]
    fn to_host_forms_and_errors() {
        let t = |c, h| ToHost { container_port: c, host_port: h };
        assert_eq!(parse_to_host(&["5432"], "--to-host").unwrap(), vec![t(5432, 5432)]);
        assert_eq!(
            parse_to_host(&["15432:5432", "8000-8001"], "--to-host").unwrap(),
            vec![t(15432, 5432), t(8000, 8000), t(8001, 8001)]
        );
        assert_eq!(parse_to_host(&["80-81:9080-9081"], "--to-host-udp").unwrap(), vec![t(80, 9080), t(81, 9081)]);
        let e = |s: &[&str]| parse_to_host(s, "--to-host").unwrap_err().to_string();
        assert_eq!(
            e(&["pg"]),
            "invalid --to-host spec \"pg\": port \"pg\" is not a number 1..=65535; expected [CONTAINER_PORT[-END]:]HOST_PORT[-END]"
        );
        assert!(e(&["80-81:90"]).contains("container range 80-81 and host range 90-90 differ in length"));
        assert!(e(&["5432", "5432:6432"]).contains("container port 5432 is given twice"));
        assert!(e(&["1000-1016"]).contains("more than 16 ports in all"));
        assert!(e(&["0"]).contains("port 0 is not a port"));
        let u = parse_to_host(&["x"], "--to-host-udp").unwrap_err().to_string();
        assert!(u.starts_with("invalid --to-host-udp spec \"x\""), "{u}");
    }

    #[test]
    fn errors_name_the_problem() {
        let e = |s: &str| parse_spec(s).unwrap_err().why;
        assert_eq!(e("8080:80/sctp"), "protocol \"sctp\" is not tcp, udp, tcp4, udp4, tcp6 or udp6");
        assert_eq!(e("8080:80/tcp5"), "protocol \"tcp5\" is not tcp, udp, tcp4, udp4, tcp6 or udp6");
        assert_eq!(e("8080:http"), "container port \"http\" is not a number 1..=65535");
        assert_eq!(e("70000:80"), "host port \"70000\" is not a number 1..=65535");
        assert_eq!(e("1.2.3:80:80"), "\"1.2.3\" is not an IPv4 address");
        assert_eq!(e("9000-9001:80"), "host range 9000-9001 and container range 80-80 differ in length");
        assert_eq!(e("[::1:80"), "unclosed '[' in the host address");
        assert_eq!(e("[zz]:80:80"), "\"zz\" is not an IPv6 address");
        assert_eq!(e("[::1]80"), "expected ':' after the host address");
        assert_eq!(e("1:2:3:4"), "too many ':'");
        assert_eq!(e("8080:"), "the container port is missing");
        assert_eq!(e("0"), "container port 0 is not a port");
        assert_eq!(e("90-80"), "container port range 90-80 is backwards");
        let full = parse_spec("x").unwrap_err().to_string();
        assert!(full.starts_with("invalid port spec \"x\": container port \"x\" is not a number"), "{full}");
        assert!(full.ends_with(
            "expected [HOST_IP:][HOST_PORT[-END]:]CONTAINER_PORT[-END][/tcp|/udp][4|6] or [HOST_IP:]auto[/udp]"
        ));
    }
}
