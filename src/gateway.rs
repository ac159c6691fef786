//! The gateway port: classifies every frame the container sends, without side effects.
//!
//! Untrusted bytes are read only through smoltcp's checked views (`new_checked`). The result
//! is either a typed [`Packet`] that the runtime acts on, or a [`Drop`] reason that the runtime
//! counts. Nothing here panics on any input (see the fuzz-style test below).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use smoltcp::wire::{
    Icmpv4Message, Icmpv4Packet, Icmpv6Packet, IpAddress, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket,
};

use crate::wire;

/// Why a frame was not acted on. Every variant is counted in [`DropCounters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// Truncated or inconsistent headers.
    Malformed = 0,
    /// An IPv4 header, TCP, UDP or ICMP checksum that does not verify (L4 checksums are
    /// checked unless the container's kernel vouched for them through checksum offload).
    BadChecksum,
    /// An EtherType warren does not route (IPv6 when it is off, LLDP, ...).
    OtherEtherType,
    /// An ARP request or IPv6 neighbour solicitation that is not for one of the gateway's
    /// addresses.
    ArpNotForUs,
    /// An IP fragment (reassembly is not supported; Linux sends none with PMTU discovery).
    Fragment,
    /// A broadcast, multicast (but a relayed group's UDP) or otherwise non-routable destination.
    NotRoutable,
    /// An IP protocol other than TCP, UDP and ICMP (IPv6 extension headers included: MLD
    /// reports come with a hop-by-hop header).
    OtherProtocol,
    /// An ICMP message other than echo request (and, for IPv6, neighbour discovery).
    OtherIcmp,
    /// A packet whose source is not the container's subnet, or a frame from a multicast MAC.
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
    pub src: SocketAddr,
    /// Destination as the container addressed it.
    pub dst: SocketAddr,
    /// SYN flag (without ACK: a new connection attempt).
    pub syn: bool,
    /// RST flag.
    pub rst: bool,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number when ACK is set.
    pub ack: Option<u32>,
    /// Sequence space used (payload + SYN + FIN).
    pub seg_len: u32,
}

/// A frame the runtime acts on. `ip` is the whole IPv4 or IPv6 packet, trimmed to its length.
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
    /// IPv6 neighbour solicitation for a gateway address: advertise it.
    NeighborSolicit {
        /// Solicitor's address.
        src: Ipv6Addr,
        /// Address asked about (a gateway address).
        target: Ipv6Addr,
    },
    /// DHCPv4 message to the server port (from 0.0.0.0 or the container, to the broadcast or
    /// the gateway): answer it.
    Dhcp {
        /// The UDP payload (a BOOTREQUEST).
        payload: &'a [u8],
    },
    /// IPv6 router solicitation: answer with a router advertisement.
    RouterSolicit {
        /// Solicitor's address (unspecified before it has one).
        src: Ipv6Addr,
    },
    /// TCP segment.
    Tcp {
        /// IP packet.
        ip: &'a [u8],
        /// Parsed header fields.
        seg: TcpSeg,
    },
    /// UDP datagram.
    Udp {
        /// IP packet.
        ip: &'a [u8],
        /// Container endpoint.
        src: SocketAddr,
        /// Destination.
        dst: SocketAddr,
        /// Payload.
        payload: &'a [u8],
    },
    /// ICMP or ICMPv6 echo request.
    Echo {
        /// IP packet.
        ip: &'a [u8],
        /// Sender.
        src: IpAddr,
        /// Destination.
        dst: IpAddr,
        /// Echo identifier.
        ident: u16,
        /// Echo sequence number.
        seq: u16,
        /// Echo data.
        data: &'a [u8],
    },
}

