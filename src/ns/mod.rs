//! Namespace plumbing, all of it synchronous and done before the tokio runtime exists
//! (the kernel refuses `setns`/`clone` into a user namespace from a threaded process).
//!
//! `warren run`: the parent clones a child into new user, network, mount and PID namespaces,
//! writes the child's uid/gid maps from outside (newuidmap/newgidmap with `/etc/subuid`, else a
//! single-id map), and the child then configures `lo` and the TAP, bind-mounts a private
//! `resolv.conf`, sends the TAP fd back over `SCM_RIGHTS` and becomes a small init (PID 1 of
//! the new PID namespace) that runs the command, forwards signals and reaps orphans. When the
//! command exits, init exits with its status and the kernel kills whatever is left inside.
//!
//! `warren attach`: a forked helper enters an existing namespace pair, opens and configures
//! the TAP there, sends the fd back and exits.

use std::ffi::CString;
use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getgid, getuid};

use crate::config::{AutoTables, NetConfig};
use crate::sys;

/// Errors of namespace creation and TAP setup.
#[derive(Debug, thiserror::Error)]
pub enum NsError {
    /// The kernel refused to create a user namespace.
    #[error(
        "cannot create a user namespace ({0}): unprivileged user namespaces are disabled or restricted; \
         check sysctl user.max_user_namespaces and kernel.unprivileged_userns_clone, and on Ubuntu 24.04+ \
         kernel.apparmor_restrict_unprivileged_userns (see README, Troubleshooting)"
    )]
    UserNs(sys::SysError),
    /// Writing the uid/gid maps failed.
    #[error("cannot map uid/gid into the user namespace: {0}")]
    IdMap(String),
    /// The child reported a setup failure.
    #[error("{0}")]
    Child(String),
    /// The target of `attach` cannot be used.
    #[error("{0}")]
    Target(String),
    /// A syscall in the parent failed.
    #[error(transparent)]
    Sys(#[from] sys::SysError),
    /// Local I/O failed.
    #[error("{0}: {1}")]
    Io(String, io::Error),
}

/// What the setup child reports: the TAP fds and the container-side MAC.
pub struct Tap {
    /// The TAP fd, non-blocking, owned by the warren process in the host namespaces.
    pub fd: OwnedFd,
    /// The MAC address of the TAP inside the namespace.
    pub mac: [u8; 6],
    /// The fds of the TAP's other queues (multiqueue, `NetConfig::queues` > 1), non-blocking.
    pub queues: Vec<OwnedFd>,
    /// The namespace's socket tables `-p auto` reads, opened inside it.
    pub tables: SocketTables,
    /// `-T`: listening sockets on the namespace's loopback, non-blocking (per port, IPv4 and,
    /// when the namespace has ::1, IPv6).
    pub to_host: Vec<std::net::TcpListener>,
    /// `-U`: UDP sockets bound on the namespace's loopback, non-blocking (likewise).
    pub to_host_udp: Vec<std::net::UdpSocket>,
}

/// `/proc/net/tcp`, `tcp6`, `udp` and `udp6` of a network namespace, opened inside it when
/// asked for ([`crate::config::AutoTables`]): reading them later (from offset 0) lists that
/// namespace's sockets wherever the reader is. A table not asked for, or one the kernel does
/// not offer (IPv6 disabled), is `None`.
#[derive(Debug, Default)]
pub struct SocketTables {
    /// `/proc/net/tcp`.
    pub tcp: Option<fs::File>,
    /// `/proc/net/tcp6`.
    pub tcp6: Option<fs::File>,
    /// `/proc/net/udp`.
    pub udp: Option<fs::File>,
    /// `/proc/net/udp6`.
    pub udp6: Option<fs::File>,
    /// The namespace's ephemeral port range (`net.ipv4.ip_local_port_range`, which IPv6
    /// uses too) when the UDP tables are open: ports the kernel picks for unbound sockets.
    pub ephemeral: (u16, u16),
}

/// The kernel's default `ip_local_port_range`.
const EPHEMERAL_DEFAULT: (u16, u16) = (32768, 60999);

impl SocketTables {
    /// The current network namespace's tables, those `which` asks for.
    fn open(which: AutoTables) -> Self {
        let open = |p: &str| fs::File::open(p).ok();
        let mut t = Self::default();
        if which.tcp {
            (t.tcp, t.tcp6) = (open("/proc/self/net/tcp"), open("/proc/self/net/tcp6"));
        }
        if which.udp {
            (t.udp, t.udp6) = (open("/proc/self/net/udp"), open("/proc/self/net/udp6"));
            t.ephemeral = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
                .ok()
                .and_then(|r| parse_port_range(&r))
                .unwrap_or(EPHEMERAL_DEFAULT);
        }
        t
    }

