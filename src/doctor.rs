//! `warren doctor`: checks what rootless networking needs on this host, each with its fix.

use std::path::Path;

use serde::Serialize;

use crate::sys;

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Works.
    Pass,
    /// Works with a limitation.
    Warn,
    /// warren cannot work until fixed.
    Fail,
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// Outcome.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// The exact fix, when not passing.
    pub fix: Option<String>,
}

fn read_trim(p: &str) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

fn check(name: &'static str, status: Status, detail: impl Into<String>, fix: Option<String>) -> Check {
    Check { name, status, detail: detail.into(), fix }
}

fn user_namespaces() -> Check {
    let name = "user namespaces";
    match sys::clone_namespaces(libc::CLONE_NEWUSER) {
        Ok(0) => sys::exit_now(0),
        Ok(pid) => {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            if read_trim("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
                return check(
                    name,
                    Status::Warn,
                    "can be created, but AppArmor restricts what they may do (Ubuntu 24.04+)",
                    Some("sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or an AppArmor profile that allows userns for warren".into()),
                );
            }
            check(name, Status::Pass, "an unprivileged user namespace can be created", None)
        }
        Err(e) => {
            let fix = if read_trim("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
                "sysctl -w user.max_user_namespaces=15000"
            } else if read_trim("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
                "sysctl -w kernel.unprivileged_userns_clone=1"
            } else {
                "allow unprivileged user namespaces (user.max_user_namespaces, kernel.unprivileged_userns_clone, AppArmor)"
            };
            check(name, Status::Fail, format!("cannot create one: {e}"), Some(fix.into()))
        }
    }
}

fn tun() -> Check {
    let name = "/dev/net/tun";
    match std::fs::OpenOptions::new().read(true).write(true).open("/dev/net/tun") {
        Ok(_) => check(name, Status::Pass, "present and openable", None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => check(
            name,
            Status::Fail,
            "missing",
            Some(
                "modprobe tun (in minimal images also: mkdir -p /dev/net && mknod -m 0666 /dev/net/tun c 10 200)"
                    .into(),
            ),
        ),
        Err(e) => check(name, Status::Fail, format!("not openable: {e}"), Some("chmod 0666 /dev/net/tun".into())),
    }
}

fn subids(user: &str, uid: u32, gid: u32) -> Check {
    let name = "/etc/subuid and /etc/subgid";
    let u = std::fs::read_to_string("/etc/subuid").ok().and_then(|c| crate::ns::subid_range(&c, user, uid));
    let g = std::fs::read_to_string("/etc/subgid").ok().and_then(|c| crate::ns::subid_range(&c, user, gid));
    match (u, g) {
        (Some(u), Some(g)) => {
            check(name, Status::Pass, format!("{user}: uids {}+{}, gids {}+{}", u.0, u.1, g.0, g.1), None)
        }
        _ => check(
            name,
            Status::Warn,
            format!("no range for {user}: containers get a single-id map (only root inside)"),
            Some(format!("usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}")),
        ),
    }
}

fn idmap_tools() -> Check {
    let name = "newuidmap/newgidmap";
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = |t: &str| std::env::split_paths(&path).any(|d| d.join(t).is_file());
    if found("newuidmap") && found("newgidmap") {
        check(name, Status::Pass, "installed", None)
    } else {
        check(
            name,
            Status::Warn,
            "missing: subordinate id ranges cannot be used (single-id map)",
            Some("apt-get install uidmap (or the shadow-utils package of your distribution)".into()),
        )
    }
}

fn ping(gid: u32) -> Check {
    let name = "net.ipv4.ping_group_range";
    let range = read_trim("/proc/sys/net/ipv4/ping_group_range").unwrap_or_default();
    let range = range.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut it = range.split_whitespace().filter_map(|x| x.parse::<u64>().ok());
    match (it.next(), it.next()) {
        (Some(lo), Some(hi)) if (lo..=hi).contains(&u64::from(gid)) => {
            check(name, Status::Pass, format!("{range}: includes gid {gid}; ping from containers works"), None)
        }
        _ => check(
            name,
            Status::Warn,
            format!("{range:?} excludes gid {gid}: ping from containers is answered 'administratively prohibited'"),
            Some("sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"".into()),
        ),
    }
}

fn low_ports() -> Check {
    let name = "net.ipv4.ip_unprivileged_port_start";
    let start = read_trim("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap_or_else(|| "1024".into());
    if start == "0" {
        check(name, Status::Pass, "0: any host port can be published", None)
    } else {
        check(
            name,
            Status::Warn,
            format!("{start}: host ports below {start} cannot be published without privileges"),
            Some(format!("sysctl -w net.ipv4.ip_unprivileged_port_start=0 (or publish ports >= {start})")),
        )
    }
}

fn runtime_dir() -> Check {
    let name = "$XDG_RUNTIME_DIR";
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if Path::new(&d).is_dir() && nix::unistd::access(Path::new(&d), nix::unistd::AccessFlags::W_OK).is_ok() => {
            check(name, Status::Pass, format!("{}: API sockets go to {}/warren", d.to_string_lossy(), d.to_string_lossy()), None)
        }
        _ => check(
            name,
            Status::Warn,
            format!("unset or not writable: API sockets go to {}", crate::api::default_dir().display()),
            Some("log in through a session manager (systemd --user sets it) or export XDG_RUNTIME_DIR=/run/user/$(id -u)".into()),
        ),
    }
}

/// Runs every check. Must run before any thread exists (it creates a user namespace).
pub fn run() -> Vec<Check> {
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid().as_raw();
    let user = nix::unistd::User::from_uid(uid).ok().flatten().map_or_else(|| uid.to_string(), |u| u.name);
    vec![
        user_namespaces(),
        tun(),
        subids(&user, uid.as_raw(), gid),
        idmap_tools(),
        ping(gid),
        low_ports(),
        runtime_dir(),
    ]
}

/// Human-readable report, one line per check plus its fix.
pub fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let tag = match c.status {
            Status::Pass => "ok  ",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        out.push_str(&format!("{tag} {}: {}\n", c.name, c.detail));
        if let Some(f) = &c.fix {
            out.push_str(&format!("     fix: {f}\n"));
        }
    }
    out
}
