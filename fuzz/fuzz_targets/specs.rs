//! Everything a user types that warren parses: port specs (-p, -p auto, -T/-U), CIDRs, MACs, DNS upstreams and routes, MTUs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warren::{config, forward};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(fwds) = forward::parse_spec(text) {
        assert!(!fwds.is_empty(), "a valid spec publishes something");
    }
    let _ = forward::parse_auto(text);
    if let Ok(ports) = forward::parse_to_host(&[text], "--to-host") {
        assert!(!ports.is_empty() && ports.len() <= forward::TO_HOST_MAX, "{ports:?}");
    }
    let _ = config::parse_cidr(text);
    let _ = config::parse_cidr6(text);
    let _ = config::parse_mac(text);
    let _ = config::parse_upstream(text);
    let _ = config::parse_dns_route(text);
    if let Ok(n) = text.parse::<u32>() {
        let _ = config::parse_mtu(n);
    }
});