    /// The tables in a fixed order, each with its bit in the report message.
    fn slots(&mut self) -> [(&mut Option<fs::File>, u8); 4] {
        [(&mut self.tcp, 1), (&mut self.tcp6, 2), (&mut self.udp, 4), (&mut self.udp6, 8)]
    }
}

/// `ip_local_port_range`'s two numbers, low then high.
fn parse_port_range(text: &str) -> Option<(u16, u16)> {
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    match (it.next(), it.next()) {
        (Some(Ok(lo)), Some(Ok(hi))) if lo <= hi => Some((lo, hi)),
        _ => None,
    }
}

/// A running `warren run` child.
pub struct RunChild {
    /// PID (in our namespace) of the child that is PID 1 of the container's PID namespace.
    pub pid: Pid,
    /// The configured TAP.
    pub tap: Tap,
}

/// Configures `lo` and the TAP inside the current network namespace (the calling process must
/// already be there, with CAP_NET_ADMIN in the namespace's owner) and returns the TAP.
/// Opens the TAP in the current network namespace and, when `configure`, brings up `lo` and
/// the TAP with MTU, MAC, address and default route (slirp4netns `--configure`).
/// Returns the first queue's fd, the other queues' fds and the TAP's MAC.
fn configure_tap(cfg: &NetConfig, configure: bool) -> Result<Tap, String> {
    let ctl = sys::IfCtl::new().map_err(|e| e.to_string())?;
    let mut queues = sys::open_tap(&cfg.tap_name, cfg.queues).map_err(|e| tun_hint(e.to_string()))?;
    // open_tap returns at least one fd.
    let fd = queues.remove(0);
    let name = cfg.tap_name.as_str();
    let tables = SocketTables::open(cfg.auto_tables);
    if !configure {
        let mac = ctl.mac(name).map_err(|e| e.to_string())?;
        return Ok(Tap { fd, mac, queues, tables, to_host: Vec::new(), to_host_udp: Vec::new() });
    }
    ctl.set_up("lo").map_err(|e| e.to_string())?;
    let to_host = to_host_listeners(cfg)?;
    let to_host_udp = to_host_udp_sockets(cfg)?;
    if let Some(mac) = cfg.mac {
        ctl.set_mac(name, mac).map_err(|e| e.to_string())?;
    }
    ctl.set_mtu(name, cfg.mtu).map_err(|e| e.to_string())?;
    let netmask = cfg.addrs.net.netmask();
    ctl.set_ipv4(name, cfg.addrs.container, netmask).map_err(|e| e.to_string())?;
    if let Some(a6) = cfg.addrs6 {
        // Usable at once (no duplicate address detection: nothing else is on the segment).
        // `warren run` sets its address statically and ignores router advertisements;
        // otherwise the kernel autoconfigures from them (the slirp4netns model).
        ipv6_sysctl(name, "disable_ipv6", "0")?;
        ipv6_sysctl(name, "accept_dad", "0")?;
        if cfg.static_ipv6 {
            ipv6_sysctl(name, "accept_ra", "0")?;
            ctl.add_ipv6(name, a6.container, a6.net.prefix_len()).map_err(|e| e.to_string())?;
        }
    }
    ctl.set_up(name).map_err(|e| e.to_string())?;
    if cfg.default_route {
        ctl.add_default_route(cfg.addrs.gateway).map_err(|e| e.to_string())?;
    }
    if let Some(a6) = cfg.addrs6
        && cfg.static_ipv6
        && cfg.default_route
    {
        ctl.add_default_route6(name, a6.gateway).map_err(|e| e.to_string())?;
    }
    if let Some(a6) = cfg.addrs6
        && cfg.static_ipv6
    {
        wait_until_usable(a6.container)?;
    }
    let mac = ctl.mac(name).map_err(|e| e.to_string())?;
    Ok(Tap { fd, mac, queues, tables, to_host, to_host_udp })
}

/// Listens on the current namespace's loopback for each `-T` port: 127.0.0.1, and ::1 unless
/// the namespace has no IPv6 there.
fn to_host_listeners(cfg: &NetConfig) -> Result<Vec<std::net::TcpListener>, String> {
    loopback_pairs(&cfg.to_host, "-T", "listen on", std::net::TcpListener::bind, |l| l.set_nonblocking(true))
}

