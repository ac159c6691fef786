//! DNS messages from containers and upstreams: local answers (names, aliases, PTR, both
//! families), REFUSED and error answers, the resolv.conf parser, and a query's failover
//! across upstreams fed the same bytes as query and as answers.
#![no_main]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use warren::dns::{Queries, Records, Step, answer_local, error_answer, parse_resolv_conf, query_name, refused};

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
    let _ = query_name(data);
    let servers: Vec<SocketAddr> = vec!["127.0.0.1:53".parse().unwrap(), "[::1]:53".parse().unwrap()];
    let t0 = Instant::now();
    let mut q = Queries::default();
    let _ = q.ask(data, servers.clone(), t0);
    for (i, chunk) in data.chunks(13).enumerate() {
        let _ = q.answer(servers[i % 2], chunk, t0);
        let _ = q.answer(servers[i % 2], data, t0);
    }
    let _ = q.unreachable(servers[0], t0);
    for step in q.poll(t0 + Duration::from_secs(10)) {
        if let Step::Answer(a) = step {
            assert_eq!(a[..2], data[..2], "an answer keeps the query id");
        }
    }
    assert!(q.is_empty() || data.len() < 12, "every query is answered in the end");
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_resolv_conf(text);
    }
});
