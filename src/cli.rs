//! Command-line definition (clap) and its translation into a validated [`NetConfig`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, ConfigError, DnsUpstreams, NetConfig};

/// Rootless container networking in user space.
#[derive(Debug, Parser)]
#[command(name = "warren", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Log line format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (ts, level, target, message, fields).
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command in new user, network, mount and PID namespaces with a userspace network.
    Run(RunArgs),
    /// Give an existing network namespace a userspace network (the slirp4netns model).
    Attach(AttachArgs),
    /// Publish, list and unpublish ports of a running `warren run`/`attach`.
    Port(PortArgs),
    /// Counters of a running instance: frames, bytes, flows, drops by reason.
    Stats(InspectArgs),
    /// Open NAT flows of a running instance.
    Flows(InspectArgs),
    /// Check what rootless networking needs on this host; prints each fix.
    Doctor {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Bridge networks: several containers on one segment (served by the network daemon).
    Network(NetworkArgs),
    /// Write a pcap file of a running instance's or network's frames (tshark/Wireshark read it).
    Capture(CaptureArgs),
    /// Containers running on bridge networks: names, PIDs, networks, addresses, ports.
    Ps {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (or write every page to --out-dir).
    Man {
        /// Write warren.1 and one page per subcommand here.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// The per-user network daemon behind bridge networks (started on demand).
    Daemon {
        /// Fork into the background (what on-demand start uses).
        #[arg(long)]
        detach: bool,
        /// Do not load the seccomp allowlist once the daemon serves (on by default).
        #[arg(long)]
        no_seccomp: bool,
    },
}

/// `warren capture`.
#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// The pcap file to write.
    #[arg(short = 'w', long = "write", value_name = "FILE", required_unless_present = "stop")]
    pub file: Option<PathBuf>,
    /// Stop the capture that runs (e.g. one from `network create --pcap`) and report it.
    #[arg(long, conflicts_with_all = ["file", "count", "seconds"])]
    pub stop: bool,
    /// Capture on this bridge network (every container and the gateway).
    #[arg(long, value_name = "NAME", conflicts_with = "api_socket")]
    pub network: Option<String>,
    /// Capture only what this container of a bridge network sends and receives (plus
    /// broadcasts), as tcpdump on its interface would; with --network when it is on several.
    #[arg(long, value_name = "NAME", conflicts_with = "api_socket")]
    pub container: Option<String>,
    /// API socket of a `warren run`/`attach` instance (default: the only one running).
    #[arg(long, value_name = "PATH")]
    pub api_socket: Option<PathBuf>,
    /// Stop after this many frames.
    #[arg(short = 'c', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Stop after this many seconds (default: at --count, or on ^C / SIGTERM).
    #[arg(long, value_name = "S", value_parser = clap::value_parser!(u64).range(1..))]
    pub seconds: Option<u64>,
}

/// `warren network`.
#[derive(Debug, Args)]
pub struct NetworkArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: NetworkCommand,
}

