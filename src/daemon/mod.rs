//! The per-user network daemon of bridge networks.
//!
//! One process per user (`warren daemon`, started on demand by the first command that needs
//! it) owns every bridge network: for each, one dataplane task that is at once the segment's
//! switch and its gateway (NAT, DNS with the containers' names, published ports). It listens
//! on `SOCK_SEQPACKET` unix socket `daemon.sock` (directory 0700) under the runtime directory;
//! each message is one JSON object, and container interfaces arrive as TAP fds with
//! `SCM_RIGHTS`. Networks persist in `networks.json` under `$XDG_DATA_HOME/warren`.
//!
//! A `warren run --network` process keeps its connection open for the container's life: the
//! daemon sends it requests on it (create another interface in the container, for
//! `network connect`), and when it closes, the container's interfaces, addresses, names and
//! ports are released.

pub mod client;
pub mod ipam;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::rc::Rc;

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};

use crate::config::{self, Addresses, Addresses6, BridgeOpts, DnsUpstreams, NetConfig};
use crate::runtime::bridge::{PortSpec, PortStat};
use crate::runtime::ports::{self, PortInfo};
use crate::runtime::{Command, Dataplane};

/// Largest protocol message.
pub const MSG_MAX: usize = 1 << 16;

/// What the daemon could not do at start-up.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A file or socket operation.
    #[error("{0}: {1}")]
    Io(String, io::Error),
    /// The state file does not parse.
    #[error("{0}: {1}; move it away to start with no networks")]
    State(PathBuf, String),
}

/// The runtime directory of the daemon's socket and pid file.
pub fn runtime_dir() -> PathBuf {
    crate::api::default_dir()
}

/// The daemon's socket path.
pub fn socket_path() -> PathBuf {
    runtime_dir().join("daemon.sock")
}

/// Where networks are persisted: `$XDG_DATA_HOME/warren`, else `~/.local/share/warren`.
pub fn data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("warren");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    home.join(".local/share/warren")
}

/// `network create` options.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateArgs {
    /// Network name.
    pub name: String,
    /// IPv4 subnet (default: the next free /24 of 10.89.0.0/16).
    pub subnet: Option<String>,
    /// Gateway address (default: the first host address).
    pub gateway: Option<String>,
    /// No outside access.
    pub internal: bool,
    /// Inter-container communication.
    pub icc: bool,
    /// MTU of the containers' interfaces.
    pub mtu: Option<u32>,
    /// IPv6 too.
    pub ipv6: bool,
    /// IPv6 /64 (default fd89:0:0:N::/64).
    pub subnet6: Option<String>,
    /// DNS upstreams for names that are not local (default: the host's resolv.conf).
    pub dns_upstream: Vec<String>,
    /// `--dns-route` domains with servers of their own, as given.
    #[serde(default)]
    pub dns_route: Vec<String>,
    /// Record every frame of the network in this pcap file while the daemon runs.
    #[serde(default)]
    pub pcap: Option<PathBuf>,
    /// Source address of the containers' IPv4 flows on the host (IP or interface).
    #[serde(default)]
    pub outbound_addr: Option<String>,
    /// The same for IPv6.
    #[serde(default)]
    pub outbound_addr6: Option<String>,
    /// `--multicast` relays, as given.
    #[serde(default)]
    pub multicast: Vec<String>,
}

/// A network as persisted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkSpec {
    /// Name.
    pub name: String,
    /// 64 hex digits.
    pub id: String,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// IPv4 subnet.
    pub subnet: Ipv4Net,
    /// IPv4 gateway (also the DNS address).
    pub gateway: Ipv4Addr,
    /// IPv6 /64.
    pub subnet6: Option<Ipv6Net>,
    /// IPv6 gateway.
    pub gateway6: Option<Ipv6Addr>,
    /// No outside access.
    pub internal: bool,
    /// Inter-container communication.
    pub icc: bool,
    /// MTU.
    pub mtu: u32,
    /// DNS upstreams (empty: the host's resolv.conf).
    pub dns_upstream: Vec<SocketAddr>,
    /// Source address of the containers' IPv4 flows on the host (`--outbound-addr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound4: Option<Ipv4Addr>,
    /// Source address of their IPv6 flows (`--outbound-addr6`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound6: Option<Ipv6Addr>,
    /// The interface `--outbound-addr` named, if it named one: its address is looked up
    /// again when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_iface4: Option<String>,
    /// The same for `--outbound-addr6`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_iface6: Option<String>,
    /// Multicast relays to the host's network (`--multicast`), as given: interfaces are
    /// looked up when the network starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub multicast: Vec<String>,
    /// `--dns-route` domains with servers of their own, as given (`DOMAIN=IP[:PORT]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_route: Vec<String>,
}

/// What a container needs to configure one interface.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Iface {
    /// Network name.
    pub network: String,
    /// Interface name in the container (eth0, eth1, ...).
    pub ifname: String,
    /// Its MAC.
    pub mac: [u8; 6],
    /// IPv4 address.
    pub ip4: Ipv4Addr,
    /// IPv4 subnet.
    pub subnet: Ipv4Net,
    /// Gateway (and DNS).
    pub gateway: Ipv4Addr,
    /// IPv6 address.
    pub ip6: Option<Ipv6Addr>,
    /// IPv6 /64.
    pub subnet6: Option<Ipv6Net>,
    /// IPv6 gateway.
    pub gateway6: Option<Ipv6Addr>,
    /// MTU.
    pub mtu: u32,
    /// Switch port id in the daemon.
    pub port: u64,
}

impl Iface {
    /// The namespace configuration of this interface (`first`: eth0, with the default route).
    pub fn net_config(&self, first: bool) -> NetConfig {
        NetConfig {
            addrs: Addresses { net: self.subnet, gateway: self.gateway, dns: self.gateway, container: self.ip4 },
            addrs6: match (self.ip6, self.subnet6, self.gateway6) {
                (Some(ip), Some(net), Some(gw)) => Some(Addresses6 { net, gateway: gw, dns: gw, container: ip }),
                _ => None,
            },
            static_ipv6: true,
            mtu: self.mtu,
            tap_name: self.ifname.clone(),
            mac: Some(self.mac),
            allow_host_loopback: false,
            dns: DnsUpstreams::Disabled,
            dns_routes: Vec::new(),
            outbound_v4: None,
            outbound_v6: None,
            outbound_ifaces: (None, None),
            limits: Default::default(),
            default_route: first,
            queues: 1,
            busy_poll: config::default_busy_poll(),
            to_host: Vec::new(),
            to_host_udp: Vec::new(),
            multicast: Vec::new(),
            auto_tables: Default::default(),
            bridge: None,
        }
    }
}

