//! kiln-jailer: runs one program (a VMM) in a jail of its own. In Firecracker's
//! jailer's order: validate the inputs; close every inherited fd but 0/1/2; rlimits;
//! join the sandbox's cgroup; enter its network namespace; new mount, PID, IPC and UTS
//! namespaces; bind mount only what the program needs into the jail root and a tmpfs
//! `/dev` with only the device nodes it needs; pivot_root; drop to the jail's own
//! uid/gid with no groups; `no_new_privs`; exec with only the environment given.
//!
//! The jailer stays as the program's parent outside the PID namespace (the program is
//! its PID 1), forwarding signals and exiting as it exits; see [`supervise`].

pub mod spec;

mod creds;
mod fds;
mod limits;
mod mounts;
mod supervise;
mod sys;
mod userns;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

pub use spec::{Bind, Device, Spec, SpecError};
use sys::{step, Step, StepError};

/// Exit status of a jail that could not be built (the program did not run).
pub const SETUP_FAILED: i32 = 125;

/// Builds the jail and runs the program in it; returns only on failure before the fork.
/// After the fork this process waits and exits as the program does.
pub fn run(spec: &Spec) -> StepError {
    match prepare(spec).and_then(|exec| start(spec, exec)) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

enum Never {}

struct Exec {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

fn cstring(bytes: &[u8], what: &str) -> Step<CString> {
    CString::new(bytes).map_err(|_| {
        step(format!("pass {what}"))(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "it holds a NUL byte",
        ))
    })
}

fn prepare(spec: &Spec) -> Step<Exec> {
    fds::close_inherited().map_err(step("close inherited file descriptors"))?;
    limits::set_rlimit(libc::RLIMIT_NOFILE, spec.nofile, "RLIMIT_NOFILE")?;
    if let Some(f) = spec.fsize {
        limits::set_rlimit(libc::RLIMIT_FSIZE, f, "RLIMIT_FSIZE")?;
    }
    if let Some(c) = &spec.cgroup {
        limits::join_cgroup(c)?;
    }
    if let Some(n) = &spec.netns {
        limits::enter_netns(n)?;
    }
    if spec.userns {
        userns::enter(spec.uid, spec.gid)?;
    }
    let flags = libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    limits::unshare(flags).map_err(step("create the mount, PID, IPC and UTS namespaces"))?;
    let path = spec.exec.as_os_str().as_bytes();
    let mut argv = vec![cstring(path, "the program")?];
    for a in &spec.args {
        argv.push(cstring(a.as_bytes(), "an argument")?);
    }
    let envp = spec
        .env
        .iter()
        .map(|(k, v)| cstring(format!("{k}={v}").as_bytes(), "the environment"))
        .collect::<Step<Vec<_>>>()?;
    Ok(Exec {
        path: cstring(path, "the program")?,
        argv,
        envp,
    })
}

fn start(spec: &Spec, exec: Exec) -> Step<Never> {
    let mut pipe = [0; 2];
    // SAFETY: `pipe` has room for two fds.
    let ret = unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) };
    sys::check(ret.into()).map_err(step("create a pipe"))?;
    supervise::block_signals().map_err(step("block signals"))?;
    // SAFETY: this process is single-threaded here, so the child may allocate.
    let pid = unsafe { libc::fork() };
    sys::check(pid.into()).map_err(step("fork the jailed process"))?;
    if pid == 0 {
        // SAFETY: the child's copy of the write end; only the parent keeps one open.
        unsafe { libc::close(pipe[1]) };
        let e = child(spec, &exec, pipe[0]);
        eprintln!("kiln-jailer: {}: {e}", spec.id);
        // SAFETY: ends the child without running the parent's atexit handlers.
        unsafe { libc::_exit(SETUP_FAILED) };
    }
    // SAFETY: the parent does not read; its write end stays open until it exits.
    unsafe { libc::close(pipe[0]) };
    supervise::exit_like(supervise::wait(pid))
}

/// In the new namespaces: the filesystem, the credentials, then exec. Returns only on
/// failure.
fn child(spec: &Spec, exec: &Exec, parent_alive: libc::c_int) -> StepError {
    let steps = || -> Step {
        mounts::enter(spec)?;
        let host = spec.id.as_bytes();
        // SAFETY: `host` is valid for its length.
        let ret = unsafe { libc::sethostname(host.as_ptr().cast(), host.len()) };
        sys::check(ret.into()).map_err(step("set the hostname"))?;
        creds::drop_to(spec.uid, spec.gid, !spec.userns)?;
        creds::die_with_parent()?;
        let mut p = libc::pollfd {
            fd: parent_alive,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        unsafe { libc::poll(&mut p, 1, 0) };
        if p.revents & libc::POLLHUP != 0 {
            return Err(step("start: the jailer exited")(std::io::Error::other(
                "gone",
            )));
        }
        creds::no_new_privs()?;
        supervise::unblock_all().map_err(step("unblock signals"))?;
        Ok(())
    };
    if let Err(e) = steps() {
        return e;
    }
    let mut argv: Vec<*const libc::c_char> = exec.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = exec.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: NUL-terminated strings in null-terminated arrays, alive across the call.
    unsafe { libc::execve(exec.path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    step(format!("run {} inside the jail", spec.exec.display()))(std::io::Error::last_os_error())
}
