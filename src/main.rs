//! The `warren` binary: parse, set up tracing, dispatch, choose the exit code.

use std::os::fd::{AsFd, OwnedFd};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

use warren::api::{self, ApiSocket};
use warren::cli::{
    AttachArgs, CaptureArgs, Cli, Command, InspectArgs, NetworkArgs, NetworkCommand, PortArgs, PortCommand,
    PublishArgs, RunArgs,
};
use warren::daemon::{self, Request, client::Conn};
use warren::forward::Forward;
use warren::ns::{self, Target};
use warren::runtime::ports::{self, Bound};
use warren::runtime::{Command as DpCommand, Dataplane};

/// Exit status of `warren run` when warren itself fails (as `docker run`/`podman run`).
const RUN_FAILED: u8 = 125;

/// How long TCP flows may finish after the container exited (data still in flight).
const DRAIN_GRACE: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    warren::sys::tune_allocator();
    warren::sys::raise_nofile_limit();
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let (Command::Run(a), Some(m)) = (&mut cli.command, matches.subcommand_matches("run")) {
        let typed = |id: &&clap::Id| m.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine);
        a.given = m.ids().filter(typed).map(|id| id.to_string()).collect();
    }
    init_tracing(cli.verbose, cli.log_format);
    let (result, failure_code) = match cli.command {
        Command::Run(a) => (run(a), RUN_FAILED),
        Command::Attach(a) => (attach(a), 1),
        Command::Port(a) => (port(a), 1),
        Command::Doctor { json } => (doctor(json), 1),
        Command::Stats(a) => (inspect(a, "stats"), 1),
        Command::Flows(a) => (inspect(a, "flows"), 1),
        Command::Network(a) => (network(a), 1),
        Command::Ps { json } => (ps(json), 1),
        Command::Capture(a) => (capture(a), 1),
        Command::Completions { shell } => (write_stdout(&warren::cli::completions(shell)), 1),
        Command::Man { out_dir } => (man(out_dir), 1),
        Command::Daemon { detach, no_seccomp } => {
            (daemon::run(detach, !no_seccomp).map(|()| 0).map_err(anyhow::Error::from), 1)
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("warren: error: {e:#}");
            ExitCode::from(failure_code)
        }
    }
}

/// `println!` for a command's output: when the reader of stdout has gone (`warren flows |
/// head`), the process ends quietly with status 0 instead of panicking.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($t)*)
            && e.kind() == std::io::ErrorKind::BrokenPipe
        {
            std::process::exit(0);
        }
    }};
}

/// `println!` for what a running container's warren prints: a closed stdout is ignored (the
/// container keeps its network).
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

fn init_tracing(verbose: u8, format: warren::cli::LogFormat) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(format!("warren={level}")));
    let ansi = warren::sys::isatty(std::io::stderr().as_fd());
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        warren::cli::LogFormat::Text => fmt.with_ansi(ansi).with_target(false).init(),
        warren::cli::LogFormat::Json => fmt.event_format(warren::logfmt::Json).init(),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("start the tokio runtime")
}

/// Once namespaces, TAP, listeners and the runtime exist, warren needs only a small set of
/// system calls: load the allowlist (unless `--no-seccomp`). A kernel without seccomp gets a
/// warning, not a failure.
fn harden(no_seccomp: bool, extra: &[libc::c_long]) {
    if no_seccomp {
        return;
    }
    match warren::harden::apply_seccomp_allowlist(extra) {
        Ok(()) => tracing::debug!("seccomp allowlist loaded"),
        Err(e) => tracing::warn!(error = %e, "running without the seccomp allowlist"),
    }
}

/// Everything bound before the container starts, so a failure leaves nothing half-applied.
struct Prepared {
    requested: Vec<Forward>,
    bound: Vec<Bound>,
    /// Host addresses and protocols of `-p [HOST_IP:]auto[/udp]`.
    auto: Vec<(std::net::IpAddr, warren::forward::Proto)>,
    api: ApiSocket,
    /// The `--multicast` relays' listeners, in the configuration's order.
    relays: Vec<std::net::UdpSocket>,
}

fn prepare(p: PublishArgs, relays: &[warren::multicast::Relay]) -> Result<Prepared> {
    let requested = p.forwards()?;
    let auto = p.autos()?;
    let bound = ports::bind_all(&requested)?;
    let relays = relays.iter().map(warren::multicast::listen).collect::<Result<_, _>>()?;
    let api = ApiSocket::bind(p.api_socket)?;
    tracing::info!(path = %api.path.display(), "API socket");
    Ok(Prepared { requested, bound, auto, api, relays })
}

