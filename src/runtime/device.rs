//! The per-flow smoltcp `Device`: one borrowed packet in, frames straight out to the TAP.
//!
//! smoltcp runs with `Medium::Ip` behind warren's own gateway port, so the device adds the
//! Ethernet header on the way out. Transmission writes the frame to the TAP at once from a
//! single reusable buffer: no per-packet allocation, no queue that could overflow into the
//! 1 s minimum retransmission timeout of smoltcp.

use std::io::IoSlice;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;

use rustc_hash::FxHashMap;

use smoltcp::phy::{self, Checksum, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use crate::wire::{
    ETH_LEN, FRAME_MAX, VNET_HDR_LEN, eth_for_ip, tcp_partial_checksum, vnet_gso, vnet_needs_csum, vnet_udp,
};

/// Where frames go: the one TAP of a container, or the ports of a bridge network.
enum Out {
    Tap(OwnedFd),
    Bridge(BridgeOut),
}

/// The write side of a bridge network's ports: each container interface by MAC, and the
/// MAC of each container address (from IPAM, never learned from traffic).
#[derive(Default)]
pub struct BridgeOut {
    ports: FxHashMap<[u8; 6], OwnedFd>,
    neighbours: FxHashMap<IpAddr, [u8; 6]>,
}

/// A packet capture, shared by the data-path threads of a multiqueue TAP.
pub type Capture = std::sync::Arc<std::sync::Mutex<crate::pcap::PcapWriter>>;

/// The TAP's write side: a reusable frame buffer and counters.
pub struct TxSink {
    out: Out,
    /// Frame buffer: an Ethernet and IPv6 header plus 64 KiB, twice (room to read one more
    /// datagram behind 64 KiB of others).
    pub buf: Vec<u8>,
    /// Container MAC (destination of every frame).
    pub dst_mac: [u8; 6],
    /// Gateway MAC (source of every frame).
    pub src_mac: [u8; 6],
    /// Frames written.
    pub frames: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Frames the TAP refused.
    pub errors: u64,
    /// Whether frames carry a `virtio_net_hdr` (TAPs warren opens do; an adopted fd may not).
    pub vnet: bool,
    /// Packet capture of every frame in and out, when one runs.
    pub capture: Option<Capture>,
    /// Whether UDP frames may carry several datagrams (USO): with vnet headers, until the
    /// TAP refuses one (kernels before 6.2).
    pub uso: bool,
    /// Datagrams written inside such frames.
    pub udp_coalesced: u64,
}

impl TxSink {
    /// Wraps the TAP's write fd.
    pub fn new(fd: OwnedFd, dst_mac: [u8; 6], src_mac: [u8; 6], vnet: bool) -> Self {
        Self::with_out(Out::Tap(fd), dst_mac, src_mac, vnet)
    }

    /// A sink writing to the ports of a bridge network (TAPs with vnet headers).
    pub fn bridge(src_mac: [u8; 6]) -> Self {
        Self::with_out(Out::Bridge(BridgeOut::default()), [0xff; 6], src_mac, true)
    }

    fn with_out(out: Out, dst_mac: [u8; 6], src_mac: [u8; 6], vnet: bool) -> Self {
        let buf = vec![0u8; 2 * FRAME_MAX];
        let (frames, bytes, errors, udp_coalesced) = (0, 0, 0, 0);
        Self { out, buf, dst_mac, src_mac, frames, bytes, errors, vnet, capture: None, uso: vnet, udp_coalesced }
    }

    /// Adds a bridge port (its write fd) and the addresses behind it.
    pub fn add_port(&mut self, mac: [u8; 6], fd: OwnedFd, addrs: &[IpAddr]) {
        if let Out::Bridge(b) = &mut self.out {
            b.ports.insert(mac, fd);
            for a in addrs {
                b.neighbours.insert(*a, mac);
            }
        }
    }

    /// Removes a bridge port and its addresses.
    pub fn remove_port(&mut self, mac: [u8; 6]) {
        if let Out::Bridge(b) = &mut self.out {
            b.ports.remove(&mac);
            b.neighbours.retain(|_, m| *m != mac);
        }
    }

    /// Writes a frame as received from one bridge port (vnet header included) to the port of
    /// `dst` (unicast) or to every port but `from` (broadcast and multicast).
    pub fn forward(&mut self, frame: &[u8], dst: [u8; 6], from: [u8; 6]) {
        let Out::Bridge(b) = &self.out else { return };
        let mut write = |fd: &OwnedFd| match nix::unistd::write(fd, frame) {
            Ok(_) => {
                self.frames += 1;
                self.bytes += frame.len() as u64;
            }
            Err(_) => self.errors += 1,
        };
        if dst[0] & 1 == 1 {
            for (mac, fd) in &b.ports {
                if *mac != from {
                    write(fd);
                }
            }
        } else if let Some(fd) = b.ports.get(&dst) {
            write(fd);
        }
    }

    /// Whether a bridge port has this MAC.
    pub fn has_port(&self, mac: &[u8; 6]) -> bool {
        matches!(&self.out, Out::Bridge(b) if b.ports.contains_key(mac))
    }

    /// Writes `buf[..len]` as one frame to the TAP; its checksums are complete.
    pub fn send(&mut self, len: usize) {
        self.send_with(&[0u8; VNET_HDR_LEN], len);
    }

    /// Writes `buf[..len]` (a TCP frame whose checksum smoltcp left out) with the
    /// pseudo-header sum and a NEEDS_CSUM header: the container's kernel trusts or completes it.
    /// A segment larger than `gso_mss` (the container's MSS; 0 for none) goes as one GSO frame.
    /// Without a vnet header the checksum is completed here.
    pub fn send_tcp_offloaded(&mut self, len: usize, gso_mss: u16) {
        match tcp_partial_checksum(&mut self.buf[ETH_LEN..len]) {
            Some(ihl) if self.vnet => {
                let mut hdr = vnet_needs_csum(ETH_LEN + ihl, 16);
                if gso_mss != 0 {
                    vnet_gso(&mut hdr, &self.buf[ETH_LEN..len], ihl, gso_mss);
                }
                self.send_with(&hdr, len);
            }
            Some(ihl) => {
                let l4 = &mut self.buf[ETH_LEN + ihl..len];
                let sum = !smoltcp::wire::checksum::data(l4);
                l4[16..18].copy_from_slice(&sum.to_be_bytes());
                self.send(len);
            }
            None => self.send(len),
        }
    }

    /// Writes `buf[..len]`, a UDP frame from `wire::udp_partial` from `src`, with checksum
    /// offload (or, without vnet headers, its checksum completed here from the partial sum). `seg`, when not 0,
    /// is the size of the `count` datagrams back to back in its payload (the last may be
    /// shorter): the container's kernel cuts them apart. Returns false when the TAP refused
    /// such a frame (nothing went; `uso` is off from then on).
    pub fn send_udp_offloaded(&mut self, len: usize, src: IpAddr, seg: u16, count: usize) -> bool {
        if !self.vnet {
            if seg != 0 {
                self.uso = false;
                return false;
            }
            let l4 = &mut self.buf[ETH_LEN + crate::wire::ip_header_len(src)..len];
            let sum = match !smoltcp::wire::checksum::data(l4) {
                0 => 0xffff,
                s => s,
            };
            l4[6..8].copy_from_slice(&sum.to_be_bytes());
            self.send(len);
            return true;
        }
        let r = self.write_frame(&vnet_udp(src, seg), len, seg == 0);
        if seg != 0 {
            if r == Err(nix::errno::Errno::EINVAL) {
                tracing::debug!("the TAP refused a UDP GSO frame: datagrams go one per frame");
                self.uso = false;
                return false;
            }
            if r.is_ok() {
                self.udp_coalesced += count as u64;
                self.record_segments(len, src, usize::from(seg));
            }
        }
        self.count(r, len);
        true
    }

    /// Records a frame in the capture, if one runs.
    pub fn record(&mut self, frame: &[u8]) {
        if let Some(c) = &self.capture
            && let Ok(mut w) = c.lock()
        {
            w.write(frame);
        }
    }

    /// Records the UDP GSO frame `buf[..len]` from `src` as the datagrams the container's
    /// kernel cuts it into (`seg` bytes each, the last may be shorter), with full checksums.
    fn record_segments(&mut self, len: usize, src: IpAddr, seg: usize) {
        let Some(c) = &self.capture else { return };
        let Ok(mut w) = c.lock() else { return };
        let l4 = ETH_LEN + crate::wire::ip_header_len(src);
        let (Some(sport), Some(dst)) = (self.buf.get(l4..l4 + 2), ip_destination(&self.buf[..len])) else { return };
        let src = std::net::SocketAddr::new(src, u16::from_be_bytes([sport[0], sport[1]]));
        let dst = std::net::SocketAddr::new(dst, u16::from_be_bytes([self.buf[l4 + 2], self.buf[l4 + 3]]));
        let (dst_mac, src_mac) = (self.buf[..6].try_into().unwrap_or(self.dst_mac), self.src_mac);
        let off = l4 + crate::wire::UDP_LEN;
        let mut frame = vec![0u8; off + seg];
        for d in self.buf[off..len].chunks(seg) {
            frame[off..off + d.len()].copy_from_slice(d);
            let n = crate::wire::udp(&mut frame, dst_mac, src_mac, src, dst, d.len());
            w.write(&frame[..n]);
        }
    }

    fn send_with(&mut self, hdr: &[u8; VNET_HDR_LEN], len: usize) {
        let r = self.write_frame(hdr, len, true);
        self.count(r, len);
    }

    /// Writes `buf[..len]` behind `hdr`; records it in the capture when `record` is set.
    fn write_frame(&mut self, hdr: &[u8; VNET_HDR_LEN], len: usize, record: bool) -> nix::Result<usize> {
        if let Out::Bridge(b) = &self.out
            && let Some(mac) = ip_destination(&self.buf[..len]).and_then(|ip| b.neighbours.get(&ip))
        {
            // On a bridge the frame goes to the port of its destination address.
            self.buf[..6].copy_from_slice(mac);
        }
        if record
            && let Some(c) = &self.capture
            && let Ok(mut w) = c.lock()
        {
            w.write(&self.buf[..len]);
        }
        let hdr_len = if self.vnet { VNET_HDR_LEN } else { 0 };
        let iov = [IoSlice::new(&hdr[..hdr_len]), IoSlice::new(&self.buf[..len])];
        match &self.out {
            Out::Tap(fd) => nix::sys::uio::writev(fd, &iov),
            Out::Bridge(b) if self.buf[0] & 1 == 1 => {
                let mut last = Ok(0);
                for fd in b.ports.values() {
                    last = nix::sys::uio::writev(fd, &iov);
                }
                last
            }
            Out::Bridge(b) => match self.buf[..6].try_into().ok().and_then(|dst: [u8; 6]| b.ports.get(&dst)) {
                Some(fd) => nix::sys::uio::writev(fd, &iov),
                None => Err(nix::errno::Errno::EHOSTUNREACH),
            },
        }
    }

    fn count(&mut self, r: nix::Result<usize>, len: usize) {
        match r {
            Ok(_) => {
                self.frames += 1;
                self.bytes += len as u64;
            }
            Err(e) => {
                self.errors += 1;
                tracing::trace!(error = %e, len, "TAP write failed");
            }
        }
    }
}

/// The destination IP address of an Ethernet frame carrying IPv4 or IPv6.
fn ip_destination(frame: &[u8]) -> Option<IpAddr> {
    match u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]) {
        0x0800 => {
            let d: [u8; 4] = frame.get(30..34)?.try_into().ok()?;
            Some(Ipv4Addr::from(d).into())
        }
        0x86dd => {
            let d: [u8; 16] = frame.get(38..54)?.try_into().ok()?;
            Some(Ipv6Addr::from(d).into())
        }
        _ => None,
    }
}

