//! Micro-benchmarks of the data path's hot spots, without namespaces or TAP devices
//! (`cargo bench`): frames enter through `runtime::fuzzing::Rig`, the same entry points the
//! TAP and bridge-port readers use, and leave through real host sockets or socketpairs.
//! Each case prints nanoseconds per operation (median of 5 rounds). Timings are for spotting
//! regressions on one machine, never test assertions; host traffic goes to 127.0.0.1 only.
//!
//! - udp_nat: a container datagram -> classify -> UDP flow lookup -> send on the host socket.
//! - udp_nat_1k_flows: the same spread over 1,000 flows (flow lookup at scale).
//! - udp_nat_burst: the same in TAP read bursts of 16 datagrams of one flow, which go to the
//!   host socket in one segmented send (UDP GSO) when the burst ends.
//! - switch_forward: a bridge port's frame -> anti-spoof check -> the other port's socket.
//! - tcp_flow_setup: a container SYN -> a new flow (smoltcp Interface, buffers, host connect).
//! - tcp_upload: an established flow's data segments, read in bursts of 8 as from the TAP ->
//!   the flow's stack -> one host write and one ACK per burst (the dataplane's own loop).
//! - tcp_download: a loopback service's bytes -> host read -> the flow's stack -> GSO frames
//!   of up to 64 KiB to the container, which acknowledges each burst (every byte checked).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use smoltcp::wire::{Ipv4Packet, TcpPacket};
use warren::daemon::ipam::mac_for;
use warren::runtime::fuzzing::{CONTAINER_MAC, PORT_IPS, Rig};
use warren::wire;

const GATEWAY_MAC: [u8; 6] = [0x52, 0x55, 10, 0, 2, 2];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn report(name: &str, per_op: f64, unit_note: &str) {
    println!("{name:<20} {per_op:>10.0} ns/op  {unit_note}");
}

fn udp_frame(sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 8 + payload];
    let src = SocketAddr::from(([10, 0, 2, 100], sport));
    let dst = SocketAddr::from(([10, 0, 2, 2], dport));
    let n = wire::udp(&mut f, GATEWAY_MAC, CONTAINER_MAC, src, dst, payload);
    f.truncate(n);
    f
}

fn udp_nat(flows: u16) {
    let sink = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = sink.local_addr().expect("addr").port();
    let frames: Vec<Vec<u8>> = (0..flows).map(|i| udp_frame(20000 + i, port, 1400)).collect();
    let mut rig = Rig::single(true);
    let now = Instant::now();
    for f in &frames {
        rig.feed(0, f, true, now);
    }
    let n = 200_000;
    let rounds: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for i in 0..n {
                rig.feed(0, &frames[i % frames.len()], true, now);
            }
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .collect();
    let name = if flows == 1 { "udp_nat".to_string() } else { format!("udp_nat_{}k_flows", flows / 1000) };
    let ns = median(rounds);
    report(&name, ns, &format!("(1400-byte datagrams: {:.1} Gbit/s of payload)", 1400.0 * 8.0 / ns));
    assert!(rig.stats().udp_flows >= u64::from(flows), "the flows were created");
}

fn udp_nat_burst() {
    let sink = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = sink.local_addr().expect("addr").port();
    let frame = udp_frame(20000, port, 1400);
    let mut rig = Rig::single(true);
    let now = Instant::now();
    rig.feed(0, &frame, true, now);
    let (n, burst) = (200_000, 16);
    let rounds: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for i in 0..n {
                rig.feed_burst(0, &frame, true, now, i % burst != burst - 1);
            }
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .collect();
    let ns = median(rounds);
    report("udp_nat_burst", ns, &format!("(bursts of {burst}: {:.1} Gbit/s of payload)", 1400.0 * 8.0 / ns));
    let batched = rig.stats().udp_batched;
    assert!(batched >= 5 * n as u64, "the bursts went out in batches: {batched}");
}

fn switch_forward() {
    let mut rig = Rig::bridge(true);
    let mut f = vec![0u8; wire::VNET_HDR_LEN + 14 + 20 + 8 + 1400];
    let src = SocketAddr::from((PORT_IPS[0], 5000));
    let dst = SocketAddr::from((PORT_IPS[1], 5001));
    let n = wire::udp(&mut f[wire::VNET_HDR_LEN..], mac_for(PORT_IPS[1]), mac_for(PORT_IPS[0]), src, dst, 1400);
    f.truncate(wire::VNET_HDR_LEN + n);
    f[0] = wire::VNET_F_DATA_VALID;
    let now = Instant::now();
    let n = 100_000;
    let mut out = Vec::new();
    let rounds: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for i in 0..n {
                rig.feed(0, &f, true, now);
                if i % 32 == 31 {
                    out.clear();
                    rig.recv(1, &mut out);
                }
            }
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .collect();
    report("switch_forward", median(rounds), "(1400-byte frames, incl. the receiver's read)");
}