/// Starts publishing, `-p auto` (reading the container's socket `tables`) and the API inside
/// the runtime; prints ports whose host port was picked.
fn start_ports(
    dp: &mut Dataplane,
    prep: Prepared,
    tables: ns::SocketTables,
) -> Result<tokio::sync::mpsc::Receiver<DpCommand>> {
    let infos = dp.publish(prep.bound).context("publish ports")?;
    dp.relay(prep.relays).context("start the multicast relays")?;
    for (info, req) in infos.iter().zip(&prep.requested) {
        if req.host.port() == 0 {
            say!("published {} {} -> {}", info.proto, info.host, info.container);
        }
    }
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    if !prep.auto.is_empty() {
        tokio::spawn(ports::auto_publish(tables, prep.auto, tx.clone()));
    }
    tokio::spawn(prep.api.serve(tx, dp.guest()));
    Ok(rx)
}

/// `-T` and `-U`: which container loopback port leads to which host port.
struct ToHostPlan {
    tcp: Vec<warren::forward::ToHost>,
    udp: Vec<warren::forward::ToHost>,
    udp_idle: std::time::Duration,
}

impl ToHostPlan {
    fn of(cfg: &warren::config::NetConfig) -> Self {
        Self { tcp: cfg.to_host.clone(), udp: cfg.to_host_udp.clone(), udp_idle: cfg.limits.udp_timeout }
    }

    /// System calls the relays need beyond the data path's: `-T` splices.
    fn seccomp_extra(&self) -> &'static [libc::c_long] {
        if self.tcp.is_empty() { &[] } else { warren::harden::SPLICE }
    }

    /// Serves each `-T` listener and `-U` socket the container's namespace holds for warren,
    /// towards the host port its container port leads to.
    fn start(self, listeners: Vec<std::net::TcpListener>, udp: Vec<std::net::UdpSocket>) {
        let port_of = |a: std::io::Result<std::net::SocketAddr>| a.map(|a| a.port()).unwrap_or(0);
        let places = std::sync::Arc::new(tokio::sync::Semaphore::new(ports::TO_HOST_MAX_CONNECTIONS));
        for l in listeners {
            let port = port_of(l.local_addr());
            if let Some(t) = self.tcp.iter().find(|t| t.container_port == port) {
                tracing::info!(
                    container_port = port,
                    host_port = t.host_port,
                    "-T: container loopback port leads to the host"
                );
                tokio::spawn(ports::to_host(l, t.host_port, places.clone()));
            }
        }
        let places = std::sync::Arc::new(tokio::sync::Semaphore::new(ports::TO_HOST_UDP_MAX_FLOWS));
        for s in udp {
            let port = port_of(s.local_addr());
            if let Some(t) = self.udp.iter().find(|t| t.container_port == port) {
                tracing::info!(
                    container_port = port,
                    host_port = t.host_port,
                    "-U: container loopback port leads to the host"
                );
                tokio::spawn(ports::to_host_udp(s, t.host_port, places.clone(), self.udp_idle));
            }
        }
    }
}

