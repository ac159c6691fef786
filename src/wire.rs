//! Frames warren originates toward the container, built in place in a caller's buffer.
//!
//! Each builder writes a complete Ethernet frame into `out` and returns its length; nothing
//! allocates. Checksums are always filled: the frames go straight into the container's
//! kernel, which verifies them. Parsing of untrusted frames uses smoltcp's checked views
//! (`new_checked`) in [`crate::gateway`]; the builders here only read values that were
//! already validated there.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use smoltcp::wire::{IpProtocol, Ipv4Packet, Ipv6Packet, TcpOption, TcpPacket, TcpSeqNumber, UdpPacket, checksum};

/// Length of the `virtio_net_hdr` before every frame on the TAP fd.
pub const VNET_HDR_LEN: usize = 10;
/// `virtio_net_hdr.flags`: the L4 checksum holds only the pseudo-header sum; the receiver
/// completes it (or, being the final receiver, trusts the data).
pub const VNET_F_NEEDS_CSUM: u8 = 1;
/// `virtio_net_hdr.flags`: the checksum was already verified.
pub const VNET_F_DATA_VALID: u8 = 2;

/// `virtio_net_hdr.gso_type`: a TCP/IPv4 segment larger than `gso_size`.
pub const VNET_GSO_TCPV4: u8 = 1;
/// `virtio_net_hdr.gso_type`: a TCP/IPv6 segment larger than `gso_size`.
pub const VNET_GSO_TCPV6: u8 = 4;
/// `virtio_net_hdr.gso_type`: UDP datagrams of `gso_size` bytes back to back behind one UDP
/// header (USO, Linux 6.2 and later).
pub const VNET_GSO_UDP_L4: u8 = 5;
/// `virtio_net_hdr.gso_type` flag: the segment carries ECN bits (CWR) to keep on the first cut.
pub const VNET_GSO_ECN: u8 = 0x80;

/// Reads a frame's `virtio_net_hdr`: whether its L4 checksum can be trusted without checking
/// (the sending kernel says so), or `None` for a kind of GSO frame the TAP never offers (UDP
/// fragmentation offload and unknown types; dropped). A TCP GSO frame (TSO) is one segment of
/// up to 64 KiB whose IP length covers all of it: warren's stack takes it as it is.
pub fn vnet_trusted(hdr: &[u8]) -> Option<bool> {
    let (flags, gso_type) = (*hdr.first()?, *hdr.get(1)?);
    match gso_type & !VNET_GSO_ECN {
        0 | VNET_GSO_TCPV4 | VNET_GSO_TCPV6 => Some(flags & (VNET_F_NEEDS_CSUM | VNET_F_DATA_VALID) != 0),
        _ => None,
    }
}

/// Turns the `virtio_net_hdr` of a TCP frame with a partial checksum (`hdr`, from
/// [`vnet_needs_csum`]) into a GSO header when its payload exceeds what the container takes in
/// one segment: `mss` is the MSS the container announced, `ip` the IP packet whose TCP header
/// starts at `l4`. The container's kernel then takes the whole segment as if it had arrived in
/// `mss`-sized pieces and been merged (GRO), instead of warren cutting and sending each piece.
pub fn vnet_gso(hdr: &mut [u8; VNET_HDR_LEN], ip: &[u8], l4: usize, mss: u16) {
    let Some(&off) = ip.get(l4 + 12) else { return };
    let thl = usize::from(off >> 4) * 4;
    // The announced MSS counts no TCP options; each cut segment repeats ours.
    let seg = usize::from(mss).saturating_sub(thl.saturating_sub(20));
    if seg == 0 || ip.len() <= l4 + thl + seg {
        return;
    }
    hdr[1] = if ip[0] >> 4 == 4 { VNET_GSO_TCPV4 } else { VNET_GSO_TCPV6 };
    hdr[2..4].copy_from_slice(&((ETH_LEN + l4 + thl) as u16).to_ne_bytes());
    hdr[4..6].copy_from_slice(&(seg as u16).to_ne_bytes());
}

/// Finds the MSS option of a TCP SYN (or SYN-ACK) in `ip` and sets it to `mss`, returning
/// the value it had. `None` when `ip` is not a TCP SYN with that option. The TCP checksum is
/// left stale: the packet goes only to warren's own stack, which does not verify it.
pub fn rewrite_syn_mss(ip: &mut [u8], mss: u16) -> Option<u16> {
    let l4 = match ip.first()? >> 4 {
        4 => Ipv4Packet::new_checked(&*ip).ok().filter(|p| p.next_header() == IpProtocol::Tcp)?.header_len().into(),
        6 => Ipv6Packet::new_checked(&*ip).ok().filter(|p| p.next_header() == IpProtocol::Tcp).map(|_| IPV6_LEN)?,
        _ => return None,
    };
    let mut tcp = TcpPacket::new_checked(ip.get_mut(l4..)?).ok()?;
    if !tcp.syn() {
        return None;
    }
    let opts = tcp.options_mut();
    let mut at = 0;
    while at < opts.len() {
        let (rest, opt) = TcpOption::parse(&opts[at..]).ok()?;
        match opt {
            TcpOption::EndOfList => return None,
            TcpOption::MaxSegmentSize(old) => {
                opts[at + 2..at + 4].copy_from_slice(&mss.to_be_bytes());
                return Some(old);
            }
            _ => at = opts.len() - rest.len(),
        }
    }
    None
}

