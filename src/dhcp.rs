//! A DHCPv4 server for one client: the container behind a `warren run`/`attach` TAP or a
//! warren-slirp4netns guest that asks for its address instead of being configured (libslirp
//! serves DHCP too). It always leases the container's own address, so published ports, the
//! anti-spoofing check and DNS stay what they are for a configured container.
//!
//! Sans-IO: a BOOTREQUEST's UDP payload in, the BOOTREPLY's payload out. Checked reads only;
//! no input panics (fuzzed by `fuzz/fuzz_targets/dhcp.rs`).

use std::net::Ipv4Addr;

/// UDP port of the server.
pub const SERVER_PORT: u16 = 67;
/// UDP port of the client.
pub const CLIENT_PORT: u16 = 68;

const MAGIC: [u8; 4] = [0x63, 0x82, 0x53, 0x63];
/// Fixed BOOTP header before the options (including the magic cookie).
const HEADER: usize = 240;
/// Replies are padded to BOOTP's minimum message size: some clients drop shorter ones.
const MIN_REPLY: usize = 300;

const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const ACK: u8 = 5;
const NAK: u8 = 6;
const INFORM: u8 = 8;

/// What the server hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The client's address.
    pub ip: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// The server identifier and, with `router`, the default gateway.
    pub server: Ipv4Addr,
    /// Default gateway, when the container has a default route.
    pub router: Option<Ipv4Addr>,
    /// DNS server, when DNS is forwarded.
    pub dns: Option<Ipv4Addr>,
    /// Interface MTU.
    pub mtu: u16,
    /// Lease time in seconds.
    pub seconds: u32,
}

/// The fields of a client's message the server needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// DHCP message type (option 53).
    pub kind: u8,
    /// Transaction id.
    pub xid: [u8; 4],
    /// Flags (the broadcast bit).
    pub flags: [u8; 2],
    /// The client's current address, if it has one.
    pub ciaddr: Ipv4Addr,
    /// The client hardware address field (16 bytes, echoed back).
    pub chaddr: &'a [u8],
    /// The address asked for (option 50).
    pub requested: Option<Ipv4Addr>,
}

/// Reads a BOOTREQUEST over Ethernet; `None` for anything else.
pub fn parse(msg: &[u8]) -> Option<Request<'_>> {
    let head = msg.get(..HEADER)?;
    if head[0] != 1 || head[1] != 1 || head[2] != 6 || head[236..240] != MAGIC {
        return None;
    }
    let mut kind = None;
    let mut requested = None;
    let mut opts = &msg[HEADER..];
    while let Some((&code, rest)) = opts.split_first() {
        match code {
            0 => {
                opts = rest;
                continue;
            }
            255 => break,
            _ => {}
        }
        let (&len, rest) = rest.split_first()?;
        let value = rest.get(..usize::from(len))?;
        match (code, value) {
            (53, [k]) => kind = Some(*k),
            (50, [a, b, c, d]) => requested = Some(Ipv4Addr::new(*a, *b, *c, *d)),
            _ => {}
        }
        opts = &rest[usize::from(len)..];
    }
    Some(Request {
        kind: kind?,
        xid: head[4..8].try_into().ok()?,
        flags: head[10..12].try_into().ok()?,
        ciaddr: Ipv4Addr::new(head[12], head[13], head[14], head[15]),
        chaddr: &head[28..44],
        requested,
    })
}

