//! Published ports: host listeners, bound before the container starts.
//!
//! Every client reaches the container through the userspace stack: clients from other hosts
//! with their real address and port as the source (the dataplane opens a smoltcp connection
//! *from* the client's address), loopback clients as the gateway with their own port.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Serialize;
use socket2::{Domain, Socket, Type};
use tokio::sync::mpsc;

use super::Command;
use crate::autopublish::{self, AutoPublish, Listening, Table};
use crate::forward::{Forward, Proto};
use crate::ns::SocketTables;
use crate::sys;

/// A host port that cannot be published, with the reason and the fix.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BindError {
    /// The port is taken.
    #[error("cannot publish {proto} {addr}: port {port} is already in use on the host; choose another host port")]
    InUse {
        /// Protocol.
        proto: &'static str,
        /// Address asked for.
        addr: SocketAddr,
        /// Port.
        port: u16,
    },
    /// The port is below `ip_unprivileged_port_start`.
    #[error(
        "cannot publish {proto} {addr}: port {port} is privileged (below net.ipv4.ip_unprivileged_port_start = {start}); \
         use a host port >= {start} or lower that sysctl"
    )]
    Privileged {
        /// Protocol.
        proto: &'static str,
        /// Address asked for.
        addr: SocketAddr,
        /// Port.
        port: u16,
        /// The sysctl's value.
        start: u16,
    },
    /// The address is not on this host.
    #[error("cannot publish {proto} {addr}: address {ip} is not on this host; use one of its addresses or 0.0.0.0")]
    NotLocal {
        /// Protocol.
        proto: &'static str,
        /// Address asked for.
        addr: SocketAddr,
        /// The IP.
        ip: IpAddr,
    },
    /// Anything else the kernel refused.
    #[error("cannot publish {proto} {addr}: {err}")]
    Other {
        /// Protocol.
        proto: &'static str,
        /// Address asked for.
        addr: SocketAddr,
        /// The error text.
        err: String,
    },
}

/// A bound host socket of a forward.
pub enum HostSocket {
    /// A listening TCP socket.
    Tcp(std::net::TcpListener),
    /// A bound UDP socket.
    Udp(std::net::UdpSocket),
}

/// A forward with its bound socket; `host` carries the port actually bound.
pub struct Bound {
    /// The forward, with the real host port.
    pub fwd: Forward,
    /// The socket.
    pub sock: HostSocket,
}

fn unprivileged_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024)
}

fn bind_error(fwd: &Forward, e: io::Error) -> BindError {
    let (proto, addr) = (fwd.proto.as_str(), fwd.host);
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) => BindError::InUse { proto, addr, port: addr.port() },
        Some(libc::EACCES) | Some(libc::EPERM) => {
            BindError::Privileged { proto, addr, port: addr.port(), start: unprivileged_start() }
        }
        Some(libc::EADDRNOTAVAIL) => BindError::NotLocal { proto, addr, ip: addr.ip() },
        _ => BindError::Other { proto, addr, err: e.to_string() },
    }
}

/// Receive buffer asked for a published UDP port's host socket.
const UDP_LISTENER_RCVBUF: usize = 4 << 20;

