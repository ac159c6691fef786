//! A multiqueue TAP: one data-path thread per queue, sharing nothing on the data path.
//!
//! The container's kernel puts each frame it sends on one queue: the queue that last carried
//! a frame of the same flow from warren (an entry it keeps for 3 s after such a frame), else
//! one picked from a symmetric hash of the flow's addresses and ports. A flow the container
//! opens therefore stays on the queue its hash picks, and the thread reading that queue owns
//! it entirely (its smoltcp stack, host socket, timers) as a single-queue data path would:
//! every frame it writes for the flow goes out on its own queue, which keeps the kernel's
//! entry pointing there.
//!
//! Thread 0 also owns the published ports and the API. The flows it opens towards the
//! container (published-port clients through the userspace stack, published UDP clients)
//! start on its queue, but once they are idle for 3 s the container's next frame follows the
//! hash and may arrive on another queue: their keys are listed in `Handoff`, and the other
//! threads pass such frames to thread 0 over a channel (counted as `handed_over`). Thread 0's
//! answer goes out on its own queue, so the kernel points the flow back at it.
//!
//! Shared, and touched only when a flow starts or ends: the flow limits (slot counters and
//! the TCP buffer pool), the per-destination handshake counts, the handoff list.

use std::io;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rustc_hash::{FxHashMap, FxHashSet};
use tokio::sync::{mpsc, oneshot};

use super::{Command, Dataplane, FlowInfo, FlowKey, Stats};

/// Frames for thread 0 that may wait in the handoff channel; beyond, they are dropped and
/// counted (the container's TCP retransmits them).
const HANDOFF_QUEUE: usize = 256;

