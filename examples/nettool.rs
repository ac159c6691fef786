//! A small network client that the end-to-end tests run *inside* warren's namespaces.
//!
//! Every transfer uses a deterministic byte stream (see [`Stream`]) so both ends can verify
//! content by SHA-256 without shipping data around. Exit status 0 means the check passed;
//! anything else prints one line saying what went wrong.
//!
//! ```text
//! nettool download HOST PORT BYTES SEED        # server sends stream(SEED); verify hash
//! nettool upload HOST PORT BYTES SEED          # send stream(SEED); print server's reply line
//! nettool fetch HOST PORT BYTES SEED           # "get BYTES SEED" from a `serve` server; verify hash
//! nettool churn HOST PORT N THREADS            # N connections opened and closed, THREADS at a time
//! nettool churn-rr HOST PORT N THREADS         # the same, each with a 1-byte round trip (rr-serve)
//! nettool soak HOST PORT UDPPORT SECS SEED     # random TCP both ways + UDP echo, with faults
//! nettool sink ADDR:PORT                       # accept and close connections (for churn)
//! nettool hold-serve ADDR:PORT                 # accept and keep connections open
//! nettool hold HOST PORT N SECS                # open N idle connections, keep them SECS
//! nettool hold-upto HOST PORT N SECS           # the same, holding what it opened if one fails
//! nettool rr-serve ADDR:PORT                   # echo every byte back (request/response)
//! nettool rr HOST PORT N                       # N 1-byte round trips; print p50 and p99 in us
//! nettool spin SECS                            # keep a CPU busy for SECS seconds (a load)
//! nettool late-echo ADDR:PORT MS               # echo what each read returns, MS ms later
//! nettool parallel HOST PORT CONNS BYTES       # CONNS concurrent downloads, seeds 1..=CONNS
//! nettool udp-echo HOST PORT COUNT             # datagrams of varied sizes, echoed back
//! nettool udp-blast HOST PORT COUNT SIZE       # datagrams in runs of 32, 1 ms apart; no answer
//! nettool udp-blast-recv HOST PORT COUNT SIZE  # "go" to a blast-back server; check what comes
//! nettool udp-blast-check PORT COUNT SIZE      # UDP server: check a udp-blast, report to its sender
//! nettool udp-blast-back PORT COUNT SIZE       # UDP server: a udp-blast to whoever sends "go",
//!                                              # an echo of anything else
//! nettool refused HOST PORT                    # expect ECONNREFUSED
//! nettool connect-error HOST PORT              # print the connect error kind
//! nettool dns SERVER NAME [tcp|aaaa]           # A (or AAAA) query; print the addresses
//! nettool ping HOST                            # one ICMP/ICMPv6 echo over a raw socket
//! nettool peer HOST PORT                       # print the local address the server saw
//! nettool halfclose HOST PORT BYTES SEED       # read to the server's EOF, then upload
//! nettool reset HOST PORT                      # connect, send a byte, abort with RST
//! nettool send HOST PORT BYTES SEED            # write stream(SEED), close, exit at once
//! nettool ask HOST PORT WORDS...               # send the words as a line; print local addr and reply
//! nettool udp-ask HOST PORT TEXT               # one datagram; print local addr and reply
//! nettool mcast-query GROUP PORT BYTES SEED IFACE port|ephemeral
//!                                              # query a group from its port or another, report
//!                                              # the answer and the announcement
//! nettool mcast-respond GROUP PORT IFACE [MS]  # answer one query (as mDNS, MS ms later), then
//!                                              # announce
//! nettool udp-sources HOST PORT N              # N sockets in turn, one datagram each, all kept
//!                                              # open; print "answered A of N" (1 s per reply)
//! nettool serve PORT...                        # TCP server: "peer" | "get N SEED" | "put" per line
//! nettool udp-serve PORT [MS]                  # UDP server: answers "from ADDR " + the datagram
//!                                              # (MS ms later when given)
//!                                              # (PORT binds 0.0.0.0; ADDR:PORT, e.g. [::]:80, binds ADDR)
//! ```

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// xorshift64* byte stream; identical to the one in tests/util.
struct Stream(u64);

impl Stream {
    fn new(seed: u64) -> Self {
        Stream(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn stream_hash(seed: u64, mut n: u64) -> String {
    let mut s = Stream::new(seed);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    while n > 0 {
        let k = n.min(buf.len() as u64) as usize;
        s.fill(&mut buf[..k]);
        h.update(&buf[..k]);
        n -= k as u64;
    }
    hex(&h.finalize())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn addr(host: &str, port: &str) -> SocketAddr {
    let ip: IpAddr = host.parse().expect("HOST must be an IP address");
    SocketAddr::new(ip, port.parse().expect("PORT must be a number"))
}

fn connect(a: SocketAddr) -> Result<TcpStream, String> {
    TcpStream::connect_timeout(&a, Duration::from_secs(20)).map_err(|e| format!("connect {a}: {e}"))
}

fn download(a: SocketAddr, bytes: u64, seed: u64) -> Result<String, String> {
    let mut s = connect(a)?;
    s.write_all(format!("{bytes} {seed}\n").as_bytes()).map_err(|e| e.to_string())?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                h.update(&buf[..n]);
                got += n as u64;
            }
            Err(e) => return Err(format!("read after {got} bytes: {e}")),
        }
    }
    let hash = hex(&h.finalize());
    let want = stream_hash(seed, bytes);
    if got != bytes || hash != want {
        return Err(format!("download mismatch: got {got} bytes sha256 {hash}, want {bytes} bytes {want}"));
    }
    Ok(format!("ok {got} {hash}"))
}

/// Accepts connections and closes them at once (or keeps them, `hold`), until killed.
fn sink(bind: &str, hold: bool) -> Result<String, String> {
    let l = listen(bind)?;
    println!("serving");
    // Held connections are kept up to 12,000 (oldest dropped first), so one client's 10,000
    // do not exhaust the next client's file descriptors.
    let mut kept = std::collections::VecDeque::new();
    for c in l.incoming().flatten() {
        if hold {
            if kept.len() >= 12_000 {
                kept.pop_front();
            }
            kept.push_back(c);
        }
    }
    Ok("done".into())
}

/// Opens `n` connections and keeps them idle for `secs`.
/// Any failed connection fails the command, unless `upto`: then a connection that fails after
/// others succeeded ends the opening and the ones made are held ("holding K of N", with the
/// error), so an engine's limit still yields a measurement (the bench's T8).
fn hold(a: SocketAddr, n: usize, secs: u64, upto: bool) -> Result<String, String> {
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        match connect(a) {
            Ok(s) => v.push(s),
            Err(e) if upto && i > 0 => {
                println!("holding {i} of {n} (connection {i}: {e})");
                std::thread::sleep(Duration::from_secs(secs));
                return Ok(format!("ok {i} of {n}"));
            }
            Err(e) => return Err(format!("connection {i}: {e}")),
        }
    }
    println!("holding {n}");
    std::thread::sleep(Duration::from_secs(secs));
    Ok(format!("ok {}", v.len()))
}

