//! warren-slirp4netns against the real slirp4netns: the same scenarios, the same observations.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::*;

const SHORT: Duration = Duration::from_secs(30);

/// The engines to compare: warren's drop-in, and the real slirp4netns when installed.
fn engines() -> Vec<PathBuf> {
    let ours = std::env::var_os("WARREN_SLIRP_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_warren-slirp4netns")));
    let mut v = vec![ours];
    match ["/usr/bin/slirp4netns", "/usr/local/bin/slirp4netns"].iter().find(|p| Path::new(p).exists()) {
        Some(real) => v.push(PathBuf::from(real)),
        None => eprintln!("real slirp4netns not installed: checking warren-slirp4netns alone"),
    }
    v
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn bad_arguments_are_answered_identically() {
    require_isolation();
    let cases: &[&str] = &[
        "",
        "abc tap0",
        "-m 0 1 tap0",
        "--mtu=65522 1 tap0",
        "--cidr=10.0.2.100/24 1 tap0",
        "--cidr=10.0.2.0/26 1 tap0",
        "--cidr=foo 1 tap0",
        "-e x 1 tap0",
        "-r -1 1 tap0",
        "--netns-type=path /nonexistent/ns tap0",
        "--userns-path=/nonexistent/userns 1 tap0",
        "--macaddress=02:00:00:00:00:01 1 tap0",
        "--target-type=foo 1 tap0",
        "--bogus 1 tap0",
        "1",
    ];
    for case in cases {
        let mut seen = Vec::new();
        for e in engines() {
            let mut cmd = Command::new(&e);
            cmd.args(case.split_whitespace());
            let f = run_with_deadline(cmd, SHORT);
            let stderr = f.stderr.replace(e.to_str().unwrap(), "PROG").replace(&name(&e), "PROG");
            seen.push((name(&e), f.code, stderr, f.stdout.starts_with("Usage: ")));
        }
        for s in &seen[1..] {
            assert_eq!((s.1, &s.2, s.3), (seen[0].1, &seen[0].2, seen[0].3), "{case:?}: {} vs {}", seen[0].0, s.0);
        }
        assert_eq!(seen[0].1, 1, "{case:?} fails");
    }
}

#[test]
fn help_and_version_as_callers_probe_them() {
    require_isolation();
    for e in engines() {
        let mut cmd = Command::new(&e);
        cmd.arg("--help");
        let f = run_with_deadline(cmd, SHORT);
        assert_eq!(f.code, 0);
        for flag in [
            "--configure",
            "--exit-fd",
            "--ready-fd",
            "--mtu",
            "--enable-ipv6",
            "--api-socket",
            "--cidr",
            "--disable-host-loopback",
            "--netns-type",
            "--userns-path",
            "--enable-sandbox",
            "--enable-seccomp",
            "--outbound-addr",
            "--outbound-addr6",
            "--disable-dns",
            "--macaddress",
            "--target-type",
            "--help",
            "--version",
        ] {
            assert!(f.stdout.contains(flag), "{}: --help lacks {flag}", name(&e));
        }
        let mut cmd = Command::new(&e);
        cmd.arg("--version");
        let f = run_with_deadline(cmd, SHORT);
        assert_eq!(f.code, 0);
        assert!(f.stdout.starts_with("slirp4netns version 1."), "{}: {}", name(&e), f.stdout);
    }
}

/// Opens a FIFO read-write (never blocks, keeps both ends alive).
fn fifo(path: &Path) -> OwnedFd {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap().into()
}

