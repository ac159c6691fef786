//! DHCP messages from containers: the BOOTREQUEST parser and the replies built from it.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use warren::dhcp::{Lease, parse, reply};

const LEASE: Lease = Lease {
    ip: Ipv4Addr::new(10, 0, 2, 100),
    prefix: 24,
    server: Ipv4Addr::new(10, 0, 2, 2),
    router: Some(Ipv4Addr::new(10, 0, 2, 2)),
    dns: Some(Ipv4Addr::new(10, 0, 2, 3)),
    mtu: 65520,
    seconds: 86400,
};

fuzz_target!(|data: &[u8]| {
    if let Some(req) = parse(data)
        && let Some(r) = reply(&req, &LEASE)
    {
        assert!(r.len() >= 300 && r[0] == 2, "a BOOTREPLY of at least BOOTP's size");
        assert_eq!(r[4..8], data[4..8], "the reply keeps the transaction id");
    }
});
