//! Forking a running sandbox into children that continue from the same instant.
//!
//! The parent is paused just long enough for its VMM to write a snapshot (sparse memory
//! file and a copy of its disk layer) into a private folder, then runs on. Each child
//! maps that memory file copy-on-write (so the children share every page none of them
//! wrote), gets its own copy of the disk layer, its own vsock socket and a new identity.
//! Once every child runs, the folder is deleted: the children keep the unlinked memory
//! file mapped, and nothing is left on disk when the last of them goes.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use kiln_vmm::snapshot::format::{SnapshotState, STATE_FILE};

use super::operation::{fork_dir, remove_tree, Held};
use super::restore::{restore, RestoreArgs, RestoreSource};
use super::Sandbox;
use crate::backend::MemoryBackend;
use crate::error::{Error, Result};
use crate::snapshot::bad;

/// Children make their VMMs at most this many at a time.
const PARALLEL: usize = 8;

/// The result of [`Sandbox::fork_timed`].
pub struct Fork {
    pub children: Vec<Sandbox>,
    /// How long the parent's vCPUs were stopped.
    pub pause_window: Duration,
    /// From the fork call until every child was ready.
    pub total: Duration,
}

impl Sandbox {
    /// `n` children of this sandbox (see the module docs). All or nothing: if one child
    /// fails, the others are removed too. Children are removed when dropped unless
    /// detached with [`Sandbox::set_detach`].
    pub fn fork(&mut self, n: usize) -> Result<Vec<Sandbox>> {
        self.fork_timed(n).map(|f| f.children)
    }

    pub fn fork_timed(&mut self, n: usize) -> Result<Fork> {
        if n == 0 || n > 1000 {
            return Err(Error::InvalidInput(format!(
                "fork of {n} children: use 1 to 1000"
            )));
        }
        // The snapshot the children start from (removed after), and their disk layers.
        let disks = self.snapshot_room() - (self.record.memory_mib << 20);
        crate::state_dir::check_room(
            &format!("a fork of sandbox {}", self.id),
            self.snapshot_room() + disks * n as u64,
        )?;
        let t0 = Instant::now();
        let tmp = fork_dir(self);
        // Recorded before the folder exists: a forker killed from here on leaves a
        // parent the next kiln process resumes and a folder it removes.
        let mut held = Held::begin(self, "fork", Some(&tmp))?;
        std::fs::create_dir(&tmp).map_err(Error::host_io("cannot create", &tmp))?;
        let result = self.fork_from(&tmp, n, &mut held);
        remove_tree(&tmp);
        drop(held);
        let (children, pause_window) = result?;
        Ok(Fork {
            children,
            pause_window,
            total: t0.elapsed(),
        })
    }

    fn fork_from(
        &mut self,
        tmp: &std::path::Path,
        n: usize,
        held: &mut Held,
    ) -> Result<(Vec<Sandbox>, Duration)> {
        let pause_window = self.snapshot_into(tmp, held)?;
        crate::process::pause_point("fork-restoring");
        let state_path = tmp.join(STATE_FILE);
        let state = SnapshotState::load(&state_path).map_err(bad)?;
        let src = RestoreSource::new(&state_path, &state, self.snapshot_meta(&self.id), None);
        let parent = self.id.clone();
        let next = Mutex::new(0usize);
        let done: Mutex<Vec<Result<Sandbox>>> = Mutex::new(Vec::with_capacity(n));
        std::thread::scope(|s| {
            for _ in 0..PARALLEL.min(n) {
                s.spawn(|| loop {
                    {
                        let mut i = next.lock().unwrap_or_else(|p| p.into_inner());
                        if *i >= n {
                            return;
                        }
                        *i += 1;
                    }
                    let child = restore(
                        &src,
                        RestoreArgs {
                            id: None,
                            detach: false,
                            backend: MemoryBackend::File,
                            snapshot: None,
                            parent: Some(parent.clone()),
                            pool: None,
                            cpu_quota: None,
                        },
                    );
                    done.lock().unwrap_or_else(|p| p.into_inner()).push(child);
                });
            }
        });
        let done = done.into_inner().unwrap_or_else(|p| p.into_inner());
        let mut children = Vec::with_capacity(n);
        let mut first_err = None;
        for r in done {
            match r {
                Ok(c) => children.push(c),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            // Dropping the children (not detached) removes them.
            drop(children);
            return Err(e);
        }
        Ok((children, pause_window))
    }

    /// Whether dropping this `Sandbox` leaves it running.
    pub fn set_detach(&mut self, detach: bool) {
        self.detach = detach;
    }
}
