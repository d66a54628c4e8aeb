//! Guest physical memory layout (the same shape as Firecracker's, so guest kernels
//! configured for Firecracker boot here unchanged).

/// GDT written by the VMM before the first instruction.
pub const BOOT_GDT_START: u64 = 0x500;
/// Empty IDT.
pub const BOOT_IDT_START: u64 = 0x520;
/// Linux boot protocol "zero page" (`struct boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity-mapped page tables: PML4, PDPT, PD (2 MiB pages covering the first 1 GiB).
pub const PML4_START: u64 = 0x9000;
pub const PDPTE_START: u64 = 0xa000;
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Longest command line the 6.x x86 kernel accepts (COMMAND_LINE_SIZE).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// MP table (in the EBDA, where the kernel scans for `_MP_`).
pub const MPTABLE_START: u64 = 0x9fc00;
/// End of usable low RAM (the EBDA and BIOS area above it are reserved).
pub const EBDA_START: u64 = 0x9fc00;
/// Kernels are loaded from 1 MiB.
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO hole (virtio-mmio devices, IOAPIC, LAPIC).
pub const MMIO_GAP_START: u64 = 0xd000_0000;
/// First address past 32 bits; RAM resumes here when the guest has more than the hole allows.
pub const MMIO_GAP_END: u64 = 1 << 32;
/// Where virtio-mmio device windows start, one `0x1000` window each.
pub const VIRTIO_MMIO_START: u64 = MMIO_GAP_START;
/// First GSI for virtio-mmio devices (0..4 are legacy: timer, keyboard, cascade, -, serial 4).
pub const VIRTIO_IRQ_START: u32 = 5;
/// Highest IOAPIC pin usable for devices.
pub const IRQ_MAX: u32 = 23;
/// IOAPIC and local APIC base addresses.
pub const IOAPIC_START: u64 = 0xfec0_0000;
pub const APIC_START: u64 = 0xfee0_0000;
/// KVM's TSS and identity-map pages live just below the IOAPIC... (Firecracker's choice).
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;

/// Legacy ports.
pub const SERIAL_PORT: u64 = 0x3f8;
pub const SERIAL_IRQ: u32 = 4;
pub const I8042_PORT: u64 = 0x60;
pub const I8042_IRQ: u32 = 1;
/// kiln's guest control port: the agent writes `123` when ready (boot timer) and `124`
/// to power the VM off.
pub const CONTROL_PORT: u64 = 0x440;

/// Guest RAM ranges for `mem_size` bytes, split around the MMIO hole.
pub fn ram_ranges(mem_size: u64) -> Vec<(u64, u64)> {
    if mem_size <= MMIO_GAP_START {
        vec![(0, mem_size)]
    } else {
        vec![
            (0, MMIO_GAP_START),
            (MMIO_GAP_END, mem_size - MMIO_GAP_START),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_is_split_around_the_mmio_hole() {
        assert_eq!(ram_ranges(128 << 20), vec![(0, 128 << 20)]);
        assert_eq!(
            ram_ranges(4 << 30),
            vec![(0, MMIO_GAP_START), (1 << 32, (4 << 30) - MMIO_GAP_START)]
        );
    }
}
