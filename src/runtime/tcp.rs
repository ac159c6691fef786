//! One NATed TCP connection: a smoltcp socket facing the container, a kernel socket facing the
//! destination, and the relay between their buffers.
//!
//! Each flow has its own smoltcp `Interface` and one-socket `SocketSet`, found through the
//! dataplane's hash map, so every packet and every poll is O(1) in the number of flows
//! (smoltcp scans its socket set linearly). Bytes move without intermediate copies: the host
//! socket reads straight into the smoltcp transmit ring and writes straight from the receive
//! ring.
//!
//! Connect-then-accept: the SYN creates the socket in `listen` with the SYN-ACK paused; the
//! container sees the handshake complete only once the host `connect()` succeeded. A refused
//! connect becomes an RST, an unreachable one an ICMP error, as a real network would answer.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpCidr, IpEndpoint};
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::FlowKey;
use super::device::{FlowDevice, TxSink};
use super::queues::Slot;
use crate::gateway::TcpSeg;
use crate::wire::{self, IPV6_LEN, Unreachable};

/// Receive and transmit buffer of each smoltcp socket while the buffer budget is less than
/// half used. Memory is allocated zeroed (calloc), so an idle connection only costs the pages
/// it has touched; a busy one can touch all of it, which is what the budget bounds.
pub const TCP_BUFFER: usize = 1 << 20;
/// Per-direction buffer of flows opened while the budget is between half and three quarters used.
pub const TCP_BUFFER_MID: usize = 256 << 10;
/// Per-direction buffer of flows opened in the last quarter of the budget.
pub const TCP_BUFFER_MIN: usize = 32 << 10;

/// The TCP buffer memory and flow count of one container (all its data-path threads): every
/// flow reserves its receive and transmit buffers here when it opens and returns them when it
/// goes (its [`BufferLease`] drops). New flows get smaller buffers as the budget fills; when
/// not even the smallest fit, or `--max-tcp-flows` are open, the flow is refused. The sum of
/// all buffers, hence of what flows can ever hold, stays within the budget.
#[derive(Debug, Clone)]
pub struct BufferPool {
    used: Arc<AtomicUsize>,
    flows: Arc<AtomicUsize>,
    budget: usize,
    max_flows: usize,
}

impl BufferPool {
    /// A pool of `budget` bytes for at most `max_flows` flows.
    pub fn new(budget: usize, max_flows: usize) -> Self {
        Self { used: Arc::new(AtomicUsize::new(0)), flows: Arc::new(AtomicUsize::new(0)), budget, max_flows }
    }

    /// Bytes reserved by open flows.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Reserves the buffers of a new flow, or `None` when the flow limit is reached or the
    /// budget cannot hold them.
    pub fn lease(&self) -> Option<BufferLease> {
        // Given back by dropping it if the budget cannot hold the buffers.
        let slot = Slot::take(&self.flows, self.max_flows)?;
        let used = self.used();
        let size = if used < self.budget / 2 {
            TCP_BUFFER
        } else if used < self.budget / 4 * 3 {
            TCP_BUFFER_MID
        } else {
            TCP_BUFFER_MIN
        };
        // Tiers are tried from the chosen one down: a small budget still admits small flows.
        let size = [TCP_BUFFER, TCP_BUFFER_MID, TCP_BUFFER_MIN]
            .into_iter()
            .filter(|&s| s <= size)
            .find(|&s| used + 2 * s <= self.budget)?;
        self.used.fetch_add(2 * size, Ordering::Relaxed);
        Some(BufferLease { used: self.used.clone(), _slot: slot, size })
    }
}

/// The buffers (and the place in the flow limit) one flow reserved from its [`BufferPool`];
/// given back on drop.
#[derive(Debug)]
pub struct BufferLease {
    used: Arc<AtomicUsize>,
    _slot: Slot,
    /// Bytes per direction.
    pub size: usize,
}