/// The `virtio_net_hdr` of a TCP/IPv4 frame whose checksum field holds only the
/// pseudo-header sum (see [`tcp_partial_checksum`]).
pub fn vnet_needs_csum(l4_start: usize, csum_offset: usize) -> [u8; VNET_HDR_LEN] {
    let mut h = [0u8; VNET_HDR_LEN];
    h[0] = VNET_F_NEEDS_CSUM;
    h[6..8].copy_from_slice(&(l4_start as u16).to_ne_bytes());
    h[8..10].copy_from_slice(&(csum_offset as u16).to_ne_bytes());
    h
}

/// Puts the pseudo-header sum (not inverted) into the checksum field of the TCP segment in
/// `ip` (a complete IPv4 packet, or an IPv6 packet without extension headers, as the stack
/// emits them), as checksum offload expects. Returns the L4 offset within the IP packet, or
/// `None` if the packet is not TCP.
pub fn tcp_partial_checksum(ip: &mut [u8]) -> Option<usize> {
    let (l4, sum) = match ip.first()? >> 4 {
        4 => {
            let p = Ipv4Packet::new_checked(&*ip).ok()?;
            if p.next_header() != IpProtocol::Tcp {
                return None;
            }
            let ihl = usize::from(p.header_len());
            let l4_len = usize::from(p.total_len()).checked_sub(ihl)?;
            (ihl, checksum::pseudo_header_v4(&p.src_addr(), &p.dst_addr(), IpProtocol::Tcp, l4_len as u32))
        }
        6 => {
            let p = Ipv6Packet::new_checked(&*ip).ok()?;
            if p.next_header() != IpProtocol::Tcp {
                return None;
            }
            let l4_len = u32::from(p.payload_len());
            (IPV6_LEN, checksum::pseudo_header_v6(&p.src_addr(), &p.dst_addr(), IpProtocol::Tcp, l4_len))
        }
        _ => return None,
    };
    ip.get_mut(l4 + 16..l4 + 18)?.copy_from_slice(&sum.to_be_bytes());
    Some(l4)
}

/// Ethernet header length.
pub const ETH_LEN: usize = 14;
/// IPv4 header length of every packet warren builds (no options).
pub const IPV4_LEN: usize = 20;
/// UDP header length.
pub const UDP_LEN: usize = 8;
/// IPv6 header length (warren never adds extension headers).
pub const IPV6_LEN: usize = 40;
/// Offset of a UDP payload in an IPv4 frame built by [`udp`].
pub const UDP_PAYLOAD_OFFSET: usize = ETH_LEN + IPV4_LEN + UDP_LEN;
/// Largest UDP payload in one unfragmented IPv4 packet.
pub const UDP_MAX_PAYLOAD: usize = 65535 - IPV4_LEN - UDP_LEN;
/// Largest UDP payload in one IPv6 packet without jumbograms.
pub const UDP6_MAX_PAYLOAD: usize = 65535 - UDP_LEN;
/// Room a frame buffer needs for any packet warren builds or receives.
pub const FRAME_MAX: usize = ETH_LEN + IPV6_LEN + 65536;

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
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

/// Writes an Ethernet header whose EtherType follows the IP version of the packet after it
/// (`out[ETH_LEN]`), for packets the TCP stack produced.
pub fn eth_for_ip(out: &mut [u8], dst: [u8; 6], src: [u8; 6]) {
    let ethertype = if out[ETH_LEN] >> 4 == 6 { ETHERTYPE_IPV6 } else { ETHERTYPE_IPV4 };
    eth_header(out, dst, src, ethertype);
}

/// Length of the IP header warren writes for this family (no options, no extension headers).
pub fn ip_header_len(ip: IpAddr) -> usize {
    if ip.is_ipv6() { IPV6_LEN } else { IPV4_LEN }
}

/// Offset of a UDP payload in a frame built by [`udp`] for this family.
pub fn udp_payload_offset(ip: IpAddr) -> usize {
    ETH_LEN + ip_header_len(ip) + UDP_LEN
}

/// Largest UDP payload warren carries for this family.
pub fn udp_max_payload(ip: IpAddr) -> usize {
    if ip.is_ipv6() { UDP6_MAX_PAYLOAD } else { UDP_MAX_PAYLOAD }
}

