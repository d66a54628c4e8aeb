//! Building a VM from a snapshot: guest memory mapped from the memory file (private
//! copy-on-write, or served by userfaultfd), KVM VM and vCPU state loaded, the same
//! devices attached as at boot and their saved state applied. The vCPU threads start
//! parked; the VM runs on the first resume.
//!
//! A restored VM gets its own vsock socket and drive files through the overrides (a
//! fork child must not share its parent's); everything else comes from the snapshot.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{device_err, legacy, spawn_threads, virtio, Machine, RunningVm, StartError};
use crate::config::{drive, ConfigError, VmConfig};
use crate::devices::bus::Bus;
use crate::devices::control::BootTimes;
use crate::exit::ExitSignal;
use crate::snapshot::format::SnapshotState;
use crate::vstate::control::{VcpuControl, Want};
use crate::vstate::mem_file::map_private;
use crate::vstate::uffd::map_uffd;
use crate::vstate::vcpu::Vcpu;
use crate::vstate::vcpu_state::msr_index_list;
use crate::vstate::vm;

/// How guest memory is backed after the restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemBackend {
    /// MAP_PRIVATE of the memory file: pages load lazily from the page cache, which every
    /// VM restored from the same file shares; writes are private copies.
    File,
    /// Anonymous memory filled by a userfaultfd handler from the file, after prefetching
    /// the recorded working set.
    Uffd {
        prefetch: Option<PathBuf>,
        record: Option<PathBuf>,
    },
}

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub mem_path: PathBuf,
    pub backend: MemBackend,
    /// A new vsock `uds_path` (required when the snapshot has vsock and its socket
    /// path is still in use).
    pub vsock_uds_path: Option<String>,
    /// New backing files by drive id.
    pub drives: BTreeMap<String, String>,
}

fn restore_err(msg: String) -> StartError {
    StartError::Device {
        what: "snapshot".into(),
        msg,
    }
}

/// The snapshot's configuration with the overrides applied and validated.
pub fn restored_config(
    state: &SnapshotState,
    opts: &RestoreOptions,
) -> Result<VmConfig, StartError> {
    let mut cfg = state.config.clone();
    for (id, path) in &opts.drives {
        let Some(d) = cfg.drives.iter_mut().find(|d| &d.drive_id == id) else {
            return Err(ConfigError::new(format!(
                "drive override for '{id}', which the snapshot does not have"
            ))
            .into());
        };
        d.path_on_host = path.clone();
    }
    for d in &cfg.drives {
        d.validate()?;
    }
    if let (Some(v), Some(path)) = (cfg.vsock.as_mut(), &opts.vsock_uds_path) {
        v.uds_path = path.clone();
    } else if opts.vsock_uds_path.is_some() {
        return Err(ConfigError::new("vsock override for a snapshot without vsock").into());
    }
    if let Some(v) = &cfg.vsock {
        v.validate()?;
    }
    Ok(cfg)
}

/// Builds the VM of `state` (see the module docs); the vCPUs wait for a resume.
pub fn restore(
    state: &SnapshotState,
    opts: &RestoreOptions,
    console: Option<Box<dyn Write + Send>>,
) -> Result<(RunningVm, VmConfig), StartError> {
    let start = Instant::now();
    let cfg = restored_config(state, opts)?;
    let ranges: Vec<_> = state
        .memory_ranges
        .iter()
        .map(|&(a, l)| (vm_memory::GuestAddress(a), l as usize))
        .collect();
    let (mem, uffd) = match &opts.backend {
        MemBackend::File => (
            map_private(&opts.mem_path, &ranges).map_err(|e| restore_err(e.to_string()))?,
            None,
        ),
        MemBackend::Uffd { prefetch, record } => {
            let (mem, u) = map_uffd(
                &opts.mem_path,
                &ranges,
                prefetch.as_deref(),
                record.as_deref(),
            )
            .map_err(|e| restore_err(e.to_string()))?;
            (mem, Some(u))
        }
    };
    let (kvm, vmfd) = vm::create(&mem)?;
    state.vm.restore(&vmfd).map_err(restore_err)?;
    let mut vcpus = Vec::with_capacity(state.vcpus.len());
    for (i, s) in state.vcpus.iter().enumerate() {
        let vcpu = Vcpu::new(&vmfd, i as u8)?;
        s.restore(vcpu.fd())
            .map_err(|e| restore_err(format!("vCPU {i}: {e}")))?;
        vcpus.push(vcpu);
    }

    let (exit, exit_rx) = ExitSignal::new();
    let exit = Arc::new(exit);
    let boot_times = Arc::new(Mutex::new(BootTimes::default()));
    let mut pio = Bus::new();
    let mut mmio = Bus::new();
    let legacy = legacy::attach(&vmfd, &mut pio, console, start, &boot_times, &exit)?;
    legacy
        .serial
        .lock()
        .map_err(|_| restore_err("serial lock".into()))?
        .restore_state(&state.devices.serial)
        .map_err(restore_err)?;
    legacy
        .i8042
        .lock()
        .map_err(|_| restore_err("i8042 lock".into()))?
        .restore_state(&state.devices.i8042)
        .map_err(restore_err)?;
    let drives = drive::device_order(&cfg.drives);
    let virtio = virtio::attach(&vmfd, &mem, &mut mmio, &drives, cfg.vsock.as_ref())?;
    if virtio.transports.len() != state.devices.virtio.len() {
        return Err(restore_err(format!(
            "{} virtio devices saved, {} configured; the snapshot is damaged",
            state.devices.virtio.len(),
            virtio.transports.len()
        )));
    }
    for (i, (t, s)) in virtio
        .transports
        .iter()
        .zip(&state.devices.virtio)
        .enumerate()
    {
        let mut t = t.lock().map_err(|_| restore_err("transport lock".into()))?;
        t.restore_state(s)
            .map_err(|e| restore_err(format!("virtio device {i}: {e}")))?;
    }
    for t in &virtio.transports {
        if let Ok(mut t) = t.lock() {
            t.after_restore();
        }
    }

    let msrs = msr_index_list(&kvm).map_err(device_err("MSR list"))?;
    let ctl = Arc::new(VcpuControl::new(vcpus.len(), Want::Pause));
    spawn_threads(vcpus, &pio, &mmio, &virtio.transports, &exit, &ctl, msrs)?;
    tracing::debug!(us = start.elapsed().as_micros() as u64, "restored");
    Ok((
        RunningVm {
            exit_rx,
            console_tail: legacy.console_tail,
            boot_times,
            machine: Machine {
                kvm,
                vm: vmfd,
                mem,
                vcpus: ctl,
                transports: virtio.transports,
                serial: legacy.serial,
                i8042: legacy.i8042,
                uffd,
            },
        },
        cfg,
    ))
}