fn syn(sport: u16, dport: u16) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 40];
    wire::eth_ipv4(&mut f, GATEWAY_MAC, CONTAINER_MAC);
    let ip = &mut f[14..];
    ip[..20].copy_from_slice(&[0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 2, 100, 10, 0, 2, 2]);
    Ipv4Packet::new_unchecked(&mut ip[..]).fill_checksum();
    let [s0, s1] = sport.to_be_bytes();
    let [d0, d1] = dport.to_be_bytes();
    ip[20..40].copy_from_slice(&[s0, s1, d0, d1, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    let mut t = TcpPacket::new_unchecked(&mut ip[20..40]);
    t.fill_checksum(&Ipv4Addr::new(10, 0, 2, 100).into(), &Ipv4Addr::new(10, 0, 2, 2).into());
    f
}

fn tcp_flow_setup() {
    warren::sys::raise_nofile_limit();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    // Fewer than --max-handshakes (1024): the rig never polls the reactor, so connects stay in flight.
    let n: u16 = 1000;
    let rounds: Vec<f64> = (0..5)
        .map(|r| {
            let mut rig = Rig::single(true);
            let frames: Vec<Vec<u8>> = (0..n).map(|i| syn(10000 + i + r * n, port)).collect();
            let now = Instant::now();
            let t = Instant::now();
            for f in &frames {
                rig.feed(0, f, true, now);
            }
            let ns = t.elapsed().as_nanos() as f64 / f64::from(n);
            let s = rig.stats();
            assert!(s.tcp_flows == u64::from(n) && s.tcp_resets == 0, "every SYN made a flow: {s:?}");
            while listener.accept().is_ok() {}
            drop(rig);
            std::thread::sleep(Duration::from_millis(50));
            while listener.accept().is_ok() {}
            ns
        })
        .collect();
    report("tcp_flow_setup", median(rounds), "(SYN -> flow with host connect in progress)");
}

fn tcp_upload() {
    // 8 segments of 8000 bytes per burst: the 64 KiB window a SYN without window scaling gets.
    let (bursts, per, seg) = (4000, 8, 8000);
    let rounds: Vec<(f64, f64)> = (0..5)
        .map(|_| {
            let (took, got, acks) = warren::runtime::fuzzing::tcp_upload(bursts, per, seg);
            assert!(got >= (bursts * per * seg) as u64, "the service got every byte");
            (took.as_nanos() as f64 / (got as f64 / seg as f64), acks as f64 / bursts as f64)
        })
        .collect();
    let ns = median(rounds.iter().map(|r| r.0).collect());
    let acks = median(rounds.iter().map(|r| r.1).collect());
    report(
        "tcp_upload",
        ns,
        &format!(
            "(8000-byte segments, {:.1} Gbit/s of payload; {acks:.2} ACK frames per burst of 8)",
            8000.0 * 8.0 / ns
        ),
    );
}

fn tcp_download() {
    let bytes = 256u64 << 20;
    let rounds: Vec<(f64, f64)> = (0..5)
        .map(|_| {
            let (took, got, frames) = warren::runtime::fuzzing::tcp_download(bytes);
            assert_eq!(got, bytes, "every byte arrived");
            (took.as_nanos() as f64 / (got as f64 / 65536.0), got as f64 / frames as f64)
        })
        .collect();
    let ns = median(rounds.iter().map(|r| r.0).collect());
    let per_frame = median(rounds.iter().map(|r| r.1).collect());
    report(
        "tcp_download",
        ns,
        &format!("(per 64 KiB: {:.1} Gbit/s of payload; {:.0} bytes per frame, GSO)", 65536.0 * 8.0 / ns, per_frame),
    );
}

fn main() {
    // As the warren binary does: big buffers come from mmap (lazily zeroed pages), not memset.
    warren::sys::tune_allocator();
    warren::sys::raise_nofile_limit();
    // `cargo bench` passes --bench; a filter argument picks cases by name.
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let want = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    if want("udp_nat") {
        udp_nat(1);
        udp_nat(1000);
        udp_nat_burst();
    }
    if want("switch_forward") {
        switch_forward();
    }
    if want("tcp_flow_setup") {
        tcp_flow_setup();
    }
    if want("tcp_upload") {
        tcp_upload();
    }
    if want("tcp_download") {
        tcp_download();
    }
}
