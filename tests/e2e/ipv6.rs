//! IPv6: the container's dual-stack configuration, NAT66 of TCP, UDP and ICMPv6, DNS over and
//! for IPv6, and IPv6 published ports (source kept, and to IPv4-only services).
//!
//! The "remote" IPv6 addresses are the suite's own: fd99:200::1 on `lo` and fd99:201::2 on the
//! remote-host namespace behind the veth (scripts/test.sh). The suite's namespace has no IPv6
//! default route, so 2001:db8::/32 is unreachable from it and nothing leaves.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::util::*;

const MIB: u64 = 1 << 20;
const SHORT: Duration = Duration::from_secs(30);
const LONG: Duration = Duration::from_secs(300);

#[test]
fn ipv6_is_configured_by_default_and_can_be_turned_off() {
    require_isolation();
    let script = "ip -6 -o addr show dev tap0 scope global; ip -6 route show default; cat /etc/resolv.conf; \
                  cat /proc/sys/net/ipv6/conf/tap0/accept_ra";
    let f = warren_run(&[], &["sh", "-c", script], SHORT);
    assert_eq!(f.code, 0, "{}", f.stderr);
    let out = f.stdout;
    assert!(out.contains("inet6 fd00::100/64"), "static container address: {out}");
    assert_eq!(out.matches("inet6 ").count(), 1, "exactly one global address (no SLAAC twin): {out}");
    assert!(out.contains("default via fd00::2 dev tap0"), "IPv6 default route: {out}");
    assert!(out.contains("nameserver 10.0.2.3\nnameserver fd00::3\n"), "both DNS addresses, IPv4 first: {out}");
    assert!(!out.contains("tentative"), "usable at once, no DAD wait: {out}");

    let f = warren_run(&["--cidr6", "fd12:3456:789a:1::/64"], &["sh", "-c", script], SHORT);
    assert_eq!(f.code, 0, "{}", f.stderr);
    assert!(f.stdout.contains("inet6 fd12:3456:789a:1::100/64"), "{}", f.stdout);
    assert!(f.stdout.contains("default via fd12:3456:789a:1::2"), "{}", f.stdout);

    let f = warren_run(&["--no-ipv6"], &["sh", "-c", "ip -6 -o addr show scope global; cat /etc/resolv.conf"], SHORT);
    assert_eq!(f.code, 0, "{}", f.stderr);
    assert!(!f.stdout.contains("inet6"), "no IPv6 address with --no-ipv6: {}", f.stdout);
    assert!(!f.stdout.contains("fd00::3"), "{}", f.stdout);
    let line = nettool_in(&["--no-ipv6"], &["connect-error", REMOTE_IP6, "80"], SHORT);
    assert!(line.starts_with("error raw=Some(101)"), "no IPv6 route inside: {line}");
}

#[test]
fn ipv6_transfers_are_verified_byte_for_byte() {
    require_isolation();
    let n = 64 * MIB;
    let srv = TcpServer::download(REMOTE_IP6);
    let port = srv.addr.port().to_string();
    assert_eq!(
        nettool_in(&[], &["download", REMOTE_IP6, &port, &n.to_string(), "61"], LONG),
        format!("ok {n} {}", stream_hash(61, n))
    );
    let sink = TcpServer::upload_sink(REMOTE_IP6);
    let port = sink.addr.port().to_string();
    assert_eq!(
        nettool_in(&[], &["upload", REMOTE_IP6, &port, &n.to_string(), "62"], LONG),
        format!("{n} {}", stream_hash(62, n))
    );
    // The gateway address leads to the host's ::1 when host loopback is allowed.
    let lo = TcpServer::download("::1");
    let port = lo.addr.port().to_string();
    let m = 16 * MIB;
    let line = nettool_in(&["--allow-host-loopback"], &["download", "fd00::2", &port, &m.to_string(), "63"], LONG);
    assert_eq!(line, format!("ok {m} {}", stream_hash(63, m)));
    // ... and is refused without it.
    let line = nettool_in(&[], &["refused", "fd00::2", &port], SHORT);
    assert_eq!(line, "refused");
    assert_eq!(lo.accepted.load(std::sync::atomic::Ordering::SeqCst), 1, "only the allowed connection arrived");
}

