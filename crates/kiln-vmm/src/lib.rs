//! kiln-vmm: the KVM virtual machine monitor.
//!
//! Modules in layers; a module uses only modules of the layers below it (and
//! `scripts/check-cycles` fails the build on a cycle between modules):
//!
//! | layer | modules | owns |
//! | --- | --- | --- |
//! | 1 | [`arch`], [`exit`], [`logger`], [`metrics`], [`host_file`] | x86 boot structures and layout; why the VM stopped; the VMM log; counters and the metrics sink; opening client-named host files without blocking |
//! | 2 | [`config`], [`kernel`], [`devices`], [`mmds`] | the API's validated configuration; the metadata service (store, guest protocol, responder); kernel and initrd loading; every device (legacy and virtio) with its `Persist` state |
//! | 3 | [`vstate`] | KVM VM and vCPUs, guest memory and its file/userfaultfd backends, the running [`vstate::machine::Machine`] |
//! | 4 | [`snapshot`] | the snapshot format (`state.json`), creating and sealing snapshots, disk copies |
//! | 5 | [`builder`], [`boot_error`] | turning a validated config or a snapshot into a running VM; classifying why a start failed |
//! | 6 | [`vmm`] | one VM's lifecycle as the API drives it |
//! | 7 | [`api`] | the Firecracker-compatible HTTP API over [`vmm`] |
//!
//! The `kiln-vmm` binary (`main.rs`) parses arguments and serves [`api`] or a config file.

pub mod api;
pub mod arch;
pub mod boot_error;
pub mod builder;
pub mod config;
pub mod devices;
pub mod exit;
pub mod host_file;
pub mod kernel;
pub mod logger;
pub mod metrics;
pub mod mmds;
pub mod seccomp;
pub mod snapshot;
#[cfg(test)]
mod test_dir;
pub mod vmm;
pub mod vstate;