/// Echoes every byte back, one thread per connection, until killed.
fn rr_serve(bind: &str) -> Result<String, String> {
    let l = listen(bind)?;
    println!("serving");
    for c in l.incoming().flatten() {
        std::thread::spawn(move || {
            let mut c = c;
            let _ = c.set_nodelay(true);
            let mut b = [0u8; 1];
            while let Ok(1) = c.read(&mut b) {
                if c.write_all(&b).is_err() {
                    break;
                }
            }
        });
    }
    Ok("done".into())
}

/// Echoes each chunk read `ms` milliseconds after reading it, one thread per connection,
/// until killed: the container speaks first after a pause the client chose.
fn late_echo(bind: &str, ms: u64) -> Result<String, String> {
    let l = listen(bind)?;
    println!("serving");
    for c in l.incoming().flatten() {
        std::thread::spawn(move || {
            let mut c = c;
            let mut b = vec![0u8; 1 << 16];
            while let Ok(n @ 1..) = c.read(&mut b) {
                std::thread::sleep(Duration::from_millis(ms));
                if c.write_all(&b[..n]).is_err() {
                    break;
                }
            }
        });
    }
    Ok("done".into())
}

/// `n` one-byte round trips on one connection; p50 and p99 latency in microseconds.
fn rr(a: SocketAddr, n: usize) -> Result<String, String> {
    let mut c = connect(a)?;
    c.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut lat = Vec::with_capacity(n);
    let mut b = [7u8; 1];
    for _ in 0..n {
        let t = Instant::now();
        c.write_all(&b).map_err(|e| e.to_string())?;
        c.read_exact(&mut b).map_err(|e| e.to_string())?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(|x, y| x.total_cmp(y));
    let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    Ok(format!("{:.0} {:.0}", q(0.5), q(0.99)))
}

/// Totals of a soak run.
#[derive(Default)]
struct Soak {
    tcp_ok: u64,
    bytes: u64,
    resets_injected: u64,
    resets_seen: u64,
    aborts: u64,
    udp_sent: u64,
    udp_back: u64,
}

/// One TCP worker of `soak`: random transfers until `end`, each verified; one in ten is a
/// fault (the server resets mid-transfer, which must surface as an error, or this side
/// aborts an upload). Any corrupted or silently truncated transfer is an error.
fn soak_tcp(a: SocketAddr, end: Instant, mut rng: u64) -> Result<Soak, String> {
    let mut t = Soak::default();
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    while Instant::now() < end {
        let (r, size, seed) = (next(), next() % (4 << 20), next());
        match r % 10 {
            0 => {
                let cut = size / 2;
                let mut s = connect(a)?;
                s.write_all(format!("getrst {size} {seed} {cut}\n").as_bytes()).map_err(|e| e.to_string())?;
                let mut got = Vec::new();
                let r = s.read_to_end(&mut got);
                t.resets_injected += 1;
                match r {
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => t.resets_seen += 1,
                    // The whole stream fitted before the reset (size <= cut is impossible): a
                    // short stream that ends cleanly would be a silent truncation.
                    Ok(_) if (got.len() as u64) < size => {
                        return Err(format!("reset after {} of {size} bytes surfaced as a clean end", got.len()));
                    }
                    Ok(_) | Err(_) => t.resets_seen += 1,
                }
            }
            1 => {
                let mut s = connect(a)?;
                s.write_all(b"put\n").map_err(|e| e.to_string())?;
                let mut buf = vec![0u8; (size / 2) as usize];
                Stream::new(seed).fill(&mut buf);
                let _ = s.write_all(&buf);
                let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                t.aborts += 1;
            }
            2..=5 => {
                let line = fetch(a, size, seed)?;
                if !line.starts_with("ok ") {
                    return Err(line);
                }
                t.tcp_ok += 1;
                t.bytes += size;
            }
            _ => {
                let mut s = connect(a)?;
                s.write_all(b"put\n").map_err(|e| e.to_string())?;
                let mut st = Stream::new(seed);
                let mut buf = vec![0u8; 1 << 16];
                let mut left = size;
                while left > 0 {
                    let k = left.min(buf.len() as u64) as usize;
                    st.fill(&mut buf[..k]);
                    s.write_all(&buf[..k]).map_err(|e| format!("upload: {e}"))?;
                    left -= k as u64;
                }
                s.shutdown(std::net::Shutdown::Write).map_err(|e| e.to_string())?;
                let mut reply = String::new();
                s.read_to_string(&mut reply).map_err(|e| e.to_string())?;
                let want = format!("{size} {}", stream_hash(seed, size));
                if reply.trim() != want {
                    return Err(format!("upload of {size} bytes: server saw {:?}, want {want:?}", reply.trim()));
                }
                t.tcp_ok += 1;
                t.bytes += size;
            }
        }
    }
    Ok(t)
}

/// One UDP worker of `soak`: datagrams of random size to an echo server, every echo
/// compared byte for byte (a lost one is counted, a corrupted one is an error).
fn soak_udp(a: SocketAddr, end: Instant, mut rng: u64) -> Result<Soak, String> {
    let bind = if a.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let s = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
    s.connect(a).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_millis(500))).map_err(|e| e.to_string())?;
    let mut t = Soak::default();
    let mut out = vec![0u8; 9000];
    let mut back = vec![0u8; 9000];
    while Instant::now() < end {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let n = (rng % 9000) as usize;
        Stream::new(rng).fill(&mut out[..n]);
        s.send(&out[..n]).map_err(|e| e.to_string())?;
        t.udp_sent += 1;
        if let Ok(m) = s.recv(&mut back) {
            if back[..m] != out[..n] {
                return Err(format!("UDP echo of {n} bytes came back different ({m} bytes)"));
            }
            t.udp_back += 1;
        }
    }
    Ok(t)
}

