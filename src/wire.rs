//! Frames warren originates toward the container, built in place in a caller's buffer.
//!
//! Each builder writes a complete Ethernet frame into `out` and returns its length; nothing
//! allocates. Checksums are always filled: the frames go straight into the container's
//! kernel, which verifies them. Parsing of untrusted frames uses smoltcp's checked views
//! (`new_checked`) in [`crate::gateway`]; the builders here only read values that were
//! already validated there.

use std::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::wire::{
    Icmpv4Message, Icmpv4Packet, IpAddress, IpProtocol, Ipv4Packet, TcpPacket, TcpSeqNumber, UdpPacket,
};

/// Length of the `virtio_net_hdr` before every frame on the TAP fd.
pub const VNET_HDR_LEN: usize = 10;
/// `virtio_net_hdr.flags`: the L4 checksum holds only the pseudo-header sum; the receiver
/// completes it (or, being the final receiver, trusts the data).
pub const VNET_F_NEEDS_CSUM: u8 = 1;
/// `virtio_net_hdr.flags`: the checksum was already verified.
pub const VNET_F_DATA_VALID: u8 = 2;

/// Reads a frame's `virtio_net_hdr`: whether its L4 checksum can be trusted without checking
/// (the sending kernel says so), or `None` for a GSO frame (never negotiated; dropped).
pub fn vnet_trusted(hdr: &[u8]) -> Option<bool> {
    let (flags, gso_type) = (*hdr.first()?, *hdr.get(1)?);
    if gso_type != 0 {
        return None;
    }
    Some(flags & (VNET_F_NEEDS_CSUM | VNET_F_DATA_VALID) != 0)
}

/// The `virtio_net_hdr` of a TCP/IPv4 frame whose checksum field holds only the
/// pseudo-header sum (see [`tcp4_partial_checksum`]).
pub fn vnet_needs_csum(l4_start: usize, csum_offset: usize) -> [u8; VNET_HDR_LEN] {
    let mut h = [0u8; VNET_HDR_LEN];
    h[0] = VNET_F_NEEDS_CSUM;
    h[6..8].copy_from_slice(&(l4_start as u16).to_ne_bytes());
    h[8..10].copy_from_slice(&(csum_offset as u16).to_ne_bytes());
    h
}

/// Puts the pseudo-header sum (not inverted) into the checksum field of the TCP segment in
/// `ip` (a complete IPv4 packet), as checksum offload expects. Returns the L4 offset within
/// the IP packet, or `None` if the packet is not TCP/IPv4.
pub fn tcp4_partial_checksum(ip: &mut [u8]) -> Option<usize> {
    let p = Ipv4Packet::new_checked(&*ip).ok()?;
    if p.next_header() != IpProtocol::Tcp {
        return None;
    }
    let ihl = usize::from(p.header_len());
    let l4_len = usize::from(p.total_len()).checked_sub(ihl)?;
    let sum = smoltcp::wire::checksum::pseudo_header_v4(&p.src_addr(), &p.dst_addr(), IpProtocol::Tcp, l4_len as u32);
    ip.get_mut(ihl + 16..ihl + 18)?.copy_from_slice(&sum.to_be_bytes());
    Some(ihl)
}

/// Ethernet header length.
pub const ETH_LEN: usize = 14;
/// IPv4 header length of every packet warren builds (no options).
pub const IPV4_LEN: usize = 20;
/// UDP header length.
pub const UDP_LEN: usize = 8;
/// Offset of a UDP payload in a frame built by [`udp4`].
pub const UDP_PAYLOAD_OFFSET: usize = ETH_LEN + IPV4_LEN + UDP_LEN;
/// Largest UDP payload in one unfragmented IPv4 packet.
pub const UDP_MAX_PAYLOAD: usize = 65535 - IPV4_LEN - UDP_LEN;

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// Length of an Ethernet/IPv4 ARP packet.
pub const ARP_LEN: usize = 28;

/// A checked view of an Ethernet II header. (smoltcp's Ethernet and ARP types come only with
/// its `medium-ethernet` feature, which would also grow every per-flow `Interface`; these two
/// formats are small enough to read here.)
#[derive(Debug, Clone, Copy)]
pub struct EthView<'a> {
    /// Destination MAC.
    pub dst: [u8; 6],
    /// Source MAC.
    pub src: [u8; 6],
    /// EtherType.
    pub ethertype: u16,
    /// Everything after the header.
    pub payload: &'a [u8],
}

