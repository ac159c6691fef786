//! Operability: packet capture checked with tshark, stats of networks and containers.

use std::process::Command;
use std::time::Duration;

use crate::util::*;

const SHORT: Duration = Duration::from_secs(30);

/// `tshark -r FILE -Y FILTER`: the number of matching frames.
fn tshark_count(file: &std::path::Path, filter: &str) -> usize {
    let mut c = Command::new("tshark");
    c.args(["-n", "-r"]).arg(file).args(["-Y", filter, "-T", "fields", "-e", "frame.number"]);
    c.env("HOME", std::env::temp_dir());
    let f = run_with_deadline(c, SHORT);
    assert_eq!(f.code, 0, "tshark -r {} -Y {filter}: {}", file.display(), f.stderr);
    f.stdout.lines().filter(|l| !l.trim().is_empty()).count()
}

/// A file path in the temp directory, removed when dropped (also when the test fails).
struct TempPath(std::path::PathBuf);

impl std::ops::Deref for TempPath {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for TempPath {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn temp(name: &str) -> TempPath {
    TempPath(std::env::temp_dir().join(format!("warren-ops-{}-{name}", std::process::id())))
}

#[test]
fn pcap_of_a_known_exchange_reads_in_tshark() {
    require_isolation();
    let echo = UdpServer::echo("127.0.0.1");
    let file = temp("run.pcap");
    let port = echo.addr.port().to_string();
    let f = warren_run(
        &["--allow-host-loopback", "--no-ipv6", "--pcap", file.to_str().unwrap()],
        &[nettool().to_str().unwrap(), "udp-echo", "10.0.2.2", &port, "3"],
        SHORT,
    );
    assert_eq!(f.code, 0, "{} {}", f.stdout, f.stderr);
    // Three datagrams of the known sizes (0, 1 and 100 bytes) and their echoes; one ARP
    // exchange for the gateway.
    assert_eq!(tshark_count(&file, &format!("udp.port == {port}")), 6);
    assert_eq!(tshark_count(&file, &format!("udp.port == {port} && ip.src == 10.0.2.100")), 3);
    assert_eq!(tshark_count(&file, &format!("udp.port == {port} && ip.src == 10.0.2.2 && udp.length == 108")), 1);
    assert_eq!(tshark_count(&file, "arp.opcode == 1 && arp.dst.proto_ipv4 == 10.0.2.2"), 1);
    assert_eq!(tshark_count(&file, "arp.opcode == 2 && arp.src.proto_ipv4 == 10.0.2.2"), 1);
    // A capture file that cannot be created stops the run before anything starts.
    let f = warren_run(&["--pcap", "/nonexistent/dir/x.pcap"], &["true"], SHORT);
    assert_eq!(f.code, 125);
    assert!(f.stderr.contains("cannot create capture file /nonexistent/dir/x.pcap"), "{}", f.stderr);
}

#[test]
fn a_capture_shows_datagrams_sent_several_to_a_frame_one_by_one() {
    require_isolation();
    assert!(has_remote_ip());
    // Datagrams that go to the container in one UDP GSO frame are recorded as the container's
    // kernel cuts them: one frame each.
    let (count, size) = (6000u32, 1400usize);
    let srv = UdpServer::blast_back(REMOTE_IP, count, size);
    let port = srv.addr.port();
    let file = temp("gso.pcap");
    // warren stays up until the drops of its host socket are read (they go with the socket).
    let r =
        Running::start(&["--no-ipv6", "--pcap", file.to_str().unwrap()], &["sh", "-c", "echo serving; exec sleep 600"]);
    let line =
        r.nettool(&["udp-blast-recv", REMOTE_IP, &port.to_string(), &count.to_string(), &size.to_string()], SHORT);
    check_blast_report("from the host", &line, count, port, 0, || r.stats().to_string());
    let reached = u64::from(count) - udp_drops_at_port(port);
    // A clean exit completes the capture file.
    drop(r);
    let filter = format!("udp.srcport == {port} && (udp.length == {} || udp.length == {})", size + 8, size / 2 + 8);
    assert_eq!(tshark_count(&file, &filter) as u64, reached, "every datagram warren read is one frame in the capture");
}

#[test]
fn capture_on_a_running_instance_stops_at_the_count() {
    require_isolation();
    assert!(has_remote_ip());
    let port = free_port("0.0.0.0");
    let spec = format!("{port}:80");
    let tool: &str = Box::leak(nettool().to_str().unwrap().to_string().into_boxed_str());
    let r = Running::start(&["-p", &spec, "--no-ipv6"], &[tool, "serve", "80"]);
    let file = temp("live.pcap");
    let mut cap = Command::new(warren());
    cap.args(["capture", "--api-socket"]).arg(&r.api).args([
        "-w",
        file.to_str().unwrap(),
        "--count",
        "3",
        "--seconds",
        "60",
    ]);
    let cap = std::thread::spawn(move || run_with_deadline(cap, Duration::from_secs(90)));
    // The capture runs once its file has its header.
    let deadline = std::time::Instant::now() + SHORT;
    while std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) < 24 {
        assert!(std::time::Instant::now() < deadline, "the capture never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Connections from a non-loopback address go through the TAP: SYN, SYN-ACK, ACK first.
    let deadline = std::time::Instant::now() + SHORT;
    while !cap.is_finished() && std::time::Instant::now() < deadline {
        let _ = tcp_peer_seen(std::net::SocketAddr::from(([10, 200, 0, 1], port)), Some(REMOTE_IP.parse().unwrap()));
        std::thread::sleep(Duration::from_millis(200));
    }
    let f = cap.join().unwrap();
    assert_eq!(f.code, 0, "{}", f.stderr);
    assert!(f.stderr.contains("3 frames written to"), "{}", f.stderr);
    assert_eq!(tshark_count(&file, "frame"), 3);
    assert!(tshark_count(&file, "tcp.flags.syn == 1") >= 1, "the handshake is in the capture");
    // Without a running capture, stop is refused with the reason.
    let f = r.port(&["ls"]);
    assert_eq!(f.code, 0);
}

#[test]
fn json_logs_are_one_object_per_line() {
    require_isolation();
    let mut cmd = Command::new(warren());
    cmd.args(["run", "--no-ipv6", "--log-format", "json", "-vv", "--", "true"]);
    let f = run_with_deadline(cmd, SHORT);
    assert_eq!(f.code, 0, "{}", f.stderr);
    assert!(f.stderr.lines().count() >= 3, "-vv logs set-up and totals: {}", f.stderr);
    for line in f.stderr.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["ts"].as_str().is_some_and(|t| t.ends_with('Z')), "{line}");
        assert!(["info", "debug", "warn", "error", "trace"].contains(&v["level"].as_str().unwrap()), "{line}");
        assert!(v["message"].is_string(), "{line}");
    }
    assert!(f.stderr.contains(r#""message":"container started""#), "{}", f.stderr);
    let mut cmd = Command::new(warren());
    cmd.args(["--log-format", "yaml", "doctor"]);
    let f = run_with_deadline(cmd, SHORT);
    assert_eq!(f.code, 2);
    assert!(f.stderr.contains("invalid value 'yaml' for '--log-format <LOG_FORMAT>'"), "{}", f.stderr);
}

#[test]
fn more_error_texts() {
    require_isolation();
    let check = |args: &[&str], code: i32, msg: &str| {
        let mut cmd = Command::new(warren());
        cmd.args(args);
        let f = run_with_deadline(cmd, SHORT);
        assert_eq!(f.code, code, "{args:?}: {}", f.stderr);
        assert!(f.stderr.contains(msg), "{args:?}: {}", f.stderr);
    };
    check(&["flows", "web"], 1, "warren flows takes no TARGET");
    check(&["run", "--queues", "17", "--", "true"], 2, "invalid value '17' for '--queues <N>': 17 is not in 1..=16");
    check(
        &["run", "--network", "dev", "--pcap", "/tmp/x.pcap", "--", "true"],
        125,
        "--pcap applies to a container's own network; on \"dev\" use `warren capture --network dev -w FILE`",
    );
    check(
        &["run", "--network", "none", "--pcap", "/tmp/x.pcap", "--", "true"],
        125,
        "--pcap has nothing to capture with --network none",
    );
    check(&["run", "--network", "none", "-p", "80", "--", "true"], 125, "-p has no effect with --network none");
    check(
        &["run", "-p", "192.0.2.1:8080:80", "--", "true"],
        125,
        "cannot publish tcp 192.0.2.1:8080: address 192.0.2.1 is not on this host; use one of its addresses or 0.0.0.0",
    );
    check(
        &["run", "-p", "[zz]:80:80", "--", "true"],
        125,
        "invalid port spec \"[zz]:80:80\": \"zz\" is not an IPv6 address",
    );
    // slirp4netns-compatible binary: an outbound interface that does not exist.
    let mut cmd = Command::new(
        std::env::var_os("WARREN_SLIRP_BIN")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_warren-slirp4netns").into()),
    );
    cmd.args(["--outbound-addr=nosuchif0", "1", "tap0"]);
    let f = run_with_deadline(cmd, SHORT);
    assert_eq!(f.code, 1);
    assert!(f.stderr.contains("outbound-addr: no IPv4 address or interface named \"nosuchif0\""), "{}", f.stderr);
    // The instance API: capture state errors and an oversized request.
    let r = Running::start(&["--no-ipv6"], &["sh", "-c", "echo serving; exec sleep 60"]);
    let file = temp("twice.pcap");
    let api = |req: serde_json::Value| -> String {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&r.api).unwrap();
        // An oversized request is answered and closed before it is all written.
        let _ = s.write_all(req.to_string().as_bytes());
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let start = serde_json::json!({"execute": "capture", "arguments": {"start": {"path": file.0, "count": null}}});
    assert_eq!(api(start.clone()), r#"{"return":{"frames":0}}"#);
    assert_eq!(api(start), r#"{"error":{"desc":"a capture is already running; stop it first"}}"#);
    let stop = serde_json::json!({"execute": "capture", "arguments": "stop"});
    assert!(api(stop.clone()).starts_with(r#"{"return":{"frames":"#));
    assert_eq!(api(stop), r#"{"error":{"desc":"no capture is running"}}"#);
    // Output to a reader that has gone (`warren flows | head`): a quiet exit, no panic.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut c = Command::new(warren());
    c.args(["flows", "--api-socket"]).arg(&r.api);
    c.stdin(std::process::Stdio::null()).stdout(writer).stderr(std::process::Stdio::piped());
    let gone = c.spawn().unwrap().wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&gone.stderr);
    assert_eq!((gone.status.code(), err.as_ref()), (Some(0), ""), "warren flows into a closed pipe");
    let big = serde_json::json!({"execute": "port_list", "pad": "x".repeat(8192)});
    assert_eq!(api(big), r#"{"error":{"desc":"bad request: too large message"}}"#);
}

#[test]
fn api_refuses_other_users_even_when_the_mode_would_let_them_in() {
    require_isolation();
    if !nix::unistd::getuid().is_root() {
        eprintln!("needs root to act as another user: covered by the root pass");
        return;
    }
    let r = Running::start(&["--no-ipv6"], &["sh", "-c", "echo serving; exec sleep 60"]);
    // Open the socket's mode wide: the peer-credential check must still refuse warren-ci.
    std::fs::set_permissions(&r.api, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let py = format!(
        "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({:?})\ntry:\n    \
         s.sendall(b'{{\"execute\":\"port_list\"}}'); s.shutdown(socket.SHUT_WR); print(repr(s.recv(100)))\n\
         except OSError:\n    print(\"reset\")",
        r.api.display().to_string()
    );
    let mut c = Command::new("setpriv");
    c.args(["--reuid=warren-ci", "--regid=warren-ci", "--init-groups", "/usr/bin/python3", "-c", &py]);
    let f = run_with_deadline(c, SHORT);
    assert_eq!(f.code, 0, "{}", f.stderr);
    assert!(["b''", "reset"].contains(&f.stdout.trim()), "another user gets no answer: {}", f.stdout);
    // Its owner still does.
    let f = r.port(&["ls"]);
    assert_eq!(f.code, 0, "{}", f.stderr);
}

#[test]
fn silent_dns_upstream_gets_servfail_not_a_hang() {
    require_isolation();
    // An upstream that receives and never answers.
    let silent = UdpServer::start("127.0.0.1", |_| None);
    let up = format!("127.0.0.1:{}", silent.addr.port());
    let t0 = std::time::Instant::now();
    let line = nettool_in(&["--dns-upstream", &up], &["dns", "10.0.2.3", "web.example.test"], SHORT);
    assert_eq!(line, "rcode=2", "SERVFAIL from the forwarder");
    eprintln!("SERVFAIL after {:?}", t0.elapsed());
    // And over IPv6 to fd00::3.
    let line = nettool_in(&["--dns-upstream", &up], &["dns", "fd00::3", "web.example.test"], SHORT);
    assert_eq!(line, "rcode=2");
}

/// Runs `nettool dns SERVER NAME` for each (server, name) in one container; its lines.
fn dns_queries(net: &[&str], queries: &[(&str, &str)]) -> Vec<String> {
    let t = nettool();
    let script: Vec<String> = queries.iter().map(|(s, n)| format!("{} dns {s} {n}", t.display())).collect();
    let f = warren_run(net, &["sh", "-c", &script.join(" && ")], SHORT);
    assert_eq!(f.code, 0, "{} {}", f.stdout, f.stderr);
    f.stdout.lines().map(str::to_string).collect()
}

#[test]
fn dns_fails_over_between_upstreams_and_routes_domains_to_their_own() {
    use std::sync::atomic::Ordering::SeqCst;
    require_isolation();
    let (_silent, silent, silent_n) = counted_upstream(|_| None);
    let (_failing, failing, failing_n) = counted_upstream(|q| {
        let mut r = dns_answer(q)?;
        r[3] = 0x82; // SERVFAIL
        r[6..8].copy_from_slice(&[0, 0]);
        Some(r)
    });
    let (_good, good, good_n) = counted_upstream(dns_answer);
    let (_corp, corp, corp_n) = counted_upstream(corp_answer);
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let ok = "rcode=0 192.0.2.55";

    // The first upstream is silent: the second answers. It is asked last from then on, by
    // every data-path thread, so the next queries (IPv4 and IPv6) do not reach it.
    let net = ["--dns-upstream", &silent, "--dns-upstream", &good];
    let q = [("10.0.2.3", "a.example.test"), ("10.0.2.3", "b.example.test"), ("fd00::3", "c.example.test")];
    assert_eq!(dns_queries(&net, &q), [ok, ok, ok]);
    assert_eq!((silent_n.load(SeqCst), good_n.load(SeqCst)), (1, 3), "silent upstream asked once");

    // Nothing listens on the first (ICMP port unreachable): the second answers.
    assert_eq!(
        nettool_in(&["--dns-upstream", &closed, "--dns-upstream", &good], &["dns", "10.0.2.3", "d.test"], SHORT),
        ok
    );
    // The first answers SERVFAIL: the second is asked and its answer given. A SERVFAIL from
    // the only upstream reaches the container as it is.
    assert_eq!(
        nettool_in(&["--dns-upstream", &failing, "--dns-upstream", &good], &["dns", "10.0.2.3", "e.test"], SHORT),
        ok
    );
    assert_eq!(nettool_in(&["--dns-upstream", &failing], &["dns", "10.0.2.3", "f.test"], SHORT), "rcode=2");
    assert_eq!(failing_n.load(SeqCst), 2);
    assert_eq!(good_n.load(SeqCst), 5);

    // Split horizon: names in corp.test go to its servers (the silent one first, then the
    // other), everything else to the default upstream.
    let (s0, g0) = (silent_n.load(SeqCst), good_n.load(SeqCst));
    let r1 = format!("corp.test={silent}");
    let r2 = format!("Corp.Test.={corp}");
    let net = ["--dns-upstream", &good, "--dns-route", &r1, "--dns-route", &r2];
    let q = [
        ("10.0.2.3", "www.corp.test"),
        ("fd00::3", "corp.test"),
        ("10.0.2.3", "www.notcorp.test"),
        ("10.0.2.3", "web.example.test"),
    ];
    let corp_ok = "rcode=0 192.0.2.77";
    assert_eq!(dns_queries(&net, &q), [corp_ok, corp_ok, ok, ok]);
    assert_eq!(corp_n.load(SeqCst), 2);
    assert_eq!((silent_n.load(SeqCst) - s0, good_n.load(SeqCst) - g0), (1, 2));

    // `warren stats` counts queries, failovers and the queries warren had to answer itself:
    // the first upstream refuses, the second is silent.
    let r = Running::start(
        &["--dns-upstream", &closed, "--dns-upstream", &silent],
        &["sh", "-c", "echo serving; exec sleep 600"],
    );
    assert_eq!(r.nettool(&["dns", "10.0.2.3", "g.test"], SHORT), "rcode=2");
    let st = r.stats();
    let counts = (&st["dns_queries"], &st["dns_failovers"], &st["dns_unanswered"]);
    assert_eq!(counts, (&1.into(), &1.into(), &1.into()), "{st}");
    drop(r);

    // Over TCP the first query's name picks the server too (a truncated UDP answer is asked
    // again over TCP, and must reach the same server).
    let (stub, corp_stub) = (DnsStub::start(), DnsStub::corp());
    let up = format!("127.0.0.1:{}", stub.tcp.addr.port());
    let route = format!("corp.test=127.0.0.1:{}", corp_stub.tcp.addr.port());
    let net = ["--dns-upstream", &up, "--dns-route", &route];
    let q = [("10.0.2.3", "www.corp.test tcp"), ("fd00::3", "web.example.test tcp"), ("10.0.2.3", "corp.test tcp")];
    assert_eq!(dns_queries(&net, &q), [corp_ok, ok, corp_ok]);

    // Bad routes: one line naming the value, nothing started.
    for (bad, why) in
        [("corp.test", "no '='"), ("corp.test=resolver", "the server is not IP"), ("=127.0.0.1", "the domain is empty")]
    {
        let f = warren_run(&["--dns-route", bad], &["echo", "started"], SHORT);
        assert_eq!((f.code, f.stdout.as_str()), (125, ""), "{bad}: {}", f.stderr);
        assert!(f.stderr.contains(&format!("invalid --dns-route {bad:?}: {why}")), "{}", f.stderr);
        assert_eq!(f.stderr.trim().lines().count(), 1, "{}", f.stderr);
    }
}

/// In a container: 50 connects to the blackhole (10.201.0.99, set up by scripts/test.sh),
/// then 200 sequential connections to `good`; prints "REFUSED OK RATE".
fn blackhole_then_good(net_args: &[&str], good: std::net::SocketAddr, holes: usize) -> (usize, usize, f64) {
    let py = format!(
        r#"
import socket, time, errno
hole = []
for i in range({holes}):
    s = socket.socket(); s.setblocking(False); s.connect_ex(("10.201.0.99", 80)); hole.append(s)
time.sleep(1)
refused = sum(1 for s in hole if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED)
t = time.time(); ok = 0
for i in range(200):
    c = socket.create_connection(("{ip}", {port}), timeout=10); c.close(); ok += 1
print(refused, ok, 200 / (time.time() - t))
"#,
        ip = good.ip(),
        port = good.port()
    );
    let f = warren_run(net_args, &["/usr/bin/python3", "-c", &py], Duration::from_secs(120));
    assert_eq!(f.code, 0, "{} {}", f.stdout, f.stderr);
    let v: Vec<&str> = f.stdout.split_whitespace().collect();
    (v[0].parse().unwrap(), v[1].parse().unwrap(), v[2].parse().unwrap())
}

#[test]
fn blackholed_syns_neither_slow_good_connections_nor_exceed_the_handshake_limit() {
    require_isolation();
    assert!(has_remote_ip());
    let good = TcpServer::start(REMOTE_IP, |_| {});
    let (_, ok, base) = blackhole_then_good(&["--no-ipv6"], good.addr, 0);
    assert_eq!(ok, 200);
    let (refused, ok, loaded) = blackhole_then_good(&["--no-ipv6"], good.addr, 50);
    assert_eq!((refused, ok), (0, 200), "50 pending SYNs to a blackhole: none refused, every good connection made");
    eprintln!("connections/s: {base:.0} alone, {loaded:.0} with 50 blackholed SYNs ({:.0}%)", 100.0 * loaded / base);
    // With at most 10 handshakes in flight, the other 40 blackholed SYNs are reset at once.
    let (refused, ok, _) = blackhole_then_good(&["--no-ipv6", "--max-handshakes", "10"], good.addr, 50);
    assert_eq!((refused, ok), (40, 200), "the handshake limit refuses the excess, good connections still made");
}

#[test]
fn udp_flows_expire_when_idle() {
    require_isolation();
    assert!(has_remote_ip());
    let echo = UdpServer::echo(REMOTE_IP);
    let port = free_port("0.0.0.0");
    let spec = format!("{port}:53/udp");
    let t = nettool();
    let script = format!("{t} udp-echo {REMOTE_IP} {} 1 && exec {t} udp-serve 53", echo.addr.port(), t = t.display());
    let r = Running::start(&["--no-ipv6", "--udp-timeout", "2", "-p", &spec], &["sh", "-c", &script]);
    // A client of the published port: one more flow, inbound.
    let s = std::net::UdpSocket::bind((REMOTE_IP, 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.send_to(b"hi", (REMOTE_IP, port)).unwrap();
    let mut b = [0u8; 64];
    assert!(s.recv(&mut b).is_ok(), "the published UDP port answers");
    let flows = |r: &Running| -> Vec<String> {
        let mut c = Command::new(warren());
        c.args(["flows", "--json", "--api-socket"]).arg(&r.api);
        let f = run_with_deadline(c, SHORT);
        let v: serde_json::Value = serde_json::from_str(&f.stdout).unwrap();
        v["flows"].as_array().unwrap().iter().map(|f| f["proto"].as_str().unwrap().to_string()).collect()
    };
    let now = flows(&r);
    assert!(now.contains(&"udp".to_string()) && now.contains(&"udp-in".to_string()), "{now:?}");
    let t0 = std::time::Instant::now();
    let deadline = t0 + SHORT;
    while flows(&r).iter().any(|p| p.starts_with("udp")) {
        assert!(std::time::Instant::now() < deadline, "UDP flows never expired: {:?}", flows(&r));
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("idle UDP flows gone after {:?} (--udp-timeout 2)", t0.elapsed());
}

/// Open fds and resident memory of a process.
fn fds_and_rss(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse().ok())
        .unwrap_or(0);
    (fds, rss)
}

#[test]
fn a_hundred_thousand_connections_leave_nothing_behind() {
    require_isolation();
    assert!(has_remote_ip());
    // A server that accepts and closes, on its own thread, until dropped.
    let listener = std::net::TcpListener::bind((REMOTE_IP, 0)).unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    listener.set_nonblocking(true).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let st = stop.clone();
    let server = std::thread::spawn(move || {
        let mut n = 0u64;
        while !st.load(std::sync::atomic::Ordering::SeqCst) {
            match listener.accept() {
                Ok(_) => n += 1,
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        n
    });
    let t = nettool();
    let r = Running::start(&["--no-ipv6"], &["sh", "-c", "echo serving; exec sleep 600"]);
    let warren_pid = r.guard.0.as_ref().unwrap().id();
    let container = r.container_pid();
    let churn = |n: &str| {
        let mut c = Command::new("nsenter");
        c.args(["--preserve-credentials", "-U", "-n", "-t", &container]).arg(&t);
        c.args(["churn", REMOTE_IP, &port, n, "8"]);
        let f = run_with_deadline(c, Duration::from_secs(300));
        if f.code != 0 {
            // Seen twice in ~20 full runs as an unprivileged user, never alone: a connect
            // refused. What warren and this namespace's kernel counted tells where it came from.
            let mut c = Command::new(warren());
            c.args(["stats", "--json", "--api-socket"]).arg(&r.api);
            let st = run_with_deadline(c, SHORT).stdout;
            let netstat = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
            panic!("{} {}\nwarren stats: {st}\n/proc/net/netstat:\n{netstat}", f.stdout.trim(), f.stderr.trim());
        }
        f.stdout.trim().to_string()
    };
    let settle = || {
        // Flows end as their resets are handled: wait until none is open.
        let deadline = std::time::Instant::now() + SHORT;
        loop {
            let mut c = Command::new(warren());
            c.args(["flows", "--json", "--api-socket"]).arg(&r.api);
            let v: serde_json::Value = serde_json::from_str(&run_with_deadline(c, SHORT).stdout).unwrap();
            if v["flows"].as_array().unwrap().is_empty() {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "flows never closed: {v}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    assert_eq!(churn("2000"), "ok 2000", "warm-up");
    settle();
    let (fds0, rss0) = fds_and_rss(warren_pid);
    let t0 = std::time::Instant::now();
    assert_eq!(churn("100000"), "ok 100000");
    let took = t0.elapsed();
    settle();
    let (fds1, rss1) = fds_and_rss(warren_pid);
    eprintln!(
        "100000 connections in {took:?} ({:.0}/s); fds {fds0} -> {fds1}; RSS {rss0} -> {rss1} KiB",
        100_000.0 / took.as_secs_f64()
    );
    assert!(fds1 <= fds0 + fds0 / 10, "open fds back to the start: {fds0} -> {fds1}");
    assert!(rss1 <= rss0 + rss0 / 10, "RSS back within 10%: {rss0} -> {rss1} KiB");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(server.join().unwrap() >= 102_000, "every connection reached the server");
}

#[test]
fn soak_with_faults_loses_nothing() {
    require_isolation();
    assert!(has_remote_ip());
    let secs: u64 = std::env::var("WARREN_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let port = free_port(REMOTE_IP);
    let mut srv = Command::new(nettool());
    srv.args(["serve", &format!("{REMOTE_IP}:{port}")]).stdout(std::process::Stdio::piped());
    let mut srv = Guard(Some(srv.spawn().unwrap()));
    {
        use std::io::BufRead;
        let out = srv.0.as_mut().unwrap().stdout.take().unwrap();
        let mut first = String::new();
        std::io::BufReader::new(out).read_line(&mut first).unwrap();
        assert_eq!(first.trim(), "serving");
    }
    let echo = UdpServer::echo(REMOTE_IP);
    let (p, u) = (port.to_string(), echo.addr.port().to_string());
    let f = warren_run(
        &["--no-ipv6", "-v"],
        &[nettool().to_str().unwrap(), "soak", REMOTE_IP, &p, &u, &secs.to_string(), "2026"],
        Duration::from_secs(secs + 120),
    );
    assert_eq!(f.code, 0, "{} {}", f.stdout, f.stderr);
    let line = f.stdout.trim();
    eprintln!("soak {secs}s: {line}");
    let field = |k: &str| -> u64 {
        line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{k}="))).unwrap().parse().unwrap()
    };
    assert!(line.starts_with("ok "), "{line}");
    assert!(field("tcp_verified") > 0 && field("bytes_verified") > 0, "{line}");
    assert_eq!(field("resets_seen"), field("resets_injected"), "every injected reset surfaced as one: {line}");
    assert!(field("udp_echoed") > 0, "{line}");
    drop(srv);
}

#[test]
fn namespace_setup_shows_progress_on_a_terminal() {
    require_isolation();
    let mut c = Command::new("script");
    let cmd = format!("{} run --no-ipv6 -- sh -c 'echo inside'", warren().display());
    c.args(["-qec", &cmd, "/dev/null"]);
    let f = run_with_deadline(c, SHORT);
    assert_eq!(f.code, 0, "{} {}", f.stdout, f.stderr);
    assert!(f.stdout.contains("warren: setting up the container's network ..."), "{:?}", f.stdout);
    assert!(f.stdout.contains("inside"), "{:?}", f.stdout);
    // Not on a terminal: nothing but the command's output.
    let f = warren_run(&["--no-ipv6"], &["sh", "-c", "echo inside"], SHORT);
    assert_eq!((f.stdout.as_str(), f.stderr.as_str()), ("inside\n", ""));
}

#[test]
fn a_dhcp_client_gets_the_containers_own_address() {
    require_isolation();
    // busybox udhcpc, a real DHCP client, asks warren's gateway; its script prints what it got.
    let script = temp("udhcpc.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"$1 ip=$ip subnet=$subnet router=$router dns=$dns mtu=$mtu lease=$lease server=$serverid\"\n",
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let cmd = format!("busybox udhcpc -i tap0 -f -q -n -t 3 -T 1 -s {}", script.display());
    let f = warren_run(&["-vv", "--no-ipv6"], &["sh", "-c", &cmd], SHORT);
    assert_eq!(f.code, 0, "{}\n{}", f.stdout, f.stderr);
    let bound =
        "bound ip=10.0.2.100 subnet=255.255.255.0 router=10.0.2.2 dns=10.0.2.3 mtu=65520 lease=86400 server=10.0.2.2";
    assert!(f.stdout.lines().any(|l| l == bound), "{}", f.stdout);
    // Another subnet and MTU: the lease follows.
    let f = warren_run(&["--cidr", "10.9.8.0/25", "--no-ipv6", "--mtu", "1500"], &["sh", "-c", &cmd], SHORT);
    assert_eq!(f.code, 0, "{}\n{}", f.stdout, f.stderr);
    assert!(f.stdout.contains("bound ip=10.9.8.100 subnet=255.255.255.128 router=10.9.8.2"), "{}", f.stdout);
    assert!(f.stdout.contains("mtu=1500"), "{}", f.stdout);
}

#[test]
fn port_finds_an_instance_in_its_per_process_directory() {
    require_isolation();
    // No $XDG_RUNTIME_DIR, and $TMPDIR/warren-UID is not a directory of ours (another user
    // made it first, say): the instance puts its socket in $TMPDIR/warren-UID-PID, and
    // `warren port` without --api-socket finds it there.
    let tmp = ScratchDir::new("tmpdir");
    let uid = nix::unistd::getuid().as_raw();
    std::fs::write(tmp.join(format!("warren-{uid}")), b"not a directory").unwrap();
    let warren_in = |args: &[&str]| {
        let mut c = Command::new(warren());
        c.env_remove("XDG_RUNTIME_DIR").env("TMPDIR", &*tmp).args(args);
        c
    };
    let port = free_port("127.0.0.1");
    let spec = format!("127.0.0.1:{port}:80");
    let tool = nettool();
    let r = Running::spawn(
        warren_in(&["run", "-p", &spec, "--", tool.to_str().unwrap(), "serve", "80"]),
        tmp.join("unused.sock"),
    );
    let pid = r.guard.0.as_ref().unwrap().id();
    assert!(tmp.join(format!("warren-{uid}-{pid}/{pid}.sock")).exists(), "the fallback directory holds the socket");
    let f = run_with_deadline(warren_in(&["port", "ls"]), SHORT);
    assert_eq!(f.code, 0, "{}", f.stderr);
    assert!(f.stdout.contains(&format!("tcp\t127.0.0.1:{port}\t10.0.2.100:80")), "{}", f.stdout);
    drop(r);
    let f = run_with_deadline(warren_in(&["port", "ls"]), SHORT);
    assert_eq!(f.code, 1);
    let place = format!("no running warren found in {}/warren-{uid}-*", tmp.display());
    assert!(f.stderr.contains(&place), "{}", f.stderr);
}