impl Drop for BufferLease {
    fn drop(&mut self) {
        self.used.fetch_sub(2 * self.size, Ordering::Relaxed);
    }
}
/// How long the container's SYN waits for the host connect before an ICMP host-unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(75);

/// The stack of a finished short flow, kept to serve a later one: its smoltcp interface and
/// socket, whose buffers' few touched pages stay mapped. A new flow on a spare skips the
/// interface set-up, the two buffer mmaps, their page faults and, when it ends, the munmaps:
/// together most of what opening and closing a NATed connection costs warren.
pub struct Spare {
    iface: Interface,
    sockets: SocketSet<'static>,
    handle: SocketHandle,
    /// Bytes per direction of its buffers (a [`BufferLease`] size).
    pub size: usize,
}

/// A flow that relayed at most this many bytes (both ways) leaves its stack as a [`Spare`]:
/// its buffers have few pages touched, so keeping them costs little memory.
const SPARE_MAX_BYTES: u64 = 64 << 10;

/// The container's first data segments of a flow that are acknowledged at once whatever their
/// size (as a kernel's quick-ACK mode does): its slow start never waits for a delayed ACK.
pub const QUICK_ACKS: u8 = 16;
/// Past the first [`QUICK_ACKS`], a segment carrying at least this much (bulk data) has its
/// acknowledgement delayed by up to [`ACK_DELAY`]; a smaller one (a request, the tail of a
/// write) is acknowledged at once, so a sender holding small writes back until its last small
/// segment is acknowledged (Nagle) never stalls.
pub const BULK_SEGMENT: u32 = 1024;
/// How long the acknowledgement of bulk data may wait for a second segment to cover; the
/// stack acknowledges at once when a full segment's worth is unacknowledged. Halves the ACK
/// frames of a bulk upload: each is a TAP write that runs the container's TCP on warren's time.
pub const ACK_DELAY: smoltcp::time::Duration = smoltcp::time::Duration::from_millis(1);

/// The delayed-ACK setting for a data segment of `seg_len` from the container, with
/// `quick_left` quick acknowledgements left (this one would take one) and receive buffers of
/// `buffer` bytes. Delaying needs buffers of at least four of the largest segments: the stack
/// acknowledges early only once more than one segment's worth is unacknowledged, so the
/// sender must be able to have two in flight even while part of the buffer is still occupied;
/// with a smaller window every round trip would wait the whole delay.
fn ack_delay(quick_left: u8, seg_len: u32, buffer: usize) -> Option<smoltcp::time::Duration> {
    let window_holds_two = buffer >= 4 * usize::from(u16::MAX);
    (quick_left == 0 && seg_len >= BULK_SEGMENT && window_holds_two).then_some(ACK_DELAY)
}

/// What the dataplane must do after servicing a flow.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Keep the flow.
    Keep,
    /// The flow is finished: remove it.
    Remove,
    /// The host connect failed this way: send this ICMP error quoting the SYN, then remove.
    Unreachable(Unreachable),
}

/// A NATed TCP flow.
pub struct TcpFlow {
    iface: Interface,
    sockets: SocketSet<'static>,
    handle: SocketHandle,
    host: TcpStream,
    waker: Waker,
    connected: bool,
    host_eof: bool,
    host_shut: bool,
    created: Instant,
    /// Copy of the SYN's IP header and first payload bytes, quoted in ICMP errors.
    pub syn_quote: Vec<u8>,
    /// The smoltcp deadline last put on the dataplane's timer heap.
    pub scheduled: Option<Instant>,
    /// Fed segments of the current TAP read batch; serviced when the batch ends.
    pub pending: bool,
    /// Bytes relayed container -> host.
    pub bytes_out: u64,
    /// Bytes relayed host -> container.
    pub bytes_in: u64,
    /// Where a published-port connection goes if the container refuses it (IPv4 behind an
    /// IPv6 default).
    pub fallback: Option<std::net::SocketAddr>,
    /// Whether the connection with the container was ever established.
    established: bool,
    /// The stack took the container's SYN (it answers or will answer with a SYN-ACK).
    syn_taken: bool,
    /// An outbound flow whose host connect is still counted as a handshake in flight.
    pub in_handshake: bool,
    /// The MSS the container announced when it is smaller than what the stack may send: the
    /// stack was told a larger one and its bigger segments go out as GSO frames of this size.
    gso_mss: u16,
    /// Data segments from the container still acknowledged at once (see [`ack_delay`]).
    quick_acks: u8,
    /// Its share of the buffer budget (returned when the flow is dropped).
    _buffers: BufferLease,
    /// A connection to the DNS forwarder while `--dns-route` may still move it: see
    /// [`TcpFlow::route_dns`].
    dns_route: Option<Box<DnsRoute>>,
}