/// Parses an Ethernet II header; `None` when the frame is too short.
pub fn parse_eth(frame: &[u8]) -> Option<EthView<'_>> {
    let (hdr, payload) = frame.split_at_checked(ETH_LEN)?;
    Some(EthView {
        dst: hdr[0..6].try_into().ok()?,
        src: hdr[6..12].try_into().ok()?,
        ethertype: u16::from_be_bytes([hdr[12], hdr[13]]),
        payload,
    })
}

/// A checked view of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpView {
    /// Operation: 1 request, 2 reply.
    pub op: u16,
    /// Sender MAC.
    pub sender_mac: [u8; 6],
    /// Sender IPv4 address.
    pub sender_ip: Ipv4Addr,
    /// Target IPv4 address.
    pub target_ip: Ipv4Addr,
}

/// Parses an ARP packet; `None` unless it is a complete Ethernet/IPv4 one.
pub fn parse_arp(p: &[u8]) -> Option<ArpView> {
    let p = p.get(..ARP_LEN)?;
    if p[0..2] != [0, 1] || p[2..4] != [0x08, 0x00] || p[4] != 6 || p[5] != 4 {
        return None;
    }
    let ip = |o: usize| Ipv4Addr::new(p[o], p[o + 1], p[o + 2], p[o + 3]);
    Some(ArpView {
        op: u16::from_be_bytes([p[6], p[7]]),
        sender_mac: p[8..14].try_into().ok()?,
        sender_ip: ip(14),
        target_ip: ip(24),
    })
}

fn eth_header(out: &mut [u8], dst: [u8; 6], src: [u8; 6], ethertype: u16) {
    out[0..6].copy_from_slice(&dst);
    out[6..12].copy_from_slice(&src);
    out[12..14].copy_from_slice(&ethertype.to_be_bytes());
}

/// Writes an Ethernet header carrying IPv4.
pub fn eth_ipv4(out: &mut [u8], dst: [u8; 6], src: [u8; 6]) {
    eth_header(out, dst, src, ETHERTYPE_IPV4);
}

/// Writes an IPv4 header (DF set, TTL 64) for `payload_len` bytes of `proto` at
/// `out[ETH_LEN..]`.
fn ipv4_header(out: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr, proto: IpProtocol, payload_len: usize) {
    let mut ip = Ipv4Packet::new_unchecked(&mut out[ETH_LEN..ETH_LEN + IPV4_LEN]);
    ip.set_version(4);
    ip.set_header_len(IPV4_LEN as u8);
    ip.set_dscp(0);
    ip.set_ecn(0);
    ip.set_total_len((IPV4_LEN + payload_len) as u16);
    ip.set_ident(0);
    ip.clear_flags();
    ip.set_dont_frag(true);
    ip.set_frag_offset(0);
    ip.set_hop_limit(64);
    ip.set_next_header(proto);
    ip.set_src_addr(src);
    ip.set_dst_addr(dst);
    ip.fill_checksum();
}

/// Completes a UDP datagram whose payload (`len` bytes) the caller already placed at
/// `out[UDP_PAYLOAD_OFFSET..]`. Returns the frame length.
pub fn udp4(
    out: &mut [u8],
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    src: SocketAddrV4,
    dst: SocketAddrV4,
    len: usize,
) -> usize {
    let total = UDP_PAYLOAD_OFFSET + len;
    eth_ipv4(out, eth_dst, eth_src);
    ipv4_header(out, *src.ip(), *dst.ip(), IpProtocol::Udp, UDP_LEN + len);
    let mut udp = UdpPacket::new_unchecked(&mut out[ETH_LEN + IPV4_LEN..total]);
    udp.set_src_port(src.port());
    udp.set_dst_port(dst.port());
    udp.set_len((UDP_LEN + len) as u16);
    udp.fill_checksum(&IpAddress::Ipv4(*src.ip()), &IpAddress::Ipv4(*dst.ip()));
    total
}

/// Builds an ARP reply telling `target` that `ip` is at `mac`.
pub fn arp_reply(out: &mut [u8], mac: [u8; 6], ip: Ipv4Addr, target_mac: [u8; 6], target_ip: Ipv4Addr) -> usize {
    eth_header(out, target_mac, mac, ETHERTYPE_ARP);
    let a = &mut out[ETH_LEN..ETH_LEN + ARP_LEN];
    a[0..8].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 2]);
    a[8..14].copy_from_slice(&mac);
    a[14..18].copy_from_slice(&ip.octets());
    a[18..24].copy_from_slice(&target_mac);
    a[24..28].copy_from_slice(&target_ip.octets());
    ETH_LEN + ARP_LEN
}

