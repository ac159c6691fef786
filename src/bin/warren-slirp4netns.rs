//! `warren-slirp4netns`: slirp4netns's command line and API on warren's data path.

use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::Duration;

use tokio::io::Interest;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

use warren::api::ApiSocket;
use warren::config::{self, Addresses, Addresses6, DnsUpstreams, NetConfig};
use warren::ns::{self, Target};
use warren::runtime::Dataplane;
use warren::slirp::{self, NetnsType, Parsed, SlirpArgs};

/// The slirp4netns release whose behaviour this binary reproduces.
const COMPAT_VERSION: &str = "1.2.0";

fn main() -> ExitCode {
    warren::sys::tune_allocator();
    warren::sys::raise_nofile_limit();
    let mut args = std::env::args();
    let argv0 = args.next().unwrap_or_else(|| "slirp4netns".into());
    let prog = std::path::Path::new(&argv0).file_name().map_or(argv0.clone(), |n| n.to_string_lossy().into_owned());
    let rest: Vec<String> = args.collect();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warren=warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false).init();
    // getopt names the program by argv[0] as given; so do the parse errors.
    match slirp::parse(&argv0, &rest) {
        Err(e) => {
            if let Some(m) = e.message {
                eprintln!("{m}");
            }
            if e.usage {
                print!("{}", slirp::help(&prog));
            }
            ExitCode::from(1)
        }
        Ok(Parsed::Help) => {
            print!("{}", slirp::help(&prog));
            ExitCode::SUCCESS
        }
        Ok(Parsed::Version) => {
            println!("slirp4netns version {COMPAT_VERSION}");
            println!("commit: warren-{}", env!("CARGO_PKG_VERSION"));
            println!("warren: {} (a userspace network stack on smoltcp; no libslirp)", env!("CARGO_PKG_VERSION"));
            println!("SLIRP_CONFIG_VERSION_MAX: 4");
            ExitCode::SUCCESS
        }
        Ok(Parsed::Run(a)) => match run(*a) {
            Ok(()) => ExitCode::SUCCESS,
            Err(msg) => {
                eprintln!("{msg}");
                ExitCode::from(1)
            }
        },
    }
}

fn outbound_v4(spec: &str) -> Result<Ipv4Addr, String> {
    warren::config::outbound_v4(spec)
        .ok_or_else(|| format!("outbound-addr: no IPv4 address or interface named {spec:?}"))
}

fn outbound_v6(spec: &str) -> Result<Ipv6Addr, String> {
    warren::config::outbound_v6(spec)
        .ok_or_else(|| format!("outbound-addr6: no IPv6 address or interface named {spec:?}"))
}

/// How long TCP flows may still carry data after the namespace or the exit signal went.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