/// Binds the host socket of one forward (SO_REUSEADDR for TCP, so a restarted container can
/// publish the same port at once; a larger receive buffer for UDP; IPv6 sockets are v6-only).
///
/// # Errors
/// A [`BindError`] that says why and what to do.
pub fn bind(fwd: &Forward) -> Result<Bound, BindError> {
    let ty = match fwd.proto {
        Proto::Tcp => Type::STREAM,
        Proto::Udp => Type::DGRAM,
    };
    let s = Socket::new(Domain::for_address(fwd.host), ty.nonblocking(), None).map_err(|e| bind_error(fwd, e))?;
    if fwd.host.is_ipv6() {
        s.set_only_v6(true).map_err(|e| bind_error(fwd, e))?;
    }
    if fwd.proto == Proto::Tcp {
        s.set_reuse_address(true).map_err(|e| bind_error(fwd, e))?;
        // Accepted sockets inherit it: no setsockopt per client connection.
        s.set_tcp_nodelay(true).map_err(|e| bind_error(fwd, e))?;
    } else {
        // Best effort (the kernel caps it at net.core.rmem_max): a client's burst waits in
        // the kernel while the data path is off the CPU instead of being dropped.
        let _ = s.set_recv_buffer_size(UDP_LISTENER_RCVBUF);
    }
    s.bind(&fwd.host.into()).map_err(|e| bind_error(fwd, e))?;
    let local = s.local_addr().ok().and_then(|a| a.as_socket()).unwrap_or(fwd.host);
    let sock = match fwd.proto {
        Proto::Tcp => {
            s.listen(1024).map_err(|e| bind_error(fwd, e))?;
            HostSocket::Tcp(s.into())
        }
        Proto::Udp => HostSocket::Udp(s.into()),
    };
    Ok(Bound { fwd: Forward { host: local, ..*fwd }, sock })
}

/// Binds every forward or none: on the first failure the ones already bound are closed.
///
/// A forward on `[::]` for a picked port (0) right after one on `0.0.0.0` for a picked port and
/// the same container port (the two of a `-p` without host address, see
/// [`crate::forward::parse_spec_with`]) takes the port the kernel picked for the first: both
/// families publish on one port. Should that port be taken for IPv6, the pair is picked
/// again, a few times.
///
/// # Errors
/// The first [`BindError`].
pub fn bind_all(fwds: &[Forward]) -> Result<Vec<Bound>, BindError> {
    let mut out = Vec::with_capacity(fwds.len());
    let mut i = 0;
    while i < fwds.len() {
        match fwds.get(i + 1) {
            Some(v6) if picked_pair(&fwds[i], v6) => {
                out.extend(bind_pair(&fwds[i], v6)?);
                i += 2;
            }
            _ => {
                out.push(bind(&fwds[i])?);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Whether `v4` and `v6` are the two forwards of one picked port (see [`bind_all`]).
fn picked_pair(v4: &Forward, v6: &Forward) -> bool {
    v4.host == SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0))
        && v6.host == SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
        && (v4.proto, v4.container_port) == (v6.proto, v6.container_port)
}

/// Times a picked port is picked again when it is taken for IPv6.
const PAIR_TRIES: usize = 16;

/// Binds `v4` on a port the kernel picks, then `v6` on the same port.
fn bind_pair(v4: &Forward, v6: &Forward) -> Result<[Bound; 2], BindError> {
    // Ports taken for IPv6 stay bound for IPv4 until the end, so the kernel picks others.
    let mut tried = Vec::new();
    let mut taken = None;
    for _ in 0..PAIR_TRIES {
        let first = bind(v4)?;
        let twin = Forward { host: SocketAddr::new(v6.host.ip(), first.fwd.host.port()), ..*v6 };
        match bind(&twin) {
            Ok(second) => return Ok([first, second]),
            Err(e @ BindError::InUse { .. }) => {
                taken = Some(e);
                tried.push(first);
            }
            Err(e) => return Err(e),
        }
    }
    Err(taken.expect("PAIR_TRIES > 0"))
}

/// A published port as listed by the API.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PortInfo {
    /// Forward id (from 1, never reused).
    pub id: u64,
    /// `tcp` or `udp`.
    pub proto: &'static str,
    /// The bound host address.
    pub host: SocketAddr,
    /// The container address and port it leads to.
    pub container: SocketAddr,
    /// The IPv4 address a TCP client goes to when the container refuses it on IPv6 (only for
    /// IPv6 listeners without an explicit `/tcp6`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<SocketAddr>,
}

impl PortInfo {
    /// Reads one back from its JSON form (as the daemon sends it); `None` if malformed.
    pub fn from_json(v: &serde_json::Value) -> Option<Self> {
        let addr = |k: &str| v.get(k)?.as_str()?.parse::<SocketAddr>().ok();
        Some(Self {
            id: v.get("id")?.as_u64()?,
            proto: match v.get("proto")?.as_str()? {
                "tcp" => "tcp",
                "udp" => "udp",
                _ => return None,
            },
            host: addr("host")?,
            container: addr("container")?,
            fallback: addr("fallback"),
        })
    }
}

/// How often `-p auto` reads the container's socket tables.
pub const AUTO_SCAN_EVERY: Duration = Duration::from_secs(1);

/// Most bytes of a socket table read per scan: TCP's listening sockets come first, so this
/// bounds only a namespace with tens of thousands of listeners, or of UDP sockets (~128 bytes
/// each; UDP tables are read whole).
const AUTO_TABLE_MAX: u64 = 8 << 20;

/// Adds the services of one table (`v6`: `tcp6` or `udp6`) to `out`, reading from offset 0
/// (the kernel lists the table afresh) up to its end or, for TCP, its first socket that is
/// not listening.
fn read_table(table: &std::fs::File, v6: bool, kind: Table, buf: &mut [u8], out: &mut Listening) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let (mut pending, mut off) = (Vec::new(), 0u64);
    loop {
        let n = table.read_at(buf, off)?;
        off += n as u64;
        pending.extend_from_slice(&buf[..n]);
        // Whole lines only; the rest waits for the next read.
        let end = if n == 0 { pending.len() } else { pending.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) };
        let scan = autopublish::scan(&String::from_utf8_lossy(&pending[..end]), v6, kind);
        autopublish::merge(out, kind.proto(), &scan.sockets);
        if n == 0 || scan.done || off > AUTO_TABLE_MAX {
            return Ok(());
        }
        pending.drain(..end);
    }
}

