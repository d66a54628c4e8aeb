//! The VMM's state as the API sees it: the configuration being assembled, then the
//! running VM. A VM starts at most once per process (as in Firecracker).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::builder::{self, StartError};
use crate::config::VmConfig;
use crate::devices::control::BootTimes;
use crate::devices::i8042::I8042;
use crate::devices::serial::ConsoleTail;
use crate::exit::ExitReason;

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
    i8042: Arc<Mutex<I8042>>,
    boot_times: Arc<Mutex<BootTimes>>,
    /// The VM's memory and KVM fds, held for as long as the VMM runs.
    _keepalive: builder::KeepAlive,
}

pub struct Vmm {
    pub id: String,
    pub config: VmConfig,
    console: ConsoleTarget,
    running: Option<Running>,
    /// Memory, VM, kernel and vCPUs built ahead of InstanceStart (see builder::prepare).
    prepared: Option<builder::Prepared>,
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
        let console = self.console.open().map_err(|e| e.to_string())?;
        let vm = builder::start(&self.config, self.prepared.take(), console, start)
            .map_err(|e| format!("cannot start the microVM: {e}"))?;
        self.running = Some(Running {
            i8042: vm.i8042,
            boot_times: vm.boot_times,
            _keepalive: vm.keepalive,
        });
        let _ = self.on_start.send(Started {
            exit_rx: vm.exit_rx,
            console_tail: vm.console_tail,
        });
        Ok(())
    }

    pub fn send_ctrl_alt_del(&self) -> Result<(), String> {
        let Some(r) = &self.running else {
            return Err("the microVM is not running; send InstanceStart first".into());
        };
        r.i8042
            .lock()
            .map_err(|_| "i8042 lock poisoned")?
            .ctrl_alt_del();
        Ok(())
    }

    /// Microseconds from InstanceStart to the agent's ready signal, once it came.
    pub fn boot_time_us(&self) -> Option<u128> {
        let r = self.running.as_ref()?;
        let t = r.boot_times.lock().ok()?;
        t.ready_after.map(|d| d.as_micros())
    }
}
