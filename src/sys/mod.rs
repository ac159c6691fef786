//! Every raw syscall and `unsafe` block of warren lives here.
//!
//! The rest of the crate sees owned fds and typed results. Each `unsafe` block says why it
//! is sound. Nothing here knows about warren's configuration: these are thin, checked
//! wrappers around Linux interfaces (TUN/TAP, interface ioctls, namespaces, fd passing).
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

/// Longest interface name the kernel accepts, without the terminating NUL.
pub const IFNAMSIZ_MAX: usize = libc::IFNAMSIZ - 1;

/// Errors of the thin syscall wrappers; each names the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// A syscall failed. (The OS error is part of the message, not a separate source, so
    /// error chains print it once.)
    #[error("{op}: {err}")]
    Io {
        /// What was being done, e.g. `TUNSETIFF tap0`.
        op: String,
        /// The OS error.
        err: io::Error,
    },
    /// An interface name is empty, too long or contains a byte the kernel refuses.
    #[error("invalid interface name {0:?}: expected 1..=15 bytes without '/', ':', NUL or whitespace")]
    BadIfName(String),
}

/// Keeps the OS error's kind (EAGAIN stays `WouldBlock`, so tokio's `try_io` sees it) with
/// the operation in the message.
impl From<SysError> for io::Error {
    fn from(e: SysError) -> Self {
        let kind = match &e {
            SysError::Io { err, .. } => err.kind(),
            SysError::BadIfName(_) => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e.to_string())
    }
}

impl SysError {
    /// The OS error number, when a syscall failed.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Io { err, .. } => err.raw_os_error(),
            Self::BadIfName(_) => None,
        }
    }
}

fn last(op: impl Into<String>) -> SysError {
    SysError::Io { op: op.into(), err: io::Error::last_os_error() }
}

fn nix_err(op: impl Into<String>, e: nix::Error) -> SysError {
    SysError::Io { op: op.into(), err: io::Error::from(e) }
}

/// Checks an interface name against the kernel's rules (`dev_valid_name`).
pub fn check_ifname(name: &str) -> Result<(), SysError> {
    let ok = !name.is_empty()
        && name.len() <= IFNAMSIZ_MAX
        && name != "."
        && name != ".."
        && !name.bytes().any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace());
    if ok { Ok(()) } else { Err(SysError::BadIfName(name.to_string())) }
}

fn ifreq_with_name(name: &str) -> Result<libc::ifreq, SysError> {
    check_ifname(name)?;
    // SAFETY: ifreq is a plain C struct of integers, arrays and a union of such; all-zero is
    // a valid value for every field.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNGETIFF: libc::c_ulong = 0x8004_54d2;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;
const TUN_F_TSO_ECN: libc::c_uint = 0x08;

/// Opens `/dev/net/tun` and attaches it to TAP device `name` in the calling thread's
/// network namespace, creating the device if it does not exist (an existing persistent TAP,
/// as RootlessKit pre-creates, is attached). The fd is non-blocking and close-on-exec.
///
/// Every frame on the fd is preceded by a 10-byte `virtio_net_hdr` (`IFF_VNET_HDR`), and
/// checksum offload is on (`TUN_F_CSUM`): the container's kernel may hand over TCP/UDP with only
/// the pseudo-header summed, and accepts ours that way, so no byte is summed twice. TCP
/// segmentation offload is on too (`TUN_F_TSO4|TSO6|TSO_ECN`): whatever the interface MTU,
/// the container's kernel hands over TCP in segments of up to 64 KiB, each marked with the
/// segment size it would have cut it into (`gso_type`/`gso_size`).
///
/// With `queues` > 1 the device is multiqueue (`IFF_MULTI_QUEUE`) and one fd per queue comes
/// back: the kernel steers each of the container's flows to one queue (by a hash of its
/// addresses and ports, or to the queue that last carried a frame of the flow from warren).
/// An existing single-queue device (created by another tool) is attached with one queue.
///
/// # Errors
/// Fails when `/dev/net/tun` cannot be opened or the ioctl is refused (no CAP_NET_ADMIN in
/// the namespace's owning user namespace, or a non-TAP device of that name exists).
pub fn open_tap(name: &str, queues: usize) -> Result<Vec<OwnedFd>, SysError> {
    let flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
    if queues <= 1 {
        return Ok(vec![open_tap_queue(name, flags)?]);
    }
    let first = match open_tap_queue(name, flags | libc::IFF_MULTI_QUEUE) {
        // A single-queue device of that name already exists: it can only be attached as such.
        Err(e) if e.errno() == Some(libc::EINVAL) => return Ok(vec![open_tap_queue(name, flags)?]),
        r => r?,
    };
    let mut fds = vec![first];
    for _ in 1..queues {
        fds.push(open_tap_queue(name, flags | libc::IFF_MULTI_QUEUE)?);
    }
    Ok(fds)
}

fn open_tap_queue(name: &str, flags: libc::c_int) -> Result<OwnedFd, SysError> {
    let mut req = ifreq_with_name(name)?;
    // SAFETY: the path is a valid NUL-terminated string; open has no other preconditions.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if fd < 0 {
        return Err(last("open /dev/net/tun"));
    }
    // SAFETY: fd was just returned by open and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    req.ifr_ifru.ifru_flags = flags as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which lives on our stack for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, &mut req) };
    if rc < 0 {
        return Err(last(format!("TUNSETIFF {name}")));
    }
    let offload = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;
    // SAFETY: TUNSETOFFLOAD takes its argument by value; no memory is passed.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD as _, offload as libc::c_ulong) };
    if rc < 0 {
        return Err(last(format!("TUNSETOFFLOAD {name}")));
    }
    Ok(fd)
}

