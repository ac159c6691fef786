//! The async shell: one task owns a TAP queue, its flows and their timers (one thread per
//! queue of a multiqueue TAP, see [`queues`]).
//!
//! Host sockets are not given tasks of their own. Each flow registers a small waker with the
//! tokio reactor that pushes the flow's key onto a wake queue; the dataplane task drains the
//! queue and services exactly those flows. So all state has a single owner (no locks on the
//! data path, no channels, no copies between tasks), and work per event is O(1) in the number
//! of flows: a frame is one hash lookup, a ready socket one queue entry, a timer one heap pop.

pub mod bridge;
pub mod device;
#[doc(hidden)]
pub mod fuzzing;
pub mod ports;
pub mod queues;
pub mod spin;
pub mod tcp;
pub mod udp;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use rustc_hash::FxHashMap;
use smoltcp::wire::IpCidr;
use socket2::{Domain, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::config::NetConfig;
use crate::dns::Upstreams;
use crate::forward::Forward;
use crate::gateway::{self, DropCounters, GatewayAddrs, GatewayAddrs6, Packet, TcpSeg};
use crate::wire::{self, SegmentInfo, Unreachable};
use device::TxSink;
use ports::{Bound, HostSocket, PortInfo};
use tcp::{TcpFlow, Verdict, stack_time};
use udp::{PingFlow, PingKey, UdpFlow};

/// Frames read from the TAP before other events get a turn.
const RX_BATCH: usize = 64;
/// The IP MTU of TCP flows' stacks when the TAP takes GSO frames: the largest warren offers.
const TSO_MTU: usize = 65520;
/// Most spare flow stacks kept. Each holds the touched pages of its two buffers (a few
/// pages for the short flows that leave one; at worst, a hostile container's out-of-order
/// data, two full buffers), so this bounds the memory they keep.
const SPARES: usize = 8;

/// A flow as the container addressed it: its own endpoint and the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// Container endpoint.
    pub src: SocketAddr,
    /// Destination endpoint as the container wrote it.
    pub dst: SocketAddr,
}

/// What a waker or timer points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Token {
    Tcp(FlowKey),
    Udp(FlowKey),
    UdpIn(FlowKey),
    Ping(PingKey),
    Listener(u64),
    Port(u64),
    /// A `--multicast` relay's listener, by its place in the configuration.
    Relay(usize),
}

/// A request to the dataplane from the API socket, with where to send the answer.
pub enum Command {
    /// Publish these forwards (all or none).
    Add(Vec<Forward>, oneshot::Sender<Result<Vec<PortInfo>, String>>),
    /// List the published ports.
    List(oneshot::Sender<Vec<PortInfo>>),
    /// Unpublish these ids (all or none).
    Remove(Vec<u64>, oneshot::Sender<Result<(), String>>),
    /// Report counters and the open flows.
    Stats(oneshot::Sender<(Stats, Vec<FlowInfo>)>),
    /// Bridge networks: plug a container interface into the switch.
    AddPort(bridge::PortSpec, oneshot::Sender<Result<(), String>>),
    /// Bridge networks: unplug a container interface (its ports go too).
    RemovePort(u64),
    /// Bridge networks: publish bound forwards to one container interface.
    PublishFor(u64, Vec<Bound>, oneshot::Sender<Result<Vec<PortInfo>, String>>),
    /// Bridge networks: per-interface counters.
    PortStats(oneshot::Sender<Vec<bridge::PortStat>>),
    /// Start, query or stop a packet capture; answers the frames written so far.
    Capture(CaptureCmd, oneshot::Sender<Result<u64, String>>),
    /// Record every frame with this (already created) capture file from now on; `None`: stop.
    SetCapture(Option<device::Capture>),
}

impl Command {
    /// Sends the command `make` builds to the data path over `commands` and waits for its
    /// answer; `None` when the data path has gone.
    pub async fn ask<T>(
        commands: &mpsc::Sender<Command>,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        commands.send(make(tx)).await.ok()?;
        rx.await.ok()
    }
}

/// What to do with the packet capture.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CaptureCmd {
    /// Write every frame in and out to `path` (a new pcap file), up to `count` frames.
    Start {
        /// Absolute path of the file to create.
        path: std::path::PathBuf,
        /// Stop after this many frames.
        count: Option<u64>,
        /// Only one interface of a bridge network: frames from or to this MAC (and group frames).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mac: Option<[u8; 6]>,
    },
    /// Frames written so far.
    Status,
    /// Close the file; answers the frames written.
    Stop,
}

/// An open NAT flow, as `warren flows` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FlowInfo {
    /// `tcp`, `udp`, `udp-in` (a published UDP port's client) or `icmp`.
    pub proto: &'static str,
    /// The container's endpoint.
    pub container: String,
    /// The other end as the container sees it.
    pub peer: String,
    /// The host socket's peer (the real destination or client), when known.
    pub host: Option<String>,
    /// Seconds since the flow started (TCP) or was last active (published UDP).
    pub age_s: u64,
    /// Payload bytes container -> host so far (TCP).
    pub bytes_out: u64,
    /// Payload bytes host -> container so far (TCP).
    pub bytes_in: u64,
    /// The data-path thread (TAP queue) that owns the flow.
    pub thread: usize,
}

enum ListenSock {
    Tcp(tokio::net::TcpListener),
    Udp(tokio::net::UdpSocket),
}

/// A published port's host socket.
struct Listener {
    info: PortInfo,
    sock: ListenSock,
    waker: Waker,
    /// The bridge port the forward belongs to (removed with it).
    owner: Option<u64>,
}

/// The host socket of a `--multicast` relay: its group's datagrams go to the container.
struct RelayListener {
    group: SocketAddr,
    sock: tokio::net::UdpSocket,
    waker: Waker,
}

/// A client of a published UDP port, seen by the container as coming from `key.dst`.
struct InboundUdp {
    listener: u64,
    client: SocketAddr,
    last: Instant,
    scheduled: Option<Instant>,
    /// Whether the container's replies may go in segmented batches (until the kernel
    /// refuses one for this client).
    batches: bool,
}

/// Flows whose host socket became ready, filled by the tokio reactor.
#[derive(Default)]
struct WakeQueue {
    tokens: Mutex<Vec<Token>>,
    notify: Notify,
}

struct FlowWaker {
    token: Token,
    queue: Arc<WakeQueue>,
}

impl Wake for FlowWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if let Ok(mut q) = self.queue.tokens.lock() {
            q.push(self.token);
        }
        self.queue.notify.notify_one();
    }
}

/// Counters of one container network.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Stats {
    /// Frames read from the TAP.
    pub frames_in: u64,
    /// Bytes read from the TAP.
    pub bytes_in: u64,
    /// Frames written to the TAP.
    pub frames_out: u64,
    /// Bytes written to the TAP.
    pub bytes_out: u64,
    /// Frames dropped by the classifier, by reason.
    pub drops: DropCounters,
    /// TCP flows opened.
    pub tcp_flows: u64,
    /// UDP flows opened.
    pub udp_flows: u64,
    /// Ping flows opened.
    pub ping_flows: u64,
    /// TCP segments answered with RST (refused, unknown flow, limit).
    pub tcp_resets: u64,
    /// ICMP errors sent to the container.
    pub icmp_errors: u64,
    /// New flows refused because a limit was reached.
    pub limit_drops: u64,
    /// Published-port TCP connections (through the userspace stack, every client).
    pub inbound_tcp: u64,
    /// TCP payload bytes relayed container -> host by finished flows.
    pub tcp_bytes_out: u64,
    /// TCP payload bytes relayed host -> container by finished flows.
    pub tcp_bytes_in: u64,
    /// Buffer bytes the open TCP flows have reserved (of `--max-buffer-memory`).
    pub tcp_buffer_bytes: u64,
    /// TCP flows that started on the stack of a finished short flow (no new buffers).
    pub tcp_stacks_reused: u64,
    /// Data-path threads, one per TAP queue.
    pub queues: u64,
    /// Frames read on one queue for a flow of another queue's thread, passed to it.
    pub handed_over: u64,
    /// Such frames dropped because the owner's handoff queue was full.
    pub handover_drops: u64,
    /// UDP datagrams sent to the host in a segmented batch of several (one call each).
    pub udp_batched: u64,
    /// UDP datagrams written to the container several to a frame (UDP segmentation offload).
    pub udp_coalesced: u64,
    /// Idle periods a data-path thread spent polling before it slept (`--busy-poll`).
    pub busy_polls: u64,
    /// Of those, the ones where work came while polling (a sleep and wake-up saved).
    pub busy_poll_hits: u64,
    /// Counts of runnable threads that found more than the CPUs (no polling for the next
    /// millisecond: other threads want them).
    pub busy_poll_backoffs: u64,
    /// Datagrams the container sent to a relayed multicast group (`--multicast`).
    pub multicast_out: u64,
    /// Datagrams of a relayed group handed to the container.
    pub multicast_in: u64,
    /// The host's loopback copies of the container's own group datagrams, not handed back.
    pub multicast_echoes: u64,
    /// UDP queries to the DNS forwarder (all threads: reported by thread 0).
    pub dns_queries: u64,
    /// Times a DNS query went on to another upstream (silence, refusal, an error answer).
    pub dns_failovers: u64,
    /// DNS queries no upstream answered: warren gave SERVFAIL or the last error answer.
    pub dns_unanswered: u64,
}

impl Stats {
    /// Adds another data-path thread's counters (the buffer reservation is shared: kept).
    pub fn merge(&mut self, o: &Stats) {
        self.frames_in += o.frames_in;
        self.bytes_in += o.bytes_in;
        self.frames_out += o.frames_out;
        self.bytes_out += o.bytes_out;
        for (a, b) in self.drops.0.iter_mut().zip(o.drops.0) {
            *a += b;
        }
        self.tcp_flows += o.tcp_flows;
        self.udp_flows += o.udp_flows;
        self.ping_flows += o.ping_flows;
        self.tcp_resets += o.tcp_resets;
        self.icmp_errors += o.icmp_errors;
        self.limit_drops += o.limit_drops;
        self.inbound_tcp += o.inbound_tcp;
        self.tcp_bytes_out += o.tcp_bytes_out;
        self.tcp_bytes_in += o.tcp_bytes_in;
        self.tcp_buffer_bytes = self.tcp_buffer_bytes.max(o.tcp_buffer_bytes);
        self.tcp_stacks_reused += o.tcp_stacks_reused;
        self.queues += o.queues;
        self.handed_over += o.handed_over;
        self.handover_drops += o.handover_drops;
        self.udp_batched += o.udp_batched;
        self.udp_coalesced += o.udp_coalesced;
        self.busy_polls += o.busy_polls;
        self.busy_poll_hits += o.busy_poll_hits;
        self.busy_poll_backoffs += o.busy_poll_backoffs;
        self.multicast_out += o.multicast_out;
        self.multicast_in += o.multicast_in;
        self.multicast_echoes += o.multicast_echoes;
        self.dns_queries += o.dns_queries;
        self.dns_failovers += o.dns_failovers;
        self.dns_unanswered += o.dns_unanswered;
    }
}

/// Where a container's flow goes on the host.
enum Target {
    Host(SocketAddr),
    Refuse,
    Unreachable(Unreachable),
}

/// The data path of one container network.
pub struct Dataplane {
    cfg: NetConfig,
    gw: GatewayAddrs,
    gw_cidrs: Vec<IpCidr>,
    /// The IP MTU of the TCP flows' stacks (larger than the container's with GSO).
    tcp_mtu: usize,
    tx: TxSink,
    tcp: FxHashMap<FlowKey, TcpFlow>,
    udp: FxHashMap<FlowKey, UdpFlow>,
    ping: FxHashMap<PingKey, PingFlow>,
    wake: Arc<WakeQueue>,
    timers: BinaryHeap<Reverse<(Instant, Token)>>,
    upstreams: Upstreams,
    /// When the outbound interfaces' addresses were last looked up (IPv4, IPv6).
    outbound_checked: [Option<Instant>; 2],
    epoch: Instant,
    seed: u64,
    ping_warned: bool,
    stats: Stats,
    listeners: FxHashMap<u64, Listener>,
    next_port_id: u64,
    udp_in: FxHashMap<FlowKey, InboundUdp>,
    udp_in_client: FxHashMap<(u64, SocketAddr), FlowKey>,
    nat_port: u16,
    /// The wake queue's spare buffer (see `drain_wakes`).
    wake_buf: Vec<Token>,
    /// The TCP flows' buffer budget.
    buffers: tcp::BufferPool,
    /// Stacks of finished short flows, reused by new ones (at most [`SPARES`]).
    spares: Vec<tcp::Spare>,
    /// The switch of a bridge network (`None`: one container on one TAP).
    bridge: Option<bridge::Bridge>,
    /// Which data-path thread (TAP queue) this is; thread 0 owns the published ports and
    /// the API (see [`queues`]).
    thread: usize,
    /// What the data-path threads of the container share (limits, handshakes, handoff).
    shared: Arc<queues::Shared>,
    /// Thread 0: the command channels of the other queues' threads.
    workers: Vec<mpsc::Sender<Command>>,
    /// Thread 0: frames of its flows that other threads read.
    handoff_rx: Option<mpsc::Receiver<queues::HandedFrame>>,
    /// Within a batch of frames read from the TAP (or a bridge port): TCP flows fed segments
    /// are serviced once when it ends ([`Dataplane::end_batch`]).
    batching: bool,
    /// The TCP flows fed segments in the current batch, in order.
    pending: Vec<FlowKey>,
    /// Within a batch: datagrams of one UDP flow read back to back, sent together.
    udp_batch: udp::Batch,
    /// Thread 0: the `--multicast` relays' listeners, in the configuration's order.
    relays: Vec<RelayListener>,
}

