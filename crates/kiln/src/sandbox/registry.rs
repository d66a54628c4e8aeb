//! The sandbox ↔ state-store glue: every sandbox has a row in `<state dir>/kiln.db`
//! (see [`crate::store`]) that holds its lifecycle state, VMM pid, backend, labels and
//! limits; its folder holds the files (record, sockets, logs, disk layer).
//!
//! A sandbox found with a dead VMM while its row says running or paused is marked
//! failed with the reason (the VMM's boot-error record or the end of its log), and what
//! its VMM left behind (sockets, disk layers) is removed; the logs stay for diagnosis
//! until the sandbox is removed.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Sandbox, State};
use crate::error::{Error, Result};
use crate::state_dir::{store, Dir};
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

/// Removes the sockets and disk layers of a VMM that is gone; keeps logs and records.
pub(crate) fn clean_runtime_files(dir: &Dir) -> bool {
    let mut removed = false;
    let mut names: Vec<String> = RUNTIME_FILES.iter().map(|s| s.to_string()).collect();
    if let Ok(rd) = std::fs::read_dir(&dir.path) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("disk-") && n.ends_with(".img") {
                names.push(n);
            }
        }
    }
    for n in names {
        removed |= std::fs::remove_file(dir.path.join(n)).is_ok();
    }
    removed
}

/// Why a VMM that nobody stopped is gone: its boot-error record, else its log's end.
pub(crate) fn failure_reason(dir: &Dir, pid: u32) -> String {
    // If we are its parent, how it ended is known too.
    let ended = crate::process::reap_if_our_zombie(pid);
    let how = ended.map_or_else(
        || "exited unexpectedly".to_string(),
        |e| format!("exited unexpectedly ({e})"),
    );
    if let Some(rec) = kiln_vmm::boot_error::read(&dir.boot_error()) {
        return format!("boot failed at {}: {}", rec.stage, rec.message);
    }
    let log = std::fs::read_to_string(dir.vmm_log()).unwrap_or_default();
    let tail: Vec<&str> = log
        .lines()
        .filter(|l| !l.contains("Guest-boot-time"))
        .rev()
        .take(3)
        .collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    if tail.is_empty() {
        format!("the VMM (pid {pid}) {how}, without a log line")
    } else {
        format!(
            "the VMM (pid {pid}) {how}; its log ends: {}",
            tail.join(" | ")
        )
    }
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
        Ok(store()?.insert_sandbox(&row)?)
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

    /// Marks the sandbox failed (its VMM is gone although nobody stopped it) and removes
    /// the VMM's sockets and disk layers. Another process may have done it first.
    pub(crate) fn mark_failed(&self) -> Result<()> {
        let reason = failure_reason(&self.dir, self.record.pid);
        let from = [
            State::Creating,
            State::Running,
            State::Paused,
            State::Stopping,
        ];
        match store()?.transition(&self.id, &from, State::Failed, Some(&reason)) {
            Ok(_) | Err(StoreError::InvalidTransition { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        tracing::warn!("sandbox {} failed: {reason}", self.id);
        clean_runtime_files(&self.dir);
        Ok(())
    }

    /// Notes an exec/file/API call, for the idle timeout.
    pub fn touch(&self) {
        if let Ok(s) = store() {
            let _ = s.touch_activity(&self.id, now_ms());
        }
    }
}