/// The TUN/TAP flags of an attached fd (`TUNGETIFF`): e.g. `IFF_TAP`, `IFF_VNET_HDR`.
///
/// # Errors
/// `EBADFD`/`EINVAL` when the fd is not an attached TUN/TAP fd.
pub fn tap_flags(fd: BorrowedFd<'_>) -> Result<libc::c_int, SysError> {
    // SAFETY: ifreq is plain data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    // SAFETY: TUNGETIFF writes one ifreq, which lives on our stack for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNGETIFF as _, &mut req) };
    if rc < 0 {
        return Err(last("TUNGETIFF"));
    }
    // SAFETY: TUNGETIFF filled the flags member of the union.
    Ok(libc::c_int::from(unsafe { req.ifr_ifru.ifru_flags }))
}

/// A socket used only as a handle for interface ioctls in the current network namespace.
pub struct IfCtl {
    sock: OwnedFd,
}

impl IfCtl {
    /// Opens the control socket in the calling thread's network namespace.
    ///
    /// # Errors
    /// Fails if an AF_INET datagram socket cannot be created.
    pub fn new() -> Result<Self, SysError> {
        // SAFETY: socket has no memory preconditions.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(last("socket(AF_INET)"));
        }
        // SAFETY: fd is fresh and exclusively ours.
        Ok(Self { sock: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    fn ioctl(&self, op: &str, name: &str, req: libc::c_ulong, ifr: &mut libc::ifreq) -> Result<(), SysError> {
        // SAFETY: every request used with this helper reads/writes exactly one ifreq.
        let rc = unsafe { libc::ioctl(self.sock.as_raw_fd(), req as _, ifr as *mut libc::ifreq) };
        if rc < 0 { Err(last(format!("{op} {name}"))) } else { Ok(()) }
    }

    /// Sets IFF_UP on the interface, keeping its other flags.
    ///
    /// # Errors
    /// Fails if the interface does not exist or the caller lacks CAP_NET_ADMIN.
    pub fn set_up(&self, name: &str) -> Result<(), SysError> {
        let mut ifr = ifreq_with_name(name)?;
        self.ioctl("SIOCGIFFLAGS", name, libc::SIOCGIFFLAGS, &mut ifr)?;
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        let flags = unsafe { ifr.ifr_ifru.ifru_flags };
        ifr.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        self.ioctl("SIOCSIFFLAGS", name, libc::SIOCSIFFLAGS, &mut ifr)
    }

    /// Sets the interface MTU.
    ///
    /// # Errors
    /// Fails if the kernel refuses the value or the interface.
    pub fn set_mtu(&self, name: &str, mtu: u32) -> Result<(), SysError> {
        let mut ifr = ifreq_with_name(name)?;
        ifr.ifr_ifru.ifru_mtu = mtu as libc::c_int;
        self.ioctl("SIOCSIFMTU", name, libc::SIOCSIFMTU, &mut ifr)
    }

    /// Sets the Ethernet address of the interface.
    ///
    /// # Errors
    /// Fails if the kernel refuses the address or the interface.
    pub fn set_mac(&self, name: &str, mac: [u8; 6]) -> Result<(), SysError> {
        let mut ifr = ifreq_with_name(name)?;
        // SAFETY: sockaddr is plain data; all-zero is valid.
        let mut sa: libc::sockaddr = unsafe { std::mem::zeroed() };
        sa.sa_family = libc::ARPHRD_ETHER;
        for (d, s) in sa.sa_data.iter_mut().zip(mac) {
            *d = s as libc::c_char;
        }
        ifr.ifr_ifru.ifru_hwaddr = sa;
        self.ioctl("SIOCSIFHWADDR", name, libc::SIOCSIFHWADDR, &mut ifr)
    }

    /// Reads the Ethernet address of the interface.
    ///
    /// # Errors
    /// Fails if the interface does not exist.
    pub fn mac(&self, name: &str) -> Result<[u8; 6], SysError> {
        let mut ifr = ifreq_with_name(name)?;
        self.ioctl("SIOCGIFHWADDR", name, libc::SIOCGIFHWADDR, &mut ifr)?;
        // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
        let sa = unsafe { ifr.ifr_ifru.ifru_hwaddr };
        let mut mac = [0u8; 6];
        for (d, s) in mac.iter_mut().zip(sa.sa_data) {
            *d = s as u8;
        }
        Ok(mac)
    }

    fn set_inet(&self, op: &str, req: libc::c_ulong, name: &str, addr: Ipv4Addr) -> Result<(), SysError> {
        let mut ifr = ifreq_with_name(name)?;
        ifr.ifr_ifru.ifru_addr = sockaddr_in(addr);
        self.ioctl(op, name, req, &mut ifr)
    }

    /// Assigns an IPv4 address and netmask to the interface.
    ///
    /// # Errors
    /// Fails if the kernel refuses either ioctl.
    pub fn set_ipv4(&self, name: &str, addr: Ipv4Addr, netmask: Ipv4Addr) -> Result<(), SysError> {
        self.set_inet("SIOCSIFADDR", libc::SIOCSIFADDR, name, addr)?;
        self.set_inet("SIOCSIFNETMASK", libc::SIOCSIFNETMASK, name, netmask)
    }

    /// Adds the IPv4 default route via `gateway`.
    ///
    /// # Errors
    /// Fails if the gateway is not reachable on a configured interface.
    pub fn add_default_route(&self, gateway: Ipv4Addr) -> Result<(), SysError> {
        // SAFETY: rtentry is plain data; all-zero is valid (null dev pointer = any device).
        let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
        rt.rt_dst = sockaddr_in(Ipv4Addr::UNSPECIFIED);
        rt.rt_genmask = sockaddr_in(Ipv4Addr::UNSPECIFIED);
        rt.rt_gateway = sockaddr_in(gateway);
        rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
        // SAFETY: SIOCADDRT reads one rtentry that lives on our stack for the call.
        let rc = unsafe { libc::ioctl(self.sock.as_raw_fd(), libc::SIOCADDRT as _, &mut rt) };
        if rc < 0 { Err(last(format!("SIOCADDRT default via {gateway}"))) } else { Ok(()) }
    }
}

/// `struct in6_rtmsg` of <linux/ipv6_route.h> (the libc crate keeps its fields private).
#[repr(C)]
struct In6Rtmsg {
    dst: [u8; 16],
    src: [u8; 16],
    gateway: [u8; 16],
    kind: u32,
    dst_len: u16,
    src_len: u16,
    metric: u32,
    info: libc::c_ulong,
    flags: u32,
    ifindex: libc::c_int,
}

/// An AF_INET6 socket for the IPv6 address and route ioctls (they take IPv6-specific
/// structures and must go to a socket of that family).
fn inet6_socket() -> Result<OwnedFd, SysError> {
    // SAFETY: socket has no memory preconditions.
    let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(last("socket(AF_INET6)"));
    }
    // SAFETY: fd is fresh and exclusively ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl IfCtl {
    /// The interface index.
    ///
    /// # Errors
    /// Fails if the interface does not exist.
    pub fn index(&self, name: &str) -> Result<libc::c_int, SysError> {
        let mut ifr = ifreq_with_name(name)?;
        self.ioctl("SIOCGIFINDEX", name, libc::SIOCGIFINDEX, &mut ifr)?;
        // SAFETY: SIOCGIFINDEX filled the ifindex member of the union.
        Ok(unsafe { ifr.ifr_ifru.ifru_ifindex })
    }

    /// Assigns an IPv6 address with its prefix length to the interface.
    ///
    /// # Errors
    /// Fails if IPv6 is disabled or the kernel refuses the address.
    pub fn add_ipv6(&self, name: &str, addr: Ipv6Addr, prefix_len: u8) -> Result<(), SysError> {
        let sock = inet6_socket()?;
        let req = libc::in6_ifreq {
            ifr6_addr: libc::in6_addr { s6_addr: addr.octets() },
            ifr6_prefixlen: u32::from(prefix_len),
            ifr6_ifindex: self.index(name)?,
        };
        // SAFETY: SIOCSIFADDR on an AF_INET6 socket reads one in6_ifreq that lives on our stack.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFADDR as _, &req) };
        if rc < 0 { Err(last(format!("SIOCSIFADDR {addr}/{prefix_len} on {name}"))) } else { Ok(()) }
    }

    /// Adds the IPv6 default route via `gateway` on the interface.
    ///
    /// # Errors
    /// Fails if the gateway is not on a configured prefix of the interface.
    pub fn add_default_route6(&self, name: &str, gateway: Ipv6Addr) -> Result<(), SysError> {
        let sock = inet6_socket()?;
        let rt = In6Rtmsg {
            dst: [0; 16],
            src: [0; 16],
            gateway: gateway.octets(),
            kind: 0,
            dst_len: 0,
            src_len: 0,
            metric: 1,
            info: 0,
            flags: u32::from(libc::RTF_UP | libc::RTF_GATEWAY),
            ifindex: self.index(name)?,
        };
        // SAFETY: SIOCADDRT on an AF_INET6 socket reads one in6_rtmsg that lives on our stack.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCADDRT as _, &rt) };
        if rc < 0 { Err(last(format!("SIOCADDRT default via {gateway} dev {name}"))) } else { Ok(()) }
    }
}

/// The path MTU a connected socket of the given family knows (`IP_MTU` / `IPV6_MTU`).
///
/// # Errors
/// Fails if the socket is not connected.
pub fn path_mtu(sock: BorrowedFd<'_>, v6: bool) -> io::Result<u32> {
    let (level, opt) = if v6 { (libc::IPPROTO_IPV6, libc::IPV6_MTU) } else { (libc::IPPROTO_IP, libc::IP_MTU) };
    let mut mtu: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `mtu`, which lives for the call.
    let rc = unsafe { libc::getsockopt(sock.as_raw_fd(), level, opt, (&raw mut mtu).cast(), &mut len) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(mtu as u32) }
}

/// Makes an IPv4 socket send its multicast datagrams on the interface with this index
/// (`IP_MULTICAST_IF` with an `ip_mreqn`: no address of the interface needed).
///
/// # Errors
/// What the kernel refused (`ENODEV` for an index that does not exist).
pub fn set_multicast_if_v4_index(sock: BorrowedFd<'_>, ifindex: u32) -> io::Result<()> {
    let req = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr { s_addr: 0 },
        imr_address: libc::in_addr { s_addr: 0 },
        imr_ifindex: ifindex as libc::c_int,
    };
    let len = std::mem::size_of::<libc::ip_mreqn>() as libc::socklen_t;
    // SAFETY: setsockopt reads `len` bytes from `req`, which lives for the call.
    let rc = unsafe {
        libc::setsockopt(sock.as_raw_fd(), libc::IPPROTO_IP, libc::IP_MULTICAST_IF, (&raw const req).cast(), len)
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Sends `data` on a UDP socket as datagrams of `size` bytes each (the last may be shorter) in
/// one call: UDP segmentation offload (`UDP_SEGMENT`), so the host stack is traversed once and
/// the receiving socket takes them in one go. `to` is the destination of an unconnected
/// socket (`None` on a connected one).
///
/// # Errors
/// What the kernel refused: `EINVAL` where a segment does not fit the path MTU or the kernel
/// lacks the option, `EAGAIN`/`ENOBUFS` when the socket buffer is full.
pub fn send_udp_segments(
    sock: BorrowedFd<'_>,
    to: Option<std::net::SocketAddr>,
    data: &[u8],
    size: u16,
) -> io::Result<usize> {
    let iov = [io::IoSlice::new(data)];
    let cmsg = [ControlMessage::UdpGsoSegments(&size)];
    let to = to.map(nix::sys::socket::SockaddrStorage::from);
    sendmsg(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_DONTWAIT, to.as_ref()).map_err(io::Error::from)
}

fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from(addr).to_be() },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size (16 bytes) and sockaddr is plain
    // data, so every bit pattern of sockaddr_in is a valid sockaddr.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// Fails unless the calling process has exactly one thread: `fork` and `clone` copy only the
/// calling thread, and the kernel refuses user-namespace operations in threaded processes.
fn ensure_single_threaded(op: &str) -> Result<(), SysError> {
    let threads = std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0);
    if threads == 1 {
        Ok(())
    } else {
        Err(SysError::Io {
            op: op.to_string(),
            err: io::Error::other(format!(
                "process has {threads} threads; namespace setup must run before any thread starts"
            )),
        })
    }
}

