//! Per-vCPU CPUID: KVM's supported set, with the topology and APIC ids of this VM.
//!
//! Each vCPU is one core of one socket, one thread per core; vCPU `i` has APIC id `i`.

use kvm_bindings::CpuId;

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_PMU: u32 = 0xa;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_EXT_SIZES: u32 = 0x8000_0008;
const LEAF_EXT_APIC_ID: u32 = 0x8000_001e;

const ECX_HYPERVISOR: u32 = 1 << 31;
/// The in-kernel LAPIC emulates the TSC-deadline timer, but KVM does not report it in
/// its supported CPUID; VMMs set it (one WRMSR per timer program, no LAPIC MMIO).
const ECX_TSC_DEADLINE: u32 = 1 << 24;
const EDX_HTT: u32 = 1 << 28;
const TOPO_LEVEL_SMT: u32 = 1;
const TOPO_LEVEL_CORE: u32 = 2;

/// Bits needed to number `n` items (ceil(log2(n))).
fn id_bits(n: u8) -> u32 {
    (u32::from(n.max(1)) - 1)
        .checked_ilog2()
        .map_or(0, |b| b + 1)
}

/// Adjusts `cpuid` (a copy of KVM's supported set) for vCPU `index` of `count`.
pub fn configure(cpuid: &mut CpuId, index: u8, count: u8, tsc_deadline: bool) {
    let apic_id = u32::from(index);
    let count32 = u32::from(count);
    for e in cpuid.as_mut_slice().iter_mut() {
        match e.function {
            LEAF_FEATURES => {
                e.ebx = (e.ebx & 0x0000_ffff) | (apic_id << 24) | (count32 << 16);
                e.ecx |= ECX_HYPERVISOR;
                if tsc_deadline {
                    e.ecx |= ECX_TSC_DEADLINE;
                }
                if count > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            LEAF_CACHE_PARAMS => {
                // EAX[31:26]: cores per package - 1; EAX[25:14]: threads sharing this cache - 1.
                let sharing = if (e.eax >> 5) & 7 >= 3 {
                    count32 - 1
                } else {
                    0
                };
                e.eax = (e.eax & 0x3ff) | ((count32 - 1) << 26) | (sharing << 14);
            }
            LEAF_PMU => {
                // No virtual PMU: the guest must not program counters we do not save.
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            LEAF_TOPOLOGY => {
                e.edx = apic_id;
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = (TOPO_LEVEL_SMT << 8) | e.index;
                    }
                    1 => {
                        e.eax = id_bits(count);
                        e.ebx = count32;
                        e.ecx = (TOPO_LEVEL_CORE << 8) | e.index;
                    }
                    _ => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = e.index;
                    }
                }
            }
            LEAF_EXT_SIZES => {
                // ECX[15:12]: APIC id bits; ECX[7:0]: cores - 1.
                e.ecx = (id_bits(count) << 12) | (count32 - 1);
            }
            LEAF_EXT_APIC_ID => {
                e.eax = apic_id;
                e.ebx = apic_id & 0xff; // compute unit id; one thread per unit
                e.ecx = 0;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    fn leaf(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        }
    }

    #[test]
    fn apic_ids_and_counts_follow_the_vcpu() {
        let entries = [
            leaf(1, 0),
            leaf(0xb, 0),
            leaf(0xb, 1),
            leaf(0xb, 2),
            leaf(LEAF_EXT_SIZES, 0),
        ];
        let mut cpuid = CpuId::from_entries(&entries).unwrap();
        configure(&mut cpuid, 2, 3, true);
        let s = cpuid.as_slice();
        assert_eq!(s[0].ebx >> 24, 2);
        assert_eq!((s[0].ebx >> 16) & 0xff, 3);
        assert_ne!(s[0].ecx & ECX_HYPERVISOR, 0);
        assert_ne!(s[0].ecx & ECX_TSC_DEADLINE, 0);
        assert_eq!((s[2].eax, s[2].ebx, s[2].edx), (2, 3, 2));
        assert_eq!(s[3].ebx, 0);
        assert_eq!(s[4].ecx & 0xff, 2);
    }

    #[test]
    fn id_bits_rounds_up() {
        assert_eq!([1, 2, 3, 4, 5, 32].map(id_bits), [0, 1, 2, 2, 3, 5]);
    }
}