/// A request on the daemon socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// `network create`.
    NetworkCreate(CreateArgs),
    /// `network ls`.
    NetworkLs,
    /// `network inspect`.
    NetworkInspect {
        /// Names.
        names: Vec<String>,
    },
    /// `network rm`.
    NetworkRm {
        /// Names.
        names: Vec<String>,
    },
    /// `network connect`.
    NetworkConnect {
        /// Network.
        network: String,
        /// Container.
        container: String,
        /// Extra names on that network.
        aliases: Vec<String>,
        /// Address wanted.
        ip: Option<String>,
    },
    /// `network disconnect`.
    NetworkDisconnect {
        /// Network.
        network: String,
        /// Container.
        container: String,
    },
    /// `ps`.
    Ps,
    /// A container joins a network (first message of a `warren run --network` session).
    Join {
        /// Network.
        network: String,
        /// Container name (default: generated).
        name: Option<String>,
        /// Extra names on the network.
        aliases: Vec<String>,
        /// Address wanted.
        ip: Option<String>,
        /// `-p` specs to publish.
        publish: Vec<String>,
    },
    /// The container exists: its TAP fd comes with this message.
    Attach {
        /// PID of the container's init.
        pid: u32,
    },
    /// The PID of a running container (`--network container:NAME`).
    Pid {
        /// Container name.
        container: String,
    },
    /// Packet capture on a network (every frame of every container and of the gateway), or
    /// of one container's interface on it.
    Capture {
        /// Network (may be empty with `container` on one network only).
        #[serde(default)]
        network: String,
        /// Only this container's interface.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        container: Option<String>,
        /// What to do.
        cmd: crate::runtime::CaptureCmd,
    },
    /// Counters of a network, or of a container's interfaces.
    Stats {
        /// Network or container name.
        target: String,
    },
    /// The published ports of a running container (its `-p auto` compares them with what
    /// it listens on).
    Ports {
        /// Container name.
        container: String,
    },
    /// Publish more ports to a running container's `eth0` (`-p auto`), all or none.
    Publish {
        /// Container name.
        container: String,
        /// `-p` specs, each with its host address.
        publish: Vec<String>,
    },
    /// Unpublish ports of a running container by id, all or none.
    Unpublish {
        /// Container name.
        container: String,
        /// Port ids (of [`Request::Ports`]).
        ids: Vec<u64>,
    },
}

/// A container the daemon serves.
struct Container {
    name: String,
    pid: u32,
    aliases: BTreeMap<String, Vec<String>>,
    ifaces: Vec<Iface>,
    ports: Vec<(String, PortInfo)>,
    session: Option<SessionTx>,
}

/// A request to a container's `warren run` process, with where its answer (fds) goes.
type SessionTx = mpsc::UnboundedSender<(Value, oneshot::Sender<Result<Vec<OwnedFd>, String>>)>;

struct Network {
    spec: NetworkSpec,
    dp: mpsc::Sender<Command>,
    _stop: oneshot::Sender<()>,
}

struct State {
    data: PathBuf,
    networks: BTreeMap<String, Network>,
    containers: BTreeMap<String, Container>,
    next_port: u64,
}

type Shared = Rc<RefCell<State>>;

fn valid_name(name: &str) -> bool {
    let mut c = name.chars();
    c.next().is_some_and(|f| f.is_ascii_alphanumeric())
        && c.all(|x| x.is_ascii_alphanumeric() || "_.-".contains(x))
        && name.len() <= 64
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut b = vec![0u8; bytes];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).is_err() {
        let seed = now_secs() ^ u64::from(std::process::id());
        for (i, x) in b.iter_mut().enumerate() {
            *x = (seed >> ((i % 8) * 8)) as u8 ^ i as u8;
        }
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn mac_text(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// The interface of `c` a capture of it watches: the one on `network`, or its only one.
fn capture_iface<'a>(c: &'a Container, network: &str) -> Result<&'a Iface, String> {
    if !network.is_empty() {
        return c
            .ifaces
            .iter()
            .find(|i| i.network == network)
            .ok_or_else(|| format!("container {:?} is not on network {network:?} (see `warren ps`)", c.name));
    }
    match c.ifaces.as_slice() {
        [one] => Ok(one),
        [] => Err(format!("container {:?} has no interface yet", c.name)),
        many => {
            let names: Vec<&str> = many.iter().map(|i| i.network.as_str()).collect();
            Err(format!("container {:?} is on networks {}: name one with --network", c.name, names.join(", ")))
        }
    }
}

/// The multicast relays of a network and their bound listeners.
///
/// # Errors
/// The first relay that does not parse or that the host refuses.
fn network_relays(spec: &NetworkSpec) -> Result<Relays, crate::multicast::MulticastError> {
    let relays = crate::multicast::parse_all(&spec.multicast)?;
    let socks = relays.iter().map(crate::multicast::listen).collect::<Result<_, _>>()?;
    Ok((relays, socks))
}

/// A network's multicast relays, with their listeners in the same order.
type Relays = (Vec<crate::multicast::Relay>, Vec<std::net::UdpSocket>);