/// Forks the calling process into the new namespaces named by `flags` (`CLONE_NEW*`),
/// like `fork()` but with the child created inside them. Returns the child's pid in the
/// parent and 0 in the child.
///
/// # Errors
/// Fails when the process is multi-threaded, or when the kernel refuses the namespaces (user
/// namespaces disabled, limits reached).
pub fn clone_namespaces(flags: libc::c_int) -> Result<libc::pid_t, SysError> {
    ensure_single_threaded("clone(namespaces)")?;
    // SAFETY: with a null stack pointer the raw clone syscall behaves like fork(): the child
    // continues on a copy of the parent's stack. The process was just checked to be
    // single-threaded, so no lock held by another thread is copied in a locked state. SIGCHLD
    // makes the child reapable with waitpid like a forked one.
    let rc = unsafe {
        libc::syscall(libc::SYS_clone, (flags | libc::SIGCHLD) as libc::c_ulong, 0usize, 0usize, 0usize, 0usize)
    };
    if rc < 0 { Err(last("clone(namespaces)")) } else { Ok(rc as libc::pid_t) }
}

/// `fork()` of a single-threaded process.
///
/// # Errors
/// Fails when the process is multi-threaded or the process limit is reached.
pub fn fork() -> Result<libc::pid_t, SysError> {
    ensure_single_threaded("fork")?;
    // SAFETY: the process was just checked to be single-threaded, so the child's copy of the
    // address space is consistent.
    let rc = unsafe { libc::fork() };
    if rc < 0 { Err(last("fork")) } else { Ok(rc) }
}