/// A place in a flow limit shared by all data-path threads; given back when dropped.
#[derive(Debug)]
pub struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// Takes a place if fewer than `max` are taken.
    pub fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < max).then_some(n + 1)).ok()?;
        Some(Self(count.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the data-path threads of one container share.
#[derive(Default)]
pub(super) struct Shared {
    /// Outbound TCP flows whose host connect is in progress, by destination address.
    pub handshakes: Mutex<FxHashMap<IpAddr, usize>>,
    /// Open UDP flows (of `--max-udp-flows`).
    pub udp_flows: Arc<AtomicUsize>,
    /// Open ping flows.
    pub ping_flows: Arc<AtomicUsize>,
    /// With more than one queue: thread 0's flows towards the container, and the way to it.
    pub handoff: Option<Handoff>,
    /// The ports of the `--multicast` relay's senders, made at the first use.
    echo: std::sync::OnceLock<Arc<crate::multicast::EchoPorts>>,
    /// The `--multicast` relays' listeners, to send from their port (set before any frame
    /// is read: [`Dataplane::relay_senders`]).
    pub group_senders: std::sync::OnceLock<Arc<crate::multicast::GroupSenders>>,
}

impl Shared {
    /// The ports of the `--multicast` relay's senders (see [`crate::multicast::EchoPorts`]).
    pub fn echo(&self) -> &Arc<crate::multicast::EchoPorts> {
        self.echo.get_or_init(Arc::default)
    }
}

/// Thread 0's flows that the container's frames may reach on another queue.
pub(super) struct Handoff {
    keys: Mutex<FxHashSet<FlowKey>>,
    to_first: mpsc::Sender<HandedFrame>,
}

/// A frame read on another queue for one of thread 0's flows.
pub struct HandedFrame {
    frame: Vec<u8>,
    trusted: bool,
}

impl Handoff {
    /// Whether thread 0 owns this flow.
    pub fn owns(&self, key: &FlowKey) -> bool {
        self.keys.lock().is_ok_and(|k| k.contains(key))
    }

    /// Thread 0 opened a flow towards the container.
    pub fn claim(&self, key: FlowKey) {
        if let Ok(mut k) = self.keys.lock() {
            k.insert(key);
        }
    }

    /// Thread 0's flow ended.
    pub fn release(&self, key: &FlowKey) {
        if let Ok(mut k) = self.keys.lock() {
            k.remove(key);
        }
    }

    /// Passes a frame to thread 0; false when its queue is full.
    pub fn send(&self, frame: &[u8], trusted: bool) -> bool {
        self.to_first.try_send(HandedFrame { frame: frame.to_vec(), trusted }).is_ok()
    }
}

/// The threads serving a TAP's other queues.
pub struct Queues {
    workers: Vec<Worker>,
}

struct Worker {
    stop: Option<oneshot::Sender<()>>,
    thread: JoinHandle<Stats>,
}

impl Queues {
    /// Tells every thread to stop taking frames: each then carries its connected TCP flows'
    /// last bytes for up to the grace it was given, and ends.
    pub fn stop(&mut self) {
        for w in &mut self.workers {
            if let Some(s) = w.stop.take() {
                let _ = s.send(());
            }
        }
    }

    /// Stops the threads (if not yet), waits for them and returns their counters.
    pub fn join(mut self) -> Vec<Stats> {
        self.stop();
        self.workers.drain(..).filter_map(|w| w.thread.join().ok()).collect()
    }
}

impl Dataplane {
    /// Serves the TAP's other queues (`fds`, from the second on), each from a thread of its
    /// own with its own flows; after the command or the stop signal, each drains for up to
    /// `grace`. Call once, before [`Dataplane::run`] and before any flow exists.
    ///
    /// # Errors
    /// When a thread cannot be started (the threads already started are stopped).
    pub fn spawn_queues(&mut self, fds: Vec<OwnedFd>, grace: Duration) -> io::Result<Queues> {
        let mut queues = Queues { workers: Vec::new() };
        if fds.is_empty() {
            return Ok(queues);
        }
        let (to_first, from_others) = mpsc::channel(HANDOFF_QUEUE);
        let shared = Arc::new(Shared {
            udp_flows: self.shared.udp_flows.clone(),
            ping_flows: self.shared.ping_flows.clone(),
            handoff: Some(Handoff { keys: Mutex::default(), to_first }),
            group_senders: self.shared.group_senders.clone(),
            echo: self.shared.echo.clone(),
            ..Shared::default()
        });
        self.shared = shared.clone();
        self.handoff_rx = Some(from_others);
        let mac = self.tx.dst_mac;
        let vnet = self.tx.vnet;
        for (i, fd) in fds.into_iter().enumerate() {
            let thread = i + 1;
            let (cfg, shared, buffers) = (self.cfg.clone(), shared.clone(), self.buffers.clone());
            let dns_health = self.upstreams.health().clone();
            let capture = self.tx.capture.clone();
            let (cmd_tx, cmd_rx) = mpsc::channel(16);
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            let spawned = std::thread::Builder::new().name(format!("warren-q{thread}")).spawn(move || {
                let mut dp = match fd.try_clone() {
                    Ok(tx) => Dataplane::new(cfg, tx, mac, vnet),
                    Err(e) => {
                        tracing::warn!(queue = thread, error = %e, "TAP queue not served");
                        return Stats::default();
                    }
                };
                dp.thread = thread;
                dp.shared = shared;
                dp.buffers = buffers;
                dp.upstreams.share_health(dns_health);
                dp.tx.capture = capture;
                serve(dp, fd, cmd_rx, stop_rx, grace)
            });
            match spawned {
                Ok(t) => {
                    self.workers.push(cmd_tx);
                    queues.workers.push(Worker { stop: Some(stop_tx), thread: t });
                }
                Err(e) => {
                    queues.join();
                    return Err(e);
                }
            }
        }
        tracing::debug!(queues = queues.workers.len() + 1, "multiqueue TAP: one data-path thread per queue");
        Ok(queues)
    }

    /// A frame another thread read for one of this thread's flows.
    pub(super) fn handed(&mut self, f: &HandedFrame, now: std::time::Instant) {
        self.dispatch(&f.frame, f.trusted, now);
    }
}

/// The body of a queue's thread: its own current-thread runtime and data path.
fn serve(
    mut dp: Dataplane,
    fd: OwnedFd,
    commands: mpsc::Receiver<Command>,
    stop: oneshot::Receiver<()>,
    grace: Duration,
) -> Stats {
    let queue = dp.thread;
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!(queue, error = %e, "TAP queue not served: no runtime");
            return Stats::default();
        }
    };
    rt.block_on(async move {
        let tap = match crate::sys::async_fd(fd) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(queue, error = %e, "TAP queue not served");
                return dp.stats();
            }
        };
        let r = dp
            .run(&tap, Some(commands), async {
                let _ = stop.await;
            })
            .await;
        match r {
            Ok(()) => {
                let _ = dp.drain(&tap, grace).await;
            }
            Err(e) => tracing::debug!(queue, error = %e, "TAP queue closed"),
        }
        dp.stats()
    })
}

/// Answers a stats request of thread 0 (`mine`) with every thread's counters and flows.
pub(super) async fn gather(
    mine: (Stats, Vec<FlowInfo>),
    workers: Vec<mpsc::Sender<Command>>,
    reply: oneshot::Sender<(Stats, Vec<FlowInfo>)>,
) {
    let (mut stats, mut flows) = mine;
    for w in workers {
        let (tx, rx) = oneshot::channel();
        if w.send(Command::Stats(tx)).await.is_ok()
            && let Ok((s, f)) = rx.await
        {
            stats.merge(&s);
            flows.extend(f);
        }
    }
    let _ = reply.send((stats, flows));
}
