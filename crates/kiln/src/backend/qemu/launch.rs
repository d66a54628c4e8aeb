//! Starting a QEMU sandbox: QEMU in its own session, its QMP socket, the relay, the
//! agent's first answer. On failure everything started is killed and the error
//! names the stage: `kernel` when the console shows a panic, `agent` when the guest
//! booted but its agent never answered, `other` when QEMU could not run at all.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{accel, cmdline, files, qmp, relay_proc};
use crate::agent::AgentAddr;
use crate::backend::fc_launch::failed;
use crate::backend::OnSpawn;
use crate::error::{Error, Result};
use crate::state_dir::Dir;
use crate::vmm::GuestSpec;

/// From QEMU's start to the agent's first answer (the nested harness is slow, and
/// TCG slower still).
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// From QEMU's start to its QMP socket answering.
const QMP_TIMEOUT: Duration = Duration::from_secs(20);

/// `$KILN_QEMU`, else `qemu-system-x86_64` on PATH.
pub fn binary() -> PathBuf {
    std::env::var_os("KILN_QEMU")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("qemu-system-x86_64"))
}

/// Boots `spec` for sandbox `id` in `dir`; returns QEMU once the agent answers.
pub fn start(id: &str, dir: &Dir, spec: &GuestSpec, spawned: OnSpawn) -> Result<Child> {
    let accel = accel::choose()?;
    let bin = binary();
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.vmm_log())
        .map_err(Error::host_io("cannot create", dir.vmm_log()))?;
    let mut cmd = Command::new(&bin);
    cmd.args(cmdline::args(dir, spec, accel))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    crate::process::in_own_session(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| {
        failed(
            "other",
            e.raw_os_error(),
            format!(
                "cannot start {}: {e}; install QEMU (Debian: apt-get install qemu-system-x86) \
                 or set KILN_QEMU to a qemu-system-x86_64 binary",
                bin.display()
            ),
        )
    })?;
    let ready = spawned(child.id())
        .and_then(|()| wait_qmp(&mut child, dir))
        .and_then(|()| relay_proc::spawn(dir))
        .and_then(|_| wait_agent(&mut child, dir, id));
    match ready {
        Ok(()) => Ok(child),
        Err(e) => {
            crate::process::kill_if_running(&mut child);
            relay_proc::reap(dir);
            Err(e)
        }
    }
}

fn wait_qmp(child: &mut Child, dir: &Dir) -> Result<()> {
    let deadline = Instant::now() + QMP_TIMEOUT;
    let sock = files::qmp_sock(dir);
    loop {
        if sock.exists() && qmp::execute(&sock, "query-status", None, QMP_TIMEOUT).is_ok() {
            return Ok(());
        }
        exited(child, dir)?;
        if Instant::now() > deadline {
            return Err(failed(
                "other",
                None,
                format!("QEMU's QMP socket did not answer in {QMP_TIMEOUT:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wait_agent(child: &mut Child, dir: &Dir, id: &str) -> Result<()> {
    let agent = AgentAddr::new(dir.vsock(), id);
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if agent.ping().is_ok() {
            return Ok(());
        }
        exited(child, dir)?;
        if Instant::now() > deadline {
            return Err(failed(
                stage(dir),
                None,
                format!(
                    "the guest agent did not answer in {READY_TIMEOUT:?}; console: {}",
                    tail(&dir.console_log(), 3)
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `Err(BootFailed)` if QEMU has exited: the end of its log and of the console.
fn exited(child: &mut Child, dir: &Dir) -> Result<()> {
    let Ok(Some(status)) = child.try_wait() else {
        return Ok(());
    };
    Err(failed(
        stage(dir),
        None,
        format!(
            "QEMU exited ({status}): {}; console: {}",
            tail(&dir.vmm_log(), 5),
            tail(&dir.console_log(), 3)
        ),
    ))
}

/// `kernel` when the console shows a panic, else `agent`.
fn stage(dir: &Dir) -> &'static str {
    let console = std::fs::read(dir.console_log()).unwrap_or_default();
    if String::from_utf8_lossy(&console).contains("Kernel panic") {
        "kernel"
    } else {
        "agent"
    }
}

/// The last `n` lines of a log, joined by ` | `.
fn tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let last: Vec<&str> = text.lines().rev().take(n).collect();
    let last: Vec<&str> = last.into_iter().rev().collect();
    if last.is_empty() {
        "(empty)".into()
    } else {
        last.join(" | ")
    }
}