fn run(a: SlirpArgs) -> Result<(), String> {
    for w in &a.warnings {
        println!("{w}");
    }
    let net = slirp::parse_cidr(&a.cidr)?;
    let tap_name = a.tap_name.clone().unwrap_or_else(|| "tap0".into());
    warren::sys::check_ifname(&tap_name).map_err(|e| e.to_string())?;
    let cfg = NetConfig {
        addrs: Addresses::new(net),
        addrs6: a.ipv6.then(|| Addresses6::new(config::parse_cidr6(config::CIDR6_DEFAULT).expect("valid default"))),
        // As slirp4netns: the container autoconfigures IPv6 from router advertisements.
        static_ipv6: false,
        mtu: a.mtu,
        tap_name: tap_name.clone(),
        mac: a.macaddress,
        allow_host_loopback: !a.disable_host_loopback,
        dns: if a.disable_dns { DnsUpstreams::Disabled } else { DnsUpstreams::HostResolvConf },
        dns_routes: Vec::new(),
        outbound_v4: a.outbound_addr.as_deref().map(outbound_v4).transpose()?,
        outbound_v6: a.outbound_addr6.as_deref().map(outbound_v6).transpose()?,
        outbound_ifaces: (
            a.outbound_addr.as_deref().and_then(warren::config::outbound_iface),
            a.outbound_addr6.as_deref().and_then(warren::config::outbound_iface),
        ),
        limits: Default::default(),
        default_route: true,
        // One queue per CPU (at most 4) when warren opens the TAP; an adopted fd is one queue.
        queues: config::default_queues(),
        busy_poll: config::default_busy_poll(),
        to_host: Vec::new(),
        to_host_udp: Vec::new(),
        multicast: Vec::new(),
        auto_tables: Default::default(),
        bridge: None,
    };
    // Taken before configuring: once the set-up is visible, the namespace may go at any moment
    // (a first look after that would find nothing and never watch).
    let netns_identity = warren::runtime::file_identity(std::path::Path::new(&a.target));
    // The TAP: handed over as an fd (tapfd mode, no fork), or opened inside by a helper.
    let (fd, mac, vnet, pidfd, queue_fds) = if a.netns_type == NetnsType::TapFd {
        let raw: i32 = a.target.parse().map_err(|_| "FD must be a non-negative integer".to_string())?;
        let fd = warren::sys::adopt_inherited_fd(raw).map_err(|e| format!("tapfd {raw}: {e}"))?;
        let flags = warren::sys::tap_flags(fd.as_fd()).map_err(|e| format!("tapfd {raw}: not a TAP device: {e}"))?;
        if flags & libc::IFF_TAP == 0 {
            return Err(format!("tapfd {raw}: not a TAP device (a TUN device?)"));
        }
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))
            .map_err(|e| format!("tapfd {raw}: {e}"))?;
        // The container's MAC is learned from its first frame.
        (fd, [0xff; 6], flags & libc::IFF_VNET_HDR != 0, None, Vec::new())
    } else {
        let target = match a.netns_type {
            NetnsType::Pid => {
                let pid: i32 = a.target.parse().map_err(|_| "PID must be a positive integer".to_string())?;
                match &a.userns_path {
                    Some(u) => Target::Path { netns: format!("/proc/{pid}/ns/net").into(), userns: Some(u.clone()) },
                    None => Target::Pid(pid),
                }
            }
            _ => Target::Path { netns: a.target.clone().into(), userns: a.userns_path.clone() },
        };
        let pidfd = match a.netns_type {
            NetnsType::Pid => Some(warren::sys::pidfd_open(a.target.parse().unwrap_or(0)).map_err(|e| e.to_string())?),
            _ => None,
        };
        let tap = ns::spawn_attach_with(&cfg, &target, a.configure).map_err(|e| e.to_string())?;
        eprintln!("sent tapfd={} for {tap_name}", tap.fd.as_raw_fd());
        eprintln!("received tapfd={}", tap.fd.as_raw_fd());
        (tap.fd, tap.mac, true, pidfd, tap.queues)
    };
    print_banner(&a, &cfg);
    let api = match &a.api_socket {
        Some(p) => {
            let _ = std::fs::remove_file(p);
            Some(ApiSocket::bind(Some(p.clone())).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    if a.sandbox {
        // Before any thread exists: entering a user namespace needs a single-threaded process.
        let userns = match (a.netns_type, &a.userns_path) {
            (_, Some(p)) => Some(p.clone()),
            (NetnsType::Pid, None) => Some(format!("/proc/{}/ns/user", a.target).into()),
            _ => None,
        };
        let userns = userns.map(std::fs::File::open).transpose().map_err(|e| format!("sandbox: {e}"))?;
        ns::sandbox(userns.as_ref())?;
    }
    // Watch a namespace given by path: unlike slirp4netns, exit when it goes. Its identity is
    // taken before the sandbox; if the sandbox hides the path, it is not watched.
    let watched = match a.netns_type {
        NetnsType::Path => {
            let p = std::path::PathBuf::from(&a.target);
            // A sandbox may hide the path: then it cannot be watched. Without one, a path
            // already gone is watched all the same (and is found gone at the first look).
            let first = if a.sandbox {
                netns_identity.filter(|id| warren::runtime::file_identity(&p) == Some(*id))
            } else {
                netns_identity
            };
            if first.is_none() {
                tracing::debug!(path = %p.display(), "namespace path not visible here: not watched");
            }
            Some((p, first))
        }
        _ => None,
    };
    let ready = a.ready_fd.map(|fd| warren::sys::adopt_inherited_fd(fd).map_err(|e| format!("ready-fd {fd}: {e}")));
    let ready = ready.transpose()?;
    let exit_fd = a.exit_fd.map(|fd| warren::sys::adopt_inherited_fd(fd).map_err(|e| format!("exit-fd {fd}: {e}")));
    let exit_fd = exit_fd.transpose()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let tx_fd = fd.try_clone().map_err(|e| e.to_string())?;
    let mut dp = Dataplane::new(cfg, tx_fd, mac, vnet);
    // The other queues' threads: after the sandbox (which needs a single thread), before the
    // seccomp filter (which then covers them).
    let mut queues = dp.spawn_queues(queue_fds, DRAIN_GRACE).map_err(|e| format!("TAP queue threads: {e}"))?;
    if a.seccomp {
        // Everything that needed more (namespaces, the TAP, listeners, the runtime) exists now.
        warren::harden::apply_seccomp_allowlist(&[]).map_err(|e| e.to_string())?;
    }
    let r = rt.block_on(async move {
        // A guest that autoconfigures IPv6 learns the prefix at once, not at its next solicitation.
        dp.advertise_router();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        if let Some(api) = api {
            tokio::spawn(api.serve(tx, dp.guest()));
        } else {
            drop(tx);
        }
        let fd = warren::sys::async_fd(fd).map_err(|e| e.to_string())?;
        if let Some(r) = ready {
            // TAP, API socket and data path are up.
            let _ = nix::unistd::write(&r, b"1");
            drop(r);
        }
        let stop = stop(exit_fd, pidfd, watched);
        let r = dp.run(&fd, Some(rx), stop).await;
        queues.stop();
        // Forwarded ports free at once for whoever comes next; open connections drain.
        dp.close_listeners();
        let _ = dp.drain(&fd, DRAIN_GRACE).await;
        queues.join();
        r.map_err(|e| format!("do_slirp: {e}"))
    });
    eprintln!("do_slirp is exiting");
    drop(rt);
    r
}

fn print_banner(a: &SlirpArgs, cfg: &NetConfig) {
    let base = u32::from(cfg.addrs.net.network());
    let ip = |off: u32| Ipv4Addr::from(base + off);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "Starting slirp");
    let _ = writeln!(out, "* MTU:             {}", cfg.mtu);
    let _ = writeln!(out, "* Network:         {}", cfg.addrs.net.network());
    let _ = writeln!(out, "* Netmask:         {}", cfg.addrs.net.netmask());
    let _ = writeln!(out, "* Gateway:         {}", cfg.addrs.gateway);
    let _ = writeln!(out, "* DNS:             {}", cfg.addrs.dns);
    let _ = writeln!(out, "* DHCP begin:      {}", ip(15));
    let _ = writeln!(out, "* DHCP end:        {}", ip(30));
    let _ = writeln!(out, "* Recommended IP:  {}", cfg.addrs.container);
    if let Some(p) = &a.api_socket {
        let _ = writeln!(out, "* API Socket:      {}", p.display());
    }
    if let Some(o) = cfg.outbound_v4 {
        let _ = writeln!(out, "* Outbound IPv4:    {o}");
    }
    if let Some(o) = cfg.outbound_v6 {
        let _ = writeln!(out, "* Outbound IPv6:    {o}");
    }
    if let Some(m) = cfg.mac {
        let _ =
            writeln!(out, "* MAC address:     {}", m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"));
    }
    if cfg.allow_host_loopback {
        let _ = writeln!(
            out,
            "WARNING: 127.0.0.1:* on the host is accessible as {} (set --disable-host-loopback to prohibit connecting to 127.0.0.1:*)",
            cfg.addrs.gateway
        );
    }
    let _ = out.flush();
}

/// Completes on SIGTERM/SIGINT, a hang-up of the exit fd, the target process exiting, or the
/// target namespace path going away.
async fn stop(
    exit_fd: Option<OwnedFd>,
    pidfd: Option<OwnedFd>,
    watched: Option<(std::path::PathBuf, Option<(u64, u64)>)>,
) {
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let exit = async {
        let Some(fd) = exit_fd else { return std::future::pending().await };
        let _ = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK));
        let Ok(afd) = warren::sys::async_fd(fd) else { return std::future::pending().await };
        loop {
            let Ok(mut g) = afd.ready(Interest::READABLE).await else { return };
            if g.ready().is_read_closed() || g.ready().is_error() {
                eprintln!("exitfd event");
                return;
            }
            // Data written into the exit fd does not stop us: discard it.
            let mut buf = [0u8; 256];
            match nix::unistd::read(afd.get_ref().as_fd(), &mut buf) {
                Ok(0) => {
                    eprintln!("exitfd event");
                    return;
                }
                Ok(_) => {}
                Err(_) => g.clear_ready(),
            }
        }
    };
    let gone = async {
        let Some(fd) = pidfd else { return std::future::pending().await };
        if let Ok(afd) = warren::sys::async_fd(fd) {
            let _ = afd.readable().await;
        }
        tracing::info!("the target process exited");
    };
    let path_gone = async {
        match &watched {
            Some((p, first)) => warren::runtime::wait_path_gone(p, *first).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        () = exit => {}
        () = gone => {}
        () = path_gone => {}
    }
}
