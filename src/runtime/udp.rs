//! NATed UDP flows and ICMP echo through unprivileged ping sockets.
//!
//! A UDP flow is one container endpoint talking to one destination: a connected host socket
//! carries it, so replies map back without a lookup and ICMP errors from the host surface as
//! `ECONNREFUSED`. Flows expire when idle (30 s unanswered, 120 s once answered). Datagrams
//! are received straight into the TAP frame buffer after the headers warren adds.

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;

use super::FlowKey;
use super::device::TxSink;
use crate::wire::{self, Unreachable};

/// Idle timeout of a flow that never got a reply.
pub const UDP_UNREPLIED_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle timeout of a flow that got at least one reply.
pub const UDP_REPLIED_TIMEOUT: Duration = Duration::from_secs(120);
/// Idle timeout of a ping flow.
pub const PING_TIMEOUT: Duration = Duration::from_secs(30);
/// Datagrams handled per service call before yielding to other work.
const BATCH: usize = 64;
/// Upstreams a DNS flow keeps a socket to, besides its own (routes and failover add them).
const DNS_SOCKETS: usize = 8;

/// What a flow to the DNS forwarder keeps: its queries, each tried on its upstreams in turn
/// (see [`crate::dns::Queries`]), and a connected socket per upstream asked, so the kernel
/// lets in only that upstream's datagrams and reports its ICMP refusals.
struct DnsFlow {
    queries: crate::dns::Queries,
    /// The upstream the flow's own socket is connected to.
    first: SocketAddr,
    /// Sockets to the other upstreams asked, made when first needed.
    others: Vec<(SocketAddr, UdpSocket)>,
    outbound: (Option<Ipv4Addr>, Option<Ipv6Addr>),
    health: crate::dns::Health,
}

/// What a flow to a relayed multicast group keeps.
struct Multicast {
    /// The group its unconnected socket sends to.
    group: SocketAddr,
    /// The TTL (hop limit) last set on the socket.
    ttl: u8,
    /// The container endpoint's MAC: on a bridge network its answers find the port by it,
    /// since the endpoint may be a link-local address the switch does not know.
    mac: [u8; 6],
    /// Its port's place among the relay's senders.
    _echo: crate::multicast::EchoGuard,
}

/// A NATed UDP flow.
pub struct UdpFlow {
    sock: UdpSocket,
    /// Source address the container sees on replies (the address it sent to).
    pub reply_src: SocketAddr,
    last: Instant,
    replied: bool,
    waker: Waker,
    /// Expiry deadline last put on the timer heap.
    pub scheduled: Option<Instant>,
    /// A flow to the DNS forwarder: see [`DnsFlow`].
    dns: Option<Box<DnsFlow>>,
    /// Idle timeout once answered.
    timeout: Duration,
    /// Its place in `--max-udp-flows`.
    _slot: super::queues::Slot,
    /// Largest datagram payload sent in a segmented batch (fits the path MTU known at
    /// creation); 0 once the kernel refused a batch, and for DNS and multicast flows.
    gso_max: usize,
    /// A flow to a relayed multicast group (`--multicast`): see [`Multicast`].
    multicast: Option<Multicast>,
    /// The outbound address its socket is bound to (`--outbound-addr[6]`), if any.
    source: Option<IpAddr>,
}

impl UdpFlow {
    /// Opens a host socket connected to `target`, bound to the outbound address of its
    /// family if one is set.
    ///
    /// # Errors
    /// Socket creation or connect failure (e.g. `ENETUNREACH`).
    pub fn new(
        target: SocketAddr,
        outbound: (Option<Ipv4Addr>, Option<Ipv6Addr>),
        reply_src: SocketAddr,
        waker: Waker,
        now: Instant,
        slot: super::queues::Slot,
    ) -> io::Result<Self> {
        let std_sock = connected(target, outbound)?;
        let source = outbound_source(target, outbound).map(|s| s.ip());
        let v6 = target.is_ipv6();
        let gso_max = crate::sys::path_mtu(std::os::fd::AsFd::as_fd(&std_sock), v6)
            .map_or(0, |m| (m as usize).saturating_sub(if v6 { 48 } else { 28 }));
        let sock = UdpSocket::from_std(std_sock)?;
        Ok(Self {
            sock,
            reply_src,
            last: now,
            replied: false,
            waker,
            scheduled: None,
            dns: None,
            timeout: UDP_REPLIED_TIMEOUT,
            _slot: slot,
            gso_max,
            multicast: None,
            source,
        })
    }

