//! The Firecracker-API driver shared by the `kiln` and `firecracker` backends: starting
//! a sandbox's VMM as a background process that outlives its creator.
//!
//! The VMM runs in its own session (a Ctrl-C in the creating terminal does not reach it),
//! with stderr appended to `vmm.log` and the guest console in `console.log`. The guest
//! is ready when the VMM logs the boot-time line, which the agent triggers only once it
//! listens on vsock (kiln-vmm), or when the agent answers a ping (any VMM).

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::ffi::OsString;
use std::path::PathBuf;

use serde_json::json;

use super::jail::{self, Input, Needs};
use super::OnSpawn;
use crate::agent::AgentAddr;
use crate::error::{Error, Result};
use crate::fc::FcClient;
use crate::state_dir::Dir;
use crate::vmm::{configure, parse_boot_time, GuestSpec, VmmError};

/// How long a guest may take from InstanceStart to its agent listening. Generous: the
/// nested-virtualisation harness is ~100x slower than hardware.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
const API_TIMEOUT: Duration = Duration::from_secs(20);

/// Which Firecracker-API VMM to run.
#[derive(Debug, Clone)]
pub struct Flavor {
    pub bin: PathBuf,
    /// kiln-vmm: console, boot-error and metrics files on the command line, readiness
    /// from its boot-time line. Otherwise only Firecracker's own flags (`--api-sock`,
    /// `--id`, `--boot-timer`, `--log-path vmm.log`, `--level`); the console is its
    /// stdout, metrics go through `PUT /metrics`, readiness is an agent ping.
    pub kiln: bool,
}

/// Spawns the VMM for `dir`, configures and boots `g`, and waits for the agent.
/// On error the VMM is killed; the caller removes the folder.
pub fn launch(f: &Flavor, dir: &Dir, id: &str, g: &GuestSpec, spawned: OnSpawn) -> Result<Child> {
    // Resolved paths: what the VMM is told is where its jail has them.
    let mut g = g.clone();
    g.kernel = jail::real(&g.kernel);
    g.initrd = g.initrd.as_deref().map(jail::real);
    for d in &mut g.drives {
        d.path = jail::real(&d.path);
    }
    let g = &g;
    let mut inputs = vec![Input {
        path: g.kernel.clone(),
        writable: false,
    }];
    inputs.extend(g.initrd.iter().map(|p| Input {
        path: p.clone(),
        writable: false,
    }));
    inputs.extend(g.drives.iter().map(|d| Input {
        path: d.path.clone(),
        writable: !d.read_only,
    }));
    if !f.kiln {
        // Firecracker opens its --log-path itself: vmm.log is bound into its jail.
        inputs.push(Input {
            path: dir.vmm_log(),
            writable: true,
        });
    }
    let needs = Needs {
        inputs,
        uffd: false,
        memory_bytes: g.memory_mib << 20,
        netns: g.netns.clone(),
    };
    with_vmm(f, dir, id, &needs, spawned, |child, client| {
        if !f.kiln {
            client
                .put("/metrics", &json!({ "metrics_path": dir.metrics() }))
                .map_err(|e| recorded(dir, "config", e.to_string()))?;
        }
        configure(client, g).map_err(|e| recorded(dir, "config", e.to_string()))?;
        client
            .action("InstanceStart")
            .map_err(|e| recorded(dir, "kernel", VmmError::Api(e).to_string()))?;
        if f.kiln {
            wait_ready(child, dir)
        } else {
            wait_agent(child, dir, id)
        }
    })
}

/// `KILN_NO_SECCOMP`: `1` starts kiln-vmm with `--no-seccomp` (debugging only: its
/// threads then run without their filters, and kiln warns on every launch).
pub const NO_SECCOMP_ENV: &str = "KILN_NO_SECCOMP";

fn seccomp_off() -> Result<bool> {
    super::switch::read(NO_SECCOMP_ENV, false, "no seccomp filters, debugging only")
}