/// `-p [HOST_IP:]auto[/udp]`: every [`AUTO_SCAN_EVERY`], publishes the ports the container
/// started serving (each protocol on its `hosts`), and unpublishes those it stopped serving
/// (see [`crate::autopublish`]), through the data path's `commands` as the API does. Ends
/// with the data path, or when the tables cannot be read.
pub async fn auto_publish(tables: SocketTables, hosts: Vec<(IpAddr, Proto)>, commands: mpsc::Sender<Command>) {
    let mut auto = AutoPublish::new(hosts);
    let mut warned = false;
    let mut buf = vec![0u8; 16 << 10];
    let mut tick = tokio::time::interval(AUTO_SCAN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut listening = Listening::new();
        let udp = Table::Udp { ephemeral: tables.ephemeral };
        let all = [
            (&tables.tcp, false, Table::Tcp),
            (&tables.tcp6, true, Table::Tcp),
            (&tables.udp, false, udp),
            (&tables.udp6, true, udp),
        ];
        for (table, v6, kind) in all {
            if let Some(t) = table
                && let Err(e) = read_table(t, v6, kind, &mut buf, &mut listening)
            {
                tracing::warn!(error = %e, "-p auto: cannot read the container's sockets; no more ports follow them");
                return;
            }
        }
        let Some(ports) = Command::ask(&commands, Command::List).await else { return };
        let plan = auto.plan(&listening, &ports);
        if plan.over_limit > 0 && !warned {
            warned = true;
            tracing::warn!(
                limit = autopublish::AUTO_MAX_PORTS,
                "-p auto: the container listens on more ports than are published at once; the rest wait for a place"
            );
        }
        if !plan.remove.is_empty() {
            tracing::info!(ids = ?plan.remove, "-p auto: the container stopped listening; unpublishing");
            if Command::ask(&commands, |r| Command::Remove(plan.remove, r)).await.is_none() {
                return;
            }
        }
        for fwd in plan.add {
            match Command::ask(&commands, |r| Command::Add(vec![fwd], r)).await {
                Some(Ok(infos)) => {
                    if let Some(info) = infos.first() {
                        auto.published(&fwd, info.id);
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!("-p auto: {e}");
                    auto.refused(&fwd);
                }
                None => return,
            }
        }
    }
}

/// Buffer of a direction of a `-T` connection that could not have a pipe (out of fds).
const TO_HOST_BUFFER: usize = 64 << 10;

/// What the pipe of a direction of a `-T` connection grows to once a read fills it (bulk
/// data: 1 MiB moved ~25% more bytes per CPU second than 64 KiB or 256 KiB here). Until then
/// it has the default size, and until the first byte none exists: the kernel counts pipe
/// capacity against the user's `fs.pipe-user-pages-soft` (64 MiB), shared with every other
/// program of the user, so idle and small connections must not hold big pipes.
const TO_HOST_PIPE: usize = 1 << 20;

/// Most `-T` connections open at once, all ports together: beyond, new ones are reset, so
/// the container cannot make warren hold more than 128 MiB of relay buffers.
pub const TO_HOST_MAX_CONNECTIONS: usize = 1024;

/// `-T`: accepts connections on `listener` (on the container's loopback; see
/// [`crate::ns::Tap::to_host`]) and relays each to the host's loopback at `host_port`
/// (127.0.0.1, else ::1), taking a place in `places` ([`TO_HOST_MAX_CONNECTIONS`], shared by
/// every `-T` port) for as long as it lasts. A connection the host refuses, or one over the
/// limit, is reset. Ends with the data path.
pub async fn to_host(listener: std::net::TcpListener, host_port: u16, places: std::sync::Arc<tokio::sync::Semaphore>) {
    let l = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, host_port, "-T: listener not served");
            return;
        }
    };
    loop {
        let client = match l.accept().await {
            Ok((c, _)) => c,
            Err(e) => {
                // Out of fds, most likely: the client waits in the backlog meanwhile.
                tracing::debug!(error = %e, "-T: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(place) = places.clone().try_acquire_owned() else {
            tracing::debug!(host_port, limit = TO_HOST_MAX_CONNECTIONS, "-T: too many connections; resetting");
            let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
            continue;
        };
        tokio::spawn(async move {
            let _place = place;
            let host = match tokio::net::TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, host_port)).await {
                Ok(h) => h,
                Err(e) => match tokio::net::TcpStream::connect((std::net::Ipv6Addr::LOCALHOST, host_port)).await {
                    Ok(h) => h,
                    Err(_) => {
                        tracing::debug!(host_port, error = %e, "-T: the host refused; resetting");
                        let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
                        return;
                    }
                },
            };
            let _ = (client.set_nodelay(true), host.set_nodelay(true));
            let r = tokio::try_join!(splice_one_way(&client, &host), splice_one_way(&host, &client));
            tracing::debug!(host_port, result = ?r, "-T connection ended");
            if r.is_err() {
                // A reset (or any failure) on one side resets the other, as a kernel path would.
                for s in [&client, &host] {
                    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
                }
            }
        });
    }
}

