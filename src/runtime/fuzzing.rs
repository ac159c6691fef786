//! The whole data path driven from bytes, for the fuzz targets under `fuzz/` and the test
//! that replays their seed corpora: no TAP, no namespace set-up, frames go in through the same
//! entry points the TAP and bridge-port readers use.
//!
//! Input format (anything is accepted; short or odd input just ends early):
//! - byte 0: bit 0 = bridge network (else a single container), bit 1 = inter-container
//!   traffic off, bit 2 = host loopback allowed;
//! - then records `[flags u8][len u16 LE][len bytes]`: in single mode the bytes are one frame
//!   (flags bit 1 = its kernel vouched for the checksum; bit 3 = more frames of the same TAP
//!   read burst follow, so its TCP flow is answered once the burst ends); on a bridge network they are what a
//!   port's TAP delivers, vnet header included, and flags bit 0 picks port A or B, bit 2 makes
//!   the frame's source MAC the port's own (so mutated frames get past the anti-spoof check).
//!
//! Host sockets are real: a caller must run this in a network namespace that holds only `lo`
//! ([`assert_isolated`]), so a fuzzed SYN or datagram can reach nothing outside it.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::config::{Addresses, Addresses6, BridgeOpts, DnsUpstreams, NetConfig};
use crate::daemon::ipam::mac_for;

use super::Dataplane;
use super::bridge::PortSpec;

/// The MAC of the single container (the seeds were captured with it).
pub const CONTAINER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
/// The two bridge ports' IPv4 addresses (MACs follow IPAM: 02:42 + the address).
pub const PORT_IPS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 89, 0, 2), Ipv4Addr::new(10, 89, 0, 3)];

/// Panics unless this process's network namespace holds only `lo`: fuzzed frames open real
/// host sockets to whatever address they name.
pub fn assert_isolated() {
    let dev = std::fs::read_to_string("/proc/self/net/dev").unwrap_or_default();
    let ifaces: Vec<&str> = dev.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
    assert!(
        ifaces == ["lo"],
        "run the fuzz targets in a network namespace with only lo (unshare --net), found {ifaces:?}"
    );
}

fn single_config(allow_host_loopback: bool) -> NetConfig {
    NetConfig {
        addrs: Addresses::new("10.0.2.0/24".parse().expect("literal")),
        addrs6: Some(Addresses6::new("fd00::/64".parse().expect("literal"))),
        static_ipv6: true,
        mtu: 65520,
        tap_name: "tap0".into(),
        mac: None,
        allow_host_loopback,
        // A loopback upstream nobody serves: queries go nowhere even by mistake.
        dns: DnsUpstreams::Fixed(vec![SocketAddr::from(([127, 0, 0, 1], 9))]),
        // Routed names take the same way out; TCP queries to the forwarder wait for their
        // first question.
        dns_routes: vec![crate::dns::Route {
            domain: "corp.test".into(),
            server: SocketAddr::from(([127, 0, 0, 1], 9)),
        }],
        outbound_v4: None,
        outbound_v6: None,
        outbound_ifaces: (None, None),
        limits: Default::default(),
        default_route: true,
        queues: 1,
        busy_poll: std::time::Duration::ZERO,
        to_host: Vec::new(),
        to_host_udp: Vec::new(),
        multicast: Vec::new(),
        auto_tables: Default::default(),
        bridge: None,
    }
}

fn bridge_config(icc: bool) -> NetConfig {
    let gw4 = Ipv4Addr::new(10, 89, 0, 1);
    let gw6: Ipv6Addr = "fd89::1".parse().expect("literal");
    NetConfig {
        addrs: Addresses { net: "10.89.0.0/24".parse().expect("literal"), gateway: gw4, dns: gw4, container: gw4 },
        addrs6: Some(Addresses6 { net: "fd89::/64".parse().expect("literal"), gateway: gw6, dns: gw6, container: gw6 }),
        queues: 1,
        busy_poll: std::time::Duration::ZERO,
        bridge: Some(BridgeOpts { internal: false, icc }),
        tap_name: String::new(),
        ..single_config(false)
    }
}

