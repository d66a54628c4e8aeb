//! Why the VM stopped, and the one place that turns it into the process's exit; plus the
//! registry of socket files the process created, which every exit path removes.

use std::io;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;

/// Socket files this process bound (the API socket, the vsock `uds_path`).
static SOCKET_FILES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn socket_files() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    SOCKET_FILES.lock().unwrap_or_else(|p| p.into_inner())
}

/// Binds a unix listener at `path` and records the file for [`remove_socket_files`]. The
/// registry lock is held across the bind, so an exit racing with it still removes the file.
pub fn bind_socket(path: &Path) -> io::Result<UnixListener> {
    let mut files = socket_files();
    let listener = UnixListener::bind(path)?;
    files.push(path.to_path_buf());
    Ok(listener)
}

/// Removes a socket file recorded by [`bind_socket`] now (its owner is done with it).
pub fn remove_socket(path: &Path) {
    let mut files = socket_files();
    if let Some(i) = files.iter().position(|p| p == path) {
        files.swap_remove(i);
        let _ = std::fs::remove_file(path);
    }
}

/// Removes every recorded socket file. The binary calls this on each way out.
pub fn remove_socket_files() {
    for p in socket_files().drain(..) {
        let _ = std::fs::remove_file(p);
    }
}

/// Why the VMM should stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The agent asked for power-off through the control port.
    PowerOff,
    /// The guest reset the machine (i8042 reset, triple fault, KVM system event). This
    /// is how `reboot` ends the VMM, and how a panicking kernel with `panic=-1` does.
    Reset,
    /// The VMM cannot go on (KVM error, unhandled exit).
    Error(String),
}

/// Fan-in of stop requests from vCPU and device threads; the first one wins.
pub struct ExitSignal {
    tx: Mutex<Sender<ExitReason>>,
}

impl ExitSignal {
    pub fn new() -> (Self, Receiver<ExitReason>) {
        let (tx, rx) = channel();
        (Self { tx: Mutex::new(tx) }, rx)
    }

    pub fn exit(&self, reason: ExitReason) {
        // The receiver only goes away when the process is already exiting.
        let _ = self.tx.lock().map(|tx| tx.send(reason));
    }
}

/// Process exit codes of `kiln-vmm`.
pub mod code {
    /// The guest powered off or rebooted.
    pub const CLEAN: i32 = 0;
    /// The guest kernel panicked (or died without a clean shutdown).
    pub const GUEST_PANIC: i32 = 1;
    /// Bad configuration or a VMM error.
    pub const VMM_ERROR: i32 = 2;
}

/// Finds the kernel's panic line in the tail of the console output.
pub fn panic_reason(console_tail: &[u8]) -> Option<String> {
    const MARK: &str = "Kernel panic - not syncing: ";
    let text = String::from_utf8_lossy(console_tail);
    let start = text.rfind(MARK)? + MARK.len();
    let line = text[start..].lines().next().unwrap_or("").trim();
    Some(line.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_last_panic_line() {
        let tail = b"noise\r\n[    0.5] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\r\n[ 0.6] ---[ end";
        assert_eq!(
            panic_reason(tail).as_deref(),
            Some("Attempted to kill init! exitcode=0x00000100")
        );
        assert_eq!(panic_reason(b"reboot: Restarting system\r\n"), None);
    }

    #[test]
    fn bound_sockets_are_removed() {
        let dir = std::env::temp_dir();
        let a = dir.join(format!("kiln-exit-test-{}-a", std::process::id()));
        let b = dir.join(format!("kiln-exit-test-{}-b", std::process::id()));
        let _la = bind_socket(&a).unwrap();
        let _lb = bind_socket(&b).unwrap();
        assert!(a.exists() && b.exists());
        remove_socket(&a);
        assert!(!a.exists() && b.exists());
        // Removing an unknown path touches nothing.
        std::fs::write(&a, b"x").unwrap();
        remove_socket(&a);
        assert!(a.exists());
        std::fs::remove_file(&a).unwrap();
        remove_socket(&b);
        assert!(!b.exists());
    }

    #[test]
    fn first_reason_is_delivered() {
        let (sig, rx) = ExitSignal::new();
        sig.exit(ExitReason::PowerOff);
        sig.exit(ExitReason::Reset);
        assert_eq!(rx.recv().unwrap(), ExitReason::PowerOff);
    }
}