/// Spawns the VMM for `dir` (through kiln-jailer when [`jail::enabled`]), tells
/// `spawned` its pid, and runs `setup` once its API answers. On error the VMM is
/// killed; the caller removes the folder.
pub fn with_vmm(
    f: &Flavor,
    dir: &Dir,
    id: &str,
    needs: &Needs,
    spawned: OnSpawn,
    setup: impl FnOnce(&mut Child, &FcClient) -> Result<()>,
) -> Result<Child> {
    let bin = &f.bin;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.vmm_log())
        .map_err(Error::host_io("cannot create", dir.vmm_log()))?;
    let mut args: Vec<OsString> = vec!["--api-sock".into(), dir.api_sock().into()];
    args.extend(["--id".into(), id.into()]);
    let stdout = if f.kiln {
        if seccomp_off()? {
            tracing::warn!(
                "{NO_SECCOMP_ENV}=1: sandbox {id}'s VMM runs WITHOUT seccomp filters; use this only to debug a filter, never for untrusted guests"
            );
            args.push("--no-seccomp".into());
        }
        args.extend(["--console".into(), dir.console_log().into()]);
        args.extend(["--boot-error".into(), dir.boot_error().into()]);
        args.extend(["--metrics".into(), dir.metrics().into()]);
        // Not /dev/null: a jailed VMM would hold an fd to a host node its jail lacks.
        Stdio::from(
            log.try_clone()
                .map_err(Error::host_io("cannot open", dir.vmm_log()))?,
        )
    } else {
        args.push("--boot-timer".into());
        // Firecracker's own log into vmm.log (created above), not its stdout (the console).
        args.extend(["--log-path".into(), dir.vmm_log().into()]);
        args.extend(["--level".into(), "Info".into()]);
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.console_log())
            .map_err(Error::host_io("cannot create", dir.console_log()))?
            .into()
    };
    let jailed = jail::enabled()?;
    let mut cmd = if jailed {
        let mut c = Command::new(crate::paths::jailer_binary());
        c.args(jail::command(dir, id, bin, args, needs)?);
        if !f.kiln {
            // Its jailed user writes vmm.log by path (--log-path), as its own.
            if let Some(uid) = jail::uid_of(dir) {
                std::os::unix::fs::fchown(&log, Some(uid), Some(uid))
                    .map_err(Error::host_io("cannot give", dir.vmm_log()))?;
            }
        }
        c
    } else {
        let mut c = Command::new(bin);
        c.args(args);
        c
    };
    // Unjailed, the VMM itself joins the sandbox's network namespace (the jail does it
    // for a jailed one), before it execs and so before it opens the TAP.
    let netns = match (&needs.netns, jailed) {
        (Some(name), false) => Some(crate::net::netns::open(name).map_err(|e| {
            failed(
                "other",
                e.raw_os_error(),
                format!("cannot open network namespace {name}: {e}"),
            )
        })?),
        _ => None,
    };
    let netns_fd = netns.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
    // stdin: a pipe whose write end is closed at once (EOF), not the host's /dev/null,
    // which is outside a jail.
    cmd.stdin(Stdio::piped()).stdout(stdout).stderr(log);
    // The sandbox's cgroup, made by the caller with its limits (absent where cgroups
    // are off or unavailable): the VMM joins it before it execs.
    let group = dir.group();
    let procs = if group.exists() {
        Some(group.procs()?)
    } else {
        None
    };
    let procs_fd = procs.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
    // SAFETY: setsid, setns and write (in join_in_child) are async-signal-safe; setsid
    // only detaches the child from our session, setns moves it into the sandbox's
    // network namespace, the write moves it into its cgroup.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            if let Some(fd) = netns_fd {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            match procs_fd {
                Some(fd) => crate::cgroup::join_in_child(fd),
                None => Ok(()),
            }
        });
    }
    let mut child = cmd.spawn().map_err(|e| Error::BootFailed {
        stage: "other",
        errno: e.raw_os_error(),
        message: format!(
            "cannot start {}: {e}; build it with `cargo build --release`, or set KILN_VMM \
             (kiln) or KILN_FIRECRACKER (firecracker)",
            bin.display()
        ),
    })?;
    drop(child.stdin.take());
    drop(procs);
    drop(netns);
    let client = FcClient::new(dir.api_sock());
    let ready = spawned(child.id())
        .map(|()| crate::process::pause_point("after-spawn"))
        .and_then(|()| wait_api(&mut child, dir, &client))
        .and_then(|()| setup(&mut child, &client));
    match ready {
        Ok(()) => Ok(child),
        Err(e) => {
            crate::process::kill_if_running(&mut child);
            Err(e)
        }
    }
}