fn soak(a: SocketAddr, udp: SocketAddr, secs: u64, seed: u64) -> Result<String, String> {
    let end = Instant::now() + Duration::from_secs(secs);
    let mut handles = Vec::new();
    for i in 0..12u64 {
        handles
            .push(std::thread::spawn(move || soak_tcp(a, end, (seed + i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)));
    }
    for i in 0..4u64 {
        handles.push(std::thread::spawn(move || {
            soak_udp(udp, end, (seed + 100 + i).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }));
    }
    let mut t = Soak::default();
    for h in handles {
        let w = h.join().map_err(|_| "a soak worker panicked".to_string())??;
        t.tcp_ok += w.tcp_ok;
        t.bytes += w.bytes;
        t.resets_injected += w.resets_injected;
        t.resets_seen += w.resets_seen;
        t.aborts += w.aborts;
        t.udp_sent += w.udp_sent;
        t.udp_back += w.udp_back;
    }
    Ok(format!(
        "ok tcp_verified={} bytes_verified={} resets_injected={} resets_seen={} aborts={} udp_sent={} udp_echoed={}",
        t.tcp_ok, t.bytes, t.resets_injected, t.resets_seen, t.aborts, t.udp_sent, t.udp_back
    ))
}

/// Opens and closes `n` connections from `threads` threads; fails on the first error.
/// `rr`: each connection also makes one 1-byte round trip before it is reset, so it counts
/// only once it reached the server (through a forward, connect() completes at the engine).
fn churn(a: SocketAddr, n: usize, threads: usize, rr: bool) -> Result<String, String> {
    let per = n.div_ceil(threads);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || -> Result<(), String> {
                for _ in 0..per {
                    let mut s = connect(a)?;
                    if rr {
                        let _ = s.set_nodelay(true);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
                        let mut b = [b'x'];
                        s.write_all(&b).map_err(|e| format!("write: {e}"))?;
                        s.read_exact(&mut b).map_err(|e| format!("read: {e}"))?;
                    }
                    // Closed with RST: no TIME_WAIT, so ports never run out.
                    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                    drop(s);
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| "a churn thread panicked".to_string())??;
    }
    Ok(format!("ok {}", per * threads))
}

/// Like `download`, against a `nettool serve` server (its "get N SEED" request).
fn fetch(a: SocketAddr, bytes: u64, seed: u64) -> Result<String, String> {
    let mut s = connect(a)?;
    s.write_all(format!("get {bytes} {seed}\n").as_bytes()).map_err(|e| e.to_string())?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                h.update(&buf[..n]);
                got += n as u64;
            }
            Err(e) => return Err(format!("read after {got} bytes: {e}")),
        }
    }
    let hash = hex(&h.finalize());
    let want = stream_hash(seed, bytes);
    if got != bytes || hash != want {
        return Err(format!("fetch mismatch: got {got} bytes sha256 {hash}, want {bytes} bytes {want}"));
    }
    Ok(format!("ok {got} {hash}"))
}

fn upload(a: SocketAddr, bytes: u64, seed: u64) -> Result<String, String> {
    let mut s = connect(a)?;
    let mut st = Stream::new(seed);
    let mut buf = vec![0u8; 1 << 16];
    let mut left = bytes;
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        st.fill(&mut buf[..k]);
        s.write_all(&buf[..k]).map_err(|e| format!("write with {left} bytes left: {e}"))?;
        left -= k as u64;
    }
    s.shutdown(std::net::Shutdown::Write).map_err(|e| e.to_string())?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).map_err(|e| e.to_string())?;
    Ok(reply.trim().to_string())
}

/// Reads until the server's FIN, then uploads on the still-open half and closes it.
fn halfclose(a: SocketAddr, bytes: u64, seed: u64) -> Result<String, String> {
    let mut s = connect(a)?;
    let mut got = Vec::new();
    s.read_to_end(&mut got).map_err(|e| format!("read: {e}"))?;
    let mut st = Stream::new(seed);
    let mut buf = vec![0u8; 1 << 16];
    let mut left = bytes;
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        st.fill(&mut buf[..k]);
        s.write_all(&buf[..k]).map_err(|e| format!("write after the server's FIN: {e}"))?;
        left -= k as u64;
    }
    s.shutdown(std::net::Shutdown::Write).map_err(|e| e.to_string())?;
    Ok(format!("ok {}", got.len()))
}

fn udp_echo(a: SocketAddr, count: usize) -> Result<String, String> {
    let bind: SocketAddr = if a.is_ipv4() { "0.0.0.0:0".parse().unwrap() } else { "[::]:0".parse().unwrap() };
    let s = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
    s.connect(a).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
    let mut st = Stream::new(7);
    let mut out = vec![0u8; 65536];
    let mut back = vec![0u8; 65536];
    let sizes = [0usize, 1, 100, 1400, 1472, 1473, 8000, 32768, 65000];
    for i in 0..count {
        let n = sizes[i % sizes.len()];
        st.fill(&mut out[..n]);
        let mut tries = 0;
        loop {
            s.send(&out[..n]).map_err(|e| format!("send {n}: {e}"))?;
            match s.recv(&mut back) {
                Ok(m) if back[..m] == out[..n] => break,
                Ok(m) => return Err(format!("datagram {i}: sent {n} bytes, got {m} different bytes")),
                Err(e) if tries < 3 => {
                    tries += 1;
                    eprintln!("datagram {i} ({n} bytes): {e}, retrying");
                }
                Err(e) => return Err(format!("datagram {i} ({n} bytes): {e}")),
            }
        }
    }
    Ok(format!("ok {count}"))
}

/// The datagram `i` of a `udp-blast` of `size`-byte datagrams (identical to the one in
/// tests/util): every seventh is half as long (so batches end on a shorter one); it starts with
/// `i` and the rest is derived from `i`.
fn blast_datagram(i: u32, size: usize, out: &mut Vec<u8>) {
    let n = if i % 7 == 6 { size / 2 } else { size }.max(4);
    out.clear();
    out.extend_from_slice(&i.to_be_bytes());
    out.extend((4..n).map(|j| (i as usize * 7 + j * 13) as u8));
}

