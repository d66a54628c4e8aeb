//! Per-process figures from /proc and KVM's debugfs: RSS without guest memory, and the
//! VM-exit count of a process's VM.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

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

/// The per-VM statistics directories (`<tid>-<fd>`) that exist now.
pub fn vm_dirs() -> HashSet<PathBuf> {
    let Ok(dir) = std::fs::read_dir(Path::new(DEBUGFS).join("kvm")) else {
        return HashSet::new();
    };
    dir.flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains('-'))
        })
        .collect()
}

/// Total VM exits so far of the VM that process `pid` created since `before` was taken.
/// KVM names the directory `<tid>-<fd>` after the *thread* that created the VM, so the
/// VM is the new directory whose tid is one of `pid`'s threads; if that thread is gone,
/// the only new directory (other VMs may be starting at the same time, e.g. tests in
/// parallel: then there is no answer rather than a wrong one).
pub fn vm_exits(before: &HashSet<PathBuf>, pid: u32) -> Option<u64> {
    let new: Vec<PathBuf> = vm_dirs().difference(before).cloned().collect();
    let ours: Vec<&PathBuf> = new
        .iter()
        .filter(|d| {
            let name = d.file_name().map(|n| n.to_string_lossy().into_owned());
            let tid = name.as_deref().and_then(|n| n.split('-').next());
            tid.is_some_and(|t| Path::new(&format!("/proc/{pid}/task/{t}")).exists())
        })
        .collect();
    let dir = match (ours.as_slice(), new.as_slice()) {
        ([d], _) => *d,
        ([], [d]) => d,
        _ => return None,
    };
    let text = std::fs::read_to_string(dir.join("exits")).ok()?;
    text.trim().parse().ok()
}