/// Builds an ICMP echo reply from `src` to `dst` with the given ident, sequence and data.
#[allow(clippy::too_many_arguments)]
pub fn icmp4_echo_reply(
    out: &mut [u8],
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ident: u16,
    seq: u16,
    data: &[u8],
) -> usize {
    let icmp_len = 8 + data.len();
    let total = ETH_LEN + IPV4_LEN + icmp_len;
    eth_ipv4(out, eth_dst, eth_src);
    ipv4_header(out, src, dst, IpProtocol::Icmp, icmp_len);
    let mut p = Icmpv4Packet::new_unchecked(&mut out[ETH_LEN + IPV4_LEN..total]);
    p.set_msg_type(Icmpv4Message::EchoReply);
    p.set_msg_code(0);
    p.set_echo_ident(ident);
    p.set_echo_seq_no(seq);
    p.data_mut().copy_from_slice(data);
    p.fill_checksum();
    total
}

/// ICMP destination-unreachable codes warren sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    /// Code 0: no route to the network.
    Net = 0,
    /// Code 1: the host did not answer.
    Host = 1,
    /// Code 3: nothing listens on that UDP port.
    Port = 3,
    /// Code 13: forbidden by policy (ICMP echo without ping sockets, denied host loopback).
    Prohibited = 13,
}

/// Builds an ICMP destination-unreachable from `src` to the sender of `offending` (the
/// container's IPv4 packet), quoting its header and first 8 payload bytes per RFC 792.
pub fn icmp4_unreachable(
    out: &mut [u8],
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    src: Ipv4Addr,
    code: Unreachable,
    offending: &[u8],
) -> usize {
    let ihl = offending.first().map_or(IPV4_LEN, |b| usize::from(b & 0x0f) * 4);
    let quote = offending.len().min(ihl + 8);
    let dst = Ipv4Addr::new(offending[12], offending[13], offending[14], offending[15]);
    let icmp_len = 8 + quote;
    let total = ETH_LEN + IPV4_LEN + icmp_len;
    eth_ipv4(out, eth_dst, eth_src);
    ipv4_header(out, src, dst, IpProtocol::Icmp, icmp_len);
    let body = &mut out[ETH_LEN + IPV4_LEN..total];
    body[..8].copy_from_slice(&[3, code as u8, 0, 0, 0, 0, 0, 0]);
    body[8..].copy_from_slice(&offending[..quote]);
    Icmpv4Packet::new_unchecked(body).fill_checksum();
    total
}

/// The fields of a TCP segment a reset answers.
#[derive(Debug, Clone, Copy)]
pub struct SegmentInfo {
    /// Sender of the offending segment (the container).
    pub src: SocketAddrV4,
    /// Its destination.
    pub dst: SocketAddrV4,
    /// Its sequence number.
    pub seq: u32,
    /// Its acknowledgement number, when ACK was set.
    pub ack: Option<u32>,
    /// Sequence space it occupies: payload length, plus one each for SYN and FIN.
    pub seg_len: u32,
}

