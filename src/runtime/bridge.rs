//! Bridge networks: the gateway of a multi-container segment is also its switch.
//!
//! Each container interface is a TAP fd handed to the daemon and plugged in here as a port.
//! A frame read from a port is checked against what IPAM gave that port (its MAC, its IPv4
//! address, its IPv6 address or a link-local one): anything else is spoofing, dropped and
//! counted. Then it goes to the gateway (frames to the gateway's MAC, and every broadcast or
//! multicast), and, unless inter-container communication is off, straight to the port of its
//! destination MAC (broadcasts to every other port) with its `virtio_net_hdr` unchanged, so
//! checksum offload keeps working between containers. Frames the gateway sends find their
//! port through the IP-to-MAC table of [`super::device::TxSink`], filled from IPAM, never
//! learned from traffic.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;
use std::task::{Context, Poll};
use std::time::Instant;

use rustc_hash::FxHashMap;
use tokio::io::unix::AsyncFd;

use super::device::TxSink;
use super::ports::{Bound, PortInfo};
use super::{Dataplane, Token};
use crate::config::NetConfig;
use crate::dns::Records;
use crate::gateway::Drop;
use crate::wire;

/// A container interface to plug into a bridge network.
#[derive(Debug)]
pub struct PortSpec {
    /// Port id (unique in the daemon).
    pub id: u64,
    /// The TAP fd (non-blocking, vnet headers).
    pub fd: OwnedFd,
    /// The interface's MAC.
    pub mac: [u8; 6],
    /// Its IPv4 address.
    pub ip4: Ipv4Addr,
    /// Its IPv6 address, when the network has IPv6.
    pub ip6: Option<Ipv6Addr>,
    /// The container's name (DNS).
    pub name: String,
    /// Its aliases on this network (DNS).
    pub aliases: Vec<String>,
}

/// Per-port counters, as `network inspect` shows them.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PortStat {
    /// Port id.
    pub id: u64,
    /// Container name.
    pub name: String,
    /// Frames read from the container.
    pub frames_in: u64,
    /// Bytes read from the container.
    pub bytes_in: u64,
    /// Frames dropped because they carried another MAC or IP (ARP and IP spoofing).
    pub spoofed: u64,
    /// Frames to other containers dropped because inter-container traffic is off.
    pub icc_dropped: u64,
}

pub(super) struct BridgePort {
    fd: AsyncFd<OwnedFd>,
    mac: [u8; 6],
    ip4: Ipv4Addr,
    ip6: Option<Ipv6Addr>,
    name: String,
    aliases: Vec<String>,
    waker: std::task::Waker,
    stat: PortStat,
}

impl BridgePort {
    /// The addresses IPAM gave this interface.
    fn addrs(&self) -> Vec<IpAddr> {
        let mut v = vec![IpAddr::from(self.ip4)];
        v.extend(self.ip6.map(IpAddr::from));
        v
    }
}

/// The switch state of a bridge network's dataplane.
pub(super) struct Bridge {
    ports: FxHashMap<u64, BridgePort>,
    /// The names the gateway's DNS answers.
    pub(super) records: Records,
    icc: bool,
    rx: Vec<u8>,
}

/// Frames read from one port before other work gets a turn.
const PORT_BATCH: usize = 64;

impl Dataplane {
    /// Builds the gateway and switch of a bridge network (`cfg.bridge` set; `cfg.addrs`
    /// carries the gateway, which is also the DNS address). Ports arrive as commands.
    pub fn new_bridge(cfg: NetConfig) -> Self {
        let tx = TxSink::bridge(cfg.gateway_mac());
        let icc = cfg.bridge.is_none_or(|b| b.icc);
        let mut dp = Self::with_sink(cfg, tx);
        dp.bridge = Some(Bridge {
            ports: FxHashMap::default(),
            records: Records::default(),
            icc,
            rx: vec![0u8; wire::VNET_HDR_LEN + wire::FRAME_MAX],
        });
        dp
    }

    pub(super) fn add_port(&mut self, spec: PortSpec) -> io::Result<()> {
        let write = spec.fd.try_clone()?;
        let fd = crate::sys::async_fd(spec.fd)?;
        let waker = self.waker(Token::Port(spec.id));
        let Some(b) = self.bridge.as_mut() else {
            return Err(io::Error::other("not a bridge network"));
        };
        let stat = PortStat { id: spec.id, name: spec.name.clone(), ..PortStat::default() };
        let port = BridgePort {
            fd,
            mac: spec.mac,
            ip4: spec.ip4,
            ip6: spec.ip6,
            name: spec.name,
            aliases: spec.aliases,
            waker,
            stat,
        };
        self.tx.add_port(port.mac, write, &port.addrs());
        tracing::info!(id = spec.id, name = %port.name, ip = %port.ip4, "port plugged in");
        b.ports.insert(spec.id, port);
        self.rebuild_records();
        self.service_port(spec.id, Instant::now());
        Ok(())
    }

    pub(super) fn remove_port(&mut self, id: u64) {
        let Some(b) = self.bridge.as_mut() else { return };
        if let Some(p) = b.ports.remove(&id) {
            tracing::info!(id, name = %p.name, "port unplugged");
            self.tx.remove_port(p.mac);
        }
        self.listeners.retain(|_, l| l.owner != Some(id));
        self.rebuild_records();
    }

    fn rebuild_records(&mut self) {
        let Some(b) = self.bridge.as_mut() else { return };
        let mut r = Records::default();
        for p in b.ports.values() {
            r.add(&p.name, &p.aliases, &p.addrs());
        }
        b.records = r;
    }