/// Splits the records after byte 0.
fn records(mut rest: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&flags, tail) = rest.split_first()?;
        let len = u16::from_le_bytes(tail.get(..2)?.try_into().ok()?) as usize;
        let body = tail.get(2..)?;
        let frame = &body[..len.min(body.len())];
        rest = &body[frame.len()..];
        Some((flags, frame))
    })
}

/// A dataplane driven by hand: a single container or a bridge network with the two ports of
/// [`PORT_IPS`], each behind a socketpair standing in for its TAP. Used by the fuzz targets
/// and by the micro-benchmarks (`cargo bench`).
/// One rig at a time per thread (it keeps a tokio runtime entered).
pub struct Rig {
    dp: Dataplane,
    /// The container ends: one in single mode, one per port on a bridge.
    ends: Vec<UnixDatagram>,
    bridge: bool,
    buf: Vec<u8>,
    /// Keeps the runtime entered while the rig lives (host sockets register with it).
    _guard: tokio::runtime::EnterGuard<'static>,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime"))
}

impl Rig {
    /// One container (10.0.2.100, fd00::100) behind the usual gateway; `host_loopback`:
    /// 10.0.2.2 reaches the host's 127.0.0.1.
    pub fn single(host_loopback: bool) -> Self {
        let guard = runtime().enter();
        let (tap, container) = UnixDatagram::pair().expect("socketpair");
        tap.set_nonblocking(true).expect("nonblocking");
        container.set_nonblocking(true).expect("nonblocking");
        let dp = Dataplane::new(single_config(host_loopback), OwnedFd::from(tap), CONTAINER_MAC, false);
        Self { _guard: guard, dp, ends: vec![container], bridge: false, buf: vec![0u8; 70_000] }
    }

    /// A bridge network 10.89.0.0/24 with two containers plugged in.
    pub fn bridge(icc: bool) -> Self {
        let guard = runtime().enter();
        let mut dp = Dataplane::new_bridge(bridge_config(icc));
        let mut ends = Vec::new();
        for (id, ip4) in PORT_IPS.iter().enumerate() {
            let (tap, container) = UnixDatagram::pair().expect("socketpair");
            tap.set_nonblocking(true).expect("nonblocking");
            container.set_nonblocking(true).expect("nonblocking");
            let last = ip4.octets()[3] as u16;
            let spec = PortSpec {
                id: id as u64,
                fd: OwnedFd::from(tap),
                mac: mac_for(*ip4),
                ip4: *ip4,
                ip6: Some(Ipv6Addr::new(0xfd89, 0, 0, 0, 0, 0, 0, last)),
                name: format!("c{id}"),
                aliases: vec![format!("alias{id}")],
            };
            dp.add_port(spec).expect("a port");
            ends.push(container);
        }
        Self { _guard: guard, dp, ends, bridge: true, buf: vec![0u8; 70_000] }
    }

    /// Hands one frame to the dataplane: in single mode as the TAP reader does (`trusted`:
    /// the kernel vouched for its checksum); on a bridge `port` sends it, vnet header
    /// included, and the switch reads it. Then due wake-ups and timers run.
    pub fn feed(&mut self, port: usize, frame: &[u8], trusted: bool, now: Instant) {
        self.feed_burst(port, frame, trusted, now, false);
    }

    /// As [`Rig::feed`]; in single mode `more`: the frame is one of a TAP read burst whose
    /// next frame follows, so TCP flows fed in it are serviced when a frame without `more`
    /// ends the burst (as the TAP reader does).
    pub fn feed_burst(&mut self, port: usize, frame: &[u8], trusted: bool, now: Instant, more: bool) {
        if self.bridge {
            let port = port % self.ends.len();
            // A full socket buffer just loses the frame, as a TAP would.
            let _ = self.ends[port].send(frame);
            self.dp.service_port(port as u64, now);
        } else {
            self.dp.batching = true;
            self.dp.frame(frame, trusted, now);
            if more {
                return;
            }
            self.dp.end_batch(now);
        }
        self.dp.drain_wakes(now);
        self.dp.run_timers(now);
    }