fn run(a: RunArgs) -> Result<u8> {
    // --add-host is checked before anything starts (host-gateway is resolved later).
    match a.network.as_deref() {
        Some(n) if n.starts_with("container:") && !a.add_hosts.is_empty() => {
            anyhow::bail!("--add-host has no effect with --network {n}: the container joins another's network")
        }
        Some("none" | "host") => a.hosts(None)?,
        _ => a.hosts(Some(std::net::Ipv4Addr::UNSPECIFIED))?,
    };
    if let Some(n) = a.network.as_deref() {
        // -T and -U need a network namespace of the container's own (a bridge network's
        // container has one); the outbound address is the network's (`network create`).
        let own_netns = !(n == "none" || n == "host" || n.starts_with("container:"));
        let given = |id: &str| a.given.iter().any(|g| g == id);
        // (option, given, the network's option that does its work, if there is one). The
        // network's daemon serves its containers: its limits, queues and polling are its own;
        // a network's container has eth0 with a MAC made from its address.
        let own = [
            ("-T", !a.net.to_host.is_empty() && !own_netns, None),
            ("-U", !a.net.to_host_udp.is_empty() && !own_netns, None),
            ("--udp-timeout", given("udp_timeout") && !own_netns, None),
            ("--multicast", !a.net.multicast.is_empty(), Some("--multicast GROUP:PORT[@IFACE]")),
            ("--dns-upstream", !a.net.dns_upstream.is_empty(), Some("--dns-upstream IP[:PORT]")),
            ("--dns-route", !a.net.dns_route.is_empty(), Some("--dns-route DOMAIN=IP[:PORT]")),
            ("--outbound-addr", a.net.outbound_addr.is_some(), Some("--outbound-addr IP|IFACE")),
            ("--outbound-addr6", a.net.outbound_addr6.is_some(), Some("--outbound-addr6 IP|IFACE")),
            ("--mtu", given("mtu"), Some("--mtu N")),
            ("--cidr", given("cidr"), Some("--subnet CIDR")),
            ("--cidr6", given("cidr6"), Some("--subnet6 CIDR")),
            ("--no-ipv6", a.net.no_ipv6, None),
            ("--allow-host-loopback", a.net.allow_host_loopback, None),
            ("--tap-name", given("tap_name"), None),
            ("--mac", a.net.mac.is_some(), None),
            ("--max-tcp-flows", given("max_tcp_flows"), None),
            ("--max-handshakes", given("max_handshakes"), None),
            ("--max-buffer-memory", given("max_buffer_memory"), None),
            ("--max-udp-flows", given("max_udp_flows"), None),
            ("--queues", a.net.queues.is_some(), None),
            ("--busy-poll", given("busy_poll"), None),
        ];
        if let Some((o, _, network_option)) = own.iter().find(|(_, given, _)| *given) {
            if let (true, Some(option)) = (own_netns, network_option) {
                anyhow::bail!(
                    "{o} applies to a container's own network; on {n:?} it is the network's: `warren network create {n} {option}`"
                );
            }
            anyhow::bail!("{o} applies to a container's own network; it has no effect with --network {n}");
        }
    }
    match a.network.clone().as_deref() {
        Some("none") => return run_without_tap(a, false),
        Some("host") => return run_without_tap(a, true),
        Some(n) if n.starts_with("container:") => return run_in_container(a, &n["container:".len()..]),
        Some(n) => return run_on_network(a, n.to_string()),
        None => {}
    }
    let mut cfg = a.net.to_config()?;
    let no_seccomp = a.net.no_seccomp;
    let capture = open_capture(a.net.pcap.as_deref())?;
    let hosts = a.hosts(Some(cfg.addrs.gateway))?;
    let prep = prepare(a.ports, &cfg.multicast)?;
    cfg.auto_tables = warren::config::AutoTables::of(&prep.auto);
    let setup = Progress::start("setting up the container's network");
    let child = ns::spawn_run(&cfg, &a.command, &hosts)?;
    drop(setup);
    let pid = child.pid;
    tracing::info!(pid = pid.as_raw(), tap = %cfg.tap_name, "container started");
    log_limits(cfg.limits);
    let tx_fd = child.tap.fd.try_clone().context("dup the TAP fd")?;
    let rt = runtime()?;
    let to_host = ToHostPlan::of(&cfg);
    let mut dp = Dataplane::new(cfg, tx_fd, child.tap.mac, true);
    if let Some(w) = capture {
        dp.set_capture(w);
    }
    // The queues' threads start before the seccomp filter, which then covers them too.
    let queues = dp.relay_senders(&prep.relays).and_then(|()| dp.spawn_queues(child.tap.queues, DRAIN_GRACE));
    let mut queues = match queues {
        Ok(q) => q,
        Err(e) => {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            return Err(anyhow::Error::from(e).context("start the TAP queues' threads"));
        }
    };
    harden(no_seccomp, to_host.seccomp_extra());
    let code = rt.block_on(async move {
        let commands = match start_ports(&mut dp, prep, child.tap.tables) {
            Ok(c) => c,
            Err(e) => {
                let _ = kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
                return Err(e);
            }
        };
        to_host.start(child.tap.to_host, child.tap.to_host_udp);
        let tap = warren::sys::async_fd(child.tap.fd).context("register the TAP")?;
        let supervise = supervise(pid);
        tokio::pin!(supervise);
        let r = tokio::select! {
            code = &mut supervise => Ok(code),
            r = dp.run(&tap, Some(commands), std::future::pending()) => Err(r),
        };
        // The other queues' threads drain (or end) alongside.
        queues.stop();
        // The ports are free for the next container at once (podman#23737 is a restart
        // racing the old forwarder's listener), while open connections drain.
        dp.close_listeners();
        if r.is_ok() {
            // Bytes the command wrote just before exiting may still be on their way.
            let _ = dp.drain(&tap, DRAIN_GRACE).await;
        }
        log_stats(&dp, &queues.join());
        match r {
            Ok(code) => Ok(code),
            Err(e) => {
                let _ = kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
                match e {
                    Ok(()) => anyhow::bail!("data path stopped unexpectedly"),
                    Err(e) => Err(anyhow::Error::from(e).context("TAP device failed")),
                }
            }
        }
    })?;
    Ok(code)
}

/// Creates the `--pcap` file before anything starts (a bad path fails the run at once).
fn open_capture(path: Option<&std::path::Path>) -> Result<Option<warren::pcap::PcapWriter>> {
    path.map(|p| {
        warren::pcap::PcapWriter::create(p, None).with_context(|| format!("cannot create capture file {}", p.display()))
    })
    .transpose()
}