/// Moves bytes from `src` to `dst` inside the kernel, through a pipe made at the first byte
/// (see [`TO_HOST_PIPE`]), until `src` reaches EOF, then half-closes `dst`. Returns the bytes
/// moved. Without a pipe (out of fds) the bytes go through a buffer in user space.
///
/// The pipe is emptied before `src` is read again, so a `WouldBlock` of the read means `src`
/// has nothing (never that the pipe is full) and one of the write means `dst` is full: each
/// clears the right socket's readiness.
async fn splice_one_way(src: &tokio::net::TcpStream, dst: &tokio::net::TcpStream) -> io::Result<u64> {
    use std::os::fd::AsFd;
    use tokio::io::Interest;
    let mut pipe = None;
    let mut size = 64 << 10;
    let mut total = 0u64;
    loop {
        let (pr, pw) = match &pipe {
            Some(p) => p,
            // A readiness can be spurious (a new socket's is): peek makes sure a byte is there.
            None if src.peek(&mut [0u8; 1]).await? == 0 => {
                socket2::SockRef::from(dst).shutdown(std::net::Shutdown::Write)?;
                return Ok(total);
            }
            None => match sys::splice_pipe() {
                Ok(p) => pipe.insert(p),
                Err(e) => {
                    tracing::debug!(error = %e, "-T: no pipe; relaying through user space");
                    return copy_one_way(src, dst, total).await;
                }
            },
        };
        src.readable().await?;
        let n = match src.try_io(Interest::READABLE, || sys::splice(src.as_fd(), pw.as_fd(), size)) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            socket2::SockRef::from(dst).shutdown(std::net::Shutdown::Write)?;
            return Ok(total);
        }
        let mut left = n;
        while left > 0 {
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || sys::splice(pr.as_fd(), dst.as_fd(), left)) {
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        total += n as u64;
        if n >= size && size < TO_HOST_PIPE {
            // Refused past the user's pipe allowance: the pipe keeps working at its size.
            size = sys::grow_pipe(pw.as_fd(), TO_HOST_PIPE).unwrap_or(size).max(size);
        }
    }
}