    /// Opens the host socket of one container endpoint's datagrams to a relayed group
    /// (see [`crate::multicast`]): unconnected, so answers from anyone come back to the
    /// endpoint (behind `mac`) from their source; bound to `source` (an outbound address) if
    /// given.
    ///
    /// # Errors
    /// What the kernel refused.
    pub fn multicast(
        relay: &crate::multicast::Relay,
        mac: [u8; 6],
        source: Option<SocketAddr>,
        echo: &std::sync::Arc<crate::multicast::EchoPorts>,
        waker: Waker,
        now: Instant,
        slot: super::queues::Slot,
    ) -> io::Result<Self> {
        let std_sock = crate::multicast::sender(relay, source)?;
        let guard = echo.insert(std_sock.local_addr()?.port());
        Ok(Self {
            sock: UdpSocket::from_std(std_sock)?,
            reply_src: relay.addr(),
            last: now,
            replied: false,
            waker,
            scheduled: None,
            dns: None,
            timeout: UDP_REPLIED_TIMEOUT,
            _slot: slot,
            gso_max: 0,
            // The kernel's default multicast TTL; the container's first datagram sets its own.
            multicast: Some(Multicast { group: relay.addr(), ttl: 1, mac, _echo: guard }),
            source: source.map(|s| s.ip()),
        })
    }

    /// Sends a container datagram of a multicast flow to its group with the container's TTL
    /// (hop limit). A full socket buffer drops it.
    ///
    /// # Errors
    /// What the kernel refused; `InvalidInput` on a flow that is not a multicast one.
    pub fn send_multicast(&mut self, payload: &[u8], ttl: u8, now: Instant) -> io::Result<()> {
        self.last = now;
        let Some(m) = &mut self.multicast else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        if m.ttl != ttl {
            crate::multicast::set_ttl(std::os::fd::AsFd::as_fd(&self.sock), m.group.is_ipv4(), ttl)?;
            m.ttl = ttl;
        }
        socket2::SockRef::from(&self.sock).send_to(payload, &m.group.into()).map(|_| ())
    }

    /// Sets the idle timeout once answered (unanswered flows: at most [`UDP_UNREPLIED_TIMEOUT`]).
    pub fn set_timeout(&mut self, t: Duration) {
        self.timeout = t;
    }

    /// Makes the flow, whose socket is connected to upstream `first`, one to the DNS
    /// forwarder: its queries go through [`UdpFlow::send_dns`], fail over to other
    /// upstreams (reported to `health`) and get SERVFAIL when none answers.
    pub fn watch_dns(
        &mut self,
        first: SocketAddr,
        outbound: (Option<Ipv4Addr>, Option<Ipv6Addr>),
        health: crate::dns::Health,
    ) {
        let queries = crate::dns::Queries::default();
        self.dns = Some(Box::new(DnsFlow { queries, first, others: Vec::new(), outbound, health }));
        self.gso_max = 0;
    }

    /// Sends a container query of a DNS flow to the first of `servers` and tracks it (see
    /// [`crate::dns::Queries::ask`]); on a flow that is not a DNS one, as [`UdpFlow::send`].
    pub fn send_dns(&mut self, key: &FlowKey, payload: &[u8], servers: Vec<SocketAddr>, tx: &mut TxSink, now: Instant) {
        self.last = now;
        let Some(d) = self.dns.as_mut() else {
            let _ = self.send(payload, now);
            return;
        };
        let step = d.queries.ask(payload, servers, now);
        self.dns_steps(key, step.into_iter().collect(), tx, now);
    }

