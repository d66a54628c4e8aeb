//! The VMM's state as the API sees it: the configuration being assembled, then the
//! running VM. A VM starts at most once per process (as in Firecracker).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::boot_error;
use crate::builder::{self, RestoreOptions, StartError};
use crate::config::VmConfig;
use crate::devices::control::BootTimes;
use crate::devices::serial::ConsoleTail;
use crate::exit::ExitReason;
use crate::metrics::{inc, METRICS};
use crate::snapshot::{self, CreateReport, CreateRequest, SnapshotState};

/// Where the guest's serial console goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleTarget {
    /// Discarded (the default: fastest). The last bytes are still kept for panic reports.
    Off,
    Stdout,
    /// Appended to a file.
    File(PathBuf),
}

impl ConsoleTarget {
    pub fn parse(s: &str) -> Self {
        match s {
            "off" | "none" => Self::Off,
            "stdout" | "-" => Self::Stdout,
            path => Self::File(PathBuf::from(path)),
        }
    }

    fn open(&self) -> Result<Option<Box<dyn Write + Send>>, StartError> {
        Ok(match self {
            Self::Off => None,
            Self::Stdout => Some(Box::new(std::io::stdout())),
            Self::File(p) => Some(Box::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(builder::device_err(format!("console log {}", p.display())))?,
            )),
        })
    }
}

/// What the exit monitor needs once the VM runs.
pub struct Started {
    pub exit_rx: Receiver<ExitReason>,
    pub console_tail: ConsoleTail,
}

struct Running {
    boot_times: Arc<Mutex<BootTimes>>,
    /// The VM's memory, KVM fds and devices, held for as long as the VMM runs.
    machine: builder::Machine,
    paused: bool,
}

/// Returns the heap pages freed after parsing or writing a snapshot's state (a few
/// hundred KiB per restored VM, which would otherwise stay private to each fork child).
fn release_free_heap() {
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas.
    unsafe { libc::malloc_trim(0) };
}

pub struct Vmm {
    pub id: String,
    pub config: VmConfig,
    console: ConsoleTarget,
    running: Option<Running>,
    /// Memory, VM, kernel and vCPUs built ahead of InstanceStart (see builder::prepare).
    prepared: Option<builder::Prepared>,
    /// The VM came from a snapshot (its agent was ready when the snapshot was taken).
    restored: bool,
    on_start: Sender<Started>,
}

