//! `Sandbox`: create a microVM with an agent, run commands in it, move files, stop it.
//!
//! ```no_run
//! use kiln::{Sandbox, ExecOptions};
//! let sb = Sandbox::builder().image("minimal").cpus(1).memory_mib(256).create()?;
//! let out = sb.exec(&ExecOptions::new(["sh", "-c", "echo $((6*7))"]))?;
//! assert_eq!(out.stdout_str(), "42\n");
//! sb.remove()?;
//! # Ok::<(), kiln::Error>(())
//! ```
//!
//! A sandbox lives in its own folder of the state directory ([`crate::state_dir`]) and its VMM runs
//! in the background, so another process finds it by id ([`Sandbox::get`]). A sandbox
//! created with `detach(false)` (the library default) is stopped and removed when the
//! `Sandbox` is dropped; `detach(true)` (what `kiln create` uses) leaves it running.

mod disk_errors;
mod fork;
mod image;
mod info;
mod lifecycle;
pub mod network;
mod operation;
mod pause;
mod pool;
mod ports;
mod reconcile;
pub(crate) mod registry;
mod restore;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Child;
use std::time::Duration;

pub use crate::net::NetMode;
pub use disk_errors::note_disk_errors;
pub use fork::Fork;
pub use image::{images, sparse_copy, Image};
pub use info::{events_for, events_since, SandboxInfo};
pub use lifecycle::State;
pub use network::NetworkInfo;
pub use reconcile::{reap_expired, reconcile, Reconciled};

use crate::agent::{AgentAddr, ExecStream};
use crate::backend::MemoryBackend;
use crate::error::{Error, Result};
use crate::exec::{ExecOptions, ExecOutput, WinSize};
use crate::state_dir::{self as state, Dir, Record};
use crate::vmm::{DriveSpec, GuestSpec, DEFAULT_BOOT_ARGS};
use kiln_proto::{DirEntry, FileStat};

/// Settings for a new sandbox.
#[derive(Debug, Clone)]
pub struct SandboxBuilder {
    id: Option<String>,
    image: String,
    cpus: u8,
    memory_mib: u64,
    env: BTreeMap<String, String>,
    timeout: Option<Duration>,
    detach: bool,
    from: Option<String>,
    backend: MemoryBackend,
    vm_backend: String,
    idle_timeout: Option<Duration>,
    max_lifetime: Option<Duration>,
    metadata: BTreeMap<String, String>,
    cpu_quota: Option<f64>,
    ports: Vec<crate::ports::PortSpec>,
    net: Option<NetMode>,
}

/// A running (or stopped) sandbox.
pub struct Sandbox {
    id: String,
    dir: Dir,
    record: Record,
    agent: AgentAddr,
    child: Option<Child>,
    detach: bool,
    removed: bool,
}

impl Default for SandboxBuilder {
    fn default() -> Self {
        SandboxBuilder {
            id: None,
            image: image::DEFAULT.into(),
            cpus: 1,
            memory_mib: 256,
            env: BTreeMap::new(),
            timeout: None,
            detach: false,
            from: None,
            backend: MemoryBackend::File,
            vm_backend: "kiln".into(),
            idle_timeout: None,
            max_lifetime: None,
            metadata: BTreeMap::new(),
            cpu_quota: None,
            ports: Vec::new(),
            net: None,
        }
    }
}