    /// Carries out the steps of a DNS flow's queries: asks upstreams (one that cannot be sent
    /// to counts as refusing), answers the container, records silent upstreams.
    fn dns_steps(&mut self, key: &FlowKey, mut steps: Vec<crate::dns::Step>, tx: &mut TxSink, now: Instant) {
        use crate::dns::Step;
        let Self { sock, dns, reply_src, .. } = self;
        let Some(d) = dns.as_mut() else { return };
        // Ends: every failed send moves its queries to a later server or answers them.
        while let Some(step) = steps.pop() {
            match step {
                Step::Ask(server, query) => {
                    if let Err(e) = d.send(sock, server, &query) {
                        tracing::debug!(%server, error = %e, "DNS upstream refused a query");
                        d.health.failed(server, now);
                        steps.extend(d.queries.unreachable(server, now));
                    }
                }
                Step::Answer(a) => {
                    tracing::debug!(rcode = a.get(3).map(|b| b & 0x0f), "no DNS upstream answered: error answer");
                    let off = wire::udp_payload_offset(key.src.ip());
                    tx.buf[off..off + a.len()].copy_from_slice(&a);
                    let len = wire::udp(&mut tx.buf, tx.dst_mac, tx.src_mac, *reply_src, key.src, a.len());
                    tx.send(len);
                }
                Step::Silent(server) => d.health.failed(server, now),
            }
        }
        d.health.count(d.queries.take_counts());
    }

    /// Whether a datagram of `len` bytes may wait in a [`Batch`] for the end of the read burst.
    pub fn batches(&self, len: usize) -> bool {
        len > 0 && len <= self.gso_max
    }

    /// Sends a batch of this flow's datagrams, `size` bytes each but the last, in one call.
    /// A full socket buffer drops them, as for [`Self::send`]; a kernel that refuses the
    /// segmentation itself gets them one by one, and this flow sends unbatched from then on.
    pub fn send_batch(&mut self, data: &[u8], size: usize, now: Instant) {
        self.last = now;
        if !send_segments(std::os::fd::AsFd::as_fd(&self.sock), None, data, size) {
            self.gso_max = 0;
        }
    }

    /// Sends one container datagram to the destination. A full socket buffer drops it, as a
    /// congested link would; the error is returned for the caller to report (`EMSGSIZE`).
    ///
    /// # Errors
    /// What the kernel refused the datagram with.
    pub fn send(&mut self, payload: &[u8], now: Instant) -> io::Result<()> {
        self.last = now;
        // Straight to the kernel: tokio's try_send would refuse until the reactor has seen
        // the new socket writable, losing a flow's first datagram.
        socket2::SockRef::from(&self.sock).send(payload).map(|_| ())
    }

    /// The outbound address the host socket was bound to, if it was bound to one.
    pub fn source(&self) -> Option<IpAddr> {
        self.source
    }

    /// The path MTU the host socket knows (after an `EMSGSIZE`).
    pub fn path_mtu(&self) -> Option<u32> {
        crate::sys::path_mtu(std::os::fd::AsFd::as_fd(&self.sock), self.reply_src.is_ipv6()).ok()
    }

    /// When the flow expires if nothing more happens.
    pub fn expires(&self) -> Instant {
        self.last + if self.replied { self.timeout } else { UDP_UNREPLIED_TIMEOUT.min(self.timeout) }
    }

    /// When the flow next needs servicing without input: its expiry, or when a DNS query
    /// moves on to its next upstream or gets its answer.
    pub fn deadline(&self) -> Instant {
        let dns = self.dns.as_ref().and_then(|d| d.queries.deadline());
        dns.map_or(self.expires(), |d| d.min(self.expires()))
    }

