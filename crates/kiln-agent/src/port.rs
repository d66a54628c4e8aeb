//! kiln's guest control port (I/O port 0x440; see kiln-vmm's
//! `devices/control.rs`): writing 123 tells the VMM's boot timer that the
//! agent is ready, writing 124 asks the VMM to exit with status 0.
//!
//! Port I/O needs `ioperm`. Without it an `out` instruction faults (SIGSEGV),
//! which would kill PID 1, so the port is only ever written after a
//! successful `ioperm`. Outside x86-64, or when `ioperm` fails (not under
//! kiln, no CAP_SYS_RAWIO), writes are silently dropped.

pub const CONTROL_PORT: u16 = 0x440;
pub const MAGIC_READY: u8 = 123;
pub const MAGIC_POWEROFF: u8 = 124;

/// The control port, usable once `ioperm` has granted access.
pub struct ControlPort {
    enabled: bool,
}

impl ControlPort {
    /// Requests access to the port; never fails (see the module docs).
    pub fn open() -> Self {
        Self {
            enabled: ioperm(CONTROL_PORT),
        }
    }

    pub fn write(&self, value: u8) {
        if self.enabled {
            outb(CONTROL_PORT, value);
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn ioperm(port: u16) -> bool {
    // SAFETY: ioperm only changes this process's I/O permission bitmap.
    unsafe { libc::ioperm(libc::c_ulong::from(port), 1, 1) == 0 }
}

#[cfg(target_arch = "x86_64")]
fn outb(port: u16, value: u8) {
    // SAFETY: only called after ioperm granted access to `port`; under kiln
    // the write traps to the VMM's control-port device and has no other effect.
    unsafe {
        std::arch::asm!(
            "out dx, al",
            in("dx") port,
            in("al") value,
            options(nomem, nostack, preserves_flags)
        );
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn ioperm(_port: u16) -> bool {
    false
}

#[cfg(not(target_arch = "x86_64"))]
fn outb(_port: u16, _value: u8) {}