/// `-U`: binds a UDP socket on 127.0.0.1 and, when the namespace has it, ::1 for each port.
fn to_host_udp_sockets(cfg: &NetConfig) -> Result<Vec<std::net::UdpSocket>, String> {
    loopback_pairs(&cfg.to_host_udp, "-U", "bind", std::net::UdpSocket::bind, |s| s.set_nonblocking(true))
}

/// For each container port of `ports`, a socket made by `make` on 127.0.0.1 and one on ::1
/// (left out when the namespace has no ::1), all non-blocking.
fn loopback_pairs<S>(
    ports: &[crate::forward::ToHost],
    option: &str,
    verb: &str,
    make: impl Fn(std::net::SocketAddr) -> io::Result<S>,
    nonblocking: impl Fn(&S) -> io::Result<()>,
) -> Result<Vec<S>, String> {
    let mut out = Vec::new();
    for t in ports {
        let v4 = make((std::net::Ipv4Addr::LOCALHOST, t.container_port).into())
            .map_err(|e| format!("{option}: cannot {verb} 127.0.0.1:{} in the container: {e}", t.container_port))?;
        out.push(v4);
        match make((Ipv6Addr::LOCALHOST, t.container_port).into()) {
            Ok(v6) => out.push(v6),
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {}
            Err(e) => return Err(format!("{option}: cannot {verb} [::1]:{} in the container: {e}", t.container_port)),
        }
    }
    for s in &out {
        nonblocking(s).map_err(|e| format!("{option}: {e}"))?;
    }
    Ok(out)
}

/// Waits until the kernel no longer marks `addr` tentative. Even without duplicate address
/// detection (accept_dad=0) an address added before the link came up stays tentative until
/// the kernel's address work queue runs: a loaded machine can delay that past the command's
/// first connect, which then takes the link-local address as its source (a connection that
/// cannot leave the segment).
fn wait_until_usable(addr: Ipv6Addr) -> Result<(), String> {
    const TENTATIVE: u32 = 0x40;
    let want = addr.octets().iter().map(|b| format!("{b:02x}")).collect::<String>();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let table = fs::read_to_string("/proc/net/if_inet6").map_err(|e| format!("read /proc/net/if_inet6: {e}"))?;
        // Lines: address, ifindex, prefix length, scope, flags, name (all hex but the name).
        let flags = table.lines().find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some(want.as_str())).then(|| f.nth(3).and_then(|x| u32::from_str_radix(x, 16).ok()))?
        });
        match flags {
            Some(f) if f & TENTATIVE == 0 => return Ok(()),
            _ if std::time::Instant::now() >= deadline => {
                return Err(format!("IPv6 address {addr} is still not usable after 20 s (flags {flags:?})"));
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(1)),
        }
    }
}

/// Writes a per-interface IPv6 sysctl of the current network namespace.
fn ipv6_sysctl(ifname: &str, key: &str, value: &str) -> Result<(), String> {
    if !Path::new("/proc/sys/net/ipv6").exists() {
        return Err("IPv6 is disabled on this host (no /proc/sys/net/ipv6, ipv6.disable=1?); run with --no-ipv6".into());
    }
    let path = format!("/proc/sys/net/ipv6/conf/{ifname}/{key}");
    fs::write(&path, value).map_err(|e| format!("write {value} to {path}: {e}"))
}

fn tun_hint(msg: String) -> String {
    if msg.contains("open /dev/net/tun") {
        if msg.contains("No such file") {
            return format!(
                "{msg}: the TUN/TAP device is missing; load it with `modprobe tun` (and mknod /dev/net/tun c 10 200)"
            );
        }
        if msg.contains("Permission denied") {
            return format!(
                "{msg}: the device is not accessible to this user; most distributions ship it 0666: `chmod 0666 /dev/net/tun`"
            );
        }
    }
    msg
}