/// Opens a pidfd for `pid` (readable once the process has exited).
///
/// # Errors
/// Fails if the process does not exist or pidfds are unsupported.
pub fn pidfd_open(pid: libc::pid_t) -> Result<OwnedFd, SysError> {
    // SAFETY: pidfd_open takes plain integers.
    let rc = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, libc::PIDFD_NONBLOCK) };
    if rc < 0 {
        return Err(last(format!("pidfd_open {pid}")));
    }
    // SAFETY: rc is a fresh fd returned by the kernel and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) })
}

/// Sends `fds` over the unix socket `sock` together with a small payload.
///
/// # Errors
/// Fails if the peer is gone.
pub fn send_fds(sock: BorrowedFd<'_>, payload: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), SysError> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let iov = [io::IoSlice::new(payload)];
    sendmsg::<()>(sock.as_raw_fd(), &iov, &[ControlMessage::ScmRights(&raw)], MsgFlags::empty(), None)
        .map_err(|e| nix_err("sendmsg(SCM_RIGHTS)", e))?;
    Ok(())
}

/// Receives a message and the fds passed with it (at most 128: a TAP's 16 queues, its
/// namespace's 4 socket tables, 32 `-T` listeners, 32 `-U` sockets and room to spare) from
/// `sock`.
///
/// # Errors
/// Fails if the socket read fails; `WouldBlock` on a non-blocking socket with nothing queued.
pub fn recv_fds(sock: BorrowedFd<'_>, buf: &mut [u8]) -> Result<(usize, Vec<OwnedFd>), SysError> {
    let mut space = nix::cmsg_space!([RawFd; 128]);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(|e| nix_err("recvmsg(SCM_RIGHTS)", e))?;
    let n = msg.bytes;
    let mut got = Vec::new();
    for c in msg.cmsgs().map_err(|e| nix_err("recvmsg cmsgs", e))? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for raw in fds {
                // SAFETY: SCM_RIGHTS installed these fds in our table for us alone.
                got.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
    }
    Ok((n, got))
}

