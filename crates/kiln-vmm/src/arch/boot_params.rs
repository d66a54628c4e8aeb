//! The Linux boot protocol's zero page: command line pointer, initrd and the e820 map.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};

use super::layout::*;

const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT: u32 = 0x0100_0000;

/// Where an initrd was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitrdPlacement {
    pub addr: u64,
    pub size: u64,
}

/// The e820 map for `mem_size` bytes of RAM: low RAM, the reserved EBDA/BIOS area,
/// RAM from 1 MiB up to the MMIO hole, and RAM above 4 GiB if any.
pub fn e820_map(mem_size: u64) -> Vec<(u64, u64, u32)> {
    let mut map = vec![
        (0, EBDA_START, E820_RAM),
        (EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED),
    ];
    for (start, len) in ram_ranges(mem_size) {
        let (start, len) = if start == 0 {
            (HIMEM_START, len - HIMEM_START)
        } else {
            (start, len)
        };
        map.push((start, len, E820_RAM));
    }
    map
}

/// Fills the zero page; a bzImage's own setup header, when given, is the starting point.
pub fn build(
    mem_size: u64,
    cmdline_len: usize,
    initrd: Option<InitrdPlacement>,
    hdr: Option<setup_header>,
) -> boot_params {
    let mut params = boot_params::default();
    if let Some(hdr) = hdr {
        params.hdr = hdr;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if let Some(i) = initrd {
        params.hdr.ramdisk_image = i.addr as u32;
        params.hdr.ramdisk_size = i.size as u32;
    }
    let map = e820_map(mem_size);
    for (slot, (addr, size, type_)) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry {
            addr: *addr,
            size: *size,
            r#type: *type_,
        };
    }
    params.e820_entries = map.len() as u8;
    params
}

/// Places an initrd of `size` bytes page-aligned at the top of low RAM, above `kernel_end`.
/// Returns `None` when it does not fit.
pub fn place_initrd(mem_size: u64, kernel_end: u64, size: u64) -> Option<InitrdPlacement> {
    let low_top = mem_size.min(MMIO_GAP_START);
    let addr = low_top.checked_sub(size)? & !0xfff;
    (addr >= kernel_end).then_some(InitrdPlacement { addr, size })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e820_covers_ram_and_reserves_the_bios_area() {
        let map = e820_map(256 << 20);
        assert_eq!(map[0], (0, EBDA_START, E820_RAM));
        assert_eq!(map[1].2, E820_RESERVED);
        assert_eq!(map[2], (HIMEM_START, (256 << 20) - HIMEM_START, E820_RAM));
        assert_eq!(e820_map(5 << 30).last().unwrap().0, 1 << 32);
    }

    #[test]
    fn initrd_goes_high_and_must_fit_above_the_kernel() {
        let p = place_initrd(128 << 20, 16 << 20, 10_000).unwrap();
        assert_eq!(p.addr % 4096, 0);
        assert!(p.addr + p.size <= 128 << 20);
        assert_eq!(place_initrd(32 << 20, 30 << 20, 4 << 20), None);
        assert_eq!(place_initrd(1 << 20, 0, 2 << 20), None);
        let zp = build(128 << 20, 10, Some(p), None);
        assert_eq!({ zp.hdr.ramdisk_image }, p.addr as u32);
        assert_eq!(zp.e820_entries, 3);
    }
}
