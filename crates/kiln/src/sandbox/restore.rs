//! Making a sandbox of a snapshot: a new folder and id, a private copy of the snapshot's
//! disk layer, a VMM that loads the snapshot with the new folder's vsock socket and disk,
//! and then the agent told who it is now (fresh RNG seed, clock, hostname, machine id).
//! The sandbox is ready when that answer comes back.

use std::path::{Path, PathBuf};

use kiln_vmm::snapshot::format::SnapshotState;

use super::network;
use super::Sandbox;
use crate::agent::AgentAddr;
use crate::backend::fc_launch::failed;
use crate::backend::{MemoryBackend, RestoreRequest, VmBackend};
use crate::error::Result;
use crate::net::NetMode;
use crate::snapshot::SnapshotMeta;
use crate::state_dir::{self as state, Dir, Record};

/// What a restore reads.
#[derive(Debug, Clone)]
pub(crate) struct RestoreSource {
    pub state_path: PathBuf,
    pub mem_path: PathBuf,
    /// (drive id, the snapshot's copy of it).
    pub disks: Vec<(String, PathBuf)>,
    pub meta: SnapshotMeta,
    /// For Uffd: the working set to prefetch, and where to record one if there is none.
    pub working_set: Option<PathBuf>,
    /// The network each sandbox restored from it gets (its own, like the snapshot's).
    pub net: NetMode,
}

impl RestoreSource {
    /// The files of the snapshot `state` (loaded from `state_path`).
    pub fn new(
        state_path: &Path,
        state: &SnapshotState,
        meta: SnapshotMeta,
        working_set: Option<PathBuf>,
    ) -> Self {
        let dir = state_path.parent().unwrap_or(Path::new("."));
        // The VM has a NIC: it needs a TAP (snapshots from before `net` was recorded
        // get one with no egress); without a NIC a network would be useless.
        let net = match (state.config.network_interfaces.is_empty(), meta.net) {
            (true, _) => NetMode::None,
            (false, NetMode::None) => NetMode::Deny,
            (false, m) => m,
        };
        RestoreSource {
            net,
            state_path: state_path.to_path_buf(),
            mem_path: SnapshotState::resolve(dir, &state.memory.file),
            disks: state
                .disks
                .iter()
                .map(|d| {
                    (
                        d.drive_id.clone(),
                        SnapshotState::resolve(dir, &d.data.file),
                    )
                })
                .collect(),
            meta,
            working_set,
        }
    }
}

pub(crate) struct RestoreArgs {
    pub id: Option<String>,
    pub detach: bool,
    pub backend: MemoryBackend,
    pub snapshot: Option<String>,
    pub parent: Option<String>,
    pub pool: Option<String>,
    /// The CPU quota (`None`: the snapshot's).
    pub cpu_quota: Option<f64>,
}

/// Restores `src` into a new sandbox. On failure nothing is left behind.
pub(crate) fn restore(src: &RestoreSource, args: RestoreArgs) -> Result<Sandbox> {
    let id = match args.id.clone() {
        Some(id) => {
            state::check_id(&id)?;
            id
        }
        None => state::new_id(),
    };
    let disks: u64 = src
        .disks
        .iter()
        .map(|(_, copy)| state::allocated(copy))
        .sum();
    state::check_room(&format!("restoring sandbox {id}"), disks)?;
    let dir = Dir::of(&state::state_dir()?, &id);
    dir.create(&id)?;
    let m = &src.meta;
    let mut sb = Sandbox {
        agent: AgentAddr::new(dir.vsock(), &id),
        id: id.clone(),
        record: Record {
            id: id.clone(),
            image: m.image.clone(),
            backend: "kiln".into(),
            cpus: m.cpus,
            memory_mib: m.memory_mib,
            created: super::now_secs(),
            creator: std::process::id(),
            creator_start: crate::process::start_time(std::process::id()).unwrap_or(0),
            exec_timeout_ms: m.exec_timeout_ms,
            snapshot: args.snapshot.clone(),
            parent: args.parent.clone(),
            pool: args.pool.clone(),
            cpu_quota: args.cpu_quota.or(m.cpu_quota),
            net: src.net,
            ..Default::default()
        },
        dir,
        child: None,
        // Until it is ready, a failure removes everything through Drop.
        detach: false,
        removed: false,
    };
    if let Err(e) = sb
        .dir
        .save(&sb.record)
        .and_then(|()| sb.register(&Default::default()))
    {
        // Not registered: only the new folder is ours to remove.
        sb.removed = true;
        crate::backend::jail::release(&sb.dir);
        let _ = sb.dir.remove();
        return Err(e);
    }
    let done = start_restored(&mut sb, src, &args);
    if let Err(e) = done {
        sb.mark_create_failed(&e);
        return Err(e);
    }
    sb.detach = args.detach;
    Ok(sb)
}