impl SandboxBuilder {
    /// `minimal` (initramfs only, fastest), `debian` (default) or a path to an ext4 image.
    pub fn image(mut self, image: impl Into<String>) -> Self {
        self.image = image.into();
        self
    }
    pub fn cpus(mut self, n: u8) -> Self {
        self.cpus = n;
        self
    }
    pub fn memory_mib(mut self, mib: u64) -> Self {
        self.memory_mib = mib;
        self
    }
    /// An environment variable for every command.
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.insert(k.into(), v.into());
        self
    }
    /// The default per-command timeout (a command's own timeout overrides it). The
    /// sandbox's own lifetime limit is the service's concern (`kiln serve`).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }
    /// A chosen id instead of a generated one.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }
    /// Keep the sandbox running after this `Sandbox` is dropped.
    pub fn detach(mut self, detach: bool) -> Self {
        self.detach = detach;
        self
    }

    /// Restore this snapshot (name or directory) instead of booting an image; image,
    /// cpus and memory come from the snapshot.
    pub fn from_snapshot(mut self, name: impl Into<String>) -> Self {
        self.from = Some(name.into());
        self
    }
    /// The VMM backend: `kiln` (default), `firecracker` or `qemu` (see [`crate::backend`]).
    pub fn backend(mut self, name: impl Into<String>) -> Self {
        self.vm_backend = name.into();
        self
    }
    /// Stop and remove the sandbox after this long without an exec, file or API call
    /// (enforced by [`crate::reap_expired`], which `kiln serve` runs every second).
    pub fn idle_timeout(mut self, t: Duration) -> Self {
        self.idle_timeout = Some(t);
        self
    }
    /// Stop and remove the sandbox this long after its creation, whatever it does.
    pub fn max_lifetime(mut self, t: Duration) -> Self {
        self.max_lifetime = Some(t);
        self
    }
    /// A label (filterable in `list`).
    pub fn metadata(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.metadata.insert(k.into(), v.into());
        self
    }
    /// Limits the sandbox's VMM to this many CPUs of time per second (its cgroup's
    /// `cpu.max`, see [`crate::cgroup`]): 0.5 is half a CPU. 0.01 to the vCPU count.
    pub fn cpu_quota(mut self, cpus: f64) -> Self {
        self.cpu_quota = Some(cpus);
        self
    }

    /// Its network ([`NetMode`]). Unset: a NIC with no egress where kiln can make one
    /// (root), none (said once) where it cannot. A restored sandbox gets a network like
    /// its snapshot's.
    pub fn network(mut self, mode: NetMode) -> Self {
        self.net = Some(mode);
        self
    }

    /// How a restored sandbox's memory is backed.
    pub fn memory_backend(mut self, b: MemoryBackend) -> Self {
        self.backend = b;
        self
    }

    /// Boots the sandbox (or restores its snapshot) and waits for its agent. On failure
    /// nothing is left behind.
    pub fn create(self) -> Result<Sandbox> {
        if self.from.is_some() && !self.ports.is_empty() {
            return Err(Error::InvalidInput(
                "published ports (-p) with --from are not supported yet: use `kiln port-forward`"
                    .into(),
            ));
        }
        if self.from.is_some() {
            return self.create_from_snapshot();
        }
        let backend = crate::backend::get(&self.vm_backend)?;
        let img = Image::resolve(&self.image)?;
        if !(1..=32).contains(&self.cpus) {
            return Err(Error::InvalidInput(format!(
                "cpus {}: use 1 to 32",
                self.cpus
            )));
        }
        if self.memory_mib < 64 {
            return Err(Error::InvalidInput(format!(
                "memory {} MiB: use at least 64",
                self.memory_mib
            )));
        }
        check_quota(self.cpu_quota, self.cpus)?;
        let net = network::resolve(self.net, backend)?;
        let id = match self.id.clone() {
            Some(id) => {
                state::check_id(&id)?;
                id
            }
            None => state::new_id(),
        };
        // Refused before anything exists: no folder, row or disk layer.
        let layer = match &img {
            Image::Disk { .. } => state::allocated(&image::scratch_template()?),
            _ => 0,
        };
        state::check_room(&format!("creating sandbox {id}"), layer)?;
        img.record()?;
        let dir = Dir::of(&state::state_dir()?, &id);
        dir.create(&id)?;
        let created = now_secs();
        let mut record = Record {
            id: id.clone(),
            image: img.name().into(),
            backend: backend.name().into(),
            cpus: self.cpus,
            memory_mib: self.memory_mib,
            pid: 0,
            creator: std::process::id(),
            creator_start: crate::process::start_time(std::process::id()).unwrap_or(0),
            created,
            exec_timeout_ms: self.timeout.map(|t| t.as_millis() as u64),
            cpu_quota: self.cpu_quota,
            net,
            ..Default::default()
        };
        let mut sb = Sandbox {
            agent: AgentAddr::new(dir.vsock(), &id),
            id,
            dir,
            record: record.clone(),
            child: None,
            detach: self.detach,
            removed: false,
        };
        if let Err(e) = sb
            .dir
            .save(&record)
            .and_then(|()| sb.register(&self.limits()))
        {
            // Not registered: only the new folder is ours to remove.
            sb.removed = true;
            crate::backend::jail::release(&sb.dir);
            let _ = sb.dir.remove();
            return Err(state::disk_full_as(
                &format!("creating sandbox {}", sb.id),
                e,
            ));
        }
        // From here on a failure marks the row failed, then Drop removes the folder,
        // the VMM and the row.
        let t0 = std::time::Instant::now();
        let disk_mib = match img {
            Image::Disk { .. } => image::SCRATCH_MIB,
            _ => 0,
        };
        let started = registry::make_group(&sb.dir, &record, disk_mib)
            .and_then(|_| guest_spec(&img, &sb.dir, &sb.id, self.cpus, self.memory_mib))
            .and_then(|mut g| {
                if let Some(n) = network::attach(&sb.dir, net)? {
                    network::wire(&mut g, &n);
                }
                Ok(g)
            })
            .and_then(|g| {
                let dir = &sb.dir;
                let rec = &mut record;
                backend.start(&sb.id, dir, &g, &mut |pid| {
                    registry::record_spawned(dir, rec, pid)
                })
            })
            .and_then(|child| {
                record.boot_ms = Some(t0.elapsed().as_millis() as u64);
                sb.child = Some(child);
                sb.record = record;
                sb.dir.save(&sb.record)?;
                // Bound before the row says running: a busy port fails the create.
                sb.publish_ports(&self.ports)?;
                crate::process::pause_point("before-running");
                sb.mark_running(sb.record.pid)?;
                if !self.env.is_empty() {
                    sb.agent
                        .set_env(self.env.into_iter().map(|(k, v)| (k, Some(v))).collect())?;
                }
                Ok(())
            });
        if let Err(e) = started {
            let e = state::disk_full_as(&format!("creating sandbox {}", sb.id), e);
            sb.mark_create_failed(&e);
            sb.detach = false;
            return Err(e);
        }
        Ok(sb)
    }

    pub(super) fn limits(&self) -> registry::Limits {
        registry::Limits {
            metadata: self.metadata.clone(),
            idle_timeout: self.idle_timeout,
            max_lifetime: self.max_lifetime,
        }
    }
}