/// What a TCP connection to the DNS forwarder needs to follow `--dns-route`.
pub struct DnsRoute {
    /// The routes.
    pub routes: std::sync::Arc<[crate::dns::Route]>,
    /// Which servers failed lately (UDP queries tell).
    pub health: crate::dns::Health,
    /// The outbound source addresses, as for every host socket.
    pub outbound: (Option<std::net::Ipv4Addr>, Option<std::net::Ipv6Addr>),
}

/// Converts wall time since `epoch` into smoltcp's clock.
pub fn stack_time(epoch: Instant, now: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(now.saturating_duration_since(epoch).as_micros() as i64)
}

impl TcpFlow {
    /// Creates the flow for a container SYN already known to be valid. `host` is a kernel
    /// socket with its non-blocking connect in progress.
    #[allow(clippy::too_many_arguments)]
    pub fn outbound(
        key: &FlowKey,
        gateways: &[IpCidr],
        host: TcpStream,
        waker: Waker,
        tx: &mut TxSink,
        mtu: usize,
        seed: u64,
        now: Instant,
        stamp: smoltcp::time::Instant,
        syn_ip: &[u8],
        buffers: BufferLease,
        spare: Option<Spare>,
    ) -> Self {
        let mut flow = Self::build(gateways, host, waker, tx, mtu, seed, now, stamp, buffers, spare);
        let sock = flow.socket();
        sock.pause_synack(true);
        // Cannot fail: the endpoint has a specified port (the SYN's, never 0 past the classifier).
        let _ = sock.listen(IpEndpoint::new(key.dst.ip().into(), key.dst.port()));
        flow.syn_quote = syn_ip[..syn_ip.len().min(128)].to_vec();
        flow.in_handshake = true;
        flow
    }

