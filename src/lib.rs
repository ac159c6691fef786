//! warren: rootless container networking in user space.
//!
//! # How a frame crosses warren
//!
//! ```text
//! container netns                      warren process (host netns, owner of the user ns)
//! tap0 --(TAP fd, SCM_RIGHTS)--> runtime::Dataplane::frame
//!                                  gateway::classify      checked parse; ARP/TCP/UDP/ICMP or a counted drop
//!                                  ├─ ARP for .2/.3     -> wire::arp_reply
//!                                  ├─ TCP               -> FlowKey hash -> runtime::tcp::TcpFlow
//!                                  │                       (own smoltcp Interface + socket) <-> tokio TcpStream
//!                                  ├─ UDP               -> runtime::udp::UdpFlow (connected host socket)
//!                                  └─ ICMP echo         -> answered (.2/.3) or runtime::udp::PingFlow
//! host sockets ready --(per-flow waker)--> wake queue --> the same single task services that flow
//! ```
//!
//! # Layers and what each guarantees
//! - [`sys`]: every syscall and `unsafe` block; owned fds from the moment they exist.
//! - [`ns`]: namespace creation and TAP setup, synchronous, before any thread exists.
//! - [`config`], [`cli`]: every user value validated before anything is created.
//! - [`gateway`], [`wire`], [`dns`], [`dhcp`], [`forward`], [`autopublish`]: sans-IO: bytes and time in, decisions and frames out.
//!   Untrusted frames are read only through checked views; no input panics.
//! - [`runtime`]: the only async code. One task owns the TAP, all flows and timers; per-flow
//!   smoltcp interfaces make every packet O(1) in the number of flows.

pub mod api;
pub mod autopublish;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dhcp;
pub mod dns;
pub mod doctor;
pub mod forward;
pub mod gateway;
pub mod harden;
pub mod logfmt;
pub mod multicast;
pub mod ns;
pub mod pcap;
pub mod runtime;
pub mod slirp;
pub mod sys;
pub mod wire;