/// A signal as delivered by `sigwaitinfo`: number, sender's `si_code`.
#[derive(Debug, Clone, Copy)]
pub struct SigInfo {
    /// Signal number.
    pub signo: libc::c_int,
    /// `si_code`: `SI_KERNEL` for terminal-generated signals, `SI_USER` for `kill()`.
    pub code: libc::c_int,
}

/// Waits for one of the (blocked) signals in `set`.
///
/// # Errors
/// Fails on EINTR (a signal not in the set was handled) or a bad set.
pub fn sigwaitinfo(set: &nix::sys::signal::SigSet) -> Result<SigInfo, SysError> {
    // SAFETY: siginfo_t is plain data; all-zero is valid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: set points to a valid sigset_t and info to writable storage for the call.
    let rc = unsafe { libc::sigwaitinfo(set.as_ref(), &mut info) };
    if rc < 0 {
        return Err(last("sigwaitinfo"));
    }
    Ok(SigInfo { signo: rc, code: info.si_code })
}

/// Replaces the process image with `argv[0]` found on `PATH`; returns only on failure.
pub fn execvp(argv: &[std::ffi::CString]) -> io::Error {
    let args: Vec<&CStr> = argv.iter().map(|a| a.as_c_str()).collect();
    match nix::unistd::execvp(args[0], &args) {
        Ok(never) => match never {},
        Err(e) => io::Error::from(e),
    }
}