    /// Creates the flow of a published-port connection: the stack connects to the container
    /// (`key.src`) *from* `key.dst`, the client's own address when it can be kept.
    ///
    /// # Errors
    /// If smoltcp refuses the endpoints (unspecified address or port 0).
    #[allow(clippy::too_many_arguments)]
    pub fn inbound(
        key: &FlowKey,
        gateways: &[IpCidr],
        host: TcpStream,
        waker: Waker,
        tx: &mut TxSink,
        mtu: usize,
        seed: u64,
        now: Instant,
        stamp: smoltcp::time::Instant,
        buffers: BufferLease,
        spare: Option<Spare>,
    ) -> Result<Self, tcp::ConnectError> {
        let mut flow = Self::build(gateways, host, waker, tx, mtu, seed, now, stamp, buffers, spare);
        flow.connected = true;
        let remote = IpEndpoint::new(key.src.ip().into(), key.src.port());
        let local = IpEndpoint::new(key.dst.ip().into(), key.dst.port());
        let sock = flow.sockets.get_mut::<tcp::Socket>(flow.handle);
        sock.connect(flow.iface.context(), remote, local)?;
        Ok(flow)
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        gateways: &[IpCidr],
        host: TcpStream,
        waker: Waker,
        tx: &mut TxSink,
        mtu: usize,
        seed: u64,
        now: Instant,
        stamp: smoltcp::time::Instant,
        buffers: BufferLease,
        spare: Option<Spare>,
    ) -> Self {
        let (iface, sockets, handle) = match spare {
            Some(Spare { iface, mut sockets, handle, size }) if size == buffers.size => {
                // listen()/connect() reset the rest of the socket's state.
                let sock = sockets.get_mut::<tcp::Socket>(handle);
                sock.pause_synack(false);
                sock.set_ack_delay(None);
                (iface, sockets, handle)
            }
            _ => {
                let mut dev = FlowDevice { rx: None, tx, mtu, gso: 0 };
                let mut config = Config::new(HardwareAddress::Ip);
                config.random_seed = seed;
                let mut iface = Interface::new(config, &mut dev, stamp);
                iface.update_ip_addrs(|a| {
                    for g in gateways {
                        let _ = a.push(*g);
                    }
                });
                iface.set_any_ip(true);
                let mut sock = tcp::Socket::new(
                    tcp::SocketBuffer::new(vec![0u8; buffers.size]),
                    tcp::SocketBuffer::new(vec![0u8; buffers.size]),
                );
                sock.set_nagle_enabled(false);
                sock.set_ack_delay(None);
                let mut sockets = SocketSet::new(Vec::with_capacity(1));
                let handle = sockets.add(sock);
                (iface, sockets, handle)
            }
        };
        Self {
            iface,
            sockets,
            handle,
            host,
            waker,
            connected: false,
            host_eof: false,
            host_shut: false,
            created: now,
            syn_quote: Vec::new(),
            scheduled: None,
            pending: false,
            bytes_out: 0,
            bytes_in: 0,
            fallback: None,
            established: false,
            syn_taken: false,
            in_handshake: false,
            gso_mss: 0,
            quick_acks: QUICK_ACKS,
            _buffers: buffers,
            dns_route: None,
        }
    }

    /// Makes an outbound flow to the DNS forwarder (its host side connecting to the default
    /// upstream) follow `--dns-route`: nothing goes to the host until the first query's
    /// question has arrived; a name in a route's domain then moves the host side to that
    /// route's server, before any byte is written.
    pub fn route_dns(&mut self, route: DnsRoute) {
        self.dns_route = Some(Box::new(route));
    }

    /// For a flow following `--dns-route`: once the first query's question is in, connects
    /// the host side to its route's server if it has one. False while the question is still
    /// incomplete (nothing may be written to the host yet).
    fn route_first_query(&mut self, now: Instant) -> bool {
        let Some(route) = self.dns_route.as_ref() else { return true };
        let sock = self.sockets.get_mut::<tcp::Socket>(self.handle);
        let mut first = [0u8; 2 + 12 + 256 + 4];
        let n = sock.peek_slice(&mut first).unwrap_or(0);
        // Until the container's stream ends (its handshake may not even be done yet).
        let ended = matches!(
            sock.state(),
            tcp::State::CloseWait
                | tcp::State::LastAck
                | tcp::State::Closing
                | tcp::State::TimeWait
                | tcp::State::Closed
        );
        let name = match crate::dns::tcp_question(&first[..n]) {
            crate::dns::TcpQuestion::Incomplete if !ended => return false,
            crate::dns::TcpQuestion::Name(name) => Some(name),
            _ => None,
        };
        let server = name.as_deref().and_then(|n| crate::dns::route_server(&route.routes, n, &route.health, now));
        if let Some(server) = server
            && self.host.peer_addr().ok() != Some(server)
        {
            match super::connect_nonblocking(server, route.outbound.0, route.outbound.1) {
                Ok(host) => {
                    tracing::debug!(name = name.as_deref().unwrap_or_default(), %server, "DNS over TCP: routed");
                    self.host = host;
                }
                Err(e) => {
                    tracing::debug!(%server, error = %e, "DNS over TCP: the route's server refused at once");
                    route.health.failed(server, now);
                    self.socket().abort();
                    self.host_shut = true;
                    self.host_eof = true;
                }
            }
        }
        self.dns_route = None;
        true
    }

