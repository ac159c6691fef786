//! Bridge networks: the daemon, IPAM, names, isolation, live connect/disconnect, published
//! ports and persistence, each test with its own daemon (own runtime and data directories).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::*;

const SHORT: Duration = Duration::from_secs(30);
const LONG: Duration = Duration::from_secs(300);

/// A private daemon world: runtime and data directories of one test; the daemon it starts on
/// demand is stopped (by the PID in its pid file) and the directories removed on drop.
struct World {
    rt: PathBuf,
    data: PathBuf,
}

impl World {
    fn new(tag: &str) -> Self {
        let base = std::env::temp_dir().join(format!("warren-bridge-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (rt, data) = (base.join("rt"), base.join("data"));
        std::fs::create_dir_all(&rt).unwrap();
        std::fs::create_dir_all(&data).unwrap();
        // The runtime directory must be private, as $XDG_RUNTIME_DIR is.
        std::fs::set_permissions(&rt, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        Self { rt, data }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(warren());
        c.env("XDG_RUNTIME_DIR", &self.rt).env("XDG_DATA_HOME", &self.data).args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Finished {
        run_with_deadline(self.cmd(args), LONG)
    }

    fn ok(&self, args: &[&str]) -> String {
        let f = self.run(args);
        assert_eq!(f.code, 0, "warren {args:?}: {} {}", f.stdout, f.stderr);
        f.stdout
    }

    /// `warren run --network ... -- argv` that prints `serving`, kept running.
    fn start(&self, net_args: &[&str], argv: &[&str]) -> Running {
        let mut c = self.cmd(&["run"]);
        c.args(net_args).arg("--").args(argv);
        Running::spawn(c, self.rt.join("unused.sock"))
    }

    /// A container that only waits.
    fn idle(&self, net_args: &[&str]) -> Running {
        self.start(net_args, &["sh", "-c", "echo serving; exec sleep 600"])
    }

    /// Runs `argv` in a new container on a network, to completion.
    fn once(&self, net_args: &[&str], argv: &[&str]) -> Finished {
        let mut c = self.cmd(&["run"]);
        c.args(net_args).arg("--").args(argv);
        run_with_deadline(c, LONG)
    }

    /// nettool in a new container; its one output line (must succeed).
    fn tool(&self, net_args: &[&str], args: &[&str]) -> String {
        let mut argv = vec![nettool().to_str().unwrap().to_string()];
        argv.extend(args.iter().map(|s| s.to_string()));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let f = self.once(net_args, &argv);
        assert_eq!(f.code, 0, "nettool {args:?}: {} {}", f.stdout, f.stderr);
        f.stdout.trim().to_string()
    }

    fn pid_of(&self, name: &str) -> u32 {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["ps", "--json"])).unwrap();
        v.as_array().unwrap().iter().find(|c| c["name"] == name).unwrap()["pid"].as_u64().unwrap() as u32
    }

    /// Runs a shell command inside a running container's network namespace.
    fn inside(&self, name: &str, script: &str) -> String {
        let pid = self.pid_of(name);
        let mut c = Command::new("nsenter");
        c.args(["--preserve-credentials", "-U", "-n", "-t", &pid.to_string(), "sh", "-c", script]);
        run_with_deadline(c, SHORT).stdout
    }

    fn inspect(&self, net: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["network", "inspect", net])).unwrap();
        v[0].clone()
    }

    fn daemon_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.rt.join("warren/daemon.pid")).ok()?.trim().parse().ok()
    }

    fn stop_daemon(&self) {
        let Some(pid) = self.daemon_pid() else { return };
        let p = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop_daemon();
        let _ = std::fs::remove_dir_all(self.rt.parent().unwrap());
    }
}

fn serve80() -> Vec<&'static str> {
    let tool: &'static str = Box::leak(nettool().to_str().unwrap().to_string().into_boxed_str());
    vec![tool, "serve", "80"]
}

#[test]
fn containers_find_and_reach_each_other_and_other_networks_stay_apart() {
    require_isolation();
    let w = World::new("names");
    let stub = DnsStub::start();
    let up = format!("127.0.0.1:{}", stub.udp.addr.port());
    w.ok(&["network", "create", "front", "--dns-upstream", &up]);
    w.ok(&["network", "create", "back", "--dns-upstream", &up]);
    let _web = w.start(&["--network", "front", "--name", "web", "--alias", "www"], &serve80());
    let _db = w.start(&["--network", "front", "--name", "db"], &serve80());
    let _other = w.start(&["--network", "back", "--name", "other"], &serve80());
    {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(w.rt.join("warren/daemon.sock")).unwrap().permissions().mode();
        assert_eq!(m & 0o777, 0o600, "the daemon socket is the user's alone");
    }
    let front = w.inspect("front");
    assert_eq!(front["IPAM"]["Config"][0]["Subnet"], "10.89.0.0/24");
    assert_eq!(front["IPAM"]["Config"][0]["Gateway"], "10.89.0.1");
    let back = w.inspect("back");
    assert_eq!(back["IPAM"]["Config"][0]["Subnet"], "10.89.1.0/24", "the next /24 of the pool");
    let net = ["--network", "front", "--name", "client"];
    // Names and aliases resolve on the same network, in order of joining.
    assert_eq!(w.tool(&net, &["dns", "10.89.0.1", "web"]), "rcode=0 10.89.0.2");
    assert_eq!(w.tool(&net, &["dns", "10.89.0.1", "www"]), "rcode=0 10.89.0.2");
    assert_eq!(w.tool(&net, &["dns", "10.89.0.1", "db"]), "rcode=0 10.89.0.3");
    // A name of another network is not local: it goes upstream (the stub answers 192.0.2.55).
    assert_eq!(w.tool(&net, &["dns", "10.89.0.1", "other"]), "rcode=0 192.0.2.55");
    // The system resolver, PTR included.
    let f = w.once(&net, &["sh", "-c", "getent hosts web; getent hosts 10.89.0.3"]);
    assert_eq!(f.code, 0, "{} {}", f.stdout, f.stderr);
    assert!(f.stdout.contains("10.89.0.2") && f.stdout.contains("web"), "{}", f.stdout);
    assert!(f.stdout.contains("10.89.0.3") && f.stdout.contains("db"), "{}", f.stdout);
    // Ping and TCP between containers, by name; the server sees the client's own address.
    let f = w.once(
        &net,
        &["sh", "-c", &format!("{t} ping 10.89.0.2 && {t} ask 10.89.0.2 80 peer", t = nettool().display())],
    );
    assert_eq!(f.code, 0, "{} {}", f.stdout, f.stderr);
    assert!(f.stdout.contains("reply from 10.89.0.2 payload_ok=true"), "{}", f.stdout);
    let line = f.stdout.lines().last().unwrap();
    let local = line.split_whitespace().next().unwrap().trim_start_matches("local=");
    assert!(local.starts_with("10.89.0.4:"), "{line}");
    assert!(line.ends_with(&format!("reply={local}")), "{line}");
    // The other network is out of reach: no route to it anywhere.
    let line = w.tool(&net, &["connect-error", "10.89.1.2", "80"]);
    assert!(line.starts_with("error raw=Some(101)") || line.starts_with("error raw=Some(113)"), "{line}");
    // `warren ps` lists the running containers with their networks and addresses.
    let ps = w.ok(&["ps"]);
    assert!(ps.lines().any(|l| l.starts_with("web\t") && l.contains("front") && l.contains("eth0=10.89.0.2")), "{ps}");
    assert!(ps.lines().any(|l| l.starts_with("other\t") && l.contains("back")), "{ps}");
    let ls = w.ok(&["network", "ls"]);
    assert!(ls.lines().any(|l| l.contains("\tfront\t10.89.0.0/24\t") && l.ends_with("\t2")), "{ls}");
}