/// The IPv6 addresses the gateway owns on the segment.
#[derive(Debug, Clone, Copy)]
pub struct GatewayAddrs6 {
    /// Gateway address.
    pub gateway: Ipv6Addr,
    /// DNS forwarder address.
    pub dns: Ipv6Addr,
    /// The gateway's link-local address (router address of neighbour discovery).
    pub link_local: Ipv6Addr,
    /// The segment's /64.
    pub net: ipnet::Ipv6Net,
}

impl GatewayAddrs6 {
    fn owns(&self, ip: Ipv6Addr) -> bool {
        ip == self.gateway || ip == self.dns || ip == self.link_local
    }
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
    /// IPv6, when enabled.
    pub v6: Option<GatewayAddrs6>,
}

impl GatewayAddrs {
    fn owns(&self, ip: Ipv4Addr) -> bool {
        ip == self.gateway || ip == self.dns
    }

    /// Whether `ip` is one of the gateway's own addresses (either family).
    pub fn owns_ip(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.owns(a),
            IpAddr::V6(a) => self.v6.is_some_and(|g| g.owns(a)),
        }
    }

    /// Whether `ip` is on the container's segment (either family).
    pub fn on_segment(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.net.contains(&a),
            IpAddr::V6(a) => self.v6.is_some_and(|g| g.net.contains(&a)),
        }
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
    if eth.src[0] & 1 == 1 {
        return Err(Drop::Spoofed);
    }
    match eth.ethertype {
        wire::ETHERTYPE_ARP => classify_arp(eth.payload, gw).map(|p| (eth.src, p)),
        wire::ETHERTYPE_IPV4 => classify_ipv4(eth.payload, gw, l4_trusted).map(|p| (eth.src, p)),
        wire::ETHERTYPE_IPV6 => match &gw.v6 {
            Some(g6) => classify_ipv6(eth.payload, g6, l4_trusted).map(|p| (eth.src, p)),
            None => Err(Drop::OtherEtherType),
        },
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

/// The transport part shared by both families: TCP and UDP.
fn classify_l4<'a>(
    whole: &'a [u8],
    body: &'a [u8],
    proto: IpProtocol,
    src: IpAddr,
    dst: IpAddr,
    l4_trusted: bool,
) -> Result<Packet<'a>, Drop> {
    let (s, d) = (IpAddress::from(src), IpAddress::from(dst));
    match proto {
        IpProtocol::Tcp => {
            let t = TcpPacket::new_checked(body).map_err(|_| Drop::Malformed)?;
            // The stack does not verify TCP checksums (see runtime::device): every segment the
            // sending kernel did not vouch for is checked here.
            if !l4_trusted && !t.verify_checksum(&s, &d) {
                return Err(Drop::BadChecksum);
            }
            let seg = TcpSeg {
                src: SocketAddr::new(src, t.src_port()),
                dst: SocketAddr::new(dst, t.dst_port()),
                syn: t.syn(),
                rst: t.rst(),
                seq: t.seq_number().0 as u32,
                ack: t.ack().then(|| t.ack_number().0 as u32),
                seg_len: t.segment_len() as u32,
            };
            Ok(Packet::Tcp { ip: whole, seg })
        }
        IpProtocol::Udp => {
            let u = UdpPacket::new_checked(body).map_err(|_| Drop::Malformed)?;
            // IPv4 may omit the UDP checksum (0); IPv6 may not (RFC 8200 8.1), and smoltcp's
            // check would accept the 0.
            if !l4_trusted && u.checksum() == 0 && src.is_ipv6() {
                return Err(Drop::BadChecksum);
            }
            if !l4_trusted && u.checksum() != 0 && !u.verify_checksum(&s, &d) {
                return Err(Drop::BadChecksum);
            }
            let len = usize::from(u.len());
            Ok(Packet::Udp {
                ip: whole,
                src: SocketAddr::new(src, u.src_port()),
                dst: SocketAddr::new(dst, u.dst_port()),
                payload: &body[8..len],
            })
        }
        _ => Err(Drop::OtherProtocol),
    }
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
    if let Some(payload) = dhcp_request(payload, &ip, gw, l4_trusted)? {
        return Ok(Packet::Dhcp { payload });
    }
    if !gw.net.contains(&src) || gw.owns(src) {
        return Err(Drop::Spoofed);
    }
    // UDP to a multicast group goes on: the runtime relays the groups asked for
    // (`--multicast`) and drops the rest as not routable.
    let relayable = dst.is_multicast() && ip.next_header() == IpProtocol::Udp;
    if dst.is_broadcast()
        || (dst.is_multicast() && !relayable)
        || dst.is_unspecified()
        || dst.is_loopback()
        || dst == gw.net.broadcast()
    {
        return Err(Drop::NotRoutable);
    }
    let total = usize::from(ip.total_len());
    let whole = &payload[..total];
    let body = ip.payload();
    match ip.next_header() {
        IpProtocol::Icmp => {
            let i = Icmpv4Packet::new_checked(body).map_err(|_| Drop::Malformed)?;
            if !l4_trusted && !i.verify_checksum() {
                return Err(Drop::BadChecksum);
            }
            if i.msg_type() != Icmpv4Message::EchoRequest || i.msg_code() != 0 {
                return Err(Drop::OtherIcmp);
            }
            Ok(Packet::Echo {
                ip: whole,
                src: src.into(),
                dst: dst.into(),
                ident: i.echo_ident(),
                seq: i.echo_seq_no(),
                data: i.data(),
            })
        }
        proto => classify_l4(whole, body, proto, src.into(), dst.into(), l4_trusted),
    }
}