    /// Feeds one IP packet of this flow from the container into its stack; `seg` is what the
    /// classifier read of it.
    ///
    /// The container's SYN (or SYN-ACK) announces an MSS cut to its interface MTU. Where the
    /// TAP takes GSO frames and `mtu` (the stack's) is larger, the stack is shown a SYN
    /// announcing the larger MSS and remembers the real one: it then sends segments of up to
    /// 64 KiB, each written as one GSO frame, the way a kernel sends over a TSO device.
    ///
    /// The sequence space it uses decides how it is acknowledged (`ack_delay`).
    pub fn ingress(&mut self, pkt: &[u8], seg: &TcpSeg, tx: &mut TxSink, mtu: usize, stamp: smoltcp::time::Instant) {
        if !seg.syn && seg.seg_len > 0 {
            let delay = ack_delay(self.quick_acks, seg.seg_len, self._buffers.size);
            self.quick_acks = self.quick_acks.saturating_sub(1);
            // Turned off while a delayed ACK is pending, the stack still sends it when due.
            self.socket().set_ack_delay(delay);
        }
        if seg.syn && tx.vnet && pkt.len() <= SYN_COPY {
            let mut copy = [0u8; SYN_COPY];
            let copy = &mut copy[..pkt.len()];
            copy.copy_from_slice(pkt);
            let big = mtu.saturating_sub(IPV6_LEN + 20).min(usize::from(u16::MAX)) as u16;
            if let Some(mss) = wire::rewrite_syn_mss(copy, big)
                && mss < big
            {
                self.gso_mss = mss;
                return self.feed(copy, tx, mtu, stamp);
            }
        }
        self.feed(pkt, tx, mtu, stamp);
    }

    /// Ingress only: what the stack sends in return (ACKs, data the window now lets out)
    /// waits for [`TcpFlow::service`], so a batch of segments gets one answer.
    fn feed(&mut self, pkt: &[u8], tx: &mut TxSink, mtu: usize, stamp: smoltcp::time::Instant) {
        let mut dev = FlowDevice { rx: Some(pkt), tx, mtu, gso: self.gso_mss };
        self.iface.poll_ingress_single(stamp, &mut dev, &mut self.sockets);
    }

    /// The next time the flow needs servicing without new input: smoltcp's timers
    /// (retransmission and similar) once connected, the connect timeout before. Never earlier
    /// than 1 ms from `now`: smoltcp answers "now" for a paused SYN-ACK and for a window it
    /// cannot fill yet, and a timer that is always due would starve the reactor.
    pub fn poll_at(&mut self, epoch: Instant, now: Instant, stamp: smoltcp::time::Instant) -> Option<Instant> {
        if !self.connected {
            return Some(self.created + CONNECT_TIMEOUT);
        }
        let at = self.iface.poll_at(stamp, &self.sockets)?;
        let t = epoch + Duration::from_micros(at.total_micros().max(0) as u64);
        Some(t.max(now + Duration::from_millis(1)))
    }