    /// Reads and counts what reached the containers.
    pub fn drain(&mut self) -> usize {
        let mut n = 0;
        for e in &self.ends {
            while e.recv(&mut self.buf).is_ok() {
                n += 1;
            }
        }
        n
    }

    /// Reads what reached container `port` (single mode: 0) into `out`, frame by frame.
    pub fn recv(&mut self, port: usize, out: &mut Vec<Vec<u8>>) {
        while let Ok(n) = self.ends[port].recv(&mut self.buf) {
            out.push(self.buf[..n].to_vec());
        }
    }

    /// The dataplane's counters.
    pub fn stats(&self) -> super::Stats {
        self.dp.stats()
    }
}

/// Runs one input through a fresh dataplane. Returns the frames it sent back (single mode)
/// or delivered to the ports (bridge mode), for tests.
pub fn run(input: &[u8]) -> usize {
    let Some((&mode, rest)) = input.split_first() else { return 0 };
    let now = Instant::now();
    let mut rig = if mode & 1 == 0 { Rig::single(mode & 4 != 0) } else { Rig::bridge(mode & 2 == 0) };
    for (i, (flags, frame)) in records(rest).enumerate() {
        let t = now + Duration::from_millis(i as u64);
        let port = (flags & 1) as usize;
        if rig.bridge && flags & 4 != 0 && frame.len() >= crate::wire::VNET_HDR_LEN + 12 {
            let mut frame = frame.to_vec();
            let at = crate::wire::VNET_HDR_LEN + 6;
            frame[at..at + 6].copy_from_slice(&mac_for(PORT_IPS[port]));
            rig.feed(port, &frame, flags & 2 != 0, t);
        } else {
            rig.feed_burst(port, frame, flags & 2 != 0, t, !rig.bridge && flags & 8 != 0);
        }
    }
    if rig.dp.batching {
        rig.dp.end_batch(now);
    }
    rig.drain()
}

