//! DNS messages from containers: local answers (names, aliases, PTR, both families),
//! REFUSED and error answers, and the resolv.conf parser.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use warren::dns::{Records, answer_local, error_answer, parse_resolv_conf, refused};

fuzz_target!(|data: &[u8]| {
    let mut records = Records::default();
    let addrs: [IpAddr; 2] = ["10.89.0.2".parse().unwrap(), "fd89::2".parse().unwrap()];
    records.add("web", &["www".to_string(), "Web.Internal".to_string()], &addrs);
    records.add("db", &[], &["10.89.0.3".parse().unwrap()]);
    if let Some(a) = answer_local(data, &records) {
        assert!(a.len() >= 12, "an answer has a header");
        assert_eq!(a[..2], data[..2], "the answer keeps the query id");
    }
    let _ = refused(data);
    let _ = error_answer(data, 2);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_resolv_conf(text);
    }
});