    /// Moves bytes both ways as far as buffers and sockets allow, drives the stack, and says
    /// whether the flow lives on.
    pub fn service(&mut self, tx: &mut TxSink, mtu: usize, now: Instant, stamp: smoltcp::time::Instant) -> Verdict {
        let waker = self.waker.clone();
        let mut cx = Context::from_waker(&waker);
        if !self.connected {
            match self.host.poll_write_ready(&mut cx) {
                Poll::Pending => {
                    if now.duration_since(self.created) >= CONNECT_TIMEOUT {
                        return Verdict::Unreachable(Unreachable::Host);
                    }
                    let mut dev = FlowDevice { rx: None, tx, mtu, gso: self.gso_mss };
                    self.iface.poll(stamp, &mut dev, &mut self.sockets);
                    // The container may have given up (RST) while we were connecting.
                    return self.verdict();
                }
                Poll::Ready(r) => {
                    let err = match r {
                        Ok(()) => self.host.take_error().unwrap_or_else(Some),
                        Err(e) => Some(e),
                    };
                    if let Some(e) = err {
                        tracing::debug!(error = %e, "host connect failed");
                        match connect_failure(&e) {
                            Some(code) => return Verdict::Unreachable(code),
                            None => self.socket().abort(),
                        }
                    } else {
                        tracing::debug!(after = ?now.duration_since(self.created), "host connected");
                        self.connected = true;
                        self.socket().pause_synack(false);
                    }
                }
            }
        }
        for _ in 0..64 {
            let mut progress = false;
            if self.connected && self.route_first_query(now) {
                progress |= self.container_to_host(&mut cx);
                progress |= self.host_to_container(&mut cx);
            }
            let mut dev = FlowDevice { rx: None, tx, mtu, gso: self.gso_mss };
            let changed = self.iface.poll(stamp, &mut dev, &mut self.sockets);
            progress |= changed == smoltcp::iface::PollResult::SocketStateChanged;
            if !progress {
                break;
            }
        }
        self.verdict()
    }

    /// Whether the host connect has completed.
    pub fn connected(&self) -> bool {
        self.connected
    }

    /// When the flow started.
    pub fn created(&self) -> Instant {
        self.created
    }

    /// The host side's peer (destination, or the client of a published port).
    pub fn host_peer(&self) -> Option<std::net::SocketAddr> {
        self.host.peer_addr().ok()
    }

