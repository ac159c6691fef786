//! Everything a user types that warren parses: port specs, CIDRs, MACs, DNS upstreams, MTUs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warren::{config, forward};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(fwds) = forward::parse_spec(text) {
        assert!(!fwds.is_empty(), "a valid spec publishes something");
    }
    let _ = config::parse_cidr(text);
    let _ = config::parse_cidr6(text);
    let _ = config::parse_mac(text);
    let _ = config::parse_upstream(text);
    if let Ok(n) = text.parse::<u32>() {
        let _ = config::parse_mtu(n);
    }
});