/// Sends `count` datagrams back to back in runs of 32 (1 ms apart, so a receiver that gets
/// a CPU keeps up): bursts the engine reads together.
fn udp_blast(a: SocketAddr, count: u32, size: usize) -> Result<String, String> {
    let bind: SocketAddr = if a.is_ipv4() { "0.0.0.0:0".parse().unwrap() } else { "[::]:0".parse().unwrap() };
    let s = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
    blast(&s, a, count, size)?;
    Ok(format!("sent {count}"))
}

fn blast(s: &UdpSocket, to: SocketAddr, count: u32, size: usize) -> Result<(), String> {
    let mut d = Vec::new();
    for i in 0..count {
        blast_datagram(i, size, &mut d);
        s.send_to(&d, to).map_err(|e| format!("send {i}: {e}"))?;
        if i % 32 == 31 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(())
}

/// A UDP server that answers "go" with a `udp-blast` to the sender and echoes anything else.
fn udp_blast_back(port: &str, count: u32, size: usize) -> Result<String, String> {
    let s = UdpSocket::bind(bind_addr(port)?).map_err(|e| e.to_string())?;
    println!("serving");
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = s.recv_from(&mut buf).map_err(|e| e.to_string())?;
        if &buf[..n] == b"go" {
            blast(&s, from, count, size)?;
        } else {
            let _ = s.send_to(&buf[..n], from);
        }
    }
}

/// Asks a `blast_back` server at `a` for `count` datagrams of `size` bytes (after an echo, so
/// the path is warm) and checks each that arrives: "ok GOT DROPPED" when all that arrived
/// was whole and in order, with how many this socket's full receive buffer dropped.
fn udp_blast_recv(a: SocketAddr, count: u32, size: usize) -> Result<String, String> {
    let bind: SocketAddr = if a.is_ipv4() { "0.0.0.0:0".parse().unwrap() } else { "[::]:0".parse().unwrap() };
    let s = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
    s.connect(a).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_millis(1500))).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65536];
    let echoed = (0..3).any(|_| s.send(b"hi").is_ok() && matches!(s.recv(&mut buf), Ok(2)));
    if !echoed {
        return Err("no echo".into());
    }
    s.send(b"go").map_err(|e| e.to_string())?;
    let (mut got, mut next, mut want) = (0u32, 0u32, Vec::new());
    while let Ok(n) = s.recv(&mut buf) {
        let i = u32::from_be_bytes(buf[..4].try_into().unwrap());
        blast_datagram(i, size, &mut want);
        if buf[..n] != want[..] || i < next {
            return Err(format!("datagram {i}: {n} bytes, intact {}, after {next}", buf[..n] == want[..]));
        }
        next = i + 1;
        got += 1;
        if i == count - 1 {
            break;
        }
    }
    Ok(format!("ok {got} {}", socket_drops(&s)?))
}

/// A UDP server that echoes "hi" and checks a `udp-blast` of `count` datagrams of `size`
/// bytes from one client, then answers that client "ok GOT DROPPED" (all that arrived was
/// whole and in order; DROPPED by this socket's full buffer) or what went wrong.
fn udp_blast_check(port: &str, count: u32, size: usize) -> Result<String, String> {
    let s = UdpSocket::bind(bind_addr(port)?).map_err(|e| e.to_string())?;
    println!("serving");
    let mut buf = vec![0u8; 65536];
    let (mut want, mut drops_before) = (Vec::new(), 0);
    loop {
        s.set_read_timeout(None).map_err(|e| e.to_string())?;
        let (n, from) = s.recv_from(&mut buf).map_err(|e| e.to_string())?;
        if &buf[..n] == b"hi" {
            // The socket's drop counter covers every blast it took: this one's is counted
            // from the echo its client waits for before sending.
            drops_before = socket_drops(&s)?;
            let _ = s.send_to(b"hi", from);
            continue;
        }
        s.set_read_timeout(Some(Duration::from_millis(1500))).map_err(|e| e.to_string())?;
        let (mut got, mut next, mut bad) = (0u32, 0u32, None);
        let mut len = n;
        loop {
            let i = u32::from_be_bytes(buf[..4].try_into().unwrap_or_default());
            blast_datagram(i, size, &mut want);
            if bad.is_none() && (buf[..len] != want[..] || i < next) {
                bad = Some(format!("datagram {i}: {len} bytes, intact {}, after {next}", buf[..len] == want[..]));
            }
            next = i + 1;
            got += 1;
            if i + 1 >= count {
                break;
            }
            match s.recv_from(&mut buf) {
                Ok((m, f)) if f == from => len = m,
                Ok(_) => continue,
                Err(_) => break,
            }
        }
        let report = match bad {
            Some(b) => b,
            None => format!("ok {got} {}", socket_drops(&s)? - drops_before),
        };
        let _ = s.send_to(report.as_bytes(), from);
    }
}

/// Datagrams this UDP socket dropped because its receive buffer was full (/proc/net/udp{,6}
/// of its network namespace).
fn socket_drops(s: &UdpSocket) -> Result<u32, String> {
    let ino = std::fs::metadata(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(s)))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .map_err(|e| e.to_string())?;
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default()
        + &std::fs::read_to_string("/proc/net/udp6").unwrap_or_default();
    table
        .lines()
        .find(|l| l.split_whitespace().nth(9) == Some(&ino.to_string()))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .ok_or_else(|| "the socket is not in /proc/net/udp".to_string())
}

