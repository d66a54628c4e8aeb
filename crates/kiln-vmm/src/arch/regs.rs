//! Boot register state: general registers, segment/control registers with an identity
//! page table for 64-bit entry, FPU defaults and the local APIC's LINT pins.

use kvm_bindings::{kvm_fpu, kvm_lapic_state, kvm_regs, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::gdt::{segment_from_gdt, BOOT_GDT};
use super::layout::*;

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// Error writing boot structures into guest memory.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the boot {what} into guest memory: {source}")]
pub struct BootMemoryError {
    pub what: &'static str,
    #[source]
    pub source: vm_memory::GuestMemoryError,
}

fn write<T: vm_memory::ByteValued>(
    mem: &GuestMemoryMmap,
    what: &'static str,
    val: T,
    addr: u64,
) -> Result<(), BootMemoryError> {
    mem.write_obj(val, GuestAddress(addr))
        .map_err(|source| BootMemoryError { what, source })
}

/// General registers for the 64-bit Linux entry point.
pub fn boot_regs(entry: u64) -> kvm_regs {
    kvm_regs {
        rflags: 0x2,
        rip: entry,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rsi: ZERO_PAGE_START,
        ..Default::default()
    }
}

/// Writes the GDT, IDT and identity page tables (first 1 GiB, 2 MiB pages) to guest
/// memory and returns `sregs` set up for long mode on top of `base`.
pub fn boot_sregs(mem: &GuestMemoryMmap, base: kvm_sregs) -> Result<kvm_sregs, BootMemoryError> {
    let mut sregs = base;
    for (i, entry) in BOOT_GDT.iter().enumerate() {
        write(mem, "GDT", *entry, BOOT_GDT_START + i as u64 * 8)?;
    }
    write(mem, "IDT", 0u64, BOOT_IDT_START)?;

    let code = segment_from_gdt(&BOOT_GDT, 1);
    let data = segment_from_gdt(&BOOT_GDT, 2);
    let tss = segment_from_gdt(&BOOT_GDT, 3);
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&BOOT_GDT) - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;

    write(mem, "PML4", PDPTE_START | 0x03, PML4_START)?;
    write(mem, "PDPT", PDE_START | 0x03, PDPTE_START)?;
    for i in 0..512u64 {
        // Present, writable, 2 MiB page.
        write(mem, "page directory", (i << 21) | 0x83, PDE_START + i * 8)?;
    }
    sregs.cr3 = PML4_START;
    sregs.cr4 |= X86_CR4_PAE;
    sregs.cr0 |= X86_CR0_PE | X86_CR0_PG;
    sregs.efer |= EFER_LME | EFER_LMA;
    Ok(sregs)
}

/// x87/SSE defaults a BIOS would leave behind.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn set_delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

fn lapic_reg(lapic: &kvm_lapic_state, off: usize) -> u32 {
    let b = &lapic.regs[off..off + 4];
    u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])
}

fn set_lapic_reg(lapic: &mut kvm_lapic_state, off: usize, val: u32) {
    for (i, byte) in val.to_le_bytes().iter().enumerate() {
        lapic.regs[off + i] = *byte as _;
    }
}

/// LINT0 as ExtINT (the PIC) and LINT1 as NMI, as the MP table describes them.
pub fn configure_lint(mut lapic: kvm_lapic_state) -> kvm_lapic_state {
    let lvt0 = lapic_reg(&lapic, APIC_LVT0);
    set_lapic_reg(
        &mut lapic,
        APIC_LVT0,
        set_delivery_mode(lvt0, APIC_MODE_EXTINT),
    );
    let lvt1 = lapic_reg(&lapic, APIC_LVT1);
    set_lapic_reg(
        &mut lapic,
        APIC_LVT1,
        set_delivery_mode(lvt1, APIC_MODE_NMI),
    );
    lapic
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tables_identity_map_the_first_gigabyte() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let sregs = boot_sregs(&mem, kvm_sregs::default()).unwrap();
        assert_eq!(sregs.cr3, PML4_START);
        assert_ne!(sregs.efer & EFER_LMA, 0);
        let pde: u64 = mem.read_obj(GuestAddress(PDE_START + 8 * 511)).unwrap();
        assert_eq!(pde, (511 << 21) | 0x83);
        let gdt1: u64 = mem.read_obj(GuestAddress(BOOT_GDT_START + 8)).unwrap();
        assert_eq!(gdt1, BOOT_GDT[1]);
    }

    #[test]
    fn lint_pins_get_extint_and_nmi() {
        let lapic = configure_lint(kvm_lapic_state::default());
        assert_eq!((lapic_reg(&lapic, APIC_LVT0) >> 8) & 7, APIC_MODE_EXTINT);
        assert_eq!((lapic_reg(&lapic, APIC_LVT1) >> 8) & 7, APIC_MODE_NMI);
    }
}