/// A DHCP client's message: UDP to port 67 from 0.0.0.0 (no address yet) or a segment
/// address, sent to the broadcast address or to the gateway. `Ok(None)`: not DHCP.
fn dhcp_request<'a>(
    payload: &'a [u8],
    ip: &Ipv4Packet<&[u8]>,
    gw: &GatewayAddrs,
    l4_trusted: bool,
) -> Result<Option<&'a [u8]>, Drop> {
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    // Cheapest tests first: this runs for every IPv4 packet.
    if ip.next_header() != IpProtocol::Udp || !(dst.is_broadcast() || dst == gw.gateway) {
        return Ok(None);
    }
    if !(src.is_unspecified() || (gw.net.contains(&src) && !gw.owns(src))) {
        return Ok(None);
    }
    let body = payload.get(usize::from(ip.header_len())..usize::from(ip.total_len())).ok_or(Drop::Malformed)?;
    let u = UdpPacket::new_checked(body).map_err(|_| Drop::Malformed)?;
    if u.dst_port() != crate::dhcp::SERVER_PORT {
        return Ok(None);
    }
    // IPv4 UDP may go without a checksum (0); one that is there must be right.
    if !l4_trusted && u.checksum() != 0 && !u.verify_checksum(&src.into(), &dst.into()) {
        return Err(Drop::BadChecksum);
    }
    Ok(Some(&body[8..usize::from(u.len())]))
}

/// ICMPv6 types handled here.
const ICMP6_ECHO_REQUEST: u8 = 128;
const ICMP6_ROUTER_SOLICIT: u8 = 133;
const ICMP6_NEIGHBOR_SOLICIT: u8 = 135;