/// Copies the disks, loads the snapshot into a new VMM and reidentifies the guest.
fn start_restored(sb: &mut Sandbox, src: &RestoreSource, args: &RestoreArgs) -> Result<()> {
    let id = sb.id.clone();
    let mut disk_bytes = 0;
    for (drive, copy) in &src.disks {
        let to = sb.dir.disk(drive);
        kiln_vmm::snapshot::disk::sparse_copy(copy, &to).map_err(crate::error::Error::host_io(
            "cannot copy the snapshot's disk",
            copy,
        ))?;
        disk_bytes += std::fs::metadata(&to).map_or(0, |m| m.len());
    }
    super::registry::make_group(&sb.dir, &sb.record, disk_bytes.div_ceil(1 << 20))?;
    let record_ws = args.backend == MemoryBackend::Uffd;
    let net = network::attach(&sb.dir, src.net)?;
    let req = RestoreRequest {
        state_path: &src.state_path,
        mem_path: &src.mem_path,
        drives: src.disks.iter().map(|(d, _)| d.clone()).collect(),
        memory: args.backend,
        working_set: src.working_set.as_deref(),
        record_working_set: record_ws,
        netns: net.map(|n| n.netns_name().to_string()),
    };
    let mut record = sb.record.clone();
    let child = crate::backend::kiln::KilnVmm.restore(&id, &sb.dir, &req, &mut |pid| {
        super::registry::record_spawned(&sb.dir, &mut record, pid)
    })?;
    sb.record = record;
    sb.child = Some(child);
    crate::process::pause_point("before-running");
    sb.mark_running(sb.record.pid)?;
    reidentify(&sb.agent, &id)?;
    if record_ws {
        sb.keep_working_set(src)?;
    }
    Ok(())
}

/// Tells the agent its new identity. The guest handles the vsock transport-reset event
/// the VMM queued at restore when it first runs, and that reset may also close a
/// connection we opened just before it: such a loss is retried (the op is idempotent).
fn reidentify(agent: &AgentAddr, id: &str) -> Result<()> {
    let mut tries = 0;
    loop {
        match agent.reidentify(id) {
            Ok(r) => {
                if !r.reseeded {
                    return Err(crate::error::Error::AgentUnavailable {
                        id: id.into(),
                        reason: format!("the guest could not reseed its RNG: {:?}", r.errors),
                    });
                }
                return Ok(());
            }
            Err(crate::error::Error::AgentUnavailable { .. }) if tries < 20 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
}

impl Sandbox {
    /// First Uffd restore of a snapshot: runs one command so the working set covers a
    /// first exec, then stores it in the snapshot for the next restores.
    fn keep_working_set(&self, src: &RestoreSource) -> Result<()> {
        let (Some(ws), rec) = (&src.working_set, self.dir.working_set_rec()) else {
            return Ok(());
        };
        if ws.is_file() {
            return Ok(());
        }
        self.exec(&crate::exec::ExecOptions::new(["true"]))?;
        let client = crate::fc::FcClient::new(self.dir.api_sock());
        client
            .request("PUT", "/snapshot/working-set", None)
            .map_err(|e| failed("restore", None, e.to_string()))?;
        if rec.is_file() {
            let _ = std::fs::rename(&rec, ws);
        }
        Ok(())
    }
}

impl super::SandboxBuilder {
    /// `create()` for `from_snapshot(..)`: verifies the snapshot (stamps, or a full hash
    /// of changed files) and restores it.
    pub(super) fn create_from_snapshot(self) -> Result<Sandbox> {
        let name = self.from.clone().unwrap_or_default();
        let snap = crate::snapshot::Snapshot::get(&name)?;
        // A pooled sandbox runs with the snapshot's quota: a new one is restored instead.
        let pooled =
            if self.id.is_none() && self.backend == MemoryBackend::File && self.cpu_quota.is_none()
            {
                Sandbox::pool_claim(&snap.meta.name)?
            } else {
                None
            };
        let mut sb = match pooled {
            Some(mut sb) => {
                sb.detach = self.detach;
                sb
            }
            None => self.restore_snapshot(&snap)?,
        };
        sb.apply_limits(&self.limits())?;
        // A per-command timeout given now replaces the snapshot's.
        if let Some(t) = self.timeout {
            sb.record.exec_timeout_ms = Some(t.as_millis() as u64);
            sb.dir.save(&sb.record)?;
        }
        if !self.env.is_empty() {
            sb.agent
                .set_env(self.env.into_iter().map(|(k, v)| (k, Some(v))).collect())?;
        }
        Ok(sb)
    }

    fn restore_snapshot(&self, snap: &crate::snapshot::Snapshot) -> Result<Sandbox> {
        super::check_quota(self.cpu_quota, snap.meta.cpus)?;
        let (state, _) = snap.verify(kiln_vmm::snapshot::Trust::Stamp)?;
        let src = RestoreSource::new(
            &snap.state_path(),
            &state,
            snap.meta.clone(),
            Some(snap.working_set_path()),
        );
        restore(
            &src,
            RestoreArgs {
                id: self.id.clone(),
                detach: self.detach,
                backend: self.backend,
                snapshot: Some(snap.meta.name.clone()),
                parent: None,
                pool: None,
                cpu_quota: self.cpu_quota,
            },
        )
    }
}
