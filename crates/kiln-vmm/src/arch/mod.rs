//! x86_64 machine setup: memory layout, boot structures and vCPU register state.
//!
//! Split by concern the way rust-vmm's vmm-reference does: one file per table or
//! register group, each a pure function over guest memory or a KVM struct.

pub mod boot_params;
pub mod cpuid;
pub mod gdt;
pub mod layout;
pub mod mptable;
pub mod msrs;
pub mod regs;
