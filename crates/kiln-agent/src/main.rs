//! kiln-agent: the guest's PID 1.
//!
//! This stage: mount the base filesystems, run the `kiln.*` steps from the
//! kernel command line (see `cmdline.rs`), tell the VMM the guest is ready
//! (control port 0x440), then power off, reboot, panic or wait as asked.
//! A healthy boot prints nothing unless the command line asks for output.

#[macro_use]
mod console;
mod actions;
mod cmdline;
mod mounts;
mod port;
mod steps;

use cmdline::{Action, Directive};

/// /proc/cmdline is at most a few KiB (COMMAND_LINE_SIZE is 2048 on x86).
const CMDLINE_LIMIT: u64 = 64 * 1024;

fn main() {
    // SAFETY: getpid has no preconditions.
    if unsafe { libc::getpid() } != 1 {
        // Mounting tmpfs over /tmp and /run of a host would be a nasty surprise.
        say!("must run as PID 1 (the guest's init); refusing to start");
        std::process::exit(2);
    }

    mounts::mount_base();
    console::ensure_stdio();

    let mut action = Action::default();
    let mut mounted = Vec::new();
    for directive in cmdline::parse(&read_cmdline()) {
        match directive {
            Directive::Report => steps::report(),
            Directive::Mount(spec) => mounted.extend(mounts::mount_spec(&spec)),
            Directive::Cat(path) => steps::cat(&path),
            Directive::Write { path, data } => steps::write(&path, &data),
            Directive::Action(a) => action = a,
            Directive::Bad { key, value } => say!("bad {key}: {value}"),
        }
    }

    let port = port::ControlPort::open();
    port.write(port::MAGIC_READY);
    actions::run(action, &port, &mounted)
}

fn read_cmdline() -> Vec<u8> {
    use std::io::Read;
    let mut buf = Vec::new();
    let result = std::fs::File::open("/proc/cmdline")
        .and_then(|f| f.take(CMDLINE_LIMIT).read_to_end(&mut buf));
    if let Err(e) = result {
        say!("read /proc/cmdline failed: {}", console::io_strerror(&e));
    }
    buf
}
