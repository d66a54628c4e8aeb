//! What `kiln ls`, `kiln inspect` and the REST API show about a sandbox, and its events.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::{Sandbox, State};
use crate::backend::{Capabilities, GuestChannel};
use crate::error::Result;
use crate::state_dir::store;
use crate::store::Event;
use crate::vmm_metrics::DiskErrors;

/// A sandbox as a caller sees it.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxInfo {
    pub id: String,
    pub state: State,
    pub backend: String,
    pub image: String,
    pub cpus: u8,
    pub memory_mib: u64,
    /// CPUs of time per second its VMM may use (`None`: no quota).
    pub cpu_quota: Option<f64>,
    /// Its VMM's cgroup while it runs: path, limits and use (`None`: not running, or
    /// cgroups are off or unavailable).
    pub cgroup: Option<crate::cgroup::Stats>,
    /// The VMM's pid while it runs.
    pub pid: Option<u32>,
    pub created_ms: i64,
    pub metadata: BTreeMap<String, String>,
    pub idle_timeout_ms: Option<u64>,
    pub max_lifetime_ms: Option<u64>,
    pub last_activity_ms: Option<i64>,
    /// Why it failed (state `failed`).
    pub failure: Option<String>,
    /// Why it stopped (state `stopped`): `the guest powered off`, `the guest rebooted`,
    /// or `stopped by kiln (<step>)`.
    pub stop_reason: Option<String>,
    pub snapshot: Option<String>,
    pub parent: Option<String>,
    /// Spawn → agent ready, for booted sandboxes.
    pub boot_ms: Option<u64>,
    /// Host I/O errors of its disks, as its VMM counted them (read from its metrics
    /// file now; `count` 0: none); None where the VMM reports no such counters.
    pub disk_errors: Option<DiskErrors>,
    /// Published ports as bound, `127.0.0.1:8080:80/tcp` (`kiln create -p`).
    pub ports: Vec<String>,
    pub dir: PathBuf,
    pub capabilities: Capabilities,
    pub guest_channel: GuestChannel,
    /// Its network: mode, guest address and gateway, namespace, host-side addresses.
    pub network: super::NetworkInfo,
}

impl Sandbox {
    /// The sandbox's record, row and current state in one serialisable value.
    pub fn info(&mut self) -> SandboxInfo {
        let state = self.state();
        let row = self.row().ok();
        let r = &self.record;
        SandboxInfo {
            id: self.id.clone(),
            state,
            backend: self.backend_name().to_string(),
            image: r.image.clone(),
            cpus: r.cpus,
            memory_mib: r.memory_mib,
            cpu_quota: r.cpu_quota,
            cgroup: matches!(state, State::Running | State::Paused)
                .then(|| self.dir.group().stats())
                .flatten(),
            pid: matches!(state, State::Running | State::Paused).then_some(r.pid),
            created_ms: row
                .as_ref()
                .map_or(r.created as i64 * 1000, |w| w.created_ms),
            metadata: row.as_ref().map(|w| w.metadata.clone()).unwrap_or_default(),
            idle_timeout_ms: row.as_ref().and_then(|w| w.idle_timeout_ms),
            max_lifetime_ms: row.as_ref().and_then(|w| w.max_lifetime_ms),
            last_activity_ms: row.as_ref().and_then(|w| w.last_activity_ms),
            failure: row.as_ref().and_then(|w| w.failure.clone()),
            stop_reason: row
                .as_ref()
                .filter(|w| w.state == State::Stopped)
                .and_then(|w| w.stop_reason.clone()),
            snapshot: r.snapshot.clone(),
            parent: r.parent.clone(),
            boot_ms: r.boot_ms,
            disk_errors: super::disk_errors::read_and_note(&self.id, &self.dir),
            ports: store()
                .and_then(|s| Ok(s.ports(&self.id)?))
                .unwrap_or_default(),
            dir: self.dir.path.clone(),
            capabilities: self.backend().capabilities(),
            guest_channel: self.backend().guest_channel_info(&self.vm()),
            network: super::network::info(&self.dir, r.net),
        }
    }
}

/// Up to `limit` events after `seq` (0: from the start), oldest first.
pub fn events_since(seq: i64, limit: u32) -> Result<Vec<Event>> {
    Ok(store()?.events_since(seq, limit)?)
}

/// The last `limit` events of sandbox `id`, oldest first.
pub fn events_for(id: &str, limit: u32) -> Result<Vec<Event>> {
    Ok(store()?.events_for(id, limit)?)
}