/// `warren stats` and `warren flows`.
fn inspect(a: InspectArgs, what: &str) -> Result<u8> {
    if let Some(target) = a.target {
        if what != "stats" {
            anyhow::bail!("warren flows takes no TARGET: it lists the flows of a `warren run`/`attach` instance");
        }
        let v = daemon::client::call(&Request::Stats { target })?;
        if a.json {
            out!("{v}");
            return Ok(0);
        }
        for (net, s) in v.as_object().cloned().unwrap_or_default() {
            if let Some(g) = s.get("gateway").and_then(|g| g.as_object()) {
                for (k, x) in g.iter().filter(|(_, x)| !x.is_object()) {
                    out!("{net}\tgateway.{k}\t{x}");
                }
            }
            for p in s["interfaces"].as_array().cloned().unwrap_or_default() {
                for k in ["frames_in", "bytes_in", "spoofed", "icc_dropped"] {
                    out!("{net}\t{}.{k}\t{}", tsv_row(&p, &["name"]), p[k]);
                }
            }
        }
        return Ok(0);
    }
    let path = match a.api_socket {
        Some(p) => p,
        None => api::find_socket()?,
    };
    let v = api::request(&path, &serde_json::json!({ "execute": what }))?;
    let ret = v.get("return").cloned().unwrap_or_default();
    if a.json {
        out!("{ret}");
        return Ok(0);
    }
    if what == "stats" {
        if let Some(stats) = ret.get("stats").and_then(|s| s.as_object()) {
            for (k, v) in stats {
                match v.as_object() {
                    Some(drops) => {
                        for (reason, n) in drops.iter().filter(|(_, n)| n.as_u64() != Some(0)) {
                            out!("drops.{reason}\t{n}");
                        }
                    }
                    None => out!("{k}\t{v}"),
                }
            }
        }
        out!("open_flows\t{}", ret.get("flows").cloned().unwrap_or_default());
    } else {
        out!("PROTO\tCONTAINER\tPEER\tHOST\tAGE_S\tBYTES_OUT\tBYTES_IN\tTHREAD");
        for f in ret.get("flows").and_then(|f| f.as_array()).cloned().unwrap_or_default() {
            out!(
                "{}",
                tsv_row(&f, &["proto", "container", "peer", "host", "age_s", "bytes_out", "bytes_in", "thread"])
            );
        }
    }
    Ok(0)
}

fn doctor(json: bool) -> Result<u8> {
    use warren::doctor::{self, Status};
    let checks = doctor::run();
    if json {
        out!("{}", serde_json::to_string(&checks)?);
    } else {
        print!("{}", doctor::render(&checks));
    }
    Ok(u8::from(checks.iter().any(|c| c.status == Status::Fail)))
}

fn port(a: PortArgs) -> Result<u8> {
    if let Some(container) = a.container {
        return container_port(container, a.command);
    }
    let path = match a.api_socket {
        Some(p) => p,
        None => api::find_socket()?,
    };
    match a.command {
        PortCommand::Add { specs } => {
            for s in &specs {
                warren::forward::parse_spec(s)?;
            }
            let v = api::request(&path, &serde_json::json!({"execute": "port_add", "arguments": {"specs": specs}}))?;
            print_ports(&v, false);
        }
        PortCommand::Ls { json } => {
            let v = api::request(&path, &serde_json::json!({"execute": "port_list"}))?;
            print_ports(&v, json);
        }
        PortCommand::Rm { ids } => {
            api::request(&path, &serde_json::json!({"execute": "port_remove", "arguments": {"ids": ids}}))?;
        }
    }
    Ok(0)
}

/// `warren port --container NAME ...`: the daemon publishes to the container's eth0, live.
fn container_port(container: String, command: PortCommand) -> Result<u8> {
    let v = match command {
        PortCommand::Add { specs } => {
            for s in &specs {
                warren::forward::parse_spec(s)?;
            }
            daemon::client::call(&Request::Publish { container, publish: specs })?
        }
        PortCommand::Ls { json } => {
            let v = daemon::client::call(&Request::Ports { container })?;
            if json {
                out!("{v}");
                return Ok(0);
            }
            v
        }
        PortCommand::Rm { ids } => {
            daemon::client::call(&Request::Unpublish { container, ids })?;
            return Ok(0);
        }
    };
    for p in v.as_array().cloned().unwrap_or_default() {
        out!("{}", tsv_row(&p, &["id", "proto", "host", "container"]));
    }
    Ok(0)
}

fn print_ports(v: &serde_json::Value, json: bool) {
    let ports = v.pointer("/return/ports").and_then(|p| p.as_array()).cloned().unwrap_or_default();
    if json {
        out!("{}", serde_json::Value::Array(ports));
        return;
    }
    for p in ports {
        out!("{}", tsv_row(&p, &["id", "proto", "host", "container"]));
    }
}

/// The fields `keys` of a JSON object as one tab-separated line (strings without quotes).
fn tsv_row(v: &serde_json::Value, keys: &[&str]) -> String {
    let field =
        |k: &&str| v.get(*k).map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string)).unwrap_or_default();
    keys.iter().map(field).collect::<Vec<_>>().join("\t")
}

fn log_limits(l: warren::config::Limits) {
    tracing::info!(
        max_tcp_flows = l.tcp_flows,
        max_udp_flows = l.udp_flows,
        max_ping_flows = l.ping_flows,
        max_handshakes = l.handshakes,
        max_buffer_bytes = l.buffer_memory,
        "flow limits (buffers are allocated lazily: idle flows cost only touched pages)"
    );
}