#[test]
fn ipv6_udp_and_errors() {
    require_isolation();
    let echo = UdpServer::echo(REMOTE_IP6);
    let port = echo.addr.port().to_string();
    assert_eq!(nettool_in(&[], &["udp-echo", REMOTE_IP6, &port, "18"], SHORT), "ok 18", "datagrams up to 65000 bytes");
    // No IPv6 route in the suite's namespace: the host socket says ENETUNREACH at once and the
    // container gets ICMPv6 "no route".
    let line = nettool_in(&[], &["connect-error", "2001:db8::1", "80"], SHORT);
    assert!(line.starts_with("error raw=Some(101)"), "expected ENETUNREACH, got {line}");
    // An unowned address on the container's own /64: address unreachable.
    let line = nettool_in(&[], &["connect-error", "fd00::77", "80"], SHORT);
    assert!(line.starts_with("error raw=Some(113)"), "expected EHOSTUNREACH, got {line}");
    // A closed port on the remote: refused at once.
    let closed = std::net::TcpListener::bind((REMOTE_IP6, 0)).unwrap().local_addr().unwrap().port();
    assert_eq!(nettool_in(&[], &["refused", REMOTE_IP6, &closed.to_string()], SHORT), "refused");
}

#[test]
fn ipv6_dns_through_a_stub_on_ipv6_loopback() {
    require_isolation();
    let stub = DnsStub::start_on("::1");
    let up = format!("[::1]:{}", stub.udp.addr.port());
    let net = ["--dns-upstream", up.as_str()];
    // Over IPv6 to fd00::3, AAAA and A passed through; and over IPv4 to the same upstream.
    assert_eq!(nettool_in(&net, &["dns", "fd00::3", "web.example.test", "aaaa"], SHORT), "rcode=0 2001:db8::55");
    assert_eq!(nettool_in(&net, &["dns", "fd00::3", "web.example.test"], SHORT), "rcode=0 192.0.2.55");
    assert_eq!(nettool_in(&net, &["dns", "fd00::3", "web.example.test", "tcp"], SHORT), "rcode=0 192.0.2.55");
    assert_eq!(nettool_in(&net, &["dns", "10.0.2.3", "web.example.test", "aaaa"], SHORT), "rcode=0 2001:db8::55");
    assert_eq!(nettool_in(&net, &["dns", "fd00::3", "nx.example.test", "aaaa"], SHORT), "rcode=3");
    let f = warren_run(&net, &["getent", "ahostsv6", "web.example.test"], SHORT);
    assert_eq!(f.code, 0, "getent: {} {}", f.stdout, f.stderr);
    assert!(f.stdout.starts_with("2001:db8::55"), "{}", f.stdout);
}