/// A container uploading to a loopback service through a [`Dataplane`] run as the TAP reader
/// runs it (a socketpair stands in for the TAP): after the handshake, `bursts` times
/// `per_burst` segments of `seg` bytes written back to back from the last acknowledged byte
/// (the stack's window is 64 KiB: no window scaling offered) and within the window warren
/// advertises (a closed one waits for its update), again from the last acknowledged byte
/// when a full receive buffer took only part. For the micro-benchmarks.
/// Returns the time the bursts took, the bytes the service received (checked to be every
/// byte warren acknowledged), and the ACK frames warren sent during them.
///
/// # Panics
/// If warren never answers the handshake or a burst (a broken data path).
pub fn tcp_upload(bursts: usize, per_burst: usize, seg: usize) -> (Duration, u64, usize) {
    const VNET: usize = crate::wire::VNET_HDR_LEN;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let service = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 16];
        let mut n = 0u64;
        while let Ok(k) = std::io::Read::read(&mut s, &mut buf) {
            if k == 0 {
                break;
            }
            n += k as u64;
        }
        n
    });
    // With vnet headers, as from a TAP: the container's kernel vouches for the checksums.
    let (took, acks, sent) = with_dataplane(true, async |container| {
        let mut buf = vec![0u8; 70_000];
        let ack_of = |f: &[u8]| -> Option<(bool, u32, u32)> {
            let ip = smoltcp::wire::Ipv4Packet::new_checked(f.get(VNET + 14..)?).ok()?;
            let t = smoltcp::wire::TcpPacket::new_checked(ip.payload()).ok()?;
            let n = if t.syn() { t.seq_number().0 as u32 } else { t.ack_number().0 as u32 };
            t.ack().then(|| (t.syn(), n, u32::from(t.window_len())))
        };
        let answer = async |buf: &mut Vec<u8>| {
            let n = tokio::time::timeout(Duration::from_secs(5), container.recv(buf))
                .await
                .expect("warren answers within 5 s")
                .expect("recv");
            buf[..n].to_vec()
        };
        container.send(&vnet(tcp_segment(port, 0x02, 1000, 0, &[], &[]))).await.expect("send");
        let isn = loop {
            if let Some((true, isn, _)) = ack_of(&answer(&mut buf).await) {
                break isn.wrapping_add(1);
            }
        };
        container.send(&vnet(tcp_segment(port, 0x10, 1001, isn, &[], &[]))).await.expect("send");
        // One frame, its sequence number patched for each segment (checksums are offloaded).
        let mut f = vnet(tcp_segment(port, 0x18, 0, isn, &[], &vec![0x5au8; seg]));
        let seq_at = VNET + 14 + 20 + 4;
        let mut acked = 1001u32;
        let mut wnd = (per_burst * seg) as u32;
        let mut probe = false;
        let mut acks = 0;
        let t = Instant::now();
        for _ in 0..bursts {
            let want = acked.wrapping_add((per_burst * seg) as u32);
            // Sends from the last acknowledged byte as far as the window allows; again
            // when an ACK moves or reopens it, or (a probe) after 200 ms without one.
            while want.wrapping_sub(acked) as i32 > 0 {
                // A closed window waits for warren's update (a probe after 200 ms without).
                let limit = acked.wrapping_add(if probe { wnd.max(1) } else { wnd }).min(want);
                let mut seq = acked;
                while limit.wrapping_sub(seq) as i32 > 0 {
                    f[seq_at..seq_at + 4].copy_from_slice(&seq.to_be_bytes());
                    // Written back to back: the dataplane reads them as one burst.
                    let _ = container.try_send(&f);
                    seq = seq.wrapping_add(seg as u32);
                }
                let r = tokio::time::timeout(Duration::from_millis(200), container.recv(&mut buf)).await;
                probe = r.is_err();
                if let Ok(r) = r {
                    let n = r.expect("recv");
                    if let Some((false, a, w)) = ack_of(&buf[..n]) {
                        acks += 1;
                        if a.wrapping_sub(acked) as i32 > 0 {
                            acked = a;
                        }
                        wnd = w;
                    }
                }
            }
        }
        (t.elapsed(), acks, u64::from(acked.wrapping_sub(1001)))
    });
    // The dataplane is gone: its host socket closed, the service saw the end.
    let got = service.join().expect("the service thread");
    assert_eq!(got, sent, "the service got every byte acknowledged");
    (took, got, acks)
}

