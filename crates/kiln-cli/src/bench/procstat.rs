//! Per-process figures from /proc and KVM's debugfs: RSS without guest memory, and the
//! VM-exit count of a process's VM.

use std::path::Path;

/// RSS in KiB of `pid`, not counting mappings of at least `guest_kib` (guest RAM; no
/// other mapping of a VMM is that large).
pub fn rss_without_guest_kib(pid: u32, guest_kib: u64) -> Option<u64> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let mut total = 0;
    let mut skip = false;
    for line in smaps.lines() {
        let mut it = line.split_whitespace();
        match it.next() {
            Some("Size:") => {
                let size: u64 = it.next()?.parse().ok()?;
                skip = size >= guest_kib;
            }
            Some("Rss:") if !skip => total += it.next()?.parse::<u64>().ok()?,
            _ => {}
        }
    }
    Some(total)
}

const DEBUGFS: &str = "/sys/kernel/debug";

/// Mounts debugfs if KVM's statistics are not visible yet (needs root; best effort).
pub fn ensure_debugfs() -> bool {
    let kvm = Path::new(DEBUGFS).join("kvm");
    if kvm.is_dir() {
        return true;
    }
    let src = c"debugfs";
    let dst = c"/sys/kernel/debug";
    // SAFETY: valid NUL-terminated strings; no data argument.
    unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    kvm.is_dir()
}

/// Total VM exits so far of the (first) VM owned by `pid`, from
/// /sys/kernel/debug/kvm/<pid>-<fd>/exits.
pub fn vm_exits(pid: u32) -> Option<u64> {
    let prefix = format!("{pid}-");
    let dir = std::fs::read_dir(Path::new(DEBUGFS).join("kvm")).ok()?;
    for e in dir.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let text = std::fs::read_to_string(e.path().join("exits")).ok()?;
            return text.trim().parse().ok();
        }
    }
    None
}