/// Child side of the report protocol: `O` + MAC + a byte with a bit per socket table that
/// follows ([`SocketTables::files`]) + the number of `-T` listeners + the ephemeral port range
/// (two u16, native order) + the number of `-U` sockets + [TAP fd, other queues' fds, the
/// tables' fds, the `-T` listeners' fds, the `-U` sockets' fds] on success, `E` + message on
/// failure.
fn report(sock: &UnixStream, r: Result<Option<Tap>, String>) {
    match r {
        Ok(None) => {
            let _ = (&*sock).write_all(b"N");
        }
        Ok(Some(mut tap)) => {
            let mut msg = [b'O'; REPORT_LEN];
            msg[1..7].copy_from_slice(&tap.mac);
            // At most 2 * forward::TO_HOST_MAX.
            msg[8] = tap.to_host.len() as u8;
            msg[9..11].copy_from_slice(&tap.tables.ephemeral.0.to_ne_bytes());
            msg[11..13].copy_from_slice(&tap.tables.ephemeral.1.to_ne_bytes());
            // At most 2 * forward::TO_HOST_MAX.
            msg[13] = tap.to_host_udp.len() as u8;
            let tables = tap.tables.slots();
            msg[7] = tables.iter().filter(|(f, _)| f.is_some()).map(|(_, bit)| bit).sum();
            let mut fds = vec![tap.fd.as_fd()];
            fds.extend(tap.queues.iter().map(AsFd::as_fd));
            fds.extend(tables.iter().filter_map(|(f, _)| f.as_ref()).map(AsFd::as_fd));
            fds.extend(tap.to_host.iter().map(AsFd::as_fd));
            fds.extend(tap.to_host_udp.iter().map(AsFd::as_fd));
            let _ = sys::send_fds(sock.as_fd(), &msg, &fds);
        }
        Err(e) => {
            let mut msg = Vec::with_capacity(e.len() + 1);
            msg.push(b'E');
            msg.extend_from_slice(e.as_bytes());
            let _ = (&*sock).write_all(&msg);
        }
    }
}

/// Length of the success message of the report protocol.
const REPORT_LEN: usize = 14;

/// Parent side of the report protocol.
fn receive(sock: &UnixStream) -> Result<Option<Tap>, NsError> {
    let mut buf = [0u8; 4096];
    let (n, mut fds) = sys::recv_fds(sock.as_fd(), &mut buf)?;
    let n_tables = buf.get(7).map_or(0, |b| b.count_ones() as usize);
    match buf.first() {
        Some(b'N') if n == 1 => Ok(None),
        Some(b'O')
            if n == REPORT_LEN && buf[7] < 16 && fds.len() > n_tables + usize::from(buf[8]) + usize::from(buf[13]) =>
        {
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&buf[1..7]);
            let to_host_udp =
                fds.split_off(fds.len() - usize::from(buf[13])).into_iter().map(std::net::UdpSocket::from).collect();
            let to_host =
                fds.split_off(fds.len() - usize::from(buf[8])).into_iter().map(std::net::TcpListener::from).collect();
            let mut files = fds.split_off(fds.len() - n_tables).into_iter().map(fs::File::from);
            let mut tables = SocketTables {
                ephemeral: (u16::from_ne_bytes([buf[9], buf[10]]), u16::from_ne_bytes([buf[11], buf[12]])),
                ..SocketTables::default()
            };
            for (slot, bit) in tables.slots() {
                if buf[7] & bit != 0 {
                    *slot = files.next();
                }
            }
            let queues = fds.split_off(1);
            let fd = fds.pop().expect("one fd");
            Ok(Some(Tap { fd, mac, queues, tables, to_host, to_host_udp }))
        }
        Some(b'E') => Err(NsError::Child(String::from_utf8_lossy(&buf[1..n]).into_owned())),
        _ => Err(NsError::Child("namespace setup failed before reporting (child died)".into())),
    }
}

/// The contents of the container's `/etc/resolv.conf`: our DNS forwarder (IPv4 first, then
/// IPv6), plus the host's `search` and `options` lines so short names behave as on the host.
pub fn resolv_conf_contents(dns: &[IpAddr], host: &str) -> String {
    let mut out: String = dns.iter().map(|d| format!("nameserver {d}\n")).collect();
    for line in host.lines() {
        let t = line.trim_start();
        if t.starts_with("search ") || t.starts_with("options ") {
            out.push_str(t);
            out.push('\n');
        }
    }
    out
}

/// A temporary file removed on drop (the container keeps its bind mount of the inode).
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn write_resolv(dns: &[IpAddr]) -> Result<TempFile, NsError> {
    let host = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    write_temp("resolv", &resolv_conf_contents(dns, &host))
}

/// The container's `/etc/hosts` with `--add-host` entries.
fn write_hosts(entries: &[(String, IpAddr)]) -> Result<TempFile, NsError> {
    let host = fs::read_to_string("/etc/hosts").unwrap_or_default();
    write_temp("hosts", &crate::config::hosts_file_contents(&host, entries))
}