#[test]
fn a_link_local_dns_upstream_on_an_interface() {
    require_isolation();
    // Routers announce link-local resolvers (resolv.conf: nameserver fe80::1%wlan0). A stub
    // on this host's link-local address of the suite's veth, named with its interface.
    let mut c = Command::new("ip");
    c.args(["-6", "-o", "addr", "show", "dev", "wrn-remote0", "scope", "link"]);
    let f = run_with_deadline(c, SHORT);
    let ll: std::net::Ipv6Addr = f
        .stdout
        .split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .and_then(|a| a.split('/').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no link-local address on wrn-remote0: {}", f.stdout));
    let index = nix::net::if_::if_nametoindex("wrn-remote0").unwrap();
    // Usable once duplicate address detection is done (a second or two after the suite began).
    let deadline = std::time::Instant::now() + SHORT;
    let sock = loop {
        match std::net::UdpSocket::bind(std::net::SocketAddrV6::new(ll, 0, 0, index)) {
            Ok(s) => break s,
            Err(e) => assert!(std::time::Instant::now() < deadline, "bind [{ll}%wrn-remote0]: {e}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stub = UdpServer::serve_socket(sock, |s, q, from| {
        if let Some(r) = dns_answer(q) {
            let _ = s.send_to(&r, from);
        }
    });
    let up = format!("[{ll}%wrn-remote0]:{}", stub.addr.port());
    assert_eq!(
        nettool_in(&["--dns-upstream", &up], &["dns", "10.0.2.3", "web.example.test"], SHORT),
        "rcode=0 192.0.2.55"
    );
    // Without its interface a link-local address says nothing: refused at start.
    let f = warren_run(&["--dns-upstream", &format!("[{ll}%nosuchif0]:53")], &["true"], SHORT);
    assert_eq!(f.code, 125);
    assert!(f.stderr.contains("link-local as ADDR%IFACE or [ADDR%IFACE]:PORT"), "{}", f.stderr);
}

#[test]
fn ipv6_ping_gateway_and_remote() {
    require_isolation();
    assert_eq!(nettool_in(&[], &["ping", "fd00::2"], SHORT), "reply from fd00::2 payload_ok=true");
    assert_eq!(nettool_in(&[], &["ping", "fd00::3"], SHORT), "reply from fd00::3 payload_ok=true");
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap();
    let mut it = range.split_whitespace().map(|x| x.parse::<u64>().unwrap());
    let (lo, hi) = (it.next().unwrap(), it.next().unwrap());
    let gid = u64::from(nix::unistd::getgid().as_raw());
    let line = nettool_in(&[], &["ping", REMOTE_IP6], SHORT);
    if (lo..=hi).contains(&gid) {
        assert_eq!(line, format!("reply from {REMOTE_IP6} payload_ok=true"), "ICMPv6 ping socket path");
    } else {
        assert_eq!(line, format!("unreachable code=1 from {REMOTE_IP6}"), "honest 'administratively prohibited'");
    }
}

#[test]
fn ipv6_published_ports_keep_the_client_address() {
    require_isolation();
    let tcp = free_port("::");
    let udp = free_port("::");
    let tool = nettool();
    let (t, u) = (format!("[::]:{tcp}:80"), format!("[::]:{udp}:53/udp"));
    let _a = Running::start(&["-p", &t], &[tool.to_str().unwrap(), "serve", "[::]:80"]);
    let _b = Running::start(&["-p", &u], &[tool.to_str().unwrap(), "udp-serve", "[::]:53"]);
    // From the remote host over IPv6: the container sees its exact address and port.
    let f = remote_nettool(&["ask", VETH_LOCAL6, &tcp.to_string(), "peer"]);
    assert_eq!(f.code, 0, "{} {}", f.stdout, f.stderr);
    let line = f.stdout.trim();
    let local = line.split_whitespace().next().unwrap().trim_start_matches("local=");
    assert!(local.starts_with(&format!("[{VETH_REMOTE6}]:")), "{line}");
    assert_eq!(line, format!("local={local} reply={local}"), "TCP over IPv6 keeps the client address");
    let f = remote_nettool(&["udp-ask", VETH_LOCAL6, &udp.to_string(), "hi"]);
    assert_eq!(f.code, 0, "{} {}", f.stdout, f.stderr);
    let line = f.stdout.trim();
    let local = line.split_whitespace().next().unwrap().trim_start_matches("local=");
    assert!(local.starts_with(&format!("[{VETH_REMOTE6}]:")), "{line}");
    assert_eq!(line, format!("local={local} reply=from {local} hi"), "UDP over IPv6 keeps the client address");
    // A client on ::1 reaches the container over IPv6, seen as the gateway with its port.
    let (local, seen) = tcp_peer_seen(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, tcp)), None);
    assert_eq!(seen, format!("[fd00::2]:{}", local.port()), "a loopback client seen as the IPv6 gateway");
    // 64 MiB each way through the IPv6 forward from a non-loopback IPv6 source (userspace
    // stack), checked by SHA-256 on both ends.
    let to = SocketAddr::new(REMOTE_IP6.parse().unwrap(), tcp);
    let from = Some(REMOTE_IP6.parse().unwrap());
    crate::ports::get_and_check(to, from, 64 * MIB, 65);
    crate::ports::put_and_check(to, from, 64 * MIB, 66);
}