fn classify_ipv6<'a>(payload: &'a [u8], gw: &GatewayAddrs6, l4_trusted: bool) -> Result<Packet<'a>, Drop> {
    let ip = Ipv6Packet::new_checked(payload).map_err(|_| Drop::Malformed)?;
    if ip.version() != 6 {
        return Err(Drop::Malformed);
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let whole = &payload[..wire::IPV6_LEN + usize::from(ip.payload_len())];
    let body = ip.payload();
    match ip.next_header() {
        IpProtocol::Icmpv6 => {
            let i = Icmpv6Packet::new_checked(body).map_err(|_| Drop::Malformed)?;
            if !l4_trusted && !i.verify_checksum(&src, &dst) {
                return Err(Drop::BadChecksum);
            }
            let kind = u8::from(i.msg_type());
            // Neighbour discovery: only on-link (hop limit 255), from the container's
            // link-local or segment address, or unspecified while it has none.
            if kind == ICMP6_ROUTER_SOLICIT || kind == ICMP6_NEIGHBOR_SOLICIT {
                if ip.hop_limit() != 255 || i.msg_code() != 0 {
                    return Err(Drop::Malformed);
                }
                if !(src.is_unspecified() || src.is_unicast_link_local() || gw.net.contains(&src)) || gw.owns(src) {
                    return Err(Drop::Spoofed);
                }
                if kind == ICMP6_ROUTER_SOLICIT {
                    return Ok(Packet::RouterSolicit { src });
                }
                let target: [u8; 16] =
                    body.get(8..24).ok_or(Drop::Malformed)?.try_into().map_err(|_| Drop::Malformed)?;
                let target = Ipv6Addr::from(target);
                // Duplicate address detection (unspecified source) probes a container address:
                // none of ours, nothing to defend.
                if !gw.owns(target) || src.is_unspecified() {
                    return Err(Drop::ArpNotForUs);
                }
                return Ok(Packet::NeighborSolicit { src, target });
            }
            // Other link-scoped messages (MLD, router and neighbour advertisements, redirects)
            // are never answered; they come from the link-local address as they should.
            if matches!(kind, 130..=132 | 134 | 136 | 137 | 143) {
                return Err(Drop::OtherIcmp);
            }
            check_v6_endpoints(src, dst, gw)?;
            if kind != ICMP6_ECHO_REQUEST || i.msg_code() != 0 {
                return Err(Drop::OtherIcmp);
            }
            Ok(Packet::Echo {
                ip: whole,
                src: src.into(),
                dst: dst.into(),
                ident: i.echo_ident(),
                seq: i.echo_seq_no(),
                data: &body[8..],
            })
        }
        IpProtocol::Ipv6Frag => Err(Drop::Fragment),
        // Multicast listener reports (MLD, behind a router-alert option) that every container
        // sends from its link-local address at start: nothing to route, and not spoofing.
        IpProtocol::HopByHop => Err(Drop::OtherProtocol),
        // UDP to a multicast group, as for IPv4; from the segment or, as a kernel picks for
        // link-scoped groups (ff02::fb), from the container's link-local address.
        IpProtocol::Udp if dst.is_multicast() => {
            if !(gw.net.contains(&src) || src.is_unicast_link_local()) || gw.owns(src) {
                return Err(Drop::Spoofed);
            }
            classify_l4(whole, body, IpProtocol::Udp, src.into(), dst.into(), l4_trusted)
        }
        proto => {
            check_v6_endpoints(src, dst, gw)?;
            classify_l4(whole, body, proto, src.into(), dst.into(), l4_trusted)
        }
    }
}