/// A new private file `warren-WHAT-PID` holding `contents`, for a bind mount.
fn write_temp(what: &str, contents: &str) -> Result<TempFile, NsError> {
    let name = format!("warren-{what}-{}", std::process::id());
    // $XDG_RUNTIME_DIR when it is ours and writable, else the temp dir.
    let dirs = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).into_iter().chain([std::env::temp_dir()]);
    let mut last_err = None;
    for dir in dirs {
        let path = dir.join(&name);
        match fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                let file = TempFile(path);
                f.write_all(contents.as_bytes()).map_err(|e| NsError::Io(format!("write {}", file.0.display()), e))?;
                return Ok(file);
            }
            Err(e) => last_err = Some((path, e)),
        }
    }
    let (path, e) = last_err.expect("at least the temp dir was tried");
    Err(NsError::Io(format!("create {}", path.display()), e))
}

/// Reads the subordinate id range of `user`/`id` from an `/etc/subuid`-style file.
pub fn subid_range(contents: &str, user: &str, id: u32) -> Option<(u32, u32)> {
    contents.lines().find_map(|line| {
        let mut f = line.trim().split(':');
        let (who, start, count) = (f.next()?, f.next()?, f.next()?);
        if who != user && who.parse::<u32>().ok() != Some(id) {
            return None;
        }
        let (start, count) = (start.parse().ok()?, count.parse().ok()?);
        (count > 0).then_some((start, count))
    })
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin:/usr/sbin:/sbin".into());
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// Writes the uid/gid maps of `pid`'s user namespace from outside it.
fn write_id_maps(pid: Pid) -> Result<(), NsError> {
    let (uid, gid) = (getuid().as_raw(), getgid().as_raw());
    let user = nix::unistd::User::from_uid(getuid()).ok().flatten().map(|u| u.name);
    let ranges = user.as_deref().and_then(|name| {
        let su = subid_range(&fs::read_to_string("/etc/subuid").ok()?, name, uid)?;
        let sg = subid_range(&fs::read_to_string("/etc/subgid").ok()?, name, gid)?;
        Some((su, sg))
    });
    let tools = find_in_path("newuidmap").zip(find_in_path("newgidmap"));
    if let (Some(((us, uc), (gs, gc))), Some((newuid, newgid)), false) = (ranges, tools, uid == 0) {
        for (tool, id, start, count) in [(newuid, uid, us, uc), (newgid, gid, gs, gc)] {
            let out = Command::new(&tool)
                .args([pid.to_string(), "0".into(), id.to_string(), "1".into(), "1".into()])
                .args([start.to_string(), count.to_string()])
                .output()
                .map_err(|e| NsError::IdMap(format!("{}: {e}", tool.display())))?;
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                return Err(NsError::IdMap(format!("{} failed: {}", tool.display(), err.trim())));
            }
        }
        tracing::debug!(uid, gid, "mapped root plus subordinate ids with newuidmap/newgidmap");
        return Ok(());
    }
    let proc = format!("/proc/{pid}");
    let w = |file: &str, data: String| {
        fs::write(format!("{proc}/{file}"), data).map_err(|e| NsError::IdMap(format!("write {proc}/{file}: {e}")))
    };
    w("setgroups", "deny".into())?;
    w("uid_map", format!("0 {uid} 1\n"))?;
    w("gid_map", format!("0 {gid} 1\n"))?;
    tracing::debug!(uid, gid, "mapped root to the caller's uid/gid (single-id map)");
    Ok(())
}

/// Creates the container namespaces, configures the network and starts `argv` inside.
///
/// Must be called while the process is single-threaded (before the tokio runtime exists);
/// otherwise it fails.
///
/// # Errors
/// Any failure of namespace creation, id mapping or TAP setup, with a message for the user;
/// the child is killed and reaped before returning.
pub fn spawn_run(cfg: &NetConfig, argv: &[String], hosts: &[(String, IpAddr)]) -> Result<RunChild, NsError> {
    let (pid, tap) = spawn_container(Some(cfg), false, argv, hosts)?;
    Ok(RunChild { pid, tap: tap.ok_or_else(|| NsError::Child("no TAP came back".into()))? })
}

/// Like [`spawn_run`] without a TAP: the container has only `lo` (`--network none`), or
/// shares the caller's network namespace (`host_net`, `--network host`).
///
/// # Errors
/// As [`spawn_run`].
pub fn spawn_run_without_tap(host_net: bool, argv: &[String], hosts: &[(String, IpAddr)]) -> Result<Pid, NsError> {
    spawn_container(None, host_net, argv, hosts).map(|(pid, _)| pid)
}

