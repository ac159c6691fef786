//! Published ports: host listeners and the kernel fast path for loopback clients.
//!
//! Clients from other hosts reach the container through the userspace stack with their real
//! address and port as the source (the dataplane opens a smoltcp connection *from* the client's
//! address). Loopback clients carry no address worth keeping, so they take the fast path: the
//! agent inside the container's namespace connects a kernel socket to the container address,
//! passes it back, and the two kernel sockets are joined with `splice(2)` through a pipe, so
//! the payload never enters warren's memory.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use socket2::{Domain, Socket, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;

use crate::forward::{Forward, Proto};
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

/// Binds the host socket of one forward (SO_REUSEADDR for TCP, so a restarted container can
/// publish the same port at once; IPv6 sockets are v6-only).
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
/// # Errors
/// The first [`BindError`].
pub fn bind_all(fwds: &[Forward]) -> Result<Vec<Bound>, BindError> {
    fwds.iter().map(bind).collect()
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

/// The warren side of the agent socket (see [`crate::ns::agent_request`]): sockets of the
/// container's network namespace, fetched in batches and connected here.
pub struct Agent {
    fd: AsyncFd<OwnedFd>,
    /// One request to the agent at a time.
    lock: tokio::sync::Mutex<()>,
    /// Unconnected sockets of the namespace: IPv4, IPv6.
    pool: std::sync::Mutex<(Vec<OwnedFd>, Vec<OwnedFd>)>,
}

/// How long a connect inside the namespace may take.
const INSIDE_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Agent {
    /// Wraps the agent socket (must be called inside the runtime).
    ///
    /// # Errors
    /// If the reactor refuses the fd.
    pub fn new(fd: OwnedFd) -> io::Result<Arc<Self>> {
        let fd = sys::async_fd(fd)?;
        Ok(Arc::new(Self { fd, lock: tokio::sync::Mutex::new(()), pool: Default::default() }))
    }

    /// Connects a TCP socket to `target` inside the container's network namespace.
    ///
    /// # Errors
    /// The connect error inside (e.g. `ECONNREFUSED`, `TimedOut` after 10 s), or the agent
    /// being gone.
    pub async fn connect(&self, target: SocketAddr) -> io::Result<TcpStream> {
        let s = Socket::from(self.socket(target.is_ipv4()).await?);
        s.set_tcp_nodelay(true)?;
        match s.connect(&target.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let stream = TcpStream::from_std(std::net::TcpStream::from(s))?;
        tokio::time::timeout(INSIDE_CONNECT_TIMEOUT, stream.writable())
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        match stream.take_error()? {
            Some(e) => Err(e),
            None => Ok(stream),
        }
    }

    /// An unconnected socket of the namespace, from the pool or a new batch from the agent.
    async fn socket(&self, v4: bool) -> io::Result<OwnedFd> {
        let take = |pool: &std::sync::Mutex<(Vec<OwnedFd>, Vec<OwnedFd>)>| {
            let mut p = pool.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if v4 { p.0.pop() } else { p.1.pop() }
        };
        if let Some(s) = take(&self.pool) {
            return Ok(s);
        }
        let _one_at_a_time = self.lock.lock().await;
        // Another task may have refilled the pool while this one waited.
        if let Some(s) = take(&self.pool) {
            return Ok(s);
        }
        let req = crate::ns::agent_request(v4, crate::ns::AGENT_BATCH);
        loop {
            let mut g = self.fd.writable().await?;
            match g.try_io(|fd| nix::unistd::write(fd.get_ref(), &req).map_err(io::Error::from)) {
                Ok(r) => {
                    r?;
                    break;
                }
                Err(_would_block) => continue,
            }
        }
        let mut buf = [0u8; 16];
        let (n, mut fds) = loop {
            let mut g = self.fd.readable().await?;
            match g.try_io(|fd| sys::recv_fds(fd.get_ref().as_fd(), &mut buf).map_err(io::Error::from)) {
                Ok(r) => break r?,
                Err(_would_block) => continue,
            }
        };
        match buf.first() {
            Some(b'O') if n == 1 && !fds.is_empty() => {
                let first = fds.pop().expect("not empty");
                let mut p = self.pool.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if v4 {
                    p.0.append(&mut fds)
                } else {
                    p.1.append(&mut fds)
                }
                Ok(first)
            }
            Some(b'E') if n == 5 => {
                Err(io::Error::from_raw_os_error(i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]])))
            }
            _ if n == 0 => Err(io::Error::new(io::ErrorKind::BrokenPipe, "the namespace agent is gone")),
            _ => Err(io::Error::other("bad answer from the namespace agent")),
        }
    }
}

/// Serves one loopback client through the kernel fast path: connect inside, then splice.
pub async fn fast_path(client: TcpStream, agent: Arc<Agent>, target: SocketAddr, fallback: Option<SocketAddr>) {
    let mut r = agent.connect(target).await;
    if let (Err(e), Some(v4)) = (&r, fallback)
        && e.raw_os_error() == Some(libc::ECONNREFUSED)
    {
        r = agent.connect(v4).await;
    }
    let inner = match r {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%target, error = %e, "fast path connect inside the namespace failed");
            // Refused inside: reset the client, as a refused connect would.
            let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
            return;
        }
    };
    let r = tokio::try_join!(splice_one_way(&client, &inner), splice_one_way(&inner, &client));
    if let Err(e) = r {
        tracing::debug!(error = %e, "fast path relay ended with an error; resetting both sides");
        for s in [&client, &inner] {
            let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
        }
    }
}

/// Size of the pipe between two spliced sockets.
const PIPE_SIZE: usize = 1 << 20;

/// Moves bytes from `src` to `dst` through a pipe until `src` reaches EOF, then half-closes
/// `dst`. Returns the bytes moved.
async fn splice_one_way(src: &TcpStream, dst: &TcpStream) -> io::Result<u64> {
    let (pr, pw) = sys::splice_pipe(PIPE_SIZE)?;
    let mut total = 0u64;
    loop {
        // Socket -> pipe.
        let n = loop {
            src.readable().await?;
            match src.try_io(Interest::READABLE, || sys::splice(src.as_fd(), pw.as_fd(), PIPE_SIZE)) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            let _ = socket2::SockRef::from(dst).shutdown(std::net::Shutdown::Write);
            return Ok(total);
        }
        // Pipe -> socket, until the pipe is empty again.
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
    }
}
