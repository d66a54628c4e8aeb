//! Pause, resume and named snapshots of a sandbox, through its VMM's API.

use std::path::Path;
use std::time::{Duration, Instant};

use super::lifecycle::State;
use super::operation::{remove_tree, Held};
use super::Sandbox;
use crate::error::{Error, Result};
use crate::snapshot::{bad, Snapshot, SnapshotMeta};

impl Sandbox {
    fn require(&mut self, want: &[State], to: State) -> Result<State> {
        let from = self.state();
        if want.contains(&from) {
            Ok(from)
        } else {
            Err(Error::InvalidTransition {
                id: self.id.clone(),
                from,
                to,
            })
        }
    }

    fn set_vm_state(&mut self, paused: bool) -> Result<()> {
        let vm = self.vm();
        let (from, to) = if paused {
            self.backend().pause(&vm)?;
            (State::Running, State::Paused)
        } else {
            self.backend().resume(&vm)?;
            (State::Paused, State::Running)
        };
        crate::state_dir::store()?.transition(&self.id, &[from], to, None)?;
        Ok(())
    }

    /// Stops the vCPUs; memory and devices stay as they are.
    pub fn pause(&mut self) -> Result<()> {
        self.require(&[State::Running], State::Paused)?;
        self.set_vm_state(true)
    }

    pub fn resume(&mut self) -> Result<()> {
        self.require(&[State::Paused], State::Running)?;
        self.set_vm_state(false)
    }

    /// Writes the VMM's snapshot (with a copy of the disk layer) into `dir` while the
    /// sandbox is paused; resumes it after unless it was paused already. Returns how
    /// long the guest was stopped. `held` records the pause before it happens, so a
    /// process killed meanwhile leaves a sandbox the next kiln process resumes.
    pub(super) fn snapshot_into(&mut self, dir: &Path, held: &mut Held) -> Result<Duration> {
        if !self.backend().capabilities().snapshots {
            return Err(crate::backend::unsupported(
                self.backend_name(),
                "snapshots",
                &self.id,
            ));
        }
        let from = self.require(&[State::Running, State::Paused], State::Paused)?;
        let t0 = Instant::now();
        if from == State::Running {
            held.set_paused(true)?;
            self.set_vm_state(true)?;
        }
        crate::process::pause_point("snapshot-paused");
        let made = self.backend().snapshot(&self.vm(), dir);
        crate::process::pause_point("snapshot-written");
        if from == State::Running {
            self.set_vm_state(false)?;
            held.set_paused(false)?;
        }
        made?;
        Ok(t0.elapsed())
    }

    pub(super) fn snapshot_meta(&self, name: &str) -> SnapshotMeta {
        SnapshotMeta {
            name: name.into(),
            source: self.id.clone(),
            image: self.record.image.clone(),
            cpus: self.record.cpus,
            memory_mib: self.record.memory_mib,
            exec_timeout_ms: self.record.exec_timeout_ms,
            cpu_quota: self.record.cpu_quota,
            net: self.record.net,
            created: super::now_secs(),
        }
    }

    /// Bytes a snapshot of this sandbox writes at most: its memory and its disk layers.
    pub(super) fn snapshot_room(&self) -> u64 {
        let mut bytes = self.record.memory_mib << 20;
        if let Ok(rd) = std::fs::read_dir(&self.dir.path) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n == "scratch.ext4" || (n.starts_with("disk-") && n.ends_with(".img")) {
                    bytes += crate::state_dir::allocated(&e.path());
                }
            }
        }
        bytes
    }

    /// Takes a named snapshot (a generated name if None) and seals it (SHA-256 of memory
    /// and disk, computed after the sandbox runs again). The sandbox keeps running.
    pub fn snapshot(&mut self, name: Option<&str>) -> Result<Snapshot> {
        self.snapshot_timed(name).map(|(s, _)| s)
    }

    /// [`Sandbox::snapshot`], also returning how long the guest was paused and how long
    /// sealing took.
    pub fn snapshot_timed(&mut self, name: Option<&str>) -> Result<(Snapshot, [Duration; 2])> {
        let name = name.map_or_else(
            || format!("snap-{}", &crate::state_dir::new_id()[3..]),
            String::from,
        );
        crate::state_dir::check_room(
            &format!("a snapshot of sandbox {}", self.id),
            self.snapshot_room(),
        )?;
        // Written under a temporary name (which names this process) and renamed into
        // place once sealed: a taker killed midway leaves no half snapshot under `name`.
        let dir = Snapshot::reserve(&name)?;
        let made = (|| {
            let mut held = Held::begin(self, "snapshot", Some(&dir))?;
            let paused = self.snapshot_into(&dir, &mut held)?;
            Snapshot::write_meta(&dir, &self.snapshot_meta(&name))?;
            let t = Instant::now();
            kiln_vmm::snapshot::seal(&dir.join(kiln_vmm::snapshot::format::STATE_FILE))
                .map_err(bad)?;
            Snapshot::commit(&dir, &name)?;
            drop(held);
            let snap = Snapshot::get(&name)?;
            snap.record()?;
            Ok((snap, [paused, t.elapsed()]))
        })();
        if made.is_err() {
            remove_tree(&dir);
        }
        made
    }
}
