//! The gateway port: classifies every frame the container sends, without side effects.
//!
//! Untrusted bytes are read only through smoltcp's checked views (`new_checked`). The result
//! is either a typed [`Packet`] that the runtime acts on, or a [`Drop`] reason that the runtime
//! counts. Nothing here panics on any input (see the fuzz-style test below).

use std::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::wire::{Icmpv4Message, Icmpv4Packet, IpAddress, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket};

use crate::wire;

/// Why a frame was not acted on. Every variant is counted in [`DropCounters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// Truncated or inconsistent headers.
    Malformed = 0,
    /// An IPv4 header, TCP, UDP or ICMP checksum that does not verify (L4 checksums are
    /// checked unless the container's kernel vouched for them through checksum offload).
    BadChecksum,
    /// An EtherType warren does not route (IPv6 until it is supported, LLDP, ...).
    OtherEtherType,
    /// An ARP packet that is not a request for one of the gateway's addresses.
    ArpNotForUs,
    /// An IPv4 fragment (reassembly is not supported; Linux sends none with PMTU discovery).
    Fragment,
    /// A broadcast, multicast or otherwise non-routable destination.
    NotRoutable,
    /// An IP protocol other than TCP, UDP and ICMP.
    OtherProtocol,
    /// An ICMP message other than echo request.
    OtherIcmp,
    /// A packet whose source is not the container's subnet.
    Spoofed,
}

/// Number of [`Drop`] reasons.
pub const DROP_REASONS: usize = 9;

/// Human names of the drop reasons, in discriminant order (for stats and logs).
pub const DROP_NAMES: [&str; DROP_REASONS] = [
    "malformed",
    "bad_checksum",
    "other_ethertype",
    "arp_not_for_us",
    "fragment",
    "not_routable",
    "other_protocol",
    "other_icmp",
    "spoofed",
];

/// Drop counters by reason.
#[derive(Debug, Default, Clone)]
pub struct DropCounters(pub [u64; DROP_REASONS]);

impl serde::Serialize for DropCounters {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(DROP_REASONS))?;
        for (name, n) in DROP_NAMES.iter().zip(self.0) {
            m.serialize_entry(name, &n)?;
        }
        m.end()
    }
}

impl DropCounters {
    /// Counts one drop.
    pub fn count(&mut self, why: Drop) {
        self.0[why as usize] += 1;
    }
    /// Total drops.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

/// A TCP segment from the container.
#[derive(Debug, Clone, Copy)]
pub struct TcpSeg {
    /// Container endpoint.
    pub src: SocketAddrV4,
    /// Destination as the container addressed it.
    pub dst: SocketAddrV4,
    /// SYN without ACK: a new connection attempt.
    pub syn_only: bool,
    /// RST flag.
    pub rst: bool,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number when ACK is set.
    pub ack: Option<u32>,
    /// Sequence space used (payload + SYN + FIN).
    pub seg_len: u32,
}

/// A frame the runtime acts on. `ip` is the whole IPv4 packet, trimmed to its total length.
#[derive(Debug)]
pub enum Packet<'a> {
    /// ARP request for a gateway address: answer it.
    ArpRequest {
        /// Requester's MAC.
        mac: [u8; 6],
        /// Requester's IPv4 address.
        ip: Ipv4Addr,
        /// Address asked about (a gateway address).
        target: Ipv4Addr,
    },
    /// TCP segment.
    Tcp {
        /// IPv4 packet.
        ip: &'a [u8],
        /// Parsed header fields.
        seg: TcpSeg,
    },
    /// UDP datagram.
    Udp {
        /// IPv4 packet.
        ip: &'a [u8],
        /// Container endpoint.
        src: SocketAddrV4,
        /// Destination.
        dst: SocketAddrV4,
        /// Payload.
        payload: &'a [u8],
    },
    /// ICMP echo request.
    Echo {
        /// IPv4 packet.
        ip: &'a [u8],
        /// Sender.
        src: Ipv4Addr,
        /// Destination.
        dst: Ipv4Addr,
        /// Echo identifier.
        ident: u16,
        /// Echo sequence number.
        seq: u16,
        /// Echo data.
        data: &'a [u8],
    },
}

/// The addresses the gateway owns on the segment.
#[derive(Debug, Clone, Copy)]
pub struct GatewayAddrs {
    /// Gateway (host) address.
    pub gateway: Ipv4Addr,
    /// DNS forwarder address.
    pub dns: Ipv4Addr,
    /// The segment's network.
    pub net: ipnet::Ipv4Net,
}