/// Writes the Ethernet header and an IPv4 (DF set, TTL 64) or IPv6 (hop limit 64) header
/// for `payload_len` bytes of `proto`. Returns the offset of the payload. `src` and `dst`
/// must be of one family.
fn ip_header(
    out: &mut [u8],
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    proto: IpProtocol,
    payload_len: usize,
) -> usize {
    match (src, dst) {
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            eth_header(out, eth_dst, eth_src, ETHERTYPE_IPV6);
            let mut ip = Ipv6Packet::new_unchecked(&mut out[ETH_LEN..ETH_LEN + IPV6_LEN]);
            ip.set_version(6);
            ip.set_traffic_class(0);
            ip.set_flow_label(0);
            ip.set_payload_len(payload_len as u16);
            ip.set_next_header(proto);
            ip.set_hop_limit(64);
            ip.set_src_addr(s);
            ip.set_dst_addr(d);
            ETH_LEN + IPV6_LEN
        }
        (s, d) => {
            let v4 = |a: IpAddr| match a {
                IpAddr::V4(a) => a,
                IpAddr::V6(a) => a.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
            };
            eth_header(out, eth_dst, eth_src, ETHERTYPE_IPV4);
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
            ip.set_src_addr(v4(s));
            ip.set_dst_addr(v4(d));
            ip.fill_checksum();
            ETH_LEN + IPV4_LEN
        }
    }
}

/// Completes a UDP datagram whose payload (`len` bytes) the caller already placed at
/// `out[udp_payload_offset(src.ip())..]`. Returns the frame length.
pub fn udp(out: &mut [u8], eth_dst: [u8; 6], eth_src: [u8; 6], src: SocketAddr, dst: SocketAddr, len: usize) -> usize {
    let l4 = ip_header(out, eth_dst, eth_src, src.ip(), dst.ip(), IpProtocol::Udp, UDP_LEN + len);
    let total = l4 + UDP_LEN + len;
    let mut udp = UdpPacket::new_unchecked(&mut out[l4..total]);
    udp.set_src_port(src.port());
    udp.set_dst_port(dst.port());
    udp.set_len((UDP_LEN + len) as u16);
    udp.fill_checksum(&src.ip().into(), &dst.ip().into());
    total
}

/// [`udp`] for a frame that goes with the `virtio_net_hdr` of [`vnet_udp`]: the checksum
/// holds only the pseudo-header sum (the container's kernel trusts or completes it), and the
/// `len` payload bytes may be several datagrams of one GSO frame. Returns the frame length.
pub fn udp_partial(
    out: &mut [u8],
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    src: SocketAddr,
    dst: SocketAddr,
    len: usize,
) -> usize {
    let l4 = ip_header(out, eth_dst, eth_src, src.ip(), dst.ip(), IpProtocol::Udp, UDP_LEN + len);
    let total = l4 + UDP_LEN + len;
    let sum = match (src.ip(), dst.ip()) {
        (IpAddr::V6(s), IpAddr::V6(d)) => checksum::pseudo_header_v6(&s, &d, IpProtocol::Udp, (UDP_LEN + len) as u32),
        _ => {
            let (s, d) = (&out[ETH_LEN + 12..ETH_LEN + 16], &out[ETH_LEN + 16..ETH_LEN + 20]);
            let v4 = |b: &[u8]| Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            checksum::pseudo_header_v4(&v4(s), &v4(d), IpProtocol::Udp, (UDP_LEN + len) as u32)
        }
    };
    let mut udp = UdpPacket::new_unchecked(&mut out[l4..total]);
    udp.set_src_port(src.port());
    udp.set_dst_port(dst.port());
    udp.set_len((UDP_LEN + len) as u16);
    udp.set_checksum(sum);
    total
}

/// The `virtio_net_hdr` of a frame from [`udp_partial`] from `src`: checksum offload and,
/// when `seg` is not 0, UDP segmentation offload: its payload is datagrams of `seg` bytes
/// (the last may be shorter) that the container's kernel cuts apart.
pub fn vnet_udp(src: IpAddr, seg: u16) -> [u8; VNET_HDR_LEN] {
    let l4 = ETH_LEN + ip_header_len(src);
    let mut h = vnet_needs_csum(l4, 6);
    if seg != 0 {
        h[1] = VNET_GSO_UDP_L4;
        h[2..4].copy_from_slice(&((l4 + UDP_LEN) as u16).to_ne_bytes());
        h[4..6].copy_from_slice(&seg.to_ne_bytes());
    }
    h
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

/// Fills the checksum of the ICMP or ICMPv6 message at `out[l4..total]`.
fn icmp_checksum(out: &mut [u8], l4: usize, total: usize, src: IpAddr, dst: IpAddr) {
    let body = &mut out[l4..total];
    body[2..4].copy_from_slice(&[0, 0]);
    let sum = match (src, dst) {
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let ph = checksum::pseudo_header_v6(&s, &d, IpProtocol::Icmpv6, body.len() as u32);
            !checksum::combine(&[ph, checksum::data(body)])
        }
        _ => !checksum::data(body),
    };
    body[2..4].copy_from_slice(&sum.to_be_bytes());
}

