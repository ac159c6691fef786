//! DNS upstream selection for the forwarder at network + 3.
//!
//! The forwarder is byte-transparent: a query the container sends to the DNS address over UDP
//! or TCP is NATed onto a host socket connected to an upstream, and answers come back with
//! the DNS address as their source. This module only decides *which* upstream: fixed ones
//! from `--dns-upstream`, or the host's `/etc/resolv.conf` nameservers, re-read whenever the
//! file changes (checked at most once a second, when a new DNS flow starts).

use std::net::{IpAddr, SocketAddr};
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
}