/// The reply to `req`: OFFER to DISCOVER, ACK (or NAK for another address) to REQUEST,
/// ACK without a lease to INFORM; `None` to anything else (RELEASE, DECLINE: nothing to do).
pub fn reply(req: &Request<'_>, lease: &Lease) -> Option<Vec<u8>> {
    let kind = match req.kind {
        DISCOVER => OFFER,
        REQUEST => {
            let wanted = req.requested.unwrap_or(req.ciaddr);
            if wanted == lease.ip { ACK } else { NAK }
        }
        INFORM => ACK,
        _ => return None,
    };
    let mut m = vec![0u8; HEADER];
    m[..4].copy_from_slice(&[2, 1, 6, 0]);
    m[4..8].copy_from_slice(&req.xid);
    m[10..12].copy_from_slice(&req.flags);
    if req.kind == INFORM {
        m[12..16].copy_from_slice(&req.ciaddr.octets());
    } else if kind != NAK {
        m[16..20].copy_from_slice(&lease.ip.octets());
    }
    m[20..24].copy_from_slice(&lease.server.octets());
    m[28..44].copy_from_slice(req.chaddr);
    m[236..240].copy_from_slice(&MAGIC);
    let mut opt = |code: u8, value: &[u8]| {
        m.push(code);
        m.push(value.len() as u8);
        m.extend_from_slice(value);
    };
    opt(53, &[kind]);
    opt(54, &lease.server.octets());
    if kind != NAK {
        if req.kind != INFORM {
            opt(51, &lease.seconds.to_be_bytes());
            // Renew at half, rebind at seven eighths (RFC 2131's defaults, said explicitly).
            opt(58, &(lease.seconds / 2).to_be_bytes());
            opt(59, &(lease.seconds / 8 * 7).to_be_bytes());
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(lease.prefix.min(32))).unwrap_or(0);
        opt(1, &mask.to_be_bytes());
        if let Some(r) = lease.router {
            opt(3, &r.octets());
        }
        if let Some(d) = lease.dns {
            opt(6, &d.octets());
        }
        opt(26, &lease.mtu.to_be_bytes());
    }
    m.push(255);
    if m.len() < MIN_REPLY {
        m.resize(MIN_REPLY, 0);
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Lease = Lease {
        ip: Ipv4Addr::new(10, 0, 2, 100),
        prefix: 24,
        server: Ipv4Addr::new(10, 0, 2, 2),
        router: Some(Ipv4Addr::new(10, 0, 2, 2)),
        dns: Some(Ipv4Addr::new(10, 0, 2, 3)),
        mtu: 65520,
        seconds: 86400,
    };

    fn request(kind: u8, requested: Option<[u8; 4]>) -> Vec<u8> {
        let mut m = vec![0u8; HEADER];
        m[..4].copy_from_slice(&[1, 1, 6, 0]);
        m[4..8].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        m[10] = 0x80;
        m[28..34].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        m[236..240].copy_from_slice(&MAGIC);
        m.extend_from_slice(&[53, 1, kind]);
        if let Some(r) = requested {
            m.extend_from_slice(&[50, 4]);
            m.extend_from_slice(&r);
        }
        m.extend_from_slice(&[0, 0, 255]);
        m
    }

    fn option(m: &[u8], code: u8) -> Option<&[u8]> {
        let mut o = &m[HEADER..];
        while let [c, len, rest @ ..] = o {
            if *c == 255 {
                return None;
            }
            if *c == code {
                return rest.get(..usize::from(*len));
            }
            o = rest.get(usize::from(*len)..)?;
        }
        None
    }

    #[test]
    fn discover_offer_request_ack() {
        let d = request(DISCOVER, None);
        let offer = reply(&parse(&d).unwrap(), &LEASE).unwrap();
        assert_eq!(offer[0], 2);
        assert_eq!(&offer[4..8], &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(&offer[16..20], &[10, 0, 2, 100]);
        assert_eq!(&offer[28..34], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(option(&offer, 53), Some(&[OFFER][..]));
        assert_eq!(option(&offer, 1), Some(&[255, 255, 255, 0][..]));
        assert_eq!(option(&offer, 3), Some(&[10, 0, 2, 2][..]));
        assert_eq!(option(&offer, 6), Some(&[10, 0, 2, 3][..]));
        assert_eq!(option(&offer, 26), Some(&65520u16.to_be_bytes()[..]));
        assert_eq!(option(&offer, 51), Some(&86400u32.to_be_bytes()[..]));
        assert!(offer.len() >= MIN_REPLY);
        let r = request(REQUEST, Some([10, 0, 2, 100]));
        assert_eq!(option(&reply(&parse(&r).unwrap(), &LEASE).unwrap(), 53), Some(&[ACK][..]));
        let r = request(REQUEST, Some([10, 0, 2, 15]));
        let nak = reply(&parse(&r).unwrap(), &LEASE).unwrap();
        assert_eq!(option(&nak, 53), Some(&[NAK][..]));
        assert_eq!(&nak[16..20], &[0, 0, 0, 0], "a NAK offers no address");
        assert!(reply(&parse(&request(7, None)).unwrap(), &LEASE).is_none(), "RELEASE: nothing to say");
    }

    #[test]
    fn garbage_and_truncations_are_refused_quietly() {
        let d = request(DISCOVER, Some([10, 0, 2, 100]));
        for cut in 0..d.len() {
            if let Some(r) = parse(&d[..cut]) {
                let _ = reply(&r, &LEASE);
            }
        }
        let mut bad = d.clone();
        bad[236] = 0;
        assert!(parse(&bad).is_none(), "no magic cookie: BOOTP, not DHCP");
        let mut long = d.clone();
        long.truncate(HEADER);
        long.extend_from_slice(&[53, 200, 1]);
        assert!(parse(&long).is_none(), "an option running past the end");
    }
}
