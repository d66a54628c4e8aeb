//! Resource limits the jailed process inherits: rlimits and its cgroup v2 group.

use std::io;
use std::path::Path;

use crate::sys::{check, step, Step};

pub fn set_rlimit(resource: libc::__rlimit_resource_t, value: u64, name: &str) -> Step {
    let lim = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: `lim` is a valid rlimit for the duration of the call.
    let ret = unsafe { libc::setrlimit(resource, &lim) };
    check(ret.into())
        .map(drop)
        .map_err(step(format!("set {name} to {value}")))
}

/// Moves this process (and so everything it forks) into `group`.
pub fn join_cgroup(group: &Path) -> Step {
    let procs = group.join("cgroup.procs");
    std::fs::write(&procs, b"0\n").map_err(step(format!("join the cgroup {}", group.display())))
}

/// Enters the network namespace at `path` (e.g. `/run/netns/NAME`).
pub fn enter_netns(path: &Path) -> Step {
    let what = || format!("enter the network namespace {}", path.display());
    let f = std::fs::File::open(path).map_err(step(what()))?;
    use std::os::fd::AsRawFd;
    // SAFETY: `f` is an open fd for the duration of the call.
    let ret = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    check(ret.into()).map(drop).map_err(step(what()))
}

pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: unshare takes flags only.
    check(unsafe { libc::unshare(flags) }.into()).map(drop)
}