/// Builds an ICMP (or ICMPv6) echo reply from `src` to `dst` with the given ident, sequence
/// and data.
#[allow(clippy::too_many_arguments)]
pub fn icmp_echo_reply(
    out: &mut [u8],
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    ident: u16,
    seq: u16,
    data: &[u8],
) -> usize {
    let (proto, kind) = if src.is_ipv6() { (IpProtocol::Icmpv6, 129) } else { (IpProtocol::Icmp, 0) };
    let icmp_len = 8 + data.len();
    let l4 = ip_header(out, eth_dst, eth_src, src, dst, proto, icmp_len);
    let total = l4 + icmp_len;
    let body = &mut out[l4..total];
    body[0] = kind;
    body[1] = 0;
    body[4..6].copy_from_slice(&ident.to_be_bytes());
    body[6..8].copy_from_slice(&seq.to_be_bytes());
    body[8..].copy_from_slice(data);
    icmp_checksum(out, l4, total, src, dst);
    total
}

/// Destination-unreachable reasons warren reports (ICMP codes differ per family).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    /// No route to the network (ICMP 0; ICMPv6 0 "no route").
    Net,
    /// The host did not answer (ICMP 1; ICMPv6 3 "address unreachable").
    Host,
    /// Nothing listens on that UDP port (ICMP 3; ICMPv6 4).
    Port,
    /// Forbidden by policy: ICMP echo without ping sockets, denied host loopback (ICMP 13;
    /// ICMPv6 1 "administratively prohibited").
    Prohibited,
}

impl Unreachable {
    /// The ICMPv4 destination-unreachable code.
    pub fn code4(self) -> u8 {
        match self {
            Unreachable::Net => 0,
            Unreachable::Host => 1,
            Unreachable::Port => 3,
            Unreachable::Prohibited => 13,
        }
    }
    /// The ICMPv6 destination-unreachable code.
    pub fn code6(self) -> u8 {
        match self {
            Unreachable::Net => 0,
            Unreachable::Host => 3,
            Unreachable::Port => 4,
            Unreachable::Prohibited => 1,
        }
    }
}

/// The minimum IPv6 MTU: ICMPv6 errors never exceed it.
pub const IPV6_MIN_MTU: usize = 1280;

/// Builds an ICMP error of `kind`/`code` (with the 4-byte `extra` field: 0, or the MTU of a
/// "packet too big") from `src` to the sender of `offending`, the container's IP packet,
/// quoting its header and first 8 payload bytes (IPv4, RFC 792) or as much as fits in the
/// minimum MTU (IPv6, RFC 4443).
#[allow(clippy::too_many_arguments)]
fn icmp_error(
    out: &mut [u8],
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    src: IpAddr,
    kind: u8,
    code: u8,
    extra: u32,
    offending: &[u8],
) -> usize {
    let (dst, quote, proto) = match src {
        IpAddr::V4(_) => {
            let ihl = offending.first().map_or(IPV4_LEN, |b| usize::from(b & 0x0f) * 4);
            let d = Ipv4Addr::new(offending[12], offending[13], offending[14], offending[15]);
            (IpAddr::V4(d), offending.len().min(ihl + 8), IpProtocol::Icmp)
        }
        IpAddr::V6(_) => {
            let mut d = [0u8; 16];
            d.copy_from_slice(&offending[8..24]);
            let room = IPV6_MIN_MTU - IPV6_LEN - 8;
            (IpAddr::V6(Ipv6Addr::from(d)), offending.len().min(room), IpProtocol::Icmpv6)
        }
    };
    let icmp_len = 8 + quote;
    let l4 = ip_header(out, eth_dst, eth_src, src, dst, proto, icmp_len);
    let total = l4 + icmp_len;
    let body = &mut out[l4..total];
    body[0] = kind;
    body[1] = code;
    body[4..8].copy_from_slice(&extra.to_be_bytes());
    body[8..].copy_from_slice(&offending[..quote]);
    icmp_checksum(out, l4, total, src, dst);
    total
}

/// Builds a destination-unreachable from `src` to the sender of `offending` (an IPv4 or
/// IPv6 packet of the container; `src` must be of its family).
pub fn icmp_unreachable(
    out: &mut [u8],
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    src: IpAddr,
    code: Unreachable,
    offending: &[u8],
) -> usize {
    match src {
        IpAddr::V4(_) => icmp_error(out, eth_dst, eth_src, src, 3, code.code4(), 0, offending),
        IpAddr::V6(_) => icmp_error(out, eth_dst, eth_src, src, 1, code.code6(), 0, offending),
    }
}

