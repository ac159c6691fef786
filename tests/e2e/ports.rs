//! Published ports: real source addresses (the gateway for loopback clients), the API.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use crate::util::*;

const MIB: u64 = 1 << 20;
const SHORT: Duration = Duration::from_secs(30);
const LONG: Duration = Duration::from_secs(300);

fn remote() -> Option<IpAddr> {
    Some(REMOTE_IP.parse().unwrap())
}

fn serve() -> Vec<&'static str> {
    let tool: &'static str = Box::leak(nettool().to_str().unwrap().to_string().into_boxed_str());
    vec![tool, "serve", "80", "81", "82"]
}

#[test]
fn tcp_forward_keeps_remote_sources_and_shows_loopback_clients_as_the_gateway() {
    require_isolation();
    assert!(has_remote_ip());
    let port = free_port("0.0.0.0");
    let spec = format!("{port}:80");
    let r = Running::start(&["-p", &spec, "-p", "127.0.0.1::80"], &serve());
    // A client on a non-loopback address: the container sees exactly that address and port.
    let (local, seen) = tcp_peer_seen(SocketAddr::new(remote().unwrap(), port), remote());
    assert_eq!(seen, local.to_string(), "the container's getpeername() is the real client");
    // A loopback client has no address worth keeping: it appears as the gateway with its port.
    let (local, seen) = tcp_peer_seen(SocketAddr::from(([127, 0, 0, 1], port)), None);
    assert_eq!(seen, format!("10.0.2.2:{}", local.port()), "a loopback client seen as the gateway");
    // warren hardened itself after set-up: a seccomp filter is loaded.
    let pid = r.guard.0.as_ref().unwrap().id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.lines().any(|l| l == "Seccomp:\t2"), "warren runs under its seccomp allowlist");
    // The auto-picked port is reported on stdout and works.
    let auto = r.published("tcp", 0);
    assert_eq!(auto.ip(), IpAddr::from([127, 0, 0, 1]));
    assert_ne!(auto.port(), 0);
    let (local, seen) = tcp_peer_seen(auto, None);
    assert_eq!(seen, format!("10.0.2.2:{}", local.port()));
}

#[test]
fn clients_on_another_host_are_seen_with_their_own_address() {
    require_isolation();
    // The remote host is a separate network namespace behind a veth: its packets arrive on
    // warren's listener from 10.201.0.2, and the container must see exactly that.
    let tcp = free_port("0.0.0.0");
    let udp = free_port("0.0.0.0");
    let tool = nettool();
    let (t, u) = (format!("{tcp}:80"), format!("{udp}:53/udp"));
    let _a = Running::start(&["-p", &t], &serve());
    let _b = Running::start(&["-p", &u], &[tool.to_str().unwrap(), "udp-serve", "53"]);
    let f = remote_nettool(&["ask", VETH_LOCAL, &tcp.to_string(), "peer"]);
    assert_eq!(f.code, 0, "{} {}", f.stdout, f.stderr);
    let line = f.stdout.trim();
    let local = line.split_whitespace().next().unwrap().trim_start_matches("local=");
    assert!(local.starts_with(&format!("{VETH_REMOTE}:")), "{line}");
    assert_eq!(
        line,
        format!("local={local} reply={local}"),
        "TCP: the container sees the remote host's address and port"
    );
    let f = remote_nettool(&["udp-ask", VETH_LOCAL, &udp.to_string(), "hi"]);
    assert_eq!(f.code, 0, "{} {}", f.stdout, f.stderr);
    let line = f.stdout.trim();
    let local = line.split_whitespace().next().unwrap().trim_start_matches("local=");
    assert!(local.starts_with(&format!("{VETH_REMOTE}:")), "{line}");
    assert_eq!(line, format!("local={local} reply=from {local} hi"), "UDP: same");
}