/// A CPU quota out of range is bad input.
pub(crate) fn check_quota(quota: Option<f64>, cpus: u8) -> Result<()> {
    match quota {
        Some(q) => {
            crate::cgroup::check_quota(q, cpus).map_err(|e| Error::InvalidInput(e.to_string()))
        }
        None => Ok(()),
    }
}

/// Seconds since the epoch.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The VM for `img`: the minimal initramfs, plus for disk images the root filesystem
/// (read-only, /dev/vda) and a fresh writable layer (/dev/vdb) the agent overlays.
fn guest_spec(img: &Image, dir: &Dir, id: &str, cpus: u8, memory_mib: u64) -> Result<GuestSpec> {
    let mut g = GuestSpec::minimal();
    g.cpus = cpus;
    g.memory_mib = memory_mib;
    g.vsock = Some(dir.vsock());
    let mut args = format!("{DEFAULT_BOOT_ARGS} kiln.hostname={id}");
    if let Image::Disk { rootfs, .. } = img {
        image::sparse_copy(&image::scratch_template()?, &dir.scratch())?;
        g.drives = vec![
            DriveSpec {
                id: "rootfs".into(),
                path: rootfs.clone(),
                read_only: true,
                root: false,
            },
            DriveSpec {
                id: "scratch".into(),
                path: dir.scratch(),
                read_only: false,
                root: false,
            },
        ];
        args.push_str(" kiln.root=/dev/vda kiln.overlay=/dev/vdb");
    }
    g.boot_args = Some(args);
    Ok(g)
}

impl Sandbox {
    pub fn builder() -> SandboxBuilder {
        SandboxBuilder::default()
    }

    /// Finds a sandbox by id in the state directory. The result is detached: dropping it
    /// leaves the sandbox as it is.
    pub fn get(id: &str) -> Result<Sandbox> {
        state::check_id(id).map_err(|_| Error::NotFound { id: id.into() })?;
        crate::state_dir::store()?.get_sandbox(id)?;
        let dir = Dir::of(&state::state_dir()?, id);
        let record = dir.load(id)?;
        Ok(Sandbox {
            agent: AgentAddr::new(dir.vsock(), id),
            id: id.into(),
            dir,
            record,
            child: None,
            detach: true,
            removed: false,
        })
    }

    /// All sandboxes in the state store, oldest first.
    pub fn list() -> Result<Vec<Sandbox>> {
        Sandbox::list_filtered(&crate::store::SandboxFilter::default())
    }

    /// Stops every sandbox of `backend` in the state directory that is up; per sandbox
    /// the step that ended it or the error.
    pub fn stop_all_on(
        backend: &dyn crate::VmBackend,
    ) -> Result<Vec<(String, Result<&'static str>)>> {
        let mut out = Vec::new();
        for mut sb in Sandbox::list()? {
            if sb.backend_name() == backend.name() && sb.is_up() {
                let id = sb.id().to_string();
                out.push((id, sb.stop()));
            }
        }
        Ok(out)
    }

    /// Ids of the sandboxes in the state store that run on `backend`.
    pub fn ids_on(backend: &dyn crate::VmBackend) -> Result<Vec<String>> {
        Ok(Sandbox::list()?
            .into_iter()
            .filter(|s| s.backend_name() == backend.name())
            .map(|s| s.id().to_string())
            .collect())
    }