fn dns_query(server: SocketAddr, name: &str, tcp: bool, aaaa: bool) -> Result<String, String> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, if aaaa { 28 } else { 1 }, 0, 1]);
    let resp = if tcp {
        let mut s = connect(server)?;
        s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
        let mut msg = (q.len() as u16).to_be_bytes().to_vec();
        msg.extend_from_slice(&q);
        s.write_all(&msg).map_err(|e| e.to_string())?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).map_err(|e| format!("read length: {e}"))?;
        let mut r = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut r).map_err(|e| format!("read answer: {e}"))?;
        r
    } else {
        let bind = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let s = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
        s.send_to(&q, server).map_err(|e| e.to_string())?;
        let mut r = vec![0u8; 4096];
        let (n, from) = s.recv_from(&mut r).map_err(|e| format!("no answer: {e}"))?;
        if from != server {
            return Err(format!("answer from {from}, expected {server}"));
        }
        r.truncate(n);
        r
    };
    if resp.len() < 12 || resp[0..2] != [0x12, 0x34] {
        return Err("bad answer header".into());
    }
    let ancount = u16::from_be_bytes([resp[6], resp[7]]) as usize;
    // Skip the question: name, type, class.
    let mut i = 12;
    while i < resp.len() && resp[i] != 0 {
        i += 1 + resp[i] as usize;
    }
    i += 5;
    let mut addrs = Vec::new();
    for _ in 0..ancount {
        if i + 12 > resp.len() {
            break;
        }
        // Name: a compression pointer (2 bytes) in our stub's answers.
        i += if resp[i] & 0xc0 == 0xc0 { 2 } else { return Err("unexpected uncompressed name".into()) };
        let rtype = u16::from_be_bytes([resp[i], resp[i + 1]]);
        let rdlen = u16::from_be_bytes([resp[i + 8], resp[i + 9]]) as usize;
        i += 10;
        if rtype == 1 && rdlen == 4 {
            addrs.push(Ipv4Addr::new(resp[i], resp[i + 1], resp[i + 2], resp[i + 3]).to_string());
        }
        if rtype == 28 && rdlen == 16 && i + 16 <= resp.len() {
            let a: [u8; 16] = resp[i..i + 16].try_into().expect("16 bytes");
            addrs.push(std::net::Ipv6Addr::from(a).to_string());
        }
        i += rdlen;
    }
    Ok(format!("rcode={} {}", resp[3] & 0x0f, addrs.join(",")))
}

/// ICMPv6 echo over a raw socket (the kernel fills the checksum and strips the IP header).
fn ping6(host: std::net::Ipv6Addr) -> Result<String, String> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)).map_err(|e| format!("raw socket: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(3))).map_err(|e| e.to_string())?;
    let ident: u16 = (std::process::id() & 0xffff) as u16;
    let mut pkt = vec![128u8, 0, 0, 0];
    pkt.extend_from_slice(&ident.to_be_bytes());
    pkt.extend_from_slice(&1u16.to_be_bytes());
    pkt.extend_from_slice(b"warren-ping-payload");
    s.send_to(&pkt, &SocketAddr::from((host, 0)).into()).map_err(|e| format!("send: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(3);
    // A raw socket reads like a datagram socket: through std's safe recv_from.
    let s = UdpSocket::from(std::os::fd::OwnedFd::from(s));
    let mut b = [0u8; 1500];
    while Instant::now() < deadline {
        let (n, from) = match s.recv_from(&mut b) {
            Ok(x) => x,
            Err(e) => return Err(format!("no reply: {e}")),
        };
        let b = &b[..n];
        let src = from.ip();
        match b[0] {
            129 if b[4..6] == ident.to_be_bytes() => {
                let ok = &b[8..] == b"warren-ping-payload";
                return Ok(format!("reply from {src} payload_ok={ok}"));
            }
            1 => return Ok(format!("unreachable code={} from {src}", b[1])),
            _ => continue,
        }
    }
    Err("no reply".into())
}

fn ping(host: Ipv4Addr) -> Result<String, String> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).map_err(|e| format!("raw socket: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(3))).map_err(|e| e.to_string())?;
    let ident: u16 = (std::process::id() & 0xffff) as u16;
    let mut pkt = vec![8u8, 0, 0, 0];
    pkt.extend_from_slice(&ident.to_be_bytes());
    pkt.extend_from_slice(&1u16.to_be_bytes());
    pkt.extend_from_slice(b"warren-ping-payload");
    let mut sum: u32 = pkt.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let ck = !(sum as u16);
    pkt[2..4].copy_from_slice(&ck.to_be_bytes());
    s.send_to(&pkt, &SocketAddr::from((host, 0)).into()).map_err(|e| format!("send: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        let n = match (&s).read(&mut buf) {
            Ok(n) => n,
            Err(e) => return Err(format!("no reply: {e}")),
        };
        let b = &buf[..n];
        let ihl = usize::from(b[0] & 0x0f) * 4;
        let (ty, code) = (b[ihl], b[ihl + 1]);
        let src = Ipv4Addr::new(b[12], b[13], b[14], b[15]);
        match ty {
            0 if b[ihl + 4..ihl + 6] == ident.to_be_bytes() => {
                let ok = &b[ihl + 8..] == b"warren-ping-payload";
                return Ok(format!("reply from {src} payload_ok={ok}"));
            }
            3 => return Ok(format!("unreachable code={code} from {src}")),
            _ => continue,
        }
    }
    Err("no reply".into())
}

/// Serves one connection of `serve`: the first line says what to do.
fn serve_conn(mut c: TcpStream) {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while c.read(&mut b).map(|n| n == 1).unwrap_or(false) && b[0] != b'\n' {
        line.push(b[0]);
    }
    let line = String::from_utf8_lossy(&line).into_owned();
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["peer"] => {
            let p = c.peer_addr().map(|p| p.to_string()).unwrap_or_default();
            let _ = writeln!(c, "{p}");
        }
        ["get", n, seed] => {
            let (mut n, seed) = (n.parse::<u64>().unwrap_or(0), seed.parse::<u64>().unwrap_or(0));
            let mut st = Stream::new(seed);
            let mut buf = vec![0u8; 1 << 16];
            while n > 0 {
                let k = n.min(buf.len() as u64) as usize;
                st.fill(&mut buf[..k]);
                if c.write_all(&buf[..k]).is_err() {
                    return;
                }
                n -= k as u64;
            }
        }
        ["getrst", n, seed, cut] => {
            // A fault: send `cut` bytes of a `get`, then reset the connection.
            let (n, seed, cut) =
                (n.parse::<u64>().unwrap_or(0), seed.parse::<u64>().unwrap_or(0), cut.parse::<u64>().unwrap_or(0));
            let mut st = Stream::new(seed);
            let mut buf = vec![0u8; n.min(cut) as usize];
            st.fill(&mut buf);
            let _ = c.write_all(&buf);
            std::thread::sleep(Duration::from_millis(20));
            let _ = socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO));
        }
        ["put"] => {
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0u64;
            loop {
                match c.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        h.update(&buf[..n]);
                        total += n as u64;
                    }
                    Err(_) => return,
                }
            }
            let _ = writeln!(c, "{total} {}", hex(&h.finalize()));
        }
        _ => {
            let _ = writeln!(c, "unknown request {line:?}");
        }
    }
}

