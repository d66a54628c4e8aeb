//! KVM state: the VM (memory slots, irqchip, PIT), its vCPUs, guest memory and the
//! assembled [`machine::Machine`] that pause, resume and snapshots work on.
//!
//! Guest memory comes from [`memory`] at boot, or at a restore from a snapshot's memory
//! file: mapped copy-on-write ([`mem_file::map_private`]) or served page by page by a
//! userfaultfd handler ([`uffd`]).

pub mod control;
pub mod machine;
pub mod mem_file;
pub mod memory;
pub mod uffd;
pub mod vcpu;
pub mod vcpu_state;
pub mod vm;
pub mod vm_state;