    /// Delivers pending replies to the container. Returns false when the flow should go.
    /// With UDP segmentation offload on the TAP, datagrams of one size are read back to back
    /// into the frame buffer and go to the container in one frame (see [`Run`]).
    pub fn service(&mut self, key: &FlowKey, tx: &mut TxSink, now: Instant) -> bool {
        if self.multicast.is_some() {
            return self.service_multicast(key, tx, now);
        }
        if self.dns.is_some() {
            return self.service_dns(key, tx, now);
        }
        let waker = self.waker.clone();
        let mut cx = Context::from_waker(&waker);
        let (off, max) = (wire::udp_payload_offset(key.src.ip()), wire::udp_max_payload(key.src.ip()));
        let mut run = Run::default();
        let (src, dst) = (self.reply_src, key.src);
        for _ in 0..BATCH {
            let at = off + run.bytes;
            match self.sock.try_recv(&mut tx.buf[at..at + max]) {
                Ok(n) => {
                    self.replied = true;
                    self.last = now;
                    if !run.takes(n, max) && run.count > 0 {
                        // It cannot join the run before it: that goes, and it starts a new one.
                        run.send(tx, src, dst, off);
                        tx.buf.copy_within(at..at + n, off);
                    }
                    run.push(n);
                    if !tx.uso || !run.open(max) {
                        run.send(tx, src, dst, off);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    run.send(tx, src, dst, off);
                    match self.sock.poll_recv_ready(&mut cx) {
                        Poll::Pending => return now < self.expires(),
                        Poll::Ready(_) => continue,
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                    // The destination answered ICMP port unreachable: tell the container.
                    run.send(tx, src, dst, off);
                    port_unreachable(key, self.reply_src, tx);
                    self.last = now;
                }
                Err(e) => {
                    run.send(tx, src, dst, off);
                    tracing::debug!(error = %e, "UDP flow receive failed");
                    return false;
                }
            }
        }
        run.send(tx, src, dst, off);
        // More may be queued: come back after other work.
        self.waker.wake_by_ref();
        true
    }
}

impl DnsFlow {
    /// Sends `query` to `server` from the flow's socket to it (`own` is the one to
    /// [`DnsFlow::first`]), made if needed.
    fn send(&mut self, own: &UdpSocket, server: SocketAddr, query: &[u8]) -> io::Result<()> {
        let sock = if server == self.first {
            own
        } else if let Some(i) = self.others.iter().position(|(s, _)| *s == server) {
            &self.others[i].1
        } else {
            if self.others.len() >= DNS_SOCKETS {
                return Err(io::Error::other("too many DNS upstreams for one flow"));
            }
            let sock = UdpSocket::from_std(connected(server, self.outbound)?)?;
            self.others.push((server, sock));
            &self.others[self.others.len() - 1].1
        };
        // Straight to the kernel, as UdpFlow::send.
        socket2::SockRef::from(sock).send(query).map(|_| ())
    }
}

impl UdpFlow {
    /// [`UdpFlow::service`] of a DNS flow: each upstream's answers to pending queries go to
    /// the container, error answers and refusals move queries on, and then what is due.
    fn service_dns(&mut self, key: &FlowKey, tx: &mut TxSink, now: Instant) -> bool {
        use crate::dns::{Step, Verdict};
        let waker = self.waker.clone();
        let mut cx = Context::from_waker(&waker);
        let (off, max) = (wire::udp_payload_offset(key.src.ip()), wire::udp_max_payload(key.src.ip()));
        let mut steps = Vec::new();
        let mut more = false;
        let Self { sock, dns, reply_src, replied, last, .. } = self;
        let Some(d) = dns.as_mut() else { return false };
        for i in 0..=d.others.len() {
            let (server, sock) = if i == 0 { (d.first, &*sock) } else { (d.others[i - 1].0, &d.others[i - 1].1) };
            let mut budget = BATCH;
            loop {
                if budget == 0 {
                    more = true;
                    break;
                }
                budget -= 1;
                match sock.try_recv(&mut tx.buf[off..off + max]) {
                    Ok(n) => match d.queries.answer(server, &tx.buf[off..off + n], now) {
                        Verdict::Deliver => {
                            d.health.answered(server);
                            (*replied, *last) = (true, now);
                            let len = wire::udp(&mut tx.buf, tx.dst_mac, tx.src_mac, *reply_src, key.src, n);
                            tx.send(len);
                        }
                        Verdict::Next(next, query) => {
                            tracing::debug!(%server, %next, "DNS upstream answered an error: asking the next");
                            steps.push(Step::Ask(next, query));
                        }
                        Verdict::Drop => tracing::debug!(%server, "DNS datagram answers no pending query: dropped"),
                    },
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => match sock.poll_recv_ready(&mut cx) {
                        Poll::Pending => break,
                        Poll::Ready(_) => continue,
                    },
                    Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                        tracing::debug!(%server, "DNS upstream refused (ICMP)");
                        d.health.failed(server, now);
                        steps.extend(d.queries.unreachable(server, now));
                    }
                    Err(e) => {
                        tracing::debug!(%server, error = %e, "DNS upstream receive failed");
                        break;
                    }
                }
            }
        }
        steps.extend(d.queries.poll(now));
        let pending = !d.queries.is_empty();
        self.dns_steps(key, steps, tx, now);
        if more {
            self.waker.wake_by_ref();
        }
        pending || now < self.expires()
    }

    /// [`UdpFlow::service`] of a multicast flow: each datagram goes to the container endpoint
    /// alone, from whoever sent it.
    fn service_multicast(&mut self, key: &FlowKey, tx: &mut TxSink, now: Instant) -> bool {
        let waker = self.waker.clone();
        let mut cx = Context::from_waker(&waker);
        let (off, max) = (wire::udp_payload_offset(key.src.ip()), wire::udp_max_payload(key.src.ip()));
        let mac = self.multicast.as_ref().map_or(tx.dst_mac, |m| m.mac);
        for _ in 0..BATCH {
            match self.sock.try_recv_from(&mut tx.buf[off..off + max]) {
                Ok((n, peer)) => {
                    self.replied = true;
                    self.last = now;
                    let len = wire::udp(&mut tx.buf, mac, tx.src_mac, peer, key.src, n);
                    tx.send(len);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => match self.sock.poll_recv_ready(&mut cx) {
                    Poll::Pending => return now < self.expires(),
                    Poll::Ready(_) => continue,
                },
                Err(e) => {
                    tracing::debug!(error = %e, "multicast flow receive failed");
                    return now < self.expires();
                }
            }
        }
        self.waker.wake_by_ref();
        true
    }
}

/// Most datagrams in one frame to the container.
const RUN_SEGMENTS: usize = 64;

/// Datagrams of one flow read back to back into the TAP frame buffer, from `off` on: all the
/// size of the first but the last, which may be shorter, so that the container's kernel, told
/// the size, cuts them where they were (UDP segmentation offload, `VIRTIO_NET_HDR_GSO_UDP_L4`).
#[derive(Default)]
pub struct Run {
    /// Payload bytes held.
    bytes: usize,
    /// Size of the first datagram.
    seg: usize,
    /// Datagrams held.
    count: usize,
}

impl Run {
    /// Payload bytes held: where the next datagram is read, after the payload offset.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether a datagram of `n` bytes, read right behind the run, can join it.
    pub fn takes(&self, n: usize, max: usize) -> bool {
        self.open(max) && n > 0 && n <= self.seg && self.bytes + n <= max
    }

    /// Whether another datagram may still join.
    pub fn open(&self, max: usize) -> bool {
        self.count > 0
            && self.seg > 0
            && self.bytes.is_multiple_of(self.seg)
            && self.count < RUN_SEGMENTS
            && self.bytes < max
    }

    /// Adds a datagram of `n` bytes (the caller checked that it [`Self::takes`] it or that the
    /// run was empty).
    pub fn push(&mut self, n: usize) {
        if self.count == 0 {
            self.seg = n;
        }
        self.bytes += n;
        self.count += 1;
    }

    /// Sends the datagrams held at `tx.buf[off..]` from `src` to the container's `dst`: one
    /// frame for all when the TAP takes it, else one each. Leaves the run empty.
    pub fn send(&mut self, tx: &mut TxSink, src: SocketAddr, dst: SocketAddr, off: usize) {
        let run = std::mem::take(self);
        if run.count == 0 {
            return;
        }
        let seg = if run.count > 1 { run.seg as u16 } else { 0 };
        let len = wire::udp_partial(&mut tx.buf, tx.dst_mac, tx.src_mac, src, dst, run.bytes);
        if tx.send_udp_offloaded(len, src.ip(), seg, run.count) {
            return;
        }
        // Refused as one frame: each datagram in turn moves to the front and goes alone
        // (the ones before it have gone, so nothing it overwrites is still needed).
        for i in 0..run.count {
            let start = off + i * run.seg;
            let n = run.seg.min(run.bytes - i * run.seg);
            tx.buf.copy_within(start..start + n, off);
            let len = wire::udp_partial(&mut tx.buf, tx.dst_mac, tx.src_mac, src, dst, n);
            tx.send_udp_offloaded(len, src.ip(), 0, 1);
        }
    }
}

/// The address a host socket toward `target` binds: the outbound address of its family
/// (slirp4netns `--outbound-addr[6]`), never for loopback targets.
pub fn outbound_source(target: SocketAddr, outbound: (Option<Ipv4Addr>, Option<Ipv6Addr>)) -> Option<SocketAddr> {
    if target.ip().is_loopback() {
        return None;
    }
    match target {
        SocketAddr::V4(_) => outbound.0.map(|a| SocketAddr::new(a.into(), 0)),
        SocketAddr::V6(_) => outbound.1.map(|a| SocketAddr::new(a.into(), 0)),
    }
}

/// A nonblocking UDP socket connected to `target`, bound to the outbound address of its
/// family if one is set.
fn connected(target: SocketAddr, outbound: (Option<Ipv4Addr>, Option<Ipv6Addr>)) -> io::Result<std::net::UdpSocket> {
    let bind = outbound_source(target, outbound).unwrap_or(match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    });
    let sock = std::net::UdpSocket::bind(bind)?;
    sock.connect(target)?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// Sends the container an ICMP port unreachable for its datagram `key.src -> key.dst`.
pub fn port_unreachable(key: &FlowKey, reporter: SocketAddr, tx: &mut TxSink) {
    unreachable_for_udp(key, reporter.ip(), Unreachable::Port, tx);
}

/// Sends the container an ICMP error about a datagram of `key`, quoting a reconstruction of
/// its headers (enough for the container's kernel to find the socket).
pub fn unreachable_for_udp(key: &FlowKey, reporter: IpAddr, code: Unreachable, tx: &mut TxSink) {
    let mut quote = [0u8; wire::ETH_LEN + wire::IPV6_LEN + wire::UDP_LEN];
    let n = wire::udp(&mut quote, tx.src_mac, tx.dst_mac, key.src, key.dst, 0);
    let len = wire::icmp_unreachable(&mut tx.buf, tx.dst_mac, tx.src_mac, reporter, code, &quote[wire::ETH_LEN..n]);
    tx.send(len);
}

/// Key of an ICMP echo flow: container address, destination, container's echo identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PingKey {
    /// Container address.
    pub src: IpAddr,
    /// Destination.
    pub dst: IpAddr,
    /// Echo identifier chosen by the container.
    pub ident: u16,
}

/// An ICMP or ICMPv6 echo flow over an unprivileged ping socket (`net.ipv4.ping_group_range`
/// governs both families).
pub struct PingFlow {
    sock: AsyncFd<Socket>,
    buf: Vec<u8>,
    last: Instant,
    waker: Waker,
    /// Expiry deadline last put on the timer heap.
    pub scheduled: Option<Instant>,
    v6: bool,
    /// Its place in the ping flow limit.
    _slot: super::queues::Slot,
}

impl PingFlow {
    /// Opens a ping socket connected to `dst`.
    ///
    /// # Errors
    /// `EACCES` when the caller's group is outside `ping_group_range`; others as the kernel says.
    pub fn new(dst: IpAddr, waker: Waker, now: Instant, slot: super::queues::Slot) -> io::Result<Self> {
        let s = match dst {
            IpAddr::V4(_) => Socket::new(Domain::IPV4, Type::DGRAM.nonblocking(), Some(Protocol::ICMPV4))?,
            IpAddr::V6(_) => Socket::new(Domain::IPV6, Type::DGRAM.nonblocking(), Some(Protocol::ICMPV6))?,
        };
        s.connect(&SocketAddr::new(dst, 0).into())?;
        let v6 = dst.is_ipv6();
        Ok(Self {
            sock: crate::sys::async_socket(s)?,
            buf: vec![0u8; 65536],
            last: now,
            waker,
            scheduled: None,
            v6,
            _slot: slot,
        })
    }