/// A server's bind address: `PORT` (on 0.0.0.0) or `ADDR:PORT`.
/// A listener whose accept-queue length is `NETTOOL_BACKLOG` (default 128, as Rust's std).
/// The benchmark sets 4096: 128 overflows when 8 clients churn connections on 2 cores, and
/// every overflow costs the client a 1 s SYN retransmit. The test suite keeps 128: there the
/// throttling keeps a 100k-connection churn from flooding loopback while other tests run.
fn listen(p: &str) -> Result<std::net::TcpListener, String> {
    let backlog = std::env::var("NETTOOL_BACKLOG").ok().and_then(|b| b.parse().ok()).unwrap_or(128);
    let a = bind_addr(p)?;
    let s = socket2::Socket::new(socket2::Domain::for_address(a), socket2::Type::STREAM, None)
        .map_err(|e| format!("socket for {p}: {e}"))?;
    s.set_reuse_address(true).map_err(|e| e.to_string())?;
    if a.is_ipv6() {
        let _ = s.set_only_v6(false);
    }
    s.bind(&a.into()).map_err(|e| format!("bind {p}: {e}"))?;
    s.listen(backlog).map_err(|e| format!("listen {p}: {e}"))?;
    Ok(s.into())
}

fn bind_addr(p: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = p.parse::<u16>() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    p.parse().map_err(|_| format!("{p:?} is neither PORT nor ADDR:PORT"))
}

fn serve(ports: &[&str]) -> Result<String, String> {
    let mut handles = Vec::new();
    for p in ports {
        let l = listen(p)?;
        handles.push(std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                std::thread::spawn(move || serve_conn(c));
            }
        }));
    }
    println!("serving");
    for h in handles {
        let _ = h.join();
    }
    Ok("done".into())
}

fn udp_serve(port: &str, delay: Duration) -> Result<String, String> {
    let s = std::sync::Arc::new(UdpSocket::bind(bind_addr(port)?).map_err(|e| e.to_string())?);
    println!("serving");
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = s.recv_from(&mut buf).map_err(|e| e.to_string())?;
        let mut reply = format!("from {from} ").into_bytes();
        reply.extend_from_slice(&buf[..n]);
        if delay.is_zero() {
            let _ = s.send_to(&reply, from);
        } else {
            let s = s.clone();
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let _ = s.send_to(&reply, from);
            });
        }
    }
}

/// A UDP socket on `port` of the group's family, joined to `group` on `iface` ("-": the
/// interface the routes pick) and sending there.
fn mcast_socket(group: IpAddr, port: u16, iface: &str) -> Result<(UdpSocket, u32), String> {
    use socket2::{Domain, Socket, Type};
    let idx = if iface == "-" {
        0
    } else {
        nix::net::if_::if_nametoindex(iface).map_err(|e| format!("interface {iface}: {e}"))?
    };
    let s = Socket::new(Domain::for_address(SocketAddr::new(group, port)), Type::DGRAM, None)
        .map_err(|e| format!("socket: {e}"))?;
    s.set_reuse_address(true).map_err(|e| e.to_string())?;
    let any = match group {
        IpAddr::V4(g) => {
            s.join_multicast_v4_n(&g, &socket2::InterfaceIndexOrAddress::Index(idx))
                .map_err(|e| format!("join {g}: {e}"))?;
            let first_v4 = nix::ifaddrs::getifaddrs().ok().into_iter().flatten().find_map(|a| {
                (a.interface_name == iface).then(|| a.address?.as_sockaddr_in().map(|s| s.ip())).flatten()
            });
            if let Some(a) = first_v4 {
                s.set_multicast_if_v4(&a).map_err(|e| format!("multicast interface: {e}"))?;
            }
            SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port)
        }
        IpAddr::V6(g) => {
            s.set_only_v6(true).map_err(|e| e.to_string())?;
            s.join_multicast_v6(&g, idx).map_err(|e| format!("join {g}: {e}"))?;
            s.set_multicast_if_v6(idx).map_err(|e| format!("multicast interface: {e}"))?;
            SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), port)
        }
    };
    s.bind(&any.into()).map_err(|e| format!("bind {any}: {e}"))?;
    Ok((s.into(), idx))
}

fn group_addr(group: IpAddr, port: u16, idx: u32) -> SocketAddr {
    match group {
        IpAddr::V6(g) => std::net::SocketAddrV6::new(g, port, 0, idx).into(),
        IpAddr::V4(_) => SocketAddr::new(group, port),
    }
}

