//! Process exit: writes a last metrics line and removes the socket files (API socket,
//! vsock `uds_path`; see `kiln_vmm::exit::bind_socket`) on every path out, including
//! SIGTERM/SIGINT.

use std::io::Write;

const HANDLED: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// Writes a last metrics line, flushes output, removes the socket files and exits.
pub fn exit(code: i32) -> ! {
    if let Err(e) = kiln_vmm::metrics::flush() {
        tracing::warn!("{e}");
    }
    let _ = std::io::stdout().flush();
    kiln_vmm::exit::remove_socket_files();
    std::process::exit(code)
}

fn sigset() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a plain sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in HANDLED {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks the termination signals in this thread (and every thread spawned after) and
/// waits for them on a dedicated thread, which exits cleanly. Call before any thread
/// is spawned.
pub fn block_and_handle() {
    let set = sigset();
    // SAFETY: valid sigset; a null old-set pointer is allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            kiln_vmm::seccomp::enter("signals");
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is valid and `sig` is a valid out pointer.
            if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                exit(128 + sig);
            }
        });
    if spawned.is_err() {
        eprintln!(
            "kiln-vmm: warning: no signal thread; socket files may be left behind on SIGTERM"
        );
    }
}