    /// Sends an echo request with the container's sequence number and data.
    pub fn send(&mut self, seq: u16, data: &[u8], now: Instant) -> bool {
        self.last = now;
        let mut pkt = Vec::with_capacity(8 + data.len());
        let request = if self.v6 { 128 } else { 8 };
        pkt.extend_from_slice(&[request, 0, 0, 0, 0, 0]);
        pkt.extend_from_slice(&seq.to_be_bytes());
        pkt.extend_from_slice(data);
        self.sock.get_ref().send(&pkt).is_ok()
    }

    /// When the flow expires if nothing more happens.
    pub fn expires(&self) -> Instant {
        self.last + PING_TIMEOUT
    }

    /// Delivers echo replies to the container with its own identifier restored.
    pub fn service(&mut self, key: &PingKey, tx: &mut TxSink, now: Instant) -> bool {
        let waker = self.waker.clone();
        let mut cx = Context::from_waker(&waker);
        let buf = &mut self.buf;
        for _ in 0..BATCH {
            let mut guard = match self.sock.poll_read_ready(&mut cx) {
                Poll::Pending => return now < self.expires(),
                Poll::Ready(Ok(g)) => g,
                Poll::Ready(Err(_)) => return false,
            };
            match guard.try_io(|s| s.get_ref().read(buf)) {
                Ok(Ok(n)) if n >= 8 && buf[0] == if self.v6 { 129 } else { 0 } => {
                    let seq = u16::from_be_bytes([buf[6], buf[7]]);
                    let len = wire::icmp_echo_reply(
                        &mut tx.buf,
                        tx.dst_mac,
                        tx.src_mac,
                        key.dst,
                        key.src,
                        key.ident,
                        seq,
                        &buf[8..n],
                    );
                    tx.send(len);
                    self.last = now;
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, fd = self.sock.get_ref().as_raw_fd(), "ping socket receive failed");
                    return now < self.expires();
                }
                Err(_would_block) => continue,
            }
        }
        self.waker.wake_by_ref();
        true
    }
}