/// `_exit(2)`: leaves without running atexit handlers or flushing stdio, as a forked child
/// must.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions and never returns.
    unsafe { libc::_exit(code) }
}

/// Whether `fd` refers to a terminal.
pub fn isatty(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: isatty only inspects the fd number.
    unsafe { libc::isatty(fd.as_raw_fd()) == 1 }
}

/// Registers an owned fd with the tokio reactor (must run inside a runtime).
///
/// # Errors
/// Fails if the reactor refuses the fd.
pub fn async_fd(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd keeps its fd open and unchanged until it is dropped, and the AsyncFd
    // owns it for its whole lifetime.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

/// Registers an owned socket with the tokio reactor (must run inside a runtime).
///
/// # Errors
/// Fails if the reactor refuses the fd.
pub fn async_socket(s: socket2::Socket) -> io::Result<tokio::io::unix::AsyncFd<socket2::Socket>> {
    // SAFETY: a socket2::Socket owns its fd, keeps it open and unchanged until dropped, and the
    // AsyncFd owns the socket for its whole lifetime.
    unsafe { tokio::io::unix::AsyncFd::register(s) }.map_err(|e| e.into_parts().1)
}

/// Makes glibc's malloc serve every allocation of 128 KiB or more (TCP buffers) with its own
/// mmap, always: freed buffers go back to the system at once, and a new buffer is fresh zero
/// pages that cost nothing until touched. (glibc's default raises this threshold after the
/// first such free, after which 1 MiB buffers come from the heap, are memset by calloc, and
/// stay resident after the flow is gone.)
pub fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator parameters; called before threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// The addresses of the network interface `name` in this namespace (none when it does not
/// exist or the kernel cannot list them).
pub fn interface_addresses(name: &str) -> Vec<std::net::IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    addrs
        .filter(|ifa| ifa.interface_name == name)
        .filter_map(|ifa| {
            let a = ifa.address?;
            a.as_sockaddr_in()
                .map(|s| std::net::IpAddr::V4(s.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|s| std::net::IpAddr::V6(s.ip())))
        })
        .collect()
}