/// Logs the totals of the data path: thread 0's `dp` and the other queues' threads.
fn log_stats(dp: &Dataplane, others: &[warren::runtime::Stats]) {
    let mut s = dp.stats();
    for o in others {
        s.merge(o);
    }
    let (tcp, udp, ping) = dp.flow_counts();
    tracing::debug!(
        frames_in = s.frames_in,
        bytes_in = s.bytes_in,
        frames_out = s.frames_out,
        bytes_out = s.bytes_out,
        drops = s.drops.total(),
        tcp_flows = s.tcp_flows,
        udp_flows = s.udp_flows,
        ping_flows = s.ping_flows,
        tcp_resets = s.tcp_resets,
        limit_drops = s.limit_drops,
        tcp_bytes_out = s.tcp_bytes_out,
        tcp_bytes_in = s.tcp_bytes_in,
        icmp_errors = s.icmp_errors,
        open_tcp = tcp,
        open_udp = udp,
        open_ping = ping,
        tcp_buffer_bytes = s.tcp_buffer_bytes,
        tcp_stacks_reused = s.tcp_stacks_reused,
        queues = s.queues,
        handed_over = s.handed_over,
        handover_drops = s.handover_drops,
        udp_batched = s.udp_batched,
        udp_coalesced = s.udp_coalesced,
        busy_polls = s.busy_polls,
        busy_poll_hits = s.busy_poll_hits,
        busy_poll_backoffs = s.busy_poll_backoffs,
        multicast_out = s.multicast_out,
        multicast_in = s.multicast_in,
        multicast_echoes = s.multicast_echoes,
        dns_queries = s.dns_queries,
        dns_failovers = s.dns_failovers,
        dns_unanswered = s.dns_unanswered,
        "data path totals (open flows: thread 0's)"
    );
    for (name, n) in warren::gateway::DROP_NAMES.iter().zip(s.drops.0) {
        if n > 0 {
            tracing::debug!(reason = name, frames = n, "dropped frames");
        }
    }
}

/// Waits for the container's init to exit, forwarding SIGTERM and SIGHUP (and SIGINT/SIGQUIT
/// when not on a terminal, where ^C already reaches the command) to it. Returns its status.
async fn supervise(pid: Pid) -> u8 {
    let on_tty = warren::sys::isatty(std::io::stdin().as_fd());
    let mut chld = signal(SignalKind::child()).ok();
    let mut term = signal(SignalKind::terminate()).ok();
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    let mut quit = signal(SignalKind::quit()).ok();
    async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
        match s {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, c)) => return c as u8,
            Ok(WaitStatus::Signaled(_, s, _)) => return 128u8.wrapping_add(s as u8),
            Err(_) => return RUN_FAILED,
            Ok(_) => {}
        }
        let forward = tokio::select! {
            () = next(&mut chld) => None,
            () = next(&mut term) => Some(Signal::SIGTERM),
            () = next(&mut hup) => Some(Signal::SIGHUP),
            () = next(&mut int) => (!on_tty).then_some(Signal::SIGINT),
            () = next(&mut quit) => (!on_tty).then_some(Signal::SIGQUIT),
        };
        if let Some(sig) = forward {
            tracing::debug!(?sig, "forwarding signal to the container");
            let _ = kill(pid, sig);
        }
    }
}

fn attach(a: AttachArgs) -> Result<u8> {
    let mut cfg = a.net.to_config()?;
    let ready = a
        .ready_fd
        .map(|fd| warren::sys::adopt_inherited_fd(fd).with_context(|| format!("--ready-fd {fd}: not an open fd")))
        .transpose()?;
    let capture = open_capture(a.net.pcap.as_deref())?;
    let prep = prepare(a.ports, &cfg.multicast)?;
    cfg.auto_tables = warren::config::AutoTables::of(&prep.auto);
    let target = match (a.pid, a.netns) {
        (Some(pid), _) => Target::Pid(pid),
        (None, Some(netns)) => Target::Path { netns, userns: a.userns },
        (None, None) => anyhow::bail!("attach needs --pid PID or --netns PATH"),
    };
    // Taken before configuring: once the set-up is visible, the namespace may go at any moment.
    let netns_identity = match &target {
        Target::Path { netns, .. } => warren::runtime::file_identity(netns),
        Target::Pid(_) => None,
    };
    let tap = ns::spawn_attach(&cfg, &target)?;
    log_limits(cfg.limits);
    let pidfd = match &target {
        Target::Pid(pid) => Some(warren::sys::pidfd_open(*pid).with_context(|| format!("watch PID {pid}"))?),
        Target::Path { .. } => None,
    };
    let tx_fd = tap.fd.try_clone().context("dup the TAP fd")?;
    let rt = runtime()?;
    let to_host = ToHostPlan::of(&cfg);
    let mut dp = Dataplane::new(cfg, tx_fd, tap.mac, true);
    if let Some(w) = capture {
        dp.set_capture(w);
    }
    dp.relay_senders(&prep.relays).context("multicast relays")?;
    // The queues' threads start before the seccomp filter, which then covers them too.
    let mut queues = dp.spawn_queues(tap.queues, DRAIN_GRACE).context("start the TAP queues' threads")?;
    harden(a.net.no_seccomp, to_host.seccomp_extra());
    rt.block_on(async move {
        let commands = start_ports(&mut dp, prep, tap.tables)?;
        to_host.start(tap.to_host, tap.to_host_udp);
        // The interface is configured and the ports are bound: say so.
        if let Some(fd) = ready {
            let _ = nix::unistd::write(&fd, b"1");
        }
        if let Err(e) = warren::sys::notify_ready() {
            tracing::warn!(error = %e, "cannot notify $NOTIFY_SOCKET");
        }
        let stop = stop_signal(target, pidfd, netns_identity);
        let fd = warren::sys::async_fd(tap.fd).context("register the TAP")?;
        let r = dp.run(&fd, Some(commands), stop).await;
        queues.stop();
        dp.close_listeners();
        if r.is_ok() {
            let _ = dp.drain(&fd, DRAIN_GRACE).await;
        }
        log_stats(&dp, &queues.join());
        r.context("TAP device failed")
    })?;
    drop(rt);
    Ok(0)
}

