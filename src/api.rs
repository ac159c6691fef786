//! The runtime API on a unix socket: warren's own port commands and the slirp4netns protocol.
//!
//! One request per connection (the slirp4netns convention): the client sends one JSON object,
//! may shut down its write side, and reads one compact JSON answer. The socket is mode 0600
//! and only peers with the same uid (or root) are served. Requests become [`Command`]s for the
//! dataplane, which answers without pausing the data path for longer than a bind.
//!
//! ```text
//! {"execute":"port_add","arguments":{"specs":["8080:80","127.0.0.1::53/udp"]}}
//!     -> {"return":{"ports":[{"id":1,"proto":"tcp","host":"0.0.0.0:8080","container":"10.0.2.100:80"},...]}}
//! {"execute":"port_list"}                         -> {"return":{"ports":[...]}}
//! {"execute":"port_remove","arguments":{"ids":[1]}} -> {"return":{}}
//! {"execute":"stats"}                             -> {"return":{"stats":{...},"flows":N}}
//! {"execute":"flows"}                             -> {"return":{"flows":[{"proto":"tcp",...}]}}
//! {"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"","host_port":8080,"guest_addr":"","guest_port":80}}
//!     -> {"return":{"id":1}}
//! {"execute":"list_hostfwd"}                      -> {"entries":[E...],"return":{"entries":[E...]}}
//! {"execute":"remove_hostfwd","arguments":{"id":1}} -> {"return":{}}
//! errors: {"error":{"desc":"..."}}
//! ```

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use crate::forward::{self, Family, Forward, Proto};
use crate::runtime::Command;
use crate::runtime::ports::PortInfo;

/// The container addresses the slirp4netns API checks `guest_addr` / `guest_addr6` against.
#[derive(Debug, Clone, Copy)]
pub struct Guest {
    /// The container's IPv4 address.
    pub v4: Ipv4Addr,
    /// The container's IPv6 /64, when IPv6 is on.
    pub v6_net: Option<ipnet::Ipv6Net>,
}

/// Largest request accepted (as slirp4netns).
pub const MAX_REQUEST: usize = 4096;

/// Errors of the API socket set-up and of the `warren port` client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The socket could not be created.
    #[error("cannot create the API socket {0}: {1}")]
    Bind(PathBuf, io::Error),
    /// No socket given and none (or several) found.
    #[error("{0}")]
    Find(String),
    /// Talking to the socket failed.
    #[error("API socket {0}: {1}")]
    Io(PathBuf, io::Error),
    /// The server answered with an error.
    #[error("{0}")]
    Refused(String),
}

/// Directory of warren's API sockets: `$XDG_RUNTIME_DIR/warren`, else `/tmp/warren-UID`
/// (used only if it is ours: another user could have created it first, and inside a user
/// namespace "uid 0" may name someone else's directory; then `/tmp/warren-UID-PID`).
pub fn default_dir() -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from)
        && d.is_dir()
        && nix::unistd::access(&d, nix::unistd::AccessFlags::W_OK).is_ok()
    {
        return d.join("warren");
    }
    let uid = nix::unistd::getuid().as_raw();
    let shared = std::env::temp_dir().join(format!("warren-{uid}"));
    match std::fs::symlink_metadata(&shared) {
        Ok(m) if !(m.is_dir() && m.uid() == uid && m.mode() & 0o077 == 0) => {
            std::env::temp_dir().join(format!("warren-{uid}-{}", std::process::id()))
        }
        _ => shared,
    }
}

/// A bound API socket, removed from the file system on drop.
pub struct ApiSocket {
    /// Its path.
    pub path: PathBuf,
    listener: Option<std::os::unix::net::UnixListener>,
    /// The default directory, when the socket lives there (removed again when empty, by
    /// whichever instance leaves last).
    shared_dir: Option<PathBuf>,
    /// The socket's directory, held open so the socket can be removed even after the process
    /// has moved into a sandbox where the path no longer resolves.
    dir: Option<OwnedFd>,
}