/// Builds an ICMPv6 "packet too big" (or ICMPv4 "fragmentation needed") reporting `mtu`.
pub fn icmp_too_big(
    out: &mut [u8],
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    src: IpAddr,
    mtu: u32,
    offending: &[u8],
) -> usize {
    match src {
        IpAddr::V4(_) => icmp_error(out, eth_dst, eth_src, src, 3, 4, mtu & 0xffff, offending),
        IpAddr::V6(_) => icmp_error(out, eth_dst, eth_src, src, 2, 0, mtu, offending),
    }
}

/// The fields of a TCP segment a reset answers.
#[derive(Debug, Clone, Copy)]
pub struct SegmentInfo {
    /// Sender of the offending segment (the container).
    pub src: SocketAddr,
    /// Its destination.
    pub dst: SocketAddr,
    /// Its sequence number.
    pub seq: u32,
    /// Its acknowledgement number, when ACK was set.
    pub ack: Option<u32>,
    /// Sequence space it occupies: payload length, plus one each for SYN and FIN.
    pub seg_len: u32,
}

/// Builds the RST that answers `seg` (RFC 793 "reset generation"): from its destination back
/// to its source; with ACK set it takes that as sequence, else it acknowledges the segment.
pub fn tcp_rst(out: &mut [u8], eth_dst: [u8; 6], eth_src: [u8; 6], seg: &SegmentInfo) -> usize {
    let l4 = ip_header(out, eth_dst, eth_src, seg.dst.ip(), seg.src.ip(), IpProtocol::Tcp, 20);
    let total = l4 + 20;
    let mut t = TcpPacket::new_unchecked(&mut out[l4..total]);
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
    t.fill_checksum(&seg.dst.ip().into(), &seg.src.ip().into());
    total
}

/// The Ethernet multicast address of an IPv4 multicast group (RFC 1112: its low 23 bits).
pub fn ipv4_multicast_mac(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]
}

/// The Ethernet multicast address of a multicast group of either family.
pub fn multicast_mac(ip: IpAddr) -> [u8; 6] {
    match ip {
        IpAddr::V4(a) => ipv4_multicast_mac(a),
        IpAddr::V6(a) => ipv6_multicast_mac(a),
    }
}

/// The Ethernet multicast address of an IPv6 multicast group (RFC 2464).
pub fn ipv6_multicast_mac(ip: Ipv6Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// The modified EUI-64 link-local address of a MAC (RFC 4291), which the gateway uses as
/// its router address in neighbour discovery.
pub fn link_local_of(mac: [u8; 6]) -> Ipv6Addr {
    Ipv6Addr::from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, mac[0] ^ 0x02, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]])
}

/// Builds a neighbour advertisement (router, solicited, override) saying `target` is at
/// `mac`, sent to `dst` (the solicitor, or all-nodes when it had no address yet).
pub fn neighbor_advert(
    out: &mut [u8],
    mac: [u8; 6],
    target: Ipv6Addr,
    dst_mac: [u8; 6],
    dst: Ipv6Addr,
    solicited: bool,
) -> usize {
    let len = 8 + 16 + 8;
    let l4 = ip_header(out, dst_mac, mac, target.into(), dst.into(), IpProtocol::Icmpv6, len);
    let total = l4 + len;
    let b = &mut out[l4..total];
    b[0] = 136;
    b[1] = 0;
    b[4..8].copy_from_slice(&[0x80 | if solicited { 0x40 } else { 0 } | 0x20, 0, 0, 0]);
    b[8..24].copy_from_slice(&target.octets());
    b[24..26].copy_from_slice(&[2, 1]); // target link-layer address option
    b[26..32].copy_from_slice(&mac);
    // Neighbour discovery must arrive with hop limit 255 (RFC 4861 7.1.2).
    out[ETH_LEN + 7] = 255;
    icmp_checksum(out, l4, total, target.into(), dst.into());
    total
}

/// What a router advertisement announces.
#[derive(Debug, Clone, Copy)]
pub struct RouterAdvert {
    /// The router's MAC.
    pub mac: [u8; 6],
    /// The router's link-local address (the advertisement's source).
    pub link_local: Ipv6Addr,
    /// The on-link /64 prefix, autonomous (SLAAC).
    pub prefix: Ipv6Addr,
    /// Link MTU.
    pub mtu: u32,
    /// Recursive DNS server (RFC 8106), if any.
    pub dns: Option<Ipv6Addr>,
}