impl Dataplane {
    /// Builds the data path for a TAP whose write side is `tx_fd` and whose container MAC is
    /// `container_mac`; `vnet`: frames carry a `virtio_net_hdr` (checksum offload).
    pub fn new(cfg: NetConfig, tx_fd: OwnedFd, container_mac: [u8; 6], vnet: bool) -> Self {
        let tx = TxSink::new(tx_fd, container_mac, cfg.gateway_mac(), vnet);
        Self::with_sink(cfg, tx)
    }

    fn with_sink(cfg: NetConfig, tx: TxSink) -> Self {
        let v6 = cfg.addrs6.map(|a| GatewayAddrs6 {
            gateway: a.gateway,
            dns: a.dns,
            link_local: cfg.gateway_link_local(),
            net: a.net,
        });
        let gw = GatewayAddrs { gateway: cfg.addrs.gateway, dns: cfg.addrs.dns, net: cfg.addrs.net, v6 };
        let mut gw_cidrs = vec![IpCidr::new(cfg.addrs.gateway.into(), cfg.addrs.net.prefix_len())];
        if let Some(a) = cfg.addrs6 {
            gw_cidrs.push(IpCidr::new(a.gateway.into(), a.net.prefix_len()));
        }
        let upstreams = Upstreams::new(cfg.dns.clone(), cfg.dns_routes.clone());
        let epoch = Instant::now();
        let seed = u64::from(std::process::id()) << 32
            ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let buffers = tcp::BufferPool::new(cfg.limits.buffer_memory, cfg.limits.tcp_flows);
        // With vnet headers the TAP takes GSO frames: TCP flows send segments as large as at
        // the largest MTU whatever the container's, and the container's kernel takes each as
        // if merged from MSS-sized pieces (see TcpFlow::ingress).
        let tcp_mtu = if tx.vnet { (cfg.mtu as usize).max(TSO_MTU) } else { cfg.mtu as usize };
        Self {
            tcp_mtu,
            cfg,
            gw,
            gw_cidrs,
            tx,
            tcp: FxHashMap::default(),
            udp: FxHashMap::default(),
            ping: FxHashMap::default(),
            wake: Arc::default(),
            timers: BinaryHeap::new(),
            upstreams,
            outbound_checked: [None; 2],
            epoch,
            seed,
            ping_warned: false,
            stats: Stats::default(),
            listeners: FxHashMap::default(),
            next_port_id: 1,
            udp_in: FxHashMap::default(),
            udp_in_client: FxHashMap::default(),
            nat_port: NAT_PORT_FIRST,
            wake_buf: Vec::new(),
            buffers,
            spares: Vec::new(),
            bridge: None,
            thread: 0,
            shared: Arc::default(),
            workers: Vec::new(),
            handoff_rx: None,
            batching: false,
            pending: Vec::new(),
            udp_batch: udp::Batch::default(),
            relays: Vec::new(),
        }
    }

    /// The flow limits in force.
    pub fn limits(&self) -> crate::config::Limits {
        self.cfg.limits
    }

    /// The container addresses API requests are checked against.
    pub fn guest(&self) -> crate::api::Guest {
        crate::api::Guest { v4: self.cfg.addrs.container, v6_net: self.cfg.addrs6.map(|a| a.net) }
    }

    /// The container address a forward leads to: of the family the forward asks for, else of
    /// the host address's family when the container has it, else IPv4. The second address is
    /// the IPv4 fallback of a TCP forward that chose IPv6 by default: a connection the
    /// container refuses on IPv6 (a service bound to 0.0.0.0 only) is retried there.
    pub fn forward_target(&self, fwd: &Forward) -> (SocketAddr, Option<SocketAddr>) {
        if let Some(ip) = fwd.container_ip {
            return (SocketAddr::new(ip, fwd.container_port), None);
        }
        forward_addrs(fwd, self.cfg.addrs.container, self.container_v6())
    }

    /// The container's IPv6 address: the static one, or the one it autoconfigures from our
    /// router advertisements (prefix + modified EUI-64 of its MAC, the kernel's default).
    pub fn container_v6(&self) -> Option<Ipv6Addr> {
        let a = self.cfg.addrs6?;
        if self.cfg.static_ipv6 {
            return Some(a.container);
        }
        let iid = u128::from(wire::link_local_of(self.tx.dst_mac)) & u128::from(u64::MAX);
        Some(Ipv6Addr::from(u128::from(a.net.network()) | iid))
    }

    /// Sends an unsolicited router advertisement, for a container that autoconfigures IPv6.
    pub fn advertise_router(&mut self) {
        if self.cfg.addrs6.is_some() {
            let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
            self.router_advert(all_nodes, wire::ipv6_multicast_mac(all_nodes));
        }
    }

    fn router_advert(&mut self, dst: Ipv6Addr, dst_mac: [u8; 6]) {
        let Some(a) = self.cfg.addrs6 else { return };
        let dns_on = self.cfg.dns != crate::config::DnsUpstreams::Disabled;
        let ra = wire::RouterAdvert {
            mac: self.tx.src_mac,
            link_local: self.cfg.gateway_link_local(),
            prefix: a.net.network(),
            mtu: self.cfg.mtu,
            dns: dns_on.then_some(a.dns),
        };
        let len = wire::router_advert(&mut self.tx.buf, &ra, dst_mac, dst);
        self.tx.send(len);
    }

    /// Starts serving already bound forwards; returns them with their ids.
    ///
    /// # Errors
    /// If the reactor refuses a socket (nothing is published then).
    pub fn publish(&mut self, bound: Vec<Bound>) -> io::Result<Vec<PortInfo>> {
        self.publish_with(bound, None, |dp, fwd| dp.forward_target(fwd))
    }

    /// Lets the data path send from the `--multicast` relays' ports through their listeners
    /// (bound beforehand from the configuration's relays by `crate::multicast::listen`, in
    /// its order). Call before the queues' threads start and before any frame is read: the
    /// container may send to a group at once.
    ///
    /// # Errors
    /// If a socket cannot be cloned (out of fds).
    pub fn relay_senders(&mut self, socks: &[std::net::UdpSocket]) -> io::Result<()> {
        let mut senders = Vec::with_capacity(socks.len());
        for (sock, r) in socks.iter().zip(&self.cfg.multicast) {
            senders.push((r.addr(), sock.try_clone()?));
        }
        let _ = self.shared.group_senders.set(Arc::new(crate::multicast::GroupSenders::new(senders)));
        Ok(())
    }

    /// Starts serving the `--multicast` relays' listeners (those given to
    /// [`Dataplane::relay_senders`]): their groups' datagrams go to the container.
    ///
    /// # Errors
    /// If the reactor refuses a socket.
    pub fn relay(&mut self, socks: Vec<std::net::UdpSocket>) -> io::Result<()> {
        let mut listeners = Vec::with_capacity(socks.len());
        for (sock, r) in socks.into_iter().zip(&self.cfg.multicast) {
            tracing::info!(relay = %r, "multicast relay");
            listeners.push((r.addr(), tokio::net::UdpSocket::from_std(sock)?));
        }
        for (i, (group, sock)) in listeners.into_iter().enumerate() {
            let waker = self.waker(Token::Relay(i));
            self.relays.push(RelayListener { group, sock, waker });
        }
        for i in 0..self.relays.len() {
            self.service_relay(i, Instant::now());
        }
        Ok(())
    }

    /// Hands a relay's group datagrams to the container as multicast frames, from their
    /// senders; the relay's own, looped back by the host, stay out.
    fn service_relay(&mut self, i: usize, now: Instant) {
        let Self { relays, tx, stats, shared, .. } = self;
        let Some(l) = relays.get(i) else { return };
        let mut cx = Context::from_waker(&l.waker);
        let (off, max) = (wire::udp_payload_offset(l.group.ip()), wire::udp_max_payload(l.group.ip()));
        let mac = wire::multicast_mac(l.group.ip());
        for _ in 0..64 {
            match l.sock.try_recv_from(&mut tx.buf[off..off + max]) {
                Ok((n, peer))
                    if shared.echo().contains(peer.port())
                        || (peer.port() == l.group.port()
                            && shared.group_senders.get().is_some_and(|s| s.is_echo(&tx.buf[off..off + n], now))) =>
                {
                    stats.multicast_echoes += 1
                }
                Ok((n, peer)) => {
                    let len = wire::udp(&mut tx.buf, mac, tx.src_mac, peer, l.group, n);
                    tx.send(len);
                    stats.multicast_in += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if l.sock.poll_recv_ready(&mut cx).is_pending() {
                        return;
                    }
                }
                Err(e) => tracing::debug!(error = %e, group = %l.group, "multicast relay receive failed"),
            }
        }
        l.waker.wake_by_ref();
    }

    fn publish_with(
        &mut self,
        bound: Vec<Bound>,
        owner: Option<u64>,
        target: impl Fn(&Self, &Forward) -> (SocketAddr, Option<SocketAddr>),
    ) -> io::Result<Vec<PortInfo>> {
        let mut ready = Vec::with_capacity(bound.len());
        for b in bound {
            let sock = match b.sock {
                HostSocket::Tcp(t) => ListenSock::Tcp(tokio::net::TcpListener::from_std(t)?),
                HostSocket::Udp(u) => ListenSock::Udp(tokio::net::UdpSocket::from_std(u)?),
            };
            ready.push((b.fwd, sock));
        }
        let mut out = Vec::with_capacity(ready.len());
        for (fwd, sock) in ready {
            let id = self.next_port_id;
            self.next_port_id += 1;
            let (container, fallback) = target(self, &fwd);
            let info = PortInfo { id, proto: fwd.proto.as_str(), host: fwd.host, container, fallback };
            tracing::info!(id, proto = info.proto, host = %info.host, container = %info.container, "published");
            let waker = self.waker(Token::Listener(id));
            self.listeners.insert(id, Listener { info: info.clone(), sock, waker, owner });
            out.push(info);
            self.service_listener(id, Instant::now());
        }
        Ok(out)
    }

    /// Stops publishing these ids (all or none); open connections carry on.
    ///
    /// # Errors
    /// Names the first unknown id.
    pub fn unpublish(&mut self, ids: &[u64]) -> Result<(), String> {
        if let Some(bad) = ids.iter().find(|id| !self.listeners.contains_key(id)) {
            return Err(format!("no published port with id {bad}"));
        }
        for id in ids {
            if let Some(l) = self.listeners.remove(id) {
                tracing::info!(id, host = %l.info.host, "unpublished");
            }
        }
        Ok(())
    }

    /// Closes every published port's host socket (the container is gone: a new container
    /// may take the ports while this one's open connections drain). Clients of a published
    /// UDP port get nothing more through it.
    pub fn close_listeners(&mut self) {
        if !self.listeners.is_empty() {
            tracing::debug!(ports = self.listeners.len(), "published ports closed");
        }
        self.listeners.clear();
    }