#[test]
fn a_gib_between_two_containers_verified() {
    require_isolation();
    let w = World::new("gib");
    w.ok(&["network", "create", "bulk", "--mtu", "65520"]);
    let _web = w.start(&["--network", "bulk", "--name", "web"], &serve80());
    let n = 1u64 << 30;
    let line = w.tool(&["--network", "bulk"], &["fetch", "10.89.0.2", "80", &n.to_string(), "77"]);
    assert_eq!(line, format!("ok {n} {}", stream_hash(77, n)));
    // At the default MTU (1500) the containers' kernels exchange TSO frames of up to 64 KiB
    // through the switch, and the gateway takes and sends them for NATed flows too.
    w.ok(&["network", "create", "small", "--subnet", "10.78.0.0/24"]);
    let _web2 = w.start(&["--network", "small", "--name", "web2"], &serve80());
    let m = 256u64 << 20;
    let srv = TcpServer::download(REMOTE_IP);
    let script = format!(
        "{t} fetch 10.78.0.2 80 {m} 78 && {t} download {REMOTE_IP} {p} {m} 79",
        t = nettool().display(),
        p = srv.addr.port()
    );
    let f = w.once(&["--network", "small", "--name", "client"], &["sh", "-c", &script]);
    let want = [format!("ok {m} {}", stream_hash(78, m)), format!("ok {m} {}", stream_hash(79, m))];
    assert_eq!(f.stdout.lines().collect::<Vec<_>>(), want, "{}", f.stderr);
    let s: serde_json::Value = serde_json::from_str(&w.ok(&["stats", "web2", "--json"])).unwrap();
    let port = &s["small"]["interfaces"][0];
    let per_frame = port["bytes_in"].as_u64().unwrap() / port["frames_in"].as_u64().unwrap().max(1);
    assert!(per_frame > 3000, "web2 sent GSO frames into the switch: {s}");
}

#[test]
fn icc_off_drops_container_traffic_but_not_the_gateway() {
    require_isolation();
    let w = World::new("icc");
    let stub = DnsStub::start();
    let up = format!("127.0.0.1:{}", stub.udp.addr.port());
    w.ok(&["network", "create", "iso", "--icc=false", "--dns-upstream", &up]);
    assert_eq!(w.inspect("iso")["Options"]["com.docker.network.bridge.enable_icc"], "false");
    let _web = w.start(&["--network", "iso", "--name", "web"], &serve80());
    let net = ["--network", "iso", "--name", "client"];
    let srv = TcpServer::download(REMOTE_IP);
    let script = format!(
        "{t} dns 10.89.0.1 web; {t} connect-error 10.89.0.2 80; {t} download {REMOTE_IP} {p} 1048576 5",
        t = nettool().display(),
        p = srv.addr.port()
    );
    let f = w.once(&net, &["sh", "-c", &script]);
    let lines: Vec<&str> = f.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"rcode=0 10.89.0.2"), "names still resolve at the gateway: {}", f.stdout);
    assert!(lines.get(1).is_some_and(|l| l.starts_with("error")), "no container-to-container traffic: {}", f.stdout);
    assert_eq!(
        lines.get(2),
        Some(&format!("ok 1048576 {}", stream_hash(5, 1 << 20)).as_str()),
        "outside works: {}",
        f.stdout
    );
}