    fn socket(&mut self) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(self.handle)
    }

    /// Drains the smoltcp receive buffer into the host socket. Returns whether bytes moved.
    fn container_to_host(&mut self, cx: &mut Context<'_>) -> bool {
        let mut moved = false;
        let sock = self.sockets.get_mut::<tcp::Socket>(self.handle);
        while !self.host_shut && sock.can_recv() {
            let host = &self.host;
            match sock.recv(|buf| match host.try_write(buf) {
                Ok(n) => (n, Ok((n, buf.len()))),
                Err(e) => (0, Err(e)),
            }) {
                Ok(Ok((n, offered))) => {
                    self.bytes_out += n as u64;
                    moved = true;
                    if n < offered {
                        // A short write filled the socket's buffer: the next try is refused
                        // without a syscall and waits for the reactor (the arm below).
                        drained(&self.host, Interest::WRITABLE);
                    }
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.host.poll_write_ready(cx).is_pending() {
                        return moved;
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "host write failed: resetting the container side");
                    sock.abort();
                    self.host_shut = true;
                    self.host_eof = true;
                    return true;
                }
                Err(_) => break,
            }
        }
        // The container closed its sending side (FIN, not RST) and everything it sent was
        // delivered: pass the half-close on.
        let fin_received = matches!(
            sock.state(),
            tcp::State::CloseWait | tcp::State::LastAck | tcp::State::Closing | tcp::State::TimeWait
        );
        if !self.host_shut && fin_received && sock.recv_queue() == 0 {
            let _ = self.host_shutdown_write();
            self.host_shut = true;
            moved = true;
        }
        moved
    }

    fn host_shutdown_write(&self) -> io::Result<()> {
        socket2::SockRef::from(&self.host).shutdown(std::net::Shutdown::Write)
    }

    /// Fills the smoltcp transmit buffer from the host socket. Returns whether bytes moved.
    fn host_to_container(&mut self, cx: &mut Context<'_>) -> bool {
        let mut moved = false;
        let sock = self.sockets.get_mut::<tcp::Socket>(self.handle);
        while !self.host_eof && sock.can_send() {
            let host = &self.host;
            match sock.send(|buf| match host.try_read(buf) {
                Ok(n) => (n, Ok((n, buf.len()))),
                Err(e) => (0, Err(e)),
            }) {
                Ok(Ok((0, _))) => {
                    self.host_eof = true;
                    sock.close();
                    return true;
                }
                Ok(Ok((n, asked))) => {
                    self.bytes_in += n as u64;
                    moved = true;
                    if n < asked {
                        // A short read emptied the socket: the next try is refused without a
                        // syscall and waits for the reactor (the arm below).
                        drained(&self.host, Interest::READABLE);
                    }
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.host.poll_read_ready(cx).is_pending() {
                        return moved;
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "host read failed: resetting the container side");
                    sock.abort();
                    self.host_eof = true;
                    self.host_shut = true;
                    return true;
                }
                Err(_) => break,
            }
        }
        // With the transmit buffer full no read interest is registered: room appears only
        // when the container acknowledges, and its ACK services this flow.
        moved
    }

    /// Whether the container refused the connection (reset before it was established).
    pub fn refused(&self) -> bool {
        !self.established && self.sockets.get::<tcp::Socket>(self.handle).state() == tcp::State::Closed
    }

    /// The flow's stack as a [`Spare`] for a later flow, if the flow moved little (its
    /// buffers have few pages touched) and left nothing unread in them. The host socket
    /// closes as when the flow is dropped.
    pub fn into_spare(mut self) -> Option<Spare> {
        let moved = self.bytes_in + self.bytes_out;
        let sock = self.socket();
        if moved > SPARE_MAX_BYTES || sock.recv_queue() != 0 || sock.send_queue() != 0 {
            return None;
        }
        sock.abort();
        Some(Spare { iface: self.iface, sockets: self.sockets, handle: self.handle, size: self._buffers.size })
    }

    /// The stack is done with the connection: closed, or back in LISTEN after the container
    /// reset a handshake it had taken. The flow leaves at its next service.
    pub fn stack_closed(&self) -> bool {
        match self.sockets.get::<tcp::Socket>(self.handle).state() {
            tcp::State::Closed => true,
            tcp::State::Listen => self.syn_taken,
            _ => false,
        }
    }

    /// Gives up the flow, returning its host socket (for a retry elsewhere).
    pub fn into_host(self) -> TcpStream {
        let _ = socket2::SockRef::from(&self.host).set_linger(None);
        self.host
    }

    fn verdict(&mut self) -> Verdict {
        let sock = self.sockets.get_mut::<tcp::Socket>(self.handle);
        if !matches!(
            sock.state(),
            tcp::State::Listen | tcp::State::SynSent | tcp::State::SynReceived | tcp::State::Closed
        ) {
            self.established = true;
        }
        if sock.state() == tcp::State::SynReceived {
            self.syn_taken = true;
        }
        match sock.state() {
            // A reset in SYN-RECEIVED puts the stack back to LISTEN: the container gave the
            // connection up during the handshake (its connect timed out while the host's was
            // slow, and it answered our late SYN-ACK with a reset). Nothing more will come.
            tcp::State::Listen if self.syn_taken => {
                let _ = socket2::SockRef::from(&self.host).set_linger(Some(Duration::ZERO));
                Verdict::Remove
            }
            tcp::State::Closed => {
                if !(self.host_eof && self.host_shut) {
                    // The container reset the connection (or we aborted it): reset the host.
                    let _ = socket2::SockRef::from(&self.host).set_linger(Some(Duration::ZERO));
                }
                Verdict::Remove
            }
            tcp::State::TimeWait if self.host_shut && sock.recv_queue() == 0 => Verdict::Remove,
            _ => Verdict::Keep,
        }
    }
}

/// Marks `interest` not ready on `host` after a short read (its receive queue is empty) or a
/// short write (its send buffer is full), as tokio's own `poll_read`/`poll_write` do: the
/// next `try_read`/`try_write` then returns `WouldBlock` from tokio's readiness cache instead
/// of a syscall that returns EAGAIN (one per request/response round trip). Safe against a race: readiness the reactor saw
/// after this call's snapshot, and a peer's FIN, are never cleared.
fn drained(host: &TcpStream, interest: Interest) {
    let _ = host.try_io(interest, || Err::<(), _>(io::ErrorKind::WouldBlock.into()));
}