/// Calls `ready` every `every` until it says yes; fails with `stage` if the VMM exits
/// or `limit` passes (`what` names what did not come up).
fn poll(
    child: &mut Child,
    dir: &Dir,
    stage: &'static str,
    (limit, every): (Duration, Duration),
    what: &str,
    mut ready: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !ready()? {
        exited(child, dir, stage)?;
        if Instant::now() > deadline {
            return Err(failed(stage, None, format!("{what} after {limit:?}")));
        }
        std::thread::sleep(every);
    }
    Ok(())
}

fn wait_api(child: &mut Child, dir: &Dir, client: &FcClient) -> Result<()> {
    let timing = (API_TIMEOUT, Duration::from_micros(300));
    poll(
        child,
        dir,
        "other",
        timing,
        "the VMM API did not come up",
        || Ok(client.get("/").is_ok()),
    )
}

/// Polls `vmm.log` for the boot-time line the agent's ready signal produces.
fn wait_ready(child: &mut Child, dir: &Dir) -> Result<()> {
    let mut log =
        File::open(dir.vmm_log()).map_err(Error::host_io("cannot open", dir.vmm_log()))?;
    let mut pending = Vec::new();
    let timing = (READY_TIMEOUT, Duration::from_millis(1));
    poll(
        child,
        dir,
        "agent",
        timing,
        "the guest agent was not ready",
        || {
            let mut buf = Vec::new();
            log.read_to_end(&mut buf)
                .map_err(Error::host_io("cannot read", dir.vmm_log()))?;
            pending.extend(buf);
            while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=nl).collect();
                if parse_boot_time(&String::from_utf8_lossy(&line)).is_some() {
                    return Ok(true);
                }
            }
            Ok(false)
        },
    )
}

/// Polls the agent until it answers (VMMs without kiln-vmm's boot-time line).
pub(crate) fn wait_agent(child: &mut Child, dir: &Dir, id: &str) -> Result<()> {
    let agent = AgentAddr::new(dir.vsock(), id);
    let timing = (READY_TIMEOUT, Duration::from_millis(20));
    poll(
        child,
        dir,
        "agent",
        timing,
        "the guest agent was not ready",
        || Ok(dir.vsock().exists() && agent.ping().is_ok()),
    )
}

/// `Err(BootFailed)` if the VMM has exited, with the end of its log as the message.
pub(crate) fn exited(child: &mut Child, dir: &Dir, stage: &'static str) -> Result<()> {
    let Ok(Some(status)) = child.try_wait() else {
        return Ok(());
    };
    if let Some(why) = dir.group().oom_reason() {
        return Err(failed(stage, None, format!("{why} ({status})")));
    }
    let log = std::fs::read_to_string(dir.vmm_log()).unwrap_or_default();
    if let Some(line) = crate::vmm::seccomp_violation(&log) {
        return Err(failed(
            stage,
            None,
            format!("{line}; the VMM exited ({status})"),
        ));
    }
    let last: Vec<&str> = log.lines().rev().take(5).collect();
    let last: Vec<&str> = last.into_iter().rev().collect();
    let said = if last.is_empty() {
        " without a log line".to_string()
    } else {
        format!(": {}", last.join(" | "))
    };
    Err(recorded(
        dir,
        stage,
        format!("the VMM exited ({status}){said}"),
    ))
}

/// The VMM's `boot-error.json` as the error if it wrote one, else `stage`/`message`.
pub(crate) fn recorded(dir: &Dir, stage: &'static str, message: String) -> Error {
    match kiln_vmm::boot_error::read(&dir.boot_error()) {
        Some(rec) => {
            let stage = kiln_vmm::boot_error::STAGES
                .iter()
                .find(|s| **s == rec.stage)
                .copied()
                .unwrap_or("other");
            failed(stage, rec.errno, rec.message)
        }
        None => failed(stage, None, message),
    }
}

pub(crate) fn failed(stage: &'static str, errno: Option<i32>, message: String) -> Error {
    Error::BootFailed {
        stage,
        errno,
        message,
    }
}