/// [`splice_one_way`] through a buffer, from `total` bytes moved on.
async fn copy_one_way(src: &tokio::net::TcpStream, dst: &tokio::net::TcpStream, mut total: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; TO_HOST_BUFFER];
    loop {
        src.readable().await?;
        let n = match src.try_read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            socket2::SockRef::from(dst).shutdown(std::net::Shutdown::Write)?;
            return Ok(total);
        }
        let mut done = 0;
        while done < n {
            dst.writable().await?;
            match dst.try_write(&buf[done..n]) {
                Ok(m) => done += m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        total += n as u64;
    }
}

/// Most `-U` flows (container source address and port) at once, all ports together: beyond,
/// datagrams from new sources are dropped until a flow goes idle.
pub const TO_HOST_UDP_MAX_FLOWS: usize = 1024;

/// A `-U` flow: the host socket one container source sends from, the task relaying its
/// replies, and when it last carried a datagram either way (ms since the relay started).
struct UdpToHostFlow {
    host: std::sync::Arc<tokio::net::UdpSocket>,
    replies: tokio::task::JoinHandle<()>,
    last: std::sync::Arc<std::sync::atomic::AtomicU64>,
    _place: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for UdpToHostFlow {
    fn drop(&mut self) {
        self.replies.abort();
    }
}

/// `-U`: receives datagrams on `socket` (on the container's loopback; see
/// [`crate::ns::Tap::to_host_udp`]) and sends each to the host's loopback of the same family
/// at `host_port`, from a host socket per container source (taking a place in `places`,
/// [`TO_HOST_UDP_MAX_FLOWS`] shared by every `-U` port); replies go back to that source. A
/// flow that carried nothing for `idle` (`--udp-timeout`) ends. Ends with the data path.
pub async fn to_host_udp(
    socket: std::net::UdpSocket,
    host_port: u16,
    places: std::sync::Arc<tokio::sync::Semaphore>,
    idle: Duration,
) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let sock = match tokio::net::UdpSocket::from_std(socket) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::warn!(error = %e, host_port, "-U: socket not served");
            return;
        }
    };
    let host_addr = match sock.local_addr() {
        Ok(a) if a.is_ipv6() => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, host_port)),
        _ => SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, host_port)),
    };
    let start = tokio::time::Instant::now();
    let now_ms = move || start.elapsed().as_millis() as u64;
    let idle_ms = idle.as_millis() as u64;
    let mut flows: rustc_hash::FxHashMap<SocketAddr, UdpToHostFlow> = rustc_hash::FxHashMap::default();
    let mut sweep = tokio::time::interval(Duration::from_secs(1).min(idle));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                // A reply's container socket had gone (ICMP port unreachable).
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "-U: receive failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = sweep.tick() => {
                let t = now_ms();
                flows.retain(|_, f| t.saturating_sub(f.last.load(Ordering::Relaxed)) < idle_ms);
                continue;
            }
        };
        let flow = match flows.entry(from) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let Ok(place) = places.clone().try_acquire_owned() else {
                    tracing::debug!(host_port, limit = TO_HOST_UDP_MAX_FLOWS, "-U: too many flows; dropping");
                    continue;
                };
                let host = match udp_connected(host_addr).await {
                    Ok(h) => Arc::new(h),
                    Err(e) => {
                        tracing::debug!(error = %e, "-U: no host socket; dropping");
                        continue;
                    }
                };
                let last = Arc::new(AtomicU64::new(now_ms()));
                let replies = tokio::spawn({
                    let (host, sock, last) = (host.clone(), sock.clone(), last.clone());
                    async move {
                        let mut buf = vec![0u8; 65536];
                        loop {
                            match host.recv(&mut buf).await {
                                Ok(n) => {
                                    last.store(now_ms(), Ordering::Relaxed);
                                    let _ = sock.send_to(&buf[..n], from).await;
                                }
                                // Nobody on the host port (ICMP port unreachable): the next
                                // datagram tries again.
                                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                                Err(e) => {
                                    tracing::debug!(error = %e, "-U: receive from the host failed");
                                    tokio::time::sleep(Duration::from_millis(10)).await;
                                }
                            }
                        }
                    }
                });
                v.insert(UdpToHostFlow { host, replies, last, _place: place })
            }
        };
        flow.last.store(now_ms(), Ordering::Relaxed);
        if let Err(e) = flow.host.send(&buf[..n]).await {
            tracing::debug!(error = %e, host_port, "-U: send to the host failed");
        }
    }
}