/// Whether this host has IPv6 sockets at all (not when booted with `ipv6.disable=1`), asked
/// once per process.
pub fn ipv6_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
        socket(AddressFamily::Inet6, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None).is_ok()
    })
}

/// Raises the soft limit of open files to the hard limit: every NAT flow holds a host socket,
/// and the usual soft limit of 1024 would cap warren near a thousand flows.
pub fn raise_nofile_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// A listening `SOCK_SEQPACKET` unix socket at `path` (mode from the umask; callers put it
/// in a 0700 directory), non-blocking.
///
/// # Errors
/// Fails if the path is taken or too long.
pub fn seqpacket_listen(path: &std::path::Path) -> Result<OwnedFd, SysError> {
    use nix::sys::socket::{AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, listen, socket};
    let fd = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)
        .map_err(|e| nix_err("socket(SOCK_SEQPACKET)", e))?;
    let addr = UnixAddr::new(path).map_err(|e| nix_err(format!("socket path {}", path.display()), e))?;
    bind(fd.as_raw_fd(), &addr).map_err(|e| nix_err(format!("bind {}", path.display()), e))?;
    listen(&fd, Backlog::new(64).unwrap_or(Backlog::MAXCONN)).map_err(|e| nix_err("listen", e))?;
    Ok(fd)
}

/// Accepts a connection on a seqpacket listener (non-blocking, close-on-exec).
///
/// # Errors
/// `EAGAIN` when none is pending.
pub fn seqpacket_accept(listener: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    use nix::sys::socket::{SockFlag, accept4};
    let raw =
        accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK).map_err(io::Error::from)?;
    // SAFETY: accept4 returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The uid of the process at the other end of a unix socket (`SO_PEERCRED`).
pub fn peer_uid(sock: BorrowedFd<'_>) -> Option<u32> {
    nix::sys::socket::getsockopt(&sock, nix::sys::socket::sockopt::PeerCredentials).ok().map(|c| c.uid())
}

/// Connects a blocking `SOCK_SEQPACKET` socket to `path`.
///
/// # Errors
/// `ENOENT`/`ECONNREFUSED` when nobody listens there.
pub fn seqpacket_connect(path: &std::path::Path) -> io::Result<OwnedFd> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
    let fd = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None).map_err(io::Error::from)?;
    let addr = UnixAddr::new(path).map_err(io::Error::from)?;
    connect(fd.as_raw_fd(), &addr).map_err(io::Error::from)?;
    Ok(fd)
}

/// A non-blocking pipe for `splice(2)`: (read end, write end), of the default size (64 KiB).
///
/// # Errors
/// Fails if the fd limit is reached.
pub fn splice_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?)
}

/// Grows the pipe of `fd` to `size` bytes; returns its size afterwards.
///
/// # Errors
/// Beyond `fs.pipe-max-size`, or while this user's pipes hold more than
/// `fs.pipe-user-pages-soft`, an unprivileged caller is refused (`EPERM`); the pipe keeps its size.
pub fn grow_pipe(fd: BorrowedFd<'_>, size: usize) -> io::Result<usize> {
    let n = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(size as libc::c_int))?;
    Ok(n as usize)
}

/// Moves up to `len` bytes from `from` to `to` inside the kernel, one of them a pipe
/// (`splice(2)` with `SPLICE_F_MOVE | SPLICE_F_NONBLOCK`); `WouldBlock` when nothing can move.
///
/// # Errors
/// The OS error, e.g. `ECONNRESET` from a socket.
pub fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    // SAFETY: both fds are valid for the call (borrowed); null offsets mean "the current
    // position", the only kind sockets and pipes take.
    let rc = unsafe {
        libc::splice(
            from.as_raw_fd(),
            std::ptr::null_mut(),
            to.as_raw_fd(),
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc as usize) }
}

