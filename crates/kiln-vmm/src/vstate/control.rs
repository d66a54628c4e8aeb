//! Pausing and resuming vCPU threads.
//!
//! A pause sets the wanted state and kicks every vCPU thread with [`kick_signal`]. The
//! signal handler sets `immediate_exit` in that thread's `kvm_run` page, so the vCPU
//! leaves `KVM_RUN` (or never enters it) with EINTR even if the signal lands between the
//! thread's check of the wanted state and its next `KVM_RUN`: no kick is ever lost. The
//! vCPU then completes any pending port/MMIO operation (one more `KVM_RUN` with
//! `immediate_exit` set, as the KVM API asks before saving state), captures its complete
//! state, reports itself parked and waits. Resume wakes the parked threads.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kvm_bindings::kvm_run;

use super::vcpu_state::VcpuState;

thread_local! {
    /// The calling vCPU thread's `kvm_run` page (null on every other thread).
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// The real-time signal used to kick vCPU threads out of `KVM_RUN`.
pub fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int) {
    KVM_RUN.with(|p| {
        let run = p.get();
        if !run.is_null() {
            // SAFETY: the pointer is this thread's own kvm_run mapping, registered by
            // `register_kvm_run` and valid for as long as the thread's VcpuFd lives (the
            // thread clears it before the fd is dropped). A volatile byte store is
            // async-signal-safe.
            unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
        }
    });
}

/// Installs the kick handler (process-wide, idempotent). No SA_RESTART: KVM_RUN must
/// return EINTR.
pub fn install_kick_handler() -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction with a valid handler and an empty mask is well formed.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_kick as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(kick_signal(), &sa, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Registers (or clears, with null) this thread's kvm_run page for the kick handler.
pub fn register_kvm_run(run: *mut kvm_run) {
    KVM_RUN.with(|p| p.set(run));
}

/// A vCPU that parked but could not capture its state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot capture the state of vCPU {vcpu}: {source}")]
pub struct CaptureError {
    pub vcpu: usize,
    /// What KVM refused.
    pub source: super::vcpu_state::VcpuStateError,
}

/// Why a pause did not yield every vCPU's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PauseError {
    #[error("the vCPUs did not pause within {} s; the VM keeps running", PAUSE_TIMEOUT.as_secs())]
    Timeout,
    #[error(transparent)]
    Capture(#[from] CaptureError),
}

/// What the VMM wants the vCPUs to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Run,
    Pause,
}

struct Shared {
    want: Want,
    /// Per vCPU: parked, with the state it captured when it parked.
    parked: Vec<Option<Result<VcpuState, CaptureError>>>,
    threads: Vec<Option<libc::pthread_t>>,
}

/// Shared between the API (pause/resume/snapshot) and the vCPU threads.
pub struct VcpuControl {
    shared: Mutex<Shared>,
    /// `shared.want == Pause`, readable without the lock: the vCPU run loop checks it
    /// before every KVM_RUN. Written only with the lock held.
    pausing: AtomicBool,
    changed: Condvar,
}

/// How long a pause waits for every vCPU to park.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);

impl VcpuControl {
    /// `count` vCPUs, which start in `initial` state (a restored VM starts paused).
    pub fn new(count: usize, initial: Want) -> Self {
        Self {
            shared: Mutex::new(Shared {
                want: initial,
                parked: (0..count).map(|_| None).collect(),
                threads: vec![None; count],
            }),
            pausing: AtomicBool::new(initial == Want::Pause),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn want(&self) -> Want {
        if self.pausing.load(Ordering::SeqCst) {
            Want::Pause
        } else {
            Want::Run
        }
    }

    fn set_want(&self, s: &mut Shared, want: Want) {
        s.want = want;
        self.pausing.store(want == Want::Pause, Ordering::SeqCst);
    }

    /// Called by each vCPU thread before its first KVM_RUN.
    pub fn register_thread(&self, index: usize) {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        if let Some(slot) = self.lock().threads.get_mut(index) {
            *slot = Some(me);
        }
    }

    /// Parks vCPU `index` with its captured state (or why it has none) until the VMM
    /// wants it to run.
    pub fn park(&self, index: usize, state: Result<VcpuState, CaptureError>) {
        let mut s = self.lock();
        if let Some(slot) = s.parked.get_mut(index) {
            *slot = Some(state);
        }
        self.changed.notify_all();
        while s.want == Want::Pause {
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        if let Some(slot) = s.parked.get_mut(index) {
            *slot = None;
        }
        self.changed.notify_all();
    }

    /// Pauses every vCPU and returns their states (in vCPU order) once all are parked.
    pub fn pause(&self) -> Result<Vec<VcpuState>, PauseError> {
        let mut s = self.lock();
        self.set_want(&mut s, Want::Pause);
        for t in s.threads.iter().flatten() {
            // SAFETY: the thread ids belong to live vCPU threads of this process (they
            // run until the process exits); the signal has a handler installed.
            unsafe { libc::pthread_kill(*t, kick_signal()) };
        }
        let deadline = Instant::now() + PAUSE_TIMEOUT;
        while s.parked.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.set_want(&mut s, Want::Run);
                self.changed.notify_all();
                return Err(PauseError::Timeout);
            }
            s = self
                .changed
                .wait_timeout(s, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        s.parked
            .iter()
            .map(|p| p.clone().expect("checked above").map_err(PauseError::from))
            .collect()
    }

    /// The states captured at the current pause (None if not every vCPU is parked).
    pub fn parked_states(&self) -> Option<Result<Vec<VcpuState>, CaptureError>> {
        let s = self.lock();
        if s.want != Want::Pause || s.parked.iter().any(Option::is_none) {
            return None;
        }
        Some(
            s.parked
                .iter()
                .map(|p| p.clone().expect("all parked"))
                .collect(),
        )
    }

    /// Lets every vCPU run again and waits until each has left its park.
    pub fn resume(&self) {
        let mut s = self.lock();
        self.set_want(&mut s, Want::Run);
        self.changed.notify_all();
        let deadline = Instant::now() + PAUSE_TIMEOUT;
        while s.parked.iter().any(Option::is_some) && Instant::now() < deadline {
            s = self
                .changed
                .wait_timeout(s, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests;