/// `warren network` subcommands.
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network.
    Create {
        /// Name.
        name: String,
        /// IPv4 subnet (default: the next free /24 of 10.89.0.0/16).
        #[arg(long, value_name = "CIDR")]
        subnet: Option<String>,
        /// Gateway address (default: the subnet's first address).
        #[arg(long, value_name = "IP")]
        gateway: Option<String>,
        /// No outside access (names and published ports still work).
        #[arg(long)]
        internal: bool,
        /// Inter-container communication (--icc=false drops traffic between containers).
        #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
        icc: bool,
        /// MTU of the containers' interfaces (1280..=65520).
        #[arg(long, value_name = "N")]
        mtu: Option<u32>,
        /// IPv6 too (a /64, default fd89:0:0:N::/64).
        #[arg(long)]
        ipv6: bool,
        /// IPv6 /64 (implies --ipv6).
        #[arg(long, value_name = "CIDR")]
        subnet6: Option<String>,
        /// DNS upstream for names that are not containers' (default: the host's resolv.conf),
        /// repeatable: asked in turn when one fails.
        #[arg(long = "dns-upstream", value_name = "IP[:PORT]")]
        dns_upstream: Vec<String>,
        /// Names in DOMAIN go to their own DNS server, as `warren run --dns-route`.
        #[arg(long = "dns-route", value_name = "DOMAIN=IP[:PORT]")]
        dns_route: Vec<String>,
        /// Record every frame of the network in this pcap file (until the daemon stops or
        /// `warren capture --network NAME --stop`).
        #[arg(long, value_name = "FILE")]
        pcap: Option<PathBuf>,
        /// Source of the containers' IPv4 connections and datagrams on the host: an address
        /// of this host, or an interface (its first IPv4 address, taken now); loopback
        /// destinations excepted (Docker's com.docker.network.host_ipv4).
        #[arg(long, value_name = "IP|IFACE")]
        outbound_addr: Option<String>,
        /// The same for IPv6 (an interface's first address that is not link-local).
        #[arg(long, value_name = "IP|IFACE")]
        outbound_addr6: Option<String>,
        /// Relay a multicast group between the network's containers and the host's network,
        /// repeatable: GROUP:PORT[@IFACE], as `warren run --multicast`.
        // The help text is clap's, not markdown: its brackets are not links.
        #[allow(rustdoc::broken_intra_doc_links)]
        #[arg(long = "multicast", value_name = "GROUP:PORT[@IFACE]")]
        multicast: Vec<String>,
    },
    /// List networks.
    Ls {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Docker-shaped JSON of networks, with their containers and per-interface counters.
    Inspect {
        /// Names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks (none may be in use).
    Rm {
        /// Names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Add an interface on NETWORK to a running container.
    Connect {
        /// Network.
        network: String,
        /// Container name.
        container: String,
        /// Extra DNS name on that network (repeatable).
        #[arg(long = "alias", value_name = "NAME")]
        aliases: Vec<String>,
        /// Address on that network.
        #[arg(long, value_name = "IP")]
        ip: Option<String>,
    },
    /// Remove a running container's interface on NETWORK.
    Disconnect {
        /// Network.
        network: String,
        /// Container name.
        container: String,
    },
}

/// Options of published ports and the API socket, shared by `run` and `attach`.
// The doc comments are clap's help text, whose brackets are not links.
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Publish a container port: [HOST_IP:][HOST_PORT[-END]:]CONTAINER_PORT[-END][/tcp|/udp]
    /// (without HOST_IP on 0.0.0.0 and [::]);
    /// or [HOST_IP:]auto[/udp]: every TCP port the container listens on (/udp: every UDP port
    /// it serves, bound and unconnected outside its ephemeral range), on the same host port,
    /// while it does (checked every second).
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    pub publish: Vec<String>,
    /// Path of the API socket (default: $XDG_RUNTIME_DIR/warren/PID.sock).
    #[arg(long, value_name = "PATH")]
    pub api_socket: Option<PathBuf>,
}

/// `warren port`.
#[derive(Debug, Args)]
pub struct PortArgs {
    /// API socket of the instance (default: the only one running).
    #[arg(long, value_name = "PATH", global = true)]
    pub api_socket: Option<PathBuf>,
    /// A container on a bridge network (by name, see `warren ps`) instead of an instance.
    #[arg(long, value_name = "NAME", global = true, conflicts_with = "api_socket")]
    pub container: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: PortCommand,
}

/// `warren stats` / `warren flows`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A bridge network or a container on one (`stats` only; default: a `warren run` instance).
    #[arg(value_name = "TARGET")]
    pub target: Option<String>,
    /// API socket of the instance (default: the only one running).
    #[arg(long, value_name = "PATH", conflicts_with = "target")]
    pub api_socket: Option<PathBuf>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// `warren port` subcommands.
#[derive(Debug, Subcommand)]
pub enum PortCommand {
    /// Publish ports (same SPEC as -p); prints the bound addresses.
    Add {
        /// Port specs.
        #[arg(required = true, value_name = "SPEC")]
        specs: Vec<String>,
    },
    /// List published ports.
    Ls {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Unpublish ports by id.
    Rm {
        /// Ids as printed by `add` and `ls`.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<u64>,
    },
}

/// Network options shared by `run` and `attach`.
#[derive(Debug, Args)]
pub struct NetArgs {
    /// MTU of the TAP device (1280..=65520).
    #[arg(long, value_name = "N", default_value_t = config::MTU_DEFAULT)]
    pub mtu: u32,
    /// IPv4 network of the container: gateway .2, DNS .3, container .100 (prefix 1..=25).
    #[arg(long, value_name = "CIDR", default_value = config::CIDR_DEFAULT)]
    pub cidr: String,
    /// IPv6 network of the container (a /64): gateway ::2, DNS ::3, container ::100.
    #[arg(long, value_name = "CIDR", default_value = config::CIDR6_DEFAULT)]
    pub cidr6: String,
    /// No IPv6 in the container (IPv4 only).
    #[arg(long)]
    pub no_ipv6: bool,
    /// Make a host-loopback TCP port reachable on the container's loopback (127.0.0.1 and
    /// ::1), repeatable: [CONTAINER_PORT[-END]:]HOST_PORT[-END], at most 16 ports (pasta's -T).
    #[arg(short = 'T', long = "to-host", value_name = "SPEC")]
    pub to_host: Vec<String>,
    /// Make a host-loopback UDP port reachable on the container's loopback, repeatable:
    /// datagrams to 127.0.0.1 (::1) go to the host's 127.0.0.1 (::1), replies come back;
    /// [CONTAINER_PORT[-END]:]HOST_PORT[-END], at most 16 ports (pasta's -U).
    #[arg(short = 'U', long = "to-host-udp", value_name = "SPEC")]
    pub to_host_udp: Vec<String>,
    /// Relay a multicast group between the container and the host's network, repeatable:
    /// GROUP:PORT[@IFACE] (mDNS 224.0.0.251:5353 or [ff02::fb]:5353@eth0, SSDP
    /// 239.255.255.250:1900); the group's datagrams on the host reach the container, the
    /// container's to the group leave from the host and their answers come back. Default
    /// interface: the host's route for the group (link-scoped IPv6 groups need one). At most 16.
    // The help text is clap's, not markdown: its brackets are not links.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long = "multicast", value_name = "GROUP:PORT[@IFACE]")]
    pub multicast: Vec<String>,
    /// Let connections to the gateway address reach the host's loopback (127.0.0.1, ::1); off: refused.
    #[arg(long)]
    pub allow_host_loopback: bool,
    /// Source of the container's IPv4 connections and datagrams on the host: an address of
    /// this host, or an interface (its first IPv4 address); loopback destinations excepted.
    #[arg(long, value_name = "IP|IFACE")]
    pub outbound_addr: Option<String>,
    /// The same for IPv6 (an interface's first address that is not link-local).
    #[arg(long, value_name = "IP|IFACE")]
    pub outbound_addr6: Option<String>,
    /// DNS upstream for the forwarder, repeatable (default: the host's /etc/resolv.conf
    /// nameservers); a link-local one names its interface (fe80::1%eth0). They are asked in
    /// order; one that is silent for a second, refuses, or answers SERVFAIL/REFUSED hands the
    /// query to the next, and is asked last for 30 s.
    #[arg(long = "dns-upstream", value_name = "IP[:PORT]")]
    pub dns_upstream: Vec<String>,
    /// Names in DOMAIN (and DOMAIN itself) go to their own DNS server, repeatable: split
    /// horizon, as for a VPN's domains (corp.example=10.8.0.1, 10.in-addr.arpa=10.8.0.1).
    /// The longest matching domain wins; its servers fail over like --dns-upstream (a TCP
    /// connection goes where its first query's name leads, without failover).
    #[arg(long = "dns-route", value_name = "DOMAIN=IP[:PORT]")]
    pub dns_route: Vec<String>,
    /// Name of the TAP device inside the namespace.
    #[arg(long, value_name = "NAME", default_value = "tap0")]
    pub tap_name: String,
    /// MAC address of the TAP device inside the namespace (default: random).
    #[arg(long, value_name = "MAC")]
    pub mac: Option<String>,
    /// Write every frame in and out to this pcap file (tshark/Wireshark read it).
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// Do not load warren's seccomp allowlist once set-up is done (on by default).
    #[arg(long)]
    pub no_seccomp: bool,
    /// Most open TCP flows; more are reset and counted.
    #[arg(long, value_name = "N", default_value_t = 65536, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tcp_flows: u32,
    /// Most outbound TCP connections still connecting to one address; more are reset and counted.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_handshakes: u32,
    /// Seconds a UDP flow may stay idle once answered (unanswered: at most 30).
    #[arg(long, value_name = "S", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub udp_timeout: u64,
    /// MiB all TCP flows' buffers may reserve together: flows get 1 MiB each way while less than
    /// half is reserved, 256 KiB up to three quarters, 32 KiB after; beyond it they are reset and counted.
    #[arg(long, value_name = "MIB", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1048576))]
    pub max_buffer_memory: u32,
    /// Most open UDP flows; more are dropped and counted.
    #[arg(long, value_name = "N", default_value_t = 16384, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_udp_flows: u32,
    /// TAP queues, each served by its own data-path thread; the container's kernel spreads its
    /// flows over them (default: one per CPU, at most 4).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=i64::from(config::QUEUES_MAX)))]
    pub queues: Option<u8>,
    /// Microseconds a data-path thread may keep polling for work before it sleeps, saving
    /// the wake-up of request/response traffic (roughly halves round trips on VMs whose idle
    /// CPUs halt); adaptive: opens only after closely spaced events, never after bulk
    /// transfer or while idle, and stands aside while other threads want the CPUs. 0: off.
    #[arg(long, value_name = "US", default_value_t = config::BUSY_POLL_DEFAULT_US,
          value_parser = clap::value_parser!(u16).range(0..=i64::from(config::BUSY_POLL_MAX_US)))]
    pub busy_poll: u16,
}