/// Runs `argv` in the user and network namespaces of process `target` (`--network
/// container:NAME`); returns its PID.
///
/// # Errors
/// When the namespaces cannot be opened or the process cannot be forked.
pub fn spawn_join(target: i32, argv: &[String]) -> Result<Pid, NsError> {
    let argv = cstrings(argv)?;
    let open = |ns: &str| {
        let p = format!("/proc/{target}/ns/{ns}");
        fs::File::open(&p).map_err(|e| NsError::Target(format!("cannot open {p}: {e}")))
    };
    let (userns, netns) = (open("user")?, open("net")?);
    match sys::fork()? {
        0 => {
            let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
            if nix::sched::setns(&userns, CloneFlags::CLONE_NEWUSER).is_err()
                || nix::sched::setns(&netns, CloneFlags::CLONE_NEWNET).is_err()
            {
                let _ = (&std::io::stderr()).write_all(b"warren: cannot enter the container's namespaces\n");
                sys::exit_now(125);
            }
            let e = sys::execvp(&argv);
            let _ = (&std::io::stderr()).write_all(format!("warren: {:?}: {e}\n", argv[0]).as_bytes());
            sys::exit_now(if e.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 });
        }
        pid => Ok(Pid::from_raw(pid)),
    }
}

fn cstrings(argv: &[String]) -> Result<Vec<CString>, NsError> {
    argv.iter()
        .map(|a| CString::new(a.as_bytes()).map_err(|_| NsError::Target(format!("argument {a:?} contains a NUL byte"))))
        .collect()
}

fn spawn_container(
    cfg: Option<&NetConfig>,
    host_net: bool,
    argv: &[String],
    hosts: &[(String, IpAddr)],
) -> Result<(Pid, Option<Tap>), NsError> {
    let argv = cstrings(argv)?;
    let mut dns = Vec::new();
    if let Some(cfg) = cfg {
        dns.push(IpAddr::from(cfg.addrs.dns));
        dns.extend(cfg.addrs6.map(|a| IpAddr::from(a.dns)));
    }
    let resolv = cfg.map(|_| write_resolv(&dns)).transpose()?;
    let hosts = (!hosts.is_empty()).then(|| write_hosts(hosts)).transpose()?;
    let files = Files { resolv: resolv.as_ref().map(|r| r.0.as_path()), hosts: hosts.as_ref().map(|h| h.0.as_path()) };
    let (parent_sock, child_sock) = UnixStream::pair().map_err(|e| NsError::Io("socketpair".into(), e))?;
    let (go_r, go_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| NsError::Io("pipe".into(), e.into()))?;
    let mut flags = CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID;
    if !host_net {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    let pid = sys::clone_namespaces(flags.bits()).map_err(NsError::UserNs)?;
    if pid == 0 {
        drop(parent_sock);
        drop(go_w);
        child_run(cfg, host_net, &argv, files, child_sock, go_r);
    }
    let pid = Pid::from_raw(pid);
    drop(child_sock);
    drop(go_r);
    let fail = |e: NsError| {
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        e
    };
    write_id_maps(pid).map_err(fail)?;
    nix::unistd::write(&go_w, b"g").map_err(|e| fail(NsError::Io("signal child".into(), e.into())))?;
    drop(go_w);
    let tap = receive(&parent_sock).map_err(fail)?;
    drop((resolv, hosts));
    Ok((pid, tap))
}

/// Files the container gets bind-mounted over the host's.
#[derive(Clone, Copy)]
struct Files<'a> {
    /// Over /etc/resolv.conf (with a network).
    resolv: Option<&'a Path>,
    /// Over /etc/hosts (`--add-host`).
    hosts: Option<&'a Path>,
}

/// The cloned child: PID 1 of the new PID namespace. Never returns.
fn child_run(
    cfg: Option<&NetConfig>,
    host_net: bool,
    argv: &[CString],
    files: Files<'_>,
    sock: UnixStream,
    go: OwnedFd,
) -> ! {
    // If warren dies, the container dies with it (PID 1 takes its namespace down).
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let mut b = [0u8; 1];
    if !matches!(nix::unistd::read(&go, &mut b), Ok(1)) {
        sys::exit_now(1);
    }
    drop(go);
    let r = child_setup(cfg, host_net, files);
    let ok = r.is_ok();
    report(&sock, r);
    drop(sock);
    if !ok {
        sys::exit_now(1);
    }
    init(argv)
}