/// Starts the dataplane task of a network, relaying multicast with `relays`.
fn start_network(spec: NetworkSpec, relays: Relays) -> Network {
    let net = spec.subnet;
    let cfg = NetConfig {
        addrs: Addresses { net, gateway: spec.gateway, dns: spec.gateway, container: spec.gateway },
        addrs6: match (spec.subnet6, spec.gateway6) {
            (Some(n), Some(g)) => Some(Addresses6 { net: n, gateway: g, dns: g, container: g }),
            _ => None,
        },
        static_ipv6: true,
        mtu: spec.mtu,
        tap_name: String::new(),
        mac: None,
        allow_host_loopback: false,
        dns: if spec.dns_upstream.is_empty() {
            DnsUpstreams::HostResolvConf
        } else {
            DnsUpstreams::Fixed(spec.dns_upstream.clone())
        },
        dns_routes: spec
            .dns_route
            .iter()
            .filter_map(|r| {
                // Checked at creation: only a hand-edited networks.json gets here.
                crate::config::parse_dns_route(r)
                    .inspect_err(|e| tracing::warn!(network = %spec.name, error = %e, "DNS route left out"))
                    .ok()
            })
            .collect(),
        outbound_v4: spec.outbound4,
        outbound_v6: spec.outbound6,
        outbound_ifaces: (spec.outbound_iface4.clone(), spec.outbound_iface6.clone()),
        limits: Default::default(),
        default_route: true,
        queues: 1,
        busy_poll: config::default_busy_poll(),
        to_host: Vec::new(),
        to_host_udp: Vec::new(),
        multicast: relays.0,
        auto_tables: Default::default(),
        bridge: Some(BridgeOpts { internal: spec.internal, icc: spec.icc }),
    };
    let relay_socks = relays.1;
    let (tx, rx) = mpsc::channel(64);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let name = spec.name.clone();
    tokio::task::spawn_local(async move {
        let mut dp = Dataplane::new_bridge(cfg);
        if let Err(e) = dp.relay_senders(&relay_socks).and_then(|()| dp.relay(relay_socks)) {
            tracing::warn!(network = %name, error = %e, "multicast relays not started");
        }
        let stop = async {
            let _ = stop_rx.await;
        };
        let _ = dp.run_bridge(rx, stop).await;
        tracing::info!(network = %name, "network stopped");
    });
    Network { spec, dp: tx, _stop: stop_tx }
}

impl State {
    fn save(&self) -> Result<(), String> {
        std::fs::create_dir_all(&self.data).map_err(|e| format!("create {}: {e}", self.data.display()))?;
        let specs: Vec<&NetworkSpec> = self.networks.values().map(|n| &n.spec).collect();
        let text = serde_json::to_string_pretty(&specs).map_err(|e| e.to_string())?;
        let path = self.data.join("networks.json");
        let tmp = self.data.join("networks.json.tmp");
        std::fs::write(&tmp, text).map_err(|e| format!("write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("rename to {}: {e}", path.display()))
    }

    fn taken(&self, network: &str) -> Vec<(Ipv4Addr, String)> {
        self.containers
            .values()
            .flat_map(|c| c.ifaces.iter().filter(|i| i.network == network).map(|i| (i.ip4, c.name.clone())))
            .collect()
    }

    fn users(&self, network: &str) -> Vec<String> {
        self.containers
            .values()
            .filter(|c| c.ifaces.iter().any(|i| i.network == network))
            .map(|c| c.name.clone())
            .collect()
    }

    /// Allocates an interface for `container` on `network`.
    fn new_iface(&mut self, network: &str, container: &str, ifname: String, ip: Option<&str>) -> Result<Iface, String> {
        let Some(n) = self.networks.get(network) else {
            return Err(format!("no such network: {network:?} (see `warren network ls`)"));
        };
        let spec = n.spec.clone();
        let ip4 =
            ipam::allocate(network, spec.subnet, spec.gateway, &self.taken(network), ip).map_err(|e| e.to_string())?;
        let ip6 = spec.subnet6.map(|s6| ipam::v6_for(s6, spec.subnet, ip4));
        self.next_port += 1;
        tracing::debug!(%network, %container, %ip4, "address allocated");
        Ok(Iface {
            network: network.to_string(),
            ifname,
            mac: ipam::mac_for(ip4),
            ip4,
            subnet: spec.subnet,
            gateway: spec.gateway,
            ip6,
            subnet6: spec.subnet6,
            gateway6: spec.gateway6,
            mtu: spec.mtu,
            port: self.next_port,
        })
    }
}

fn ok(v: Value) -> Value {
    json!({ "ok": v })
}

fn err(e: impl std::fmt::Display) -> Value {
    json!({ "error": e.to_string() })
}

/// Runs the daemon until SIGTERM/SIGINT. With `detach`, forks into the background first
/// (the parent returns at once) and starts a new session. With `seccomp`, the daemon's
/// allowlist is loaded once its socket, state and pid file exist (a kernel without seccomp
/// gets a warning): it then only does socket I/O, reads resolv.conf, writes captures and
/// saves its networks; namespaces and TAPs are made by the `warren run` processes.
///
/// # Errors
/// When the socket cannot be bound or the state cannot be read.
pub fn run(detach: bool, seccomp: bool) -> Result<(), DaemonError> {
    let dir = runtime_dir();
    let io_err = |what: String| move |e: io::Error| DaemonError::Io(what, e);
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io_err(format!("create {}", dir.display())))?;
    }
    let sock = socket_path();
    if crate::sys::seqpacket_connect(&sock).is_ok() {
        tracing::info!(path = %sock.display(), "a daemon already serves this user");
        return Ok(());
    }
    let _ = std::fs::remove_file(&sock);
    let data = data_dir();
    let state_file = data.join("networks.json");
    let specs: Vec<NetworkSpec> = match std::fs::read_to_string(&state_file) {
        Ok(t) => serde_json::from_str(&t).map_err(|e| DaemonError::State(state_file.clone(), e.to_string()))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(DaemonError::Io(format!("read {}", state_file.display()), e)),
    };
    let listener = crate::sys::seqpacket_listen(&sock)
        .map_err(|e| DaemonError::Io(format!("listen on {}", sock.display()), io::Error::from(e)))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err(format!("chmod 0600 {}", sock.display())))?;
    }
    if detach {
        match crate::sys::fork().map_err(|e| DaemonError::Io("fork".into(), io::Error::from(e)))? {
            0 => {
                let _ = nix::unistd::setsid();
            }
            _ => return Ok(()),
        }
    }
    let pidfile = dir.join("daemon.pid");
    let _ = std::fs::write(&pidfile, format!("{}\n", std::process::id()));
    if seccomp {
        match crate::harden::apply_seccomp_allowlist(&crate::harden::daemon_extra()) {
            Ok(()) => tracing::debug!("seccomp allowlist loaded"),
            Err(e) => tracing::warn!(error = %e, "daemon running without the seccomp allowlist"),
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io_err("start the tokio runtime".into()))?;
    let local = tokio::task::LocalSet::new();
    let r = local.block_on(&rt, async move {
        let mut networks = BTreeMap::new();
        for s in specs {
            tracing::info!(network = %s.name, subnet = %s.subnet, "network loaded");
            // A relay the host refuses now (its interface gone) leaves the network without
            // its relays, not without its containers.
            let relays = network_relays(&s).unwrap_or_else(|e| {
                tracing::warn!(network = %s.name, error = %e, "network starts without its multicast relays");
                (Vec::new(), Vec::new())
            });
            networks.insert(s.name.clone(), start_network(s, relays));
        }
        // Listening, networks started: a Type=notify service is up.
        if let Err(e) = crate::sys::notify_ready() {
            tracing::warn!(error = %e, "cannot notify $NOTIFY_SOCKET");
        }
        let state = Rc::new(RefCell::new(State { data, networks, containers: BTreeMap::new(), next_port: 0 }));
        serve(state, listener).await
    });
    let _ = std::fs::remove_file(&sock);
    let _ = std::fs::remove_file(&pidfile);
    r.map_err(io_err("serve".into()))
}