    /// The published ports, by id.
    pub fn ports(&self) -> Vec<PortInfo> {
        let mut v: Vec<PortInfo> = self.listeners.values().map(|l| l.info.clone()).collect();
        v.sort_by_key(|p| p.id);
        v
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Add(fwds, reply) => {
                let r = ports::bind_all(&fwds)
                    .map_err(|e| e.to_string())
                    .and_then(|b| self.publish(b).map_err(|e| e.to_string()));
                let _ = reply.send(r);
            }
            Command::List(reply) => {
                let _ = reply.send(self.ports());
            }
            Command::Remove(ids, reply) => {
                let _ = reply.send(self.unpublish(&ids));
            }
            Command::Stats(reply) => {
                let mine = (self.stats(), self.flows(Instant::now()));
                if self.workers.is_empty() {
                    let _ = reply.send(mine);
                } else {
                    tokio::spawn(queues::gather(mine, self.workers.clone(), reply));
                }
            }
            Command::AddPort(spec, reply) => {
                let _ = reply.send(self.add_port(spec).map_err(|e| e.to_string()));
            }
            Command::RemovePort(id) => self.remove_port(id),
            Command::PublishFor(port, bound, reply) => {
                let _ = reply.send(self.publish_for(port, bound));
            }
            Command::PortStats(reply) => {
                let _ = reply.send(self.port_stats());
            }
            Command::Capture(cmd, reply) => {
                let _ = reply.send(self.capture(cmd));
            }
            Command::SetCapture(w) => self.tx.capture = w,
        }
    }

    fn service_listener(&mut self, id: u64, now: Instant) {
        let Some(l) = self.listeners.remove(&id) else { return };
        let waker = l.waker.clone();
        let mut cx = Context::from_waker(&waker);
        let (container, fallback) = (l.info.container, l.info.fallback);
        let mut more = true;
        match &l.sock {
            ListenSock::Tcp(t) => {
                for _ in 0..64 {
                    match t.poll_accept(&mut cx) {
                        Poll::Ready(Ok((s, peer))) => {
                            // TCP_NODELAY comes from the listener (ports::bind).
                            self.inbound_tcp(s, peer, container, fallback, now);
                        }
                        Poll::Ready(Err(e)) => tracing::debug!(error = %e, "accept failed"),
                        Poll::Pending => {
                            more = false;
                            break;
                        }
                    }
                }
            }
            ListenSock::Udp(u) => {
                // Datagrams of one client read back to back go to the container in one frame
                // when the TAP takes several (as a flow's replies do, see `UdpFlow::service`).
                let (off, max) = (wire::udp_payload_offset(container.ip()), wire::udp_max_payload(container.ip()));
                let mut run = udp::Run::default();
                let mut run_key = None;
                for _ in 0..64 {
                    let at = off + run.bytes();
                    match u.try_recv_from(&mut self.tx.buf[at..at + max]) {
                        Ok((n, peer)) => {
                            let Some(key) = self.udp_from_client(id, peer, container, now) else { continue };
                            if run_key.is_some_and(|k| k != key || !run.takes(n, max)) {
                                Self::send_run(&mut run, &mut run_key, &mut self.tx, off);
                                self.tx.buf.copy_within(at..at + n, off);
                            }
                            run.push(n);
                            run_key = Some(key);
                            if !self.tx.uso || !run.open(max) {
                                Self::send_run(&mut run, &mut run_key, &mut self.tx, off);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            Self::send_run(&mut run, &mut run_key, &mut self.tx, off);
                            if u.poll_recv_ready(&mut cx).is_pending() {
                                more = false;
                                break;
                            }
                        }
                        Err(e) => tracing::debug!(error = %e, "published UDP receive failed"),
                    }
                }
                Self::send_run(&mut run, &mut run_key, &mut self.tx, off);
            }
        }
        if more {
            waker.wake_by_ref();
        }
        self.listeners.insert(id, l);
    }

    /// Thread 0 opens a flow towards the container: listed, so other threads pass its frames
    /// on (before its first frame goes out: the container answers within that write).
    fn claim(&self, key: FlowKey) {
        if let Some(h) = &self.shared.handoff {
            h.claim(key);
        }
    }

    /// A flow of thread 0's ended (other threads never claim).
    fn release(&self, key: &FlowKey) {
        if self.thread == 0
            && let Some(h) = &self.shared.handoff
        {
            h.release(key);
        }
    }

    /// Counts a new handshake towards `dst` if fewer than `--max-handshakes` are in progress
    /// (on every thread: checked and counted under one lock).
    fn begin_handshake(&self, dst: IpAddr) -> bool {
        let Ok(mut h) = self.shared.handshakes.lock() else { return false };
        let n = h.entry(dst).or_default();
        if *n >= self.cfg.limits.handshakes {
            return false;
        }
        *n += 1;
        true
    }

    /// Opens the userspace-stack connection of a published-port client to `container`,
    /// whoever the client. (A kernel path for loopback clients, a socket inside the namespace
    /// spliced to the client's, carried fewer connections per second and no more bytes;
    /// session 10 of docs/BENCHMARKS.md.)
    fn inbound_tcp(
        &mut self,
        stream: TcpStream,
        peer: SocketAddr,
        container: SocketAddr,
        fallback: Option<SocketAddr>,
        now: Instant,
    ) {
        let Some(lease) = self.buffers.lease() else {
            self.stats.limit_drops += 1;
            let _ = socket2::SockRef::from(&stream).set_linger(Some(std::time::Duration::ZERO));
            return;
        };
        let tcp = &self.tcp;
        let visible = visible_source(&self.gw, &mut self.nat_port, peer, container, |k| tcp.contains_key(k));
        let key = FlowKey { src: container, dst: visible };
        self.seed = self.seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let stamp = self.stamp(now);
        let waker = self.waker(Token::Tcp(key));
        let spare = self.take_spare(lease.size);
        // Claimed before the SYN goes out: the container answers it within the write, on the
        // queue the flow's hash picks, which may be another thread's.
        self.claim(key);
        match TcpFlow::inbound(
            &key,
            &self.gw_cidrs,
            stream,
            waker,
            &mut self.tx,
            self.tcp_mtu,
            self.seed,
            now,
            stamp,
            lease,
            spare,
        ) {
            Ok(mut flow) => {
                tracing::debug!(%peer, seen_as = %visible, %container, "published TCP connection");
                flow.fallback = fallback;
                let v = flow.service(&mut self.tx, self.tcp_mtu, now, stamp);
                self.tcp.insert(key, flow);
                self.stats.inbound_tcp += 1;
                self.after_tcp(key, v, now);
            }
            Err(e) => {
                self.release(&key);
                tracing::debug!(%peer, error = ?e, "published TCP connection refused by the stack");
            }
        }
    }

    /// Sends the datagrams of a published-port client held in `run`, if any.
    fn send_run(run: &mut udp::Run, key: &mut Option<FlowKey>, tx: &mut TxSink, off: usize) {
        if let Some(k) = key.take() {
            run.send(tx, k.dst, k.src, off);
        }
    }

    /// The flow of a datagram from a client of a published UDP port (opened for a new
    /// client), or `None` when the flow limit drops it.
    fn udp_from_client(
        &mut self,
        listener: u64,
        peer: SocketAddr,
        container: SocketAddr,
        now: Instant,
    ) -> Option<FlowKey> {
        let key = match self.udp_in_client.get(&(listener, peer)) {
            Some(k) => *k,
            None => {
                if self.udp_in.len() >= self.cfg.limits.udp_flows {
                    self.stats.limit_drops += 1;
                    return None;
                }
                let (udp, udp_in) = (&self.udp, &self.udp_in);
                let taken = |k: &FlowKey| udp.contains_key(k) || udp_in.contains_key(k);
                let visible = visible_source(&self.gw, &mut self.nat_port, peer, container, taken);
                let key = FlowKey { src: container, dst: visible };
                tracing::debug!(%peer, seen_as = %visible, %container, "published UDP client");
                self.udp_in
                    .insert(key, InboundUdp { listener, client: peer, last: now, scheduled: None, batches: true });
                self.udp_in_client.insert((listener, peer), key);
                self.claim(key);
                key
            }
        };
        if let Some(e) = self.udp_in.get_mut(&key) {
            e.last = now;
        }
        self.schedule_udp_in(key, now);
        Some(key)
    }

    fn schedule_udp_in(&mut self, key: FlowKey, now: Instant) {
        let Some(e) = self.udp_in.get_mut(&key) else { return };
        let at = e.last + self.cfg.limits.udp_timeout;
        arm(&mut self.timers, &mut e.scheduled, at, Token::UdpIn(key), now);
    }

    fn expire_udp_in(&mut self, key: FlowKey, now: Instant) {
        let Some(e) = self.udp_in.get(&key) else { return };
        if now >= e.last + self.cfg.limits.udp_timeout || !self.listeners.contains_key(&e.listener) {
            let ck = (e.listener, e.client);
            self.udp_in.remove(&key);
            self.udp_in_client.remove(&ck);
            self.release(&key);
        } else {
            self.schedule_udp_in(key, now);
        }
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.queues = 1;
        s.frames_out = self.tx.frames;
        s.udp_coalesced = self.tx.udp_coalesced;
        s.bytes_out = self.tx.bytes;
        s.tcp_buffer_bytes = self.buffers.used() as u64;
        if self.thread == 0 {
            // Shared by the threads: counted once.
            let dns = self.upstreams.health().counts();
            (s.dns_queries, s.dns_failovers, s.dns_unanswered) = (dns.queries, dns.failovers, dns.unanswered);
        }
        s
    }

    /// The open flows.
    pub fn flows(&self, now: Instant) -> Vec<FlowInfo> {
        let secs = |t: Instant| now.saturating_duration_since(t).as_secs();
        let mut v: Vec<FlowInfo> = self
            .tcp
            .iter()
            .map(|(k, f)| FlowInfo {
                proto: "tcp",
                container: k.src.to_string(),
                peer: k.dst.to_string(),
                host: f.host_peer().map(|a| a.to_string()),
                age_s: secs(f.created()),
                bytes_out: f.bytes_out,
                bytes_in: f.bytes_in,
                thread: self.thread,
            })
            .collect();
        v.extend(self.udp.keys().map(|k| FlowInfo {
            proto: "udp",
            container: k.src.to_string(),
            peer: k.dst.to_string(),
            host: None,
            age_s: 0,
            bytes_out: 0,
            bytes_in: 0,
            thread: self.thread,
        }));
        v.extend(self.udp_in.iter().map(|(k, e)| FlowInfo {
            proto: "udp-in",
            container: k.src.to_string(),
            peer: k.dst.to_string(),
            host: Some(e.client.to_string()),
            age_s: secs(e.last),
            bytes_out: 0,
            bytes_in: 0,
            thread: self.thread,
        }));
        v.extend(self.ping.keys().map(|k| FlowInfo {
            proto: "icmp",
            container: k.src.to_string(),
            peer: k.dst.to_string(),
            host: None,
            age_s: 0,
            bytes_out: 0,
            bytes_in: 0,
            thread: self.thread,
        }));
        v
    }

    /// Number of open flows (TCP, UDP, ping).
    pub fn flow_counts(&self) -> (usize, usize, usize) {
        (self.tcp.len(), self.udp.len(), self.ping.len())
    }

    fn waker(&self, token: Token) -> Waker {
        Waker::from(Arc::new(FlowWaker { token, queue: self.wake.clone() }))
    }

    /// Runs until `shutdown` completes or the TAP fails.
    ///
    /// # Errors
    /// A TAP read error other than `EAGAIN` (the device went away).
    pub async fn run(
        &mut self,
        tap: &AsyncFd<OwnedFd>,
        mut commands: Option<mpsc::Receiver<Command>>,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        self.run_until(Some(tap), commands.take(), shutdown, false).await
    }

    /// Runs a bridge network's gateway and switch (its ports arrive as commands) until
    /// `shutdown` completes.
    ///
    /// # Errors
    /// Never in practice (port read errors unplug that port); kept for symmetry with `run`.
    pub async fn run_bridge(
        &mut self,
        commands: mpsc::Receiver<Command>,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        self.run_until(None, Some(commands), shutdown, false).await
    }

    /// After the container's processes are gone their sockets may still hold data the kernel
    /// is sending (a command that wrote and exited): keep carrying it until every TCP flow has
    /// finished or `grace` has passed, so no byte that was written is lost.
    ///
    /// # Errors
    /// As [`Dataplane::run`].
    pub async fn drain(&mut self, tap: &AsyncFd<OwnedFd>, grace: std::time::Duration) -> io::Result<()> {
        if !self.carrying() {
            return Ok(());
        }
        tracing::debug!(flows = self.tcp.len(), "draining TCP flows after the container exited");
        self.run_until(Some(tap), None, tokio::time::sleep(grace), true).await
    }

    /// Bytes read from and written to the TAP so far.
    fn moved(&self) -> u64 {
        self.stats.bytes_in + self.tx.bytes
    }

    /// Whether a TCP flow may still carry the container's bytes: one whose host connect
    /// completed (a connect still pending when the container is gone has nothing to carry).
    fn carrying(&self) -> bool {
        self.tcp.values().any(TcpFlow::connected)
    }

    async fn run_until(
        &mut self,
        tap: Option<&AsyncFd<OwnedFd>>,
        commands: Option<mpsc::Receiver<Command>>,
        shutdown: impl Future<Output = ()>,
        until_idle: bool,
    ) -> io::Result<()> {
        // Kept across `run` and `drain`: the other threads keep handing frames over.
        let mut handoff = self.handoff_rx.take();
        let r = self.run_loop(tap, commands, &mut handoff, shutdown, until_idle).await;
        self.handoff_rx = handoff;
        r
    }

    async fn run_loop(
        &mut self,
        tap: Option<&AsyncFd<OwnedFd>>,
        mut commands: Option<mpsc::Receiver<Command>>,
        handoff: &mut Option<mpsc::Receiver<queues::HandedFrame>>,
        shutdown: impl Future<Output = ()>,
        until_idle: bool,
    ) -> io::Result<()> {
        let mut rx = vec![0u8; wire::VNET_HDR_LEN + wire::FRAME_MAX];
        let wake = self.wake.clone();
        tokio::pin!(shutdown);
        enum Event<'a> {
            Stop,
            Tap(tokio::io::unix::AsyncFdReadyGuard<'a, OwnedFd>),
            Wake,
            Timer,
            Command(Option<Command>),
            Handed(Option<queues::HandedFrame>),
            Poll,
        }
        // With polling off (`--busy-poll 0`) none of its bookkeeping runs: no clock reads.
        let polling = !self.cfg.busy_poll.is_zero();
        let mut spin = spin::Spin::new(self.cfg.busy_poll);
        let mut poll_until: Option<Instant> = None;
        // Whether other threads want the CPUs: more runnable threads on the machine than
        // this process may use (itself among them). Unknown (no procfs) counts as not.
        let runnable = if polling { crate::sys::RunnableThreads::open().ok() } else { None };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let crowded = || runnable.as_ref().and_then(|r| r.sample()).is_some_and(|n| n as usize > cpus);
        let mut moved_before = self.moved();
        loop {
            let next = self.timers.peek().map(|Reverse((t, _))| *t);
            let sleep = async move {
                match next {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            let ev = tokio::select! {
                biased;
                () = &mut shutdown => Event::Stop,
                r = async { match tap { Some(t) => t.readable().await, None => std::future::pending().await } } => Event::Tap(r?),
                () = wake.notify.notified() => Event::Wake,
                () = sleep => Event::Timer,
                c = async { match commands.as_mut() { Some(c) => c.recv().await, None => std::future::pending().await } } => Event::Command(c),
                h = async { match handoff.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => Event::Handed(h),
                // Busy polling (see `spin`): while the window is open, the runtime polls the
                // reactor without sleeping and the loop comes round again (`Spin::polled`
                // closes the window at its deadline).
                () = async { match poll_until { Some(_) => tokio::task::yield_now().await, None => std::future::pending().await } } => Event::Poll,
            };
            if let Event::Poll = ev {
                if spin.polled(Instant::now()) {
                    // Any other runnable thread on this CPU goes first.
                    let _ = nix::sched::sched_yield();
                } else {
                    poll_until = None;
                }
                continue;
            }
            if polling && let Some(hit) = spin.woke(Instant::now()) {
                self.stats.busy_polls += 1;
                self.stats.busy_poll_hits += u64::from(hit);
            }
            match ev {
                Event::Stop => return Ok(()),
                Event::Tap(mut guard) => {
                    self.batching = true;
                    let mut failed = None;
                    for _ in 0..RX_BATCH {
                        match guard.try_io(|fd| nix::unistd::read(fd.get_ref(), &mut rx).map_err(io::Error::from)) {
                            Ok(Ok(n)) if !self.tx.vnet => self.frame(&rx[..n], false, Instant::now()),
                            Ok(Ok(n)) if n >= wire::VNET_HDR_LEN => match wire::vnet_trusted(&rx[..wire::VNET_HDR_LEN])
                            {
                                Some(trusted) => self.frame(&rx[wire::VNET_HDR_LEN..n], trusted, Instant::now()),
                                None => self.stats.drops.count(gateway::Drop::Malformed),
                            },
                            Ok(Ok(_)) => self.stats.drops.count(gateway::Drop::Malformed),
                            Ok(Err(e)) => {
                                failed = Some(e);
                                break;
                            }
                            Err(_would_block) => break,
                        }
                    }
                    self.end_batch(Instant::now());
                    if let Some(e) = failed {
                        return Err(e);
                    }
                }
                Event::Command(Some(c)) => self.command(c),
                Event::Command(None) => commands = None,
                Event::Handed(Some(f)) => {
                    // Frames another queue read for this thread's flows: a burst like one read
                    // from the TAP (a flow answered once, UDP datagrams sent in batches).
                    let now = Instant::now();
                    self.batching = true;
                    self.handed(&f, now);
                    while let Some(f) = handoff.as_mut().and_then(|h| h.try_recv().ok()) {
                        self.handed(&f, now);
                    }
                    self.end_batch(now);
                }
                Event::Handed(None) => *handoff = None,
                Event::Wake | Event::Timer | Event::Poll => {}
            }
            let now = Instant::now();
            self.drain_wakes(now);
            self.run_timers(now);
            self.compact_timers();
            // A capture is readable as it grows (tshark -r, tail -f | tcpdump -r -).
            if let Some(c) = &self.tx.capture
                && let Ok(mut w) = c.lock()
            {
                let _ = w.flush();
            }
            if until_idle && !self.carrying() {
                return Ok(());
            }
            if polling {
                let moved = self.moved();
                poll_until = spin.idle(Instant::now(), moved.saturating_sub(moved_before), crowded);
                self.stats.busy_poll_backoffs = spin.backoffs();
                moved_before = moved;
            }
        }
    }

    /// Records every frame in and out with this writer from now on (every queue's thread).
    pub fn set_capture(&mut self, w: crate::pcap::PcapWriter) {
        let c = Arc::new(Mutex::new(w));
        for q in &self.workers {
            let _ = q.try_send(Command::SetCapture(Some(c.clone())));
        }
        self.tx.capture = Some(c);
    }

    /// Starts a packet capture of every frame in and out to a new pcap file.
    ///
    /// # Errors
    /// When the file cannot be created or a capture already runs.
    pub fn start_capture(
        &mut self,
        path: &std::path::Path,
        count: Option<u64>,
        mac: Option<[u8; 6]>,
    ) -> Result<(), String> {
        if self.tx.capture.is_some() {
            return Err("a capture is already running; stop it first".into());
        }
        let mut w = crate::pcap::PcapWriter::create(path, count)
            .map_err(|e| format!("cannot create capture file {}: {e}", path.display()))?;
        if let Some(m) = mac {
            w = w.only_mac(m);
        }
        tracing::info!(path = %path.display(), ?count, ?mac, "capture started");
        self.set_capture(w);
        Ok(())
    }

    fn capture(&mut self, cmd: CaptureCmd) -> Result<u64, String> {
        match cmd {
            CaptureCmd::Start { path, count, mac } => self.start_capture(&path, count, mac).map(|()| 0),
            CaptureCmd::Status => match &self.tx.capture {
                Some(c) => {
                    let mut w = c.lock().map_err(|_| "the capture failed".to_string())?;
                    let _ = w.flush();
                    Ok(w.frames)
                }
                None => Err("no capture is running".into()),
            },
            CaptureCmd::Stop => match self.tx.capture.take() {
                Some(c) => {
                    for q in &self.workers {
                        let _ = q.try_send(Command::SetCapture(None));
                    }
                    let mut w = c.lock().map_err(|_| "the capture failed".to_string())?;
                    // Other threads may hold it a moment longer: they write nothing more.
                    w.close();
                    w.flush().map_err(|e| format!("write the capture: {e}"))?;
                    tracing::info!(frames = w.frames, "capture stopped");
                    Ok(w.frames)
                }
                None => Err("no capture is running".into()),
            },
        }
    }

    /// Handles one frame from the container; `trusted`: its kernel vouched for the L4 checksum.
    pub fn frame(&mut self, frame: &[u8], trusted: bool, now: Instant) {
        self.tx.record(frame);
        self.stats.frames_in += 1;
        self.stats.bytes_in += frame.len() as u64;
        self.dispatch(frame, trusted, now);
    }

    /// On a thread other than 0, for a frame of no flow of its own: passes it to thread 0 if
    /// thread 0 owns the flow (a published port's client).
    fn hand_over(&mut self, key: &FlowKey, frame: &[u8], trusted: bool) -> bool {
        let Some(h) = &self.shared.handoff else { return false };
        if self.thread == 0 || !h.owns(key) {
            return false;
        }
        if h.send(frame, trusted) {
            self.stats.handed_over += 1;
        } else {
            self.stats.handover_drops += 1;
        }
        true
    }

    fn dispatch(&mut self, frame: &[u8], trusted: bool, now: Instant) {
        let (mac, pkt) = match gateway::classify(frame, &self.gw, trusted) {
            Ok(x) => x,
            Err(why) => {
                self.stats.drops.count(why);
                tracing::trace!(?why, len = frame.len(), "frame dropped");
                return;
            }
        };
        self.tx.dst_mac = mac;
        match pkt {
            Packet::ArpRequest { mac, ip, target } => {
                let len = wire::arp_reply(&mut self.tx.buf, self.tx.src_mac, target, mac, ip);
                self.tx.send(len);
            }
            Packet::NeighborSolicit { src, target } => {
                tracing::debug!(%src, %target, "neighbour solicitation answered");
                let len = wire::neighbor_advert(&mut self.tx.buf, self.tx.src_mac, target, mac, src, true);
                self.tx.send(len);
            }
            Packet::Dhcp { payload } => self.dhcp(mac, payload),
            Packet::RouterSolicit { src } => {
                let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
                let dst = if src.is_unspecified() { all_nodes } else { src };
                let dst_mac = if src.is_unspecified() { wire::ipv6_multicast_mac(all_nodes) } else { mac };
                self.router_advert(dst, dst_mac);
            }
            Packet::Tcp { ip, seg } => self.tcp_segment(frame, trusted, ip, &seg, now),
            Packet::Udp { ip, src, dst, payload } => self.udp_datagram(frame, trusted, ip, src, dst, payload, now),
            Packet::Echo { ip, src, dst, ident, seq, data } => self.echo(ip, src, dst, ident, seq, data, now),
        }
    }

    /// Whether `--outbound-addr[6]` of that family named an interface.
    fn outbound_iface(&self, v6: bool) -> bool {
        if v6 { self.cfg.outbound_ifaces.1.is_some() } else { self.cfg.outbound_ifaces.0.is_some() }
    }

    /// [`Self::refresh_outbound`] at most once a second per family: before a flow is made or
    /// sends from an outbound interface's address.
    fn check_outbound(&mut self, v6: bool, now: Instant) {
        let last = &mut self.outbound_checked[usize::from(v6)];
        if last.is_some_and(|t| now.saturating_duration_since(t) < std::time::Duration::from_secs(1)) {
            return;
        }
        *last = Some(now);
        self.refresh_outbound(v6);
    }

    /// Looks up the address of the `--outbound-addr[6] IFACE` interface of that family again,
    /// after the kernel refused the one in use (DHCP renewed it, a VPN reconnected). True
    /// when it changed: host sockets made now take the new one. An interface left without an
    /// address keeps the old one, which fails: nothing leaves from another interface.
    fn refresh_outbound(&mut self, v6: bool) -> bool {
        let (iface, now, old) = if v6 {
            let Some(i) = &self.cfg.outbound_ifaces.1 else { return false };
            let new = crate::config::outbound_v6(i).map(IpAddr::from);
            (i, new, self.cfg.outbound_v6.map(IpAddr::from))
        } else {
            let Some(i) = &self.cfg.outbound_ifaces.0 else { return false };
            let new = crate::config::outbound_v4(i).map(IpAddr::from);
            (i, new, self.cfg.outbound_v4.map(IpAddr::from))
        };
        let Some(new) = now.filter(|n| Some(*n) != old) else { return false };
        tracing::info!(%iface, ?old, %new, "outbound interface's address changed: new flows use the new one");
        match new {
            IpAddr::V4(a) => self.cfg.outbound_v4 = Some(a),
            IpAddr::V6(a) => self.cfg.outbound_v6 = Some(a),
        }
        true
    }

    /// Whether a datagram to `dst` is a query for the DNS forwarder (its address, port 53,
    /// the forwarder on, a network with a way out).
    fn forwards_dns(&self, dst: SocketAddr) -> bool {
        let dns: IpAddr = match dst.ip() {
            IpAddr::V4(_) => self.gw.dns.into(),
            IpAddr::V6(_) => match self.gw.v6 {
                Some(g) => g.dns.into(),
                None => return false,
            },
        };
        dst.port() == 53
            && dst.ip() == dns
            && self.cfg.dns != crate::config::DnsUpstreams::Disabled
            && !self.cfg.bridge.is_some_and(|b| b.internal)
    }

    fn target(&mut self, dst: SocketAddr, now: Instant) -> Target {
        let (gateway, dns, loopback): (IpAddr, IpAddr, IpAddr) = match dst.ip() {
            IpAddr::V4(_) => (self.gw.gateway.into(), self.gw.dns.into(), Ipv4Addr::LOCALHOST.into()),
            IpAddr::V6(_) => match self.gw.v6 {
                Some(g) => (g.gateway.into(), g.dns.into(), Ipv6Addr::LOCALHOST.into()),
                None => return Target::Unreachable(Unreachable::Net),
            },
        };
        let ip = dst.ip();
        let internal = self.cfg.bridge.is_some_and(|b| b.internal);
        // DNS first: on a bridge network the gateway address is also the DNS address.
        if ip == dns && self.cfg.dns != crate::config::DnsUpstreams::Disabled && (dns != gateway || dst.port() == 53) {
            return match (dst.port(), self.upstreams.pick(now)) {
                (53, Some(up)) if !internal => Target::Host(up),
                _ => Target::Refuse,
            };
        }
        if ip == gateway {
            return if self.cfg.allow_host_loopback && !internal {
                Target::Host(SocketAddr::new(loopback, dst.port()))
            } else {
                Target::Refuse
            };
        }
        if self.gw.on_segment(ip) {
            // Nobody else on the segment is reached through the gateway.
            return Target::Unreachable(Unreachable::Host);
        }
        if internal {
            // An internal network has no way out.
            return Target::Unreachable(Unreachable::Net);
        }
        Target::Host(dst)
    }

    /// Answers a DHCP client with the container's own address (single-container networks;
    /// bridge networks' containers are configured from IPAM and never ask).
    fn dhcp(&mut self, mac: [u8; 6], payload: &[u8]) {
        if self.bridge.is_some() {
            self.stats.drops.count(gateway::Drop::NotRoutable);
            return;
        }
        let Some(req) = crate::dhcp::parse(payload) else {
            self.stats.drops.count(gateway::Drop::Malformed);
            return;
        };
        let a = &self.cfg.addrs;
        let lease = crate::dhcp::Lease {
            ip: a.container,
            prefix: a.net.prefix_len(),
            server: a.gateway,
            router: self.cfg.default_route.then_some(a.gateway),
            dns: (!matches!(self.cfg.dns, crate::config::DnsUpstreams::Disabled)).then_some(a.dns),
            mtu: u16::try_from(self.cfg.mtu).unwrap_or(u16::MAX),
            seconds: 86400,
        };
        let Some(reply) = crate::dhcp::reply(&req, &lease) else { return };
        let at = wire::udp_payload_offset(IpAddr::V4(a.gateway));
        let Some(slot) = self.tx.buf.get_mut(at..at + reply.len()) else { return };
        slot.copy_from_slice(&reply);
        let src = SocketAddr::from((a.gateway, crate::dhcp::SERVER_PORT));
        let dst = SocketAddr::from((Ipv4Addr::BROADCAST, crate::dhcp::CLIENT_PORT));
        tracing::debug!(kind = req.kind, ip = %lease.ip, "DHCP answered");
        let len = wire::udp(&mut self.tx.buf, mac, self.tx.src_mac, src, dst, reply.len());
        self.tx.send(len);
    }

    fn reset(&mut self, seg: &TcpSeg) {
        let info = SegmentInfo { src: seg.src, dst: seg.dst, seq: seg.seq, ack: seg.ack, seg_len: seg.seg_len };
        let len = wire::tcp_rst(&mut self.tx.buf, self.tx.dst_mac, self.tx.src_mac, &info);
        self.tx.send(len);
        self.stats.tcp_resets += 1;
    }

    fn icmp_error(&mut self, reporter: IpAddr, code: Unreachable, offending: &[u8]) {
        let len = wire::icmp_unreachable(&mut self.tx.buf, self.tx.dst_mac, self.tx.src_mac, reporter, code, offending);
        self.tx.send(len);
        self.stats.icmp_errors += 1;
    }

    fn stamp(&self, now: Instant) -> smoltcp::time::Instant {
        stack_time(self.epoch, now)
    }

    /// `frame`/`trusted`: the whole frame, in case another thread owns the flow.
    fn tcp_segment(&mut self, frame: &[u8], trusted: bool, ip: &[u8], seg: &TcpSeg, now: Instant) {
        let key = FlowKey { src: seg.src, dst: seg.dst };
        let stamp = self.stamp(now);
        if let Some(flow) = self.tcp.get_mut(&key) {
            flow.ingress(ip, seg, &mut self.tx, self.tcp_mtu, stamp);
            // Answered when the batch ends: one ACK and one host write for all of them. Unless
            // the segment ended the connection (a reset, the last ACK): the flow leaves now, so
            // a SYN reusing its ports later in the burst opens a new flow instead of meeting
            // the closed stack, which would refuse it.
            if self.batching && !flow.stack_closed() {
                if !flow.pending {
                    flow.pending = true;
                    self.pending.push(key);
                }
                return;
            }
            flow.pending = false;
            match flow.service(&mut self.tx, self.tcp_mtu, now, stamp) {
                // The common case, with the flow already in hand: no second lookup.
                Verdict::Keep => {
                    if flow.connected() {
                        end_handshake(&self.shared.handshakes, &key, flow);
                    }
                    if let Some(at) = flow.poll_at(self.epoch, now, stamp) {
                        arm(&mut self.timers, &mut flow.scheduled, at, Token::Tcp(key), now);
                    }
                }
                v => self.after_tcp(key, v, now),
            }
            return;
        }
        if self.hand_over(&key, frame, trusted) {
            return;
        }
        if seg.rst {
            return;
        }
        if !seg.syn || seg.ack.is_some() {
            self.reset(seg);
            return;
        }
        let target = match self.target(seg.dst, now) {
            Target::Host(t) => t,
            Target::Refuse => return self.reset(seg),
            Target::Unreachable(code) => return self.icmp_error(seg.dst.ip(), code, ip),
        };
        let lease = if self.begin_handshake(seg.dst.ip()) {
            let lease = self.buffers.lease();
            if lease.is_none() {
                undo_handshake(&self.shared.handshakes, seg.dst.ip());
            }
            lease
        } else {
            None
        };
        let Some(lease) = lease else {
            self.stats.limit_drops += 1;
            self.reset(seg);
            return;
        };
        if self.outbound_iface(target.is_ipv6()) {
            self.check_outbound(target.is_ipv6(), now);
        }
        let mut host = connect_nonblocking(target, self.cfg.outbound_v4, self.cfg.outbound_v6);
        if matches!(&host, Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL))
            && self.refresh_outbound(target.is_ipv6())
        {
            host = connect_nonblocking(target, self.cfg.outbound_v4, self.cfg.outbound_v6);
        }
        let host = match host {
            Ok(h) => h,
            Err(e) => {
                undo_handshake(&self.shared.handshakes, seg.dst.ip());
                tracing::debug!(%target, error = %e, "host connect failed at once");
                return match e.raw_os_error() {
                    Some(libc::ENETUNREACH) => self.icmp_error(seg.dst.ip(), Unreachable::Net, ip),
                    Some(libc::EHOSTUNREACH) => self.icmp_error(seg.dst.ip(), Unreachable::Host, ip),
                    _ => self.reset(seg),
                };
            }
        };
        tracing::debug!(src = %seg.src, dst = %seg.dst, %target, "TCP flow");
        self.seed = self.seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let waker = self.waker(Token::Tcp(key));
        let spare = self.take_spare(lease.size);
        let mut flow = TcpFlow::outbound(
            &key,
            &self.gw_cidrs,
            host,
            waker,
            &mut self.tx,
            self.tcp_mtu,
            self.seed,
            now,
            stamp,
            ip,
            lease,
            spare,
        );
        if !self.upstreams.routes().is_empty() && self.forwards_dns(seg.dst) {
            flow.route_dns(tcp::DnsRoute {
                routes: self.upstreams.routes().clone(),
                health: self.upstreams.health().clone(),
                outbound: (self.cfg.outbound_v4, self.cfg.outbound_v6),
            });
        }
        flow.ingress(ip, seg, &mut self.tx, self.tcp_mtu, stamp);
        let v = flow.service(&mut self.tx, self.tcp_mtu, now, stamp);
        self.tcp.insert(key, flow);
        self.stats.tcp_flows += 1;
        self.after_tcp(key, v, now);
    }

    fn after_tcp(&mut self, key: FlowKey, v: Verdict, now: Instant) {
        match v {
            Verdict::Keep => {
                let stamp = self.stamp(now);
                let Some(flow) = self.tcp.get_mut(&key) else {
                    return;
                };
                if flow.connected() {
                    end_handshake(&self.shared.handshakes, &key, flow);
                }
                if let Some(at) = flow.poll_at(self.epoch, now, stamp) {
                    arm(&mut self.timers, &mut flow.scheduled, at, Token::Tcp(key), now);
                }
            }
            Verdict::Remove => {
                if let Some(mut flow) = self.tcp.remove(&key) {
                    self.release(&key);
                    end_handshake(&self.shared.handshakes, &key, &mut flow);
                    if let Some(v4) = flow.fallback
                        && flow.refused()
                    {
                        // Refused on IPv6 before anything was said: try the IPv4 service.
                        let host = flow.into_host();
                        if let Ok(peer) = host.peer_addr() {
                            tracing::debug!(%peer, to = %v4, "refused on IPv6; retrying on IPv4");
                            self.inbound_tcp(host, peer, v4, None, now);
                        }
                        return;
                    }
                    self.stats.tcp_bytes_out += flow.bytes_out;
                    self.stats.tcp_bytes_in += flow.bytes_in;
                    self.keep_spare(flow);
                }
            }
            Verdict::Unreachable(code) => {
                if let Some(mut flow) = self.tcp.remove(&key) {
                    self.release(&key);
                    end_handshake(&self.shared.handshakes, &key, &mut flow);
                    self.icmp_error(key.dst.ip(), code, &flow.syn_quote);
                    self.keep_spare(flow);
                }
            }
        }
    }

    /// Keeps a finished flow's stack for a later flow, if there is room and it qualifies.
    fn keep_spare(&mut self, flow: TcpFlow) {
        if self.spares.len() < SPARES
            && let Some(s) = flow.into_spare()
        {
            self.spares.push(s);
        }
    }

    /// A spare stack whose buffers have `size` bytes, if one is kept.
    fn take_spare(&mut self, size: usize) -> Option<tcp::Spare> {
        let i = self.spares.iter().position(|s| s.size == size)?;
        self.stats.tcp_stacks_reused += 1;
        Some(self.spares.swap_remove(i))
    }

    /// `frame`/`trusted`: the whole frame, in case another thread owns the flow.
    #[allow(clippy::too_many_arguments)]
    fn udp_datagram(
        &mut self,
        frame: &[u8],
        trusted: bool,
        ip: &[u8],
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
        now: Instant,
    ) {
        if dst.ip().is_multicast() {
            return self.multicast_datagram(ip, src, dst, payload, now);
        }
        if dst.port() == 53
            && let Some(b) = &self.bridge
            && self.gw.owns_ip(dst.ip())
        {
            // A bridge network's DNS answers its containers' names itself.
            let internal = self.cfg.bridge.is_some_and(|o| o.internal);
            let answer = crate::dns::answer_local(payload, &b.records)
                .or_else(|| internal.then(|| crate::dns::refused(payload)).flatten());
            if let Some(a) = answer {
                let off = wire::udp_payload_offset(dst.ip());
                self.tx.buf[off..off + a.len()].copy_from_slice(&a);
                let len = wire::udp(&mut self.tx.buf, self.tx.dst_mac, self.tx.src_mac, dst, src, a.len());
                self.tx.send(len);
                return;
            }
        }
        let key = FlowKey { src, dst };
        // A query to the DNS forwarder: the upstreams to try, in order.
        let dns =
            self.forwards_dns(dst).then(|| self.upstreams.candidates(crate::dns::query_name(payload).as_deref(), now));
        if let Some(e) = self.udp_in.get_mut(&key) {
            // The container answers a client of a published UDP port: in batches, as below.
            e.last = now;
            let (listener, client) = (e.listener, e.client);
            if self.batching && e.batches && !payload.is_empty() {
                return self.hold_udp(key, payload, now);
            }
            if self.udp_batch.holds(&key) {
                self.send_udp_batch(now);
            }
            if let Some(Listener { sock: ListenSock::Udp(u), .. }) = self.listeners.get(&listener) {
                let _ = socket2::SockRef::from(u).send_to(payload, &client.into());
            }
            return;
        }
        if !self.udp.contains_key(&key) {
            if self.hand_over(&key, frame, trusted) {
                return;
            }
            let Some(slot) = queues::Slot::take(&self.shared.udp_flows, self.cfg.limits.udp_flows) else {
                self.stats.limit_drops += 1;
                return;
            };
            let target = match dns.as_ref().map(|d| d.first().copied()) {
                Some(Some(first)) => first,
                Some(None) => return self.icmp_error(dst.ip(), Unreachable::Port, ip),
                None => match self.target(dst, now) {
                    Target::Host(t) => t,
                    Target::Refuse => return self.icmp_error(dst.ip(), Unreachable::Port, ip),
                    Target::Unreachable(code) => return self.icmp_error(dst.ip(), code, ip),
                },
            };
            if self.outbound_iface(target.is_ipv6()) {
                self.check_outbound(target.is_ipv6(), now);
            }
            let mut outbound = (self.cfg.outbound_v4, self.cfg.outbound_v6);
            let mut made = UdpFlow::new(target, outbound, dst, self.waker(Token::Udp(key)), now, slot);
            if matches!(&made, Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL))
                && self.refresh_outbound(target.is_ipv6())
                && let Some(slot) = queues::Slot::take(&self.shared.udp_flows, self.cfg.limits.udp_flows)
            {
                outbound = (self.cfg.outbound_v4, self.cfg.outbound_v6);
                made = UdpFlow::new(target, outbound, dst, self.waker(Token::Udp(key)), now, slot);
            }
            let mut flow = match made {
                Ok(f) => f,
                Err(e) => {
                    tracing::debug!(%target, error = %e, "UDP flow failed");
                    let code = match e.raw_os_error() {
                        Some(libc::ENETUNREACH) => Unreachable::Net,
                        Some(libc::EACCES) | Some(libc::EPERM) => Unreachable::Prohibited,
                        _ => Unreachable::Host,
                    };
                    return self.icmp_error(dst.ip(), code, ip);
                }
            };
            tracing::debug!(%src, %dst, %target, "UDP flow");
            flow.set_timeout(self.cfg.limits.udp_timeout);
            if dns.is_some() {
                flow.watch_dns(target, outbound, self.upstreams.health().clone());
            }
            self.udp.insert(key, flow);
            self.stats.udp_flows += 1;
        }
        let Some(flow) = self.udp.get_mut(&key) else {
            return;
        };
        // Bound to an outbound interface's old address? Its datagrams would leave from an
        // address the host no longer has and answers would not come back: a new flow takes
        // this one from the interface's address now.
        if let Some(old) = flow.source()
            && self.outbound_iface(old.is_ipv6())
        {
            self.check_outbound(old.is_ipv6(), now);
            let current = if old.is_ipv6() {
                self.cfg.outbound_v6.map(IpAddr::from)
            } else {
                self.cfg.outbound_v4.map(IpAddr::from)
            };
            if current.is_some_and(|c| c != old) {
                tracing::debug!(%src, %dst, %old, "UDP flow made again from the outbound interface's new address");
                self.udp.remove(&key);
                return self.udp_datagram(frame, trusted, ip, src, dst, payload, now);
            }
        }
        let Some(mut flow) = self.udp.get_mut(&key) else { return };
        // Datagrams of a burst wait to go in one segmented send, when the burst ends or one
        // cannot join; a datagram sent alone goes after those of its flow held before it.
        if self.batching && flow.batches(payload.len()) {
            return self.hold_udp(key, payload, now);
        }
        if self.udp_batch.holds(&key) {
            self.send_udp_batch(now);
            let Some(f) = self.udp.get_mut(&key) else { return };
            flow = f;
        }
        if let Some(servers) = dns {
            flow.send_dns(&key, payload, servers, &mut self.tx, now);
        } else if let Err(e) = flow.send(payload, now)
            && e.raw_os_error() == Some(libc::EMSGSIZE)
        {
            // Larger than the host path takes unfragmented: say so, as a router would.
            let mtu = flow.path_mtu().unwrap_or(wire::IPV6_MIN_MTU as u32);
            let len = wire::icmp_too_big(&mut self.tx.buf, self.tx.dst_mac, self.tx.src_mac, dst.ip(), mtu, ip);
            self.tx.send(len);
            self.stats.icmp_errors += 1;
        }
        let alive = flow.service(&key, &mut self.tx, now);
        self.after_udp(key, alive, now);
    }

    /// A container datagram to a multicast group: sent on by the group's relay, from the
    /// group's port if it came from there, else from a host socket of the container
    /// endpoint's (answers come back through it); dropped for groups not relayed.
    fn multicast_datagram(&mut self, ip: &[u8], src: SocketAddr, dst: SocketAddr, payload: &[u8], now: Instant) {
        let Some(relay) = self.cfg.multicast.iter().find(|r| r.addr() == dst) else {
            self.stats.drops.count(gateway::Drop::NotRoutable);
            return;
        };
        // The container's TTL (IPv4) or hop limit (IPv6): how far it meant the datagram to go.
        let ttl = if dst.is_ipv4() { ip.get(8) } else { ip.get(7) }.copied().unwrap_or(1);
        // From the group's own port (an mDNS responder): from that port on the host too.
        if src.port() == dst.port()
            && let Some(sent) = self.shared.group_senders.get().and_then(|s| s.send(dst, payload, ttl, now))
        {
            match sent {
                Ok(()) => self.stats.multicast_out += 1,
                Err(e) => tracing::debug!(%dst, error = %e, "multicast send from the group's port failed"),
            }
            return;
        }
        let key = FlowKey { src, dst };
        if !self.udp.contains_key(&key) {
            let Some(slot) = queues::Slot::take(&self.shared.udp_flows, self.cfg.limits.udp_flows) else {
                self.stats.limit_drops += 1;
                return;
            };
            let source = udp::outbound_source(dst, (self.cfg.outbound_v4, self.cfg.outbound_v6));
            let waker = self.waker(Token::Udp(key));
            // The sender's MAC (dispatch set it): where its answers go.
            let mac = self.tx.dst_mac;
            let mut flow = match UdpFlow::multicast(relay, mac, source, self.shared.echo(), waker, now, slot) {
                Ok(f) => f,
                Err(e) => {
                    tracing::debug!(%relay, error = %e, "multicast flow failed");
                    return;
                }
            };
            tracing::debug!(%src, %relay, "multicast flow");
            flow.set_timeout(self.cfg.limits.udp_timeout);
            self.udp.insert(key, flow);
            self.stats.udp_flows += 1;
        }
        let Some(flow) = self.udp.get_mut(&key) else { return };
        match flow.send_multicast(payload, ttl, now) {
            Ok(()) => self.stats.multicast_out += 1,
            Err(e) => tracing::debug!(%dst, error = %e, "multicast send failed"),
        }
        let alive = flow.service(&key, &mut self.tx, now);
        self.after_udp(key, alive, now);
    }

    fn after_udp(&mut self, key: FlowKey, alive: bool, now: Instant) {
        if !alive {
            self.udp.remove(&key);
            return;
        }
        if let Some(flow) = self.udp.get_mut(&key) {
            let at = flow.deadline();
            arm(&mut self.timers, &mut flow.scheduled, at, Token::Udp(key), now);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn echo(&mut self, ip: &[u8], src: IpAddr, dst: IpAddr, ident: u16, seq: u16, data: &[u8], now: Instant) {
        let dns_on = self.cfg.dns != crate::config::DnsUpstreams::Disabled;
        let is_dns = |d: IpAddr| d == IpAddr::from(self.gw.dns) || self.gw.v6.is_some_and(|g| d == IpAddr::from(g.dns));
        if self.gw.owns_ip(dst) && (dns_on || !is_dns(dst)) {
            let len =
                wire::icmp_echo_reply(&mut self.tx.buf, self.tx.dst_mac, self.tx.src_mac, dst, src, ident, seq, data);
            self.tx.send(len);
            return;
        }
        if self.gw.on_segment(dst) {
            return self.icmp_error(dst, Unreachable::Host, ip);
        }
        if self.cfg.bridge.is_some_and(|b| b.internal) {
            return self.icmp_error(dst, Unreachable::Net, ip);
        }
        let key = PingKey { src, dst, ident };
        if !self.ping.contains_key(&key) {
            let Some(slot) = queues::Slot::take(&self.shared.ping_flows, self.cfg.limits.ping_flows) else {
                self.stats.limit_drops += 1;
                return;
            };
            match PingFlow::new(dst, self.waker(Token::Ping(key)), now, slot) {
                Ok(f) => {
                    self.ping.insert(key, f);
                    self.stats.ping_flows += 1;
                }
                Err(e) => {
                    if !self.ping_warned {
                        self.ping_warned = true;
                        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap_or_default();
                        tracing::warn!(
                            error = %e,
                            ping_group_range = range.trim(),
                            "ICMP echo from the container cannot be forwarded: unprivileged ping sockets are not \
                             allowed for this user; answering with ICMP 'administratively prohibited'. To allow it: \
                             sysctl -w net.ipv4.ping_group_range=\"0 2147483647\""
                        );
                    }
                    return self.icmp_error(dst, Unreachable::Prohibited, ip);
                }
            }
        }
        let Some(flow) = self.ping.get_mut(&key) else {
            return;
        };
        flow.send(seq, data, now);
        let alive = flow.service(&key, &mut self.tx, now);
        self.after_ping(key, alive, now);
    }

    fn after_ping(&mut self, key: PingKey, alive: bool, now: Instant) {
        if !alive {
            self.ping.remove(&key);
            return;
        }
        if let Some(flow) = self.ping.get_mut(&key) {
            let at = flow.expires();
            arm(&mut self.timers, &mut flow.scheduled, at, Token::Ping(key), now);
        }
    }

    fn service(&mut self, token: Token, now: Instant) {
        match token {
            Token::Tcp(key) => {
                let stamp = self.stamp(now);
                if let Some(flow) = self.tcp.get_mut(&key) {
                    let v = flow.service(&mut self.tx, self.tcp_mtu, now, stamp);
                    self.after_tcp(key, v, now);
                }
            }
            Token::Udp(key) => {
                if let Some(flow) = self.udp.get_mut(&key) {
                    let alive = flow.service(&key, &mut self.tx, now);
                    self.after_udp(key, alive, now);
                }
            }
            Token::Ping(key) => {
                if let Some(flow) = self.ping.get_mut(&key) {
                    let alive = flow.service(&key, &mut self.tx, now);
                    self.after_ping(key, alive, now);
                }
            }
            Token::UdpIn(key) => self.expire_udp_in(key, now),
            Token::Listener(id) => self.service_listener(id, now),
            Token::Port(id) => self.service_port(id, now),
            Token::Relay(i) => self.service_relay(i, now),
        }
    }

    /// Ends a batch of frames read from the container: services each TCP flow fed segments
    /// in it once. The stack then answers them together (one ACK for several segments, as a
    /// kernel's GRO makes it) and moves their bytes to the host in one write.
    fn end_batch(&mut self, now: Instant) {
        self.batching = false;
        self.send_udp_batch(now);
        let mut keys = std::mem::take(&mut self.pending);
        for key in keys.drain(..) {
            // Not pending any more: serviced early (a SYN or RST came), or gone and replaced.
            if let Some(flow) = self.tcp.get_mut(&key)
                && flow.pending
            {
                flow.pending = false;
                self.service(Token::Tcp(key), now);
            }
        }
        self.pending = keys;
    }

    /// Holds a datagram of a read burst for its flow's next segmented send, first sending the
    /// batch held if it cannot join it.
    fn hold_udp(&mut self, key: FlowKey, payload: &[u8], now: Instant) {
        if !self.udp_batch.takes(&key, payload.len()) {
            self.send_udp_batch(now);
        }
        self.udp_batch.push(key, payload);
    }

    /// Sends the datagrams held in the UDP batch to their flow's host socket.
    fn send_udp_batch(&mut self, now: Instant) {
        let Some((key, size, data)) = self.udp_batch.take() else { return };
        let batched = if data.len() > size { data.len().div_ceil(size) as u64 } else { 0 };
        if let Some(flow) = self.udp.get_mut(&key) {
            self.stats.udp_batched += batched;
            flow.send_batch(data, size, now);
            // As after a datagram sent alone: take replies, wait for more, keep the expiry.
            let alive = flow.service(&key, &mut self.tx, now);
            self.after_udp(key, alive, now);
        } else if let Some(e) = self.udp_in.get_mut(&key)
            && let Some(Listener { sock: ListenSock::Udp(u), .. }) = self.listeners.get(&e.listener)
        {
            // Replies to a client of a published port, from the listener it wrote to.
            self.stats.udp_batched += batched;
            e.batches = udp::send_segments(std::os::fd::AsFd::as_fd(u), Some(e.client), data, size);
        }
    }

    fn drain_wakes(&mut self, now: Instant) {
        // Swap the queue with a kept buffer: both keep their capacity, so waking flows
        // allocates nothing in the steady state.
        let mut tokens = std::mem::take(&mut self.wake_buf);
        match self.wake.tokens.lock() {
            Ok(mut q) => std::mem::swap(&mut *q, &mut tokens),
            Err(_) => return,
        }
        for t in tokens.drain(..) {
            self.service(t, now);
        }
        self.wake_buf = tokens;
    }

    /// Drops timer entries of flows that are gone or were rescheduled, once they outnumber
    /// the live ones: a churn of short connections would otherwise keep one 75 s
    /// connect-timeout entry per past connection.
    fn compact_timers(&mut self) {
        let live = self.tcp.len() + self.udp.len() + self.ping.len() + self.udp_in.len();
        if self.timers.len() <= 4096 || self.timers.len() <= 4 * live {
            return;
        }
        let before = self.timers.len();
        let (tcp, udp, ping, udp_in) = (&self.tcp, &self.udp, &self.ping, &self.udp_in);
        self.timers.retain(|Reverse((at, token))| {
            let s = match token {
                Token::Tcp(k) => tcp.get(k).map(|f| f.scheduled),
                Token::Udp(k) => udp.get(k).map(|f| f.scheduled),
                Token::Ping(k) => ping.get(k).map(|f| f.scheduled),
                Token::UdpIn(k) => udp_in.get(k).map(|f| f.scheduled),
                Token::Listener(_) | Token::Port(_) | Token::Relay(_) => return true,
            };
            s == Some(Some(*at))
        });
        self.timers.shrink_to_fit();
        tracing::trace!(before, after = self.timers.len(), "timer heap compacted");
    }

    fn run_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, token))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let current = match token {
                Token::Tcp(k) => self.tcp.get_mut(&k).map(|f| &mut f.scheduled),
                Token::Udp(k) => self.udp.get_mut(&k).map(|f| &mut f.scheduled),
                Token::Ping(k) => self.ping.get_mut(&k).map(|f| &mut f.scheduled),
                Token::UdpIn(k) => self.udp_in.get_mut(&k).map(|f| &mut f.scheduled),
                Token::Listener(_) | Token::Port(_) | Token::Relay(_) => None,
            };
            // Stale entries (flow gone, or rescheduled since) are skipped.
            if let Some(s) = current
                && *s == Some(at)
            {
                *s = None;
                self.service(token, now);
            }
        }
    }
}