/// Completes on SIGTERM/SIGINT or when the attach target is gone.
async fn stop_signal(target: Target, pidfd: Option<OwnedFd>, netns_identity: Option<(u64, u64)>) {
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    let gone = async {
        match (target, pidfd) {
            (Target::Pid(pid), Some(fd)) => {
                if let Ok(afd) = warren::sys::async_fd(fd) {
                    let _ = afd.readable().await;
                }
                tracing::info!(pid, "target process exited");
            }
            (Target::Path { netns, .. }, _) => warren::runtime::wait_path_gone(&netns, netns_identity).await,
            _ => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
        () = gone => {}
    }
}

/// `warren run --network NAME`: the daemon allocates the address and binds the ports, the
/// container is created here with its interface configured, and the TAP goes to the daemon,
/// whose switch and gateway serve it. This process stays to supervise the container and to
/// create more interfaces in it on request (`warren network connect`).
fn run_on_network(a: RunArgs, network: String) -> Result<u8> {
    let own = a.net.to_config()?;
    if a.net.pcap.is_some() {
        anyhow::bail!(
            "--pcap applies to a container's own network; on {network:?} use `warren capture --network {network} -w FILE`"
        );
    }
    let autos = a.ports.autos()?;
    let conn = Conn::connect()?;
    let join = Request::Join {
        network,
        name: a.name.clone(),
        aliases: a.aliases.clone(),
        ip: a.ip.clone(),
        // The explicit ones; `auto` specs are served by this process once the container runs.
        publish: a.ports.explicit().cloned().collect(),
    };
    let requested = a.ports.forwards()?;
    let answer = conn.request(&join)?;
    let iface: daemon::Iface = serde_json::from_value(answer["iface"].clone()).context("bad join answer")?;
    let name = answer["name"].as_str().unwrap_or_default().to_string();
    let mut cfg = iface.net_config(true);
    let hosts = a.hosts(Some(cfg.addrs.gateway))?;
    // -T and -U are served here: they join the container's loopback to the host's, no TAP.
    (cfg.to_host, cfg.to_host_udp, cfg.limits.udp_timeout) = (own.to_host, own.to_host_udp, own.limits.udp_timeout);
    // -p auto reads the container's socket tables here and asks the daemon for the ports.
    cfg.auto_tables = warren::config::AutoTables::of(&autos);
    let to_host = ToHostPlan::of(&cfg);
    let setup = Progress::start(&format!("setting up {name} on {}", iface.network));
    let mut child = ns::spawn_run(&cfg, &a.command, &hosts)?;
    drop(setup);
    let pid = child.pid;
    tracing::info!(pid = pid.as_raw(), %name, ip = %iface.ip4, "container started");
    let attach = serde_json::to_value(Request::Attach { pid: pid.as_raw() as u32 })?;
    let attached = conn.send(&attach, &[child.tap.fd.as_fd()]).and_then(|()| conn.recv());
    let relays = (std::mem::take(&mut child.tap.to_host), std::mem::take(&mut child.tap.to_host_udp));
    let tables = std::mem::take(&mut child.tap.tables);
    drop(child.tap);
    let ports = match attached {
        Ok((v, _)) => v["ports"].as_array().cloned().unwrap_or_default(),
        Err(e) => {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            return Err(e.into());
        }
    };
    for (p, req) in ports.iter().zip(&requested) {
        if req.host.port() == 0 {
            say!("published {} {} -> {}", tsv_row(p, &["proto"]), tsv_row(p, &["host"]), tsv_row(p, &["container"]));
        }
    }
    let rt = runtime()?;
    // From here on: the daemon's requests, the relays and -p auto.
    let mut extra = warren::harden::SUPERVISOR.to_vec();
    extra.extend_from_slice(to_host.seccomp_extra());
    harden(a.net.no_seccomp, &extra);
    let code = rt.block_on(async move {
        to_host.start(relays.0, relays.1);
        if !autos.is_empty() {
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            tokio::spawn(ports::auto_publish(tables, autos, tx));
            tokio::spawn(daemon::client::serve_port_commands(name, rx));
        }
        // Non-blocking, or a read after a request (readiness stays set after a read that
        // got data) would block the whole process in recvmsg, the container's exit unseen.
        let fd = conn.into_fd();
        socket2::SockRef::from(&fd).set_nonblocking(true).context("make the daemon connection non-blocking")?;
        let fd = warren::sys::async_fd(fd).context("register the daemon connection")?;
        let supervise = supervise(pid);
        tokio::pin!(supervise);
        loop {
            tokio::select! {
                code = &mut supervise => return Ok(code),
                r = fd.readable() => {
                    let mut g = r?;
                    let mut buf = vec![0u8; daemon::MSG_MAX];
                    let got = match g.try_io(|f| warren::sys::recv_fds(f.get_ref().as_fd(), &mut buf).map_err(std::io::Error::from)) {
                        Ok(r) => r,
                        Err(_would_block) => continue,
                    };
                    match got {
                        Ok((n, _)) if n > 0 => {
                            let msg: serde_json::Value = serde_json::from_slice(&buf[..n]).unwrap_or_default();
                            let reply = serve_daemon_request(pid, &msg);
                            let (v, fds) = match &reply {
                                Ok(tap) => (serde_json::json!({"ok": {}}), vec![tap.fd.as_fd()]),
                                Err(e) => (serde_json::json!({"error": e}), vec![]),
                            };
                            let _ = warren::sys::send_fds(fd.get_ref().as_fd(), v.to_string().as_bytes(), &fds);
                        }
                        Ok(_) | Err(_) => {
                            let _ = kill(pid, Signal::SIGKILL);
                            let _ = waitpid(pid, None);
                            anyhow::bail!("the network daemon went away; the container was stopped");
                        }
                    }
                }
            }
        }
    })?;
    Ok(code)
}

/// A request of the daemon to this container's process: create another interface.
fn serve_daemon_request(pid: Pid, msg: &serde_json::Value) -> Result<ns::Tap, String> {
    if msg["op"] != "add_interface" {
        return Err(format!("unknown request {}", msg["op"]));
    }
    let iface: daemon::Iface = serde_json::from_value(msg["iface"].clone()).map_err(|e| e.to_string())?;
    let cfg = iface.net_config(false);
    ns::spawn_attach_with(&cfg, &Target::Pid(pid.as_raw()), true).map_err(|e| e.to_string())
}

fn network(a: NetworkArgs) -> Result<u8> {
    match a.command {
        NetworkCommand::Create {
            name,
            subnet,
            gateway,
            internal,
            icc,
            mtu,
            ipv6,
            subnet6,
            dns_upstream,
            dns_route,
            pcap,
            outbound_addr,
            outbound_addr6,
            multicast,
        } => {
            let pcap = pcap.map(std::path::absolute).transpose().context("capture file")?;
            let args = daemon::CreateArgs {
                name,
                subnet,
                gateway,
                internal,
                icc,
                mtu,
                ipv6,
                subnet6,
                dns_upstream,
                dns_route,
                pcap,
                outbound_addr,
                outbound_addr6,
                multicast,
            };
            let v = daemon::client::call(&Request::NetworkCreate(args))?;
            out!("{}", v["id"].as_str().unwrap_or_default());
        }
        NetworkCommand::Ls { json } => {
            let v = daemon::client::call(&Request::NetworkLs)?;
            if json {
                out!("{v}");
            } else {
                out!("NETWORK ID\tNAME\tSUBNET\tSUBNET6\tINTERNAL\tICC\tCONTAINERS");
                for n in v.as_array().cloned().unwrap_or_default() {
                    out!("{}", tsv_row(&n, &["id", "name", "subnet", "subnet6", "internal", "icc", "containers"]));
                }
            }
        }
        NetworkCommand::Inspect { names } => {
            let v = daemon::client::call(&Request::NetworkInspect { names })?;
            out!("{}", serde_json::to_string_pretty(&v)?);
        }
        NetworkCommand::Rm { names } => {
            let v = daemon::client::call(&Request::NetworkRm { names })?;
            for n in v.as_array().cloned().unwrap_or_default() {
                out!("{}", n.as_str().unwrap_or_default());
            }
        }
        NetworkCommand::Connect { network, container, aliases, ip } => {
            daemon::client::call(&Request::NetworkConnect { network, container, aliases, ip })?;
        }
        NetworkCommand::Disconnect { network, container } => {
            daemon::client::call(&Request::NetworkDisconnect { network, container })?;
        }
    }
    Ok(0)
}

fn ps(json: bool) -> Result<u8> {
    let v = daemon::client::call(&Request::Ps)?;
    if json {
        out!("{v}");
        return Ok(0);
    }
    out!("NAME\tPID\tNETWORKS\tADDRESSES\tPORTS");
    for c in v.as_array().cloned().unwrap_or_default() {
        let list = |k: &str| {
            c[k].as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(","))
                .unwrap_or_default()
        };
        out!(
            "{}\t{}\t{}\t{}\t{}",
            tsv_row(&c, &["name"]),
            c["pid"],
            list("networks"),
            list("addresses"),
            list("ports")
        );
    }
    Ok(0)
}