/// Source on the segment (not a gateway address), destination routable.
fn check_v6_endpoints(src: Ipv6Addr, dst: Ipv6Addr, gw: &GatewayAddrs6) -> Result<(), Drop> {
    if !gw.net.contains(&src) || gw.owns(src) {
        return Err(Drop::Spoofed);
    }
    if dst.is_multicast()
        || dst.is_unspecified()
        || dst.is_loopback()
        || dst.is_unicast_link_local()
        || dst.to_ipv4_mapped().is_some()
    {
        return Err(Drop::NotRoutable);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw() -> GatewayAddrs {
        GatewayAddrs {
            gateway: Ipv4Addr::new(10, 0, 2, 2),
            dns: Ipv4Addr::new(10, 0, 2, 3),
            net: "10.0.2.0/24".parse().unwrap(),
            v6: Some(GatewayAddrs6 {
                gateway: "fd00::2".parse().unwrap(),
                dns: "fd00::3".parse().unwrap(),
                link_local: wire::link_local_of(G),
                net: "fd00::/64".parse().unwrap(),
            }),
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
        let n = wire::udp(&mut buf, G, C, src, dst, 4);
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
        let n = wire::udp(&mut buf, G, C, "192.0.2.1:1".parse().unwrap(), "10.0.2.2:9".parse().unwrap(), 0);
        assert_eq!(classify(&buf[..n], &gw(), false).unwrap_err(), Drop::Spoofed);
        let n = wire::udp(&mut buf, G, C, "10.0.2.100:1".parse().unwrap(), "10.0.2.255:9".parse().unwrap(), 0);
        assert_eq!(classify(&buf[..n], &gw(), false).unwrap_err(), Drop::NotRoutable);
    }

    #[test]
    fn udp_to_a_group_goes_on_for_the_relay_other_multicast_does_not() {
        let mut buf = vec![0u8; 120];
        for (src, dst) in [("10.0.2.100:5353", "224.0.0.251:5353"), ("[fe80::1]:5353", "[ff02::fb]:5353")] {
            let (s, d): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
            let n = wire::udp(&mut buf, G, C, s, d, 3);
            match classify(&buf[..n], &gw(), false).unwrap().1 {
                Packet::Udp { src, dst, .. } => assert_eq!((src, dst), (s, d)),
                other => panic!("unexpected {other:?}"),
            }
        }
        // A gateway address or one off the segment is spoofed.
        let ll = wire::link_local_of(G);
        let n = wire::udp(&mut buf, G, C, (ll, 5353).into(), "[ff02::fb]:5353".parse().unwrap(), 0);
        assert_eq!(classify(&buf[..n], &gw(), false).unwrap_err(), Drop::Spoofed);
        let n = wire::udp(&mut buf, G, C, "[fd99::1]:5353".parse().unwrap(), "[ff02::fb]:5353".parse().unwrap(), 0);
        assert_eq!(classify(&buf[..n], &gw(), false).unwrap_err(), Drop::Spoofed);
        // Not UDP (an IGMP-like protocol number on IPv4): not routable.
        let n = wire::udp(&mut buf, G, C, "10.0.2.100:1".parse().unwrap(), "224.0.0.22:9".parse().unwrap(), 0);
        buf[14 + 9] = 2;
        let mut ip = Ipv4Packet::new_unchecked(&mut buf[14..n]);
        ip.fill_checksum();
        assert_eq!(classify(&buf[..n], &gw(), false).unwrap_err(), Drop::NotRoutable);
    }

    /// A neighbour solicitation from `src` for `target`, as Linux sends it.
    fn neighbor_solicit(src: &str, target: &str) -> Vec<u8> {
        let (src, target): (Ipv6Addr, Ipv6Addr) = (src.parse().unwrap(), target.parse().unwrap());
        let t = target.octets();
        let dst = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | u16::from(t[13]), u16::from_be_bytes([t[14], t[15]]));
        let mut f = vec![0u8; 14 + 40 + 32];
        f[..6].copy_from_slice(&wire::ipv6_multicast_mac(dst));
        f[6..12].copy_from_slice(&C);
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        f[14] = 0x60;
        f[18..20].copy_from_slice(&32u16.to_be_bytes());
        f[20] = 58;
        f[21] = 255;
        f[22..38].copy_from_slice(&src.octets());
        f[38..54].copy_from_slice(&dst.octets());
        let b = &mut f[54..];
        b[0] = 135;
        b[8..24].copy_from_slice(&t);
        b[24..26].copy_from_slice(&[1, 1]);
        b[26..32].copy_from_slice(&C);
        let mut p = Icmpv6Packet::new_unchecked(&mut f[54..]);
        p.fill_checksum(&src, &dst);
        f
    }

    #[test]
    fn neighbour_solicitations() {
        match classify(&neighbor_solicit("fd00::100", "fd00::2"), &gw(), false).unwrap().1 {
            Packet::NeighborSolicit { src, target } => {
                assert_eq!((src.to_string(), target.to_string()), ("fd00::100".into(), "fd00::2".into()));
            }
            other => panic!("unexpected {other:?}"),
        }
        let ll = wire::link_local_of(G).to_string();
        assert!(matches!(
            classify(&neighbor_solicit("fe80::1", &ll), &gw(), false).unwrap().1,
            Packet::NeighborSolicit { .. }
        ));
        // Another container address: never answered. DAD for our address: not defended.
        let other = neighbor_solicit("fd00::100", "fd00::7");
        assert_eq!(classify(&other, &gw(), false).unwrap_err(), Drop::ArpNotForUs);
        let dad = neighbor_solicit("::", "fd00::100");
        assert_eq!(classify(&dad, &gw(), false).unwrap_err(), Drop::ArpNotForUs);
        let mut forwarded = neighbor_solicit("fd00::100", "fd00::2");
        forwarded[21] = 64; // not on-link
        assert_eq!(classify(&forwarded, &gw(), false).unwrap_err(), Drop::Malformed);
        let mut off = gw();
        off.v6 = None;
        let ns = neighbor_solicit("fd00::100", "fd00::2");
        assert_eq!(classify(&ns, &off, false).unwrap_err(), Drop::OtherEtherType);
    }

    #[test]
    fn link_local_chatter_is_not_spoofing() {
        // An MLDv2 report as Linux sends it at start: link-local source, hop-by-hop header.
        let mut mld = neighbor_solicit("fe80::1", "fd00::2");
        mld[20] = 0; // next header: hop-by-hop
        assert_eq!(classify(&mld, &gw(), false).unwrap_err(), Drop::OtherProtocol);
        // A neighbour advertisement (unsolicited, from the link-local address).
        let mut na = neighbor_solicit("fe80::1", "fd00::2");
        na[54] = 136;
        let (src, dst) = (
            Ipv6Addr::from(<[u8; 16]>::try_from(&na[22..38]).unwrap()),
            Ipv6Addr::from(<[u8; 16]>::try_from(&na[38..54]).unwrap()),
        );
        Icmpv6Packet::new_unchecked(&mut na[54..]).fill_checksum(&src, &dst);
        assert_eq!(classify(&na, &gw(), false).unwrap_err(), Drop::OtherIcmp);
        // An echo request from the link-local address to a remote host still is.
        let mut echo = neighbor_solicit("fe80::1", "fd00::2");
        echo[38..54].copy_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        echo[54] = 128;
        let (src, dst) = (
            Ipv6Addr::from(<[u8; 16]>::try_from(&echo[22..38]).unwrap()),
            Ipv6Addr::from(<[u8; 16]>::try_from(&echo[38..54]).unwrap()),
        );
        Icmpv6Packet::new_unchecked(&mut echo[54..]).fill_checksum(&src, &dst);
        assert_eq!(classify(&echo, &gw(), false).unwrap_err(), Drop::Spoofed);
    }

    #[test]
    fn udp6_checksum_required_and_spoofing_refused() {
        let mut buf = vec![0u8; 128];
        let src = "[fd00::100]:5000".parse().unwrap();
        let dst = "[2001:db8::1]:53".parse().unwrap();
        let n = wire::udp(&mut buf, G, C, src, dst, 0);
        assert!(matches!(classify(&buf[..n], &gw(), false).unwrap().1, Packet::Udp { .. }));
        let mut zero = buf[..n].to_vec();
        zero[14 + 40 + 6..14 + 40 + 8].copy_from_slice(&[0, 0]);
        assert_eq!(classify(&zero, &gw(), false).unwrap_err(), Drop::BadChecksum);
        let n = wire::udp(&mut buf, G, C, "[fd01::100]:1".parse().unwrap(), dst, 0);
        assert_eq!(classify(&buf[..n], &gw(), false).unwrap_err(), Drop::Spoofed);
        let n = wire::udp(&mut buf, G, C, src, "[fe80::1]:9".parse().unwrap(), 0);
        assert_eq!(classify(&buf[..n], &gw(), false).unwrap_err(), Drop::NotRoutable);
    }

    #[test]
    fn dhcp_from_nowhere_to_the_broadcast_is_classified() {
        let mut buf = vec![0u8; 400];
        let from = "0.0.0.0:68".parse().unwrap();
        let n = wire::udp(&mut buf, [0xff; 6], C, from, "255.255.255.255:67".parse().unwrap(), 300);
        assert!(
            matches!(classify(&buf[..n], &gw(), false).unwrap().1, Packet::Dhcp { payload } if payload.len() == 300)
        );
        // The same from a bound client to the gateway (renewal).
        let n = wire::udp(&mut buf, G, C, "10.0.2.100:68".parse().unwrap(), "10.0.2.2:67".parse().unwrap(), 300);
        assert!(matches!(classify(&buf[..n], &gw(), false).unwrap().1, Packet::Dhcp { .. }));
        // Other broadcasts stay unroutable; other sources stay spoofed; checksums are checked.
        let n = wire::udp(&mut buf, [0xff; 6], C, from, "255.255.255.255:9".parse().unwrap(), 10);
        assert_eq!(classify(&buf[..n], &gw(), false).unwrap_err(), Drop::Spoofed);
        let n = wire::udp(
            &mut buf,
            [0xff; 6],
            C,
            "10.0.2.100:68".parse().unwrap(),
            "255.255.255.255:9".parse().unwrap(),
            10,
        );
        assert_eq!(classify(&buf[..n], &gw(), false).unwrap_err(), Drop::NotRoutable);
        let n = wire::udp(
            &mut buf,
            [0xff; 6],
            C,
            "10.9.9.9:68".parse().unwrap(),
            "255.255.255.255:67".parse().unwrap(),
            10,
        );
        assert_eq!(classify(&buf[..n], &gw(), false).unwrap_err(), Drop::Spoofed);
        let n = wire::udp(&mut buf, [0xff; 6], C, from, "255.255.255.255:67".parse().unwrap(), 300);
        buf[n - 1] ^= 0xff;
        assert_eq!(classify(&buf[..n], &gw(), false).unwrap_err(), Drop::BadChecksum);
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
            // Make some of them look like IPv4 or IPv6 to get past the first checks.
            buf[6] &= 0xfe;
            if x.is_multiple_of(2) {
                buf[12] = 0x08;
                buf[13] = 0x00;
                buf[14] = 0x45;
            } else if x.is_multiple_of(5) {
                buf[12] = 0x86;
                buf[13] = 0xdd;
                buf[14] = 0x60;
                buf[20] = [6, 17, 58, 44, 0][(x % 5) as usize];
            }
            let len = (x % 200) as usize;
            let _ = classify(&buf[..len], &gw(), x.is_multiple_of(3));
        }
        let mut v = vec![0u8; 100];
        let n = wire::udp(&mut v, G, C, "10.0.2.100:5000".parse().unwrap(), "10.0.2.3:53".parse().unwrap(), 20);
        for cut in 0..n {
            let _ = classify(&v[..cut], &gw(), false);
        }
        let n = wire::udp(&mut v, G, C, "[fd00::100]:5000".parse().unwrap(), "[fd00::3]:53".parse().unwrap(), 20);
        for cut in 0..n {
            let _ = classify(&v[..cut], &gw(), false);
        }
        let ns = neighbor_solicit("fd00::100", "fd00::2");
        for cut in 0..ns.len() {
            let _ = classify(&ns[..cut], &gw(), false);
        }
        for cut in 0..ARP_REQ.len() {
            let _ = classify(&ARP_REQ[..cut], &gw(), true);
        }
    }
}
