//! Steady-state hardening: a seccomp allowlist for the data path.
//!
//! Applied after set-up, when every namespace, TAP and listening socket exists. The list holds
//! what the data path, the API and tokio need (socket I/O, epoll, timers, memory, signals,
//! reading resolv.conf, sampling /proc/loadavg, removing the API socket); anything else
//! fails with `EPERM` instead of killing the process, so an unforeseen path degrades into an
//! error message rather than a dead network. (slirp4netns ships a blocklist; an allowlist
//! closes what nobody listed.)

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

/// Errors applying the filter.
#[derive(Debug, thiserror::Error)]
pub enum HardenError {
    /// This architecture has no filter yet.
    #[error("seccomp: no syscall allowlist for this architecture")]
    Arch,
    /// Building or loading the filter failed.
    #[error("seccomp: {0}")]
    Filter(String),
}

/// The syscalls the steady state uses.
fn allowed() -> Vec<libc::c_long> {
    let mut v = vec![
        libc::SYS_read,
        libc::SYS_pread64,
        libc::SYS_write,
        libc::SYS_readv,
        libc::SYS_writev,
        libc::SYS_close,
        libc::SYS_openat,
        libc::SYS_newfstatat,
        libc::SYS_fstat,
        libc::SYS_statx,
        libc::SYS_lseek,
        libc::SYS_fcntl,
        libc::SYS_ioctl,
        libc::SYS_mmap,
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_madvise,
        libc::SYS_mprotect,
        libc::SYS_brk,
        libc::SYS_rt_sigaction,
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigreturn,
        libc::SYS_sigaltstack,
        libc::SYS_socket,
        libc::SYS_socketpair,
        libc::SYS_connect,
        libc::SYS_accept4,
        libc::SYS_bind,
        libc::SYS_listen,
        libc::SYS_getsockname,
        libc::SYS_getpeername,
        libc::SYS_setsockopt,
        libc::SYS_getsockopt,
        libc::SYS_sendto,
        libc::SYS_recvfrom,
        libc::SYS_sendmsg,
        libc::SYS_recvmsg,
        libc::SYS_sendmmsg,
        libc::SYS_recvmmsg,
        libc::SYS_shutdown,
        libc::SYS_epoll_create1,
        libc::SYS_epoll_ctl,
        libc::SYS_epoll_pwait,
        libc::SYS_epoll_pwait2,
        libc::SYS_eventfd2,
        libc::SYS_futex,
        libc::SYS_sched_yield,
        libc::SYS_sched_getaffinity,
        libc::SYS_clock_gettime,
        libc::SYS_clock_nanosleep,
        libc::SYS_nanosleep,
        libc::SYS_gettid,
        libc::SYS_getpid,
        libc::SYS_getuid,
        libc::SYS_geteuid,
        libc::SYS_getgid,
        libc::SYS_getegid,
        libc::SYS_tgkill,
        libc::SYS_kill,
        libc::SYS_exit,
        libc::SYS_exit_group,
        libc::SYS_getrandom,
        libc::SYS_unlinkat,
        libc::SYS_faccessat,
        libc::SYS_ppoll,
        libc::SYS_waitid,
        libc::SYS_wait4,
        libc::SYS_dup,
        libc::SYS_dup3,
        libc::SYS_set_robust_list,
        libc::SYS_rseq,
        libc::SYS_restart_syscall,
        libc::SYS_prlimit64,
        libc::SYS_uname,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        libc::SYS_epoll_wait,
        libc::SYS_poll,
        libc::SYS_stat,
        libc::SYS_lstat,
        libc::SYS_access,
        libc::SYS_unlink,
        libc::SYS_dup2,
        libc::SYS_arch_prctl,
        libc::SYS_rmdir,
    ]);
    v
}

/// What the bridge-network daemon adds: it saves its networks (create the data directory,
/// write a temporary file, rename it over the old one).
pub fn daemon_extra() -> Vec<libc::c_long> {
    let mut v = vec![libc::SYS_mkdirat, libc::SYS_renameat, libc::SYS_renameat2, libc::SYS_fsync];
    #[cfg(target_arch = "x86_64")]
    v.extend([libc::SYS_mkdir, libc::SYS_rename]);
    v
}

/// What the `warren run` of a bridge-network container adds: `network connect` forks a
/// helper that joins the container's namespaces (`setns`) and makes the new interface there
/// (the helper runs under the same filter), and closes the fds it does not hand over
/// (`getdents64` of /proc/self/fd).
pub const SUPERVISOR: &[libc::c_long] = &[libc::SYS_clone, libc::SYS_clone3, libc::SYS_setns, libc::SYS_getdents64];

/// What `-T` adds: its connections are joined inside the kernel through pipes.
pub const SPLICE: &[libc::c_long] = &[libc::SYS_pipe2, libc::SYS_splice];

/// Loads the allowlist, and the calls in `extra` (e.g. [`SPLICE`], [`daemon_extra`]), into the calling process
/// (and every thread it starts later).
///
/// # Errors
/// [`HardenError`] when the architecture is unknown or the kernel refuses the filter.
pub fn apply_seccomp_allowlist(extra: &[libc::c_long]) -> Result<(), HardenError> {
    let mut v = allowed();
    v.extend_from_slice(extra);
    apply(v)
}

fn apply(allowed: Vec<libc::c_long>) -> Result<(), HardenError> {
    let arch = if cfg!(target_arch = "x86_64") {
        TargetArch::x86_64
    } else if cfg!(target_arch = "aarch64") {
        TargetArch::aarch64
    } else {
        return Err(HardenError::Arch);
    };
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = allowed.into_iter().map(|nr| (nr, Vec::new())).collect();
    let filter = SeccompFilter::new(rules, SeccompAction::Errno(libc::EPERM as u32), SeccompAction::Allow, arch)
        .map_err(|e| HardenError::Filter(e.to_string()))?;
    let prog: BpfProgram =
        filter.try_into().map_err(|e: seccompiler::BackendError| HardenError::Filter(e.to_string()))?;
    // no_new_privs is required for an unprivileged process to load a filter.
    nix::sys::prctl::set_no_new_privs().map_err(|e| HardenError::Filter(format!("no_new_privs: {e}")))?;
    seccompiler::apply_filter_all_threads(&prog).map_err(|e| HardenError::Filter(e.to_string()))
}