    /// Publishes bound forwards to the container behind `port`: IPv6 listeners lead to its
    /// IPv6 address when it has one (TCP falling back to IPv4), others to its IPv4 address.
    pub(super) fn publish_for(&mut self, port: u64, bound: Vec<Bound>) -> Result<Vec<PortInfo>, String> {
        let Some(p) = self.bridge.as_ref().and_then(|b| b.ports.get(&port)) else {
            return Err(format!("no port {port} on this network"));
        };
        let (ip4, ip6) = (p.ip4, p.ip6);
        let target = move |_: &Self, fwd: &crate::forward::Forward| super::forward_addrs(fwd, ip4, ip6);
        self.publish_with(bound, Some(port), target).map_err(|e| e.to_string())
    }

    pub(super) fn port_stats(&self) -> Vec<PortStat> {
        let mut v: Vec<PortStat> =
            self.bridge.as_ref().map(|b| b.ports.values().map(|p| p.stat.clone()).collect()).unwrap_or_default();
        v.sort_by_key(|s| s.id);
        v
    }

    /// Reads what a port has sent and switches it.
    pub(super) fn service_port(&mut self, id: u64, now: Instant) {
        let Some(mut b) = self.bridge.take() else { return };
        let mut rx = std::mem::take(&mut b.rx);
        let mut more = false;
        let mut gone = false;
        self.batching = true;
        for _ in 0..PORT_BATCH {
            let Some(p) = b.ports.get_mut(&id) else { break };
            let waker = p.waker.clone();
            let mut cx = Context::from_waker(&waker);
            let n = match p.fd.poll_read_ready(&mut cx) {
                Poll::Pending => break,
                Poll::Ready(Err(_)) => {
                    gone = true;
                    break;
                }
                Poll::Ready(Ok(mut guard)) => {
                    match guard.try_io(|fd| nix::unistd::read(fd.get_ref(), &mut rx).map_err(io::Error::from)) {
                        Ok(Ok(n)) => n,
                        Ok(Err(e)) => {
                            tracing::debug!(id, error = %e, "port read failed: unplugging");
                            gone = true;
                            break;
                        }
                        Err(_would_block) => continue,
                    }
                }
            };
            more = true;
            if n < wire::VNET_HDR_LEN {
                self.stats.drops.count(Drop::Malformed);
                continue;
            }
            let frame = &rx[wire::VNET_HDR_LEN..n];
            p.stat.frames_in += 1;
            p.stat.bytes_in += frame.len() as u64;
            if let Err(why) = admits(p, frame) {
                p.stat.spoofed += 1;
                self.stats.frames_in += 1;
                self.stats.drops.count(why);
                continue;
            }
            let (dst, src): ([u8; 6], [u8; 6]) = (frame[..6].try_into().unwrap_or([0; 6]), p.mac);
            let to_gateway = dst == self.tx.src_mac || dst[0] & 1 == 1;
            if !to_gateway {
                // Frames for the gateway are recorded when it handles them.
                self.tx.record(frame);
            }
            if dst != self.tx.src_mac {
                if b.icc {
                    self.tx.forward(&rx[..n], dst, src);
                } else if dst[0] & 1 == 0 && self.tx.has_port(&dst) {
                    p.stat.icc_dropped += 1;
                }
            }
            if to_gateway {
                match wire::vnet_trusted(&rx[..wire::VNET_HDR_LEN]) {
                    Some(trusted) => {
                        // The gateway code reads the bridge (local DNS): put it back meanwhile.
                        self.bridge = Some(b);
                        self.frame(&rx[wire::VNET_HDR_LEN..n], trusted, now);
                        b = self.bridge.take().expect("the bridge stays");
                    }
                    None => self.stats.drops.count(Drop::Malformed),
                }
            }
        }
        if more
            && !gone
            && let Some(p) = b.ports.get(&id)
        {
            // The batch may have ended with frames still queued: come back after other work.
            p.waker.wake_by_ref();
        }
        b.rx = rx;
        self.bridge = Some(b);
        self.end_batch(now);
        if gone {
            self.remove_port(id);
        }
    }
}

/// Whether a frame from `p` carries only what IPAM gave it.
fn admits(p: &BridgePort, frame: &[u8]) -> Result<(), Drop> {
    let eth = wire::parse_eth(frame).ok_or(Drop::Malformed)?;
    if eth.src != p.mac {
        return Err(Drop::Spoofed);
    }
    match eth.ethertype {
        wire::ETHERTYPE_ARP => {
            let a = wire::parse_arp(eth.payload).ok_or(Drop::Malformed)?;
            let ours = a.sender_ip == p.ip4 || a.sender_ip.is_unspecified();
            if a.sender_mac != p.mac || !ours { Err(Drop::Spoofed) } else { Ok(()) }
        }
        wire::ETHERTYPE_IPV4 => {
            let src: [u8; 4] =
                eth.payload.get(12..16).ok_or(Drop::Malformed)?.try_into().map_err(|_| Drop::Malformed)?;
            if Ipv4Addr::from(src) == p.ip4 { Ok(()) } else { Err(Drop::Spoofed) }
        }
        wire::ETHERTYPE_IPV6 => {
            let src: [u8; 16] =
                eth.payload.get(8..24).ok_or(Drop::Malformed)?.try_into().map_err(|_| Drop::Malformed)?;
            let src = Ipv6Addr::from(src);
            if Some(src) == p.ip6 || src.is_unicast_link_local() || src.is_unspecified() {
                Ok(())
            } else {
                Err(Drop::Spoofed)
            }
        }
        _ => Err(Drop::OtherEtherType),
    }
}