/// Sends a query of `bytes` bytes of stream(`seed`) to the group with TTL 4 (again each
/// second until answered) from the group's port (`from` = "port", as an mDNS responder or
/// full querier does) or from an ephemeral port ("ephemeral", a one-shot query), then reports
/// the reply and the group announcement of an `mcast-respond` (whether each carries the
/// query's hash) and the sources of anything else.
fn mcast_query(group: IpAddr, port: u16, bytes: usize, seed: u64, iface: &str, from: &str) -> Result<String, String> {
    let (s, idx) = mcast_socket(group, port, iface)?;
    let ephemeral = match from {
        "port" => None,
        "ephemeral" => {
            let any = if group.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            Some(UdpSocket::bind(any).map_err(|e| e.to_string())?)
        }
        _ => return Err(format!("FROM must be port or ephemeral, not {from:?}")),
    };
    for sock in std::iter::once(&s).chain(ephemeral.as_ref()) {
        sock.set_read_timeout(Some(Duration::from_millis(100))).map_err(|e| e.to_string())?;
        // Further than the default 1, as SSDP asks: the relay keeps the sender's TTL. Its
        // kernel loops none of its datagrams back to it.
        let s2 = socket2::SockRef::from(sock);
        if group.is_ipv4() { s2.set_multicast_ttl_v4(4) } else { s2.set_multicast_hops_v6(4) }
            .map_err(|e| e.to_string())?;
        if group.is_ipv4() { s2.set_multicast_loop_v4(false) } else { s2.set_multicast_loop_v6(false) }
            .map_err(|e| e.to_string())?;
        if !group.is_ipv4() {
            s2.set_multicast_if_v6(idx).map_err(|e| e.to_string())?;
        }
    }
    let sender = ephemeral.as_ref().unwrap_or(&s);
    let mut q = vec![0u8; bytes];
    Stream::new(seed).fill(&mut q);
    let want = hex(&Sha256::digest(&q));
    let to = group_addr(group, port, idx);
    let deadline = Instant::now() + Duration::from_secs(8);
    let (mut reply, mut announce, mut others) = (None, None, Vec::new());
    let mut next_send = Instant::now();
    let mut buf = vec![0u8; 65536];
    while (reply.is_none() || announce.is_none()) && Instant::now() < deadline {
        if reply.is_none() && Instant::now() >= next_send {
            sender.send_to(&q, to).map_err(|e| format!("send to {to}: {e}"))?;
            next_send = Instant::now() + Duration::from_secs(1);
        }
        for sock in std::iter::once(&s).chain(ephemeral.as_ref()) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
            if buf[..n] == q[..] {
                // Its own query: someone relayed it back.
                others.push(format!("echo:{from}"));
                continue;
            }
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            let hash = |t: &str| if t.split(' ').nth(1) == Some(want.as_str()) { "hash=ok" } else { "hash=BAD" };
            if text.starts_with("reply ") {
                let seen = text.split(' ').nth(2).unwrap_or_default().to_string();
                reply = Some(format!("reply from {from} seen={seen} {}", hash(&text)));
            } else if text.starts_with("announce ") {
                announce = Some(format!("announce from {from} {}", hash(&text)));
            } else {
                others.push(from.to_string());
            }
        }
    }
    Ok(format!(
        "{}\n{}\nothers: {}",
        reply.unwrap_or_else(|| "no reply".into()),
        announce.unwrap_or_else(|| "no announce".into()),
        others.join(" ")
    ))
}