async fn serve(state: Shared, listener: OwnedFd) -> io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let listener = crate::sys::async_fd(listener)?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tracing::info!("daemon serving");
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            r = listener.readable() => {
                let mut g = r?;
                match g.try_io(|l| crate::sys::seqpacket_accept(l.get_ref().as_fd())) {
                    Ok(Ok(conn)) => {
                        // The socket is 0600 in a 0700 directory; root aside, only its user.
                        let uid = crate::sys::peer_uid(conn.as_fd()).unwrap_or(u32::MAX);
                        if uid != nix::unistd::getuid().as_raw() && uid != 0 {
                            tracing::warn!(uid, "daemon request from another user refused");
                            continue;
                        }
                        let st = state.clone();
                        tokio::task::spawn_local(async move {
                            if let Ok(conn) = crate::sys::async_fd(conn) {
                                connection(st, conn).await;
                            }
                        });
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "accept failed"),
                    Err(_would_block) => {}
                }
            }
        }
    }
}

/// Receives one message; `None` at end of stream.
pub(crate) async fn recv(fd: &AsyncFd<OwnedFd>) -> io::Result<Option<(Value, Vec<OwnedFd>)>> {
    let mut buf = vec![0u8; MSG_MAX];
    loop {
        let mut g = fd.readable().await?;
        match g.try_io(|f| crate::sys::recv_fds(f.get_ref().as_fd(), &mut buf).map_err(io::Error::from)) {
            Ok(Ok((0, _))) => return Ok(None),
            Ok(Ok((n, fds))) => {
                let v = serde_json::from_slice(&buf[..n]).map_err(|e| io::Error::other(format!("bad message: {e}")))?;
                return Ok(Some((v, fds)));
            }
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => {}
        }
    }
}

