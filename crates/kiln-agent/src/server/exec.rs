//! The exec operation: start a command, pump its stdin and output, report its exit.
//!
//! Reply sequence: `Started{pid}`, then `Stdout`/`Stderr` chunks (at most
//! [`kiln_proto::CHUNK`] bytes), each stream closed by an empty frame with `FLAG_EOF`, then
//! `Exited` — always after both EOF frames. In PTY mode all output is `Stdout`; the
//! (empty) `Stderr` stream still gets its EOF frame, so every exec ends the same way.
//!
//! One thread per exec runs a `poll` loop (`pump`) with these rules:
//!
//! * **Drain rule.** Once the command has exited, output is read while it flows;
//!   when no byte has arrived for 100 ms (`pump::DRAIN_IDLE`; a background
//!   grandchild holding the pipes), the streams are closed and `Exited` is sent.
//! * **Timeout.** At `timeout_ms` the whole process group is SIGKILLed until it is
//!   empty (see `group`). If the command itself was still running, the reply is
//!   `signal: 9, timed_out: true`. After a kill, output is drained for at most
//!   100 ms once the group is gone (a process that left the group must not hold
//!   the reply). The timeout bounds the group, not only the command: if the
//!   command exits in time (its own status is reported, `timed_out: false`) but
//!   leaves processes in its group — a fork bomb's `b | b &`, a forgotten `&` —
//!   those die at the deadline, whether or not they still hold the pipes. Without
//!   a timeout they live on (e.g. a server started with `&`).
//! * **Control.** `Signal` → `kill(-pgid, signal)`; `Resize` → `TIOCSWINSZ`. Neither
//!   is answered (no `Done`): a reply on a live exec's id would race its output.
//! * **Stdin.** `DataIn` bytes are written as the command reads them; the EOF frame
//!   closes the pipe. In PTY mode EOF is ignored (send `^D` to end a line-mode
//!   read); the terminal stays open until the command exits. If the command closes
//!   its stdin, further input is dropped.
//! * **Connection closed.** The inbox is cancelled: the group is killed as on a
//!   timeout, and the exec ends without a reply.

use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::{Duration, Instant};

use kiln_proto::{ErrorReply, Exec, Reply};

use super::command;
use super::group;
use super::pty;
use super::pump::{Pump, Streams};
use super::routes::Op;
use super::sys::{errno_error, invalid, io_error};
use super::Context;

pub fn run(op: Op, req: Exec, ctx: &Context) {
    let Some(inbox) = op.inbox.clone() else {
        return op.fail(invalid("exec without an inbox (agent bug)", None));
    };
    if req.argv.is_empty() {
        return op.fail(invalid("argv is empty", None));
    }
    let mut cmd = match command::build(&req, &ctx.env()) {
        Ok(c) => c,
        Err(e) => return op.fail(e),
    };
    let pty = match req.pty.map(pty::open).transpose() {
        Ok(p) => p,
        Err(e) => return op.fail(io_error(&e, "open a pseudo-terminal", "/dev/ptmx")),
    };
    let stdio = match &pty {
        Some(p) => pty_stdio(&p.slave),
        None => Ok([
            if req.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            },
            Stdio::piped(),
            Stdio::piped(),
        ]),
    };
    let [stdin, stdout, stderr] = match stdio {
        Ok(s) => s,
        Err(e) => return op.fail(io_error(&e, "set up the terminal", "/dev/ptmx")),
    };
    cmd.stdin(stdin).stdout(stdout).stderr(stderr);

    let spawned = ctx.waiter.spawn(&mut cmd);
    // The Command holds the child's ends (and PTY slave copies): close ours now,
    // or the output would never reach EOF.
    drop(cmd);
    let (mut child, exit) = match spawned {
        Ok(x) => x,
        Err(e) => return op.fail(spawn_error(&e, &req.argv[0])),
    };
    let pid = child.id() as libc::pid_t;
    let started = Instant::now();
    op.reply(&Reply::Started { pid });

    let io = match pty {
        Some(p) => {
            drop(p.slave);
            Streams::pty(p.master)
        }
        None => Streams::pipes(
            child.stdin.take().map(OwnedFd::from),
            child.stdout.take().map(OwnedFd::from),
            child.stderr.take().map(OwnedFd::from),
        ),
    };
    // A deadline past what Instant can hold (the host sent u64::MAX) is none.
    let deadline = req
        .timeout_ms
        .and_then(|ms| started.checked_add(Duration::from_millis(ms)));
    let outcome = Pump::new(&op, &inbox, &exit, pid, io, started, deadline).run();
    if outcome.cancelled {
        return op.abandon();
    }
    op.finish(exited(outcome.status, outcome.timed_out));
    // The command exited in time but may have left processes in its group: the
    // timeout still bounds them (this thread outlives the reply until then).
    if let (Some(deadline), false) = (deadline, outcome.killed) {
        group::kill_at_deadline(pid, deadline);
    }
}

/// Three dups of the PTY slave for the child's stdin, stdout and stderr.
fn pty_stdio(slave: &OwnedFd) -> std::io::Result<[Stdio; 3]> {
    Ok([
        slave.try_clone()?.into(),
        slave.try_clone()?.into(),
        slave.try_clone()?.into(),
    ])
}

fn spawn_error(e: &std::io::Error, argv0: &str) -> ErrorReply {
    match e.raw_os_error() {
        Some(errno) => errno_error(errno, &format!("cannot run {argv0}"), argv0),
        None => io_error(e, &format!("cannot run {argv0}"), argv0),
    }
}

fn exited(status: Option<i32>, timed_out: bool) -> Reply {
    let (code, signal) = match status {
        _ if timed_out => (None, Some(libc::SIGKILL)),
        Some(s) if libc::WIFEXITED(s) => (Some(libc::WEXITSTATUS(s)), None),
        Some(s) if libc::WIFSIGNALED(s) => (None, Some(libc::WTERMSIG(s))),
        // Not reachable (we only wait for exits); report what we have.
        Some(s) => (Some(s), None),
        None => (None, Some(libc::SIGKILL)),
    };
    Reply::Exited {
        code,
        signal,
        timed_out,
    }
}