impl ApiSocket {
    /// Binds `path` (or `default_dir()/PID.sock`) with mode 0600, replacing a stale socket.
    ///
    /// # Errors
    /// If the directory or socket cannot be created.
    pub fn bind(path: Option<PathBuf>) -> Result<Self, ApiError> {
        let shared_dir = path.is_none().then(default_dir);
        let path = path.unwrap_or_else(|| default_dir().join(format!("{}.sock", std::process::id())));
        let err = |e| ApiError::Bind(path.clone(), e);
        if path.exists() && std::os::unix::net::UnixStream::connect(&path).is_err() {
            let _ = std::fs::remove_file(&path);
        }
        // Another instance leaving may remove an empty shared directory between our mkdir
        // and bind: try again then.
        let mut attempt = 0;
        let l = loop {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
                std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(err)?;
            }
            let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
            let l = std::os::unix::net::UnixListener::bind(&path);
            nix::sys::stat::umask(old);
            match l {
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < 3 => attempt += 1,
                other => break other.map_err(err)?,
            }
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        l.set_nonblocking(true).map_err(err)?;
        let parent = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let flags = nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC;
        let dir = nix::fcntl::open(parent, flags, nix::sys::stat::Mode::empty()).ok();
        Ok(Self { path, listener: Some(l), shared_dir, dir })
    }

    /// Serves requests until the command channel closes (must run inside the runtime).
    pub async fn serve(mut self, commands: mpsc::Sender<Command>, guest: Guest) {
        let Some(std_l) = self.listener.take() else { return };
        let listener = match UnixListener::from_std(std_l) {
            Ok(l) => l,
            Err(e) => return tracing::warn!(error = %e, "API socket unusable"),
        };
        let me = nix::unistd::getuid().as_raw();
        loop {
            let Ok((conn, _)) = listener.accept().await else { continue };
            let uid = conn.peer_cred().map(|c| c.uid()).unwrap_or(u32::MAX);
            if uid != me && uid != 0 {
                tracing::warn!(uid, "API request from another user refused");
                continue;
            }
            let commands = commands.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(10), handle(conn, commands, guest)).await;
            });
        }
    }
}

impl Drop for ApiSocket {
    fn drop(&mut self) {
        match (&self.dir, self.path.file_name()) {
            (Some(dir), Some(name)) => {
                let _ = nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir);
            }
            _ => {
                let _ = std::fs::remove_file(&self.path);
            }
        }
        if let Some(d) = &self.shared_dir {
            // Only succeeds when no other instance's socket is left in it.
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Reads one request: until EOF, a complete JSON value, or `MAX_REQUEST` bytes.
async fn read_request(conn: &mut UnixStream) -> Result<Vec<u8>, &'static str> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = conn.read(&mut chunk).await.map_err(|_| "bad request: cannot parse JSON")?;
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() >= MAX_REQUEST {
            return Err("bad request: too large message");
        }
        if n == 0 || serde_json::from_slice::<Value>(&buf).is_ok() {
            return Ok(buf);
        }
    }
}