/// Builds a router advertisement to `dst` (the soliciting host, or all-nodes).
pub fn router_advert(out: &mut [u8], ra: &RouterAdvert, dst_mac: [u8; 6], dst: Ipv6Addr) -> usize {
    let len = 16 + 8 + 8 + 32 + if ra.dns.is_some() { 24 } else { 0 };
    let l4 = ip_header(out, dst_mac, ra.mac, ra.link_local.into(), dst.into(), IpProtocol::Icmpv6, len);
    out[ETH_LEN + 7] = 255;
    let total = l4 + len;
    let b = &mut out[l4..total];
    b.fill(0);
    b[0] = 134;
    b[4] = 64; // current hop limit
    b[6..8].copy_from_slice(&1800u16.to_be_bytes()); // router lifetime (s)
    // Source link-layer address.
    b[16..18].copy_from_slice(&[1, 1]);
    b[18..24].copy_from_slice(&ra.mac);
    // MTU.
    b[24..26].copy_from_slice(&[5, 1]);
    b[28..32].copy_from_slice(&ra.mtu.to_be_bytes());
    // Prefix information: /64, on-link and autonomous, valid 1 day, preferred 4 h.
    b[32..36].copy_from_slice(&[3, 4, 64, 0xc0]);
    b[36..40].copy_from_slice(&86_400u32.to_be_bytes());
    b[40..44].copy_from_slice(&14_400u32.to_be_bytes());
    b[48..64].copy_from_slice(&ra.prefix.octets());
    if let Some(dns) = ra.dns {
        b[64..66].copy_from_slice(&[25, 3]);
        b[68..72].copy_from_slice(&1800u32.to_be_bytes());
        b[72..88].copy_from_slice(&dns.octets());
    }
    icmp_checksum(out, l4, total, ra.link_local.into(), dst.into());
    total
}

#[cfg(test)]
mod tests {
    use smoltcp::wire::{Icmpv4Message, Icmpv4Packet, Icmpv6Packet, IpAddress};

    use super::*;