/// Where a forward leads on a container with these addresses: the family the forward asks
/// for, else the host address's family when the container has it, else IPv4; plus the IPv4
/// fallback of a TCP forward that chose IPv6 by default.
fn forward_addrs(fwd: &Forward, v4: Ipv4Addr, v6: Option<Ipv6Addr>) -> (SocketAddr, Option<SocketAddr>) {
    let v4 = SocketAddr::new(v4.into(), fwd.container_port);
    let want6 = match fwd.container_family {
        Some(crate::forward::Family::V4) => false,
        Some(crate::forward::Family::V6) => true,
        None => fwd.host.is_ipv6(),
    };
    match v6 {
        Some(a) if want6 => {
            let fallback = fwd.container_family.is_none() && fwd.proto == crate::forward::Proto::Tcp;
            (SocketAddr::new(a.into(), fwd.container_port), fallback.then_some(v4))
        }
        _ => (v4, None),
    }
}

/// The (device, inode) of a file, to notice it being removed or replaced.
pub fn file_identity(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Completes once `path` no longer names the file whose identity was `first` (a namespace
/// file unmounted and removed, or `/proc/PID/ns/net` of a process that exited). Checked once
/// a second. Never completes when `first` is `None` (nothing to watch).
pub async fn wait_path_gone(path: &std::path::Path, first: Option<(u64, u64)>) {
    if first.is_none() {
        return std::future::pending().await;
    }
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        if file_identity(path) != first {
            tracing::info!(path = %path.display(), "target network namespace is gone");
            return;
        }
    }
}

/// Puts `token` on the timer heap for `at`, unless an entry that fires no later is pending
/// (`scheduled` remembers it; entries that fire for a rescheduled flow are skipped as stale).
fn arm(
    timers: &mut BinaryHeap<Reverse<(Instant, Token)>>,
    scheduled: &mut Option<Instant>,
    at: Instant,
    token: Token,
    now: Instant,
) {
    if scheduled.is_none_or(|s| at < s || s <= now) {
        *scheduled = Some(at);
        timers.push(Reverse((at, token)));
    }
}

/// The flow's handshake is over (connected or given up): it no longer counts against its
/// destination's limit.
fn end_handshake(counts: &Mutex<FxHashMap<IpAddr, usize>>, key: &FlowKey, flow: &mut TcpFlow) {
    if !std::mem::take(&mut flow.in_handshake) {
        return;
    }
    undo_handshake(counts, key.dst.ip());
}

/// Takes one handshake towards `dst` off the count.
fn undo_handshake(counts: &Mutex<FxHashMap<IpAddr, usize>>, dst: IpAddr) {
    let Ok(mut counts) = counts.lock() else { return };
    if let Some(n) = counts.get_mut(&dst) {
        *n -= 1;
        if *n == 0 {
            counts.remove(&dst);
        }
    }
}

/// First port of the range used when a client's own port cannot be kept.
const NAT_PORT_FIRST: u16 = 32768;

/// The source address a published-port client appears with inside the container: its own
/// (IPv4, routable, not on the container's segment, not already in use for this container
/// port), else the gateway with the client's port, else the gateway with a free NAT port.
fn visible_source(
    gw: &GatewayAddrs,
    nat_port: &mut u16,
    peer: SocketAddr,
    container: SocketAddr,
    taken: impl Fn(&FlowKey) -> bool,
) -> SocketAddr {
    let free = |a: SocketAddr| !taken(&FlowKey { src: container, dst: a });
    // A v4 client of a v6 listener arrives as ::ffff:a.b.c.d.
    let peer_ip = match peer.ip() {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4),
        v4 => v4,
    };
    let routable = match peer_ip {
        IpAddr::V4(ip) => !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast()),
        IpAddr::V6(ip) => !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || ip.is_unicast_link_local()),
    };
    let p = SocketAddr::new(peer_ip, peer.port());
    if routable && peer_ip.is_ipv4() == container.is_ipv4() && !gw.on_segment(peer_ip) && p.port() != 0 && free(p) {
        return p;
    }
    let gateway: IpAddr = match (container.ip(), gw.v6) {
        (IpAddr::V6(_), Some(g)) => g.gateway.into(),
        _ => gw.gateway.into(),
    };
    let via_gw = SocketAddr::new(gateway, peer.port());
    if peer.port() != 0 && free(via_gw) {
        return via_gw;
    }
    for _ in 0..=(u16::MAX - NAT_PORT_FIRST) {
        *nat_port = if *nat_port == u16::MAX { NAT_PORT_FIRST } else { *nat_port + 1 };
        let a = SocketAddr::new(gateway, *nat_port);
        if free(a) {
            return a;
        }
    }
    via_gw
}