async fn handle(mut conn: UnixStream, commands: mpsc::Sender<Command>, guest: Guest) {
    let reply = match read_request(&mut conn).await {
        Ok(req) => answer(&req, &commands, &guest).await,
        Err(desc) => error(desc),
    };
    let _ = conn.write_all(reply.as_bytes()).await;
    let _ = conn.shutdown().await;
    // Read what the client still sends (an oversized request) before closing: closing with
    // unread input would reset the connection and could destroy the answer in flight.
    let drain = async {
        let mut b = [0u8; 4096];
        while let Ok(n) = conn.read(&mut b).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

fn error(desc: impl Into<String>) -> String {
    json!({"error": {"desc": desc.into()}}).to_string()
}

/// Answers one request with compact JSON (exposed for tests and fuzzing of the parser).
pub async fn answer(req: &[u8], commands: &mpsc::Sender<Command>, guest: &Guest) -> String {
    let v: Value = match serde_json::from_slice(req) {
        Ok(v) => v,
        Err(_) => return error("bad request: cannot parse JSON"),
    };
    let Some(obj) = v.as_object() else { return error("bad request: json_object() failed") };
    let Some(exec) = obj.get("execute").and_then(Value::as_str) else { return error("bad request: no execute found") };
    let args = obj.get("arguments").cloned().unwrap_or(Value::Null);
    let gone = || error("warren is shutting down");
    match exec {
        "port_add" => {
            let specs: Vec<String> = match args.get("specs").and_then(|s| serde_json::from_value(s.clone()).ok()) {
                Some(s) => s,
                None => return error("bad request: port_add: arguments.specs must be a list of port specs"),
            };
            let mut fwds = Vec::new();
            for s in &specs {
                match forward::parse_spec(s) {
                    Ok(f) => fwds.extend(f),
                    Err(e) => return error(e.to_string()),
                }
            }
            match Command::ask(commands, |r| Command::Add(fwds, r)).await {
                Some(Ok(ports)) => json!({"return": {"ports": ports}}).to_string(),
                Some(Err(e)) => error(e),
                None => gone(),
            }
        }
        "port_list" => match Command::ask(commands, Command::List).await {
            Some(ports) => json!({"return": {"ports": ports}}).to_string(),
            None => gone(),
        },
        "port_remove" => {
            let ids: Vec<u64> = match args.get("ids").and_then(|s| serde_json::from_value(s.clone()).ok()) {
                Some(s) => s,
                None => return error("bad request: port_remove: arguments.ids must be a list of ids"),
            };
            match Command::ask(commands, |r| Command::Remove(ids, r)).await {
                Some(Ok(())) => r#"{"return":{}}"#.to_string(),
                Some(Err(e)) => error(e),
                None => gone(),
            }
        }
        "stats" => match Command::ask(commands, Command::Stats).await {
            Some((stats, flows)) => json!({"return": {"stats": stats, "flows": flows.len()}}).to_string(),
            None => gone(),
        },
        "capture" => {
            let cmd: crate::runtime::CaptureCmd = match serde_json::from_value(args.clone()) {
                Ok(c) => c,
                Err(_) => {
                    return error(
                        "bad request: capture: arguments must be {\"start\":{\"path\":...}}, \"status\" or \"stop\"",
                    );
                }
            };
            match Command::ask(commands, |r| Command::Capture(cmd, r)).await {
                Some(Ok(frames)) => json!({"return": {"frames": frames}}).to_string(),
                Some(Err(e)) => error(e),
                None => gone(),
            }
        }
        "flows" => match Command::ask(commands, Command::Stats).await {
            Some((_, flows)) => json!({"return": {"flows": flows}}).to_string(),
            None => gone(),
        },
        "add_hostfwd" => {
            let fwd = match slirp_forward(&args, guest) {
                Ok(f) => f,
                Err(field) => return error(format!("bad request: add_hostfwd: bad arguments.{field}")),
            };
            match Command::ask(commands, |r| Command::Add(vec![fwd], r)).await {
                Some(Ok(ports)) => format!(r#"{{"return":{{"id":{}}}}}"#, ports.first().map_or(0, |p| p.id)),
                Some(Err(e)) => {
                    tracing::info!(error = %e, "add_hostfwd failed");
                    error("bad request: add_hostfwd: slirp_add_hostfwd failed")
                }
                None => gone(),
            }
        }
        "list_hostfwd" => match Command::ask(commands, Command::List).await {
            Some(ports) => {
                // slirp4netns answers {"entries":[...]}; its documentation shows
                // {"return":{"entries":[...]}}. Both keys satisfy clients of either.
                let entries = ports.iter().map(slirp_entry).collect::<Vec<String>>().join(",");
                format!(r#"{{"entries":[{entries}],"return":{{"entries":[{entries}]}}}}"#)
            }
            None => gone(),
        },
        "remove_hostfwd" => {
            let Some(id) = args.get("id").and_then(Value::as_u64) else {
                return error("bad request: remove_hostfwd: bad arguments.id");
            };
            match Command::ask(commands, |r| Command::Remove(vec![id], r)).await {
                Some(Ok(())) => r#"{"return":{}}"#.to_string(),
                Some(Err(_)) => error("bad request: remove_hostfwd: bad arguments.id"),
                None => gone(),
            }
        }
        _ => error("bad request: unknown execute"),
    }
}

/// Reads slirp4netns `add_hostfwd` arguments; the error names the bad field.
///
/// The IPv6 extension proposed for slirp4netns (PR #276) is accepted on top: `proto` may be
/// `tcp4`/`udp4` (as `tcp`/`udp`) or `tcp6`/`udp6`, which listen on `host_addr6` (default `::`)
/// and lead to `guest_addr6` when given, else to the guest's IPv4 address (an IPv6 client of
/// an IPv4 service). Plain `tcp`/`udp` stay IPv4-only, as old clients expect.
fn slirp_forward(args: &Value, guest: &Guest) -> Result<Forward, &'static str> {
    let (proto, v6_host) = match args.get("proto").and_then(Value::as_str) {
        Some("tcp" | "tcp4") => (Proto::Tcp, false),
        Some("udp" | "udp4") => (Proto::Udp, false),
        Some("tcp6") => (Proto::Tcp, true),
        Some("udp6") => (Proto::Udp, true),
        _ => return Err("proto"),
    };
    let host_ip: IpAddr = if v6_host {
        match args.get("host_addr6") {
            None => Ipv6Addr::UNSPECIFIED.into(),
            Some(Value::String(s)) if s.is_empty() => Ipv6Addr::UNSPECIFIED.into(),
            Some(Value::String(s)) => s.parse::<Ipv6Addr>().map_err(|_| "host_addr6")?.into(),
            Some(_) => return Err("host_addr6"),
        }
    } else {
        match args.get("host_addr") {
            None => Ipv4Addr::UNSPECIFIED.into(),
            Some(Value::String(s)) if s.is_empty() => Ipv4Addr::UNSPECIFIED.into(),
            Some(Value::String(s)) => s.parse::<Ipv4Addr>().map_err(|_| "host_addr")?.into(),
            Some(_) => return Err("host_addr"),
        }
    };
    let container = guest.v4;
    let port = |k: &'static str| match args.get(k).and_then(Value::as_f64) {
        Some(p) if (1.0..=65535.0).contains(&p) && p.fract() == 0.0 => Ok(p as u16),
        _ => Err(k),
    };
    let host_port = port("host_port")?;
    match args.get("guest_addr") {
        None => {}
        Some(Value::String(s)) if s.is_empty() => {}
        Some(Value::String(s)) if s.parse::<Ipv4Addr>().ok() == Some(container) => {}
        Some(_) => return Err("guest_addr"),
    }
    let guest_port = port("guest_port")?;
    let guest6 = match args.get("guest_addr6") {
        None => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => match (s.parse::<Ipv6Addr>(), guest.v6_net) {
            (Ok(a), Some(net)) if net.contains(&a) => Some(a),
            _ => return Err("guest_addr6"),
        },
        Some(_) => return Err("guest_addr6"),
    };
    Ok(Forward {
        proto,
        host: SocketAddr::new(host_ip, host_port),
        container_port: guest_port,
        container_family: Some(if guest6.is_some() { Family::V6 } else { Family::V4 }),
        container_ip: guest6.map(IpAddr::V6),
    })
}

/// One `list_hostfwd` entry in slirp4netns's exact key order (serde_json would sort keys).
/// IPv6 entries (only from the extension) name their addresses `host_addr6` / `guest_addr6`.
fn slirp_entry(p: &PortInfo) -> String {
    if p.host.is_ipv6() || p.container.is_ipv6() {
        let host = match p.host.ip() {
            IpAddr::V6(a) => format!(r#""host_addr6":"{a}""#),
            IpAddr::V4(a) => format!(r#""host_addr":"{a}""#),
        };
        let guest = match p.container.ip() {
            IpAddr::V6(a) => format!(r#""guest_addr6":"{a}""#),
            IpAddr::V4(a) => format!(r#""guest_addr":"{a}""#),
        };
        let proto = if p.host.is_ipv6() { format!("{}6", p.proto) } else { p.proto.to_string() };
        return format!(
            r#"{{"id":{},"proto":"{proto}",{host},"host_port":{},{guest},"guest_port":{}}}"#,
            p.id,
            p.host.port(),
            p.container.port()
        );
    }
    format!(
        r#"{{"id":{},"proto":"{}","host_addr":"{}","host_port":{},"guest_addr":"{}","guest_port":{}}}"#,
        p.id,
        p.proto,
        p.host.ip(),
        p.host.port(),
        p.container.ip(),
        p.container.port()
    )
}

/// Finds the API socket of the only running warren in `default_dir()` (or, where that is a
/// per-process fallback, in all of this user's fallbacks).
///
/// # Errors
/// When none or several answer.
pub fn find_socket() -> Result<PathBuf, ApiError> {
    let (dirs, place) = search_dirs(&default_dir());
    let live: Vec<PathBuf> = dirs
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|rd| rd.flatten().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sock"))
        .filter(|p| std::os::unix::net::UnixStream::connect(p).is_ok())
        .collect();
    match live.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(ApiError::Find(format!(
            "no running warren found in {place}: start one with `warren run`, or pass --api-socket PATH"
        ))),
        many => Err(ApiError::Find(format!(
            "{} running warrens found in {place} ({}): choose one with --api-socket PATH",
            many.len(),
            many.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Where instances of this user put their sockets, and how to name that place: `default`
/// and, when that is a per-process fallback (`/tmp/warren-UID-PID`, see [`default_dir`]),
/// every such directory that is ours.
fn search_dirs(default: &Path) -> (Vec<PathBuf>, String) {
    use std::os::unix::fs::MetadataExt;
    let uid = nix::unistd::getuid().as_raw();
    let prefix = format!("warren-{uid}-");
    let tmp = std::env::temp_dir();
    let fallback = default.parent() == Some(tmp.as_path())
        && default.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix));
    let Some(rd) = fallback.then(|| std::fs::read_dir(&tmp).ok()).flatten() else {
        return (vec![default.to_path_buf()], default.display().to_string());
    };
    let dirs = rd
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().strip_prefix(&prefix).is_some_and(|pid| pid.parse::<u32>().is_ok()))
        .filter(|e| {
            std::fs::symlink_metadata(e.path()).is_ok_and(|m| m.is_dir() && m.uid() == uid && m.mode() & 0o077 == 0)
        })
        .map(|e| e.path())
        .collect();
    (dirs, format!("{}/{prefix}*", tmp.display()))
}

/// Sends one request to `path` and returns the decoded answer (client side, blocking).
///
/// # Errors
/// I/O failures, or the server's error description.
pub fn request(path: &Path, req: &Value) -> Result<Value, ApiError> {
    use std::io::{Read, Write};
    let io = |e| ApiError::Io(path.to_path_buf(), e);
    let mut s = std::os::unix::net::UnixStream::connect(path).map_err(io)?;
    s.set_read_timeout(Some(Duration::from_secs(30))).map_err(io)?;
    s.write_all(req.to_string().as_bytes()).map_err(io)?;
    s.shutdown(std::net::Shutdown::Write).map_err(io)?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(io)?;
    let v: Value = serde_json::from_str(&out)
        .map_err(|_| ApiError::Io(path.to_path_buf(), io::Error::other(format!("bad answer {out:?}"))))?;
    if let Some(desc) = v.pointer("/error/desc").and_then(Value::as_str) {
        return Err(ApiError::Refused(desc.to_string()));
    }
    Ok(v)
}