/// `--network none` (only `lo`) and `--network host` (the caller's network): new user,
/// mount and PID namespaces, no TAP, no data path.
fn run_without_tap(a: RunArgs, host_net: bool) -> Result<u8> {
    if !a.ports.publish.is_empty() {
        anyhow::bail!(
            "-p has no effect with --network {}: the container {}",
            if host_net { "host" } else { "none" },
            if host_net { "binds the host's ports itself" } else { "has no network to publish from" }
        );
    }
    a.net.to_config()?;
    if a.net.pcap.is_some() {
        anyhow::bail!("--pcap has nothing to capture with --network {}", if host_net { "host" } else { "none" });
    }
    let pid = ns::spawn_run_without_tap(host_net, &a.command, &a.hosts(None)?)?;
    Ok(runtime()?.block_on(supervise(pid)))
}

/// `--network container:NAME`: the command joins a running bridge-network container's user
/// and network namespaces (its interfaces, addresses and names).
fn run_in_container(a: RunArgs, name: &str) -> Result<u8> {
    if !a.ports.publish.is_empty() {
        anyhow::bail!("-p has no effect with --network container:{name}: publish on container {name:?} instead");
    }
    let v = daemon::client::call(&Request::Pid { container: name.to_string() })?;
    let target = v["pid"].as_i64().context("bad answer from the daemon")? as i32;
    let pid = ns::spawn_join(target, &a.command)?;
    Ok(runtime()?.block_on(supervise(pid)))
}

