//! A multiqueue TAP (`--queues`): the container's flows spread over the data-path threads,
//! stay intact, share one set of limits, and published-port flows survive the kernel moving
//! them to another queue.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::*;

const MIB: u64 = 1 << 20;
const SHORT: Duration = Duration::from_secs(30);
const LONG: Duration = Duration::from_secs(300);

/// `warren flows --json` of a running instance.
fn flows(r: &Running) -> Vec<serde_json::Value> {
    let mut c = Command::new(warren());
    c.args(["flows", "--json", "--api-socket"]).arg(&r.api);
    let f = run_with_deadline(c, SHORT);
    assert_eq!(f.code, 0, "{}", f.stderr);
    let v: serde_json::Value = serde_json::from_str(&f.stdout).unwrap();
    v["flows"].as_array().unwrap().clone()
}

/// Waits for a line of the container's output.
fn wait_line(r: &Running, line: &str) {
    let deadline = Instant::now() + SHORT;
    while !r.stdout.lock().unwrap().iter().any(|l| l == line) {
        assert!(Instant::now() < deadline, "no {line:?} from the container: {:?}", r.stdout.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A path removed when the test ends, however it ends (the API socket of a process the test
/// kills).
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Accepts connections and reads each until EOF.
fn holder() -> TcpServer {
    TcpServer::start("127.0.0.1", |mut c| {
        let mut b = [0u8; 64];
        while c.read(&mut b).is_ok_and(|n| n > 0) {}
    })
}

#[test]
fn the_containers_flows_spread_over_both_threads_and_arrive_intact() {
    require_isolation();
    let hold = holder();
    let tool = nettool();
    let script = format!("{} hold 10.0.2.2 {} 32 60 & echo serving; wait", tool.display(), hold.addr.port());
    let r = Running::start(&["--queues", "2", "--allow-host-loopback"], &["sh", "-c", &script]);
    wait_line(&r, "holding 32");
    let held = flows(&r);
    let threads: BTreeSet<u64> = held
        .iter()
        .filter(|f| f["proto"] == "tcp" && f["peer"] == format!("10.0.2.2:{}", hold.addr.port()))
        .map(|f| f["thread"].as_u64().unwrap())
        .collect();
    // Each flow lands on one of 2 queues by its hash: all 32 on one would be a 1 in 2^31 chance.
    assert_eq!(threads, BTreeSet::from([0, 1]), "flows by thread: {held:?}");
    // Sixteen concurrent downloads through both threads, each checked by hash.
    let srv = TcpServer::download("127.0.0.1");
    let line = r.nettool(&["parallel", "10.0.2.2", &srv.addr.port().to_string(), "16", &(4 * MIB).to_string()], LONG);
    assert_eq!(line, "ok 16");
    let st = r.stats();
    assert_eq!(st["queues"], 2, "{st}");
    assert!(st["tcp_flows"].as_u64().unwrap() >= 48, "every flow counted once across threads: {st}");
    assert!(st["bytes_in"].as_u64().unwrap() > 0 && st["drops"].is_object(), "{st}");
}

#[test]
fn the_flow_limit_holds_across_threads() {
    require_isolation();
    let hold = holder();
    let tool = nettool();
    let port = hold.addr.port();
    let script = format!("{t} hold 10.0.2.2 {port} 8 60 & sleep 0.1; echo serving; wait", t = tool.display());
    let r = Running::start(&["--queues", "2", "--allow-host-loopback", "--max-tcp-flows", "8"], &["sh", "-c", &script]);
    wait_line(&r, "holding 8");
    let threads: BTreeSet<u64> = flows(&r).iter().map(|f| f["thread"].as_u64().unwrap()).collect();
    assert_eq!(threads.len(), 2, "8 flows on both threads (1 in 128 that they are not)");
    // Whatever thread the ninth lands on, the container-wide limit refuses it.
    for i in 0..4 {
        let out = r.nettool(&["connect-error", "10.0.2.2", &port.to_string()], SHORT);
        assert!(out.contains("raw=Some(111)"), "connection {i} beyond the limit: {out}");
    }
    assert_eq!(r.stats()["limit_drops"], 4);
}

#[test]
fn published_clients_idle_past_the_kernels_steering_keep_their_flows() {
    require_isolation();
    let port = free_port("0.0.0.0");
    let spec = format!("{port}:7");
    let tool = nettool();
    // The container answers 6 s after each read: by then the kernel has forgotten which queue
    // carried the flow (3 s after warren's last frame of it), and the container's answer
    // follows the flow's hash, to either queue.
    let r =
        Running::start(&["--queues", "2", "-p", &spec], &[tool.to_str().unwrap(), "late-echo", "0.0.0.0:7", "6000"]);
    let to = SocketAddr::new(REMOTE_IP.parse().unwrap(), port);
    // Clients from a non-loopback address go through the userspace stack on thread 0.
    let mut conns: Vec<(TcpStream, Vec<u8>)> = (0..16u64)
        .map(|i| {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.bind(&SocketAddr::new(REMOTE_IP.parse().unwrap(), 0).into()).unwrap();
            s.connect_timeout(&to.into(), SHORT).unwrap();
            let mut c: TcpStream = s.into();
            c.set_read_timeout(Some(SHORT)).unwrap();
            let mut out = vec![0u8; 1000];
            Stream::new(i + 1).fill(&mut out);
            c.write_all(&out).unwrap();
            (c, out)
        })
        .collect();
    let threads: BTreeSet<u64> = flows(&r).iter().map(|f| f["thread"].as_u64().unwrap()).collect();
    assert_eq!(threads, BTreeSet::from([0]), "published-port flows start on thread 0");
    for (i, (c, out)) in conns.iter_mut().enumerate() {
        let mut back = vec![0u8; out.len()];
        c.read_exact(&mut back).unwrap();
        assert!(back == *out, "connection {i}: the late echo came back altered");
        // And the flows go on as usual.
        c.write_all(b"x").unwrap();
    }
    for (i, (c, _)) in conns.iter_mut().enumerate() {
        let mut b = [0u8; 1];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x", "connection {i}");
    }
    let st = r.stats();
    assert_eq!(st["inbound_tcp"], 16, "{st}");
    assert_eq!(st["tcp_resets"], 0, "{st}");
    // Each of the 16 flows hashes to the other queue with probability 1/2.
    assert!(st["handed_over"].as_u64().unwrap() > 0, "frames read on queue 1 reached thread 0: {st}");
}

#[test]
fn a_single_queue_tap_made_by_another_tool_is_served_as_one_queue() {
    require_isolation();
    let (_holder, pid) = namespace_holder();
    let pid = pid.to_string();
    let mut mk = Command::new("nsenter");
    mk.args(["--preserve-credentials", "-U", "-n", "-t", &pid, "ip", "tuntap", "add", "dev", "tap0", "mode", "tap"]);
    let f = run_with_deadline(mk, SHORT);
    assert_eq!(f.code, 0, "ip tuntap add: {}", f.stderr);
    let api = RemoveOnDrop(std::env::temp_dir().join(format!("warren-test-{}-sq.sock", std::process::id())));
    let mut attach = Command::new(warren());
    attach.args(["attach", "--pid", &pid, "--allow-host-loopback", "--queues", "2", "--api-socket"]).arg(&api.0);
    attach.stdin(std::process::Stdio::null());
    let _attach = Guard(Some(attach.spawn().expect("warren attach")));
    let srv = TcpServer::download("127.0.0.1");
    let n = 4 * MIB;
    let deadline = Instant::now() + SHORT;
    loop {
        let mut cmd = Command::new("nsenter");
        cmd.args(["--preserve-credentials", "-U", "-n", "-t", &pid]).arg(nettool());
        cmd.args(["download", "10.0.2.2", &srv.addr.port().to_string(), &n.to_string(), "6"]);
        let f = run_with_deadline(cmd, SHORT);
        if f.code == 0 {
            assert_eq!(f.stdout.trim(), format!("ok {n} {}", stream_hash(6, n)));
            break;
        }
        assert!(Instant::now() < deadline, "download through the attached TAP never worked: {}", f.stderr);
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut c = Command::new(warren());
    c.args(["stats", "--json", "--api-socket"]).arg(&api.0);
    let f = run_with_deadline(c, SHORT);
    let v: serde_json::Value = serde_json::from_str(&f.stdout).unwrap_or_else(|e| panic!("{e}: {}", f.stderr));
    assert_eq!(v["stats"]["queues"], 1, "{v}");
}

#[test]
fn published_udp_clients_answered_after_the_kernels_steering_expired_get_their_replies() {
    require_isolation();
    let port = free_port("0.0.0.0");
    let spec = format!("{port}:53/udp");
    let tool = nettool();
    // The container answers each datagram 6 s later, by then following the flow's hash.
    let r = Running::start(&["--queues", "2", "-p", &spec], &[tool.to_str().unwrap(), "udp-serve", "53", "6000"]);
    let to = SocketAddr::new(REMOTE_IP.parse().unwrap(), port);
    let clients: Vec<std::net::UdpSocket> = (0..16)
        .map(|i| {
            let s = std::net::UdpSocket::bind((REMOTE_IP, 0)).unwrap();
            s.set_read_timeout(Some(SHORT)).unwrap();
            s.send_to(format!("question {i}").as_bytes(), to).unwrap();
            s
        })
        .collect();
    for (i, s) in clients.iter().enumerate() {
        let mut b = [0u8; 512];
        let (n, from) = s.recv_from(&mut b).unwrap_or_else(|e| panic!("client {i}: no reply: {e}"));
        assert_eq!(from, to, "the reply comes from the published port");
        let reply = String::from_utf8_lossy(&b[..n]).into_owned();
        let me = s.local_addr().unwrap();
        assert_eq!(reply, format!("from {me} question {i}"), "the container saw the client's own address");
    }
    let st = r.stats();
    assert!(st["handed_over"].as_u64().unwrap() > 0, "replies read on queue 1 reached thread 0: {st}");
}