#[test]
fn udp_forward_keeps_sources_per_client() {
    require_isolation();
    let port = free_port("0.0.0.0");
    let spec = format!("{port}:53/udp");
    let tool = nettool();
    let _r = Running::start(&["-p", &spec], &[tool.to_str().unwrap(), "udp-serve", "53"]);
    let ask = |bind: &str, payload: &[u8]| {
        let s = UdpSocket::bind((bind, 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let to: SocketAddr = (bind.parse::<IpAddr>().unwrap(), port).into();
        let mut buf = vec![0u8; 70000];
        for _ in 0..3 {
            s.send_to(payload, to).unwrap();
            if let Ok(n) = s.recv(&mut buf) {
                return (s.local_addr().unwrap(), String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        panic!("no UDP answer via {to}");
    };
    let (local, got) = ask(REMOTE_IP, b"hello");
    assert_eq!(got, format!("from {local} hello"), "remote UDP client keeps its address and port");
    let (local2, got2) = ask(REMOTE_IP, b"again");
    assert_ne!(local, local2);
    assert_eq!(got2, format!("from {local2} again"), "each client is its own flow");
    let (local, got) = ask("127.0.0.1", b"loop");
    assert_eq!(got, format!("from 10.0.2.2:{} loop", local.port()), "loopback UDP clients appear as the gateway");
    let big = vec![b'x'; 60000];
    let (local, got) = ask(REMOTE_IP, &big);
    assert_eq!(got, format!("from {local} {}", "x".repeat(60000)), "a 60000-byte datagram both ways");
}

/// Has the container behind a published UDP port answer "go" from `client` with a burst of
/// 6000 datagrams and checks them; returns warren's `udp_batched` counter afterwards.
fn blast_back(r: &Running, client: &str, port: u16) -> u64 {
    let sock = UdpSocket::bind((client, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let to: SocketAddr = (client.parse::<IpAddr>().unwrap(), port).into();
    // Echoed first, so the container's kernel has resolved the gateway before the burst.
    let mut buf = [0u8; 16];
    let echoed = (0..3).any(|_| {
        sock.send_to(b"hi", to).unwrap();
        matches!(sock.recv(&mut buf), Ok(2))
    });
    assert!(echoed, "no echo via {to}");
    let rx = Blast::receive(sock.try_clone().unwrap(), 6000, 1400);
    sock.send_to(b"go", to).unwrap();
    rx.check(&format!("from the container to {client}"), || r.stats().to_string());
    r.stats()["udp_batched"].as_u64().unwrap()
}

#[test]
fn bursts_of_replies_through_a_published_udp_port_arrive_whole_and_in_order() {
    require_isolation();
    // The container's datagrams to a client of a published port leave the listener in
    // segmented batches (UDP GSO with the client's address): each must arrive as sent.
    let tool = nettool();
    let port = free_port("0.0.0.0");
    let spec = format!("{port}:7000/udp");
    let r = Running::start(&["-p", &spec], &[tool.to_str().unwrap(), "udp-blast-back", "7000", "6000", "1400"]);
    let remote = blast_back(&r, REMOTE_IP, port);
    assert!(remote > 0, "replies to a remote client went out in batches");
    let lo = blast_back(&r, "127.0.0.1", port);
    assert!(lo > remote, "replies to a loopback client went out in batches ({remote} -> {lo})");
    let port6 = free_port("::");
    let spec6 = format!("[::]:{port6}:7000/udp");
    let r6 = Running::start(&["-p", &spec6], &[tool.to_str().unwrap(), "udp-blast-back", "[::]:7000", "6000", "1400"]);
    assert!(blast_back(&r6, REMOTE_IP6, port6) > 0, "replies to an IPv6 client went out in batches");
}

#[test]
fn bursts_of_datagrams_through_a_published_udp_port_arrive_whole_and_in_order() {
    require_isolation();
    // A client's datagrams read back to back from the listener go to the container several
    // to a frame (UDP segmentation offload): the container checks each as it was sent.
    let tool = nettool();
    let port = free_port("0.0.0.0");
    let spec = format!("{port}:7000/udp");
    let (count, size) = (6000u32, 1400usize);
    let r = Running::start(
        &["-p", &spec],
        &[tool.to_str().unwrap(), "udp-blast-check", "7000", &count.to_string(), &size.to_string()],
    );
    let mut before = 0;
    for client in [REMOTE_IP, "127.0.0.1"] {
        let sock = UdpSocket::bind((client, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        sock.connect((client, port)).unwrap();
        let mut buf = [0u8; 256];
        let echoed = (0..3).any(|_| {
            sock.send(b"hi").unwrap();
            matches!(sock.recv(&mut buf), Ok(2))
        });
        assert!(echoed, "no echo via {client}");
        let host_before = udp_drops_at_port(port);
        let mut d = Vec::new();
        for i in 0..count {
            blast_datagram(i, size, &mut d);
            sock.send(&d).unwrap();
            if i % 32 == 31 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let n = sock.recv(&mut buf).expect("the container's report");
        let report = String::from_utf8_lossy(&buf[..n]).into_owned();
        check_blast_report(&format!("from {client}"), &report, count, port, host_before, || r.stats().to_string());
        let now = r.stats()["udp_coalesced"].as_u64().unwrap();
        assert!(now > before, "from {client}: datagrams went to the container several to a frame ({before} -> {now})");
        before = now;
    }
}

#[test]
fn ipv6_loopback_listener_and_a_range() {
    require_isolation();
    let p6 = free_port("::1");
    let base = loop {
        let b = free_port("127.0.0.1");
        if (1..=2).all(|i| std::net::TcpListener::bind(("127.0.0.1", b + i)).is_ok()) {
            break b;
        }
    };
    let v6 = format!("[::1]:{p6}:80");
    let range = format!("127.0.0.1:{}-{}:80-82", base, base + 2);
    let _r = Running::start(&["-p", &v6, "-p", &range], &serve());
    // The service listens on IPv4 only: the IPv6 default is refused inside and retried on IPv4.
    let (local, seen) = tcp_peer_seen(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, p6)), None);
    assert_eq!(seen, format!("10.0.2.2:{}", local.port()), "IPv6 loopback listener reaches the container");
    for i in 0..3u16 {
        let out = tcp_request(SocketAddr::from(([127, 0, 0, 1], base + i)), None, &format!("get 1000 {i}\n")).unwrap();
        assert_eq!(out.len(), 1000, "range port {}", base + i);
    }
}

pub fn get_and_check(to: SocketAddr, from: Option<IpAddr>, n: u64, seed: u64) {
    let out = tcp_request(to, from, &format!("get {n} {seed}\n")).unwrap();
    assert_eq!(out.len() as u64, n);
    assert_eq!(hex(&<sha2::Sha256 as sha2::Digest>::digest(&out)), stream_hash(seed, n));
}

pub fn put_and_check(to: SocketAddr, from: Option<IpAddr>, n: u64, seed: u64) {
    let s = socket2::Socket::new(socket2::Domain::for_address(to), socket2::Type::STREAM, None).unwrap();
    if let Some(ip) = from {
        s.bind(&SocketAddr::new(ip, 0).into()).unwrap();
    }
    s.connect_timeout(&to.into(), SHORT).unwrap();
    let mut s: std::net::TcpStream = s.into();
    s.write_all(b"put\n").unwrap();
    let mut st = Stream::new(seed);
    let mut buf = vec![0u8; 1 << 16];
    let mut left = n;
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        st.fill(&mut buf[..k]);
        s.write_all(&buf[..k]).unwrap();
        left -= k as u64;
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert_eq!(reply.trim(), format!("{n} {}", stream_hash(seed, n)), "server-side count and hash");
}

#[test]
fn one_gib_each_way_from_loopback_and_remote_clients() {
    require_isolation();
    let port = free_port("0.0.0.0");
    let spec = format!("{port}:80");
    let _r = Running::start(&["-p", &spec], &serve());
    let gib = 1024 * MIB;
    let lo = SocketAddr::from(([127, 0, 0, 1], port));
    let rem = SocketAddr::new(remote().unwrap(), port);
    get_and_check(lo, None, gib, 11);
    put_and_check(lo, None, gib, 12);
    get_and_check(rem, remote(), gib, 13);
    put_and_check(rem, remote(), gib, 14);
}

#[test]
fn mtu_1500_moves_64_kib_segments_both_ways_intact() {
    require_isolation();
    assert!(has_remote_ip());
    // At MTU 1500 the container's kernel hands over TCP in GSO frames of up to 64 KiB (the TAP
    // offers TSO) and warren sends it 64 KiB segments marked with its MSS: per frame, both ways,
    // far more than one MTU moves. Outbound flows in both families and a published port.
    let port = free_port("0.0.0.0");
    let spec = format!("{port}:80");
    let r = Running::start(&["--mtu", "1500", "-p", &spec], &serve());
    let n = 64 * MIB;
    let to = SocketAddr::new(remote().unwrap(), port);
    get_and_check(to, remote(), n, 11);
    put_and_check(to, remote(), n, 12);
    for ip in [REMOTE_IP, REMOTE_IP6] {
        let srv = TcpServer::download(ip);
        let p = srv.addr.port().to_string();
        let got = r.nettool(&["download", ip, &p, &n.to_string(), "13"], LONG);
        assert_eq!(got, format!("ok {n} {}", stream_hash(13, n)), "download from {ip}");
        let sink = TcpServer::upload_sink(ip);
        let p = sink.addr.port().to_string();
        let got = r.nettool(&["upload", ip, &p, &n.to_string(), "14"], LONG);
        assert_eq!(got, format!("{n} {}", stream_hash(14, n)), "upload to {ip}");
    }
    let st = r.stats();
    let per_frame = |bytes: &str, frames: &str| st[bytes].as_u64().unwrap() / st[frames].as_u64().unwrap().max(1);
    assert!(per_frame("bytes_in", "frames_in") > 3000, "GSO frames from the container: {st}");
    assert!(per_frame("bytes_out", "frames_out") > 3000, "GSO frames to the container: {st}");
    assert_eq!(st["drops"]["malformed"], 0, "{st}");
}

/// CPU ticks (1/100 s) the process has used so far.
fn cpu_ticks(pid: u32) -> u64 {
    // utime and stime: fields 14 and 15.
    let f = stat_fields(pid).expect("the process runs");
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// A TCP echo server on the remote address.
fn echo_server() -> TcpServer {
    TcpServer::start(REMOTE_IP, |mut c| {
        let mut b = [0u8; 64];
        while let Ok(k) = c.read(&mut b) {
            if k == 0 || c.write_all(&b[..k]).is_err() {
                return;
            }
        }
    })
}

#[test]
fn busy_polling_catches_round_trips_and_never_spins_idle() {
    require_isolation();
    // Request/response traffic opens the adaptive window: warren polls after forwarding a
    // request and the reply arrives while it does (counted as hits). `--busy-poll 0` never
    // polls. Either way an idle warren sleeps: no CPU while nothing moves.
    let echo = echo_server();
    let p = echo.addr.port().to_string();
    // The longest window: round trips of a loaded machine fit in it.
    for window in ["1000", "0"] {
        let r = Running::start(&["--busy-poll", window], &serve());
        let got = r.nettool(&["rr", REMOTE_IP, &p, "2000"], SHORT);
        assert_eq!(got.split_whitespace().count(), 2, "rr printed p50 p99: {got}");
        let st = r.stats();
        let (polls, hits) = (st["busy_polls"].as_u64().unwrap(), st["busy_poll_hits"].as_u64().unwrap());
        let backoffs = st["busy_poll_backoffs"].as_u64().unwrap();
        if window == "0" {
            assert_eq!((polls, hits, backoffs), (0, 0, 0), "--busy-poll 0 polled");
        } else {
            // On a machine busy with other tests warren may have stood aside all along
            // (see the next test); then it backed off at least once.
            assert!(
                (hits > 0 || backoffs > 0) && hits <= polls,
                "2000 round trips: {polls} idle periods polled, {hits} caught work, {backoffs} back-offs"
            );
        }
        // The window closes after the traffic: a second of idleness costs (almost) no CPU.
        // Polling without end would take about 100 ticks per second and thread.
        std::thread::sleep(Duration::from_millis(300));
        let pid = r.guard.0.as_ref().expect("running").id();
        let t0 = cpu_ticks(pid);
        std::thread::sleep(Duration::from_secs(1));
        let used = cpu_ticks(pid) - t0;
        assert!(used <= 5, "--busy-poll {window}: an idle warren used {used} CPU ticks in one second");
    }
    let f = warren_run(&["--busy-poll", "1001"], &["true"], SHORT);
    assert_eq!(f.code, 2, "{}", f.stderr);
    assert!(f.stderr.contains("1001") && f.stderr.contains("0..=1000"), "{}", f.stderr);
}

#[test]
fn busy_polling_stands_aside_while_other_threads_want_the_cpus() {
    require_isolation();
    // One spinning process per CPU (in the idle scheduling class, so that other tests
    // hardly notice them) keeps more threads runnable than there are CPUs. warren counts
    // runnable threads before it would poll and stands aside instead: round trips that
    // would open the window (previous test) are not polled at all, and `warren stats`
    // counts the back-offs. Polling is on by default: no option needed.
    let echo = echo_server();
    let p = echo.addr.port().to_string();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let tool = nettool();
    let spinners: Vec<Guard> = (0..cpus)
        .map(|_| {
            let mut cmd = std::process::Command::new("chrt");
            cmd.args(["--idle", "0"]).arg(&tool).args(["spin", "60"]);
            cmd.stdout(std::process::Stdio::null());
            Guard(Some(cmd.spawn().expect("chrt --idle 0 nettool spin")))
        })
        .collect();
    let r = Running::start(&[], &serve());
    let got = r.nettool(&["rr", REMOTE_IP, &p, "500"], SHORT);
    assert_eq!(got.split_whitespace().count(), 2, "rr printed p50 p99: {got}");
    let st = r.stats();
    for g in &spinners {
        let pid = g.0.as_ref().unwrap().id();
        assert_eq!(stat_fields(pid).expect("a spinner ran all along")[0], "R", "spinner {pid} was runnable");
    }
    drop(spinners);
    let (polls, backoffs) = (st["busy_polls"].as_u64().unwrap(), st["busy_poll_backoffs"].as_u64().unwrap());
    assert!(backoffs > 0 && polls == 0, "500 round trips on a crowded machine: {polls} polled, {backoffs} back-offs");
}

#[test]
fn bulk_data_is_acked_every_second_segment_small_segments_at_once() {
    require_isolation();
    // Past a flow's first segments, warren delays the ACK of bulk data from the container until
    // a second segment arrives (or 1 ms passes): about one ACK frame per two data frames. A
    // small segment (a request, the tail of a write) is still acknowledged at once, before
    // any reply: a sender holding small writes back for that ACK (Nagle) never waits.
    let r = Running::start(&[], &serve());
    let frames = |st: &serde_json::Value| (st["frames_in"].as_u64().unwrap(), st["frames_out"].as_u64().unwrap());
    let n = 64 * MIB;
    let sink = TcpServer::upload_sink(REMOTE_IP);
    let p = sink.addr.port().to_string();
    let (in0, out0) = frames(&r.stats());
    let got = r.nettool(&["upload", REMOTE_IP, &p, &n.to_string(), "21"], LONG);
    assert_eq!(got, format!("{n} {}", stream_hash(21, n)), "upload");
    let (in1, out1) = frames(&r.stats());
    let (data, acks) = (in1 - in0, out1 - out0);
    // Every data frame acknowledged would make acks >= data; window updates after a full
    // buffer drains add a few.
    assert!(acks * 10 <= data * 8, "ACK frames {acks} for {data} frames of bulk data");

    let echo = TcpServer::start(REMOTE_IP, |mut c| {
        let mut b = [0u8; 64];
        while let Ok(k) = c.read(&mut b) {
            if k == 0 || c.write_all(&b[..k]).is_err() {
                return;
            }
        }
    });
    let p = echo.addr.port().to_string();
    let (in0, out0) = frames(&r.stats());
    let got = r.nettool(&["rr", REMOTE_IP, &p, "300"], SHORT);
    assert_eq!(got.split_whitespace().count(), 2, "rr printed p50 p99: {got}");
    let (in1, out1) = frames(&r.stats());
    // Each one-byte request gets its own ACK and then the reply: two frames per round trip.
    assert!(
        out1 - out0 >= 2 * 300,
        "{} frames to the container for 300 round trips ({} from it)",
        out1 - out0,
        in1 - in0
    );
}

#[test]
fn short_connections_reuse_stacks_and_stay_intact() {
    require_isolation();
    // Short flows leave their smoltcp stack (interface, socket, buffers) for the next one;
    // whatever a reused stack held before must never reach the next connection. Sizes cross
    // the reuse limit (64 KiB both ways) and buffer page boundaries; uploads and downloads
    // alternate so each stack serves both directions in turn.
    let port = free_port("0.0.0.0");
    let spec = format!("{port}:80");
    let r = Running::start(&["-p", &spec], &serve());
    let to = SocketAddr::new(remote().unwrap(), port);
    for i in 0..120u64 {
        let n = [1, 4095, 4097, 20_000, 65_000, 70_000][i as usize % 6] + i;
        if i % 2 == 0 {
            get_and_check(to, remote(), n, 1000 + i);
        } else {
            put_and_check(to, remote(), n, 1000 + i);
        }
    }
    let srv = TcpServer::download(REMOTE_IP);
    let p = srv.addr.port().to_string();
    for i in 0..5u64 {
        let n = (3000 * i + 1).to_string();
        let got = r.nettool(&["download", REMOTE_IP, &p, &n, &i.to_string()], SHORT);
        assert_eq!(got, format!("ok {n} {}", stream_hash(i, 3000 * i + 1)), "outbound flow {i}");
    }
    let st = r.stats();
    assert!(st["tcp_stacks_reused"].as_u64().unwrap() >= 60, "short flows reused stacks: {st}");
}

#[test]
fn two_hundred_concurrent_forwarded_connections() {
    require_isolation();
    let port = free_port("0.0.0.0");
    let spec = format!("{port}:80");
    let _r = Running::start(&["-p", &spec], &serve());
    let handles: Vec<_> = (0..200u64)
        .map(|i| {
            // Half from loopback, half from the remote address.
            let (to, from) = if i % 2 == 0 {
                (SocketAddr::from(([127, 0, 0, 1], port)), None)
            } else {
                (SocketAddr::new(remote().unwrap(), port), remote())
            };
            std::thread::spawn(move || get_and_check(to, from, 512 * 1024, 100 + i))
        })
        .collect();
    for h in handles {
        h.join().expect("a forwarded connection failed");
    }
}

#[test]
fn a_spec_without_an_address_publishes_on_ipv4_and_ipv6() {
    require_isolation();
    let (tp, up) = (free_port("0.0.0.0"), free_port("0.0.0.0"));
    // IPv4-only services in the container (0.0.0.0): IPv6 clients reach the TCP one through
    // the fallback, the UDP one because the [::] listener leads to the container's IPv4.
    let t = nettool();
    let script = format!("{t} udp-serve 53 & exec {t} serve 80", t = t.display());
    let (tcp, udp) = (format!("{tp}:80"), format!("{up}:53/udp"));
    let r = Running::start(&["-p", &tcp, "-p", &udp, "-p", "80"], &["sh", "-c", &script]);
    // Both servers say "serving"; start returned after the first.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while r.stdout.lock().unwrap().iter().filter(|l| *l == "serving").count() < 2 {
        assert!(std::time::Instant::now() < deadline, "both servers start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let v6 = |port| SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    get_and_check(v6(tp), None, 8 * MIB, 61);
    get_and_check(SocketAddr::from(([127, 0, 0, 1], tp)), None, 8 * MIB, 62);
    let ask = |host: &str| {
        let mut c = std::process::Command::new(nettool());
        c.args(["udp-ask", host, &up.to_string(), "hi"]);
        run_with_deadline(c, SHORT)
    };
    for host in ["::1", "127.0.0.1"] {
        let f = ask(host);
        assert_eq!(f.code, 0, "{host}: {} {}", f.stdout, f.stderr);
        assert!(f.stdout.contains("reply=from 10.0.2.2:") && f.stdout.trim().ends_with(" hi"), "{}", f.stdout);
    }
    // A remote IPv6 client too.
    let f = remote_nettool(&["udp-ask", VETH_LOCAL6, &up.to_string(), "hi"]);
    assert_eq!(f.code, 0, "{} {}", f.stdout, f.stderr);
    // A picked port is one port for both families, and both are reported.
    let (a, b) = (r.published("tcp", 0), r.published("tcp", 1));
    assert_eq!((a.ip().to_string(), b.ip().to_string(), a.port()), ("0.0.0.0".into(), "::".into(), b.port()));
    get_and_check(v6(b.port()), None, MIB, 63);
    let ls = r.port(&["ls"]).stdout;
    assert_eq!(ls.lines().count(), 6, "{ls}");
    assert!(ls.contains(&format!("udp\t[::]:{up}\t10.0.2.100:53")), "{ls}");
}

#[test]
fn api_add_list_remove_while_traffic_flows() {
    require_isolation();
    let port = free_port("0.0.0.0");
    let spec = format!("{port}:80");
    let r = Arc::new(Running::start(&["-p", &spec], &serve()));
    let rem = SocketAddr::new(remote().unwrap(), port);
    let bulk = std::thread::spawn(move || get_and_check(rem, remote(), 512 * MIB, 21));
    let extra = free_port("0.0.0.0");
    // Without a host address a spec publishes on 0.0.0.0 and [::] (ids 3 and 4).
    let f = r.port(&["add", &format!("{extra}:81"), "127.0.0.1::82"]);
    assert_eq!(f.code, 0, "{}", f.stderr);
    let lines: Vec<&str> = f.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", f.stdout);
    assert!(lines[0].starts_with(&format!("3\ttcp\t0.0.0.0:{extra}\t10.0.2.100:81")), "{}", f.stdout);
    assert!(lines[1].starts_with(&format!("4\ttcp\t[::]:{extra}\t")), "{}", f.stdout);
    get_and_check(SocketAddr::new(remote().unwrap(), extra), remote(), MIB, 22);
    let ls = r.port(&["ls"]);
    assert_eq!(ls.stdout.lines().count(), 5, "{}", ls.stdout);
    let json = r.port(&["ls", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 5);
    // A failing add (second spec in use) changes nothing.
    let f = r.port(&["add", "127.0.0.1::83", &format!("{extra}:84")]);
    assert_eq!(f.code, 1);
    assert!(f.stderr.contains(&format!("port {extra} is already in use")), "{}", f.stderr);
    assert_eq!(r.port(&["ls"]).stdout, ls.stdout, "a failed add leaves the forwards untouched");
    let f = r.port(&["rm", "3"]);
    assert_eq!(f.code, 0, "{}", f.stderr);
    let refused = tcp_request(SocketAddr::new(remote().unwrap(), extra), remote(), "peer\n");
    assert_eq!(refused.unwrap_err().kind(), std::io::ErrorKind::ConnectionRefused);
    let f = r.port(&["rm", "99"]);
    assert_eq!(f.code, 1);
    assert!(f.stderr.contains("no published port with id 99"), "{}", f.stderr);
    bulk.join().expect("the transfer running during API calls failed");
}

#[test]
fn slirp4netns_api_on_the_same_socket() {
    require_isolation();
    let r = Running::start(&[], &serve());
    let ask = |req: &str| {
        let mut s = std::os::unix::net::UnixStream::connect(&r.api).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let port = free_port("127.0.0.1");
    let add = format!(
        r#"{{"execute":"add_hostfwd","arguments":{{"proto":"tcp","host_addr":"127.0.0.1","host_port":{port},"guest_addr":"","guest_port":80}}}}"#
    );
    assert_eq!(ask(&add), r#"{"return":{"id":1}}"#);
    let entry = format!(
        r#"{{"id":1,"proto":"tcp","host_addr":"127.0.0.1","host_port":{port},"guest_addr":"10.0.2.100","guest_port":80}}"#
    );
    assert_eq!(
        ask(r#"{"execute":"list_hostfwd"}"#),
        format!(r#"{{"entries":[{entry}],"return":{{"entries":[{entry}]}}}}"#),
        "both the real and the documented shape"
    );
    get_and_check(SocketAddr::from(([127, 0, 0, 1], port)), None, MIB, 5);
    assert_eq!(
        ask(r#"{"execute":"add_hostfwd","arguments":{"host_port":1,"guest_port":1}}"#),
        r#"{"error":{"desc":"bad request: add_hostfwd: bad arguments.proto"}}"#
    );
    assert_eq!(ask("{nope"), r#"{"error":{"desc":"bad request: cannot parse JSON"}}"#);
    assert_eq!(ask(r#"{"execute":"remove_hostfwd","arguments":{"id":1}}"#), r#"{"return":{}}"#);
    assert_eq!(ask(r#"{"execute":"list_hostfwd"}"#), r#"{"entries":[],"return":{"entries":[]}}"#);
    let meta = std::fs::metadata(&r.api).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777, 0o600);
}

#[test]
fn publish_errors_start_nothing() {
    require_isolation();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cases: Vec<(String, String)> = vec![
        (format!("127.0.0.1:{port}:80"), format!("port {port} is already in use on the host")),
        ("8080:http".into(), "invalid port spec \"8080:http\": container port \"http\" is not a number".into()),
        ("192.0.2.1:8080:80".into(), "address 192.0.2.1 is not on this host".into()),
        ("9000-9001:80".into(), "differ in length".into()),
    ];
    for (spec, msg) in cases {
        // The in-use spec comes second: the first one must not stay bound (nothing half-applied).
        let first = free_port("127.0.0.1");
        let f = warren_run(&["-p", &format!("127.0.0.1:{first}:80"), "-p", &spec], &["echo", "started"], SHORT);
        assert_eq!(f.code, 125, "{spec}: {}", f.stderr);
        assert!(f.stderr.contains(&msg), "{spec}: {}", f.stderr);
        assert_eq!(f.stderr.lines().count(), 1, "{}", f.stderr);
        assert!(!f.stdout.contains("started"), "the command must not run");
        std::net::TcpListener::bind(("127.0.0.1", first)).expect("first forward released");
    }
    if nix::unistd::getuid().as_raw() != 0 {
        let start: u16 =
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap().trim().parse().unwrap();
        if start > 1 {
            let low = start - 1;
            let f = warren_run(&["-p", &format!("127.0.0.1:{low}:80")], &["true"], SHORT);
            assert_eq!(f.code, 125);
            assert!(f.stderr.contains(&format!("port {low} is privileged")), "{}", f.stderr);
        }
    }
}

#[test]
fn same_port_again_after_a_restart() {
    require_isolation();
    let port = free_port("127.0.0.1");
    let spec = format!("127.0.0.1:{port}:80");
    for round in 0..2 {
        let r = Running::start(&["-p", &spec], &serve());
        get_and_check(SocketAddr::from(([127, 0, 0, 1], port)), None, 64 * 1024, round);
        drop(r);
    }
}

#[test]
fn a_published_port_is_free_again_as_soon_as_the_container_exits() {
    require_isolation();
    // A container serves one client and exits; the client keeps its connection open, so
    // warren goes on carrying that flow (up to 10 s) after the container is gone. The port
    // must be free for the next container meanwhile (podman#23737: a restart that races the
    // old forwarder's listener gets "address already in use").
    let port = free_port("127.0.0.1");
    let spec = format!("127.0.0.1:{port}:80");
    let py = "import socket\ns = socket.socket()\ns.bind(('0.0.0.0', 80))\ns.listen()\nprint('serving', flush=True)\n\
              c, _ = s.accept()\nc.sendall(b'hi\\n')\n";
    let first = Running::start(&["-p", &spec], &["python3", "-c", py]);
    let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut client, &mut got).unwrap();
    assert_eq!(got, b"hi\n", "the container's answer, then its close");
    // The client's side stays open: the first warren is draining. A second one takes the port.
    let mut first = first;
    let pid = first.guard.0.as_ref().unwrap().id();
    let mut tries = Vec::new();
    loop {
        let f = warren_run(&["-p", &spec], &["echo", "started"], SHORT);
        let first_alive = first.guard.0.as_mut().unwrap().try_wait().unwrap().is_none();
        tries.push((f.code, f.stderr.lines().last().unwrap_or_default().to_string(), first_alive));
        if f.code == 0 {
            assert_eq!(f.stdout, "started\n");
            assert!(first_alive, "the first warren ({pid}) still carries the open flow: {tries:?}");
            break;
        }
        assert!(first_alive && tries.len() < 200, "the port stayed taken while the first warren drained: {tries:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("took the port on try {}", tries.len());
    drop(client);
}

#[test]
fn stats_and_flows_of_a_running_instance() {
    require_isolation();
    let port = free_port("0.0.0.0");
    let spec = format!("{port}:80");
    let r = Arc::new(Running::start(&["-p", &spec], &serve()));
    get_and_check(SocketAddr::new(remote().unwrap(), port), remote(), 4 * MIB, 1);
    // A connection held open while we look: the server inside streams 1 GiB slowly read.
    let to = SocketAddr::new(remote().unwrap(), port);
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::new(remote().unwrap(), 0).into()).unwrap();
    s.connect_timeout(&to.into(), SHORT).unwrap();
    let mut held: std::net::TcpStream = s.into();
    held.write_all(b"get 1073741824 2\n").unwrap();
    let mut buf = [0u8; 4096];
    held.read_exact(&mut buf).unwrap();
    let local = held.local_addr().unwrap();
    let mut cmd = std::process::Command::new(warren());
    cmd.args(["flows", "--json", "--api-socket"]).arg(&r.api);
    let f = run_with_deadline(cmd, SHORT);
    assert_eq!(f.code, 0, "{}", f.stderr);
    let v: serde_json::Value = serde_json::from_str(&f.stdout).unwrap();
    let flows = v["flows"].as_array().unwrap();
    let mine = flows.iter().find(|fl| fl["peer"] == local.to_string()).unwrap_or_else(|| panic!("{flows:?}"));
    assert_eq!((mine["proto"].as_str(), mine["container"].as_str()), (Some("tcp"), Some("10.0.2.100:80")));
    assert_eq!(mine["host"], local.to_string(), "the host socket's peer is the real client");
    assert!(mine["bytes_in"].as_u64().unwrap() >= 17, "the request line went in");
    drop(held);
    let mut cmd = std::process::Command::new(warren());
    cmd.args(["stats", "--json", "--api-socket"]).arg(&r.api);
    let f = run_with_deadline(cmd, SHORT);
    assert_eq!(f.code, 0, "{}", f.stderr);
    let v: serde_json::Value = serde_json::from_str(&f.stdout).unwrap();
    let st = &v["stats"];
    assert!(st["inbound_tcp"].as_u64().unwrap() >= 2, "{st}");
    assert!(st["bytes_in"].as_u64().unwrap() >= 4 * MIB, "4 MiB came out of the container's TAP: {st}");
    assert!(st["tcp_bytes_out"].as_u64().unwrap() >= 4 * MIB, "and were relayed to the client: {st}");
    assert!(st["drops"].is_object());
    let mut cmd = std::process::Command::new(warren());
    cmd.args(["stats", "--api-socket"]).arg(&r.api);
    let f = run_with_deadline(cmd, SHORT);
    assert!(f.stdout.lines().any(|l| l.starts_with("frames_in\t")), "{}", f.stdout);
}

/// Polls `warren port ls` until `done` says its output is what is awaited (10 s at most).
fn port_ls_until(r: &Running, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ls = r.port(&["ls"]);
        assert_eq!(ls.code, 0, "{}", ls.stderr);
        if done(&ls.stdout) {
            return ls.stdout;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: port ls still says {:?}", ls.stdout);
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn auto_publishes_what_the_container_listens_on_while_it_listens() {
    require_isolation();
    let (p, p2, p3) = (free_port("0.0.0.0"), free_port("0.0.0.0"), free_port("0.0.0.0"));
    let dir = ScratchDir::new("auto");
    let stop = dir.join("stop");
    // Listens on p and p2 (all addresses) and on p3 (the container's loopback only) until
    // `stop` exists, then closes them all and stays.
    let script = format!(
        "{tool} serve {p} {p2} 127.0.0.1:{p3} & s=$!; while [ ! -e {stop} ]; do sleep 0.05; done; kill $s; \
         echo stopped; sleep 600",
        tool = nettool().display(),
        stop = stop.display()
    );
    let r = Running::start(&["-p", "auto"], &["sh", "-c", &script]);
    let row = |port: u16| format!("tcp\t0.0.0.0:{port}\t10.0.2.100:{port}");
    // Both ports on 0.0.0.0 and [::].
    let ls = port_ls_until(&r, "both ports published", |s| s.lines().count() >= 4);
    assert!(ls.contains(&row(p)) && ls.contains(&row(p2)), "{ls}");
    assert_eq!(ls.lines().count(), 4, "the loopback-only listener is not published: {ls}");
    // Both kinds of client, byte for byte; the remote one keeps its address.
    get_and_check(SocketAddr::from(([127, 0, 0, 1], p)), None, 8 * MIB, 31);
    get_and_check(SocketAddr::new(remote().unwrap(), p), remote(), 8 * MIB, 32);
    let (local, seen) = tcp_peer_seen(SocketAddr::new(remote().unwrap(), p2), remote());
    assert_eq!(seen, local.to_string());
    // Unpublished by the user: not published again while the container still listens.
    let id2 = ls.lines().find(|l| l.contains(&row(p2))).unwrap().split('\t').next().unwrap().to_string();
    assert_eq!(r.port(&["rm", &id2]).code, 0);
    std::thread::sleep(Duration::from_millis(2500));
    let ls = r.port(&["ls"]).stdout;
    assert!(ls.contains(&row(p)) && !ls.contains(&row(p2)), "a removed port stays removed: {ls}");
    // The container stops listening: the port goes, and connecting is refused.
    std::fs::write(&stop, b"").unwrap();
    port_ls_until(&r, "the closed port unpublished", str::is_empty);
    let refused = tcp_request(SocketAddr::from(([127, 0, 0, 1], p)), None, "peer\n");
    assert_eq!(refused.unwrap_err().kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(r.stdout.lock().unwrap().iter().any(|l| l == "stopped"));
}

#[test]
fn auto_udp_publishes_the_services_the_container_binds_not_its_client_sockets() {
    require_isolation();
    let (p, p2) = (free_service_port("0.0.0.0"), free_service_port("0.0.0.0"));
    let dir = ScratchDir::new("auto-udp");
    let stop = dir.join("stop");
    // A UDP service on p (all addresses) and a TCP one on the same port; a UDP service on the
    // container's loopback (p2); and a socket bound to an ephemeral port, as a client's is
    // (`udp-serve 0`). At `stop`, the services on p go; the others stay.
    let t = nettool();
    let script = format!(
        "{t} udp-serve {p} & u=$!; {t} serve {p} & s=$!; {t} udp-serve 127.0.0.1:{p2} & {t} udp-serve 0 & \
         while [ ! -e {stop} ]; do sleep 0.05; done; kill $u $s; echo stopped; sleep 600",
        t = t.display(),
        stop = stop.display()
    );
    let r = Running::start(&["-p", "auto/udp", "-p", "127.0.0.1:auto"], &["sh", "-c", &script]);
    let udp_row = format!("udp\t0.0.0.0:{p}\t10.0.2.100:{p}");
    let tcp_row = format!("tcp\t127.0.0.1:{p}\t10.0.2.100:{p}");
    // UDP on 0.0.0.0 and [::] (to the container's IPv4 address), TCP on 127.0.0.1 only.
    let udp6_row = format!("udp\t[::]:{p}\t10.0.2.100:{p}");
    let ls = port_ls_until(&r, "the UDP and TCP services published", |s| s.lines().count() >= 3);
    assert!(ls.contains(&udp_row) && ls.contains(&udp6_row) && ls.contains(&tcp_row), "{ls}");
    // Give a late scan the chance to add what it should not.
    std::thread::sleep(Duration::from_millis(1500));
    let ls2 = r.port(&["ls"]).stdout;
    assert_eq!((ls.lines().count(), ls2.lines().count()), (3, 3), "neither loopback nor ephemeral sockets: {ls2}");
    // Datagrams both ways, from a loopback client and from a remote one whose source is kept.
    let f = run_with_deadline(
        {
            let mut c = std::process::Command::new(nettool());
            c.args(["udp-ask", "127.0.0.1", &p.to_string(), "hi"]);
            c
        },
        SHORT,
    );
    assert_eq!(f.code, 0, "{} {}", f.stdout, f.stderr);
    assert!(f.stdout.trim().ends_with(" hi") && f.stdout.contains("reply=from "), "{}", f.stdout);
    let mut c = std::process::Command::new(nettool());
    c.args(["udp-ask", "::1", &p.to_string(), "hi"]);
    let f = run_with_deadline(c, SHORT);
    assert_eq!(f.code, 0, "over IPv6 too: {} {}", f.stdout, f.stderr);
    let f = remote_nettool(&["udp-ask", VETH_LOCAL, &p.to_string(), "hi"]);
    assert_eq!(f.code, 0, "{} {}", f.stdout, f.stderr);
    let line = f.stdout.trim();
    let local = line.split_whitespace().next().unwrap().trim_start_matches("local=");
    assert_eq!(line, format!("local={local} reply=from {local} hi"), "the remote client's source is kept");
    // The services close: both ports go.
    std::fs::write(&stop, b"").unwrap();
    port_ls_until(&r, "the closed services unpublished", str::is_empty);
    assert!(r.stdout.lock().unwrap().iter().any(|l| l == "stopped"));
}

#[test]
fn auto_reports_a_host_port_it_cannot_take_and_refuses_bad_specs() {
    require_isolation();
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let script = format!("{} serve {port} & sleep 2.5; kill $!", nettool().display());
    let f = warren_run(&["-p", "auto"], &["sh", "-c", &script], SHORT);
    assert_eq!(f.code, 0, "{}", f.stderr);
    let warn = format!("-p auto: cannot publish tcp 0.0.0.0:{port}: port {port} is already in use on the host");
    assert_eq!(f.stderr.matches(&warn).count(), 1, "reported once: {}", f.stderr);
    drop(taken);
    for (spec, msg) in [
        ("auto/sctp", "invalid port spec \"auto/sctp\": protocol \"sctp\": `auto` takes /tcp or /udp"),
        ("1.2.3:auto", "invalid port spec \"1.2.3:auto\": \"1.2.3\" is not an IPv4 address"),
    ] {
        let f = warren_run(&["-p", spec], &["echo", "started"], SHORT);
        assert_eq!(f.code, 125, "{spec}");
        assert!(f.stderr.contains(msg) && !f.stdout.contains("started"), "{spec}: {}", f.stderr);
    }
    // On a bridge network too, a bad spec is refused before the daemon is asked for anything.
    let f = warren_run(&["--network", "somenet", "-p", "auto/sctp"], &["echo", "started"], SHORT);
    assert_eq!(f.code, 125);
    assert!(f.stderr.contains("invalid port spec \"auto/sctp\""), "{}", f.stderr);
    let r = Running::start(&[], &serve());
    let f = r.port(&["add", "auto"]);
    assert_eq!(f.code, 1);
    assert!(f.stderr.contains("`auto` is only for `warren run -p` and `warren attach -p`"), "{}", f.stderr);
}

#[test]
fn a_container_reaches_its_own_published_port_through_a_host_address() {
    require_isolation();
    // Hairpin: the container connects to one of the host's addresses at the port published
    // to it; the flow leaves through the NAT and comes back in through the listener, byte
    // for byte, and the container sees the host address as the client (a non-loopback
    // address is kept).
    let p = free_port("0.0.0.0");
    let n = 4 * MIB;
    let script = format!(
        "{t} serve 80 & until {t} ask 127.0.0.1 80 peer >/dev/null 2>&1; do sleep 0.05; done; \
         {t} fetch {REMOTE_IP} {p} {n} 7 && {t} ask {REMOTE_IP} {p} peer",
        t = nettool().display()
    );
    let spec = format!("{p}:80");
    let f = warren_run(&["-p", &spec], &["sh", "-c", &script], SHORT);
    let lines: Vec<&str> = f.stdout.lines().filter(|l| *l != "serving").collect();
    assert_eq!(lines.len(), 2, "{} {}", f.stdout, f.stderr);
    assert_eq!(lines[0], format!("ok {n} {}", stream_hash(7, n)));
    let reply = lines[1].split("reply=").nth(1).unwrap_or_default();
    assert!(reply.starts_with(&format!("{REMOTE_IP}:")), "the container sees the host address: {}", lines[1]);
}

#[test]
fn to_host_leads_container_loopback_ports_to_the_host_loopback() {
    require_isolation();
    let down = TcpServer::download("127.0.0.1");
    let up = TcpServer::upload_sink("127.0.0.1");
    let closed = free_port("127.0.0.1");
    let (d, u) = (down.addr.port(), up.addr.port());
    let tool = nettool();
    let t = tool.display();
    // Both families of the container's loopback, both directions, byte for byte; a host port
    // nobody listens on; and the gateway, which -T does not open (host loopback stays denied).
    let script = format!(
        "{t} download 127.0.0.1 5700 {n} 41 && {t} download ::1 5700 {n2} 42 && {t} upload 127.0.0.1 5701 {n} 43 && \
         {{ {t} download 127.0.0.1 5702 10 1 || echo closed-refused; }} && \
         {{ {t} download 10.0.2.2 {d} 10 1 || echo gateway-refused; }}",
        n = 64 * MIB,
        n2 = MIB
    );
    let specs = [format!("5700:{d}"), format!("5701:{u}"), format!("5702:{closed}")];
    let f = warren_run(&["-T", &specs[0], "-T", &specs[1], "--to-host", &specs[2]], &["sh", "-c", &script], LONG);
    assert_eq!(f.code, 0, "{} {}", f.stdout, f.stderr);
    let lines: Vec<&str> = f.stdout.lines().filter(|l| !l.starts_with("FAIL")).collect();
    assert_eq!(
        lines,
        [
            format!("ok {} {}", 64 * MIB, stream_hash(41, 64 * MIB)).as_str(),
            &format!("ok {MIB} {}", stream_hash(42, MIB)),
            &format!("{} {}", 64 * MIB, stream_hash(43, 64 * MIB)),
            "closed-refused",
            "gateway-refused",
        ],
        "{}",
        f.stderr
    );
    assert_eq!(down.accepted.load(std::sync::atomic::Ordering::SeqCst), 2, "the gateway never reached the host");
    // Bad specs and places where -T means nothing are refused before anything starts.
    for (args, msg) in [
        (vec!["-T", "pg"], "invalid --to-host spec \"pg\": port \"pg\" is not a number 1..=65535"),
        (vec!["-T", "1000-1016"], "more than 16 ports in all"),
        (
            vec!["-T", "5432", "--network", "none"],
            "-T applies to a container's own network; it has no effect with --network none",
        ),
    ] {
        let f = warren_run(&args, &["echo", "started"], SHORT);
        assert_eq!(f.code, 125, "{args:?}");
        assert!(f.stderr.contains(msg) && !f.stdout.contains("started"), "{args:?}: {}", f.stderr);
    }
}

/// Pipes among warren's fds (the `-T` relay splices through pipes); stdio left out.
fn pipe_fds(pid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return 0 };
    dir.flatten()
        .filter(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()).is_some_and(|n| n > 2))
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("pipe:")))
        .count()
}

#[test]
fn to_host_splices_in_the_kernel_holds_no_pipe_for_quiet_connections_and_passes_resets() {
    require_isolation();
    // A host service that sends 4 MiB the container never reads, and one that only listens.
    let talker = TcpServer::start("127.0.0.1", |mut c| {
        let buf = vec![7u8; 1 << 20];
        for _ in 0..4 {
            if c.write_all(&buf).is_err() {
                return;
            }
        }
        let mut b = [0u8; 64];
        while c.read(&mut b).is_ok_and(|n| n > 0) {}
    });
    let quiet = TcpServer::start("127.0.0.1", |mut c| {
        let mut b = [0u8; 64];
        while c.read(&mut b).is_ok_and(|n| n > 0) {}
    });
    // And one that counts the connections that ended with a reset rather than a FIN.
    static RESETS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let resets = TcpServer::start("127.0.0.1", |mut c| {
        let mut b = [0u8; 64];
        loop {
            match c.read(&mut b) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    RESETS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    return;
                }
                Err(_) => return,
            }
        }
    });
    let t = nettool();
    let t = t.display();
    let script = format!(
        "echo serving; sleep 2; {t} hold 127.0.0.1 5900 2 60 & {t} hold 127.0.0.1 5901 3 60 & \
         {t} reset 127.0.0.1 5902; wait; echo done"
    );
    let specs = [
        format!("5900:{}", talker.addr.port()),
        format!("5901:{}", quiet.addr.port()),
        format!("5902:{}", resets.addr.port()),
    ];
    let r = Running::start(&["-T", &specs[0], "-T", &specs[1], "-T", &specs[2]], &["sh", "-c", &script]);
    let pid = r.guard.0.as_ref().unwrap().id();
    let before = pipe_fds(pid);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let held = |n: &str| r.stdout.lock().unwrap().iter().any(|l| l == n);
    while !(held("holding 2") && held("holding 3")) {
        assert!(std::time::Instant::now() < deadline, "connections not held: {:?}", r.stdout.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    // A reset from the container reaches the host as a reset (its relay, and the pipe
    // its byte made, are gone by then).
    while RESETS.load(std::sync::atomic::Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(RESETS.load(std::sync::atomic::Ordering::SeqCst), 1, "{:?}", r.stdout.lock().unwrap());
    // Each talking connection moves its bytes through one pipe (2 fds), its silent direction
    // and the quiet connections have none.
    while pipe_fds(pid) < before + 4 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pipe_fds(pid) as i64 - before as i64, 4, "pipes of warren (before the connections: {before})");
    assert_eq!(
        (
            talker.accepted.load(std::sync::atomic::Ordering::SeqCst),
            quiet.accepted.load(std::sync::atomic::Ordering::SeqCst)
        ),
        (2, 3)
    );
}

#[test]
fn to_host_udp_leads_container_loopback_datagrams_to_the_host_loopback() {
    require_isolation();
    // An echo on the host's 127.0.0.1 and ::1 (one port), and a server that tells whom it saw.
    let (v4, v6) = udp_loopback_pair();
    let echo_port = v4.local_addr().unwrap().port();
    let echo = |s: &UdpSocket, d: &[u8], from: SocketAddr| {
        let _ = s.send_to(d, from);
    };
    let (_e4, _e6) = (UdpServer::serve_socket(v4, echo), UdpServer::serve_socket(v6, echo));
    let who = UdpServer::serve("127.0.0.1", |s, d, from| {
        let mut r = format!("from {from} ").into_bytes();
        r.extend_from_slice(d);
        let _ = s.send_to(&r, from);
    });
    let nobody = free_port("127.0.0.1");
    let t = nettool();
    let t = t.display();
    // Datagrams of 0 to 65000 bytes both families, each checked byte for byte; the source
    // the host sees; and a host port nobody serves.
    let script = format!(
        "{t} udp-echo 127.0.0.1 5800 45 && {t} udp-echo ::1 5800 45 && {t} udp-ask 127.0.0.1 5801 hi && \
         {{ {t} udp-ask 127.0.0.1 5802 hi || echo no-reply; }}"
    );
    let specs = [format!("5800:{echo_port}"), format!("5801:{}", who.addr.port()), format!("5802:{nobody}")];
    let f = warren_run(&["-U", &specs[0], "-U", &specs[1], "--to-host-udp", &specs[2]], &["sh", "-c", &script], LONG);
    assert_eq!(f.code, 0, "{} {}", f.stdout, f.stderr);
    let lines: Vec<&str> = f.stdout.lines().filter(|l| !l.starts_with("FAIL")).collect();
    assert_eq!(lines.len(), 4, "{}", f.stdout);
    assert_eq!(lines[..2], ["ok 45", "ok 45"]);
    let local = lines[2].split_whitespace().next().unwrap().trim_start_matches("local=");
    assert!(local.starts_with("127.0.0.1:"), "{}", lines[2]);
    let seen = lines[2].split("reply=from ").nth(1).unwrap_or_default();
    assert!(seen.starts_with("127.0.0.1:") && seen.ends_with(" hi"), "the host sees its loopback: {}", lines[2]);
    assert_eq!(lines[3], "no-reply");
    for (args, msg) in [
        (vec!["-U", "dns"], "invalid --to-host-udp spec \"dns\": port \"dns\" is not a number 1..=65535"),
        (
            vec!["-U", "53", "--network", "none"],
            "-U applies to a container's own network; it has no effect with --network none",
        ),
    ] {
        let f = warren_run(&args, &["echo", "started"], SHORT);
        assert_eq!(f.code, 125, "{args:?}");
        assert!(f.stderr.contains(msg) && !f.stdout.contains("started"), "{args:?}: {}", f.stderr);
    }
}

#[test]
fn to_host_udp_flows_are_bounded() {
    require_isolation();
    // 1026 container sources in turn, each kept: the first 1024 get a host socket and their
    // echo, the last two are dropped (a flow lasts until idle for --udp-timeout).
    let echo = UdpServer::start("127.0.0.1", |d| Some(d.to_vec()));
    let t = nettool();
    let t = t.display();
    let script = format!("ulimit -n 4096 && {t} udp-sources 127.0.0.1 5900 1026");
    let spec = format!("5900:{}", echo.addr.port());
    let f = warren_run(&["-U", &spec, "--udp-timeout", "600"], &["sh", "-c", &script], LONG);
    assert_eq!(f.code, 0, "{}", f.stderr);
    let lines: Vec<&str> = f.stdout.lines().filter(|l| !l.starts_with("FAIL")).collect();
    assert_eq!(lines, ["answered 1024 of 1026"], "{}", f.stdout);
}

#[test]
fn to_host_connections_are_bounded() {
    require_isolation();
    // 1024 connections held open take every place: the next one is reset, and once they
    // close the port serves again.
    let down = TcpServer::download("127.0.0.1");
    let dir = ScratchDir::new("to-host-limit");
    let held = dir.join("held");
    let t = nettool();
    let t = t.display();
    let script = format!(
        "ulimit -n 4096; {t} hold 127.0.0.1 5700 1024 3 > {held} & h=$!; \
         for _ in $(seq 400); do grep -q holding {held} && break; sleep 0.05; done; \
         {{ {t} download 127.0.0.1 5700 10 1 || echo over-the-limit; }}; wait $h; sleep 0.5; \
         {t} download 127.0.0.1 5700 1000 2",
        held = held.display()
    );
    let f = warren_run(&["-T", &format!("5700:{}", down.addr.port())], &["sh", "-c", &script], LONG);
    assert_eq!(f.code, 0, "{} {}", f.stdout, f.stderr);
    let lines: Vec<&str> = f.stdout.lines().filter(|l| !l.starts_with("FAIL")).collect();
    assert_eq!(lines, ["over-the-limit", &format!("ok 1000 {}", stream_hash(2, 1000))], "{}", f.stderr);
    assert_eq!(std::fs::read_to_string(&held).unwrap(), "holding 1024\nok 1024\n", "all 1024 were relayed");
}