#[test]
fn ipv6_listener_reaches_an_ipv4_only_service() {
    require_isolation();
    let (auto, pinned) = (free_port("::"), free_port("::"));
    let tool = nettool();
    let (a, p) = (format!("[::]:{auto}:80"), format!("[::]:{pinned}:80/tcp4"));
    // The service binds 0.0.0.0 only: the IPv6 default is refused inside and retried on IPv4;
    // /tcp4 goes there directly.
    let r = Running::start(&["-p", &a, "-p", &p], &[tool.to_str().unwrap(), "serve", "80"]);
    for port in [auto, pinned] {
        let f = remote_nettool(&["ask", VETH_LOCAL6, &port.to_string(), "peer"]);
        assert_eq!(f.code, 0, "port {port}: {} {}", f.stdout, f.stderr);
        let line = f.stdout.trim();
        let local: SocketAddr = line.split_whitespace().next().unwrap().trim_start_matches("local=").parse().unwrap();
        assert_eq!(
            line,
            format!("local={local} reply=10.0.2.2:{}", local.port()),
            "an IPv6 client of an IPv4 service appears as the gateway with its own port"
        );
        let (local, seen) = tcp_peer_seen(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)), None);
        assert_eq!(seen, format!("10.0.2.2:{}", local.port()), "a loopback client falls back to IPv4 too");
    }
    let ls = r.port(&["ls", "--json"]);
    assert_eq!(ls.code, 0, "{}", ls.stderr);
    assert!(ls.stdout.contains("\"container\":\"[fd00::100]:80\""), "{}", ls.stdout);
    assert!(ls.stdout.contains("\"fallback\":\"10.0.2.100:80\""), "{}", ls.stdout);
    assert!(ls.stdout.contains("\"container\":\"10.0.2.100:80\""), "{}", ls.stdout);
}

#[test]
fn ipv6_bad_input_is_refused_clearly() {
    require_isolation();
    let cases: [(&[&str], &str); 4] = [
        (
            &["--cidr6", "fd00::/48"],
            "invalid IPv6 prefix \"fd00::/48\": the prefix length must be 64 (SLAAC needs a /64)",
        ),
        (&["--cidr6", "fd00::1/64"], "invalid IPv6 prefix \"fd00::1/64\": expected a network address like fd00::/64"),
        (&["--cidr6", "fe80::/64"], "invalid IPv6 prefix \"fe80::/64\": expected a unicast prefix"),
        (&["--cidr6", "nonsense"], "invalid IPv6 prefix \"nonsense\": expected an IPv6 network like fd00::/64"),
    ];
    for (net, msg) in cases {
        let f = warren_run(net, &["true"], SHORT);
        assert_eq!(f.code, 125, "{net:?}: {}", f.stderr);
        assert!(f.stderr.contains(msg), "{net:?}: {}", f.stderr);
        assert_eq!(f.stderr.lines().count(), 1, "one line: {}", f.stderr);
    }
    let f = warren_run(&["-p", "8080:80/tcp5"], &["true"], SHORT);
    assert_eq!(f.code, 125, "{}", f.stderr);
    assert!(f.stderr.contains("protocol \"tcp5\" is not tcp, udp, tcp4, udp4, tcp6 or udp6"), "{}", f.stderr);
}