/// `warren run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub net: NetArgs,
    /// The ids of the options given on the command line (not defaulted), set by the binary
    /// from clap's matches: a default cannot be told from a value typed otherwise.
    #[arg(skip)]
    pub given: Vec<String>,
    /// Network: a bridge network's name (see `warren network`), or none, host, container:NAME.
    #[arg(long, value_name = "NETWORK")]
    pub network: Option<String>,
    /// Container name on bridge networks (DNS name; default: generated).
    #[arg(long, value_name = "NAME", requires = "network")]
    pub name: Option<String>,
    /// Extra DNS name on the bridge network (repeatable).
    #[arg(long = "alias", value_name = "NAME", requires = "network")]
    pub aliases: Vec<String>,
    /// Address on the bridge network (default: the next free one).
    #[arg(long, value_name = "IP", requires = "network")]
    pub ip: Option<String>,
    /// Add a line to the container's /etc/hosts (repeatable): NAME:IP, NAME=IP; IP may be
    /// host-gateway, the container's gateway (Docker's --add-host).
    #[arg(long = "add-host", value_name = "NAME:IP")]
    pub add_hosts: Vec<String>,
    #[command(flatten)]
    pub ports: PublishArgs,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `warren attach`.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Join the network and user namespaces of this process; exit when it exits.
    #[arg(long, value_name = "PID", required_unless_present = "netns", conflicts_with = "netns")]
    pub pid: Option<i32>,
    /// Join this network namespace file (e.g. /run/user/1000/netns/x); exit when it is gone.
    #[arg(long, value_name = "PATH")]
    pub netns: Option<PathBuf>,
    /// The user namespace that owns --netns.
    #[arg(long, value_name = "PATH", requires = "netns")]
    pub userns: Option<PathBuf>,
    /// Write "1" to this inherited fd, then close it, once the namespace's interface is
    /// configured and the published ports are bound (as slirp4netns --ready-fd). With
    /// $NOTIFY_SOCKET set (a systemd Type=notify service), READY=1 is sent there too.
    #[arg(long, value_name = "FD")]
    pub ready_fd: Option<i32>,
    #[command(flatten)]
    pub net: NetArgs,
    #[command(flatten)]
    pub ports: PublishArgs,
}