    /// The sandboxes whose state, backend and metadata match `filter`.
    pub fn list_filtered(filter: &crate::store::SandboxFilter) -> Result<Vec<Sandbox>> {
        let mut out = Vec::new();
        for row in crate::state_dir::store()?.list_sandboxes(filter)? {
            match Sandbox::get(&row.id) {
                Ok(sb) => out.push(sb),
                Err(Error::NotFound { .. }) => {} // removed meanwhile
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn record(&self) -> &Record {
        &self.record
    }
    /// The sandbox's folder (logs, sockets, writable layer).
    pub fn dir(&self) -> &Path {
        &self.dir.path
    }
    /// The agent, for operations not wrapped here.
    pub fn agent(&self) -> &AgentAddr {
        &self.agent
    }

    /// The backend that runs it.
    pub fn backend(&self) -> &'static dyn crate::backend::VmBackend {
        crate::backend::get(self.backend_name()).unwrap_or(&crate::backend::kiln::KilnVmm)
    }
    pub fn backend_name(&self) -> &str {
        if self.record.backend.is_empty() {
            "kiln"
        } else {
            &self.record.backend
        }
    }
    pub(crate) fn vm(&self) -> crate::backend::VmRef<'_> {
        crate::backend::VmRef {
            id: &self.id,
            dir: &self.dir,
            pid: self.record.pid,
        }
    }

    /// The agent, if the sandbox runs; notes the activity (idle timeout).
    fn running_agent(&self) -> Result<&AgentAddr> {
        let what = match self.state() {
            State::Running => {
                self.touch();
                return Ok(&self.agent);
            }
            State::Paused => "paused; `kiln resume` it first".to_string(),
            s => s.to_string(),
        };
        Err(Error::AgentUnavailable {
            id: self.id.clone(),
            reason: format!("the sandbox is {what}"),
        })
    }

    /// Runs a command to completion. A timeout is `Err(CommandTimedOut)` with the output.
    pub fn exec(&self, opts: &ExecOptions) -> Result<ExecOutput> {
        self.running_agent()?.exec(opts, self.record.exec_timeout())
    }

    /// Starts a command and streams its output. `opts.stdin = Some(..)` keeps stdin
    /// open for [`ExecStream::input`] (the given bytes are not sent).
    pub fn exec_stream(&self, opts: &ExecOptions) -> Result<ExecStream> {
        self.running_agent()?
            .exec_stream(opts, None, self.record.exec_timeout())
    }

    /// Starts a command on a pseudo-terminal (interactive shells).
    pub fn spawn_pty(&self, opts: &ExecOptions, size: WinSize) -> Result<ExecStream> {
        self.running_agent()?
            .exec_stream(opts, Some(size), self.record.exec_timeout())
    }

    pub fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.running_agent()?.read_file_to(path, &mut out)?;
        Ok(out)
    }

    /// Streams a guest file into `out` (nothing buffered beyond one frame); its size.
    pub fn read_file_to(&self, path: &str, out: &mut impl std::io::Write) -> Result<u64> {
        self.running_agent()?.read_file_to(path, out)
    }

    /// Streams `input` into a guest file (parents created); the bytes written.
    pub fn write_file_from(
        &self,
        path: &str,
        input: &mut impl std::io::Read,
        mode: Option<u32>,
    ) -> Result<u64> {
        self.running_agent()?.write_file_from(path, input, mode)
    }

    pub fn write_file(&self, path: &str, data: &[u8], mode: Option<u32>) -> Result<()> {
        self.running_agent()?
            .write_file_from(path, &mut &data[..], mode)
            .map(|_| ())
    }

    /// Copies a local file or directory tree into the guest.
    pub fn upload(&self, local: &Path, remote: &str) -> Result<u64> {
        self.running_agent()?.upload(local, remote)
    }

    /// Copies a guest file or directory tree to the host.
    pub fn download(&self, remote: &str, local: &Path) -> Result<u64> {
        self.running_agent()?.download(remote, local)
    }

    pub fn stat(&self, path: &str) -> Result<FileStat> {
        self.running_agent()?.stat(path)
    }
    pub fn list_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        self.running_agent()?.list_dir(path)
    }
    pub fn mkdir(&self, path: &str) -> Result<()> {
        self.running_agent()?.mkdir(path, true)
    }
    pub fn remove_path(&self, path: &str, recursive: bool) -> Result<()> {
        self.running_agent()?.remove(path, recursive)
    }
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.running_agent()?.rename(from, to)
    }
    pub fn set_secret(&self, name: &str, value: &str) -> Result<()> {
        self.running_agent()?.set_secret(name, value)
    }
    /// Host → agent → host round trip.
    pub fn ping(&self) -> Result<Duration> {
        self.running_agent()?.ping()
    }
}