/// Sends `data` as datagrams of `size` bytes (the last may be shorter) in one segmented call,
/// to `to` on an unconnected socket. Errors of a full buffer drop them, as a congested link
/// would. Returns false when the kernel refused the segmentation itself (a segment larger
/// than the path takes, or no `UDP_SEGMENT`): they went one by one, and the caller should
/// not batch for this destination again.
pub fn send_segments(sock: std::os::fd::BorrowedFd<'_>, to: Option<SocketAddr>, data: &[u8], size: usize) -> bool {
    let sock2 = socket2::SockRef::from(&sock);
    let one = |d: &[u8]| {
        let _ = match to {
            Some(to) => sock2.send_to(d, &to.into()),
            None => sock2.send(d),
        };
    };
    if data.len() <= size {
        one(data);
        return true;
    }
    let Err(e) = crate::sys::send_udp_segments(sock, to, data, size as u16) else { return true };
    if !matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EIO | libc::EMSGSIZE | libc::EOPNOTSUPP | libc::ENOPROTOOPT)
    ) {
        return true;
    }
    tracing::debug!(error = %e, ?to, "UDP segmentation refused; sending datagrams one by one");
    data.chunks(size).for_each(one);
    false
}

/// Most datagrams in one [`Batch`] (the kernel's `UDP_MAX_SEGMENTS` is 64 or more).
const BATCH_SEGMENTS: usize = 64;
/// Most bytes in one [`Batch`]: what one UDP datagram can carry over IPv4.
const BATCH_BYTES: usize = 65507;