/// Waits (up to 15 s) for one datagram to the group and answers "reply HASH SENDER" as mDNS
/// does: to the group when it came from the group's port, else to its sender; then sends
/// "announce HASH" to the group (both `delay` after the query). Prints what it got and its TTL.
fn mcast_respond(group: IpAddr, port: u16, iface: &str, delay: Duration) -> Result<String, String> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt};
    let (s, idx) = mcast_socket(group, port, iface)?;
    s.set_read_timeout(Some(Duration::from_secs(15))).map_err(|e| e.to_string())?;
    match group {
        IpAddr::V4(_) => setsockopt(&s, sockopt::Ipv4RecvTtl, &true),
        IpAddr::V6(_) => setsockopt(&s, sockopt::Ipv6RecvHopLimit, &true),
    }
    .map_err(|e| format!("ask for the TTL: {e}"))?;
    println!("listening");
    let mut buf = vec![0u8; 65536];
    let mut cmsg = nix::cmsg_space!(libc::c_int);
    let (n, from, ttl) = {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let m = recvmsg::<SockaddrStorage>(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        )
        .map_err(|e| format!("no query: {e}"))?;
        let ttl = m.cmsgs().ok().into_iter().flatten().find_map(|c| match c {
            ControlMessageOwned::Ipv4Ttl(t) | ControlMessageOwned::Ipv6HopLimit(t) => Some(t),
            _ => None,
        });
        let from = m.address.and_then(|a| {
            a.as_sockaddr_in()
                .map(|a| SocketAddr::from(std::net::SocketAddrV4::from(*a)))
                .or_else(|| a.as_sockaddr_in6().map(|a| SocketAddr::from(std::net::SocketAddrV6::from(*a))))
        });
        (m.bytes, from.ok_or("no sender address")?, ttl.unwrap_or(-1))
    };
    let h = hex(&Sha256::digest(&buf[..n]));
    std::thread::sleep(delay);
    let to = group_addr(group, port, idx);
    let reply_to = if from.port() == port { to } else { from };
    s.send_to(format!("reply {h} {from}").as_bytes(), reply_to).map_err(|e| format!("reply: {e}"))?;
    s.send_to(format!("announce {h}").as_bytes(), to).map_err(|e| format!("announce to {to}: {e}"))?;
    Ok(format!("query {n} bytes from {from} ttl={ttl}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = match a.as_slice() {
        ["download", h, p, n, seed] => download(addr(h, p), n.parse().unwrap(), seed.parse().unwrap()),
        ["upload", h, p, n, seed] => upload(addr(h, p), n.parse().unwrap(), seed.parse().unwrap()),
        ["parallel", h, p, conns, n] => {
            let (target, n) = (addr(h, p), n.parse::<u64>().unwrap());
            let handles: Vec<_> = (1..=conns.parse::<u64>().unwrap())
                .map(|seed| std::thread::spawn(move || download(target, n, seed)))
                .collect();
            let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            let bad: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
            if bad.is_empty() {
                Ok(format!("ok {}", results.len()))
            } else {
                Err(format!("{} failed: {:?}", bad.len(), bad))
            }
        }
        ["mcast-query", g, p, n, seed, iface, from] => {
            mcast_query(g.parse().unwrap(), p.parse().unwrap(), n.parse().unwrap(), seed.parse().unwrap(), iface, from)
        }
        ["mcast-respond", g, p, iface] => mcast_respond(g.parse().unwrap(), p.parse().unwrap(), iface, Duration::ZERO),
        ["mcast-respond", g, p, iface, ms] => {
            mcast_respond(g.parse().unwrap(), p.parse().unwrap(), iface, Duration::from_millis(ms.parse().unwrap()))
        }
        ["udp-echo", h, p, count] => udp_echo(addr(h, p), count.parse().unwrap()),
        ["udp-blast", h, p, count, size] => udp_blast(addr(h, p), count.parse().unwrap(), size.parse().unwrap()),
        ["udp-blast-recv", h, p, count, size] => {
            udp_blast_recv(addr(h, p), count.parse().unwrap(), size.parse().unwrap())
        }
        ["udp-blast-check", p, count, size] => udp_blast_check(p, count.parse().unwrap(), size.parse().unwrap()),
        ["udp-blast-back", p, count, size] => udp_blast_back(p, count.parse().unwrap(), size.parse().unwrap()),
        ["refused", h, p] => match TcpStream::connect_timeout(&addr(h, p), Duration::from_secs(10)) {
            Ok(_) => Err("connected, expected refusal".into()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok("refused".into()),
            Err(e) => Err(format!("expected ECONNREFUSED, got: {e}")),
        },
        ["connect-error", h, p] => match TcpStream::connect_timeout(&addr(h, p), Duration::from_secs(10)) {
            Ok(_) => Ok("connected".into()),
            Err(e) => Ok(format!("error raw={:?} {e}", e.raw_os_error())),
        },
        ["dns", server, name] => dns_query(addr(server, "53"), name, false, false),
        ["dns", server, name, "tcp"] => dns_query(addr(server, "53"), name, true, false),
        ["dns", server, name, "aaaa"] => dns_query(addr(server, "53"), name, false, true),
        ["ping", h] => match h.parse::<IpAddr>().expect("IP address") {
            IpAddr::V4(a) => ping(a),
            IpAddr::V6(a) => ping6(a),
        },
        ["churn", h, p, n, t] => churn(addr(h, p), n.parse().unwrap(), t.parse().unwrap(), false),
        ["churn-rr", h, p, n, t] => churn(addr(h, p), n.parse().unwrap(), t.parse().unwrap(), true),
        ["soak", h, p, up, secs, seed] => soak(addr(h, p), addr(h, up), secs.parse().unwrap(), seed.parse().unwrap()),
        ["sink", bind] => sink(bind, false),
        ["hold-serve", bind] => sink(bind, true),
        ["hold", h, p, n, secs] => hold(addr(h, p), n.parse().unwrap(), secs.parse().unwrap(), false),
        ["hold-upto", h, p, n, secs] => hold(addr(h, p), n.parse().unwrap(), secs.parse().unwrap(), true),
        ["rr-serve", bind] => rr_serve(bind),
        ["late-echo", bind, ms] => late_echo(bind, ms.parse().unwrap()),
        ["rr", h, p, n] => rr(addr(h, p), n.parse().unwrap()),
        ["spin", secs] => {
            let end = Instant::now() + Duration::from_secs_f64(secs.parse().unwrap());
            let mut n = 0u64;
            while Instant::now() < end {
                n = std::hint::black_box(n.wrapping_add(1));
            }
            Ok(format!("spun {n}"))
        }
        ["fetch", h, p, n, seed] => fetch(addr(h, p), n.parse().unwrap(), seed.parse().unwrap()),
        ["halfclose", h, p, n, seed] => halfclose(addr(h, p), n.parse().unwrap(), seed.parse().unwrap()),
        ["reset", h, p] => connect(addr(h, p)).and_then(|mut s| {
            s.write_all(b"x").map_err(|e| e.to_string())?;
            std::thread::sleep(Duration::from_millis(100));
            socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).map_err(|e| e.to_string())?;
            drop(s);
            Ok("reset sent".into())
        }),
        ["send", h, p, n, seed] => connect(addr(h, p)).and_then(|mut s| {
            let (mut left, mut st) = (n.parse::<u64>().unwrap(), Stream::new(seed.parse().unwrap()));
            let mut buf = vec![0u8; 1 << 16];
            while left > 0 {
                let k = left.min(buf.len() as u64) as usize;
                st.fill(&mut buf[..k]);
                s.write_all(&buf[..k]).map_err(|e| e.to_string())?;
                left -= k as u64;
            }
            s.shutdown(std::net::Shutdown::Write).map_err(|e| e.to_string())?;
            Ok("sent".into())
        }),
        ["ask", h, p, words @ ..] => connect(addr(h, p)).and_then(|mut s| {
            let local = s.local_addr().map_err(|e| e.to_string())?;
            s.write_all(format!("{}\n", words.join(" ")).as_bytes()).map_err(|e| e.to_string())?;
            let mut reply = String::new();
            s.read_to_string(&mut reply).map_err(|e| e.to_string())?;
            Ok(format!("local={local} reply={}", reply.trim()))
        }),
        ["udp-ask", h, p, text] => (|| {
            let bind = if addr(h, p).is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            let s = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
            s.connect(addr(h, p)).map_err(|e| e.to_string())?;
            let local = s.local_addr().map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; 65536];
            for _ in 0..3 {
                s.send(text.as_bytes()).map_err(|e| e.to_string())?;
                if let Ok(n) = s.recv(&mut buf) {
                    return Ok(format!("local={local} reply={}", String::from_utf8_lossy(&buf[..n])));
                }
            }
            Err("no UDP reply".to_string())
        })(),
        ["udp-sources", h, p, n] => (|| {
            let (to, n) = (addr(h, p), n.parse::<usize>().unwrap());
            let bind = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            let (mut open, mut answered, mut buf) = (Vec::with_capacity(n), 0, [0u8; 64]);
            for i in 0..n {
                let s = UdpSocket::bind(bind).map_err(|e| format!("socket {i}: {e}"))?;
                s.set_read_timeout(Some(Duration::from_secs(1))).map_err(|e| e.to_string())?;
                s.connect(to).map_err(|e| e.to_string())?;
                let text = i.to_string();
                s.send(text.as_bytes()).map_err(|e| e.to_string())?;
                if matches!(s.recv(&mut buf), Ok(m) if buf[..m] == *text.as_bytes()) {
                    answered += 1;
                }
                open.push(s);
            }
            Ok(format!("answered {answered} of {n}"))
        })(),
        ["serve", ports @ ..] if !ports.is_empty() => serve(ports),
        ["udp-serve", p] => udp_serve(p, Duration::ZERO),
        ["udp-serve", p, ms] => udp_serve(p, Duration::from_millis(ms.parse().unwrap())),
        ["peer", h, p] => connect(addr(h, p)).and_then(|mut s| {
            let mut line = String::new();
            s.read_to_string(&mut line).map_err(|e| e.to_string())?;
            Ok(format!("server saw {}", line.trim()))
        }),
        _ => Err(format!("usage: see the module docs; got {args:?}")),
    };
    match r {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("FAIL {e}");
            ExitCode::from(1)
        }
    }
}
