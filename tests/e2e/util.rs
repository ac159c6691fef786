//! Shared harness of the end-to-end suite: locating binaries, isolation checks, test servers on
//! loopback, and running warren with a deadline.
//!
//! Every server here binds loopback (or 10.200.0.1, an address the suite's own network namespace
//! carries on `lo`), stops when dropped, and is bounded in what it serves.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The address scripts/test.sh puts on `lo` of the suite's namespace: a "remote" host that is
/// not loopback, so flows take warren's ordinary NAT path.
pub const REMOTE_IP: &str = "10.200.0.1";
/// The IPv6 "remote" address scripts/test.sh puts on `lo` of the suite's namespace.
pub const REMOTE_IP6: &str = "fd99:200::1";

/// Path of the warren binary under test.
pub fn warren() -> PathBuf {
    std::env::var_os("WARREN_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_warren")))
}

/// Path of the in-container client (examples/nettool.rs).
pub fn nettool() -> PathBuf {
    if let Some(p) = std::env::var_os("NETTOOL_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/e2e-HASH -> target/<profile>/examples/nettool
    let exe = std::env::current_exe().expect("current exe");
    let p = exe.parent().and_then(|d| d.parent()).expect("target dir").join("examples/nettool");
    assert!(p.exists(), "{} missing: build it with `cargo build --examples` (scripts/test.sh does)", p.display());
    p
}

/// Panics unless this process runs in a network namespace that holds nothing but `lo` and the
/// veth to the suite's own remote-host namespace (the suite must never be able to reach a real
/// network, even by mistake).
pub fn require_isolation() {
    let dev = std::fs::read_to_string("/proc/net/dev").expect("read /proc/net/dev");
    let ifaces: Vec<&str> = dev.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
    assert!(
        ifaces.iter().all(|i| *i == "lo" || *i == "wrn-remote0") && ifaces.contains(&"lo"),
        "the end-to-end suite must run in a network namespace holding only lo: use scripts/test.sh (found {ifaces:?})"
    );
}

/// Address of this namespace on the veth to the remote host.
pub const VETH_LOCAL: &str = "10.201.0.1";
/// Address of the remote host.
pub const VETH_REMOTE: &str = "10.201.0.2";
/// IPv6 address of this namespace on the veth to the remote host.
pub const VETH_LOCAL6: &str = "fd99:201::1";
/// IPv6 address of the remote host.
pub const VETH_REMOTE6: &str = "fd99:201::2";

/// Runs nettool on the remote host: a separate network namespace joined to the suite's by a
/// veth pair (set up by scripts/test.sh, which exports its holder's PID).
pub fn remote_nettool(args: &[&str]) -> Finished {
    let pid = std::env::var("WARREN_REMOTE_NS_PID")
        .expect("WARREN_REMOTE_NS_PID: scripts/test.sh creates the remote-host namespace");
    let mut cmd = Command::new("nsenter");
    cmd.args(["--preserve-credentials", "-U", "-n", "-t", &pid]).arg(nettool()).args(args);
    run_with_deadline(cmd, Duration::from_secs(60))
}

/// Whether the suite's namespace carries [`REMOTE_IP`].
pub fn has_remote_ip() -> bool {
    TcpListener::bind((REMOTE_IP, 0)).is_ok()
}

/// xorshift64* byte stream shared with nettool: `seed` fully determines the bytes.
pub struct Stream(u64);

impl Stream {
    /// A stream for `seed`.
    pub fn new(seed: u64) -> Self {
        Stream(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Fills `buf` with the next bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// SHA-256 (hex) of the first `n` bytes of stream `seed`.
pub fn stream_hash(seed: u64, mut n: u64) -> String {
    let mut s = Stream::new(seed);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    while n > 0 {
        let k = n.min(buf.len() as u64) as usize;
        s.fill(&mut buf[..k]);
        h.update(&buf[..k]);
        n -= k as u64;
    }
    hex(&h.finalize())
}

/// Lowercase hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A TCP server thread that stops (and closes its listener) when dropped.
pub struct TcpServer {
    /// Bound address.
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpServer {
    /// Serves each connection with `handler` on its own thread.
    pub fn start(bind: &str, handler: fn(TcpStream)) -> Self {
        Self::serve(TcpListener::bind((bind, 0)).unwrap_or_else(|e| panic!("bind {bind}: {e}")), handler)
    }

    /// Like [`TcpServer::start`] on an already bound listener.
    pub fn serve(listener: TcpListener, handler: fn(TcpStream)) -> Self {
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (st, acc) = (stop.clone(), accepted.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn {
                    acc.fetch_add(1, Ordering::SeqCst);
                    std::thread::spawn(move || handler(c));
                }
            }
        });
        Self { addr, accepted, stop, thread: Some(thread) }
    }

    /// Serves requests "BYTES SEED\n" with that many bytes of the stream.
    pub fn download(bind: &str) -> Self {
        Self::start(bind, |mut c| {
            let mut line = String::new();
            if BufReader::new(&mut c).read_line(&mut line).is_err() {
                return;
            }
            let mut it = line.split_whitespace().map(|x| x.parse::<u64>().unwrap_or(0));
            let (mut n, seed) = (it.next().unwrap_or(0).min(1 << 32), it.next().unwrap_or(0));
            let mut s = Stream::new(seed);
            let mut buf = vec![0u8; 1 << 16];
            while n > 0 {
                let k = n.min(buf.len() as u64) as usize;
                s.fill(&mut buf[..k]);
                if c.write_all(&buf[..k]).is_err() {
                    return;
                }
                n -= k as u64;
            }
        })
    }

    /// Reads to EOF and answers "BYTES SHA256".
    pub fn upload_sink(bind: &str) -> Self {
        Self::start(bind, |mut c| {
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0u64;
            loop {
                match c.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        h.update(&buf[..n]);
                        total += n as u64;
                    }
                    Err(_) => return,
                }
            }
            let _ = writeln!(c, "{total} {}", hex(&h.finalize()));
        })
    }

    /// Writes the peer address it sees, then closes.
    pub fn peer_echo(bind: &str) -> Self {
        Self::start(bind, |mut c| {
            if let Ok(p) = c.peer_addr() {
                let _ = writeln!(c, "{p}");
            }
        })
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A UDP server thread answering each datagram with `reply(request)`; stops when dropped.
pub struct UdpServer {
    /// Bound address.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpServer {
    /// Starts the server.
    pub fn start(bind: &str, reply: fn(&[u8]) -> Option<Vec<u8>>) -> Self {
        Self::serve(bind, move |sock, d, from| {
            if let Some(r) = reply(d) {
                let _ = sock.send_to(&r, from);
            }
        })
    }

    /// Starts a server handing each datagram and its sender to `handle`.
    pub fn serve(bind: &str, handle: impl Fn(&UdpSocket, &[u8], SocketAddr) + Send + 'static) -> Self {
        let sock = UdpSocket::bind((bind, 0)).unwrap_or_else(|e| panic!("bind {bind}: {e}"));
        Self::serve_socket(sock, handle)
    }

    /// Serves a socket the caller bound.
    pub fn serve_socket(sock: UdpSocket, handle: impl Fn(&UdpSocket, &[u8], SocketAddr) + Send + 'static) -> Self {
        let addr = sock.local_addr().unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !st.load(Ordering::SeqCst) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    handle(&sock, &buf[..n], from);
                }
            }
        });
        Self { addr, stop, thread: Some(thread) }
    }

    /// Answers "go" with `count` datagrams of `size` bytes as `nettool udp-blast` sends them
    /// (runs of 32, 1 ms apart) and echoes anything else.
    pub fn blast_back(bind: &str, count: u32, size: usize) -> Self {
        Self::serve(bind, move |sock, d, from| {
            if d != b"go" {
                let _ = sock.send_to(d, from);
                return;
            }
            let mut out = Vec::new();
            for i in 0..count {
                blast_datagram(i, size, &mut out);
                let _ = sock.send_to(&out, from);
                if i % 32 == 31 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        })
    }

    /// Echoes every datagram.
    pub fn echo(bind: &str) -> Self {
        Self::start(bind, |d| Some(d.to_vec()))
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The answer of the stub resolver for every A question.
pub const STUB_ANSWER: [u8; 4] = [192, 0, 2, 55];
/// The answer of the stub resolver for every AAAA question: 2001:db8::55.
pub const STUB_ANSWER6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x55];

/// Builds the stub resolver's answer to a DNS query: one A record of [`STUB_ANSWER`] for an A
/// question, one AAAA of [`STUB_ANSWER6`] for AAAA, NXDOMAIN for names starting with "nx", an
/// empty NOERROR otherwise.
pub fn dns_answer(q: &[u8]) -> Option<Vec<u8>> {
    if q.len() < 12 {
        return None;
    }
    let mut i = 12;
    while i < q.len() && q[i] != 0 {
        i += 1 + q[i] as usize;
    }
    let qend = i + 5;
    if qend > q.len() {
        return None;
    }
    let qtype = u16::from_be_bytes([q[i + 1], q[i + 2]]);
    let nx = q.get(13..15) == Some(b"nx");
    let mut r = q[..qend].to_vec();
    r[2] = 0x81; // QR, RD
    r[3] = if nx { 0x83 } else { 0x80 }; // RA, rcode
    let answer = (qtype == 1 || qtype == 28) && !nx;
    r[6..12].copy_from_slice(&[0, u8::from(answer), 0, 0, 0, 0]);
    if answer && qtype == 1 {
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        r.extend_from_slice(&STUB_ANSWER);
    } else if answer {
        r.extend_from_slice(&[0xc0, 12, 0, 28, 0, 1, 0, 0, 0, 60, 0, 16]);
        r.extend_from_slice(&STUB_ANSWER6);
    }
    Some(r)
}

/// A DNS upstream on 127.0.0.1 answering with `reply`, and the count of datagrams it got.
pub fn counted_upstream(
    reply: fn(&[u8]) -> Option<Vec<u8>>,
) -> (UdpServer, String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = n.clone();
    let s = UdpServer::serve("127.0.0.1", move |sock, d, from| {
        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Some(r) = reply(d) {
            let _ = sock.send_to(&r, from);
        }
    });
    let up = format!("127.0.0.1:{}", s.addr.port());
    (s, up, n)
}

/// The stub's answer with another A record: 192.0.2.77 (a route's own server).
pub fn corp_answer(q: &[u8]) -> Option<Vec<u8>> {
    let mut r = dns_answer(q)?;
    if r.ends_with(&STUB_ANSWER) {
        let at = r.len() - 1;
        r[at] = 77;
    }
    Some(r)
}

/// A DNS stub resolver on loopback over UDP and TCP (same port).
pub struct DnsStub {
    /// UDP side.
    pub udp: UdpServer,
    /// TCP side.
    pub tcp: TcpServer,
}

impl DnsStub {
    /// Starts the stub on 127.0.0.1: UDP and TCP on the same port number.
    pub fn start() -> Self {
        Self::start_on("127.0.0.1")
    }

    /// Starts the stub on a loopback address (127.0.0.1 or ::1).
    pub fn start_on(ip: &str) -> Self {
        Self::start_with(ip, false)
    }

    /// A stub on 127.0.0.1 answering as a route's own server: [`corp_answer`].
    pub fn corp() -> Self {
        Self::start_with("127.0.0.1", true)
    }

    fn start_with(ip: &str, corp: bool) -> Self {
        for _ in 0..50 {
            let udp = UdpServer::start(ip, if corp { corp_answer } else { dns_answer });
            let port = udp.addr.port();
            let Ok(listener) = TcpListener::bind((ip, port)) else { continue };
            let tcp = if corp {
                TcpServer::serve(listener, |c| answer_tcp(c, corp_answer))
            } else {
                TcpServer::serve(listener, |c| answer_tcp(c, dns_answer))
            };
            return Self { udp, tcp };
        }
        panic!("no port free for both UDP and TCP on {ip}");
    }
}

/// Answers one DNS-over-TCP query on `c` with `answer`.
fn answer_tcp(mut c: std::net::TcpStream, answer: fn(&[u8]) -> Option<Vec<u8>>) {
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    let mut len = [0u8; 2];
    if c.read_exact(&mut len).is_err() {
        return;
    }
    let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
    if c.read_exact(&mut q).is_err() {
        return;
    }
    if let Some(r) = answer(&q) {
        let mut msg = (r.len() as u16).to_be_bytes().to_vec();
        msg.extend_from_slice(&r);
        let _ = c.write_all(&msg);
    }
}

/// A directory under the temp dir, emptied on creation and removed on drop (also when a test
/// fails part-way, so no `/tmp/warren-*` is left behind).
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// `warren-<tag>-<pid>` under the temp dir.
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("warren-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl std::ops::Deref for ScratchDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for ScratchDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Output of a finished process.
#[derive(Debug)]
pub struct Finished {
    /// Exit code (128 + signal when killed).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Kills (by PID) and reaps a child on drop unless it was waited for.
pub struct Guard(pub Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `cmd` to completion within `limit`; on overrun kills it (by PID) and panics.
pub fn run_with_deadline(mut cmd: Command, limit: Duration) -> Finished {
    use std::os::unix::process::ExitStatusExt;
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut guard = Guard(Some(child));
    let child = guard.0.as_mut().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    guard.0 = None;
    let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Finished { code, stdout: t_out.join().unwrap(), stderr: t_err.join().unwrap() }
}

/// `warren run [net_args] -- argv`, within `limit`.
pub fn warren_run(net_args: &[&str], argv: &[&str], limit: Duration) -> Finished {
    let mut cmd = Command::new(warren());
    cmd.arg("run").args(net_args).arg("--").args(argv);
    run_with_deadline(cmd, limit)
}

/// Runs nettool inside a fresh `warren run`, asserting both succeed; returns nettool's line.
///
/// warren logs at debug level (flows, host connects), and a failing nettool is followed by the
/// container's addresses and neighbours: all of it is printed only when the assertion fails.
pub fn nettool_in(net_args: &[&str], tool_args: &[&str], limit: Duration) -> String {
    let tool = nettool();
    let script = r#""$@" || { rc=$?; ip addr; ip neigh; ip -6 neigh; ip -6 route; exit $rc; }"#;
    let mut argv = vec!["sh", "-c", script, "sh", tool.to_str().unwrap()];
    argv.extend_from_slice(tool_args);
    let mut cmd = Command::new(warren());
    cmd.arg("run").args(net_args).arg("--").args(&argv).env("RUST_LOG", "warren=debug");
    let f = run_with_deadline(cmd, limit);
    assert_eq!(f.code, 0, "nettool {tool_args:?} failed: stdout={:?} stderr={:?}", f.stdout, f.stderr);
    f.stdout.trim().to_string()
}

/// A `warren run` left running (a server inside), killed by PID when dropped.
pub struct Running {
    /// The warren process.
    pub guard: Guard,
    /// Lines warren and the command printed on stdout so far.
    pub stdout: Arc<std::sync::Mutex<Vec<String>>>,
    /// The API socket path.
    pub api: PathBuf,
}

static API_SEQ: AtomicUsize = AtomicUsize::new(0);

impl Running {
    /// Starts `warren run [args] --api-socket X -- argv` and waits for the line `serving`.
    pub fn start(args: &[&str], argv: &[&str]) -> Self {
        let n = API_SEQ.fetch_add(1, Ordering::SeqCst);
        let api = std::env::temp_dir().join(format!("warren-test-{}-{n}.sock", std::process::id()));
        let mut cmd = Command::new(warren());
        cmd.arg("run").args(args).arg("--api-socket").arg(&api).arg("--").args(argv);
        Self::spawn(cmd, api)
    }

    /// Spawns a prepared `warren run` command and waits for the line `serving`.
    pub fn spawn(mut cmd: Command, api: PathBuf) -> Self {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn warren");
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                l2.lock().unwrap().push(line);
            }
        });
        let r = Self { guard: Guard(Some(child)), stdout: lines, api };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !r.stdout.lock().unwrap().iter().any(|l| l == "serving") {
            assert!(Instant::now() < deadline, "server inside never started: {:?}", r.stdout.lock().unwrap());
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    /// The host address printed for an auto-picked `proto` port ("published tcp ADDR -> ...").
    pub fn published(&self, proto: &str, nth: usize) -> SocketAddr {
        let lines = self.stdout.lock().unwrap();
        let line = lines
            .iter()
            .filter(|l| l.starts_with(&format!("published {proto} ")))
            .nth(nth)
            .unwrap_or_else(|| panic!("no published {proto} line #{nth} in {lines:?}"));
        line.split_whitespace().nth(2).unwrap().parse().unwrap()
    }

    /// The container's first process (the command warren started).
    pub fn container_pid(&self) -> String {
        let pid = self.guard.0.as_ref().expect("running").id();
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap()
            .split_whitespace()
            .next()
            .expect("the container runs")
            .to_string()
    }

    /// Runs `nettool ARGS` inside the container's namespaces and returns its trimmed stdout,
    /// asserting it succeeded.
    pub fn nettool(&self, args: &[&str], limit: Duration) -> String {
        let mut c = Command::new("nsenter");
        c.args(["--preserve-credentials", "-U", "-n", "-t", &self.container_pid()]).arg(nettool()).args(args);
        let f = run_with_deadline(c, limit);
        assert_eq!(f.code, 0, "nettool {args:?} in the container failed: {} {}", f.stdout, f.stderr);
        f.stdout.trim().to_string()
    }

    /// `warren stats --json` of this instance: the `stats` object.
    pub fn stats(&self) -> serde_json::Value {
        let mut cmd = Command::new(warren());
        cmd.args(["stats", "--json", "--api-socket"]).arg(&self.api);
        let f = run_with_deadline(cmd, Duration::from_secs(30));
        assert_eq!(f.code, 0, "{}", f.stderr);
        let mut v: serde_json::Value = serde_json::from_str(&f.stdout).unwrap();
        v["stats"].take()
    }

    /// `warren port ARGS --api-socket X`.
    pub fn port(&self, args: &[&str]) -> Finished {
        let mut cmd = Command::new(warren());
        cmd.arg("port").args(args).arg("--api-socket").arg(&self.api);
        run_with_deadline(cmd, Duration::from_secs(30))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // SIGTERM first: warren forwards it to the container and exits cleanly (removing its
        // API socket); the Guard kills by PID if that takes too long.
        if let Some(c) = self.guard.0.as_mut() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    self.guard.0 = None;
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = std::fs::remove_file(&self.api);
    }
}

/// Connects to `to` (from `from` when given), sends `line`, half-closes and reads to EOF.
pub fn tcp_request(to: SocketAddr, from: Option<std::net::IpAddr>, line: &str) -> std::io::Result<Vec<u8>> {
    let s = socket2::Socket::new(socket2::Domain::for_address(to), socket2::Type::STREAM, None)?;
    if let Some(ip) = from {
        s.bind(&SocketAddr::new(ip, 0).into())?;
    }
    s.connect_timeout(&to.into(), Duration::from_secs(10))?;
    let mut s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.write_all(line.as_bytes())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}

/// The local address of a client connection the test makes, for source assertions.
pub fn tcp_peer_seen(to: SocketAddr, from: Option<std::net::IpAddr>) -> (SocketAddr, String) {
    let s = socket2::Socket::new(socket2::Domain::for_address(to), socket2::Type::STREAM, None).unwrap();
    if let Some(ip) = from {
        s.bind(&SocketAddr::new(ip, 0).into()).unwrap();
    }
    s.connect_timeout(&to.into(), Duration::from_secs(10)).unwrap();
    let mut s: TcpStream = s.into();
    let local = s.local_addr().unwrap();
    s.write_all(b"peer\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    (local, out.trim().to_string())
}

/// A free port on `ip` for TCP and UDP at the time of asking.
pub fn free_port(ip: &str) -> u16 {
    loop {
        let t = TcpListener::bind((ip, 0)).unwrap();
        let p = t.local_addr().unwrap().port();
        if UdpSocket::bind((ip, p)).is_ok() {
            return p;
        }
    }
}

/// A port on `ip` free for TCP and UDP at the time of asking, below the kernel's default
/// ephemeral range (32768-60999), where a container's services bind.
pub fn free_service_port(ip: &str) -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let start = 20000 + std::process::id() % 6000;
    loop {
        let p = (start + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) * 7) % 12000 + 20000;
        let p = u16::try_from(p).unwrap();
        if TcpListener::bind((ip, p)).is_ok() && UdpSocket::bind((ip, p)).is_ok() {
            return p;
        }
    }
}

/// UDP sockets on 127.0.0.1 and ::1 with the same port.
pub fn udp_loopback_pair() -> (UdpSocket, UdpSocket) {
    loop {
        let v4 = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = v4.local_addr().unwrap().port();
        if let Ok(v6) = UdpSocket::bind(("::1", port)) {
            return (v4, v6);
        }
    }
}

/// A process in a fresh user + network namespace, as rootless tools create (root inside, our
/// uid outside), killed by PID when the guard drops. Returns once it is inside them.
pub fn namespace_holder() -> (Guard, u32) {
    let mut cmd = Command::new("unshare");
    cmd.args(["--user", "--map-root-user", "--net", "sleep", "120"]);
    let holder = Guard(Some(cmd.spawn().expect("unshare")));
    let pid = holder.0.as_ref().unwrap().id();
    let own = std::fs::read_link("/proc/self/ns/net").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    // Ready once it runs `sleep`: unshare has then also written the uid map, without which an
    // unprivileged nsenter into it has no rights there (the net namespace changes first).
    let ready = || {
        std::fs::read_link(format!("/proc/{pid}/ns/net")).ok().as_ref() != Some(&own)
            && std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
    };
    while !ready() {
        assert!(Instant::now() < deadline, "the namespace holder never unshared");
        std::thread::sleep(Duration::from_millis(10));
    }
    (holder, pid)
}

/// The datagram `i` of a `nettool udp-blast` of `size`-byte datagrams: every seventh is half
/// as long; it starts with `i` and the rest is derived from `i`.
pub fn blast_datagram(i: u32, size: usize, out: &mut Vec<u8>) {
    let n = if i % 7 == 6 { size / 2 } else { size }.max(4);
    out.clear();
    out.extend_from_slice(&i.to_be_bytes());
    out.extend((4..n).map(|j| (i as usize * 7 + j * 13) as u8));
}

/// A receiver of a `nettool udp-blast` (datagram `i` starts with `i`; every seventh is half
/// as long; the rest is derived from `i`), checking each datagram that arrives.
pub struct Blast {
    ino: u64,
    /// Kept open until its drop counter is read.
    _kept: UdpSocket,
    count: u32,
    rx: JoinHandle<(u32, Vec<String>)>,
}

impl Blast {
    /// Starts receiving `count` datagrams of `size` bytes on `sock`, until the last one or
    /// 1.5 s of silence.
    pub fn receive(sock: UdpSocket, count: u32, size: usize) -> Self {
        sock.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
        let ino = inode(&sock);
        let kept = sock.try_clone().unwrap();
        let rx = std::thread::spawn(move || {
            let (mut buf, mut want) = (vec![0u8; 65536], Vec::new());
            let (mut got, mut next, mut bad) = (0u32, 0u32, Vec::new());
            while let Ok(n) = sock.recv(&mut buf) {
                let i = u32::from_be_bytes(buf[..4].try_into().unwrap());
                blast_datagram(i, size, &mut want);
                let intact = buf[..n] == want[..];
                if !intact || i < next {
                    bad.push(format!("datagram {i}: {n} bytes, intact {intact}, after {next}"));
                }
                next = i + 1;
                got += 1;
                if i == count - 1 {
                    break;
                }
            }
            (got, bad)
        });
        Blast { ino, _kept: kept, count, rx }
    }

    /// Asserts that what arrived was whole and in order and that every other datagram was
    /// dropped by the receiver's full buffer (not lost on the way), at most a tenth of them.
    /// `what` names the path; `context` adds detail to a failure (warren's counters).
    pub fn check(self, what: &str, context: impl Fn() -> String) {
        let (got, bad) = self.rx.join().unwrap();
        assert!(bad.is_empty(), "{what}: datagrams changed or out of order: {bad:?} {}", context());
        let dropped = udp_drops(self.ino);
        let count = u64::from(self.count);
        assert_eq!(
            u64::from(got) + dropped,
            count,
            "{what}: all arrived or were dropped by a full receive buffer; {}",
            context()
        );
        assert!(dropped * 10 <= count, "{what}: {dropped} dropped by the receiver of {count}");
    }
}

/// Inode of a socket, to find it in /proc/net/udp.
pub fn inode(s: &UdpSocket) -> u64 {
    use std::os::fd::AsRawFd;
    std::fs::metadata(format!("/proc/self/fd/{}", s.as_raw_fd()))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap()
}

/// Checks the report of a container that received a `udp-blast` of `count` datagrams
/// ("ok GOT DROPPED": all that arrived was whole and in order): every datagram arrived or
/// was dropped by a full receive buffer, the container's or that of warren's host socket at
/// `port` (`host_before`: its drops before the blast), at most a tenth of them.
pub fn check_blast_report(
    what: &str,
    report: &str,
    count: u32,
    port: u16,
    host_before: u64,
    context: impl Fn() -> String,
) {
    let f: Vec<u64> = report
        .strip_prefix("ok ")
        .unwrap_or_else(|| panic!("{what}: {report} {}", context()))
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    let (got, dropped, host) = (f[0], f[1], udp_drops_at_port(port) - host_before);
    eprintln!("{what}: {got} of {count} arrived, {dropped} dropped by the receiver, {host} by warren's host socket");
    assert_eq!(
        got + dropped + host,
        u64::from(count),
        "{what}: {got} arrived, {dropped} dropped by the receiver, {host} by warren's host socket; {}",
        context()
    );
    assert!((dropped + host) * 10 <= u64::from(count), "{what}: {dropped} + {host} dropped of {count}");
}

/// Datagrams dropped by full receive buffers of the UDP sockets of this network namespace
/// whose local or remote port is `port` (warren's socket for a flow or listener there).
pub fn udp_drops_at_port(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap() + &std::fs::read_to_string("/proc/net/udp6").unwrap();
    let hex = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| l.split_whitespace().skip(1).take(2).any(|a| a.ends_with(&hex)))
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

/// Datagrams a UDP socket of this network namespace dropped (its receive buffer was full).
pub fn udp_drops(inode: u64) -> u64 {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap() + &std::fs::read_to_string("/proc/net/udp6").unwrap();
    let line = table.lines().find(|l| l.split_whitespace().nth(9) == Some(&inode.to_string()));
    line.and_then(|l| l.split_whitespace().last()?.parse().ok()).expect("the socket in /proc/net/udp{,6}")
}

/// The fields of /proc/PID/stat after the command name (which may hold spaces and
/// parentheses): element 0 is the state, field 3 of proc(5), so field N is element N - 3.
pub fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat.rsplit_once(')')?.1.split_whitespace().map(str::to_string).collect())
}