/// Starts a non-blocking connect to `target` and hands the socket to tokio.
pub(crate) fn connect_nonblocking(
    target: SocketAddr,
    outbound_v4: Option<Ipv4Addr>,
    outbound_v6: Option<Ipv6Addr>,
) -> io::Result<TcpStream> {
    let s = Socket::new(Domain::for_address(target), Type::STREAM.nonblocking(), None)?;
    s.set_tcp_nodelay(true)?;
    if let Some(src) = udp::outbound_source(target, (outbound_v4, outbound_v6)) {
        s.bind(&src.into())?;
    }
    match s.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    TcpStream::from_std(std::net::TcpStream::from(s))
}

#[cfg(test)]
mod tests {
    //! The dataplane with a datagram socketpair standing in for the TAP: frames in, frames out,
    //! no namespaces needed.
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;

    use super::*;
    use crate::config::{Addresses, DnsUpstreams};

    const C: [u8; 6] = [2, 0, 0, 0, 0, 1];

    fn cfg() -> NetConfig {
        NetConfig {
            addrs: Addresses::new("10.0.2.0/24".parse().unwrap()),
            addrs6: Some(crate::config::Addresses6::new("fd00::/64".parse().unwrap())),
            static_ipv6: true,
            mtu: 65520,
            tap_name: "tap0".into(),
            mac: None,
            allow_host_loopback: false,
            dns: DnsUpstreams::Disabled,
            dns_routes: Vec::new(),
            outbound_v4: None,
            outbound_v6: None,
            outbound_ifaces: (None, None),
            limits: Default::default(),
            default_route: true,
            bridge: None,
            queues: 1,
            busy_poll: std::time::Duration::ZERO,
            to_host: Vec::new(),
            to_host_udp: Vec::new(),
            multicast: Vec::new(),
            auto_tables: Default::default(),
        }
    }

