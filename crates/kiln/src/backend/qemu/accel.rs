//! KVM or software emulation (TCG) for QEMU.
//!
//! KVM when the host's KVM boots standard guests: a `vmx`/`svm` CPU flag and a
//! readable, writable `/dev/kvm` (the same test as `host_kvm_boots` in
//! `scripts/lib.sh`; a `/dev/kvm` without the flag is a software hypervisor such as
//! kvm_pvm, which cannot boot our kernel). Otherwise TCG, with one warning line on
//! stderr. `KILN_QEMU_ACCEL=kvm|tcg` overrides.

use std::sync::Once;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

/// The accelerator for a new VM (see the module docs).
pub fn choose() -> Result<Accel> {
    match std::env::var("KILN_QEMU_ACCEL").as_deref() {
        Ok("kvm") => return Ok(Accel::Kvm),
        Ok("tcg") => return Ok(Accel::Tcg),
        Ok(other) => {
            return Err(Error::InvalidInput(format!(
                "KILN_QEMU_ACCEL={other:?}: use kvm or tcg"
            )))
        }
        Err(_) => {}
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if kvm_usable() && has_virt_flag(&cpuinfo) {
        return Ok(Accel::Kvm);
    }
    static WARN: Once = Once::new();
    WARN.call_once(|| {
        eprintln!(
            "kiln: qemu: this host's KVM cannot boot a standard guest; using software emulation (slow)"
        )
    });
    Ok(Accel::Tcg)
}

fn kvm_usable() -> bool {
    // SAFETY: access(2) on a NUL-terminated literal; no memory is written.
    unsafe { libc::access(c"/dev/kvm".as_ptr(), libc::R_OK | libc::W_OK) == 0 }
}

/// Whether a `flags` line of /proc/cpuinfo names `vmx` or `svm`.
pub fn has_virt_flag(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .flat_map(|l| l.split_whitespace())
        .any(|f| f == "vmx" || f == "svm")
}

#[cfg(test)]
mod tests {
    use super::has_virt_flag;

    #[test]
    fn virt_flags_are_whole_words_on_flags_lines() {
        assert!(has_virt_flag(
            "processor\t: 0\nflags\t\t: fpu vme svm sse\n"
        ));
        assert!(has_virt_flag("flags\t\t: fpu vmx\n"));
        assert!(!has_virt_flag("flags\t\t: fpu vmxx svm_lock\n"));
        assert!(!has_virt_flag("model name\t: svm vmx\nflags\t\t: fpu\n"));
    }
}
