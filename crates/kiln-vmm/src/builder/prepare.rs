//! Eager preparation: guest memory, the KVM VM, the loaded kernel and initrd and the
//! configured vCPUs are built as soon as the configuration names them (at
//! `PUT /boot-source` or `/machine-config`), so `InstanceStart` only attaches devices and
//! starts vCPUs. QEMU does the same work before its `-S` pause; Firecracker does it
//! after InstanceStart. A prepared VM is reused only if the vCPU count, memory size,
//! kernel and initrd are unchanged (same path, inode, size and mtime); otherwise it is
//! rebuilt at start.

use std::os::unix::fs::MetadataExt;
use std::time::SystemTime;

use kvm_ioctls::{Kvm, VmFd};
use vm_memory::GuestMemoryMmap;

use super::assemble::VmParts;
use super::StartError;
use crate::arch::boot_params::InitrdPlacement;
use crate::config::VmConfig;
use crate::kernel::{load_initrd, load_kernel, LoadedKernel};
use crate::vstate::vcpu::{supported_cpuid, Vcpu};
use crate::vstate::{memory, vm};

#[derive(Debug, Clone, PartialEq, Eq)]
struct FileId {
    path: String,
    ino: u64,
    len: u64,
    mtime: Option<SystemTime>,
}

impl FileId {
    fn of(path: &str) -> Option<Self> {
        let m = std::fs::metadata(path).ok()?;
        Some(Self {
            path: path.to_string(),
            ino: m.ino(),
            len: m.len(),
            mtime: m.modified().ok(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    vcpus: u8,
    mem_mib: u64,
    kernel: Option<FileId>,
    initrd: Option<FileId>,
}

fn key(cfg: &VmConfig) -> Option<Key> {
    let boot = cfg.boot_source.as_ref()?;
    Some(Key {
        vcpus: cfg.machine_config.vcpu_count,
        mem_mib: cfg.machine_config.mem_size_mib,
        kernel: FileId::of(&boot.kernel_image_path),
        initrd: boot.initrd_path.as_deref().and_then(FileId::of),
    })
}

/// Memory, VM, kernel, initrd and vCPUs, ready for devices.
pub struct Prepared {
    key: Key,
    pub(super) kvm: Kvm,
    pub(super) vm: VmFd,
    pub(super) mem: GuestMemoryMmap,
    pub(super) kernel: LoadedKernel,
    pub(super) initrd: Option<InitrdPlacement>,
    pub(super) vcpus: Vec<Vcpu>,
}

impl Prepared {
    /// True if this preparation is still valid for `cfg`.
    pub fn matches(&self, cfg: &VmConfig) -> bool {
        key(cfg).is_some_and(|k| k == self.key)
    }

    /// The VM, memory and vCPUs, once the boot structures are written.
    pub(super) fn into_vm(self) -> VmParts {
        VmParts {
            kvm: self.kvm,
            vm: self.vm,
            mem: self.mem,
            vcpus: self.vcpus,
        }
    }
}

/// Builds memory and the VM, loads kernel and initrd and configures the vCPUs for `cfg`.
pub fn prepare(cfg: &VmConfig) -> Result<Prepared, StartError> {
    let boot = cfg.require_boot_source()?;
    let key = key(cfg).expect("boot source is set");
    let mem_mib = cfg.machine_config.mem_size_mib;
    let mem = memory::create(mem_mib)?;
    let (kvm, vm) = vm::create(&mem)?;
    let kernel = load_kernel(&mem, &boot.kernel_image_path)?;
    let initrd = match &boot.initrd_path {
        Some(p) => Some(load_initrd(&mem, mem_mib << 20, kernel.end, p)?),
        None => None,
    };
    let supported = supported_cpuid(&kvm)?;
    let count = cfg.machine_config.vcpu_count;
    let tsc_deadline = kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer);
    let mut vcpus = Vec::with_capacity(count as usize);
    for index in 0..count {
        let vcpu = Vcpu::new(&vm, index)?;
        vcpu.configure(&supported, count, tsc_deadline, &mem, kernel.entry)?;
        vcpus.push(vcpu);
    }
    Ok(Prepared {
        key,
        kvm,
        vm,
        mem,
        kernel,
        initrd,
        vcpus,
    })
}