    /// Feeds `frames` to a dataplane (with or without vnet headers) and returns what it sent
    /// back, headers stripped, plus its counters.
    fn exchange(vnet: bool, frames: &[Vec<u8>]) -> (Vec<Vec<u8>>, Stats) {
        let (tap, container) = UnixDatagram::pair().unwrap();
        tap.set_nonblocking(true).unwrap();
        container.set_nonblocking(true).unwrap();
        for f in frames {
            let mut m = if vnet { vec![0u8; wire::VNET_HDR_LEN] } else { Vec::new() };
            m.extend_from_slice(f);
            container.send(&m).unwrap();
        }
        let tap: OwnedFd = tap.into();
        let tx = tap.try_clone().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let stats = rt.block_on(async {
            let mut dp = Dataplane::new(cfg(), tx, C, vnet);
            let fd = crate::sys::async_fd(tap).unwrap();
            dp.run(&fd, None, tokio::time::sleep(Duration::from_millis(100))).await.unwrap();
            dp.stats()
        });
        let mut out = Vec::new();
        let mut buf = vec![0u8; 70000];
        while let Ok(n) = container.recv(&mut buf) {
            let skip = if vnet { wire::VNET_HDR_LEN } else { 0 };
            assert!(n >= skip);
            if vnet {
                assert_eq!(buf[1], 0, "no GSO from warren");
            }
            out.push(buf[skip..n].to_vec());
        }
        (out, stats)
    }

