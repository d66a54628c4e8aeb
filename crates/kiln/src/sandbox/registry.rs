//! The sandbox ↔ state-store glue: every sandbox has a row in `<state dir>/kiln.db`
//! (see [`crate::store`]) that holds its lifecycle state, VMM pid, backend, labels and
//! limits; its folder holds the files (record, sockets, logs, disk layer).
//!
//! A VMM's pid and start time are recorded as soon as it is spawned. A sandbox found
//! with a dead VMM while its row says running or paused is marked stopped when the guest
//! powered off or rebooted by itself (a clean exit), else failed with the reason (the
//! VMM's boot-error record or the end of its log), and what its VMM left behind
//! (sockets, disk layers) is removed; the logs stay for diagnosis until the sandbox is
//! removed.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Sandbox, State};
use crate::backend::{vm_alive, vmms_of};
use crate::error::{Error, Result};
use crate::state_dir::{store, Dir, Record};
use crate::store::{now_ms, SandboxRow, StoreError};

/// Labels and limits a new sandbox is registered with.
#[derive(Debug, Clone, Default)]
pub(crate) struct Limits {
    pub metadata: BTreeMap<String, String>,
    pub idle_timeout: Option<Duration>,
    pub max_lifetime: Option<Duration>,
}

fn ms(d: Option<Duration>) -> Option<u64> {
    d.map(|d| d.as_millis() as u64)
}

/// Files a VMM leaves that mean nothing once it is gone: sockets and disk layers.
const RUNTIME_FILES: [&str; 6] = [
    "api.sock",
    "v.sock",
    "agent.port",
    "qmp.sock",
    "scratch.ext4",
    "working-set.rec",
];

/// Removes the sockets and disk layers of a VMM that is gone (in the sandbox folder
/// and its `vm/` folder), gives `vm/` back from the jail's uid; keeps logs and records.
pub(crate) fn clean_runtime_files(dir: &Dir) -> bool {
    let mut removed = false;
    for folder in [dir.path.clone(), dir.vm()] {
        let mut names: Vec<String> = RUNTIME_FILES.iter().map(|s| s.to_string()).collect();
        if let Ok(rd) = std::fs::read_dir(&folder) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with("disk-") && n.ends_with(".img") {
                    names.push(n);
                }
            }
        }
        for n in names {
            removed |= std::fs::remove_file(folder.join(n)).is_ok();
        }
    }
    crate::backend::jail::release(dir);
    removed | release_vm_resources(dir)
}

/// What a sandbox holds on the host only while its VMM runs, given back once the VMM is
/// gone: its cgroup and its network (namespace, veth, TAP, nftables tables, conntrack
/// entries, pool lease). Whether there was any.
pub(crate) fn release_vm_resources(dir: &Dir) -> bool {
    remove_group(dir) | super::network::detach(dir)
}

/// Removes the sandbox's cgroup (killing whatever still runs in it); whether there was
/// one. A failure is logged: the next reconcile tries again.
pub(crate) fn remove_group(dir: &Dir) -> bool {
    let g = dir.group();
    if !g.path().exists() {
        return false;
    }
    if let Err(e) = g.remove() {
        tracing::warn!("{e}");
    }
    true
}

/// Creates the sandbox's cgroup with limits from `record` ([`crate::cgroup`]);
/// `disk_mib` is the size of its writable disks. `None` where cgroups are off or
/// unavailable.
pub(crate) fn make_group(
    dir: &Dir,
    record: &Record,
    disk_mib: u64,
) -> Result<Option<crate::cgroup::Group>> {
    let limits = crate::cgroup::Limits {
        cpus: record.cpus,
        memory_mib: record.memory_mib,
        cpu_quota: record.cpu_quota,
        file_allowance_mib: crate::cgroup::file_allowance_mib(
            &dir.path,
            record.memory_mib,
            disk_mib,
        ),
    };
    let state = dir.path.parent().unwrap_or(std::path::Path::new("/"));
    Ok(crate::cgroup::Group::create(state, &record.id, &limits)?)
}