fn child_setup(cfg: Option<&NetConfig>, host_net: bool, files: Files<'_>) -> Result<Option<Tap>, String> {
    use nix::mount::{MsFlags, mount};
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(|e| format!("make mounts private: {e}"))?;
    if let Some(hosts) = files.hosts {
        let target = Path::new("/etc/hosts");
        mount(Some(hosts), target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|e| format!("bind-mount the --add-host file over {}: {e}", target.display()))?;
    }
    let Some(cfg) = cfg else {
        if !host_net {
            sys::IfCtl::new().and_then(|c| c.set_up("lo")).map_err(|e| e.to_string())?;
        }
        let proc_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        let _ = mount(Some("proc"), "/proc", Some("proc"), proc_flags, None::<&str>);
        return Ok(None);
    };
    let tap = configure_tap(cfg, true)?;
    let target = Path::new("/etc/resolv.conf");
    if let Some(resolv) = files.resolv
        && target.exists()
    {
        mount(Some(resolv), target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|e| format!("bind-mount resolv.conf over {}: {e}", target.display()))?;
    }
    // A /proc of the new PID namespace, so `ps` and /proc/PID inside see the container's
    // processes. Best effort: a host that hides parts of /proc refuses a fresh mount.
    let proc_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let _ = mount(Some("proc"), "/proc", Some("proc"), proc_flags, None::<&str>);
    Ok(Some(tap))
}

/// Minimal init: runs the command as PID 2, forwards signals to it, reaps every child and
/// exits with the command's status (128 + N when killed by signal N).
fn init(argv: &[CString]) -> ! {
    let all = SigSet::all();
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&all), None);
    let pid = match sys::fork() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("warren: {e}");
            sys::exit_now(1);
        }
    };
    if pid == 0 {
        let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
        let err = sys::execvp(argv);
        let name = argv[0].to_string_lossy();
        if err.kind() == io::ErrorKind::NotFound {
            eprintln!("warren: {name}: command not found");
            sys::exit_now(127);
        }
        eprintln!("warren: {name}: {err}");
        sys::exit_now(126);
    }
    let cmd = Pid::from_raw(pid);
    loop {
        let Ok(si) = sys::sigwaitinfo(&all) else {
            continue;
        };
        if si.signo == libc::SIGCHLD {
            loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(p, code)) if p == cmd => sys::exit_now(code),
                    Ok(WaitStatus::Signaled(p, sig, _)) if p == cmd => sys::exit_now(128 + sig as i32),
                    Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                    Ok(_) => continue,
                    Err(_) => break,
                }
            }
            continue;
        }
        // A terminal's ^C / ^\ already reached the command (same process group).
        let from_tty = si.code == libc::SI_KERNEL;
        if from_tty && (si.signo == libc::SIGINT || si.signo == libc::SIGQUIT) {
            continue;
        }
        if let Ok(sig) = Signal::try_from(si.signo) {
            let _ = kill(cmd, sig);
        }
    }
}

/// What `warren attach` joins.
#[derive(Debug, Clone)]
pub enum Target {
    /// A process whose network (and user) namespace to join.
    Pid(i32),
    /// A network namespace file (`/run/netns/x`, `/proc/PID/ns/net`) and optionally the user
    /// namespace that owns it.
    Path {
        /// The netns file.
        netns: PathBuf,
        /// The owning user namespace file, if any.
        userns: Option<PathBuf>,
    },
}

/// Opens the TAP in the target namespaces through a forked helper and configures it.
///
/// # Errors
/// A target that does not exist or cannot be entered, or a TAP setup failure.
pub fn spawn_attach(cfg: &NetConfig, target: &Target) -> Result<Tap, NsError> {
    spawn_attach_with(cfg, target, true)
}

/// Like [`spawn_attach`]; `configure` false only opens the TAP (slirp4netns without `-c`).
///
/// # Errors
/// As [`spawn_attach`].
pub fn spawn_attach_with(cfg: &NetConfig, target: &Target, configure: bool) -> Result<Tap, NsError> {
    let open = |p: &Path, what: &str| {
        fs::File::open(p).map_err(|e| NsError::Target(format!("cannot open {what} {}: {e}", p.display())))
    };
    let (netns, userns) = match target {
        Target::Pid(pid) => {
            if *pid <= 0 || kill(Pid::from_raw(*pid), None) == Err(Errno::ESRCH) {
                return Err(NsError::Target(format!("no such process: PID {pid}")));
            }
            let base = PathBuf::from(format!("/proc/{pid}/ns"));
            (open(&base.join("net"), "network namespace")?, Some(open(&base.join("user"), "user namespace")?))
        }
        Target::Path { netns, userns } => {
            let n = open(netns, "network namespace")?;
            let u = match userns {
                Some(p) => Some(open(p, "user namespace")?),
                None => None,
            };
            (n, u)
        }
    };
    let (parent_sock, child_sock) = UnixStream::pair().map_err(|e| NsError::Io("socketpair".into(), e))?;
    let pid = sys::fork()?;
    if pid == 0 {
        drop(parent_sock);
        let r = (|| {
            if let Some(u) = &userns {
                // Joining our own user namespace fails with EINVAL: nothing to enter then.
                match nix::sched::setns(u, CloneFlags::CLONE_NEWUSER) {
                    Ok(()) | Err(Errno::EINVAL) => {}
                    Err(e) => return Err(format!("cannot enter the target's user namespace: {e}")),
                }
            }
            nix::sched::setns(&netns, CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("cannot enter the target's network namespace: {e}"))?;
            configure_tap(cfg, configure)
        })();
        let code = i32::from(r.is_err());
        report(&child_sock, r.map(Some));
        sys::exit_now(code);
    }
    drop(child_sock);
    let r = receive(&parent_sock);
    let _ = waitpid(Pid::from_raw(pid), None);
    r?.ok_or_else(|| NsError::Child("no TAP came back".into()))
}