    fn arp_request() -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&C);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&C);
        f.extend_from_slice(&[10, 0, 2, 100, 0, 0, 0, 0, 0, 0, 10, 0, 2, 2]);
        f
    }

    /// A SYN from the container to 10.0.2.2:80 with a correct checksum.
    fn syn() -> Vec<u8> {
        let mut f = vec![0u8; 54];
        wire::eth_ipv4(&mut f, [0x52, 0x55, 10, 0, 2, 2], C);
        let ip = &mut f[14..];
        ip[..20].copy_from_slice(&[0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 2, 100, 10, 0, 2, 2]);
        let mut p = smoltcp::wire::Ipv4Packet::new_unchecked(&mut ip[..]);
        p.fill_checksum();
        let t = &mut ip[20..40];
        t.copy_from_slice(&[0x9c, 0x40, 0, 80, 0, 0, 0x10, 0, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        let mut tp = smoltcp::wire::TcpPacket::new_unchecked(&mut ip[20..40]);
        tp.fill_checksum(&Ipv4Addr::new(10, 0, 2, 100).into(), &Ipv4Addr::new(10, 0, 2, 2).into());
        f
    }

    #[test]
    fn arp_answered_with_and_without_vnet_headers() {
        for vnet in [true, false] {
            let (out, stats) = exchange(vnet, &[arp_request()]);
            assert_eq!(out.len(), 1, "vnet={vnet} {stats:?}");
            let eth = wire::parse_eth(&out[0]).unwrap();
            assert_eq!((eth.dst, eth.ethertype), (C, wire::ETHERTYPE_ARP));
            let arp = wire::parse_arp(eth.payload).unwrap();
            assert_eq!((arp.op, arp.sender_ip), (2, Ipv4Addr::new(10, 0, 2, 2)));
            assert_eq!(stats.frames_in, 1);
        }
    }

    #[test]
    fn denied_host_loopback_is_reset_with_a_valid_checksum() {
        for vnet in [true, false] {
            let (out, stats) = exchange(vnet, &[syn()]);
            assert_eq!(out.len(), 1, "vnet={vnet}");
            let ip = smoltcp::wire::Ipv4Packet::new_checked(&out[0][14..]).unwrap();
            let t = smoltcp::wire::TcpPacket::new_checked(ip.payload()).unwrap();
            assert!(t.rst() && t.ack());
            assert!(t.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into()));
            assert_eq!(stats.tcp_resets, 1);
        }
    }

    #[test]
    fn garbage_is_counted_not_fatal() {
        let mut bad_syn = syn();
        bad_syn[50] ^= 0xff; // break the TCP checksum (not vouched for: no offload flags)
        let (out, stats) = exchange(true, &[vec![1, 2, 3], bad_syn, vec![0u8; 14], arp_request()]);
        assert_eq!(out.len(), 1, "only the ARP request is answered");
        assert_eq!(stats.drops.0[gateway::Drop::BadChecksum as usize], 1);
        assert_eq!(stats.drops.0[gateway::Drop::Malformed as usize], 1);
        assert_eq!(stats.drops.0[gateway::Drop::OtherEtherType as usize], 1);
    }

    /// Every counter of another thread is added (a field added to `Stats` but not to `merge`
    /// fails here), except the buffer reservation, which all threads share.
    #[test]
    fn merge_adds_every_counter_but_the_shared_reservation() {
        let one = serde_json::to_value(Stats::default()).unwrap();
        let mut drops = DropCounters::default();
        drops.0.fill(1);
        let mut s = Stats { drops, ..Stats::default() };
        let fields = one.as_object().unwrap().keys().filter(|k| *k != "drops").count();
        let mut set = 0;
        for (name, field) in [
            ("frames_in", &mut s.frames_in),
            ("bytes_in", &mut s.bytes_in),
            ("frames_out", &mut s.frames_out),
            ("bytes_out", &mut s.bytes_out),
            ("tcp_flows", &mut s.tcp_flows),
            ("udp_flows", &mut s.udp_flows),
            ("ping_flows", &mut s.ping_flows),
            ("tcp_resets", &mut s.tcp_resets),
            ("icmp_errors", &mut s.icmp_errors),
            ("limit_drops", &mut s.limit_drops),
            ("inbound_tcp", &mut s.inbound_tcp),
            ("tcp_bytes_out", &mut s.tcp_bytes_out),
            ("tcp_bytes_in", &mut s.tcp_bytes_in),
            ("tcp_buffer_bytes", &mut s.tcp_buffer_bytes),
            ("tcp_stacks_reused", &mut s.tcp_stacks_reused),
            ("queues", &mut s.queues),
            ("handed_over", &mut s.handed_over),
            ("handover_drops", &mut s.handover_drops),
            ("udp_batched", &mut s.udp_batched),
            ("udp_coalesced", &mut s.udp_coalesced),
            ("busy_polls", &mut s.busy_polls),
            ("busy_poll_hits", &mut s.busy_poll_hits),
            ("busy_poll_backoffs", &mut s.busy_poll_backoffs),
            ("multicast_out", &mut s.multicast_out),
            ("multicast_in", &mut s.multicast_in),
            ("multicast_echoes", &mut s.multicast_echoes),
            ("dns_queries", &mut s.dns_queries),
            ("dns_failovers", &mut s.dns_failovers),
            ("dns_unanswered", &mut s.dns_unanswered),
        ] {
            assert!(one.get(name).is_some(), "{name} is a field");
            *field = 1;
            set += 1;
        }
        assert_eq!(set, fields, "every field of Stats is listed here");
        let other = s.clone();
        s.merge(&other);
        let merged = serde_json::to_value(&s).unwrap();
        for (k, v) in merged.as_object().unwrap() {
            match (k.as_str(), v) {
                ("drops", d) => assert!(d.as_object().unwrap().values().all(|n| n == 2), "{d}"),
                ("tcp_buffer_bytes", n) => assert_eq!(n, 1, "shared, not added"),
                (k, n) => assert_eq!(n, 2, "{k}"),
            }
        }
    }

    /// (SYN, ACK flags, seq, ack) of a TCP frame from warren.
    fn tcp_of(frame: &[u8]) -> Option<(bool, bool, u32, u32)> {
        let ip = smoltcp::wire::Ipv4Packet::new_checked(frame.get(14..)?).ok()?;
        let t = smoltcp::wire::TcpPacket::new_checked(ip.payload()).ok()?;
        Some((t.syn(), t.ack(), t.seq_number().0 as u32, t.ack_number().0 as u32))
    }

    /// Segments the container wrote back to back reach warren in one read batch: the stack
    /// answers them with one ACK for all (not one per segment, as feeding and answering each
    /// in turn did) and the host gets every byte, in order.
    #[test]
    fn segments_read_in_one_batch_get_one_ack() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let data: Vec<u8> = (0..4000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (acks, got) = fuzzing::with_dataplane(false, async |container| {
            let mut buf = vec![0u8; 70000];
            // Awaited: tokio learns the socket is writable, so the try_sends below go at once.
            container.send(&fuzzing::tcp_segment(port, 0x02, 1000, 0, &[], &[])).await.unwrap();
            let mut isn = None;
            for _ in 0..500 {
                if let Ok(n) = container.try_recv(&mut buf)
                    && let Some((true, true, seq, 1001)) = tcp_of(&buf[..n])
                {
                    isn = Some(seq);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let isn = isn.expect("a SYN-ACK");
            // The handshake's ACK and four data segments, queued before warren reads any.
            container.try_send(&fuzzing::tcp_segment(port, 0x10, 1001, isn + 1, &[], &[])).unwrap();
            for (i, chunk) in data.chunks(1000).enumerate() {
                container
                    .try_send(&fuzzing::tcp_segment(port, 0x18, 1001 + 1000 * i as u32, isn + 1, &[], chunk))
                    .unwrap();
            }
            let mut acks = Vec::new();
            let mut got = Vec::new();
            let mut host = None;
            for _ in 0..300 {
                while let Ok(n) = container.try_recv(&mut buf) {
                    if let Some((false, true, _, ack)) = tcp_of(&buf[..n]) {
                        acks.push(ack);
                    }
                }
                if host.is_none() {
                    host = listener.accept().ok().map(|(s, _)| s);
                    if let Some(h) = &host {
                        h.set_nonblocking(true).unwrap();
                    }
                }
                if let Some(h) = &mut host {
                    let mut b = [0u8; 8192];
                    while let Ok(n) = std::io::Read::read(h, &mut b) {
                        if n == 0 {
                            break;
                        }
                        got.extend_from_slice(&b[..n]);
                    }
                }
                if got.len() == data.len() && acks.contains(&5001) {
                    // Long enough for any further answer to show.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    while let Ok(n) = container.try_recv(&mut buf) {
                        if let Some((false, true, _, ack)) = tcp_of(&buf[..n]) {
                            acks.push(ack);
                        }
                    }
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (acks, got)
        });
        assert!(
            got == data,
            "the host got {} of {} bytes, in order: {}",
            got.len(),
            data.len(),
            got == data[..got.len()]
        );
        assert!(acks.contains(&5001), "all four segments acknowledged: {acks:?}");
        assert!(acks.iter().all(|a| *a == 5001), "one answer for the batch, no ACK of a part: {acks:?}");
    }

    /// A client that closes with a reset and at once reconnects from the same port (a
    /// kernel may pick it again) puts both in one read burst: the SYN must open a new flow
    /// and be answered with a SYN-ACK, not meet the old, reset stack and be refused.
    #[test]
    fn a_reset_and_a_reconnect_in_one_batch_open_a_new_flow() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let (answer, accepted) = fuzzing::with_dataplane(false, async |container| {
            let mut buf = vec![0u8; 70000];
            container.send(&fuzzing::tcp_segment(port, 0x02, 1000, 0, &[], &[])).await.unwrap();
            let mut isn = None;
            for _ in 0..500 {
                if let Ok(n) = container.try_recv(&mut buf)
                    && let Some((true, true, seq, 1001)) = tcp_of(&buf[..n])
                {
                    isn = Some(seq);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let isn = isn.expect("a SYN-ACK");
            container.send(&fuzzing::tcp_segment(port, 0x10, 1001, isn + 1, &[], &[])).await.unwrap();
            let mut accepted = 0;
            for _ in 0..300 {
                if listener.accept().is_ok() {
                    accepted += 1;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // The reset and the new SYN from the same port, queued before warren reads either.
            container.try_send(&fuzzing::tcp_segment(port, 0x14, 1001, isn + 1, &[], &[])).unwrap();
            container.try_send(&fuzzing::tcp_segment(port, 0x02, 90000, 0, &[], &[])).unwrap();
            let mut answer = None;
            for _ in 0..300 {
                while let Ok(n) = container.try_recv(&mut buf) {
                    let Some(ip) = smoltcp::wire::Ipv4Packet::new_checked(&buf[14..n]).ok() else { continue };
                    let Ok(t) = smoltcp::wire::TcpPacket::new_checked(ip.payload()) else { continue };
                    if t.ack_number().0 as u32 == 90001 {
                        answer.get_or_insert((t.syn(), t.rst()));
                    }
                }
                if listener.accept().is_ok() {
                    accepted += 1;
                }
                if answer.is_some() && accepted == 2 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (answer, accepted)
        });
        assert_eq!(answer, Some((true, false)), "the new SYN answered by a SYN-ACK (syn, rst)");
        assert_eq!(accepted, 2, "both connections reached the service");
    }

    /// Datagrams of one flow read in one burst go to the host in segmented sends, and the
    /// service gets each one as it was: same sizes (a shorter one ends a batch), same bytes,
    /// same order. Another flow's datagram in between, or one too big to batch, keeps order.
    #[test]
    fn datagrams_read_in_one_batch_arrive_whole_and_in_order() {
        let service = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = service.local_addr().unwrap().port();
        let other = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let other_port = other.local_addr().unwrap().port();
        service.set_nonblocking(true).unwrap();
        other.set_nonblocking(true).unwrap();
        let sizes = [1000, 1000, 1000, 1000, 300, 1000, 1000, 1000, 999, 1000, 1000, 8000, 1000, 1000];
        let sent: Vec<Vec<u8>> =
            sizes.iter().enumerate().map(|(i, &n)| (0..n).map(|j| (i * 31 + j * 7) as u8).collect()).collect();
        let ((got, between), stats) = fuzzing::with_dataplane_stats(false, async |container| {
            let service = tokio::net::UdpSocket::from_std(service).unwrap();
            let other = tokio::net::UdpSocket::from_std(other).unwrap();
            let recv = async |s: &tokio::net::UdpSocket| {
                let mut b = vec![0u8; 70000];
                let (n, from) = tokio::time::timeout(Duration::from_secs(5), s.recv_from(&mut b))
                    .await
                    .expect("a datagram")
                    .unwrap();
                b.truncate(n);
                (b, from)
            };
            // The flows exist first.
            container.send(&fuzzing::udp_datagram(port, b"first")).await.unwrap();
            let (first, from) = recv(&service).await;
            assert_eq!(first, b"first");
            // A reply reaches the container: a flow whose datagrams were held for the end of
            // the burst waits for its host socket all the same.
            service.send_to(b"reply", from).await.unwrap();
            let mut b = vec![0u8; 70000];
            let n =
                tokio::time::timeout(Duration::from_secs(5), container.recv(&mut b)).await.expect("a reply").unwrap();
            assert!(b[..n].ends_with(b"reply"), "the reply reaches the container");
            container.send(&fuzzing::udp_datagram(other_port, b"other")).await.unwrap();
            assert_eq!(recv(&other).await.0, b"other");
            for (i, d) in sent.iter().enumerate() {
                container.try_send(&fuzzing::udp_datagram(port, d)).unwrap();
                if i == 6 {
                    container.try_send(&fuzzing::udp_datagram(other_port, b"between")).unwrap();
                }
            }
            let mut got = Vec::new();
            for _ in 0..sent.len() {
                got.push(recv(&service).await.0);
            }
            (got, recv(&other).await.0)
        });
        assert_eq!(between, b"between", "the other flow's datagram arrives");
        for (i, (g, s)) in got.iter().zip(&sent).enumerate() {
            assert!(g == s, "datagram {i}: {} bytes, want {} (or different bytes)", g.len(), s.len());
        }
        // Batches as read: [1000 x4, 300] [1000 x2] (the other flow's alone) [1000, 999]
        // [1000 x2] [8000, 1000] (a shorter one ends it) and the last 1000 alone: 13.
        assert_eq!(stats.udp_batched, 13, "datagrams went out in batches: {}", stats.udp_batched);
    }

    /// The container closed first; its last ACK (ending the flow in LAST-ACK) and a new SYN
    /// from the same port come in one read burst: the SYN opens a new flow (SYN-ACK), it does
    /// not meet the stack that ACK closed (which answers a reset: "connection refused").
    #[test]
    fn a_last_ack_and_a_reconnect_in_one_batch_open_a_new_flow() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let (answer, accepted) = fuzzing::with_dataplane(false, async |container| {
            let mut buf = vec![0u8; 70000];
            // (syn, fin, rst, seq, ack) of a frame from warren.
            let parse = |f: &[u8]| {
                let ip = smoltcp::wire::Ipv4Packet::new_checked(f.get(14..)?).ok()?;
                let t = smoltcp::wire::TcpPacket::new_checked(ip.payload()).ok()?;
                Some((t.syn(), t.fin(), t.rst(), t.seq_number().0 as u32, t.ack_number().0 as u32))
            };
            container.send(&fuzzing::tcp_segment(port, 0x02, 1000, 0, &[], &[])).await.unwrap();
            let mut isn = None;
            for _ in 0..500 {
                if let Ok(n) = container.try_recv(&mut buf)
                    && let Some((true, _, false, seq, 1001)) = parse(&buf[..n])
                {
                    isn = Some(seq);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let isn = isn.expect("a SYN-ACK");
            container.send(&fuzzing::tcp_segment(port, 0x10, 1001, isn + 1, &[], &[])).await.unwrap();
            let mut host = None;
            for _ in 0..300 {
                if let Ok((h, _)) = listener.accept() {
                    host = Some(h);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let mut host = host.expect("the host connection");
            // The container closes first; the service reads the end and closes too.
            container.send(&fuzzing::tcp_segment(port, 0x11, 1001, isn + 1, &[], &[])).await.unwrap();
            host.set_nonblocking(true).unwrap();
            let mut eof = false;
            for _ in 0..300 {
                if matches!(std::io::Read::read(&mut host, &mut [0u8; 16]), Ok(0)) {
                    eof = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(eof, "the service saw the container's FIN");
            drop(host);
            let mut fin = false;
            for _ in 0..300 {
                while let Ok(n) = container.try_recv(&mut buf) {
                    fin |= matches!(parse(&buf[..n]), Some((false, true, false, _, 1002)));
                }
                if fin {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(fin, "warren's FIN after the service closed");
            // The last ACK and the new SYN, queued before warren reads either.
            container.try_send(&fuzzing::tcp_segment(port, 0x10, 1002, isn + 2, &[], &[])).unwrap();
            container.try_send(&fuzzing::tcp_segment(port, 0x02, 90000, 0, &[], &[])).unwrap();
            let mut answer = None;
            let mut accepted = 1;
            for _ in 0..300 {
                while let Ok(n) = container.try_recv(&mut buf) {
                    if let Some((syn, _, rst, _, 90001)) = parse(&buf[..n]) {
                        answer.get_or_insert((syn, rst));
                    }
                }
                if listener.accept().is_ok() {
                    accepted += 1;
                }
                if answer.is_some() && accepted == 2 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (answer, accepted)
        });
        assert_eq!(answer, Some((true, false)), "the new SYN answered by a SYN-ACK (syn, rst)");
        assert_eq!(accepted, 2, "both connections reached the service");
    }
}