/// `warren capture`: starts a capture in the instance or network, waits for the count, the
/// time limit or a signal, then stops it and reports the frames written.
fn capture(a: CaptureArgs) -> Result<u8> {
    use warren::runtime::CaptureCmd;
    let ask = |cmd: CaptureCmd| -> Result<u64> {
        let v = match (&a.network, &a.container, &a.api_socket) {
            (n, Some(c), _) => daemon::client::call(&Request::Capture {
                network: n.clone().unwrap_or_default(),
                container: Some(c.clone()),
                cmd,
            })?,
            (Some(n), None, _) => daemon::client::call(&Request::Capture { network: n.clone(), container: None, cmd })?,
            (None, None, p) => {
                let path = match p {
                    Some(p) => p.clone(),
                    None => api::find_socket()?,
                };
                let args = serde_json::to_value(&cmd)?;
                api::request(&path, &serde_json::json!({"execute": "capture", "arguments": args}))?["return"].clone()
            }
        };
        Ok(v["frames"].as_u64().unwrap_or(0))
    };
    if a.stop {
        let frames = ask(CaptureCmd::Stop)?;
        eprintln!("capture stopped: {frames} frames written");
        return Ok(0);
    }
    let file = a.file.clone().context("-w FILE is required")?;
    let path = std::path::absolute(&file).with_context(|| format!("capture file {}", file.display()))?;
    ask(CaptureCmd::Start { path: path.clone(), count: a.count, mac: None })?;
    let deadline = a.seconds.map(|s| std::time::Instant::now() + Duration::from_secs(s));
    let rt = runtime()?;
    rt.block_on(async {
        let mut term = signal(SignalKind::terminate()).ok();
        let mut int = signal(SignalKind::interrupt()).ok();
        loop {
            let tick = tokio::time::sleep(Duration::from_millis(100));
            tokio::select! {
                () = tick => {}
                _ = async { match term.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => return,
                _ = async { match int.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => return,
            }
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return;
            }
            if let Some(c) = a.count
                && ask(CaptureCmd::Status).is_ok_and(|n| n >= c)
            {
                return;
            }
        }
    });
    let frames = ask(CaptureCmd::Stop)?;
    eprintln!("{frames} frames written to {}", path.display());
    Ok(0)
}

fn write_stdout(b: &[u8]) -> Result<u8> {
    use std::io::Write;
    std::io::stdout().write_all(b).context("write to stdout")?;
    Ok(0)
}

/// `warren man`: the top page on stdout, or every page into a directory.
fn man(out_dir: Option<std::path::PathBuf>) -> Result<u8> {
    let pages = warren::cli::man_pages();
    let Some(dir) = out_dir else {
        return write_stdout(&pages[0].1);
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    for (name, page) in &pages {
        std::fs::write(dir.join(name), page).with_context(|| format!("write {}", dir.join(name).display()))?;
    }
    eprintln!("{} man pages written to {}", pages.len(), dir.display());
    Ok(0)
}

/// On a terminal, a line saying what warren waits for, erased when the wait is over.
struct Progress(bool);

impl Progress {
    fn start(what: &str) -> Self {
        let tty = warren::sys::isatty(std::io::stderr().as_fd());
        if tty {
            eprint!("warren: {what} ...");
        }
        Progress(tty)
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if self.0 {
            eprint!("\r\x1b[K");
        }
    }
}