/// How a VMM that nobody stopped ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ended {
    /// A clean exit: the guest powered off or rebooted by itself (a normal stop).
    Guest(String),
    /// Anything else, with the reason.
    Failed(String),
}

/// The line kiln-vmm writes to its log (stderr, `vmm.log`) as it exits because the guest
/// powered off or rebooted: the durable marker when this process is not its parent.
fn clean_exit_line(line: &str) -> Option<&'static str> {
    match line.trim() {
        "kiln-vmm: the guest powered off" => Some("the guest powered off"),
        "kiln-vmm: the guest rebooted" => Some("the guest rebooted"),
        _ => None,
    }
}

/// How the VMM `pid` of `dir`, now gone, ended: its exit status when this process is its
/// parent (0 is a guest power-off or reboot, see docs/VMM.md), else the last line of its
/// log; a failure's reason is its boot-error record or its log's end.
pub(crate) fn how_it_ended(dir: &Dir, pid: u32) -> Ended {
    // If we are its parent, how it ended is known too.
    let ended = crate::process::reap_if_our_zombie(pid);
    let log = std::fs::read_to_string(dir.vmm_log()).unwrap_or_default();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| !l.contains("Guest-boot-time"))
        .collect();
    let marker = lines.last().and_then(|l| clean_exit_line(l));
    match (ended.as_deref(), marker) {
        (Some("exit status 0"), m) => {
            let why = m.unwrap_or("the guest powered off or rebooted");
            return Ended::Guest(why.to_string());
        }
        (None, Some(m)) => return Ended::Guest(m.to_string()),
        _ => {}
    }
    if let Some(line) = crate::vmm::seccomp_violation(&log) {
        let how = ended.map_or(String::new(), |e| format!(", {e}"));
        return Ended::Failed(format!("{line}; the VMM (pid {pid}) was stopped{how}"));
    }
    if let Some(why) = dir.group().oom_reason() {
        let how = ended.map_or(String::new(), |e| format!(" ({e})"));
        return Ended::Failed(format!("{why}{how}; pid {pid}"));
    }
    // Killed by the kernel for memory: the kernel log says so (logged after its start).
    let since = dir.load("").map(|r| r.vmm_start).unwrap_or(0);
    if let Some(oom) = crate::kmsg::find_oom_kill(pid, crate::kmsg::ticks_to_us(since)) {
        return Ended::Failed(format!("the VMM (pid {pid}) was {}", oom.describe()));
    }
    let how = ended.map_or_else(
        || "exited unexpectedly".to_string(),
        |e| format!("exited unexpectedly ({e})"),
    );
    if let Some(rec) = kiln_vmm::boot_error::read(&dir.boot_error()) {
        return Ended::Failed(format!("boot failed at {}: {}", rec.stage, rec.message));
    }
    let tail: Vec<&str> = lines.iter().rev().take(3).rev().copied().collect();
    Ended::Failed(if tail.is_empty() {
        format!("the VMM (pid {pid}) {how}, without a log line")
    } else {
        format!(
            "the VMM (pid {pid}) {how}; its log ends: {}",
            tail.join(" | ")
        )
    })
}

/// Records a VMM right after it is spawned, before it is configured: its pid and start
/// time go into `record`, `sandbox.json` and the store, so whoever finds the sandbox
/// later (reconcile, `kiln rm`) can find and end it even if its creator was killed.
pub(crate) fn record_spawned(dir: &Dir, record: &mut Record, pid: u32) -> Result<()> {
    record.pid = pid;
    record.vmm_start = crate::process::start_time(pid).unwrap_or(0);
    dir.save(record)?;
    store()?.set_vmm(&record.id, pid, record.vmm_start)?;
    Ok(())
}