/// Builds the RST that answers `seg` (RFC 793 "reset generation"): from its destination back
/// to its source; with ACK set it takes that as sequence, else it acknowledges the segment.
pub fn tcp4_rst(out: &mut [u8], eth_dst: [u8; 6], eth_src: [u8; 6], seg: &SegmentInfo) -> usize {
    let total = ETH_LEN + IPV4_LEN + 20;
    eth_ipv4(out, eth_dst, eth_src);
    ipv4_header(out, *seg.dst.ip(), *seg.src.ip(), IpProtocol::Tcp, 20);
    let mut t = TcpPacket::new_unchecked(&mut out[ETH_LEN + IPV4_LEN..total]);
    t.set_src_port(seg.dst.port());
    t.set_dst_port(seg.src.port());
    t.set_header_len(20);
    t.clear_flags();
    t.set_rst(true);
    match seg.ack {
        Some(ack) => {
            t.set_seq_number(TcpSeqNumber(ack as i32));
            t.set_ack_number(TcpSeqNumber(0));
        }
        None => {
            t.set_seq_number(TcpSeqNumber(0));
            t.set_ack(true);
            t.set_ack_number(TcpSeqNumber(seg.seq.wrapping_add(seg.seg_len) as i32));
        }
    }
    t.set_window_len(0);
    t.set_urgent_at(0);
    t.fill_checksum(&IpAddress::Ipv4(*seg.dst.ip()), &IpAddress::Ipv4(*seg.src.ip()));
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const G: [u8; 6] = [0x52, 0x55, 10, 0, 2, 2];

    #[test]
    fn udp_frame_is_valid() {
        let mut buf = vec![0u8; 128];
        buf[UDP_PAYLOAD_OFFSET..UDP_PAYLOAD_OFFSET + 5].copy_from_slice(b"hello");
        let src = SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 3), 53);
        let dst = SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 100), 40000);
        let n = udp4(&mut buf, C, G, src, dst, 5);
        assert_eq!(n, 14 + 20 + 8 + 5);
        let ip = Ipv4Packet::new_checked(&buf[ETH_LEN..n]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.total_len(), 33);
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(udp.verify_checksum(&IpAddress::Ipv4(*src.ip()), &IpAddress::Ipv4(*dst.ip())));
        assert_eq!((udp.src_port(), udp.dst_port(), udp.payload()), (53, 40000, &b"hello"[..]));
    }

    #[test]
    fn rst_for_syn_acks_it() {
        let mut buf = vec![0u8; 128];
        let seg = SegmentInfo {
            src: "10.0.2.100:40000".parse().unwrap(),
            dst: "10.0.2.2:80".parse().unwrap(),
            seq: 1000,
            ack: None,
            seg_len: 1,
        };
        let n = tcp4_rst(&mut buf, C, G, &seg);
        let ip = Ipv4Packet::new_checked(&buf[ETH_LEN..n]).unwrap();
        assert_eq!(ip.src_addr(), Ipv4Addr::new(10, 0, 2, 2));
        let t = TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(t.rst() && t.ack() && !t.syn());
        assert_eq!(t.ack_number(), TcpSeqNumber(1001));
        assert_eq!((t.src_port(), t.dst_port()), (80, 40000));
        assert!(t.verify_checksum(&IpAddress::Ipv4(ip.src_addr()), &IpAddress::Ipv4(ip.dst_addr())));
    }

    #[test]
    fn unreachable_quotes_the_offender() {
        // A UDP datagram 10.0.2.100:5000 -> 10.0.2.2:9 with 12 payload bytes.
        let mut off = vec![0u8; 64];
        let src = SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 100), 5000);
        let dst = SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 2), 9);
        let n = udp4(&mut off, G, C, src, dst, 12);
        let pkt = &off[ETH_LEN..n];
        let mut buf = vec![0u8; 128];
        let m = icmp4_unreachable(&mut buf, C, G, Ipv4Addr::new(10, 0, 2, 2), Unreachable::Port, pkt);
        let ip = Ipv4Packet::new_checked(&buf[ETH_LEN..m]).unwrap();
        assert_eq!(ip.dst_addr(), Ipv4Addr::new(10, 0, 2, 100));
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum());
        assert_eq!((icmp.msg_type(), icmp.msg_code()), (Icmpv4Message::DstUnreachable, 3));
        assert_eq!(icmp.data(), &pkt[..28]);
    }

    #[test]
    fn partial_checksum_completes_to_the_full_one() {
        // A real TCP segment with a correct checksum, then its field replaced by the partial
        // sum: summing the segment from the L4 start (as the kernel does) restores it.
        let mut buf = vec![0u8; 128];
        let seg = SegmentInfo {
            src: "10.0.2.100:40000".parse().unwrap(),
            dst: "10.0.2.2:80".parse().unwrap(),
            seq: 7,
            ack: Some(9),
            seg_len: 0,
        };
        let n = tcp4_rst(&mut buf, C, G, &seg);
        let ip = &mut buf[ETH_LEN..n];
        let full = u16::from_be_bytes([ip[36], ip[37]]);
        assert_eq!(tcp4_partial_checksum(ip), Some(20));
        let completed = !smoltcp::wire::checksum::data(&ip[20..]);
        assert_eq!(completed, full);
        assert_eq!(vnet_needs_csum(34, 16)[0], VNET_F_NEEDS_CSUM);
        assert_eq!(vnet_trusted(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0]), Some(true));
        assert_eq!(vnet_trusted(&[0; 10]), Some(false));
        assert_eq!(vnet_trusted(&[0, 1, 0, 0, 0, 0, 0, 0, 0, 0]), None, "GSO frames are refused");
    }

    #[test]
    fn arp_reply_fields() {
        let mut buf = vec![0u8; 64];
        let n = arp_reply(&mut buf, G, Ipv4Addr::new(10, 0, 2, 2), C, Ipv4Addr::new(10, 0, 2, 100));
        assert_eq!(n, 42);
        let eth = parse_eth(&buf[..n]).unwrap();
        assert_eq!((eth.dst, eth.src, eth.ethertype), (C, G, ETHERTYPE_ARP));
        let a = parse_arp(eth.payload).unwrap();
        assert_eq!(a.op, 2);
        assert_eq!(a.sender_ip, Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(a.sender_mac, G);
        assert_eq!(&eth.payload[18..24], &C);
        assert_eq!(a.target_ip, Ipv4Addr::new(10, 0, 2, 100));
        assert!(parse_arp(&eth.payload[..27]).is_none());
        assert!(parse_eth(&buf[..13]).is_none());
    }
}