/// A UDP socket on `to`'s loopback, connected to `to`.
async fn udp_connected(to: SocketAddr) -> io::Result<tokio::net::UdpSocket> {
    let s = tokio::net::UdpSocket::bind(SocketAddr::new(to.ip(), 0)).await?;
    s.connect(to).await?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Two connected loopback TCP streams: (one end, the other end).
    async fn pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = tokio::net::TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    /// `relay` moves 3 MiB (more than a grown pipe) from one connection to another intact, then
    /// passes the sender's EOF on as a half-close.
    async fn relays_intact(spliced: bool) {
        let (mut client, src) = pair().await;
        let (dst, mut server) = pair().await;
        let data: Vec<u8> = (0..3u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client.shutdown().await.unwrap();
            client
        });
        let relay = tokio::spawn(async move {
            let n = if spliced { splice_one_way(&src, &dst).await } else { copy_one_way(&src, &dst, 0).await };
            (n, src, dst)
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        let (n, _src, _dst) = relay.await.unwrap();
        let _client = writer.await.unwrap();
        assert_eq!(n.unwrap(), data.len() as u64);
        assert!(got == data, "{} bytes arrived, not the {} sent", got.len(), data.len());
    }

    #[test]
    fn clients_of_a_published_tcp_port_are_accepted_with_nodelay() {
        let fwd = crate::forward::parse_spec_with("127.0.0.1::80", false).unwrap()[0];
        let Bound { fwd, sock: HostSocket::Tcp(l) } = bind(&fwd).unwrap() else { panic!("a TCP listener") };
        let _client = std::net::TcpStream::connect(fwd.host).unwrap();
        l.set_nonblocking(false).unwrap();
        let (accepted, _) = l.accept().unwrap();
        assert!(accepted.nodelay().unwrap(), "the data path no longer sets it per connection");
    }

    #[tokio::test]
    async fn splice_relay_moves_bytes_intact_and_passes_the_half_close() {
        relays_intact(true).await;
    }

    #[tokio::test]
    async fn buffer_relay_moves_bytes_intact_and_passes_the_half_close() {
        relays_intact(false).await;
    }
}