impl RunArgs {
    /// The `--add-host` entries, `host-gateway` resolved to `gateway` (none: the container
    /// has no network of its own, and `host-gateway` is refused).
    ///
    /// # Errors
    /// The first malformed entry.
    pub fn hosts(&self, gateway: Option<std::net::Ipv4Addr>) -> Result<Vec<(String, std::net::IpAddr)>, CliError> {
        let mut out = Vec::new();
        for spec in &self.add_hosts {
            let (name, addr) = config::parse_add_host(spec)?;
            let ip = match (addr, gateway) {
                (config::HostEntryAddr::Ip(ip), _) => ip,
                (config::HostEntryAddr::Gateway, Some(gw)) => gw.into(),
                (config::HostEntryAddr::Gateway, None) => {
                    return Err(ConfigError::AddHost {
                        spec: spec.clone(),
                        why: "host-gateway needs a network with a gateway (not --network none or host)".into(),
                    }
                    .into());
                }
            };
            out.push((name, ip));
        }
        Ok(out)
    }
}

impl NetArgs {
    /// Validates every option into a [`NetConfig`].
    ///
    /// # Errors
    /// The first invalid value, named in the error.
    pub fn to_config(&self) -> Result<NetConfig, CliError> {
        let mtu = config::parse_mtu(self.mtu)?;
        let net = config::parse_cidr(&self.cidr)?;
        let net6 = config::parse_cidr6(&self.cidr6)?;
        crate::sys::check_ifname(&self.tap_name).map_err(|_| CliError::TapName(self.tap_name.clone()))?;
        let mac = self.mac.as_deref().map(config::parse_mac).transpose()?;
        let multicast = crate::multicast::parse_all(&self.multicast)?;
        if self.no_ipv6
            && let Some(r) = multicast.iter().find(|r| r.group.is_ipv6())
        {
            return Err(crate::multicast::MulticastError::NoIpv6(r.to_string()).into());
        }
        let dns = if self.dns_upstream.is_empty() {
            DnsUpstreams::HostResolvConf
        } else {
            DnsUpstreams::Fixed(self.dns_upstream.iter().map(|u| config::parse_upstream(u)).collect::<Result<_, _>>()?)
        };
        Ok(NetConfig {
            addrs: config::Addresses::new(net),
            addrs6: (!self.no_ipv6).then(|| config::Addresses6::new(net6)),
            static_ipv6: true,
            mtu,
            tap_name: self.tap_name.clone(),
            mac,
            allow_host_loopback: self.allow_host_loopback,
            dns,
            dns_routes: self.dns_route.iter().map(|r| config::parse_dns_route(r)).collect::<Result<_, _>>()?,
            outbound_v4: self
                .outbound_addr
                .as_deref()
                .map(|a| config::host_outbound_v4(a, "--outbound-addr"))
                .transpose()?,
            outbound_v6: self
                .outbound_addr6
                .as_deref()
                .map(|a| config::host_outbound_v6(a, "--outbound-addr6"))
                .transpose()?,
            outbound_ifaces: (
                self.outbound_addr.as_deref().and_then(config::outbound_iface),
                self.outbound_addr6.as_deref().and_then(config::outbound_iface),
            ),
            default_route: true,
            bridge: None,
            queues: self.queues.map_or_else(config::default_queues, usize::from),
            busy_poll: std::time::Duration::from_micros(self.busy_poll.into()),
            to_host: crate::forward::parse_to_host(&self.to_host, "--to-host")?,
            to_host_udp: crate::forward::parse_to_host(&self.to_host_udp, "--to-host-udp")?,
            multicast,
            auto_tables: config::AutoTables::default(),
            limits: config::Limits {
                tcp_flows: self.max_tcp_flows as usize,
                handshakes: self.max_handshakes as usize,
                udp_timeout: std::time::Duration::from_secs(self.udp_timeout),
                udp_flows: self.max_udp_flows as usize,
                buffer_memory: (self.max_buffer_memory as usize) << 20,
                ..config::Limits::default()
            },
        })
    }
}