impl GatewayAddrs {
    fn owns(&self, ip: Ipv4Addr) -> bool {
        ip == self.gateway || ip == self.dns
    }
}

/// Classifies one Ethernet frame from the container. Returns the sender MAC with the packet.
///
/// # Errors
/// The [`Drop`] reason when the frame is not acted on.
/// `l4_trusted`: the sending kernel vouched for the TCP/UDP/ICMP checksum (checksum offload),
/// which then holds only a partial sum and is not verified.
pub fn classify<'a>(frame: &'a [u8], gw: &GatewayAddrs, l4_trusted: bool) -> Result<([u8; 6], Packet<'a>), Drop> {
    let eth = wire::parse_eth(frame).ok_or(Drop::Malformed)?;
    match eth.ethertype {
        wire::ETHERTYPE_ARP => classify_arp(eth.payload, gw).map(|p| (eth.src, p)),
        wire::ETHERTYPE_IPV4 => classify_ipv4(eth.payload, gw, l4_trusted).map(|p| (eth.src, p)),
        _ => Err(Drop::OtherEtherType),
    }
}

fn classify_arp<'a>(payload: &'a [u8], gw: &GatewayAddrs) -> Result<Packet<'a>, Drop> {
    let arp = wire::parse_arp(payload).ok_or(Drop::Malformed)?;
    if arp.op != 1 || !gw.owns(arp.target_ip) {
        return Err(Drop::ArpNotForUs);
    }
    Ok(Packet::ArpRequest { mac: arp.sender_mac, ip: arp.sender_ip, target: arp.target_ip })
}