    const C: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const G: [u8; 6] = [0x52, 0x55, 10, 0, 2, 2];

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn multicast_macs_carry_the_groups_low_bits() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        assert_eq!(multicast_mac(ip("224.0.0.251")), [0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]);
        assert_eq!(multicast_mac(ip("239.255.255.250")), [0x01, 0x00, 0x5e, 0x7f, 0xff, 0xfa], "23 bits only");
        assert_eq!(multicast_mac(ip("ff02::fb")), [0x33, 0x33, 0, 0, 0, 0xfb]);
    }

    #[test]
    fn udp_frame_is_valid() {
        let mut buf = vec![0u8; 128];
        buf[UDP_PAYLOAD_OFFSET..UDP_PAYLOAD_OFFSET + 5].copy_from_slice(b"hello");
        let src: SocketAddr = "10.0.2.3:53".parse().unwrap();
        let dst: SocketAddr = "10.0.2.100:40000".parse().unwrap();
        let n = udp(&mut buf, C, G, src, dst, 5);
        assert_eq!(n, 14 + 20 + 8 + 5);
        let ip = Ipv4Packet::new_checked(&buf[ETH_LEN..n]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.total_len(), 33);
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(udp.verify_checksum(&src.ip().into(), &dst.ip().into()));
        assert_eq!((udp.src_port(), udp.dst_port(), udp.payload()), (53, 40000, &b"hello"[..]));
    }

    #[test]
    fn udp6_frame_is_valid() {
        let src: SocketAddr = "[fd00::3]:53".parse().unwrap();
        let dst: SocketAddr = "[fd00::100]:40000".parse().unwrap();
        let off = udp_payload_offset(src.ip());
        assert_eq!(off, 14 + 40 + 8);
        let mut buf = vec![0u8; 128];
        buf[off..off + 5].copy_from_slice(b"hello");
        let n = udp(&mut buf, C, G, src, dst, 5);
        assert_eq!(n, off + 5);
        assert_eq!(parse_eth(&buf[..n]).unwrap().ethertype, ETHERTYPE_IPV6);
        let ip = Ipv6Packet::new_checked(&buf[ETH_LEN..n]).unwrap();
        assert_eq!((ip.payload_len(), ip.next_header(), ip.hop_limit()), (13, IpProtocol::Udp, 64));
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(udp.verify_checksum(&src.ip().into(), &dst.ip().into()));
        assert_eq!(udp.payload(), b"hello");
    }

    #[test]
    fn rst_for_syn_acks_it() {
        for (src, dst) in [("10.0.2.100:40000", "10.0.2.2:80"), ("[fd00::100]:40000", "[fd00::2]:80")] {
            let mut buf = vec![0u8; 128];
            let seg =
                SegmentInfo { src: src.parse().unwrap(), dst: dst.parse().unwrap(), seq: 1000, ack: None, seg_len: 1 };
            let n = tcp_rst(&mut buf, C, G, &seg);
            let (s, d, l4): (IpAddress, IpAddress, &[u8]) = if seg.src.is_ipv6() {
                let ip = Ipv6Packet::new_checked(&buf[ETH_LEN..n]).unwrap();
                (ip.src_addr().into(), ip.dst_addr().into(), &buf[ETH_LEN + IPV6_LEN..n])
            } else {
                let ip = Ipv4Packet::new_checked(&buf[ETH_LEN..n]).unwrap();
                (ip.src_addr().into(), ip.dst_addr().into(), &buf[ETH_LEN + IPV4_LEN..n])
            };
            assert_eq!(s, IpAddress::from(seg.dst.ip()));
            let t = TcpPacket::new_checked(l4).unwrap();
            assert!(t.rst() && t.ack() && !t.syn());
            assert_eq!(t.ack_number(), TcpSeqNumber(1001));
            assert_eq!((t.src_port(), t.dst_port()), (80, 40000));
            assert!(t.verify_checksum(&s, &d));
        }
    }

    #[test]
    fn unreachable_quotes_the_offender() {
        // A UDP datagram 10.0.2.100:5000 -> 10.0.2.2:9 with 12 payload bytes.
        let mut off = vec![0u8; 64];
        let src: SocketAddr = "10.0.2.100:5000".parse().unwrap();
        let dst: SocketAddr = "10.0.2.2:9".parse().unwrap();
        let n = udp(&mut off, G, C, src, dst, 12);
        let pkt = &off[ETH_LEN..n];
        let mut buf = vec![0u8; 128];
        let m = icmp_unreachable(&mut buf, C, G, dst.ip(), Unreachable::Port, pkt);
        let ip = Ipv4Packet::new_checked(&buf[ETH_LEN..m]).unwrap();
        assert_eq!(ip.dst_addr(), Ipv4Addr::new(10, 0, 2, 100));
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum());
        assert_eq!((icmp.msg_type(), icmp.msg_code()), (Icmpv4Message::DstUnreachable, 3));
        assert_eq!(icmp.data(), &pkt[..28]);
    }

    #[test]
    fn icmp6_errors_quote_and_verify() {
        let mut off = vec![0u8; 2000];
        let src: SocketAddr = "[fd00::100]:5000".parse().unwrap();
        let dst: SocketAddr = "[2001:db8::1]:9".parse().unwrap();
        let n = udp(&mut off, G, C, src, dst, 1500);
        let pkt = &off[ETH_LEN..n];
        let mut buf = vec![0u8; 2000];
        for (too_big, kind, code) in [(false, 1, 4), (true, 2, 0)] {
            let m = if too_big {
                icmp_too_big(&mut buf, C, G, dst.ip(), 1280, pkt)
            } else {
                icmp_unreachable(&mut buf, C, G, dst.ip(), Unreachable::Port, pkt)
            };
            assert_eq!(m - ETH_LEN, IPV6_MIN_MTU, "the error fills but never exceeds the minimum MTU");
            let ip = Ipv6Packet::new_checked(&buf[ETH_LEN..m]).unwrap();
            assert_eq!(ip.dst_addr(), v6("fd00::100"));
            let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
            assert!(icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
            assert_eq!((u8::from(icmp.msg_type()), icmp.msg_code()), (kind, code));
            assert_eq!(&ip.payload()[8..], &pkt[..IPV6_MIN_MTU - 48]);
        }
    }

    #[test]
    fn echo_reply_both_families() {
        let mut buf = vec![0u8; 128];
        let n = icmp_echo_reply(&mut buf, C, G, "fd00::2".parse().unwrap(), "fd00::100".parse().unwrap(), 7, 9, b"abc");
        let ip = Ipv6Packet::new_checked(&buf[ETH_LEN..n]).unwrap();
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
        assert_eq!((u8::from(icmp.msg_type()), icmp.echo_ident(), icmp.echo_seq_no()), (129, 7, 9));
        let n =
            icmp_echo_reply(&mut buf, C, G, "10.0.2.2".parse().unwrap(), "10.0.2.100".parse().unwrap(), 7, 9, b"abc");
        let ip = Ipv4Packet::new_checked(&buf[ETH_LEN..n]).unwrap();
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum());
        assert_eq!((icmp.msg_type(), icmp.data()), (Icmpv4Message::EchoReply, &b"abc"[..]));
    }

    #[test]
    fn neighbour_discovery_messages() {
        let mut buf = vec![0u8; 256];
        let n = neighbor_advert(&mut buf, G, v6("fd00::2"), C, v6("fd00::100"), true);
        let ip = Ipv6Packet::new_checked(&buf[ETH_LEN..n]).unwrap();
        assert_eq!(ip.hop_limit(), 255);
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
        assert_eq!(u8::from(icmp.msg_type()), 136);
        assert_eq!(&ip.payload()[8..24], &v6("fd00::2").octets());
        assert_eq!(&ip.payload()[26..32], &G);
        let ll = link_local_of(G);
        assert_eq!(ll, v6("fe80::5055:aff:fe00:202"));
        let ra = RouterAdvert { mac: G, link_local: ll, prefix: v6("fd00::"), mtu: 1500, dns: Some(v6("fd00::3")) };
        let n = router_advert(&mut buf, &ra, ipv6_multicast_mac(v6("ff02::1")), v6("ff02::1"));
        assert_eq!(&buf[..6], &[0x33, 0x33, 0, 0, 0, 1]);
        let ip = Ipv6Packet::new_checked(&buf[ETH_LEN..n]).unwrap();
        assert_eq!((ip.src_addr(), ip.hop_limit()), (ll, 255));
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
        assert_eq!(u8::from(icmp.msg_type()), 134);
    }

    #[test]
    fn partial_checksum_completes_to_the_full_one() {
        // A real TCP segment with a correct checksum, then its field replaced by the partial
        // sum: summing the segment from the L4 start (as the kernel does) restores it.
        for (src, dst, l4) in
            [("10.0.2.100:40000", "10.0.2.2:80", IPV4_LEN), ("[fd00::100]:40000", "[fd00::2]:80", IPV6_LEN)]
        {
            let mut buf = vec![0u8; 128];
            let seg =
                SegmentInfo { src: src.parse().unwrap(), dst: dst.parse().unwrap(), seq: 7, ack: Some(9), seg_len: 0 };
            let n = tcp_rst(&mut buf, C, G, &seg);
            let ip = &mut buf[ETH_LEN..n];
            let full = u16::from_be_bytes([ip[l4 + 16], ip[l4 + 17]]);
            assert_eq!(tcp_partial_checksum(ip), Some(l4));
            let completed = !checksum::data(&ip[l4..]);
            assert_eq!(completed, full);
        }
        assert_eq!(vnet_needs_csum(34, 16)[0], VNET_F_NEEDS_CSUM);
        assert_eq!(vnet_trusted(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0]), Some(true));
        assert_eq!(vnet_trusted(&[0; 10]), Some(false));
        assert_eq!(vnet_trusted(&[1, 1, 0, 0, 0, 0, 0, 0, 0, 0]), Some(true), "TSO frames are taken");
        assert_eq!(vnet_trusted(&[1, 0x84, 0, 0, 0, 0, 0, 0, 0, 0]), Some(true), "TCPv6 TSO with ECN");
        assert_eq!(vnet_trusted(&[1, 3, 0, 0, 0, 0, 0, 0, 0, 0]), None, "UFO was never offered");
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

    /// An IPv4 TCP packet with `flags`, options NOP,WS,MSS(`mss`) and `payload` bytes.
    fn tcp4(flags: u8, mss: u16, payload: usize) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 2, 100, 10, 0, 2, 2];
        p.extend_from_slice(&[0x13, 0x88, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x80, flags, 0xff, 0xff, 0, 0, 0, 0]);
        let [hi, lo] = mss.to_be_bytes();
        p.extend_from_slice(&[1, 3, 3, 7, 2, 4, hi, lo, 1, 1, 1, 1]);
        p.resize(p.len() + payload, 0xab);
        let len = (p.len() as u16).to_be_bytes();
        p[2..4].copy_from_slice(&len);
        p
    }

    #[test]
    fn syn_mss_is_found_past_other_options_and_rewritten() {
        let mut syn = tcp4(0x02, 1460, 0);
        assert_eq!(rewrite_syn_mss(&mut syn, 65460), Some(1460));
        assert_eq!(&syn[44..48], &[2, 4, 0xff, 0xb4]);
        assert_eq!(&syn[40..44], &[1, 3, 3, 7], "other options untouched");
        let mut synack = tcp4(0x12, 1400, 0);
        assert_eq!(rewrite_syn_mss(&mut synack, 9000), Some(1400));
        let mut ack = tcp4(0x10, 1460, 0);
        assert_eq!(rewrite_syn_mss(&mut ack, 9000), None, "only SYNs carry an MSS to rewrite");
        let mut cut = tcp4(0x02, 1460, 0);
        cut[32] = 0x60; // data offset 24: the MSS option lies past the header
        assert_eq!(rewrite_syn_mss(&mut cut, 9000), None);
        let mut udp = tcp4(0x02, 1460, 0);
        udp[9] = 17;
        assert_eq!(rewrite_syn_mss(&mut udp, 9000), None);
        for bad in [vec![], vec![0x45], tcp4(0x02, 1460, 0)[..30].to_vec()] {
            let mut bad = bad;
            assert_eq!(rewrite_syn_mss(&mut bad, 9000), None, "short input is not a SYN");
        }
    }

    #[test]
    fn gso_header_only_for_segments_larger_than_the_mss() {
        let big = tcp4(0x10, 0, 60000);
        let mut h = vnet_needs_csum(ETH_LEN + 20, 16);
        vnet_gso(&mut h, &big, 20, 1460);
        assert_eq!(h[1], VNET_GSO_TCPV4);
        assert_eq!(u16::from_ne_bytes([h[2], h[3]]) as usize, ETH_LEN + 20 + 32, "headers before the payload");
        assert_eq!(u16::from_ne_bytes([h[4], h[5]]), 1460 - 12, "the MSS less our options");
        assert_eq!(h[0], VNET_F_NEEDS_CSUM);
        let small = tcp4(0x10, 0, 1448);
        let mut h = vnet_needs_csum(ETH_LEN + 20, 16);
        vnet_gso(&mut h, &small, 20, 1460);
        assert_eq!(h, vnet_needs_csum(ETH_LEN + 20, 16), "a segment that fits goes as it is");
    }
}