fn api(sock: &Path, req: &str) -> String {
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// What a scenario observed with one engine.
#[derive(Debug, PartialEq)]
struct Observed {
    ready: String,
    addr: String,
    link: String,
    route: String,
    api: Vec<String>,
    forward_ok: bool,
    /// Who a loopback client of the forward is to the server inside, its port written CLIENT
    /// when it is the client's own.
    peer_seen: String,
    outbound_ok: bool,
    exit_code: i32,
    socket_removed: bool,
    /// The answer to warren's `stats` request (slirp4netns has none).
    stats: String,
}

fn scenario(engine: &Path, host_port: u16, outbound: &TcpServer) -> Observed {
    let (holder, pid) = namespace_holder();
    let dir = ScratchDir::new(&format!("slirp-{}", name(engine)));
    let (ready_p, exit_p, sock) = (dir.join("ready"), dir.join("exit"), dir.join("api.sock"));
    let ready = fifo(&ready_p);
    let exit = fifo(&exit_p);
    let script = format!(
        "exec {} -c --mtu=65520 --macaddress=02:00:00:00:00:42 -a {} -r 3 -e 4 {pid} tap0 3>{} 4<{} >/dev/null 2>&1",
        engine.display(),
        sock.display(),
        ready_p.display(),
        exit_p.display()
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]);
    let mut eng = Guard(Some(cmd.spawn().unwrap()));
    let mut ready_file = std::fs::File::from(ready);
    let mut b = [0u8; 1];
    ready_file.read_exact(&mut b).unwrap();
    let inside = |c: &str| {
        let mut cmd = Command::new("nsenter");
        cmd.args(["--preserve-credentials", "-U", "-n", "-t", &pid.to_string(), "sh", "-c", c]);
        run_with_deadline(cmd, SHORT).stdout
    };
    let addr = inside("ip -o -4 addr show dev tap0 | awk '{print $4, $6}'");
    let link = inside("ip -o link show dev tap0 | grep -o 'mtu [0-9]*\\|link/ether [0-9a-f:]*' | tr '\\n' ' '");
    let route = inside("ip route show default");
    // A server inside for the forward.
    let mut srv = Command::new("nsenter");
    srv.args(["--preserve-credentials", "-U", "-n", "-t", &pid.to_string()]).arg(nettool()).args(["serve", "80"]);
    srv.stdout(std::process::Stdio::null());
    let _srv = Guard(Some(srv.spawn().unwrap()));
    let add = format!(
        r#"{{"execute":"add_hostfwd","arguments":{{"proto":"tcp","host_addr":"127.0.0.1","host_port":{host_port},"guest_addr":"10.0.2.100","guest_port":80}}}}"#
    );
    let mut replies = vec![api(&sock, &add), api(&sock, r#"{"execute":"list_hostfwd"}"#)];
    let to = SocketAddr::from(([127, 0, 0, 1], host_port));
    let deadline = Instant::now() + SHORT;
    let forward_ok = loop {
        // Until the server inside listens, an engine may accept and then close at once.
        if let Ok(out) = tcp_request(to, None, "get 1048576 9\n")
            && hex(&<sha2::Sha256 as sha2::Digest>::digest(&out)) == stream_hash(9, 1 << 20)
        {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (local, peer) = tcp_peer_seen(to, None);
    let peer_seen = peer.replace(&format!(":{}", local.port()), ":CLIENT");
    let out = inside(&format!("{} download 10.0.2.2 {} 1048576 4", nettool().display(), outbound.addr.port()));
    let outbound_ok = out.trim() == format!("ok 1048576 {}", stream_hash(4, 1 << 20));
    let stats = api(&sock, r#"{"execute":"stats"}"#);
    replies.push(api(&sock, "{nope"));
    replies.push(api(&sock, r#"{"execute":"frobnicate"}"#));
    replies.push(api(&sock, r#"{"execute":"add_hostfwd","arguments":{"proto":"sctp","host_port":1,"guest_port":1}}"#));
    replies.push(api(&sock, r#"{"execute":"remove_hostfwd","arguments":{"id":99}}"#));
    replies.push(api(&sock, &add)); // the same host port again
    replies.push(api(&sock, r#"{"execute":"remove_hostfwd"}"#));
    replies.push(api(
        &sock,
        r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"::1","host_port":2,"guest_port":80}}"#,
    ));
    replies.push(api(&sock, "[1]"));
    replies.push(api(&sock, "{}"));
    replies.push(api(&sock, r#"{"execute":"remove_hostfwd","arguments":{"id":1}}"#));
    replies.push(api(&sock, r#"{"execute":"list_hostfwd"}"#));
    // Hang up the exit fd: the engine exits 0.
    drop(exit);
    let child = eng.0.as_mut().unwrap();
    let deadline = Instant::now() + SHORT;
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code().unwrap_or(-1);
        }
        assert!(Instant::now() < deadline, "{} ignored the exit fd", name(engine));
        std::thread::sleep(Duration::from_millis(20));
    };
    eng.0 = None;
    let socket_removed = !sock.exists();
    drop(holder);
    Observed {
        ready: String::from_utf8_lossy(&b).into_owned(),
        addr,
        link,
        route,
        api: replies,
        stats,
        forward_ok,
        peer_seen,
        outbound_ok,
        exit_code: code,
        socket_removed,
    }
}

#[test]
fn configure_ready_exit_api_forward_and_outbound_match() {
    require_isolation();
    let outbound = TcpServer::download("127.0.0.1");
    let mut seen = Vec::new();
    for e in engines() {
        let port = free_port("127.0.0.1");
        seen.push((name(&e), scenario(&e, port, &outbound)));
    }
    let ours = &seen[0].1;
    assert_eq!(ours.ready, "1");
    assert_eq!(ours.addr.trim(), "10.0.2.100/24 10.0.2.255");
    assert!(ours.link.contains("mtu 65520") && ours.link.contains("link/ether 02:00:00:00:00:42"), "{}", ours.link);
    assert_eq!(ours.route.trim(), "default via 10.0.2.2 dev tap0");
    assert!(ours.forward_ok && ours.outbound_ok);
    assert_eq!(ours.peer_seen, "10.0.2.2:CLIENT", "a loopback client seen as the gateway with its own port");
    assert_eq!(ours.exit_code, 0);
    assert!(ours.socket_removed);
    // The TAP warren-slirp4netns creates has a queue (and a data-path thread) per CPU, up to 4.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    assert!(ours.stats.contains(&format!("\"queues\":{cpus},")), "{}", ours.stats);
    for (n, o) in &seen[1..] {
        // Port numbers differ between the runs: compare the API replies with them masked.
        let mask = |v: &[String]| -> Vec<String> {
            v.iter()
                .map(|s| {
                    let mut out = String::new();
                    let mut rest = s.as_str();
                    while let Some(i) = rest.find("\"host_port\":") {
                        out.push_str(&rest[..i + 12]);
                        rest = rest[i + 12..].trim_start_matches(|c: char| c.is_ascii_digit());
                        out.push('N');
                    }
                    out + rest
                })
                .collect()
        };
        // list_hostfwd: warren adds the documented {"return":{"entries":...}} next to the real key.
        let real_shape = |v: Vec<String>| -> Vec<String> {
            v.into_iter()
                .map(|s| s.split(",\"return\":{\"entries\"").next().unwrap().to_string())
                .map(|s| if s.starts_with("{\"entries\"") && !s.ends_with('}') { s + "}" } else { s })
                .collect()
        };
        assert_eq!(real_shape(mask(&o.api)), real_shape(mask(&ours.api)), "API replies: {n} vs warren-slirp4netns");
        assert_eq!(
            (
                &o.ready,
                &o.addr,
                &o.link,
                &o.route,
                o.forward_ok,
                &o.peer_seen,
                o.outbound_ok,
                o.exit_code,
                o.socket_removed
            ),
            (
                &ours.ready,
                &ours.addr,
                &ours.link,
                &ours.route,
                ours.forward_ok,
                &ours.peer_seen,
                ours.outbound_ok,
                ours.exit_code,
                ours.socket_removed
            ),
            "{n} vs warren-slirp4netns"
        );
    }
}

/// Opens tap0 inside `pid`'s namespaces from a forked child, configures it there, and execs
/// the engine in the suite's namespace with the fd: the `--netns-type=tapfd` calling model.
const TAPFD_LAUNCHER: &str = r#"
import os, socket, sys, fcntl, struct, ctypes, subprocess
pid, engine = sys.argv[1], sys.argv[2]
parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
k = os.fork()
if k == 0:
    libc = ctypes.CDLL(None, use_errno=True)
    for ns in ("user", "net"):
        if libc.setns(os.open("/proc/%s/ns/%s" % (pid, ns), os.O_RDONLY), 0) != 0:
            os._exit(2)
    t = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(t, 0x400454ca, struct.pack("16sH", b"tap0", 0x0002 | 0x1000))
    subprocess.run(["sh", "-c", "ip link set lo up; ip link set tap0 up; ip addr add 10.0.2.100/24 dev tap0;"
                    " ip route add default via 10.0.2.2"], check=True)
    socket.send_fds(child, [b"x"], [t])
    os._exit(0)
_, fds, _, _ = socket.recv_fds(parent, 16, 1)
os.waitpid(k, 0)
os.set_inheritable(fds[0], True)
os.execv(engine, [engine, "--netns-type=tapfd", str(fds[0])])
"#;

#[test]
fn tapfd_mode_serves_an_adopted_tap() {
    require_isolation();
    let srv = TcpServer::download("127.0.0.1");
    // tapfd mode arrived in slirp4netns 1.3: an installed 1.2 has no such mode to compare with.
    let with_tapfd = engines().into_iter().filter(|e| {
        let mut cmd = Command::new(e);
        cmd.arg("--help");
        let has = run_with_deadline(cmd, SHORT).stdout.contains("tapfd");
        if !has {
            eprintln!("{} has no tapfd mode: not compared", e.display());
        }
        has
    });
    for e in with_tapfd.collect::<Vec<_>>() {
        let (holder, pid) = namespace_holder();
        let mut launch = Command::new("python3");
        launch.args(["-c", TAPFD_LAUNCHER, &pid.to_string()]).arg(&e);
        launch.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        let mut eng = Guard(Some(launch.spawn().unwrap()));
        let deadline = Instant::now() + SHORT;
        loop {
            let mut cmd = Command::new("nsenter");
            cmd.args(["--preserve-credentials", "-U", "-n", "-t", &pid.to_string()]).arg(nettool());
            cmd.args(["download", "10.0.2.2", &srv.addr.port().to_string(), "4194304", "6"]);
            let f = run_with_deadline(cmd, SHORT);
            if f.code == 0 {
                assert_eq!(f.stdout.trim(), format!("ok 4194304 {}", stream_hash(6, 4 << 20)), "{}", name(&e));
                break;
            }
            assert!(Instant::now() < deadline, "{}: tapfd mode never carried traffic: {f:?}", name(&e));
            std::thread::sleep(Duration::from_millis(100));
        }
        let child = eng.0.as_mut().unwrap();
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let _ = child.wait();
        eng.0 = None;
        drop(holder);
    }
}

#[test]
fn sandbox_confines_like_slirp4netns() {
    require_isolation();
    let srv = TcpServer::download("127.0.0.1");
    let mut seen = Vec::new();
    for e in engines() {
        let (_holder, pid) = namespace_holder();
        let dir = ScratchDir::new(&format!("sandbox-{}", name(&e)));
        let ready_p = dir.join("ready");
        let ready = fifo(&ready_p);
        let script =
            format!("exec {} --enable-sandbox -c -r 3 {pid} tap0 3>{} >/dev/null 2>&1", e.display(), ready_p.display());
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script]);
        let mut eng = Guard(Some(cmd.spawn().unwrap()));
        let mut b = [0u8; 1];
        std::fs::File::from(ready).read_exact(&mut b).unwrap();
        let epid = eng.0.as_ref().unwrap().id();
        let status = std::fs::read_to_string(format!("/proc/{epid}/status")).unwrap();
        let field = |k: &str| status.lines().find(|l| l.starts_with(k)).unwrap_or("").to_string();
        let mut root: Vec<String> = std::fs::read_dir(format!("/proc/{epid}/root"))
            .map(|rd| rd.flatten().map(|d| d.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        root.sort();
        let mut cmd = Command::new("nsenter");
        cmd.args(["--preserve-credentials", "-U", "-n", "-t", &pid.to_string()]).arg(nettool());
        cmd.args(["download", "10.0.2.2", &srv.addr.port().to_string(), "1048576", "2"]);
        let f = run_with_deadline(cmd, SHORT);
        let traffic = f.stdout.trim() == format!("ok 1048576 {}", stream_hash(2, 1 << 20));
        let child = eng.0.as_mut().unwrap();
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let _ = child.wait();
        eng.0 = None;
        seen.push((name(&e), field("CapEff:"), field("CapBnd:"), field("NoNewPrivs:"), root, traffic));
    }
    let ours = &seen[0];
    assert_eq!(ours.1, "CapEff:\t0000000000000400", "only CAP_NET_BIND_SERVICE");
    assert_eq!(ours.2, "CapBnd:\t0000000000000400");
    assert_eq!(ours.3, "NoNewPrivs:\t1");
    assert_eq!(ours.4, ["etc", "run"], "nothing but /etc and /run is reachable");
    assert!(ours.5, "traffic flows through the sandboxed engine");
    for other in &seen[1..] {
        assert_eq!(
            (&other.1, &other.2, &other.3, other.5),
            (&ours.1, &ours.2, &ours.3, ours.5),
            "{} vs {}",
            other.0,
            ours.0
        );
    }
}

#[test]
fn seccomp_allowlist_keeps_every_path_working() {
    require_isolation();
    // warren's own engine only: the allowlist is warren's (slirp4netns ships a blocklist).
    let e = engines().remove(0);
    let srv = TcpServer::download("127.0.0.1");
    let (_holder, pid) = namespace_holder();
    let dir = ScratchDir::new("seccomp");
    let (ready_p, sock) = (dir.join("ready"), dir.join("api.sock"));
    let ready = fifo(&ready_p);
    let script = format!(
        "exec {} --enable-sandbox --enable-seccomp -c --mtu=65520 -a {} -r 3 {pid} tap0 3>{} >/dev/null 2>&1",
        e.display(),
        sock.display(),
        ready_p.display()
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]);
    let mut eng = Guard(Some(cmd.spawn().unwrap()));
    let mut b = [0u8; 1];
    std::fs::File::from(ready).read_exact(&mut b).unwrap();
    let epid = eng.0.as_ref().unwrap().id();
    let status = std::fs::read_to_string(format!("/proc/{epid}/status")).unwrap();
    assert!(status.lines().any(|l| l == "Seccomp:\t2"), "a seccomp filter is active");
    // Outbound TCP through the stack.
    let inside = |args: &[&str]| {
        let mut cmd = Command::new("nsenter");
        cmd.args(["--preserve-credentials", "-U", "-n", "-t", &pid.to_string()]).arg(nettool()).args(args);
        run_with_deadline(cmd, SHORT)
    };
    let f = inside(&["download", "10.0.2.2", &srv.addr.port().to_string(), "8388608", "3"]);
    assert_eq!(f.stdout.trim(), format!("ok 8388608 {}", stream_hash(3, 8 << 20)));
    // A forward added over the API, carried by the userspace stack.
    let mut server = Command::new("nsenter");
    server.args(["--preserve-credentials", "-U", "-n", "-t", &pid.to_string()]).arg(nettool()).args(["serve", "80"]);
    server.stdout(std::process::Stdio::null());
    let _server = Guard(Some(server.spawn().unwrap()));
    let port = free_port("127.0.0.1");
    let add = format!(
        r#"{{"execute":"add_hostfwd","arguments":{{"proto":"tcp","host_addr":"127.0.0.1","host_port":{port},"guest_port":80}}}}"#
    );
    assert_eq!(api(&sock, &add), r#"{"return":{"id":1}}"#);
    let deadline = Instant::now() + SHORT;
    loop {
        if let Ok(out) = tcp_request(SocketAddr::from(([127, 0, 0, 1], port)), None, "get 4194304 5\n")
            && hex(&<sha2::Sha256 as sha2::Digest>::digest(&out)) == stream_hash(5, 4 << 20)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the forward never worked under seccomp");
        std::thread::sleep(Duration::from_millis(50));
    }
    // UDP (a DNS query to a closed port answers ICMP) and a clean exit that removes the socket.
    let _ = inside(&["udp-ask", "10.0.2.2", "9", "x"]);
    let child = eng.0.as_mut().unwrap();
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let st = child.wait().unwrap();
    eng.0 = None;
    assert_eq!(st.code(), Some(0), "clean exit under seccomp");
    assert!(!sock.exists(), "API socket removed");
}

/// `-c -6` as Podman runs it: the guest autoconfigures fd00::/64 from router advertisements.
fn ipv6_scenario(engine: &Path, ours: bool, server: &TcpServer) -> (String, String, Vec<String>, bool) {
    let (holder, pid) = namespace_holder();
    let dir = ScratchDir::new(&format!("slirp6-{}", name(engine)));
    let (ready_p, sock) = (dir.join("ready"), dir.join("api.sock"));
    let ready = fifo(&ready_p);
    let inside = |c: &str| {
        let mut cmd = Command::new("nsenter");
        cmd.args(["--preserve-credentials", "-U", "-n", "-t", &pid.to_string(), "sh", "-c", c]);
        run_with_deadline(cmd, SHORT).stdout
    };
    // As Podman does around slirp4netns start-up (podman#11062): no DAD wait.
    inside("echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad");
    let script = format!(
        "exec {} -c -6 --macaddress=02:00:00:00:00:42 -a {} -r 3 {pid} tap0 3>{} >/dev/null 2>&1",
        engine.display(),
        sock.display(),
        ready_p.display()
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]);
    let _eng = Guard(Some(cmd.spawn().unwrap()));
    let mut b = [0u8; 1];
    std::fs::File::from(ready).read_exact(&mut b).unwrap();
    let deadline = Instant::now() + SHORT;
    let addr = loop {
        let a = inside("ip -6 -o addr show dev tap0 scope global | awk '{print $4}'");
        if !a.trim().is_empty() || Instant::now() > deadline {
            break a.trim().to_string();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let route = inside("ip -6 route show default | grep -o 'proto ra'");
    let mut replies = Vec::new();
    let mut outbound_ok = false;
    if ours {
        let cmd = format!("{} download fd00::2 {} 1048576 5", nettool().display(), server.addr.port());
        outbound_ok = inside(&cmd).trim() == format!("ok 1048576 {}", stream_hash(5, 1 << 20));
        // The IPv6 extension of the API: an IPv6 listener to the guest's IPv4 service, and one
        // to its autoconfigured IPv6 address.
        let mut srv = Command::new("nsenter");
        srv.args(["--preserve-credentials", "-U", "-n", "-t", &pid.to_string()]).arg(nettool()).args(["serve", "80"]);
        srv.stdout(std::process::Stdio::null());
        let _srv = Guard(Some(srv.spawn().unwrap()));
        let mut srv6 = Command::new("nsenter");
        srv6.args(["--preserve-credentials", "-U", "-n", "-t", &pid.to_string()])
            .arg(nettool())
            .args(["serve", "[::]:81"]);
        srv6.stdout(std::process::Stdio::null());
        let _srv6 = Guard(Some(srv6.spawn().unwrap()));
        let (p4, p6) = (free_port("::1"), free_port("::1"));
        let guest6 = addr.split('/').next().unwrap().to_string();
        replies.push(api(
            &sock,
            &format!(r#"{{"execute":"add_hostfwd","arguments":{{"proto":"tcp6","host_addr6":"::1","host_port":{p4},"guest_port":80}}}}"#),
        ));
        replies.push(api(
            &sock,
            &format!(r#"{{"execute":"add_hostfwd","arguments":{{"proto":"tcp6","host_addr6":"::1","host_port":{p6},"guest_addr6":"{guest6}","guest_port":81}}}}"#),
        ));
        replies.push(api(&sock, r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp6","host_addr6":"nope","host_port":1,"guest_port":1}}"#));
        replies.push(api(&sock, r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp6","host_port":1,"guest_addr6":"fd01::1","guest_port":1}}"#));
        replies.push(
            api(&sock, r#"{"execute":"list_hostfwd"}"#).replace(&p4.to_string(), "P4").replace(&p6.to_string(), "P6"),
        );
        for (port, seed) in [(p4, 21u64), (p6, 22)] {
            let to = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
            let deadline = Instant::now() + SHORT;
            loop {
                if let Ok(out) = tcp_request(to, None, &format!("get 1048576 {seed}\n"))
                    && hex(&<sha2::Sha256 as sha2::Digest>::digest(&out)) == stream_hash(seed, 1 << 20)
                {
                    break;
                }
                assert!(Instant::now() < deadline, "no transfer through the IPv6 forward on port {port}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Over IPv6 (an IPv4 path would show 10.0.2.2): the gateway with the client's port,
        // as loopback clients appear over IPv4.
        let (local, seen) = tcp_peer_seen(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, p6)), None);
        assert_eq!(seen, format!("[fd00::2]:{}", local.port()), "reached the guest over IPv6");
    }
    drop(holder);
    (addr, route.trim().to_string(), replies, outbound_ok)
}

#[test]
fn enable_ipv6_autoconfigures_the_guest_like_slirp4netns() {
    require_isolation();
    let server = TcpServer::download("::1");
    let mut seen = Vec::new();
    for (i, e) in engines().into_iter().enumerate() {
        seen.push((name(&e), ipv6_scenario(&e, i == 0, &server)));
    }
    let (addr, route, replies, outbound_ok) = &seen[0].1;
    assert_eq!(addr, "fd00::ff:fe00:42/64", "SLAAC address from the advertised prefix and the MAC");
    assert_eq!(route, "proto ra", "default route learned from the router advertisement");
    assert!(outbound_ok, "fd00::2 leads to the host's ::1 (host loopback allowed by default)");
    assert_eq!(
        replies,
        &[
            r#"{"return":{"id":1}}"#.to_string(),
            r#"{"return":{"id":2}}"#.to_string(),
            r#"{"error":{"desc":"bad request: add_hostfwd: bad arguments.host_addr6"}}"#.to_string(),
            r#"{"error":{"desc":"bad request: add_hostfwd: bad arguments.guest_addr6"}}"#.to_string(),
            r#"{"entries":[{"id":1,"proto":"tcp6","host_addr6":"::1","host_port":P4,"guest_addr":"10.0.2.100","guest_port":80},{"id":2,"proto":"tcp6","host_addr6":"::1","host_port":P6,"guest_addr6":"fd00::ff:fe00:42","guest_port":81}],"return":{"entries":[{"id":1,"proto":"tcp6","host_addr6":"::1","host_port":P4,"guest_addr":"10.0.2.100","guest_port":80},{"id":2,"proto":"tcp6","host_addr6":"::1","host_port":P6,"guest_addr6":"fd00::ff:fe00:42","guest_port":81}]}}"#
                .to_string(),
        ]
    );
    for (n, (a, r, _, _)) in &seen[1..] {
        assert_eq!((a, r), (addr, route), "{n} vs warren-slirp4netns: the guest's IPv6 configuration");
    }
}

#[test]
fn path_mode_exits_when_the_namespace_goes() {
    require_isolation();
    // slirp4netns keeps running after its namespace is gone; warren-slirp4netns exits 0.
    let ours = engines().remove(0);
    let (holder, pid) = namespace_holder();
    let mut cmd = Command::new(&ours);
    cmd.args(["-c", "--netns-type=path", &format!("--userns-path=/proc/{pid}/ns/user")]);
    cmd.args([&format!("/proc/{pid}/ns/net"), "tap0"]);
    cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut eng = Guard(Some(cmd.spawn().unwrap()));
    let deadline = Instant::now() + SHORT;
    loop {
        let mut c = Command::new("nsenter");
        c.args([
            "--preserve-credentials",
            "-U",
            "-n",
            "-t",
            &pid.to_string(),
            "ip",
            "-o",
            "-4",
            "addr",
            "show",
            "tap0",
        ]);
        if run_with_deadline(c, SHORT).stdout.contains("10.0.2.100/24") {
            break;
        }
        assert!(Instant::now() < deadline, "tap0 never configured");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(holder);
    let child = eng.0.as_mut().unwrap();
    let deadline = Instant::now() + SHORT;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "warren-slirp4netns did not exit after its namespace went");
        std::thread::sleep(Duration::from_millis(50));
    };
    eng.0 = None;
    assert_eq!(status.code(), Some(0));
}

#[test]
fn forwarded_ports_are_free_at_once_when_told_to_exit() {
    require_isolation();
    // A caller that restarts (Podman, RootlessKit) starts the next engine with the same
    // forwards right after closing the exit fd. warren-slirp4netns then still carries open
    // connections for up to 10 s; its forwarded ports must be free meanwhile.
    let ours = engines().remove(0);
    let (holder, pid) = namespace_holder();
    let dir = ScratchDir::new("slirp-free");
    let (ready_p, exit_p, sock) = (dir.join("ready"), dir.join("exit"), dir.join("api.sock"));
    let (ready, exit) = (fifo(&ready_p), fifo(&exit_p));
    let script = format!(
        "exec {} -c -a {} -r 3 -e 4 {pid} tap0 3>{} 4<{} >/dev/null 2>&1",
        ours.display(),
        sock.display(),
        ready_p.display(),
        exit_p.display()
    );
    let mut eng = Guard(Some(Command::new("sh").args(["-c", &script]).spawn().unwrap()));
    std::fs::File::from(ready).read_exact(&mut [0u8; 1]).unwrap();
    let mut srv = Command::new("nsenter");
    srv.args(["--preserve-credentials", "-U", "-n", "-t", &pid.to_string()])
        .arg(nettool())
        .args(["rr-serve", "0.0.0.0:80"]);
    srv.stdout(std::process::Stdio::null());
    let _srv = Guard(Some(srv.spawn().unwrap()));
    let port = free_port("127.0.0.1");
    let add = format!(
        r#"{{"execute":"add_hostfwd","arguments":{{"proto":"tcp","host_addr":"127.0.0.1","host_port":{port},"guest_port":80}}}}"#
    );
    assert!(api(&sock, &add).contains("\"id\""), "forward added");
    // A client whose connection stays open (the server echoes every byte).
    let deadline = Instant::now() + SHORT;
    let mut client = loop {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        if matches!(c.read(&mut b), Ok(1)) {
            break c;
        }
        // The server inside may not listen yet.
        assert!(Instant::now() < deadline, "the forward never answered");
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(exit);
    let mut tries = 0;
    loop {
        tries += 1;
        let bound = std::net::TcpListener::bind(("127.0.0.1", port));
        let alive = eng.0.as_mut().unwrap().try_wait().unwrap().is_none();
        match bound {
            Ok(_) => {
                assert!(alive, "warren-slirp4netns still carries the open connection when the port is free");
                break;
            }
            Err(e) => assert!(alive && tries < 400, "the port stayed taken while it drained ({tries} tries): {e}"),
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    // The open connection still works while it drains.
    client.write_all(b"y").unwrap();
    let mut b = [0u8; 1];
    client.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"y", "the draining connection still carries data");
    drop(client);
    drop(holder);
}

/// RootlessKit, a real caller, with warren-slirp4netns as its slirp4netns: `--net=slirp4netns`
/// for the network and `--port-driver=slirp4netns` for ports (published through the API
/// socket, at start and live with rootlessctl). Its child reaches host loopback, published
/// ports carry hash-checked data, the server inside sees a loopback client as 10.0.2.2 with
/// the client's own port (as with slirp4netns), and nothing is left once RootlessKit ends.
#[test]
fn rootlesskit_runs_on_warren_slirp4netns() {
    require_isolation();
    let Some(rk) = ["/usr/bin/rootlesskit", "/usr/local/bin/rootlesskit"].into_iter().find(|p| Path::new(p).exists())
    else {
        eprintln!("rootlesskit not installed: skipped (scripts/setup.sh installs it)");
        return;
    };
    if nix::unistd::getuid().is_root() {
        eprintln!("rootlesskit refuses root: covered by the unprivileged pass");
        return;
    }
    let ours = engines().remove(0);
    let outbound = TcpServer::download("127.0.0.1");
    let dir = ScratchDir::new("rk");
    let (p1, p2) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    let out_file = dir.join("child.out");
    // The child: an outbound download through the gateway, then a server on 80 and 81.
    let child = format!(
        "{nt} download 10.0.2.2 {port} 1048576 31 > {out}; exec {nt} serve 80 81",
        nt = nettool().display(),
        port = outbound.addr.port(),
        out = out_file.display()
    );
    let mut cmd = Command::new(rk);
    cmd.arg(format!("--state-dir={}", dir.join("state").display()))
        // A PID namespace: whatever the child starts ends with it.
        .args(["--net=slirp4netns", "--port-driver=slirp4netns", "--pidns"])
        .arg(format!("--slirp4netns-binary={}", ours.display()))
        .args(["-p", &format!("127.0.0.1:{p1}:80/tcp"), "sh", "-c", &child])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("rootlesskit.log")).unwrap());
    let mut rk = TreeGuard(cmd.spawn().unwrap());
    let log = || std::fs::read_to_string(dir.join("rootlesskit.log")).unwrap_or_default();
    let fetch = |port: u16, seed: u64| {
        let to = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + SHORT;
        loop {
            // Until the server inside listens, a forward may accept and then close at once.
            if let Ok(out) = tcp_request(to, None, &format!("get 4194304 {seed}\n"))
                && hex(&<sha2::Sha256 as sha2::Digest>::digest(&out)) == stream_hash(seed, 4 << 20)
            {
                return;
            }
            assert!(Instant::now() < deadline, "no transfer through port {port}; rootlesskit: {}", log());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    fetch(p1, 32);
    let (local, peer) = tcp_peer_seen(SocketAddr::from(([127, 0, 0, 1], p1)), None);
    assert_eq!(peer, format!("10.0.2.2:{}", local.port()), "the server's view of a loopback client");
    assert_eq!(
        std::fs::read_to_string(&out_file).unwrap().trim(),
        format!("ok 1048576 {}", stream_hash(31, 1 << 20)),
        "the child's download from host loopback"
    );
    // A port added and removed while it runs, as `rootlessctl` (and so Docker) does.
    let ctl = |args: &[&str]| {
        let mut c = Command::new("rootlessctl");
        c.arg(format!("--socket={}", dir.join("state/api.sock").display())).args(args);
        let f = run_with_deadline(c, SHORT);
        assert_eq!(f.code, 0, "rootlessctl {args:?}: {}{}", f.stdout, f.stderr);
        f.stdout
    };
    let added = ctl(&["add-ports", &format!("127.0.0.1:{p2}:81/tcp")]);
    let id = added.split_whitespace().next().unwrap().to_string();
    fetch(p2, 33);
    // Rows of "ID PROTO PARENTIP PARENTPORT [CHILDIP] CHILDPORT".
    let listed =
        |port: u16| ctl(&["list-ports"]).lines().any(|l| l.split_whitespace().nth(3) == Some(&port.to_string()));
    assert!(listed(p1) && listed(p2), "{}", ctl(&["list-ports"]));
    ctl(&["remove-ports", &id]);
    assert!(listed(p1) && !listed(p2), "{}", ctl(&["list-ports"]));
    let refused = std::net::TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], p2)), SHORT);
    assert!(refused.is_err(), "port {p2} still open after remove-ports");
    // RootlessKit ends on SIGTERM, and everything it started (warren-slirp4netns, the child)
    // goes with it.
    let rk_pid = rk.0.id();
    let tree = descendants(rk_pid);
    let exe = |p: &Proc| std::fs::read_link(format!("/proc/{}/exe", p.0)).ok();
    assert!(tree.iter().any(|p| exe(p).as_ref() == Some(&ours)), "warren-slirp4netns not among {tree:?}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(rk_pid as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + SHORT;
    let _ = rk.0.wait();
    loop {
        let left: Vec<_> = tree.iter().filter(|p| p.alive()).map(|p| (p.0, exe(p))).collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left running after rootlesskit: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A process: PID and start time (which tells a reused PID apart).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Proc(u32, u64);

impl Proc {
    /// PID, parent PID and start time of `pid`, from /proc/PID/stat.
    fn read(pid: u32) -> Option<(Self, u32)> {
        // ppid is field 4, starttime field 22.
        let f = stat_fields(pid)?;
        Some((Self(pid, f.get(19)?.parse().ok()?), f.get(1)?.parse().ok()?))
    }

    /// Whether this very process still exists (not a later one with its PID).
    fn alive(&self) -> bool {
        Self::read(self.0).is_some_and(|(p, _)| p == *self)
    }
}

/// A child whose whole tree is killed (by PID, each if still the same process) when dropped,
/// so a failing test leaves nothing it started behind.
struct TreeGuard(std::process::Child);

impl Drop for TreeGuard {
    fn drop(&mut self) {
        let tree = descendants(self.0.id());
        let _ = self.0.kill();
        let _ = self.0.wait();
        for p in tree.iter().filter(|p| p.alive()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.0 as i32), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Every process below `pid`, from /proc's parent links.
fn descendants(pid: u32) -> Vec<Proc> {
    let all: Vec<(Proc, u32)> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok()?.parse::<u32>().ok())
        .filter_map(Proc::read)
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(all.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| c.0));
        i += 1;
    }
    all.iter().filter(|(c, _)| found[1..].contains(&c.0)).map(|(c, _)| *c).collect()
}