/// A container downloading `bytes` from a loopback service through a [`Dataplane`] run as
/// the TAP reader runs it (a socketpair stands in for the TAP). The container's SYN
/// announces MSS 1460 and window scaling, so warren sends GSO frames of up to 64 KiB as to a
/// real container; the container acknowledges each burst of frames it reads, with a 128 KiB
/// window (what the socketpair holds). For the micro-benchmarks. Returns the time from the
/// handshake to the FIN, the bytes received in order (each checked against the service's
/// pattern), and the data frames they came in.
///
/// # Panics
/// If warren stops answering for 5 s or a byte arrives wrong (a broken data path).
pub fn tcp_download(bytes: u64) -> (Duration, u64, usize) {
    const VNET: usize = crate::wire::VNET_HDR_LEN;
    let pattern = |i: u64| (i % 251) as u8;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let service = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let chunk: Vec<u8> = (0..251 * 256).map(pattern).collect();
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            std::io::Write::write_all(&mut s, &chunk[..n]).expect("the service writes");
            left -= n as u64;
        }
    });
    let out = with_dataplane(true, async |container| {
        // MSS 1460, NOP, window scale 7.
        let opts = [2, 4, 0x05, 0xb4, 1, 3, 3, 7];
        container.send(&vnet(tcp_segment(port, 0x02, 1000, 0, &opts, &[]))).await.expect("send");
        let mut buf = vec![0u8; 70_000];
        // The pattern from any offset into it: compared a frame's payload at a time.
        let expect: Vec<u8> = (0..251 + 70_000).map(pattern).collect();
        let (mut next, mut got, mut frames, mut fin) = (0u32, 0u64, 0usize, false);
        let mut t = Instant::now();
        while !fin {
            let n = tokio::time::timeout(Duration::from_secs(5), container.recv(&mut buf))
                .await
                .expect("warren answers within 5 s")
                .expect("recv");
            let mut answered = Some(n);
            while let Some(n) = answered.take() {
                let Some(ip) = buf.get(VNET + 14..n).and_then(|b| smoltcp::wire::Ipv4Packet::new_checked(b).ok())
                else {
                    continue;
                };
                let Ok(tcp) = smoltcp::wire::TcpPacket::new_checked(ip.payload()) else { continue };
                let seq = tcp.seq_number().0 as u32;
                if tcp.syn() {
                    next = seq.wrapping_add(1);
                    t = Instant::now();
                } else if seq == next {
                    let data = tcp.payload();
                    if !data.is_empty() {
                        frames += 1;
                        let off = (got % 251) as usize;
                        assert!(data == &expect[off..off + data.len()], "bytes from {got} arrived wrong");
                        got += data.len() as u64;
                        next = next.wrapping_add(data.len() as u32);
                    }
                    if tcp.fin() {
                        next = next.wrapping_add(1);
                        fin = true;
                    }
                }
                // What else is already queued belongs to the same burst.
                answered = container.try_recv(&mut buf).ok();
            }
            let mut ack = vnet(tcp_segment(port, if fin { 0x11 } else { 0x10 }, 1001, next, &[], &[]));
            // A window of 128 KiB (1024 << 7): what a socketpair queues without dropping
            // (about 208 KiB), where a TAP would take a thousand frames. The checksum is
            // offloaded, so the field is patched after the fact.
            ack[VNET + 14 + 20 + 14..VNET + 14 + 20 + 16].copy_from_slice(&1024u16.to_be_bytes());
            container.send(&ack).await.expect("send");
        }
        (t.elapsed(), got, frames)
    });
    service.join().expect("the service thread");
    out
}

/// Runs `driver` against a [`Dataplane`] (one container, host loopback allowed; `vnet`: the
/// TAP carries vnet headers) in its own run loop, as the TAP reader runs it, with `driver`
/// holding the container's end of a socketpair standing in for the TAP. The dataplane stops
/// when `driver` is done.
///
/// # Panics
/// If the dataplane fails.
pub(crate) fn with_dataplane<T>(vnet: bool, driver: impl AsyncFnOnce(&tokio::net::UnixDatagram) -> T) -> T {
    with_dataplane_stats(vnet, driver).0
}

/// [`with_dataplane`], also returning the dataplane's counters once it stopped.
///
/// # Panics
/// If the dataplane fails.
pub(crate) fn with_dataplane_stats<T>(
    vnet: bool,
    driver: impl AsyncFnOnce(&tokio::net::UnixDatagram) -> T,
) -> (T, super::Stats) {
    let (tap, container) = UnixDatagram::pair().expect("socketpair");
    tap.set_nonblocking(true).expect("nonblocking");
    container.set_nonblocking(true).expect("nonblocking");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    rt.block_on(async {
        let tap = OwnedFd::from(tap);
        let mut dp = Dataplane::new(single_config(true), tap.try_clone().expect("dup"), CONTAINER_MAC, vnet);
        let fd = crate::sys::async_fd(tap).expect("async fd");
        let container = tokio::net::UnixDatagram::from_std(container).expect("register");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let driven = async {
            let out = driver(&container).await;
            let _ = stop.send(());
            out
        };
        let (r, out) = tokio::join!(
            dp.run(&fd, None, async {
                let _ = stopped.await;
            }),
            driven
        );
        r.expect("the dataplane runs");
        (out, dp.stats())
    })
}