#[test]
fn internal_network_has_no_way_out() {
    require_isolation();
    let w = World::new("internal");
    w.ok(&["network", "create", "vault", "--internal"]);
    assert_eq!(w.inspect("vault")["Internal"], true);
    let _db = w.start(&["--network", "vault", "--name", "db"], &serve80());
    let srv = TcpServer::download(REMOTE_IP);
    let script = format!(
        "{t} connect-error {REMOTE_IP} {p}; {t} dns 10.89.0.1 db; {t} fetch 10.89.0.2 80 1000 1",
        t = nettool().display(),
        p = srv.addr.port()
    );
    let f = w.once(&["--network", "vault"], &["sh", "-c", &script]);
    let lines: Vec<&str> = f.stdout.lines().collect();
    assert!(
        lines.first().is_some_and(|l| l.starts_with("error raw=Some(101)")),
        "no way out: code {} stdout {:?} stderr {:?}",
        f.code,
        f.stdout,
        f.stderr
    );
    assert_eq!(lines.get(1), Some(&"rcode=0 10.89.0.2"), "{}", f.stdout);
    assert!(lines.last().is_some_and(|l| l.starts_with("ok 1000 ")), "containers reach each other: {}", f.stdout);
    assert_eq!(srv.accepted.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing left the network");
}

#[test]
fn spoofed_frames_are_dropped_and_counted() {
    require_isolation();
    let w = World::new("spoof");
    w.ok(&["network", "create", "lan"]);
    let _web = w.start(&["--network", "lan", "--name", "web"], &serve80());
    let _db = w.idle(&["--network", "lan", "--name", "db"]);
    // The attacker (10.89.0.4) forges another MAC, another container's IP, and an ARP reply
    // claiming web's address: 100 of each.
    let py = r#"
import socket
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
mine = bytes.fromhex(open("/sys/class/net/eth0/address").read().strip().replace(":", ""))
web_mac = bytes.fromhex("02420a590002")
def ipv4(src, dst):
    h = bytes([0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0]) + bytes(src) + bytes(dst)
    return h + bytes([0x30, 0x39, 0, 80, 0, 8, 0, 0])
for i in range(100):
    s.send(web_mac + bytes.fromhex("02420a590009") + b"\x08\x00" + ipv4([10, 89, 0, 4], [10, 89, 0, 2]))
    s.send(web_mac + mine + b"\x08\x00" + ipv4([10, 89, 0, 3], [10, 89, 0, 2]))
    arp = bytes([0, 1, 8, 0, 6, 4, 0, 2]) + mine + bytes([10, 89, 0, 2]) + web_mac + bytes([10, 89, 0, 2])
    s.send(web_mac + mine + b"\x08\x06" + arp)
print("sent")
"#;
    let mallory = w.start(
        &["--network", "lan", "--name", "mallory"],
        &["sh", "-c", &format!("python3 -c '{py}' && echo serving && exec sleep 600")],
    );
    let deadline = Instant::now() + SHORT;
    let spoofed = loop {
        let c = w.inspect("lan")["Containers"]
            .as_object()
            .unwrap()
            .values()
            .find(|c| c["Name"] == "mallory")
            .cloned()
            .unwrap();
        let n = c["Counters"]["spoofed"].as_u64().unwrap();
        if n >= 300 || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(spoofed, 300, "every forged frame is dropped and counted");
    drop(mallory);
    // web still answers the real client, and db's view of web's MAC was never poisoned.
    assert!(w.tool(&["--network", "lan"], &["fetch", "10.89.0.2", "80", "1000", "2"]).starts_with("ok 1000 "));
    let neigh = w.inside("db", &format!("{} ping 10.89.0.2 >/dev/null; ip neigh show 10.89.0.2", nettool().display()));
    assert!(neigh.is_empty() || neigh.contains("02:42:0a:59:00:02"), "{neigh}");
}

#[test]
fn to_host_ports_and_add_host_of_a_container_on_a_bridge_network() {
    require_isolation();
    let w = World::new("tohost");
    // An internal network: -T and -U do not cross it, so they work there too.
    w.ok(&["network", "create", "lan", "--internal"]);
    let down = TcpServer::download("127.0.0.1");
    let up = TcpServer::upload_sink("127.0.0.1");
    let echo = UdpServer::echo("127.0.0.1");
    let n = 16 << 20;
    // Its loopback's -T and -U ports reach the host's loopback, byte for byte; the network's
    // gateway still does not lead to the host's loopback. --add-host host-gateway names it.
    let script = format!(
        "{t} download 127.0.0.1 5700 {n} 41 && {t} upload 127.0.0.1 5701 {n} 43 && {t} udp-echo 127.0.0.1 5800 45 && \
         {{ {t} download 10.89.0.1 {d} 10 1 || echo gateway-refused; }}",
        t = nettool().display(),
        d = down.addr.port()
    );
    let specs = [
        format!("5700:{}", down.addr.port()),
        format!("5701:{}", up.addr.port()),
        format!("5800:{}", echo.addr.port()),
    ];
    let script = format!("getent hosts host.docker.internal && {script}");
    let net = ["--network", "lan", "-T", &specs[0], "-T", &specs[1], "-U", &specs[2]];
    let f = w.once(&[&net[..], &["--add-host", "host.docker.internal:host-gateway"]].concat(), &["sh", "-c", &script]);
    assert_eq!(f.code, 0, "{} {}", f.stdout, f.stderr);
    let lines: Vec<&str> = f.stdout.lines().filter(|l| !l.starts_with("FAIL")).collect();
    assert_eq!(
        lines,
        [
            "10.89.0.1       host.docker.internal",
            format!("ok {n} {}", stream_hash(41, n)).as_str(),
            &format!("{n} {}", stream_hash(43, n)),
            "ok 45",
            "gateway-refused",
        ],
        "{}",
        f.stderr
    );
    assert_eq!(down.accepted.load(std::sync::atomic::Ordering::SeqCst), 1, "the gateway never reached the host");
    // Where the container has no network namespace of its own, -T and -U are refused.
    for net in ["host", "none"] {
        let f = w.once(&["--network", net, "-U", "5800"], &["echo", "started"]);
        assert_eq!(f.code, 125, "{net}");
        assert!(
            f.stderr
                .contains(&format!("-U applies to a container's own network; it has no effect with --network {net}"))
                && !f.stdout.contains("started"),
            "{net}: {}",
            f.stderr
        );
    }
}

#[test]
fn a_networks_outbound_address_is_the_source_of_its_containers_flows() {
    require_isolation();
    let w = World::new("outbound");
    // Servers on REMOTE_IP / REMOTE_IP6 that answer with the source they see: the network
    // created with --outbound-addr (an interface, and an IPv6 address) sends from the veth's
    // addresses, another network does not.
    w.ok(&["network", "create", "out", "--ipv6", "--outbound-addr", "wrn-remote0", "--outbound-addr6", VETH_LOCAL6]);
    w.ok(&["network", "create", "plain"]);
    let tcp = TcpServer::peer_echo(REMOTE_IP);
    let tcp6 = TcpServer::peer_echo(REMOTE_IP6);
    let udp = UdpServer::serve(REMOTE_IP, |s, _, from| {
        let _ = s.send_to(from.to_string().as_bytes(), from);
    });
    let t = nettool();
    let seen = |net: &str, v6: bool| -> Vec<String> {
        let mut script = format!(
            "{t} peer {REMOTE_IP} {p} && {t} udp-ask {REMOTE_IP} {u} x",
            t = t.display(),
            p = tcp.addr.port(),
            u = udp.addr.port()
        );
        if v6 {
            script += &format!(" && {t} peer {REMOTE_IP6} {p6}", t = t.display(), p6 = tcp6.addr.port());
        }
        let f = w.once(&["--network", net], &["sh", "-c", &script]);
        assert_eq!(f.code, 0, "{net}: {} {}", f.stdout, f.stderr);
        // "server saw ADDR:PORT" (TCP), "local=... reply=ADDR:PORT" (UDP): the addresses.
        f.stdout
            .lines()
            .map(|l| {
                let a = l.rsplit([' ', '=']).next().unwrap_or_default();
                a.parse::<std::net::SocketAddr>().map(|a| a.ip().to_string()).unwrap_or_else(|_| l.to_string())
            })
            .collect()
    };
    assert_eq!(seen("out", true), [VETH_LOCAL, VETH_LOCAL, VETH_LOCAL6]);
    let plain = seen("plain", false);
    assert_eq!(plain.len(), 2, "{plain:?}");
    assert!(!plain.contains(&VETH_LOCAL.to_string()), "{plain:?}");
    // Docker's option names in inspect; kept across a daemon restart.
    let options = &w.inspect("out")["Options"];
    assert_eq!(options["com.docker.network.host_ipv4"], VETH_LOCAL, "{options}");
    assert_eq!(options["com.docker.network.host_ipv6"], VETH_LOCAL6, "{options}");
    assert!(w.inspect("plain")["Options"].get("com.docker.network.host_ipv4").is_none());
    w.stop_daemon();
    assert_eq!(seen("out", false), [VETH_LOCAL, VETH_LOCAL]);
    // Bad addresses and an internal network are refused, and nothing is created.
    for (args, msg) in [
        (
            &["--outbound-addr", "nosuchif0"][..],
            "invalid --outbound-addr \"nosuchif0\": expected an IPv4 address of this host or the name of an interface that has one",
        ),
        (
            &["--outbound-addr6", "fd99:999::1"][..],
            "invalid --outbound-addr6 \"fd99:999::1\": expected an IPv6 address",
        ),
        (
            &["--outbound-addr", VETH_LOCAL, "--internal"][..],
            "--outbound-addr has no effect on an --internal network (nothing leaves it)",
        ),
    ] {
        let mut a = vec!["network", "create", "bad"];
        a.extend_from_slice(args);
        let f = w.run(&a);
        assert_eq!(f.code, 1, "{args:?}");
        assert!(f.stderr.contains(msg) && f.stderr.lines().count() == 1, "{args:?}: {}", f.stderr);
    }
    assert!(!w.ok(&["network", "ls"]).contains("bad"), "no network half-created");
    // A container's own --outbound-addr on a network points to the network's.
    let f = w.once(&["--network", "plain", "--outbound-addr", VETH_LOCAL], &["echo", "started"]);
    assert_eq!(f.code, 125);
    assert!(
        f.stderr.contains(
            "--outbound-addr applies to a container's own network; on \"plain\" it is the network's: \
             `warren network create plain --outbound-addr IP|IFACE`"
        ) && !f.stdout.contains("started"),
        "{}",
        f.stderr
    );
}

#[test]
fn auto_publishes_a_network_containers_services_while_it_serves_them() {
    require_isolation();
    let w = World::new("auto");
    w.ok(&["network", "create", "lan"]);
    let (p, u) = (free_port("0.0.0.0"), free_service_port("0.0.0.0"));
    let dir = ScratchDir::new("bridge-auto");
    let stop = dir.join("stop");
    // A TCP service on p and a UDP one on u until `stop` exists; then neither.
    let script = format!(
        "{t} serve {p} & s=$!; {t} udp-serve {u} & x=$!; while [ ! -e {stop} ]; do sleep 0.05; done; kill $s $x; \
         echo stopped; sleep 600",
        t = nettool().display(),
        stop = stop.display()
    );
    let _r = w.start(&["--network", "lan", "--name", "web", "-p", "auto", "-p", "auto/udp"], &["sh", "-c", &script]);
    let ports_until = |what: &str, done: &dyn Fn(&[String]) -> bool| -> Vec<String> {
        let deadline = Instant::now() + SHORT;
        loop {
            let v: serde_json::Value = serde_json::from_str(&w.ok(&["ps", "--json"])).unwrap();
            let web = v.as_array().unwrap().iter().find(|c| c["name"] == "web").cloned().unwrap_or_default();
            let ports: Vec<String> =
                web["ports"].as_array().into_iter().flatten().filter_map(|p| p.as_str().map(String::from)).collect();
            if done(&ports) {
                return ports;
            }
            assert!(Instant::now() < deadline, "{what}: ps says {web}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let (tcp, udp) = (format!("0.0.0.0:{p}->10.89.0.2:{p}/tcp"), format!("0.0.0.0:{u}->10.89.0.2:{u}/udp"));
    let ports = ports_until("both services published", &|ps| ps.contains(&tcp) && ps.contains(&udp));
    // On 0.0.0.0 and [::] each; nothing else.
    assert_eq!(ports.len(), 4, "{ports:?}");
    // Byte for byte from a loopback client; a remote client keeps its address; UDP answers.
    crate::ports::get_and_check(std::net::SocketAddr::from(([127, 0, 0, 1], p)), None, 8 << 20, 31);
    let remote: std::net::IpAddr = REMOTE_IP.parse().unwrap();
    let (local, seen) = tcp_peer_seen(std::net::SocketAddr::new(remote, p), Some(remote));
    assert_eq!(seen, local.to_string());
    let mut c = Command::new(nettool());
    c.args(["udp-ask", "127.0.0.1", &u.to_string(), "hi"]);
    let f = run_with_deadline(c, SHORT);
    assert!(f.code == 0 && f.stdout.trim().ends_with(" hi"), "{} {}", f.stdout, f.stderr);
    // The container stops serving: the ports go, and connecting is refused.
    std::fs::write(&stop, b"").unwrap();
    ports_until("the closed ports unpublished", &|ps| ps.is_empty());
    let refused = tcp_request(std::net::SocketAddr::from(([127, 0, 0, 1], p)), None, "peer\n");
    assert_eq!(refused.unwrap_err().kind(), std::io::ErrorKind::ConnectionRefused);
}

#[test]
fn ports_of_a_network_container_are_added_and_removed_live() {
    require_isolation();
    let w = World::new("liveport");
    w.ok(&["network", "create", "lan"]);
    let _web = w.start(&["--network", "lan", "--name", "web"], &serve80());
    // Added while the container runs: a picked port on 127.0.0.1, printed, listed, working.
    let added = w.ok(&["port", "--container", "web", "add", "127.0.0.1::80"]);
    let row: Vec<&str> = added.trim().split('\t').collect();
    assert_eq!((row.len(), row[1], row[3]), (4, "tcp", "10.89.0.2:80"), "{added}");
    let host: std::net::SocketAddr = row[2].parse().unwrap();
    assert!(host.ip().is_loopback() && host.port() != 0, "{added}");
    assert_eq!(w.ok(&["port", "--container", "web", "ls"]), added);
    let (local, seen) = tcp_peer_seen(host, None);
    assert_eq!(seen, format!("10.89.0.1:{}", local.port()), "a loopback client appears as the gateway");
    // Errors change nothing: an id the container does not have, an unknown container.
    let f = w.run(&["port", "--container", "web", "rm", "999"]);
    assert_eq!(f.code, 1);
    assert!(f.stderr.contains("container \"web\" has no published port 999"), "{}", f.stderr);
    let f = w.run(&["port", "--container", "ghost", "ls"]);
    assert!(f.code == 1 && f.stderr.contains("no such container: \"ghost\""), "{}", f.stderr);
    assert_eq!(w.ok(&["port", "--container", "web", "ls"]), added);
    // Removed: gone from the list, and the host port refuses.
    w.ok(&["port", "--container", "web", "rm", row[0]]);
    assert_eq!(w.ok(&["port", "--container", "web", "ls"]), "");
    let refused = tcp_request(host, None, "peer\n");
    assert_eq!(refused.unwrap_err().kind(), std::io::ErrorKind::ConnectionRefused);
}

#[test]
fn published_ports_on_a_bridge_network_keep_client_addresses() {
    require_isolation();
    assert!(has_remote_ip());
    let w = World::new("ports");
    w.ok(&["network", "create", "pub"]);
    let port = free_port("0.0.0.0");
    let spec = format!("{port}:80");
    let _web = w.start(&["--network", "pub", "--name", "web", "-p", &spec, "-p", "127.0.0.1::80"], &serve80());
    let to = std::net::SocketAddr::from(([10, 200, 0, 1], port));
    let (local, seen) = tcp_peer_seen(to, Some(REMOTE_IP.parse().unwrap()));
    assert_eq!(seen, local.to_string(), "the container sees the real client");
    let (local, seen) = tcp_peer_seen(std::net::SocketAddr::from(([127, 0, 0, 1], port)), None);
    assert_eq!(seen, format!("10.89.0.1:{}", local.port()), "a loopback client seen as the gateway");
    crate::ports::get_and_check(to, Some(REMOTE_IP.parse().unwrap()), 32 << 20, 12);
    let ps = w.ok(&["ps"]);
    assert!(ps.contains(&format!("0.0.0.0:{port}->10.89.0.2:80/tcp")), "{ps}");
    // A port already taken: the run is refused before the container starts.
    let f = w.once(&["--network", "pub", "--name", "late", "-p", &spec], &["true"]);
    assert_eq!(f.code, 125, "{}", f.stderr);
    assert!(f.stderr.contains(&format!("port {port} is already in use")), "{}", f.stderr);
    let ps = w.ok(&["ps"]);
    assert!(!ps.contains("late"), "nothing half-applied: {ps}");
}

#[test]
fn live_connect_and_disconnect() {
    require_isolation();
    let w = World::new("connect");
    let stub = DnsStub::start();
    let up = format!("127.0.0.1:{}", stub.udp.addr.port());
    w.ok(&["network", "create", "a"]);
    w.ok(&["network", "create", "b", "--dns-upstream", &up]);
    let _web = w.start(&["--network", "a", "--name", "web"], &serve80());
    let _peer = w.idle(&["--network", "b", "--name", "peer"]);
    let t = nettool();
    assert!(w.inside("peer", &format!("{} connect-error 10.89.0.2 80", t.display())).starts_with("error"));
    w.ok(&["network", "connect", "b", "web", "--alias", "api"]);
    let addrs = w.inside("web", "ip -o -4 addr show");
    assert!(addrs.contains("eth1") && addrs.contains("10.89.1.3/24"), "a second interface, live: {addrs}");
    assert_eq!(w.inside("peer", &format!("{} dns 10.89.1.1 api", t.display())).trim(), "rcode=0 10.89.1.3");
    let got = w.inside("peer", &format!("{} fetch 10.89.1.3 80 4096 3", t.display()));
    assert_eq!(got.trim(), format!("ok 4096 {}", stream_hash(3, 4096)));
    let ps = w.ok(&["ps"]);
    assert!(ps.lines().any(|l| l.starts_with("web\t") && l.contains("a,b")), "{ps}");
    // All of it with the container's warren run under its seccomp allowlist.
    let status = std::fs::read_to_string(format!("/proc/{}/status", _web.guard.0.as_ref().unwrap().id())).unwrap();
    assert!(status.lines().any(|l| l == "Seccomp:\t2"), "warren run --network runs under its allowlist");
    // Errors name what is wrong and change nothing.
    let f = w.run(&["network", "connect", "b", "web"]);
    assert_eq!(f.code, 1);
    assert!(f.stderr.contains("container \"web\" is already connected to network \"b\""), "{}", f.stderr);
    let f = w.run(&["network", "connect", "b", "ghost"]);
    assert!(f.stderr.contains("no such container: \"ghost\""), "{}", f.stderr);
    w.ok(&["network", "disconnect", "b", "web"]);
    let deadline = Instant::now() + SHORT;
    while w.inside("web", "ip -o link show").contains("eth1") {
        assert!(Instant::now() < deadline, "eth1 never went away");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The alias is gone from the network's DNS: the name now goes upstream (the stub's answer).
    assert_eq!(w.inside("peer", &format!("{} dns 10.89.1.1 api", t.display())).trim(), "rcode=0 192.0.2.55");
    let f = w.run(&["network", "disconnect", "b", "web"]);
    assert!(f.stderr.contains("container \"web\" is not connected to network \"b\""), "{}", f.stderr);
    // A container that was connected still ends its warren run when it exits, with its status
    // (the run process once blocked reading the daemon after a request, and never exited).
    let dir = ScratchDir::new("connect-exit");
    let stop = dir.join("stop");
    let script = format!("echo serving; while [ ! -e {} ]; do sleep 0.05; done; exit 7", stop.display());
    let mut brief = w.start(&["--network", "a", "--name", "brief"], &["sh", "-c", &script]);
    w.ok(&["network", "connect", "b", "brief"]);
    w.ok(&["network", "disconnect", "b", "brief"]);
    std::fs::write(&stop, b"").unwrap();
    let child = brief.guard.0.as_mut().unwrap();
    let deadline = Instant::now() + SHORT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "warren run did not end with its container");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(7));
}

#[test]
fn networks_survive_a_daemon_restart() {
    require_isolation();
    let w = World::new("restart");
    let id = w.ok(&["network", "create", "keep", "--subnet", "10.77.0.0/24", "--gateway", "10.77.0.254", "--internal"]);
    let before = w.inspect("keep");
    // The daemon serves under its seccomp allowlist, and saved the network under it too.
    let pid = w.daemon_pid().expect("a daemon pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.lines().any(|l| l == "Seccomp:\t2"), "the daemon runs under its allowlist");
    w.stop_daemon();
    assert!(w.daemon_pid().is_none() || !std::path::Path::new(&format!("/proc/{}", w.daemon_pid().unwrap())).exists());
    // The next command starts a new daemon, which loads the network as it was; on a terminal
    // it says so while it waits.
    let mut c = Command::new("script");
    let cmd = format!(
        "env XDG_RUNTIME_DIR={} XDG_DATA_HOME={} {} network ls",
        w.rt.display(),
        w.data.display(),
        warren().display()
    );
    c.args(["-qec", &cmd, "/dev/null"]);
    let f = run_with_deadline(c, SHORT);
    assert_eq!(f.code, 0, "{} {}", f.stdout, f.stderr);
    assert!(f.stdout.contains("warren: starting the network daemon ... ready"), "{}", f.stdout);
    assert!(f.stdout.contains("keep"), "{}", f.stdout);
    let after = w.inspect("keep");
    assert_eq!(after["Id"].as_str().unwrap(), id.trim());
    assert_eq!(after["IPAM"], before["IPAM"]);
    assert_eq!(after["Internal"], true);
    assert_eq!(after["IPAM"]["Config"][0]["Gateway"], "10.77.0.254");
    // And it serves it: a container gets the first free address and the gateway answers.
    let f = w.once(
        &["--network", "keep"],
        &["sh", "-c", &format!("ip -o -4 addr show eth0; {} ping 10.77.0.254", nettool().display())],
    );
    assert_eq!(f.code, 0, "{} {}", f.stdout, f.stderr);
    assert!(f.stdout.contains("10.77.0.1/24"), "{}", f.stdout);
    assert!(f.stdout.contains("reply from 10.77.0.254"), "{}", f.stdout);
}

#[test]
fn ipv6_between_two_containers_of_a_network() {
    require_isolation();
    let w = World::new("v6");
    w.ok(&["network", "create", "dual", "--ipv6"]);
    let cfg = w.inspect("dual");
    assert_eq!(cfg["EnableIPv6"], true);
    assert_eq!(cfg["IPAM"]["Config"][1]["Subnet"], "fd89::/64");
    let tool: &str = Box::leak(nettool().to_str().unwrap().to_string().into_boxed_str());
    let _web = w.start(&["--network", "dual", "--name", "web"], &[tool, "serve", "[::]:80"]);
    let t = nettool();
    let script = format!(
        "{t} dns fd89::1 web aaaa; {t} dns 10.89.0.1 web aaaa; {t} ask fd89::2 80 peer; {t} fetch fd89::2 80 8388608 6; {t} ping fd89::1",
        t = t.display()
    );
    let f = w.once(&["--network", "dual", "--name", "client"], &["sh", "-c", &script]);
    assert_eq!(f.code, 0, "{} {}", f.stdout, f.stderr);
    let lines: Vec<&str> = f.stdout.lines().collect();
    assert_eq!(lines[0], "rcode=0 fd89::2", "AAAA over IPv6: {}", f.stdout);
    assert_eq!(lines[1], "rcode=0 fd89::2", "AAAA over IPv4: {}", f.stdout);
    assert!(lines[2].starts_with("local=[fd89::3]:") && lines[2].contains("reply=[fd89::3]:"), "{}", f.stdout);
    assert_eq!(lines[3], format!("ok 8388608 {}", stream_hash(6, 8 << 20)));
    assert_eq!(lines[4], "reply from fd89::1 payload_ok=true");
}

#[test]
fn bad_input_and_conflicts_are_refused_clearly() {
    require_isolation();
    let w = World::new("errors");
    w.ok(&["network", "create", "dev", "--subnet", "10.66.0.0/29"]);
    let fail = |args: &[&str], code: i32, msg: &str| {
        let f = w.run(args);
        assert_eq!(f.code, code, "{args:?}: {}", f.stderr);
        assert!(f.stderr.contains(msg), "{args:?}: {}", f.stderr);
        assert_eq!(f.stderr.lines().count(), usize::from(code != 0), "one line: {}", f.stderr);
    };
    fail(&["network", "create", "dev"], 1, "network \"dev\" already exists");
    fail(
        &["network", "create", "x", "--subnet", "10.66.0.0/16"],
        1,
        "subnet 10.66.0.0/16 overlaps network \"dev\" (10.66.0.0/29)",
    );
    fail(&["network", "create", "x", "--subnet", "10.66.1.7/24"], 1, "expected a network address like 10.66.1.0/24");
    fail(
        &["network", "create", "x", "--subnet", "10.67.0.0/24", "--gateway", "10.68.0.1"],
        1,
        "invalid gateway \"10.68.0.1\"",
    );
    fail(&["network", "create", "bad name"], 1, "invalid network name \"bad name\"");
    fail(&["network", "inspect", "nope"], 1, "no such network: \"nope\"");
    fail(&["network", "create", "v6a", "--subnet6", "fd42::/64"], 0, "");
    fail(
        &["network", "create", "v6b", "--subnet6", "fd42::/64"],
        1,
        "IPv6 subnet fd42::/64 is already used by network \"v6a\"",
    );
    fail(&["network", "create", "v6c", "--subnet6", "fd42::/48"], 1, "the prefix length must be 64");
    fail(&["run", "--network", "dev", "--name", "no/slash", "--", "true"], 125, "invalid container name \"no/slash\"");
    fail(&["run", "--network", "dev", "--alias", "-x", "--", "true"], 125, "invalid alias \"-x\"");
    fail(&["run", "--network", "nope", "--", "true"], 125, "no such network: \"nope\"");
    fail(
        &["run", "--network", "dev", "--ip", "10.99.0.5", "--", "true"],
        125,
        "invalid --ip \"10.99.0.5\": expected a host address inside 10.66.0.0/29",
    );
    // Fill the /29: gateway .1 and five containers .2-.6.
    let held: Vec<Running> = (0..5).map(|i| w.idle(&["--network", "dev", "--name", &format!("c{i}")])).collect();
    fail(&["run", "--network", "dev", "--", "true"], 125, "network \"dev\" (10.66.0.0/29) has no free address left");
    fail(
        &["run", "--network", "dev", "--name", "c0", "--", "true"],
        125,
        "a container named \"c0\" is already running",
    );
    fail(&["network", "rm", "dev"], 1, "network \"dev\" is in use by c0, c1, c2, c3, c4");
    drop(held);
    let deadline = Instant::now() + SHORT;
    // Addresses are released when containers exit.
    loop {
        let f = w.run(&["network", "rm", "dev"]);
        if f.code == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "containers never released the network: {}", f.stderr);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!w.ok(&["network", "ls"]).contains("dev"));
}

#[test]
fn network_none_host_and_container_modes() {
    require_isolation();
    // none: only lo, up.
    let f =
        warren_run(&["--network", "none"], &["sh", "-c", "ip -o link show | cut -d: -f2; ip -o addr show lo"], SHORT);
    assert_eq!(f.code, 0, "{}", f.stderr);
    assert_eq!(f.stdout.lines().next().map(str::trim), Some("lo"), "{}", f.stdout);
    assert_eq!(f.stdout.lines().filter(|l| l.contains("mtu") || !l.contains("lo")).count(), 0, "{}", f.stdout);
    assert!(f.stdout.contains("inet 127.0.0.1/8"), "{}", f.stdout);
    // host: the suite's own network namespace (10.200.0.1 on its lo).
    let srv = TcpServer::download(REMOTE_IP);
    let line =
        nettool_in(&["--network", "host"], &["download", REMOTE_IP, &srv.addr.port().to_string(), "4096", "8"], SHORT);
    assert_eq!(line, format!("ok 4096 {}", stream_hash(8, 4096)));
    let f = warren_run(&["--network", "host", "-p", "8080:80"], &["true"], SHORT);
    assert_eq!(f.code, 125);
    assert!(f.stderr.contains("-p has no effect with --network host"), "{}", f.stderr);
    // container:NAME: the interfaces and names of a running bridge container.
    let w = World::new("modes");
    w.ok(&["network", "create", "side"]);
    let _web = w.start(&["--network", "side", "--name", "web"], &serve80());
    let f = w.once(
        &["--network", "container:web"],
        &["sh", "-c", &format!("ip -o -4 addr show eth0; {} fetch 127.0.0.1 80 4096 9", nettool().display())],
    );
    assert_eq!(f.code, 0, "{} {}", f.stdout, f.stderr);
    assert!(f.stdout.contains("10.89.0.2/24"), "{}", f.stdout);
    assert!(
        f.stdout.contains(&format!("ok 4096 {}", stream_hash(9, 4096))),
        "web's server on its own lo: {}",
        f.stdout
    );
    let f = w.once(&["--network", "container:ghost"], &["true"]);
    assert_eq!(f.code, 125);
    assert!(f.stderr.contains("no such container: \"ghost\""), "{}", f.stderr);
}

#[test]
fn capture_and_stats_of_a_network() {
    require_isolation();
    let w = World::new("capture");
    w.ok(&["network", "create", "cap"]);
    let _web = w.start(&["--network", "cap", "--name", "web"], &serve80());
    let file = w.rt.join("net.pcap");
    let mut cap =
        w.cmd(&["capture", "--network", "cap", "-w", file.to_str().unwrap(), "--count", "8", "--seconds", "60"]);
    cap.stdin(std::process::Stdio::null());
    let cap = std::thread::spawn(move || run_with_deadline(cap, Duration::from_secs(90)));
    let t = nettool();
    let deadline = Instant::now() + SHORT;
    while !cap.is_finished() && Instant::now() < deadline {
        let f = w.once(&["--network", "cap", "--name", "pinger"], &[t.to_str().unwrap(), "ping", "10.89.0.2"]);
        assert_eq!(f.code, 0, "{} {}", f.stdout, f.stderr);
    }
    let f = cap.join().unwrap();
    assert_eq!(f.code, 0, "{}", f.stderr);
    assert!(f.stderr.contains("8 frames written to"), "{}", f.stderr);
    let mut c = Command::new("tshark");
    c.args(["-n", "-r"]).arg(&file).args([
        "-Y",
        "icmp.type == 8 && ip.dst == 10.89.0.2",
        "-T",
        "fields",
        "-e",
        "ip.src",
    ]);
    c.env("HOME", std::env::temp_dir());
    let t = run_with_deadline(c, SHORT);
    assert_eq!(t.code, 0, "{}", t.stderr);
    assert!(t.stdout.lines().any(|l| l.trim() == "10.89.0.3"), "container-to-container ping captured: {}", t.stdout);
    // Counters of the network (gateway and each interface) and of one container.
    let s = w.ok(&["stats", "cap"]);
    assert!(s.lines().any(|l| l.starts_with("cap\tgateway.frames_in\t")), "{s}");
    assert!(s.lines().any(|l| l.starts_with("cap\tweb.frames_in\t")), "{s}");
    let s: serde_json::Value = serde_json::from_str(&w.ok(&["stats", "web", "--json"])).unwrap();
    assert!(s["cap"]["interfaces"][0]["frames_in"].as_u64().unwrap() > 0, "{s}");
    let f = w.run(&["stats", "ghost"]);
    assert!(f.stderr.contains("no such network or container: \"ghost\""), "{}", f.stderr);
}

#[test]
fn capture_of_one_container_on_a_network() {
    require_isolation();
    let w = World::new("capone");
    w.ok(&["network", "create", "seg"]);
    let _web = w.start(&["--network", "seg", "--name", "web"], &serve80());
    let file = w.rt.join("web.pcap");
    let mut cap = w.cmd(&["capture", "--container", "web", "-w", file.to_str().unwrap(), "--seconds", "3"]);
    cap.stdin(std::process::Stdio::null());
    let cap = std::thread::spawn(move || run_with_deadline(cap, Duration::from_secs(60)));
    // A third container pings the gateway (not web's traffic) and web (web's traffic).
    let t = nettool();
    let t = t.to_str().unwrap();
    let script = format!("{t} ping 10.89.0.1 && {t} ping 10.89.0.2");
    let deadline = Instant::now() + SHORT;
    while !cap.is_finished() && Instant::now() < deadline {
        let f = w.once(&["--network", "seg", "--name", "pinger"], &["sh", "-c", &script]);
        assert_eq!(f.code, 0, "{} {}", f.stdout, f.stderr);
    }
    let f = cap.join().unwrap();
    assert_eq!(f.code, 0, "{}", f.stderr);
    let fields = |filter: &str, field: &str| {
        let mut c = Command::new("tshark");
        c.args(["-n", "-r"]).arg(&file).args(["-Y", filter, "-T", "fields", "-e", field]);
        c.env("HOME", std::env::temp_dir());
        let t = run_with_deadline(c, SHORT);
        assert_eq!(t.code, 0, "{}", t.stderr);
        t.stdout.lines().map(str::to_string).collect::<Vec<_>>()
    };
    let to_web = fields("icmp.type == 8 && ip.dst == 10.89.0.2", "ip.src");
    assert!(!to_web.is_empty() && to_web.iter().all(|l| l == "10.89.0.3"), "pings of web captured: {to_web:?}");
    assert!(!fields("icmp.type == 0 && ip.src == 10.89.0.2", "ip.dst").is_empty(), "web's replies captured");
    let to_gw = fields("icmp && ip.dst == 10.89.0.1", "ip.src");
    assert!(to_gw.is_empty(), "the pinger's echo to the gateway is not web's traffic: {to_gw:?}");
    // Every frame is web's own (02:42:0a:59:00:02) or one the segment floods to it.
    let others =
        fields("!(eth.src == 02:42:0a:59:00:02 || eth.dst == 02:42:0a:59:00:02 || eth.dst.ig == 1)", "frame.number");
    assert!(others.is_empty(), "frames of others: {others:?}");
    // Errors name the bad value and what is expected.
    let f = w.run(&["capture", "--container", "ghost", "-w", file.to_str().unwrap()]);
    assert_eq!(f.code, 1);
    assert!(f.stderr.contains("no such container: \"ghost\" (see `warren ps`)"), "{}", f.stderr);
    w.ok(&["network", "create", "seg2"]);
    let f = w.run(&["capture", "--container", "web", "--network", "seg2", "-w", file.to_str().unwrap()]);
    assert_eq!(f.code, 1);
    assert!(f.stderr.contains("container \"web\" is not on network \"seg2\""), "{}", f.stderr);
    w.ok(&["network", "connect", "seg2", "web"]);
    let f = w.run(&["capture", "--container", "web", "-w", file.to_str().unwrap()]);
    assert_eq!(f.code, 1);
    assert!(f.stderr.contains("container \"web\" is on networks seg, seg2: name one with --network"), "{}", f.stderr);
}

#[test]
fn network_created_with_a_capture_file() {
    require_isolation();
    let w = World::new("pcapnet");
    let file = w.rt.join("all.pcap");
    w.ok(&["network", "create", "rec", "--pcap", file.to_str().unwrap()]);
    let f = w.once(&["--network", "rec"], &[nettool().to_str().unwrap(), "ping", "10.89.0.1"]);
    assert_eq!(f.code, 0, "{} {}", f.stdout, f.stderr);
    // The file grows as frames pass (flushed as the data path goes idle): readable at once.
    let mut c = Command::new("tshark");
    c.args(["-n", "-r"]).arg(&file).args([
        "-Y",
        "icmp.type == 0 && ip.src == 10.89.0.1",
        "-T",
        "fields",
        "-e",
        "ip.dst",
    ]);
    c.env("HOME", std::env::temp_dir());
    let t = run_with_deadline(c, SHORT);
    assert_eq!(t.code, 0, "{}", t.stderr);
    assert_eq!(t.stdout.trim(), "10.89.0.2", "the gateway's echo reply is in the capture");
    let f = w.run(&["capture", "--network", "rec", "--stop"]);
    assert_eq!(f.code, 0, "{}", f.stderr);
    assert!(f.stderr.contains("capture stopped: ") && f.stderr.contains(" frames written"), "{}", f.stderr);
    let f = w.run(&["capture", "--network", "rec", "--stop"]);
    assert_eq!(f.code, 1);
    assert!(f.stderr.contains("no capture is running"), "{}", f.stderr);
}

#[test]
fn a_networks_multicast_relay_reaches_the_hosts_network() {
    require_isolation();
    let w = World::new("multicast");
    // As `warren run --multicast` (main.rs), for every container of a network: a responder
    // on the remote host answers the query a container sends to the group from the group's
    // port (to the group, as mDNS does) and announces; both reach the container.
    let relay = "239.255.77.7:7777@wrn-remote0";
    w.ok(&["network", "create", "mc", "--multicast", relay]);
    let query = || {
        let responder =
            std::thread::spawn(|| remote_nettool(&["mcast-respond", "239.255.77.7", "7777", "wrn-remote1"]));
        let f = w.once(
            &["--network", "mc"],
            &[nettool().to_str().unwrap(), "mcast-query", "239.255.77.7", "7777", "100", "9", "-", "port"],
        );
        let r = responder.join().unwrap();
        assert_eq!(f.code, 0, "{} {}", f.stdout, f.stderr);
        (f.stdout, r.stdout)
    };
    let want = |seen: &str| {
        format!(
            "reply from {VETH_REMOTE}:7777 seen={seen} hash=ok\nannounce from {VETH_REMOTE}:7777 hash=ok\nothers: \n"
        )
    };
    let (got, seen) = query();
    assert_eq!(got, want(&format!("{VETH_LOCAL}:7777")), "remote host saw: {seen}");
    assert!(seen.contains(&format!("query 100 bytes from {VETH_LOCAL}:7777 ttl=4")), "{seen}");
    assert_eq!(w.inspect("mc")["Options"]["warren.multicast"], relay);
    // Kept across a daemon restart.
    w.stop_daemon();
    assert_eq!(query().0, want(&format!("{VETH_LOCAL}:7777")));
    // IPv6: a one-shot query from the container's link-local address (which the switch's
    // address table does not hold) and an ephemeral port, answered 1.5 s later while another
    // container of the network keeps sending: the answer goes to the querier's port (the
    // capture shows its MAC), not to whoever sent last.
    let file = w.rt.join("mc6.pcap");
    w.ok(&[
        "network",
        "create",
        "mc6",
        "--ipv6",
        "--multicast",
        "[ff02::fb]:7778@wrn-remote0",
        "--pcap",
        file.to_str().unwrap(),
    ]);
    let gw = w.inspect("mc6")["IPAM"]["Config"][0]["Gateway"].as_str().unwrap().to_string();
    let chatty = format!("echo serving; for i in $(seq 100); do {} ping {gw}; sleep 0.1; done", nettool().display());
    let _chatty = w.start(&["--network", "mc6"], &["sh", "-c", &chatty]);
    let responder =
        std::thread::spawn(|| remote_nettool(&["mcast-respond", "ff02::fb", "7778", "wrn-remote1", "1500"]));
    let f = w.once(
        &["--network", "mc6"],
        &[nettool().to_str().unwrap(), "mcast-query", "ff02::fb", "7778", "100", "9", "-", "ephemeral"],
    );
    let seen = responder.join().unwrap().stdout;
    assert_eq!(f.code, 0, "{} {}", f.stdout, f.stderr);
    let lines: Vec<&str> = f.stdout.lines().collect();
    assert!(
        lines[0].starts_with("reply from [") && lines[0].contains("]:7778 seen=[") && lines[0].ends_with("hash=ok"),
        "{lines:?} ({seen})"
    );
    assert!(lines[1].starts_with("announce from [") && lines[1].ends_with("hash=ok"), "{lines:?}");
    assert_eq!(lines[2], "others: ");
    assert!(seen.contains("query 100 bytes from [") && !seen.contains("]:7778 "), "an ephemeral port: {seen}");
    let mut c = Command::new("tshark");
    c.args(["-n", "-r"]).arg(&file);
    c.args(["-Y", "udp.srcport == 7778 && ipv6.dst == fe80::/10", "-T", "fields", "-e", "eth.dst", "-e", "ipv6.dst"]);
    c.env("HOME", std::env::temp_dir());
    let t = run_with_deadline(c, SHORT);
    assert_eq!(t.code, 0, "{}", t.stderr);
    let answer: Vec<&str> = t.stdout.split_whitespace().collect();
    assert_eq!(answer.len(), 2, "one answer to the link-local address: {}", t.stdout);
    let mac: Vec<u8> = answer[0].split(':').map(|b| u8::from_str_radix(b, 16).unwrap()).collect();
    let ll: std::net::Ipv6Addr = answer[1].parse().unwrap();
    let iid = [mac[0] ^ 2, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]];
    assert_eq!(ll.octets()[8..], iid, "to the MAC behind that address, not flooded: {}", t.stdout);
    for (args, msg) in [
        (
            &["--multicast", "239.255.77.7:0"][..],
            "invalid --multicast spec \"239.255.77.7:0\": port 0: expected 1..=65535",
        ),
        (
            &["--multicast", "[ff02::fb]:5353@wrn-remote0"][..],
            "--multicast [ff02::fb]:5353@wrn-remote0: an IPv6 group, but the network has no IPv6: create it with --ipv6",
        ),
        (
            &["--multicast", "239.255.77.8:7777"][..],
            "the host refused to join the group: No such device (os error 19) (no route for 239.255.77.8 on this host",
        ),
        (
            &["--multicast", relay, "--internal"][..],
            "--multicast has no effect on an --internal network (nothing leaves it)",
        ),
    ] {
        let mut a = vec!["network", "create", "bad"];
        a.extend_from_slice(args);
        let f = w.run(&a);
        assert_eq!(f.code, 1, "{args:?}");
        assert!(f.stderr.contains(msg) && f.stderr.lines().count() == 1, "{args:?}: {}", f.stderr);
    }
    assert!(!w.ok(&["network", "ls"]).contains("bad"), "no network half-created");
    let f = w.once(&["--network", "mc", "--multicast", relay], &["echo", "started"]);
    assert_eq!(f.code, 125);
    assert!(
        f.stderr.contains(
            "--multicast applies to a container's own network; on \"mc\" it is the network's: \
             `warren network create mc --multicast GROUP:PORT[@IFACE]`"
        ),
        "{}",
        f.stderr
    );
}

#[test]
fn a_networks_dns_fails_over_and_routes_domains() {
    use std::sync::atomic::Ordering::SeqCst;
    require_isolation();
    let w = World::new("dnsroute");
    // As `warren run --dns-upstream/--dns-route` (ops.rs), for a network's containers, whose
    // own names the network answers first.
    let (_silent, silent, silent_n) = counted_upstream(|_| None);
    let (_good, good, good_n) = counted_upstream(dns_answer);
    let (_corp, corp, corp_n) = counted_upstream(corp_answer);
    let route = format!("corp.test={corp}");
    w.ok(&["network", "create", "split", "--dns-upstream", &silent, "--dns-upstream", &good, "--dns-route", &route]);
    assert_eq!(w.inspect("split")["Options"]["warren.dns_route"], route.as_str());
    let _web = w.idle(&["--network", "split", "--name", "web"]);
    let t = nettool();
    let script = format!(
        "{t} dns 10.89.0.1 web && {t} dns 10.89.0.1 a.example.test && {t} dns 10.89.0.1 b.example.test && \
         {t} dns 10.89.0.1 www.corp.test",
        t = t.display()
    );
    let queries = || {
        let f = w.once(&["--network", "split"], &["sh", "-c", &script]);
        assert_eq!(f.code, 0, "{} {}", f.stdout, f.stderr);
        f.stdout
    };
    let want = "rcode=0 10.89.0.2\nrcode=0 192.0.2.55\nrcode=0 192.0.2.55\nrcode=0 192.0.2.77\n";
    assert_eq!(queries(), want);
    assert_eq!((silent_n.load(SeqCst), good_n.load(SeqCst), corp_n.load(SeqCst)), (1, 2, 1));
    // Kept across a daemon restart.
    w.stop_daemon();
    let _web = w.idle(&["--network", "split", "--name", "web"]);
    assert_eq!(queries(), want);
    assert_eq!((silent_n.load(SeqCst), good_n.load(SeqCst), corp_n.load(SeqCst)), (2, 4, 2));
    for (args, msg) in [
        (&["--dns-route", "corp.test"][..], "invalid --dns-route \"corp.test\": no '='"),
        (
            &["--dns-route", &route, "--internal"][..],
            "--dns-route has no effect on an --internal network (it answers only its containers' names)",
        ),
    ] {
        let mut a = vec!["network", "create", "bad"];
        a.extend_from_slice(args);
        let f = w.run(&a);
        assert_eq!(f.code, 1, "{args:?}");
        assert!(f.stderr.contains(msg) && f.stderr.lines().count() == 1, "{args:?}: {}", f.stderr);
    }
    assert!(!w.ok(&["network", "ls"]).contains("bad"), "no network half-created");
    // A container's own DNS options are refused on a network: they are the network's.
    for (o, v, placeholder) in
        [("--dns-upstream", good.as_str(), "IP[:PORT]"), ("--dns-route", &route, "DOMAIN=IP[:PORT]")]
    {
        let f = w.once(&["--network", "split", o, v], &["echo", "started"]);
        assert_eq!((f.code, f.stdout.as_str()), (125, ""), "{}", f.stderr);
        let msg = format!(
            "{o} applies to a container's own network; on \"split\" it is the network's: `warren network create split {o} {placeholder}`"
        );
        assert!(f.stderr.contains(&msg), "{}", f.stderr);
    }
}

#[test]
fn the_daemon_tells_its_service_manager_when_it_is_up() {
    require_isolation();
    let w = World::new("notify");
    let path = w.rt.join("notify.sock");
    let manager = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    // Started on demand by a client that runs under a manager: that manager is not told (the
    // daemon is not its service). Anything sent would be queued before the answer came.
    let mut c = w.cmd(&["network", "ls"]);
    c.env("NOTIFY_SOCKET", &path);
    let f = run_with_deadline(c, LONG);
    assert_eq!(f.code, 0, "{}", f.stderr);
    manager.set_nonblocking(true).unwrap();
    let mut msg = [0u8; 64];
    let e = manager.recv(&mut msg).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "an on-demand daemon notified the client's manager");
    w.stop_daemon();
    // In the foreground under a Type=notify unit: READY=1 once it serves.
    manager.set_nonblocking(false).unwrap();
    manager.set_read_timeout(Some(SHORT)).unwrap();
    let mut c = w.cmd(&["daemon"]);
    c.env("NOTIFY_SOCKET", &path).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut daemon = Guard(Some(c.spawn().unwrap()));
    let n = manager.recv(&mut msg).expect("READY=1");
    assert_eq!(&msg[..n], b"READY=1");
    let pid = daemon.0.as_ref().unwrap().id() as i32;
    assert_eq!(w.daemon_pid(), Some(pid));
    w.ok(&["network", "create", "up"]);
    assert_eq!(w.daemon_pid(), Some(pid), "served by the daemon the manager started");
    let child = daemon.0.as_mut().unwrap();
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
    assert!(child.wait().unwrap().success(), "SIGTERM ends it cleanly");
    daemon.0 = None;
}