/// A smoltcp device over one optional received packet and the TAP's write side.
pub struct FlowDevice<'a> {
    /// The packet to deliver on the next `receive`, if any.
    pub rx: Option<&'a [u8]>,
    /// Where transmitted packets go.
    pub tx: &'a mut TxSink,
    /// IP MTU.
    pub mtu: usize,
    /// The container's MSS when the stack may send larger segments (as GSO frames); else 0.
    pub gso: u16,
}

/// Receive token over a borrowed packet.
pub struct Rx<'a>(&'a [u8]);
/// Transmit token over the TAP's frame buffer, with the flow's GSO segment size.
pub struct Tx<'a>(&'a mut TxSink, u16);

impl phy::Device for FlowDevice<'_> {
    type RxToken<'b>
        = Rx<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = Tx<'b>
    where
        Self: 'b;

    fn receive(&mut self, _timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let pkt = self.rx.take()?;
        Some((Rx(pkt), Tx(self.tx, self.gso)))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        Some(Tx(self.tx, self.gso))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        // smoltcp neither computes nor verifies TCP checksums: the TAP takes partial ones on
        // the way out, and on the way in the classifier has verified every segment the
        // container's kernel did not vouch for (smoltcp fixes capabilities per interface, so
        // this cannot vary per packet).
        caps.checksum.tcp = Checksum::None;
        caps
    }
}

impl phy::RxToken for Rx<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let sink = self.0;
        let (dst, src) = (sink.dst_mac, sink.src_mac);
        let r = f(&mut sink.buf[ETH_LEN..ETH_LEN + len]);
        eth_for_ip(&mut sink.buf, dst, src);
        sink.send_tcp_offloaded(ETH_LEN + len, self.1);
        r
    }
}
