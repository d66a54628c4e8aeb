//! Collecting exit statuses: who calls `waitpid`.
//!
//! As PID 1 every orphan in the guest becomes our child, so zombies must be reaped
//! with `waitpid(-1)` — which would steal the statuses exec threads wait for. One
//! [`Reaper`] thread does all waiting:
//!
//! * it sleeps in `waitid(P_ALL, WEXITED | WNOWAIT)`, which reports an exited child
//!   *without* reaping it;
//! * then takes the spawn gate exclusively and reaps everything with
//!   `waitpid(-1, WNOHANG)`, handing the status of a registered pid to its
//!   [`ExitCell`] and dropping the rest (orphans).
//!
//! Spawners hold the gate shared from before `fork` until the new pid is
//! registered. So a child that exits at once cannot be reaped before it is
//! registered, and std's `Command::spawn`, which itself reaps a child whose `exec`
//! failed, never races the reaper (std asserts that wait succeeds: losing that race
//! would abort PID 1). When there are no children at all (`ECHILD`), the reaper
//! sleeps until the next spawn.
//!
//! Outside PID 1 (tests on the host) [`Waiter::PerPid`] waits for each child with
//! `waitpid(pid)` on a small thread instead. Both hand the status over through an
//! [`ExitCell`], so the exec code is the same.

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::process::{Child, Command};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

use super::sys::{lock, EventFd};
use crate::console::errno;

/// Where an exit status (a raw `wait` status) is delivered; its eventfd becomes
/// readable when it is.
pub struct ExitCell {
    status: Mutex<Option<i32>>,
    ready: EventFd,
}

impl ExitCell {
    fn new() -> io::Result<Arc<ExitCell>> {
        Ok(Arc::new(ExitCell {
            status: Mutex::new(None),
            ready: EventFd::new()?,
        }))
    }

    fn set(&self, status: i32) {
        *lock(&self.status) = Some(status);
        self.ready.notify();
    }

    /// The status, once delivered.
    pub fn get(&self) -> Option<i32> {
        *lock(&self.status)
    }

    pub fn fd(&self) -> RawFd {
        self.ready.raw()
    }
}

/// How exit statuses are collected (chosen once at startup).
#[derive(Clone)]
pub enum Waiter {
    /// `waitpid(pid)` per child on a helper thread (not PID 1).
    PerPid,
    /// The process-wide reaper thread (PID 1, or a child subreaper).
    Reaper(Arc<Reaper>),
}

impl Waiter {
    /// The process-wide reaper, starting its thread on first use.
    pub fn reaper() -> io::Result<Waiter> {
        // A mutex rather than a OnceLock: two reaper threads would steal from
        // each other, so creating one and starting its thread is one step.
        static REAPER: Mutex<Option<Arc<Reaper>>> = Mutex::new(None);
        let mut slot = lock(&REAPER);
        if let Some(r) = &*slot {
            return Ok(Waiter::Reaper(r.clone()));
        }
        let r = Arc::new(Reaper::default());
        let thread_r = r.clone();
        std::thread::Builder::new()
            .name("reaper".into())
            .stack_size(64 * 1024)
            .spawn(move || thread_r.run())?;
        *slot = Some(r.clone());
        Ok(Waiter::Reaper(r))
    }

    /// Spawns `cmd` and returns the child (its pipes) with the cell its status goes to.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<(Child, Arc<ExitCell>)> {
        let cell = ExitCell::new()?;
        match self {
            Waiter::PerPid => {
                let child = cmd.spawn()?;
                let pid = child.id() as libc::pid_t;
                let c = cell.clone();
                let waiter = std::thread::Builder::new()
                    .name(format!("wait-{pid}"))
                    .stack_size(64 * 1024)
                    .spawn(move || c.set(wait_blocking(pid)));
                if let Err(e) = waiter {
                    // Nobody would ever collect it: kill and reap it here.
                    // SAFETY: pid is our unreaped child (its group, after setsid).
                    unsafe { libc::kill(-pid, libc::SIGKILL) };
                    wait_blocking(pid);
                    return Err(e);
                }
                Ok((child, cell))
            }
            Waiter::Reaper(r) => {
                let gate = r.gate.read().unwrap_or_else(|e| e.into_inner());
                let child = cmd.spawn()?;
                lock(&r.cells).insert(child.id() as libc::pid_t, cell.clone());
                drop(gate);
                let mut generation = lock(&r.generation);
                *generation = generation.wrapping_add(1);
                r.spawned.notify_all();
                Ok((child, cell))
            }
        }
    }
}

/// The PID 1 reaper's shared state (see the module docs).
#[derive(Default)]
pub struct Reaper {
    gate: RwLock<()>,
    cells: Mutex<HashMap<libc::pid_t, Arc<ExitCell>>>,
    /// Bumped after every spawn; wakes a reaper that found no children.
    generation: Mutex<u64>,
    spawned: Condvar,
}

impl Reaper {
    fn run(&self) {
        loop {
            let seen = *lock(&self.generation);
            // SAFETY: siginfo_t is plain data; waitid fills it.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: valid idtype/options and a writable siginfo_t.
            let rc =
                unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOWAIT) };
            if rc != 0 {
                match errno() {
                    libc::EINTR => {}
                    libc::ECHILD => {
                        let mut g = lock(&self.generation);
                        while *g == seen {
                            g = self.spawned.wait(g).unwrap_or_else(|e| e.into_inner());
                        }
                    }
                    _ => std::thread::sleep(Duration::from_millis(10)),
                }
                continue;
            }
            let _gate = self.gate.write().unwrap_or_else(|e| e.into_inner());
            self.reap_all();
        }
    }

    fn reap_all(&self) {
        loop {
            let mut status = 0;
            // SAFETY: plain waitpid with a writable status.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            if let Some(cell) = lock(&self.cells).remove(&pid) {
                cell.set(status);
            }
        }
    }
}

/// waitpid(pid) until it succeeds; a raw status (or SIGKILL's if waiting fails).
fn wait_blocking(pid: libc::pid_t) -> i32 {
    loop {
        let mut status = 0;
        // SAFETY: plain waitpid with a writable status.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            return status;
        }
        if rc < 0 && errno() != libc::EINTR {
            return libc::SIGKILL;
        }
    }
}
