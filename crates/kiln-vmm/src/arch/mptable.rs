//! Intel MultiProcessor Specification 1.4 tables: how a guest without ACPI finds its
//! CPUs, the IOAPIC and the ISA interrupt routing.
//!
//! Built as plain little-endian bytes (no packed structs), then written once.

use super::layout::{APIC_START, IOAPIC_START, IRQ_MAX};

const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTPROCESSOR: u8 = 2;
const CPU_STEPPING: u32 = 0x600;
const CPU_FEATURE_APIC: u32 = 0x200;
const CPU_FEATURE_FPU: u32 = 0x001;
const MP_INT: u8 = 0;
const MP_NMI: u8 = 1;
const MP_EXTINT: u8 = 3;
const BUS_ISA: &[u8; 6] = b"ISA   ";

/// Highest vCPU count the table (and an 8-bit APIC id space with one id for the IOAPIC) holds.
pub const MAX_CPUS: u8 = 254;

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

fn config_entries(num_cpus: u8) -> (Vec<u8>, u16) {
    let ioapic_id = num_cpus + 1;
    let mut e = Vec::new();
    let mut count = 0u16;
    for cpu in 0..num_cpus {
        e.extend_from_slice(&[0, cpu, APIC_VERSION]);
        e.push(CPU_ENABLED | if cpu == 0 { CPU_BOOTPROCESSOR } else { 0 });
        e.extend_from_slice(&CPU_STEPPING.to_le_bytes());
        e.extend_from_slice(&(CPU_FEATURE_APIC | CPU_FEATURE_FPU).to_le_bytes());
        e.extend_from_slice(&[0; 8]);
        count += 1;
    }
    e.extend_from_slice(&[1, 0]);
    e.extend_from_slice(BUS_ISA);
    e.extend_from_slice(&[2, ioapic_id, IOAPIC_VERSION, 1]);
    e.extend_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    count += 2;
    for irq in 0..=IRQ_MAX as u8 {
        // type, irq type, flags (u16, conforming), source bus, source irq, dest apic, dest pin
        e.extend_from_slice(&[3, MP_INT, 0, 0, 0, irq, ioapic_id, irq]);
        count += 1;
    }
    // Local interrupts: LINT0 = ExtINT from the PIC, LINT1 = NMI to every CPU.
    e.extend_from_slice(&[4, MP_EXTINT, 0, 0, 0, 0, 0, 0]);
    e.extend_from_slice(&[4, MP_NMI, 0, 0, 0, 0, 0xff, 1]);
    count += 2;
    (e, count)
}

/// The floating pointer followed by the configuration table, for placement at `base`.
pub fn build(base: u64, num_cpus: u8) -> Vec<u8> {
    assert!(
        (1..=MAX_CPUS).contains(&num_cpus),
        "validated by machine config"
    );
    let (entries, count) = config_entries(num_cpus);
    let table_addr = base as u32 + 16;

    let mut table = Vec::with_capacity(44 + entries.len());
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&((44 + entries.len()) as u16).to_le_bytes());
    table.extend_from_slice(&[4, 0]); // spec revision 1.4, checksum (below)
    table.extend_from_slice(b"KILNVMM ");
    table.extend_from_slice(b"000000000000");
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    table.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&(APIC_START as u32).to_le_bytes());
    table.extend_from_slice(&0u32.to_le_bytes()); // extended table length + checksum + reserved
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut out = Vec::with_capacity(16 + table.len());
    out.extend_from_slice(b"_MP_");
    out.extend_from_slice(&table_addr.to_le_bytes());
    out.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]); // length 1 (x16), rev 1.4, checksum, features
    out[10] = checksum(&out[..16]);
    out.extend_from_slice(&table);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_checksum_to_zero_and_list_every_cpu() {
        let bytes = build(0x9fc00, 4);
        let sum = |b: &[u8]| b.iter().fold(0u8, |a, x| a.wrapping_add(*x));
        assert_eq!(sum(&bytes[..16]), 0);
        assert_eq!(&bytes[16..20], b"PCMP");
        let len = u16::from_le_bytes([bytes[20], bytes[21]]) as usize;
        assert_eq!(16 + len, bytes.len());
        assert_eq!(sum(&bytes[16..]), 0);
        let count = u16::from_le_bytes([bytes[16 + 34], bytes[16 + 35]]);
        assert_eq!(count as u32, 4 + 2 + (IRQ_MAX + 1) + 2);
        // First processor entry is the enabled boot processor with APIC id 0.
        assert_eq!(&bytes[60..64], &[0, 0, APIC_VERSION, 3]);
    }
}
