//! The VMM's state as the API sees it: the configuration being assembled, then the
//! running VM. A VM starts at most once per process (as in Firecracker).

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{SocketAddr, SocketAddrV4};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::boot_error;
use crate::builder::{self, RestoreOptions, StartError};
use crate::config::{ConfigError, HostFacts, ValidConfig, VmConfig};
use crate::devices::console_log::CappedLog;
use crate::devices::control::BootTimes;
use crate::devices::rate_limiter::RateLimiterConfig;
use crate::devices::serial::ConsoleTail;
use crate::exit::ExitReason;
use crate::metrics::{inc, METRICS};
use crate::mmds;
use crate::snapshot::{self, CreateReport, CreateRequest, SnapshotError, SnapshotState};
use crate::vstate::control::{CaptureError, PauseError};
use crate::vstate::mem_file::MemFileError;

/// Why a call on the VMM failed. Each message says what to do; the API serves it as
/// the 400 `fault_message`.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("the microVM is already running; InstanceStart can only be sent once")]
    AlreadyRunning,
    #[error("the microVM is not running; send InstanceStart first")]
    NotRunning,
    /// Building or starting the VM failed (nothing is left running).
    #[error("cannot start the microVM: {0}")]
    Start(#[source] StartError),
    #[error(transparent)]
    Pause(#[from] PauseError),
    #[error(
        "the microVM must be paused to snapshot it; PATCH /vm {{\"state\": \"Paused\"}} first"
    )]
    NotPaused,
    #[error("the vCPUs are not all paused")]
    NotAllParked,
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// Writing, or reading and checking, a snapshot's files.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(
        "a snapshot can only be loaded into a fresh kiln-vmm; this one already runs a microVM"
    )]
    LoadIntoRunning,
    /// The console log for the restored VM cannot be opened.
    #[error(transparent)]
    Console(StartError),
    #[error("cannot restore the snapshot: {0}")]
    Restore(#[source] StartError),
    #[error("the VM was not restored with the Uffd memory backend")]
    NotUffd,
    #[error(transparent)]
    WorkingSet(#[from] MemFileError),
    #[error("{0} lock poisoned")]
    Poisoned(&'static str),
    #[error("drive '{id}' keeps its old backing file: {source}")]
    DriveBacking {
        id: String,
        #[source]
        source: crate::devices::virtio::BlockError,
    },
    #[error("the running microVM has no {kind} '{id}'")]
    NoDevice { kind: &'static str, id: String },
}

/// Where the guest's serial console goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleTarget {
    /// Discarded (the default: fastest). The last bytes are still kept for panic reports.
    Off,
    Stdout,
    /// Appended to a file of at most `max_bytes`, keeping the newest output
    /// ([`crate::devices::console_log`]).
    File {
        path: PathBuf,
        max_bytes: u64,
    },
}

impl ConsoleTarget {
    /// `off`/`none`, `stdout`/`-`, or a file path capped at `max_bytes`.
    pub fn parse(s: &str, max_bytes: u64) -> Self {
        match s {
            "off" | "none" => Self::Off,
            "stdout" | "-" => Self::Stdout,
            path => Self::File {
                path: PathBuf::from(path),
                max_bytes,
            },
        }
    }

    fn open(&self) -> Result<Option<Box<dyn Write + Send>>, StartError> {
        Ok(match self {
            Self::Off => None,
            Self::Stdout => Some(Box::new(std::io::stdout())),
            Self::File { path, max_bytes } => Some(open_console_file(path, *max_bytes).map_err(
                builder::device_err(format!("console log {}", path.display())),
            )?),
        })
    }
}

/// A regular file (or a new one) becomes a capped log; anything else (`/dev/null`, a
/// pipe with a reader) is written as is. Opened write-only without blocking first: a
/// FIFO without a reader is an error (ENXIO), not a wait, and is never opened for
/// reading too (which would let the VMM be its own reader and block once it is full).
fn open_console_file(path: &Path, max_bytes: u64) -> std::io::Result<Box<dyn Write + Send>> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    if !file.metadata()?.is_file() {
        crate::host_file::set_blocking(&file)?;
        return Ok(Box::new(file));
    }
    drop(file);
    // A regular file: reopened for reading too, which cutting it needs.
    let file = crate::host_file::open(path, true, crate::host_file::Accept::File)?;
    Ok(Box::new(CappedLog::from_file(file, max_bytes)?))
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

/// The port the MMDS responder listens on: 80, or `KILN_VMM_MMDS_PORT` (tests, which
/// may not bind a privileged port).
fn mmds_port() -> u16 {
    std::env::var("KILN_VMM_MMDS_PORT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(80)
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
    /// What the configuration is validated against (read once, by the caller).
    host: HostFacts,
    /// Memory, VM, kernel and vCPUs built ahead of InstanceStart (see builder::prepare).
    prepared: Option<builder::Prepared>,
    /// The VM came from a snapshot (its agent was ready when the snapshot was taken).
    restored: bool,
    on_start: Sender<Started>,
    /// Cap of a console file set later (`PUT /serial`), as `--console-max-mib`.
    pub console_max_bytes: u64,
    /// MMDS's data store, shared with its responder thread.
    pub mmds: Arc<Mutex<mmds::Store>>,
    /// Where the MMDS responder listens, once it does.
    mmds_listening: Option<SocketAddr>,
}

impl Vmm {
    pub fn new(
        id: String,
        console: ConsoleTarget,
        host: HostFacts,
        on_start: Sender<Started>,
    ) -> Self {
        Self {
            id,
            config: VmConfig::default(),
            console,
            running: None,
            host,
            prepared: None,
            restored: false,
            on_start,
            console_max_bytes: crate::devices::console_log::DEFAULT_MAX_BYTES,
            mmds: Arc::default(),
            mmds_listening: None,
        }
    }

    /// `PUT /serial`: the guest console goes to `path` (appended, capped as
    /// `--console FILE`). Opened now so a bad path is a 400 here.
    pub fn set_serial_out(&mut self, path: &Path) -> Result<(), ConfigError> {
        let target = ConsoleTarget::File {
            path: path.to_path_buf(),
            max_bytes: self.console_max_bytes,
        };
        target.open().map_err(|e| {
            ConfigError::new(format!(
                "serial_out_path {}: {e}; give a file (or a named pipe with a reader) kiln-vmm may write to",
                path.display()
            ))
        })?;
        self.console = target;
        Ok(())
    }

    /// Applies the MMDS configuration to the store and, once the VM runs, makes sure the
    /// responder listens on its address (port 80). Errors say what to fix.
    pub fn apply_mmds_config(&mut self) -> Result<(), String> {
        let Some(cfg) = self.config.mmds_config.clone() else {
            return Ok(());
        };
        {
            let mut st = self.mmds.lock().unwrap_or_else(|p| p.into_inner());
            st.version = cfg.version;
            st.imds_compat = cfg.imds_compat;
        }
        if !self.is_running() {
            return Ok(());
        }
        let want = SocketAddrV4::new(cfg.address(), mmds_port());
        match self.mmds_listening {
            Some(SocketAddr::V4(a)) if a == want => Ok(()),
            Some(a) => Err(format!(
                "MMDS already listens on {a}; its ipv4_address cannot change once it serves"
            )),
            None => {
                self.mmds_listening = Some(mmds::server::start(want, self.mmds.clone())?);
                Ok(())
            }
        }
    }

    /// Starts the MMDS responder after the VM started; a failure is logged.
    fn start_mmds(&mut self) {
        if let Err(e) = self.apply_mmds_config() {
            tracing::error!("mmds: {e}");
            eprintln!("kiln-vmm: error: mmds: {e}");
        }
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// The host facts configuration calls are validated against.
    pub fn host(&self) -> &HostFacts {
        &self.host
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

    /// Validates the configuration assembled through the API, then builds and starts the
    /// VM. On failure nothing is left running and the VMM keeps its configuration, so
    /// the client can fix it and try again.
    pub fn instance_start(&mut self) -> Result<(), VmmError> {
        if self.is_running() {
            return Err(VmmError::AlreadyRunning);
        }
        let start = Instant::now();
        let valid = self
            .config
            .require_boot_source()
            .map(|_| ())
            .and_then(|()| ValidConfig::new(self.config.clone(), &self.host));
        self.start_valid(valid, start)
    }

    /// Builds and starts the VM of an already validated configuration (a config file),
    /// which becomes the VMM's configuration.
    pub fn start_with(&mut self, cfg: ValidConfig) -> Result<(), VmmError> {
        if self.is_running() {
            return Err(VmmError::AlreadyRunning);
        }
        let start = Instant::now();
        self.config = cfg.as_config().clone();
        self.start_valid(Ok(cfg), start)
    }

    /// Starts the VM of `cfg`; a failure (of the validation too) is recorded in the
    /// boot-error file with its stage.
    fn start_valid(
        &mut self,
        cfg: Result<ValidConfig, ConfigError>,
        start: Instant,
    ) -> Result<(), VmmError> {
        let vm = cfg
            .map_err(StartError::from)
            .and_then(|cfg| {
                let console = self.console.open()?;
                builder::start(&cfg, self.prepared.take(), console, start)
            })
            .map_err(|e| {
                let (stage, errno) = boot_error::classify(&e);
                let e = VmmError::Start(e);
                boot_error::record(stage, errno, &e.to_string());
                e
            })?;
        boot_error::clear();
        self.started(vm, false);
        self.start_mmds();
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

    fn running_mut(&mut self) -> Result<&mut Running, VmmError> {
        self.running.as_mut().ok_or(VmmError::NotRunning)
    }

    /// True while the vCPUs are paused.
    pub fn is_paused(&self) -> bool {
        self.running.as_ref().is_some_and(|r| r.paused)
    }

    /// Pauses every vCPU (idempotent).
    pub fn pause(&mut self) -> Result<(), VmmError> {
        let r = self.running_mut()?;
        if !r.paused {
            r.machine.vcpus.pause()?;
            r.paused = true;
            inc(&METRICS.vm.pauses);
        }
        Ok(())
    }

    /// Resumes the vCPUs (idempotent).
    pub fn resume(&mut self) -> Result<(), VmmError> {
        let r = self.running_mut()?;
        if r.paused {
            r.machine.vcpus.resume();
            r.paused = false;
            inc(&METRICS.vm.resumes);
        }
        Ok(())
    }

    /// Snapshots the paused VM.
    pub fn snapshot_create(&mut self, req: &CreateRequest) -> Result<CreateReport, VmmError> {
        let config = self.config.clone();
        let r = self.running_mut()?;
        if !r.paused {
            return Err(VmmError::NotPaused);
        }
        let states = r
            .machine
            .vcpus
            .parked_states()
            .ok_or(VmmError::NotAllParked)??;
        let report = snapshot::create(&r.machine, &config, states, req).map_err(VmmError::from);
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
    ) -> Result<(), VmmError> {
        if self.is_running() {
            return Err(VmmError::LoadIntoRunning);
        }
        let state = SnapshotState::load(state_path)?;
        let console = self.console.open().map_err(VmmError::Console)?;
        self.prepared = None;
        let (vm, config) = builder::restore(&state, opts, console).map_err(VmmError::Restore)?;
        self.config = config;
        self.restored = true;
        inc(&METRICS.vm.snapshots_loaded);
        boot_error::clear();
        self.started(vm, true);
        self.start_mmds();
        drop(state);
        release_free_heap();
        if resume {
            self.resume()?;
        }
        Ok(())
    }

    /// Writes the userfaultfd backend's recorded working set now.
    pub fn save_working_set(&mut self) -> Result<usize, VmmError> {
        let r = self.running_mut()?;
        match &r.machine.uffd {
            Some(u) => Ok(u.save_working_set()?),
            None => Err(VmmError::NotUffd),
        }
    }

    /// Runs `f` on the running VM's device for which `pick` returns Some; false if none.
    fn with_device<T: ?Sized>(
        &mut self,
        pick: impl Fn(&mut dyn crate::devices::virtio::VirtioDevice) -> Option<&mut T>,
        f: impl FnOnce(&mut T),
    ) -> Result<bool, VmmError> {
        let r = self.running_mut()?;
        for t in &r.machine.transports {
            let mut t = t
                .lock()
                .map_err(|_| VmmError::Poisoned("virtio transport"))?;
            if let Some(d) = pick(t.device_mut()) {
                f(d);
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Replaces the given rate limiters of the running VM's interface `iface_id`.
    pub fn update_net_limiters(
        &mut self,
        iface_id: &str,
        rx: Option<&RateLimiterConfig>,
        tx: Option<&RateLimiterConfig>,
    ) -> Result<(), VmmError> {
        let found = self.with_device(
            |d| d.net().filter(|n| n.iface_id() == iface_id),
            |n| n.update_limiters(rx, tx),
        )?;
        found.then_some(()).ok_or_else(|| VmmError::NoDevice {
            kind: "network interface",
            id: iface_id.into(),
        })
    }

    /// Replaces the rate limiter of the running VM's drive `drive_id`.
    pub fn update_drive_limiter(
        &mut self,
        drive_id: &str,
        cfg: &RateLimiterConfig,
    ) -> Result<(), VmmError> {
        let found = self.with_device(
            |d| d.block().filter(|b| b.drive_id() == drive_id),
            |b| b.set_rate_limiter(cfg),
        )?;
        found.then_some(()).ok_or_else(|| VmmError::NoDevice {
            kind: "drive",
            id: drive_id.into(),
        })
    }

    /// Gives the running VM's drive `drive_id` a new backing file and tells the guest
    /// its capacity may have changed (the config-change interrupt), as Firecracker does.
    pub fn swap_drive_backing(&mut self, drive_id: &str, path: &Path) -> Result<(), VmmError> {
        let r = self.running_mut()?;
        for t in &r.machine.transports {
            let mut t = t
                .lock()
                .map_err(|_| VmmError::Poisoned("virtio transport"))?;
            let Some(b) = t.device_mut().block().filter(|b| b.drive_id() == drive_id) else {
                continue;
            };
            b.swap_backing(path)
                .map_err(|source| VmmError::DriveBacking {
                    id: drive_id.into(),
                    source,
                })?;
            if t.is_activated() {
                t.interrupt().trigger(crate::devices::virtio::INT_CONFIG);
            }
            return Ok(());
        }
        Err(VmmError::NoDevice {
            kind: "drive",
            id: drive_id.into(),
        })
    }

    pub fn send_ctrl_alt_del(&self) -> Result<(), VmmError> {
        let Some(r) = &self.running else {
            return Err(VmmError::NotRunning);
        };
        r.machine
            .i8042
            .lock()
            .map_err(|_| VmmError::Poisoned("i8042"))?
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

#[cfg(test)]
mod tests {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;

    use super::*;

    /// Removes the test's directory however the test ends.
    struct Rm(PathBuf);

    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn console_files_are_capped_and_a_readerless_fifo_fails_at_once() {
        let dir = std::env::temp_dir().join(format!("kiln-vmm-console-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let _rm = Rm(dir.clone());
        let log = dir.join("console.log");
        let mut w = open_console_file(&log, 1024).unwrap();
        for _ in 0..100 {
            w.write_all(b"0123456789abcdef0123456789abcdef\n").unwrap();
        }
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.len() <= 1024, "{}", text.len());
        assert!(text.starts_with(crate::devices::console_log::DROPPED_NOTE));

        let fifo = dir.join("pipe");
        let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = open_console_file(&fifo, 1024).err().unwrap();
        assert_eq!(e.raw_os_error(), Some(libc::ENXIO), "{e}");

        let mut null = open_console_file(Path::new("/dev/null"), 1024).unwrap();
        null.write_all(&[b'x'; 4096]).unwrap();
    }
}