impl PublishArgs {
    /// The `-p` specs but the `auto` ones ([`PublishArgs::autos`]), as given.
    pub fn explicit(&self) -> impl Iterator<Item = &String> {
        self.publish.iter().filter(|s| crate::forward::parse_auto(s).is_none())
    }

    /// Parses every `-p` spec but the `auto` ones ([`PublishArgs::autos`]).
    ///
    /// # Errors
    /// The first malformed spec.
    pub fn forwards(&self) -> Result<Vec<crate::forward::Forward>, CliError> {
        let mut out = Vec::new();
        for s in self.explicit() {
            out.extend(crate::forward::parse_spec(s)?);
        }
        Ok(out)
    }

    /// The host addresses and protocols of the `-p [HOST_IP:]auto[/udp]` specs (each once);
    /// without an address, `0.0.0.0` and (when the host has IPv6) `[::]`, as for `-p PORT`.
    ///
    /// # Errors
    /// The first malformed `auto` spec.
    pub fn autos(&self) -> Result<Vec<(std::net::IpAddr, crate::forward::Proto)>, CliError> {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
        let mut out = Vec::new();
        for a in self.publish.iter().filter_map(|s| crate::forward::parse_auto(s)) {
            let (host, proto) = a?;
            let hosts = match host {
                Some(ip) => vec![ip],
                None if crate::sys::ipv6_available() => {
                    vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED), IpAddr::V6(Ipv6Addr::UNSPECIFIED)]
                }
                None => vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)],
            };
            for ip in hosts {
                if !out.contains(&(ip, proto)) {
                    out.push((ip, proto));
                }
            }
        }
        Ok(out)
    }
}

