//! The blocking client side of the daemon protocol (the `warren` CLI), with start on demand.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{MSG_MAX, Request, runtime_dir, socket_path};
use crate::forward::Forward;
use crate::runtime::Command;
use crate::runtime::ports::PortInfo;

/// A failed daemon request.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Talking to the daemon failed.
    #[error("network daemon: {0}: {1}")]
    Io(String, io::Error),
    /// The daemon refused the request; the text says why.
    #[error("{0}")]
    Refused(String),
    /// The daemon could not be started.
    #[error("cannot start the network daemon: {0}")]
    Start(String),
}

/// A connection to the daemon.
pub struct Conn {
    fd: OwnedFd,
}

impl Conn {
    /// Connects to the user's daemon, starting it first if none runs.
    ///
    /// # Errors
    /// When it cannot be started or reached.
    pub fn connect() -> Result<Self, ClientError> {
        let path = socket_path();
        if let Ok(fd) = crate::sys::seqpacket_connect(&path) {
            return Ok(Self { fd });
        }
        // On a terminal, say what the wait is for (the first command of a session starts it).
        let tty = crate::sys::isatty(io::stderr().as_fd());
        if tty {
            eprint!("warren: starting the network daemon ...");
        }
        start_daemon()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match crate::sys::seqpacket_connect(&path) {
                Ok(fd) => {
                    if tty {
                        eprintln!(" ready");
                    }
                    return Ok(Self { fd });
                }
                Err(e) if Instant::now() > deadline => {
                    return Err(ClientError::Start(format!(
                        "it did not listen on {} within 10 s ({e}); see {}",
                        path.display(),
                        runtime_dir().join("daemon.log").display()
                    )));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// The connection's fd (for a session's event loop).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Gives up the connection's fd.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// Sends one message with `fds`.
    ///
    /// # Errors
    /// When the daemon is gone.
    pub fn send(&self, v: &Value, fds: &[BorrowedFd<'_>]) -> Result<(), ClientError> {
        crate::sys::send_fds(self.fd.as_fd(), v.to_string().as_bytes(), fds)
            .map_err(|e| ClientError::Io("send".into(), io::Error::from(e)))
    }

    /// Receives one message; an `{"error": ...}` answer becomes [`ClientError::Refused`].
    ///
    /// # Errors
    /// When the daemon is gone or refused.
    pub fn recv(&self) -> Result<(Value, Vec<OwnedFd>), ClientError> {
        let mut buf = vec![0u8; MSG_MAX];
        let (n, fds) = crate::sys::recv_fds(self.fd.as_fd(), &mut buf)
            .map_err(|e| ClientError::Io("receive".into(), io::Error::from(e)))?;
        if n == 0 {
            return Err(ClientError::Io("receive".into(), io::Error::other("the daemon closed the connection")));
        }
        let v: Value = serde_json::from_slice(&buf[..n])
            .map_err(|e| ClientError::Io("receive".into(), io::Error::other(format!("bad answer: {e}"))))?;
        Ok((answer(&v)?, fds))
    }

    /// One request, one answer.
    ///
    /// # Errors
    /// When the daemon is gone or refused.
    pub fn request(&self, req: &Request) -> Result<Value, ClientError> {
        let v = serde_json::to_value(req).map_err(|e| ClientError::Io("encode".into(), io::Error::other(e)))?;
        self.send(&v, &[])?;
        self.recv().map(|(v, _)| v)
    }
}

/// Connects (starting the daemon if needed) and makes one request.
///
/// # Errors
/// As [`Conn::connect`] and [`Conn::request`].
pub fn call(req: &Request) -> Result<Value, ClientError> {
    Conn::connect()?.request(req)
}

/// One request to the running daemon from a task of a tokio runtime: no thread, no start on
/// demand (a container's `warren run` asks the daemon it joined).
///
/// # Errors
/// As [`Conn::request`].
pub async fn call_async(req: &Request) -> Result<Value, ClientError> {
    let io = |what: &str| {
        let what = what.to_string();
        move |e: io::Error| ClientError::Io(what, e)
    };
    let fd = crate::sys::seqpacket_connect(&socket_path()).map_err(io("connect"))?;
    socket2::SockRef::from(&fd).set_nonblocking(true).map_err(io("connect"))?;
    let fd = crate::sys::async_fd(fd).map_err(io("connect"))?;
    let v = serde_json::to_value(req).map_err(|e| ClientError::Io("encode".into(), io::Error::other(e)))?;
    super::send(&fd, &v, &[]).await.map_err(io("send"))?;
    let Some((v, _)) = super::recv(&fd).await.map_err(io("receive"))? else {
        return Err(ClientError::Io("receive".into(), io::Error::other("the daemon closed the connection")));
    };
    answer(&v)
}

/// The payload of a daemon answer: `{"ok": V}` is V, `{"error": E}` is [`ClientError::Refused`].
fn answer(v: &Value) -> Result<Value, ClientError> {
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        return Err(ClientError::Refused(e.to_string()));
    }
    Ok(v.get("ok").cloned().unwrap_or(Value::Null))
}

/// Serves a network container's `-p auto` ([`crate::runtime::ports::auto_publish`]) in its
/// `warren run`: the port list, additions and removals it asks for go to the daemon, which
/// owns the network's data path, as requests for `container`. Ends when the task asking ends.
pub async fn serve_port_commands(container: String, mut commands: tokio::sync::mpsc::Receiver<Command>) {
    while let Some(cmd) = commands.recv().await {
        match cmd {
            Command::List(reply) => {
                let req = Request::Ports { container: container.clone() };
                let infos = match call_async(&req).await {
                    Ok(v) => port_infos(&v),
                    Err(e) => {
                        tracing::warn!(error = %e, "-p auto: cannot list the container's ports");
                        return;
                    }
                };
                let _ = reply.send(infos);
            }
            Command::Add(fwds, reply) => {
                let req = Request::Publish {
                    container: container.clone(),
                    publish: fwds.iter().map(Forward::spec).collect(),
                };
                let _ = reply.send(call_async(&req).await.map(|v| port_infos(&v)).map_err(|e| e.to_string()));
            }
            Command::Remove(ids, reply) => {
                let req = Request::Unpublish { container: container.clone(), ids };
                let _ = reply.send(call_async(&req).await.map(|_| ()).map_err(|e| e.to_string()));
            }
            other => tracing::debug!(command = ?std::mem::discriminant(&other), "not for the daemon; dropped"),
        }
    }
}

/// The ports of a `ports` or `publish` answer.
fn port_infos(v: &Value) -> Vec<PortInfo> {
    v.as_array().map(|a| a.iter().filter_map(PortInfo::from_json).collect()).unwrap_or_default()
}

/// Starts `warren daemon --detach` with its output in `daemon.log` of the runtime directory.
fn start_daemon() -> Result<(), ClientError> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = runtime_dir();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| ClientError::Start(format!("create {}: {e}", dir.display())))?;
    let exe = std::env::current_exe().map_err(|e| ClientError::Start(format!("find warren's own binary: {e}")))?;
    let log_path = dir.join("daemon.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| ClientError::Start(format!("open {}: {e}", log_path.display())))?;
    let log2 = log.try_clone().map_err(|e| ClientError::Start(e.to_string()))?;
    tracing::info!(log = %log_path.display(), "starting the network daemon");
    let status = std::process::Command::new(exe)
        .args(["daemon", "--detach"])
        // The daemon is not the caller's service: it must not tell the caller's manager it is up.
        .env_remove("NOTIFY_SOCKET")
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2)
        .status()
        .map_err(|e| ClientError::Start(e.to_string()))?;
    if !status.success() {
        return Err(ClientError::Start(format!("it exited with {status}; see {}", log_path.display())));
    }
    Ok(())
}