/// Longest SYN copied to rewrite its MSS (headers and options; a SYN with data is left alone).
const SYN_COPY: usize = 128;

/// Which ICMP error, if any, a failed host connect maps to (None: answer with RST).
fn connect_failure(e: &io::Error) -> Option<Unreachable> {
    match e.raw_os_error() {
        Some(libc::ENETUNREACH) => Some(Unreachable::Net),
        Some(libc::EHOSTUNREACH) | Some(libc::ETIMEDOUT) | Some(libc::EHOSTDOWN) => Some(Unreachable::Host),
        Some(libc::EACCES) | Some(libc::EPERM) => Some(Unreachable::Prohibited),
        _ => None,
    }
}

#[cfg(test)]
mod buffer_tests {
    use super::*;

    #[test]
    fn only_bulk_data_past_slow_start_with_room_for_two_segments_waits_for_its_ack() {
        let big = TCP_BUFFER;
        assert_eq!(ack_delay(0, 65_000, big), Some(ACK_DELAY), "bulk data past the quick ACKs");
        assert_eq!(ack_delay(0, BULK_SEGMENT, big), Some(ACK_DELAY));
        assert_eq!(ack_delay(1, 65_000, big), None, "slow start: quick ACKs left");
        assert_eq!(ack_delay(0, BULK_SEGMENT - 1, big), None, "a request or a write's tail");
        assert_eq!(ack_delay(0, 1, big), None);
        assert_eq!(ack_delay(0, 65_000, TCP_BUFFER_MID), Some(ACK_DELAY), "256 KiB holds two");
        assert_eq!(ack_delay(0, 30_000, TCP_BUFFER_MIN), None, "32 KiB cannot hold two segments");
    }

    #[test]
    fn budget_tiers_then_refusal_then_return() {
        let pool = BufferPool::new(3 << 20, usize::MAX);
        let a = pool.lease().expect("first");
        assert_eq!(a.size, TCP_BUFFER);
        let b = pool.lease().expect("second");
        assert_eq!(b.size, TCP_BUFFER_MID);
        let small: Vec<_> = std::iter::from_fn(|| pool.lease()).take(100).collect();
        assert_eq!(small.len(), 8, "0.5 MiB left / 64 KiB");
        assert!(small.iter().all(|l| l.size == TCP_BUFFER_MIN));
        assert_eq!(pool.used(), 3 << 20);
        drop(small);
        drop(a);
        assert_eq!(pool.used(), 2 * TCP_BUFFER_MID);
        assert_eq!(pool.lease().map(|l| l.size), Some(TCP_BUFFER), "full buffers again");
        // A budget smaller than full buffers still admits smaller ones.
        let tiny = BufferPool::new(1 << 20, usize::MAX);
        assert_eq!(tiny.lease().map(|l| l.size), Some(TCP_BUFFER_MID));
        assert!(BufferPool::new(TCP_BUFFER_MIN, usize::MAX).lease().is_none());
    }

    #[test]
    fn flow_limit_is_shared_by_clones_and_given_back() {
        let pool = BufferPool::new(64 << 20, 2);
        let other_thread = pool.clone();
        let a = pool.lease().expect("first");
        let b = other_thread.lease().expect("second");
        assert!(pool.lease().is_none() && other_thread.lease().is_none(), "two flows at most");
        drop(a);
        let c = other_thread.lease().expect("a place again");
        drop((b, c));
        // A refusal for want of memory does not keep a place.
        let full = BufferPool::new(TCP_BUFFER_MIN, 1);
        assert!(full.lease().is_none());
        assert_eq!(full.flows.load(Ordering::Relaxed), 0);
    }
}