/// Capability number of CAP_NET_BIND_SERVICE, the one a sandboxed process keeps.
const CAP_NET_BIND_SERVICE: u32 = 10;

/// Confines the calling (single-threaded) process the way slirp4netns `--enable-sandbox` does:
/// enters `userns` (the target's, where it has CAP_SYS_ADMIN), moves to a private mount
/// namespace whose root is an empty tmpfs holding read-only `/etc` and `/run` (for resolv.conf),
/// sets no_new_privs and drops every capability but CAP_NET_BIND_SERVICE. Sockets and fds
/// already open keep working; nothing else on the host's file system is reachable.
///
/// # Errors
/// The step that failed.
pub fn sandbox(userns: Option<&fs::File>) -> Result<(), String> {
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    if let Some(u) = userns {
        match nix::sched::setns(u, CloneFlags::CLONE_NEWUSER) {
            Ok(()) | Err(Errno::EINVAL) => {}
            Err(e) => return Err(format!("sandbox: cannot enter the target's user namespace: {e}")),
        }
    }
    nix::sched::unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("sandbox: cannot create a mount namespace: {e}"))?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(|e| format!("sandbox: make mounts private: {e}"))?;
    let root = Path::new("/tmp");
    let hardened = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("tmpfs"), root, Some("tmpfs"), hardened, Some("size=64k,mode=0755"))
        .map_err(|e| format!("sandbox: mount tmpfs: {e}"))?;
    for d in ["etc", "run", "old"] {
        fs::create_dir(root.join(d)).map_err(|e| format!("sandbox: mkdir {d}: {e}"))?;
    }
    for d in ["etc", "run"] {
        let (src, dst) = (Path::new("/").join(d), root.join(d));
        mount(Some(&src), &dst, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
            .map_err(|e| format!("sandbox: bind {}: {e}", src.display()))?;
        // Read-only when the kernel lets a user namespace change it (locked flags may refuse).
        let ro = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | hardened;
        let _ = mount(None::<&str>, &dst, None::<&str>, ro, None::<&str>);
    }
    nix::unistd::pivot_root(root, &root.join("old")).map_err(|e| format!("sandbox: pivot_root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("sandbox: chdir: {e}"))?;
    umount2("/old", MntFlags::MNT_DETACH).map_err(|e| format!("sandbox: detach the old root: {e}"))?;
    let _ = fs::remove_dir("/old");
    let _ = mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | hardened,
        None::<&str>,
    );
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("sandbox: no_new_privs: {e}"))?;
    sys::keep_only_capability(CAP_NET_BIND_SERVICE).map_err(|e| format!("sandbox: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn ephemeral_port_range() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_port_range("1024 1024"), Some((1024, 1024)));
        assert_eq!(parse_port_range("60999 32768"), None);
        assert_eq!(parse_port_range("32768"), None);
        assert_eq!(parse_port_range("x 60999"), None);
    }

    #[test]
    fn resolv_keeps_search_and_options() {
        let host = "# generated\nnameserver 192.0.2.1\nsearch example.test corp.test\noptions ndots:2\n";
        assert_eq!(
            resolv_conf_contents(&[Ipv4Addr::new(10, 0, 2, 3).into()], host),
            "nameserver 10.0.2.3\nsearch example.test corp.test\noptions ndots:2\n"
        );
    }

    #[test]
    fn subid_lookup() {
        let f = "alice:100000:65536\n1001:200000:65536\nbob:300000:0\n";
        assert_eq!(subid_range(f, "alice", 1000), Some((100000, 65536)));
        assert_eq!(subid_range(f, "carol", 1001), Some((200000, 65536)));
        assert_eq!(subid_range(f, "bob", 1002), None, "empty range ignored");
        assert_eq!(subid_range(f, "dave", 1003), None);
    }
}