/// `frame` behind a vnet header saying its kernel vouched for the checksums, as a TAP with
/// offloads delivers it.
fn vnet(frame: Vec<u8>) -> Vec<u8> {
    let mut v = vec![0u8; crate::wire::VNET_HDR_LEN];
    v[0] = crate::wire::VNET_F_DATA_VALID;
    v.extend_from_slice(&frame);
    v
}

/// A UDP datagram from the container (10.0.2.100:40000) to the gateway 10.0.2.2:`port`.
#[cfg(test)]
pub(crate) fn udp_datagram(port: u16, payload: &[u8]) -> Vec<u8> {
    let src = std::net::SocketAddr::from(([10, 0, 2, 100], 40000));
    let dst = std::net::SocketAddr::from(([10, 0, 2, 2], port));
    let at = crate::wire::udp_payload_offset(dst.ip());
    let mut f = vec![0u8; at + payload.len()];
    f[at..].copy_from_slice(payload);
    let len = crate::wire::udp(&mut f, [0x52, 0x55, 10, 0, 2, 2], CONTAINER_MAC, src, dst, payload.len());
    f.truncate(len);
    f
}

/// A TCP segment from the container (10.0.2.100:40000) to the gateway 10.0.2.2:`port`, with
/// TCP options `opts` (a multiple of 4 bytes) and a window field of 65535.
pub(crate) fn tcp_segment(port: u16, flags: u8, seq: u32, ack: u32, opts: &[u8], payload: &[u8]) -> Vec<u8> {
    let th = 20 + opts.len();
    let len = 20 + th + payload.len();
    let mut f = vec![0u8; 14 + len];
    crate::wire::eth_ipv4(&mut f, [0x52, 0x55, 10, 0, 2, 2], CONTAINER_MAC);
    let ip = &mut f[14..];
    let tot = (len as u16).to_be_bytes();
    ip[..20].copy_from_slice(&[0x45, 0, tot[0], tot[1], 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 2, 100, 10, 0, 2, 2]);
    smoltcp::wire::Ipv4Packet::new_unchecked(&mut ip[..]).fill_checksum();
    let t = &mut ip[20..];
    t[..4].copy_from_slice(&[0x9c, 0x40, (port >> 8) as u8, port as u8]);
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12..20].copy_from_slice(&[((th / 4) as u8) << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t[20..th].copy_from_slice(opts);
    t[th..].copy_from_slice(payload);
    let mut tp = smoltcp::wire::TcpPacket::new_unchecked(&mut t[..]);
    tp.fill_checksum(&Ipv4Addr::new(10, 0, 2, 100).into(), &Ipv4Addr::new(10, 0, 2, 2).into());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(name: &str) -> Vec<u8> {
        let path = format!("{}/fuzz/corpus/frame/{name}.seed", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Seeds that stay inside warren (or reach only loopback): the harness must get the
    /// captured frames through to real answers, or the fuzzer would only explore parsing.
    #[test]
    fn captured_seeds_get_answers() {
        // ARP + echo request to the gateway: ARP reply and echo reply.
        assert!(run(&seed("ping-gateway")) >= 2);
        // Neighbour solicitation for fd00::2 and an echo request to it: advert and reply.
        assert!(run(&seed("ping6-gateway")) >= 2);
        // A DNS query to 10.0.2.3 whose upstream (127.0.0.1:9) is silent: at least the ARP reply.
        assert!(run(&seed("dns-a")) >= 1);
        assert_eq!(run(&[]), 0);
        assert_eq!(run(&[0, 0, 0xff]), 0, "a record cut short ends the input");
    }
}