/// Tells the service manager that started this process that it is ready (systemd's
/// `sd_notify("READY=1")`): one datagram to the unix socket `$NOTIFY_SOCKET` names (a path,
/// or an abstract name after `@`). False when the variable is not set.
///
/// # Errors
/// If the socket cannot be reached.
pub fn notify_ready() -> io::Result<bool> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else { return Ok(false) };
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str());
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(name)?,
        None => std::os::unix::net::SocketAddr::from_pathname(std::path::Path::new(&target))?,
    };
    sock.send_to_addr(b"READY=1", &addr)?;
    Ok(true)
}

/// Takes ownership of an fd number the parent process handed over (`--ready-fd 3`), after
/// checking that it is open.
///
/// # Errors
/// `EBADF` if no such fd is open.
pub fn adopt_inherited_fd(raw: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl(F_GETFD) only queries the fd table entry.
    if unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the fd is open (checked above), and by the command-line contract it was passed
    // to this process for its exclusive use (like stdin), so owning and closing it is sound.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Keeps only capability `keep` (e.g. `CAP_NET_BIND_SERVICE`): drops every other one from the
/// bounding set, clears the ambient set, and sets effective, permitted and inheritable to `keep`.
///
/// # Errors
/// If `capset` fails (dropping from the bounding set needs CAP_SETPCAP and is best effort).
pub fn keep_only_capability(keep: u32) -> Result<(), SysError> {
    const PR_CAPBSET_DROP: libc::c_int = 24;
    const PR_CAP_AMBIENT: libc::c_int = 47;
    const PR_CAP_AMBIENT_CLEAR_ALL: libc::c_ulong = 4;
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    for cap in 0..64u32 {
        if cap != keep {
            // SAFETY: prctl with integer arguments only; EINVAL past the last capability.
            unsafe { libc::prctl(PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        }
    }
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) };
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let bit = if keep < 32 { 1u32 << keep } else { 0 };
    let mut hdr = Header { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let data =
        [Data { effective: bit, permitted: bit, inheritable: 0 }, Data { effective: 0, permitted: 0, inheritable: 0 }];
    // SAFETY: capset reads one header and two data structs (version 3), both valid for the call.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut Header, data.as_ptr()) };
    if rc < 0 { Err(last("capset")) } else { Ok(()) }
}

/// The number of runnable threads on the whole machine, as `/proc/loadavg` shows it at this
/// instant (its fourth field, `running/total`). The file stays open: each sample is one
/// `pread`.
#[derive(Debug)]
pub struct RunnableThreads {
    file: std::fs::File,
}

impl RunnableThreads {
    /// Opens `/proc/loadavg`.
    ///
    /// # Errors
    /// If procfs is not mounted or not readable.
    pub fn open() -> io::Result<Self> {
        Ok(Self { file: std::fs::File::open("/proc/loadavg")? })
    }

    /// Runnable threads now (the caller among them), if the file reads as expected.
    pub fn sample(&self) -> Option<u32> {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 128];
        let n = self.file.read_at(&mut buf, 0).ok()?;
        parse_runnable(&buf[..n])
    }
}

/// The `running` of `/proc/loadavg`'s `0.52 0.58 0.59 3/467 12345`.
fn parse_runnable(text: &[u8]) -> Option<u32> {
    let field = std::str::from_utf8(text).ok()?.split_ascii_whitespace().nth(3)?;
    field.split_once('/')?.0.parse().ok()
}

#[cfg(test)]
mod runnable_tests {
    use super::*;

    #[test]
    fn loadavg_running_field() {
        assert_eq!(parse_runnable(b"0.52 0.58 0.59 3/467 12345\n"), Some(3));
        assert_eq!(parse_runnable(b"0.00 0.00 0.00 1/80 7"), Some(1));
        assert_eq!(parse_runnable(b"0.52 0.58 0.59"), None);
        assert_eq!(parse_runnable(b"0.52 0.58 0.59 x/467 1"), None);
        let live = RunnableThreads::open().unwrap().sample().unwrap();
        assert!(live >= 1, "the test itself runs: {live}");
    }
}