fn classify_ipv4<'a>(payload: &'a [u8], gw: &GatewayAddrs, l4_trusted: bool) -> Result<Packet<'a>, Drop> {
    let ip = Ipv4Packet::new_checked(payload).map_err(|_| Drop::Malformed)?;
    if ip.version() != 4 {
        return Err(Drop::Malformed);
    }
    if !ip.verify_checksum() {
        return Err(Drop::BadChecksum);
    }
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Err(Drop::Fragment);
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    if !gw.net.contains(&src) || gw.owns(src) {
        return Err(Drop::Spoofed);
    }
    if dst.is_broadcast()
        || dst.is_multicast()
        || dst.is_unspecified()
        || dst.is_loopback()
        || dst == gw.net.broadcast()
    {
        return Err(Drop::NotRoutable);
    }
    let total = usize::from(ip.total_len());
    let whole = &payload[..total];
    let body = ip.payload();
    let (s, d) = (IpAddress::Ipv4(src), IpAddress::Ipv4(dst));
    match ip.next_header() {
        IpProtocol::Tcp => {
            let t = TcpPacket::new_checked(body).map_err(|_| Drop::Malformed)?;
            let syn_only = t.syn() && !t.ack();
            // The stack does not verify TCP checksums (see runtime::device): every segment the
            // sending kernel did not vouch for is checked here.
            if !l4_trusted && !t.verify_checksum(&s, &d) {
                return Err(Drop::BadChecksum);
            }
            let seg = TcpSeg {
                src: SocketAddrV4::new(src, t.src_port()),
                dst: SocketAddrV4::new(dst, t.dst_port()),
                syn_only,
                rst: t.rst(),
                seq: t.seq_number().0 as u32,
                ack: t.ack().then(|| t.ack_number().0 as u32),
                seg_len: t.segment_len() as u32,
            };
            Ok(Packet::Tcp { ip: whole, seg })
        }
        IpProtocol::Udp => {
            let u = UdpPacket::new_checked(body).map_err(|_| Drop::Malformed)?;
            if !l4_trusted && u.checksum() != 0 && !u.verify_checksum(&s, &d) {
                return Err(Drop::BadChecksum);
            }
            let len = usize::from(u.len());
            Ok(Packet::Udp {
                ip: whole,
                src: SocketAddrV4::new(src, u.src_port()),
                dst: SocketAddrV4::new(dst, u.dst_port()),
                payload: &body[8..len],
            })
        }
        IpProtocol::Icmp => {
            let i = Icmpv4Packet::new_checked(body).map_err(|_| Drop::Malformed)?;
            if !l4_trusted && !i.verify_checksum() {
                return Err(Drop::BadChecksum);
            }
            if i.msg_type() != Icmpv4Message::EchoRequest || i.msg_code() != 0 {
                return Err(Drop::OtherIcmp);
            }
            Ok(Packet::Echo { ip: whole, src, dst, ident: i.echo_ident(), seq: i.echo_seq_no(), data: i.data() })
        }
        _ => Err(Drop::OtherProtocol),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw() -> GatewayAddrs {
        GatewayAddrs {
            gateway: Ipv4Addr::new(10, 0, 2, 2),
            dns: Ipv4Addr::new(10, 0, 2, 3),
            net: "10.0.2.0/24".parse().unwrap(),
        }
    }

    const C: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const G: [u8; 6] = [0x52, 0x55, 10, 0, 2, 2];

    /// A real ARP request as Linux sends it: who-has 10.0.2.2 tell 10.0.2.100.
    const ARP_REQ: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06, // ethernet
        0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01, // htype, ptype, hlen, plen, op=request
        2, 0, 0, 0, 0, 1, 10, 0, 2, 100, // sender
        0, 0, 0, 0, 0, 0, 10, 0, 2, 2, // target
    ];

    #[test]
    fn arp_request_for_gateway() {
        let (mac, p) = classify(&ARP_REQ, &gw(), false).unwrap();
        assert_eq!(mac, C);
        match p {
            Packet::ArpRequest { mac, ip, target } => {
                assert_eq!((mac, ip, target), (C, Ipv4Addr::new(10, 0, 2, 100), Ipv4Addr::new(10, 0, 2, 2)));
            }
            other => panic!("unexpected {other:?}"),
        }
        let mut other = ARP_REQ;
        other[41] = 7; // who-has 10.0.2.7: not ours, never answered (no segment poisoning)
        assert_eq!(classify(&other, &gw(), false).unwrap_err(), Drop::ArpNotForUs);
    }

    #[test]
    fn udp_roundtrip_and_checksum() {
        let mut buf = vec![0u8; 100];
        buf[wire::UDP_PAYLOAD_OFFSET..wire::UDP_PAYLOAD_OFFSET + 4].copy_from_slice(b"ping");
        let src = "10.0.2.100:5000".parse().unwrap();
        let dst = "10.0.2.3:53".parse().unwrap();
        let n = wire::udp4(&mut buf, G, C, src, dst, 4);
        match classify(&buf[..n], &gw(), false).unwrap().1 {
            Packet::Udp { src: s, dst: d, payload, .. } => assert_eq!((s, d, payload), (src, dst, &b"ping"[..])),
            other => panic!("unexpected {other:?}"),
        }
        buf[n - 1] ^= 0xff;
        assert_eq!(classify(&buf[..n], &gw(), false).unwrap_err(), Drop::BadChecksum);
    }

    #[test]
    fn spoofed_and_broadcast_dropped() {
        let mut buf = vec![0u8; 100];
        let n = wire::udp4(&mut buf, G, C, "192.0.2.1:1".parse().unwrap(), "10.0.2.2:9".parse().unwrap(), 0);
        assert_eq!(classify(&buf[..n], &gw(), false).unwrap_err(), Drop::Spoofed);
        let n = wire::udp4(&mut buf, G, C, "10.0.2.100:1".parse().unwrap(), "10.0.2.255:9".parse().unwrap(), 0);
        assert_eq!(classify(&buf[..n], &gw(), false).unwrap_err(), Drop::NotRoutable);
    }

    #[test]
    fn never_panics_on_garbage() {
        // Deterministic pseudo-random frames and every truncation of valid ones.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut buf = [0u8; 200];
        for _ in 0..20_000 {
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            // Make some of them look like IPv4 to get past the first checks.
            if x.is_multiple_of(2) {
                buf[12] = 0x08;
                buf[13] = 0x00;
                buf[14] = 0x45;
            }
            let len = (x % 200) as usize;
            let _ = classify(&buf[..len], &gw(), x.is_multiple_of(3));
        }
        let mut v = vec![0u8; 100];
        let n = wire::udp4(&mut v, G, C, "10.0.2.100:5000".parse().unwrap(), "10.0.2.3:53".parse().unwrap(), 20);
        for cut in 0..n {
            let _ = classify(&v[..cut], &gw(), false);
        }
        for cut in 0..ARP_REQ.len() {
            let _ = classify(&ARP_REQ[..cut], &gw(), true);
        }
    }
}