/// Sends one message (and fds).
pub(crate) async fn send(fd: &AsyncFd<OwnedFd>, v: &Value, fds: &[std::os::fd::BorrowedFd<'_>]) -> io::Result<()> {
    let bytes = v.to_string();
    loop {
        let mut g = fd.writable().await?;
        match g.try_io(|f| crate::sys::send_fds(f.get_ref().as_fd(), bytes.as_bytes(), fds).map_err(io::Error::from)) {
            Ok(r) => return r,
            Err(_would_block) => {}
        }
    }
}

async fn ask<T>(dp: &mpsc::Sender<Command>, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
    let (tx, rx) = oneshot::channel();
    dp.send(make(tx)).await.ok()?;
    rx.await.ok()
}

async fn connection(state: Shared, conn: AsyncFd<OwnedFd>) {
    let Ok(Some((v, _fds))) = recv(&conn).await else { return };
    let req: Request = match serde_json::from_value(v) {
        Ok(r) => r,
        Err(e) => {
            let _ = send(&conn, &err(format!("bad request: {e}")), &[]).await;
            return;
        }
    };
    if let Request::Join { network, name, aliases, ip, publish } = req {
        return join(state, conn, network, name, aliases, ip, publish).await;
    }
    let reply = handle(&state, req).await;
    let _ = send(&conn, &reply, &[]).await;
}

async fn handle(state: &Shared, req: Request) -> Value {
    match req {
        Request::NetworkCreate(a) => match create(state, a) {
            Ok(v) => ok(v),
            Err(e) => err(e),
        },
        Request::NetworkLs => {
            let st = state.borrow();
            let v: Vec<Value> = st
                .networks
                .values()
                .map(|n| {
                    json!({"name": n.spec.name, "id": &n.spec.id[..12], "subnet": n.spec.subnet.to_string(),
                           "subnet6": n.spec.subnet6.map_or_else(|| "-".to_string(), |s| s.to_string()), "internal": n.spec.internal,
                           "icc": n.spec.icc, "containers": st.users(&n.spec.name).len()})
                })
                .collect();
            ok(Value::Array(v))
        }
        Request::NetworkInspect { names } => inspect(state, &names).await,
        Request::NetworkRm { names } => {
            let mut st = state.borrow_mut();
            for n in &names {
                if !st.networks.contains_key(n) {
                    return err(format!("no such network: {n:?}"));
                }
                let users = st.users(n);
                if !users.is_empty() {
                    return err(format!(
                        "network {n:?} is in use by {}: stop or disconnect them first",
                        users.join(", ")
                    ));
                }
            }
            for n in &names {
                st.networks.remove(n);
            }
            match st.save() {
                Ok(()) => ok(json!(names)),
                Err(e) => err(e),
            }
        }
        Request::NetworkConnect { network, container, aliases, ip } => {
            match connect(state, &network, &container, aliases, ip.as_deref()).await {
                Ok(v) => ok(v),
                Err(e) => err(e),
            }
        }
        Request::NetworkDisconnect { network, container } => match disconnect(state, &network, &container).await {
            Ok(()) => ok(json!({})),
            Err(e) => err(e),
        },
        Request::Ps => {
            let st = state.borrow();
            let v: Vec<Value> = st
                .containers
                .values()
                .filter(|c| c.pid != 0)
                .map(|c| {
                    json!({"name": c.name, "pid": c.pid,
                       "networks": c.ifaces.iter().map(|i| i.network.clone()).collect::<Vec<_>>(),
                       "addresses": c.ifaces.iter().map(|i| format!("{}={}", i.ifname, i.ip4)).collect::<Vec<_>>(),
                       "ports": c.ports.iter().map(|(_, p)| format!("{}->{}/{}", p.host, p.container, p.proto)).collect::<Vec<_>>()})
                })
                .collect();
            ok(Value::Array(v))
        }
        Request::Ports { container } => match state.borrow().containers.get(&container) {
            Some(c) if c.pid != 0 => ok(json!(c.ports.iter().map(|(_, p)| p).collect::<Vec<_>>())),
            _ => err(format!("no such container: {container:?} (see `warren ps`)")),
        },
        Request::Publish { container, publish } => match publish_more(state, &container, &publish).await {
            Ok(infos) => ok(json!(infos)),
            Err(e) => err(e),
        },
        Request::Unpublish { container, ids } => match unpublish(state, &container, ids).await {
            Ok(()) => ok(json!({})),
            Err(e) => err(e),
        },
        Request::Pid { container } => match state.borrow().containers.get(&container) {
            Some(c) if c.pid != 0 => ok(json!({ "pid": c.pid })),
            _ => err(format!("no such container: {container:?} (see `warren ps`)")),
        },
        Request::Capture { mut network, container, mut cmd } => {
            if let Some(name) = container {
                let iface = {
                    let st = state.borrow();
                    let Some(c) = st.containers.get(&name) else {
                        return err(format!("no such container: {name:?} (see `warren ps`)"));
                    };
                    match capture_iface(c, &network) {
                        Ok(i) => i.clone(),
                        Err(e) => return err(e),
                    }
                };
                if let crate::runtime::CaptureCmd::Start { mac, .. } = &mut cmd {
                    *mac = Some(iface.mac);
                }
                network = iface.network;
            }
            let Some(dp) = state.borrow().networks.get(&network).map(|n| n.dp.clone()) else {
                return err(format!("no such network: {network:?}"));
            };
            match ask(&dp, |r| Command::Capture(cmd, r)).await {
                Some(Ok(frames)) => ok(json!({ "frames": frames })),
                Some(Err(e)) => err(e),
                None => err("network stopped"),
            }
        }
        Request::Stats { target } => stats(state, &target).await,
        Request::Join { .. } | Request::Attach { .. } => err("bad request: join and attach belong to a run session"),
    }
}

fn create(state: &Shared, a: CreateArgs) -> Result<Value, String> {
    let mut st = state.borrow_mut();
    if !valid_name(&a.name) {
        return Err(format!(
            "invalid network name {:?}: expected letters, digits, '_', '.', '-' (starting with a letter or digit)",
            a.name
        ));
    }
    if st.networks.contains_key(&a.name) {
        return Err(format!("network {:?} already exists", a.name));
    }
    let used: Vec<Ipv4Net> = st.networks.values().map(|n| n.spec.subnet).collect();
    let subnet = match &a.subnet {
        Some(s) => {
            let net = ipam::parse_subnet(s).map_err(|e| e.to_string())?;
            if let Some(o) = st.networks.values().find(|n| ipam::overlaps(n.spec.subnet, net)) {
                return Err(ipam::IpamError::Overlap {
                    subnet: net.to_string(),
                    other: o.spec.name.clone(),
                    other_subnet: o.spec.subnet.to_string(),
                }
                .to_string());
            }
            net
        }
        None => ipam::default_subnet(&used).map_err(|e| e.to_string())?,
    };
    let gateway = ipam::gateway(subnet, a.gateway.as_deref()).map_err(|e| e.to_string())?;
    let mtu = crate::config::parse_mtu(a.mtu.unwrap_or(1500)).map_err(|e| e.to_string())?;
    let (subnet6, gateway6) = if a.ipv6 || a.subnet6.is_some() {
        let used6: Vec<Ipv6Net> = st.networks.values().filter_map(|n| n.spec.subnet6).collect();
        let s6 = match &a.subnet6 {
            Some(t) => crate::config::parse_cidr6(t).map_err(|e| e.to_string())?,
            None => ipam::default_subnet6(&used6),
        };
        if let Some(o) = st.networks.values().find(|n| n.spec.subnet6 == Some(s6)) {
            return Err(format!("IPv6 subnet {s6} is already used by network {:?}", o.spec.name));
        }
        (Some(s6), Some(ipam::v6_for(s6, subnet, gateway)))
    } else {
        (None, None)
    };
    let dns_upstream = a
        .dns_upstream
        .iter()
        .map(|u| crate::config::parse_upstream(u).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    if a.internal && (a.outbound_addr.is_some() || a.outbound_addr6.is_some()) {
        return Err("--outbound-addr has no effect on an --internal network (nothing leaves it)".into());
    }
    if a.internal && !a.multicast.is_empty() {
        return Err("--multicast has no effect on an --internal network (nothing leaves it)".into());
    }
    if a.internal && !a.dns_route.is_empty() {
        return Err("--dns-route has no effect on an --internal network (it answers only its containers' names)".into());
    }
    for r in &a.dns_route {
        crate::config::parse_dns_route(r).map_err(|e| e.to_string())?;
    }
    let outbound4 = a
        .outbound_addr
        .as_deref()
        .map(|o| crate::config::host_outbound_v4(o, "--outbound-addr"))
        .transpose()
        .map_err(|e| e.to_string())?;
    let outbound6 = a
        .outbound_addr6
        .as_deref()
        .map(|o| crate::config::host_outbound_v6(o, "--outbound-addr6"))
        .transpose()
        .map_err(|e| e.to_string())?;
    let spec = NetworkSpec {
        name: a.name.clone(),
        id: random_hex(32),
        created: now_secs(),
        subnet,
        gateway,
        subnet6,
        gateway6,
        internal: a.internal,
        icc: a.icc,
        mtu,
        dns_upstream,
        outbound4,
        outbound6,
        outbound_iface4: a.outbound_addr.as_deref().and_then(crate::config::outbound_iface),
        outbound_iface6: a.outbound_addr6.as_deref().and_then(crate::config::outbound_iface),
        multicast: a.multicast.clone(),
        dns_route: a.dns_route.clone(),
    };
    // Bound now: a group the host refuses is refused before anything is created.
    let relays = network_relays(&spec).map_err(|e| e.to_string())?;
    if let Some(r) = relays.0.iter().find(|r| r.group.is_ipv6() && spec.subnet6.is_none()) {
        return Err(format!("--multicast {r}: an IPv6 group, but the network has no IPv6: create it with --ipv6"));
    }
    let capture = a
        .pcap
        .as_deref()
        .map(|p| {
            crate::pcap::PcapWriter::create(p, None)
                .map_err(|e| format!("cannot create capture file {}: {e}", p.display()))
        })
        .transpose()?;
    tracing::info!(network = %spec.name, %subnet, "network created");
    let id = spec.id.clone();
    let net = start_network(spec, relays);
    if let Some(w) = capture {
        let _ = net.dp.try_send(Command::SetCapture(Some(std::sync::Arc::new(std::sync::Mutex::new(w)))));
    }
    st.networks.insert(a.name.clone(), net);
    if let Err(e) = st.save() {
        st.networks.remove(&a.name);
        return Err(e);
    }
    Ok(json!({ "name": a.name, "id": id, "subnet": subnet.to_string(), "gateway": gateway.to_string() }))
}

/// `warren stats NAME`: a network's gateway counters and its interfaces', or one container's
/// interfaces on every network it is on.
async fn stats(state: &Shared, target: &str) -> Value {
    type Nets = Vec<(String, mpsc::Sender<Command>)>;
    let (nets, port_filter): (Nets, Option<Vec<u64>>) = {
        let st = state.borrow();
        if let Some(n) = st.networks.get(target) {
            (vec![(target.to_string(), n.dp.clone())], None)
        } else if let Some(c) = st.containers.get(target) {
            let nets = c
                .ifaces
                .iter()
                .filter_map(|i| st.networks.get(&i.network).map(|n| (i.network.clone(), n.dp.clone())))
                .collect();
            (nets, Some(c.ifaces.iter().map(|i| i.port).collect()))
        } else {
            return err(format!("no such network or container: {target:?}"));
        }
    };
    let mut out = serde_json::Map::new();
    for (name, dp) in nets {
        let ports: Vec<PortStat> = ask(&dp, Command::PortStats).await.unwrap_or_default();
        let ports: Vec<PortStat> =
            ports.into_iter().filter(|p| port_filter.as_ref().is_none_or(|f| f.contains(&p.id))).collect();
        let mut v = json!({ "interfaces": ports });
        if port_filter.is_none()
            && let Some((s, flows)) = ask(&dp, Command::Stats).await
        {
            v["gateway"] = json!(s);
            v["open_flows"] = json!(flows.len());
        }
        out.insert(name, v);
    }
    ok(Value::Object(out))
}

async fn inspect(state: &Shared, names: &[String]) -> Value {
    let mut out = Vec::new();
    for n in names {
        let (spec, dp, members) = {
            let st = state.borrow();
            let Some(net) = st.networks.get(n) else {
                return err(format!("no such network: {n:?}"));
            };
            let members: Vec<(String, Iface)> = st
                .containers
                .values()
                .flat_map(|c| c.ifaces.iter().filter(|i| &i.network == n).map(|i| (c.name.clone(), i.clone())))
                .collect();
            (net.spec.clone(), net.dp.clone(), members)
        };
        let stats: Vec<PortStat> = ask(&dp, Command::PortStats).await.unwrap_or_default();
        let mut containers = serde_json::Map::new();
        for (name, i) in &members {
            let prefix = spec.subnet.prefix_len();
            let mut c = json!({
                "Name": name,
                "MacAddress": mac_text(i.mac),
                "IPv4Address": format!("{}/{prefix}", i.ip4),
                "IPv6Address": i.ip6.map(|a| format!("{a}/64")).unwrap_or_default(),
            });
            if let Some(s) = stats.iter().find(|s| s.id == i.port) {
                c["Counters"] = json!({"frames_in": s.frames_in, "bytes_in": s.bytes_in, "spoofed": s.spoofed, "icc_dropped": s.icc_dropped});
            }
            containers.insert(format!("{:012x}", i.port), c);
        }
        let mut config = vec![json!({"Subnet": spec.subnet.to_string(), "Gateway": spec.gateway.to_string()})];
        if let (Some(s6), Some(g6)) = (spec.subnet6, spec.gateway6) {
            config.push(json!({"Subnet": s6.to_string(), "Gateway": g6.to_string()}));
        }
        out.push(json!({
            "Name": spec.name,
            "Id": spec.id,
            "Created": spec.created,
            "Scope": "local",
            "Driver": "bridge",
            "EnableIPv6": spec.subnet6.is_some(),
            "IPAM": {"Driver": "default", "Config": config},
            "Internal": spec.internal,
            "Options": options(&spec),
            "Containers": containers,
        }));
    }
    ok(Value::Array(out))
}

/// `network inspect`'s Options: Docker's keys for what the network sets.
fn options(spec: &NetworkSpec) -> Value {
    let mut o = serde_json::Map::new();
    o.insert("com.docker.network.bridge.enable_icc".into(), spec.icc.to_string().into());
    o.insert("com.docker.network.driver.mtu".into(), spec.mtu.to_string().into());
    if let Some(ip) = spec.outbound4 {
        o.insert("com.docker.network.host_ipv4".into(), ip.to_string().into());
    }
    if let Some(ip) = spec.outbound6 {
        o.insert("com.docker.network.host_ipv6".into(), ip.to_string().into());
    }
    if !spec.multicast.is_empty() {
        o.insert("warren.multicast".into(), spec.multicast.join(",").into());
    }
    if !spec.dns_route.is_empty() {
        o.insert("warren.dns_route".into(), spec.dns_route.join(",").into());
    }
    Value::Object(o)
}

/// Unplugs and forgets every interface of a container (its session ended).
async fn release(state: &Shared, name: &str) {
    let Some(c) = state.borrow_mut().containers.remove(name) else { return };
    for i in c.ifaces {
        let dp = state.borrow().networks.get(&i.network).map(|n| n.dp.clone());
        if let Some(dp) = dp {
            let _ = dp.send(Command::RemovePort(i.port)).await;
        }
    }
    tracing::info!(container = %name, "container left");
}

#[allow(clippy::too_many_arguments)]
async fn join(
    state: Shared,
    conn: AsyncFd<OwnedFd>,
    network: String,
    name: Option<String>,
    aliases: Vec<String>,
    ip: Option<String>,
    publish: Vec<String>,
) {
    // Validate and reserve (name, address) before anything starts.
    let name = name.unwrap_or_else(|| format!("c{}", &random_hex(4)));
    let prepared = (|| -> Result<(Iface, Vec<ports::Bound>), String> {
        if !valid_name(&name) {
            return Err(format!("invalid container name {name:?}: expected letters, digits, '_', '.', '-'"));
        }
        for a in &aliases {
            if !valid_name(a) {
                return Err(format!("invalid alias {a:?}: expected letters, digits, '_', '.', '-'"));
            }
        }
        let mut st = state.borrow_mut();
        if st.containers.contains_key(&name) {
            return Err(format!("a container named {name:?} is already running"));
        }
        let mut fwds = Vec::new();
        for s in &publish {
            fwds.extend(crate::forward::parse_spec(s).map_err(|e| e.to_string())?);
        }
        let iface = st.new_iface(&network, &name, "eth0".into(), ip.as_deref())?;
        let bound = ports::bind_all(&fwds).map_err(|e| e.to_string())?;
        let mut al = BTreeMap::new();
        al.insert(network.clone(), aliases.clone());
        st.containers.insert(
            name.clone(),
            Container {
                name: name.clone(),
                pid: 0,
                aliases: al,
                ifaces: vec![iface.clone()],
                ports: Vec::new(),
                session: None,
            },
        );
        Ok((iface, bound))
    })();
    let (iface, bound) = match prepared {
        Ok(x) => x,
        Err(e) => {
            let _ = send(&conn, &err(e), &[]).await;
            return;
        }
    };
    let internal = state.borrow().networks.get(&network).is_some_and(|n| n.spec.internal);
    let reply = ok(json!({ "name": name, "iface": iface, "internal": internal }));
    if send(&conn, &reply, &[]).await.is_err() {
        return release(&state, &name).await;
    }
    // The container's TAP.
    let attached = async {
        let Some((v, mut fds)) = recv(&conn).await.ok().flatten() else { return Err("session closed".to_string()) };
        let pid = match serde_json::from_value::<Request>(v) {
            Ok(Request::Attach { pid }) => pid,
            _ => return Err("expected attach".to_string()),
        };
        if fds.len() != 1 {
            return Err("attach needs the TAP fd".to_string());
        }
        let tap = fds.pop().expect("one fd");
        let dp = state.borrow().networks.get(&network).map(|n| n.dp.clone()).ok_or("network removed")?;
        plug(&dp, &iface, tap, &name, &aliases).await?;
        let infos = ask(&dp, |r| Command::PublishFor(iface.port, bound, r))
            .await
            .ok_or("network stopped")?
            .map_err(|e| format!("publish: {e}"))?;
        if let Some(c) = state.borrow_mut().containers.get_mut(&name) {
            c.pid = pid;
            c.ports = infos.iter().map(|p| (network.clone(), p.clone())).collect();
        }
        Ok(infos)
    }
    .await;
    match attached {
        Ok(infos) => {
            if send(&conn, &ok(json!({ "ports": infos })), &[]).await.is_err() {
                return release(&state, &name).await;
            }
        }
        Err(e) => {
            let _ = send(&conn, &err(e), &[]).await;
            return release(&state, &name).await;
        }
    }
    tracing::info!(container = %name, network = %network, ip = %iface.ip4, "container joined");
    // The session: requests for the container's process until it hangs up.
    let (tx, mut rx) = mpsc::unbounded_channel();
    if let Some(c) = state.borrow_mut().containers.get_mut(&name) {
        c.session = Some(tx);
    }
    loop {
        tokio::select! {
            r = conn.readable() => {
                // Only a hang-up is expected here (replies are read below).
                let Ok(mut g) = r else { break };
                let mut b = [0u8; 1];
                let peek = nix::sys::socket::recv(g.get_ref().as_raw_fd(), &mut b, nix::sys::socket::MsgFlags::MSG_PEEK | nix::sys::socket::MsgFlags::MSG_DONTWAIT);
                match peek {
                    Ok(0) | Err(nix::errno::Errno::ECONNRESET) => break,
                    Err(nix::errno::Errno::EAGAIN) => g.clear_ready(),
                    Ok(_) => {
                        // An unexpected message: discard it.
                        let _ = recv(&conn).await;
                    }
                    Err(_) => break,
                }
            }
            req = rx.recv() => {
                let Some((msg, reply)) = req else { break };
                if send(&conn, &msg, &[]).await.is_err() {
                    let _ = reply.send(Err("the container's warren process is gone".into()));
                    break;
                }
                match recv(&conn).await {
                    Ok(Some((v, fds))) => {
                        let r = match v.get("error").and_then(Value::as_str) {
                            Some(e) => Err(e.to_string()),
                            None => Ok(fds),
                        };
                        let _ = reply.send(r);
                    }
                    _ => {
                        let _ = reply.send(Err("the container's warren process is gone".into()));
                        break;
                    }
                }
            }
        }
    }
    release(&state, &name).await;
}

/// [`Request::Publish`]: binds the specs' host sockets and publishes them to the container's
/// `eth0`; nothing is kept when one fails.
async fn publish_more(state: &Shared, container: &str, publish: &[String]) -> Result<Vec<PortInfo>, String> {
    let (network, port, dp) = {
        let st = state.borrow();
        let c = st
            .containers
            .get(container)
            .filter(|c| c.pid != 0)
            .ok_or_else(|| format!("no such container: {container:?} (see `warren ps`)"))?;
        let iface = c
            .ifaces
            .iter()
            .find(|i| i.ifname == "eth0")
            .ok_or_else(|| format!("container {container:?} has no eth0 to publish to"))?;
        let dp = st.networks.get(&iface.network).map(|n| n.dp.clone()).ok_or("network removed")?;
        (iface.network.clone(), iface.port, dp)
    };
    let mut fwds = Vec::new();
    for s in publish {
        fwds.extend(crate::forward::parse_spec(s).map_err(|e| e.to_string())?);
    }
    let bound = ports::bind_all(&fwds).map_err(|e| e.to_string())?;
    let infos = ask(&dp, |r| Command::PublishFor(port, bound, r)).await.ok_or("network stopped")??;
    match state.borrow_mut().containers.get_mut(container) {
        Some(c) => c.ports.extend(infos.iter().map(|p| (network.clone(), p.clone()))),
        // The container left meanwhile: its interface, and with it these ports, are gone.
        None => return Err(format!("no such container: {container:?} (see `warren ps`)")),
    }
    Ok(infos)
}

/// [`Request::Unpublish`]: only ports of that container, all or none.
async fn unpublish(state: &Shared, container: &str, ids: Vec<u64>) -> Result<(), String> {
    let Some(&first) = ids.first() else { return Ok(()) };
    let dp = {
        let st = state.borrow();
        let c = st
            .containers
            .get(container)
            .filter(|c| c.pid != 0)
            .ok_or_else(|| format!("no such container: {container:?} (see `warren ps`)"))?;
        if let Some(id) = ids.iter().find(|id| !c.ports.iter().any(|(_, p)| p.id == **id)) {
            return Err(format!("container {container:?} has no published port {id}"));
        }
        // A container's ports are all on the network of its eth0.
        let network = c.ports.iter().find(|(_, p)| p.id == first).map(|(n, _)| n.clone());
        network.and_then(|n| st.networks.get(&n)).map(|n| n.dp.clone()).ok_or("network removed")?
    };
    ask(&dp, |r| Command::Remove(ids.clone(), r)).await.ok_or("network stopped")??;
    if let Some(c) = state.borrow_mut().containers.get_mut(container) {
        c.ports.retain(|(_, p)| !ids.contains(&p.id));
    }
    Ok(())
}

/// Plugs a container interface into its network's switch.
async fn plug(
    dp: &mpsc::Sender<Command>,
    iface: &Iface,
    tap: OwnedFd,
    name: &str,
    aliases: &[String],
) -> Result<(), String> {
    let spec = PortSpec {
        id: iface.port,
        fd: tap,
        mac: iface.mac,
        ip4: iface.ip4,
        ip6: iface.ip6,
        name: name.to_string(),
        aliases: aliases.to_vec(),
    };
    ask(dp, |r| Command::AddPort(spec, r)).await.ok_or("network stopped")?
}

async fn connect(
    state: &Shared,
    network: &str,
    container: &str,
    aliases: Vec<String>,
    ip: Option<&str>,
) -> Result<Value, String> {
    let (iface, session, dp) = {
        let mut st = state.borrow_mut();
        let Some(c) = st.containers.get(container) else {
            return Err(format!("no such container: {container:?} (see `warren ps`)"));
        };
        if c.pid == 0 {
            return Err(format!("container {container:?} is still starting"));
        }
        if c.ifaces.iter().any(|i| i.network == network) {
            return Err(format!("container {container:?} is already connected to network {network:?}"));
        }
        let used: Vec<String> = c.ifaces.iter().map(|i| i.ifname.clone()).collect();
        let ifname = (0..).map(|n| format!("eth{n}")).find(|n| !used.contains(n)).expect("a free name");
        let session = c.session.clone().ok_or("container has no session")?;
        let iface = st.new_iface(network, container, ifname, ip)?;
        let dp = st.networks.get(network).map(|n| n.dp.clone()).ok_or("network removed")?;
        let c = st.containers.get_mut(container).expect("checked above");
        c.ifaces.push(iface.clone());
        c.aliases.insert(network.to_string(), aliases.clone());
        (iface, session, dp)
    };
    let undo = |state: &Shared| {
        if let Some(c) = state.borrow_mut().containers.get_mut(container) {
            c.ifaces.retain(|i| i.port != iface.port);
        }
    };
    let (tx, rx) = oneshot::channel();
    let msg = json!({ "op": "add_interface", "iface": iface });
    if session.send((msg, tx)).is_err() {
        undo(state);
        return Err("the container's warren process is gone".into());
    }
    let mut fds = match rx.await {
        Ok(Ok(fds)) if !fds.is_empty() => fds,
        Ok(Err(e)) => {
            undo(state);
            return Err(format!("create {} in {container:?}: {e}", iface.ifname));
        }
        _ => {
            undo(state);
            return Err("the container's warren process did not answer".into());
        }
    };
    let tap = fds.remove(0);
    if let Err(e) = plug(&dp, &iface, tap, container, &aliases).await {
        undo(state);
        return Err(e);
    }
    tracing::info!(%container, %network, ifname = %iface.ifname, ip = %iface.ip4, "container connected");
    Ok(json!({ "ifname": iface.ifname, "ip": iface.ip4.to_string() }))
}

async fn disconnect(state: &Shared, network: &str, container: &str) -> Result<(), String> {
    let (port, dp) = {
        let mut st = state.borrow_mut();
        if !st.networks.contains_key(network) {
            return Err(format!("no such network: {network:?}"));
        }
        let dp = st.networks.get(network).map(|n| n.dp.clone()).ok_or("network removed")?;
        let Some(c) = st.containers.get_mut(container) else {
            return Err(format!("no such container: {container:?} (see `warren ps`)"));
        };
        let Some(pos) = c.ifaces.iter().position(|i| i.network == network) else {
            return Err(format!("container {container:?} is not connected to network {network:?}"));
        };
        let i = c.ifaces.remove(pos);
        c.aliases.remove(network);
        c.ports.retain(|(n, _)| n != network);
        (i.port, dp)
    };
    // Closing the daemon's TAP fd removes the interface from the container.
    let _ = dp.send(Command::RemovePort(port)).await;
    tracing::info!(%container, %network, "container disconnected");
    Ok(())
}

/// The daemon's pid file (`daemon.pid` in the runtime directory).
pub fn pid_file() -> PathBuf {
    runtime_dir().join("daemon.pid")
}