/// Datagrams of one flow read back to back in a TAP burst, held until the burst ends (or
/// another datagram cannot join) and then sent in one segmented call. All have the size of
/// the first but the last, which may be shorter, so the kernel cuts them where they were.
#[derive(Default)]
pub struct Batch {
    key: Option<FlowKey>,
    data: Vec<u8>,
    size: usize,
    count: usize,
    closed: bool,
}

impl Batch {
    /// Whether a datagram of `len` bytes for `key` can join the batch.
    pub fn takes(&self, key: &FlowKey, len: usize) -> bool {
        self.key.as_ref() == Some(key)
            && !self.closed
            && self.count < BATCH_SEGMENTS
            && len <= self.size
            && self.data.len() + len <= BATCH_BYTES
    }

    /// Whether the batch holds datagrams of `key`.
    pub fn holds(&self, key: &FlowKey) -> bool {
        self.key.as_ref() == Some(key)
    }

    /// Adds a datagram: as the first of a new batch once the last was taken, else to this one
    /// (the caller checked that it [`Self::takes`] it).
    pub fn push(&mut self, key: FlowKey, payload: &[u8]) {
        debug_assert!(self.key.is_none() || self.takes(&key, payload.len()), "a batch that cannot take it");
        if self.key.is_none() {
            self.data.clear();
            self.key = Some(key);
            self.size = payload.len();
            self.count = 0;
        }
        self.closed = payload.len() < self.size;
        self.data.extend_from_slice(payload);
        self.count += 1;
    }