impl Vmm {
    pub fn new(id: String, console: ConsoleTarget, on_start: Sender<Started>) -> Self {
        Self {
            id,
            config: VmConfig::default(),
            console,
            running: None,
            prepared: None,
            restored: false,
            on_start,
        }
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Prepares memory, VM, kernel and vCPUs for the current configuration if it names a boot
    /// source and nothing valid is prepared yet. Failures are not reported here: the
    /// same error comes back from InstanceStart, which prepares again.
    pub fn refresh_prepared(&mut self) {
        if self.is_running() || self.config.boot_source.is_none() {
            return;
        }
        if self
            .prepared
            .as_ref()
            .is_some_and(|p| p.matches(&self.config))
        {
            return;
        }
        self.prepared = None; // free the old guest memory first
        match builder::prepare(&self.config) {
            Ok(p) => self.prepared = Some(p),
            Err(e) => tracing::debug!("preparing the VM ahead of InstanceStart failed: {e}"),
        }
    }

    /// Builds and starts the VM. On failure nothing is left running and the VMM keeps
    /// its configuration, so the client can fix it and try again.
    pub fn instance_start(&mut self) -> Result<(), String> {
        if self.is_running() {
            return Err(
                "the microVM is already running; InstanceStart can only be sent once".into(),
            );
        }
        let start = Instant::now();
        let vm = self
            .console
            .open()
            .and_then(|console| builder::start(&self.config, self.prepared.take(), console, start))
            .map_err(|e| {
                let msg = format!("cannot start the microVM: {e}");
                let (stage, errno) = boot_error::classify(&e);
                boot_error::record(stage, errno, &msg);
                msg
            })?;
        boot_error::clear();
        self.started(vm, false);
        Ok(())
    }

    fn started(&mut self, vm: builder::RunningVm, paused: bool) {
        self.running = Some(Running {
            boot_times: vm.boot_times,
            machine: vm.machine,
            paused,
        });
        let _ = self.on_start.send(Started {
            exit_rx: vm.exit_rx,
            console_tail: vm.console_tail,
        });
    }

    fn running_mut(&mut self) -> Result<&mut Running, String> {
        self.running
            .as_mut()
            .ok_or_else(|| "the microVM is not running; send InstanceStart first".into())
    }

    /// True while the vCPUs are paused.
    pub fn is_paused(&self) -> bool {
        self.running.as_ref().is_some_and(|r| r.paused)
    }

    /// Pauses every vCPU (idempotent).
    pub fn pause(&mut self) -> Result<(), String> {
        let r = self.running_mut()?;
        if !r.paused {
            r.machine.vcpus.pause()?;
            r.paused = true;
            inc(&METRICS.vm.pauses);
        }
        Ok(())
    }

    /// Resumes the vCPUs (idempotent).
    pub fn resume(&mut self) -> Result<(), String> {
        let r = self.running_mut()?;
        if r.paused {
            r.machine.vcpus.resume();
            r.paused = false;
            inc(&METRICS.vm.resumes);
        }
        Ok(())
    }

    /// Snapshots the paused VM.
    pub fn snapshot_create(&mut self, req: &CreateRequest) -> Result<CreateReport, String> {
        let config = self.config.clone();
        let r = self.running_mut()?;
        if !r.paused {
            return Err("the microVM must be paused to snapshot it; PATCH /vm {\"state\": \"Paused\"} first".into());
        }
        let states = r
            .machine
            .vcpus
            .parked_states()
            .ok_or("the vCPUs are not all paused")??;
        let report = snapshot::create(&r.machine, &config, states, req).map_err(|e| e.to_string());
        release_free_heap();
        if report.is_ok() {
            inc(&METRICS.vm.snapshots_created);
        }
        report
    }

    /// Builds the VM from a snapshot (only in a fresh VMM); it stays paused unless
    /// `resume` is set.
    pub fn snapshot_load(
        &mut self,
        state_path: &Path,
        opts: &RestoreOptions,
        resume: bool,
    ) -> Result<(), String> {
        if self.is_running() {
            return Err("a snapshot can only be loaded into a fresh kiln-vmm; this one already runs a microVM".into());
        }
        let state = SnapshotState::load(state_path).map_err(|e| e.to_string())?;
        let console = self.console.open().map_err(|e| e.to_string())?;
        self.prepared = None;
        let (vm, config) = builder::restore(&state, opts, console)
            .map_err(|e| format!("cannot restore the snapshot: {e}"))?;
        self.config = config;
        self.restored = true;
        inc(&METRICS.vm.snapshots_loaded);
        boot_error::clear();
        self.started(vm, true);
        drop(state);
        release_free_heap();
        if resume {
            self.resume()?;
        }
        Ok(())
    }

    /// Writes the userfaultfd backend's recorded working set now.
    pub fn save_working_set(&mut self) -> Result<usize, String> {
        let r = self.running_mut()?;
        match &r.machine.uffd {
            Some(u) => u.save_working_set().map_err(|e| e.to_string()),
            None => Err("the VM was not restored with the Uffd memory backend".into()),
        }
    }

    pub fn send_ctrl_alt_del(&self) -> Result<(), String> {
        let Some(r) = &self.running else {
            return Err("the microVM is not running; send InstanceStart first".into());
        };
        r.machine
            .i8042
            .lock()
            .map_err(|_| "i8042 lock poisoned")?
            .ctrl_alt_del();
        Ok(())
    }

    /// Whether the guest agent has been ready: it signalled after boot, or the VM was
    /// restored from a snapshot (taken of a ready guest).
    pub fn agent_was_ready(&self) -> bool {
        self.restored || self.boot_time_us().is_some()
    }

    /// Microseconds from InstanceStart to the agent's ready signal, once it came.
    pub fn boot_time_us(&self) -> Option<u128> {
        let r = self.running.as_ref()?;
        let t = r.boot_times.lock().ok()?;
        t.ready_after.map(|d| d.as_micros())
    }
}