/// The shell completion script for `shell`, generated from the CLI definition.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "warren", &mut out);
    out
}

/// Every man page, generated from the CLI definition: `warren.1`, then `warren-SUB.1` for
/// each subcommand (and `warren-SUB-SUBSUB.1` below those).
pub fn man_pages() -> Vec<(String, Vec<u8>)> {
    fn walk(cmd: clap::Command, name: String, out: &mut Vec<(String, Vec<u8>)>) {
        let mut page = Vec::new();
        let cmd = cmd.name(name.clone());
        let _ = clap_mangen::Man::new(cmd.clone()).render(&mut page);
        out.push((format!("{name}.1"), page));
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            walk(sub.clone(), format!("{name}-{}", sub.get_name()), out);
        }
    }
    let mut out = Vec::new();
    let mut cmd = <Cli as clap::CommandFactory>::command();
    cmd.build();
    walk(cmd, "warren".into(), &mut out);
    out
}

/// Invalid command-line values.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A network value.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A port spec.
    #[error(transparent)]
    Spec(#[from] crate::forward::SpecError),
    /// A `-T` spec.
    #[error(transparent)]
    ToHost(#[from] crate::forward::ToHostError),
    /// A `--multicast` spec.
    #[error(transparent)]
    Multicast(#[from] crate::multicast::MulticastError),
    /// A TAP name the kernel would refuse.
    #[error("invalid TAP name {0:?}: expected 1..=15 bytes without '/', ':' or whitespace")]
    TapName(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed man pages and completions are what the CLI generates: regenerate them
    /// with `scripts/gen-docs.sh` after changing the CLI.
    #[test]
    fn generated_docs_are_current() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let stale = "stale: run scripts/gen-docs.sh and commit the result";
        for (name, page) in man_pages() {
            let committed = std::fs::read(root.join("docs/man").join(&name)).unwrap_or_default();
            assert!(committed == page, "docs/man/{name} is {stale}");
        }
        for (shell, file) in [
            (clap_complete::Shell::Bash, "warren.bash"),
            (clap_complete::Shell::Zsh, "_warren"),
            (clap_complete::Shell::Fish, "warren.fish"),
        ] {
            let committed = std::fs::read(root.join("contrib/completions").join(file)).unwrap_or_default();
            assert!(committed == completions(shell), "contrib/completions/{file} is {stale}");
        }
    }
}