/// Kills every VMM of `dir` that still runs: `pid` (checked to be this folder's) and any
/// process whose command line names its API or QMP socket (one spawned but not yet
/// recorded). Waits until they are gone and reaps the ones that are our children.
/// Returns whether there was one.
pub(crate) fn kill_vmms(dir: &Dir, pid: u32) -> bool {
    let mut pids = vmms_of(dir);
    if vm_alive(pid, dir) && !pids.contains(&pid) {
        pids.push(pid);
    }
    for &p in &pids {
        if let Ok(p) = i32::try_from(p) {
            // SAFETY: kill has no memory effects; the pid was checked to be this VMM.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for &p in &pids {
        while vm_alive(p, dir) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = crate::process::reap_if_our_zombie(p);
    }
    !pids.is_empty()
}

impl Sandbox {
    /// Inserts this sandbox's row (state `creating`).
    pub(crate) fn register(&self, limits: &Limits) -> Result<()> {
        let mut row = SandboxRow::new(&self.id, now_ms());
        row.backend = self.backend_name().to_string();
        row.image = Some(self.record.image.clone());
        row.cpus = Some(u32::from(self.record.cpus));
        row.memory_mib = Some(self.record.memory_mib);
        row.metadata = limits.metadata.clone();
        row.idle_timeout_ms = ms(limits.idle_timeout);
        row.max_lifetime_ms = ms(limits.max_lifetime);
        row.snapshot = self.record.snapshot.clone();
        row.parent = self.record.parent.clone();
        row.cpu_quota = self.record.cpu_quota;
        let limit = crate::memory::limit()?;
        Ok(store()?.insert_sandbox_within(&row, Some(&limit))?)
    }

    /// Replaces the row's labels and limits.
    pub(crate) fn apply_limits(&self, l: &Limits) -> Result<()> {
        let (idle, life) = (ms(l.idle_timeout), ms(l.max_lifetime));
        Ok(store()?.set_limits(&self.id, &l.metadata, idle, life)?)
    }

    /// Records the VMM's pid and moves `creating → running`.
    pub(crate) fn mark_running(&self, pid: u32) -> Result<()> {
        let s = store()?;
        s.set_pid(&self.id, Some(pid))?;
        s.transition(&self.id, &[State::Creating], State::Running, None)?;
        Ok(())
    }

    /// A failed creation: the row goes to `failed` with the reason (kept in the events
    /// when the row is deleted).
    pub(crate) fn mark_create_failed(&self, e: &Error) {
        if let Ok(s) = store() {
            let _ = s.transition(
                &self.id,
                &[State::Creating],
                State::Failed,
                Some(&e.to_string()),
            );
        }
    }

    /// The row as the store has it now.
    pub fn row(&self) -> Result<SandboxRow> {
        Ok(store()?.get_sandbox(&self.id)?)
    }

    /// Its VMM is gone although nobody stopped it: a guest that powered off or rebooted
    /// by itself makes it `stopped` with that reason; anything else `failed` with the
    /// reason, and the VMM's sockets and disk layers are removed. Another process may
    /// have done it first. Returns the state it is in now.
    pub(crate) fn mark_exited(&self) -> Result<State> {
        let s = store()?;
        let from = [State::Running, State::Paused];
        match how_it_ended(&self.dir, self.record.pid) {
            Ended::Guest(why) => {
                match s.stopped_by_guest(&self.id, &from, &why) {
                    Ok(_) => tracing::info!("sandbox {} stopped: {why}", self.id),
                    Err(StoreError::InvalidTransition { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
                release_vm_resources(&self.dir);
            }
            Ended::Failed(why) => {
                let from = [from[0], from[1], State::Creating, State::Stopping];
                match s.transition(&self.id, &from, State::Failed, Some(&why)) {
                    Ok(_) => tracing::warn!("sandbox {} failed: {why}", self.id),
                    Err(StoreError::InvalidTransition { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
                clean_runtime_files(&self.dir);
            }
        }
        Ok(s.get_sandbox(&self.id)?.state)
    }

    /// Notes an exec/file/API call, for the idle timeout.
    pub fn touch(&self) {
        if let Ok(s) = store() {
            let _ = s.touch_activity(&self.id, now_ms());
        }
    }
}