    /// Empties the batch: its flow, the datagram size and the datagrams back to back.
    pub fn take(&mut self) -> Option<(FlowKey, usize, &[u8])> {
        let key = self.key.take()?;
        Some((key, self.size, &self.data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TAP on a kernel without UDP segmentation offload refuses a GSO frame with `EINVAL`,
    /// as an eventfd refuses any write that is not 8 bytes: the run then goes one datagram per
    /// frame (each refused here too, but recorded by the capture first, so it can be checked).
    #[test]
    fn a_run_the_tap_refuses_goes_one_datagram_per_frame() {
        let fd: std::os::fd::OwnedFd = nix::sys::eventfd::EventFd::new().unwrap().into();
        let mut tx = TxSink::new(fd, [2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], true);
        let path = std::env::temp_dir().join(format!("warren-udp-run-{}.pcap", std::process::id()));
        let pcap = crate::pcap::PcapWriter::create(&path, None).unwrap();
        tx.capture = Some(std::sync::Arc::new(std::sync::Mutex::new(pcap)));
        let (src, dst): (SocketAddr, SocketAddr) = ("10.0.2.2:53".parse().unwrap(), "10.0.2.100:4000".parse().unwrap());
        let (off, max) = (wire::udp_payload_offset(src.ip()), wire::udp_max_payload(src.ip()));
        let sizes = [100usize, 100, 40];
        let mut run = Run::default();
        for (i, n) in sizes.iter().enumerate() {
            let at = off + run.bytes();
            tx.buf[at..at + n].fill(i as u8 + 1);
            assert!(run.bytes() == 0 || run.takes(*n, max), "datagram {i} joins");
            run.push(*n);
        }
        let (open, uso_before) = (run.open(max), tx.uso);
        run.send(&mut tx, src, dst, off);
        tx.capture = None;
        let file = std::fs::read(&path);
        let _ = std::fs::remove_file(&path);
        let file = file.unwrap();
        assert!(!open, "a shorter datagram closes the run");
        assert!(uso_before && !tx.uso, "segmentation offload is off after the refusal");
        assert_eq!((tx.errors, tx.frames, tx.udp_coalesced), (3, 0, 0), "one write per datagram after the refusal");
        let mut at = 24;
        let mut payloads = Vec::new();
        while at + 16 <= file.len() {
            let len = u32::from_le_bytes(file[at + 8..at + 12].try_into().unwrap()) as usize;
            let frame = &file[at + 16..at + 16 + len];
            payloads.push(frame[off..].to_vec());
            assert_eq!(
                u16::from_be_bytes([frame[off - 4], frame[off - 3]]) as usize,
                8 + frame.len() - off,
                "UDP length"
            );
            at += 16 + len;
        }
        let want: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, n)| vec![i as u8 + 1; *n]).collect();
        assert_eq!(payloads, want, "each datagram alone, as it was read");
    }
}
