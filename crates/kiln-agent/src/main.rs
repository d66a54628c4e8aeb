//! kiln-agent: the guest's PID 1 — the boot sequence. The work lives in the
//! library (`lib.rs`).
//!
//! 1. mount /proc /sys /dev /tmp /run;
//! 2. `kiln.root=` (+ `kiln.overlay=`): switch to the overlay root, or stop the boot;
//! 3. the `kiln.*` steps in command-line order (report, mount, cat, write);
//! 4. hostname, loopback up, our OOM score to -1000;
//! 5. the Ctrl-Alt-Del watcher (SIGINT: sync and power off; see `ctrl_alt_del`);
//! 6. the reaper and the agent server: vsock (port 1024), if the guest has vsock,
//!    and the `kiln.agent` virtio-console port, if the guest has one;
//! 7. tell the VMM we are ready (the host connects right after);
//! 8. `kiln.action=`: power off, reboot, panic, or — the default — serve forever.
//!
//! A healthy boot prints nothing unless `kiln.report`/`kiln.verbose` ask for it.

use std::path::PathBuf;
use std::sync::Arc;

use kiln_agent::cmdline::{self, Action, Directive};
use kiln_agent::server::{self, serial, vsock::VsockListener, Context, Waiter};
use kiln_agent::{actions, console, ctrl_alt_del, mounts, port, root, say, steps, system};

/// /proc/cmdline is at most a few KiB (COMMAND_LINE_SIZE is 2048 on x86).
const CMDLINE_LIMIT: u64 = 64 * 1024;

/// The directives that shape the boot itself (the rest are steps).
#[derive(Default)]
struct Boot {
    action: Action,
    verbose: bool,
    root: Option<PathBuf>,
    overlay: Option<PathBuf>,
    hostname: Option<String>,
    poweroff_by_reboot: bool,
    net: Option<kiln_agent::net::NetSpec>,
}

fn main() {
    // SAFETY: getpid has no preconditions.
    if unsafe { libc::getpid() } != 1 {
        // Mounting tmpfs over /tmp and /run of a host would be a nasty surprise.
        say!("must run as PID 1 (the guest's init); refusing to start");
        std::process::exit(2);
    }
    // Before the first thread starts, so that every thread inherits it: SIGINT
    // (Ctrl-Alt-Del) is only ever taken by the watcher's sigwait.
    if let Err(e) = ctrl_alt_del::block(ctrl_alt_del::CAD_SIGNAL) {
        say!("cannot block SIGINT: {}", console::io_strerror(&e));
    }

    mounts::mount_base();
    console::ensure_stdio();

    let directives = cmdline::parse(&read_cmdline());
    let boot = boot_config(&directives);
    if boot.poweroff_by_reboot {
        actions::power_off_by_reboot();
    }
    match (&boot.root, &boot.overlay) {
        (Some(lower), overlay) => switch_root(lower, overlay.as_deref()),
        (None, Some(_)) => say!("kiln.overlay without kiln.root: ignored"),
        (None, None) => {}
    }
    let mounted = run_steps(&directives);

    setup_system(&boot);
    if let Err(e) = ctrl_alt_del::start(mounted.clone()) {
        say!(
            "Ctrl-Alt-Del will restart without syncing: {}",
            console::io_strerror(&e)
        );
    }
    let waiter = start_reaper();
    let ctx = server_context(&waiter, mounted.clone());
    let listener = bind_vsock(&boot);
    let serial = serial::start(ctx.clone(), boot.verbose);

    let port = port::ControlPort::open();
    port.write(port::MAGIC_READY);
    actions::run(boot.action, &port, &mounted);

    // Waiting (the default action), or power off failed: keep serving.
    match (listener, waiter) {
        (Some(listener), _) => server::serve_forever(listener, ctx),
        // The serial server needs exit statuses: no blanket reaping then.
        (None, Waiter::Reaper(_)) => actions::park_forever(),
        (None, Waiter::PerPid) if serial => actions::park_forever(),
        (None, Waiter::PerPid) => actions::reap_forever(),
    }
}

fn boot_config(directives: &[Directive]) -> Boot {
    let mut boot = Boot::default();
    for d in directives {
        match d {
            Directive::Action(a) => boot.action = *a,
            Directive::Report | Directive::Verbose => boot.verbose = true,
            Directive::Root(dev) => boot.root = Some(dev.clone()),
            Directive::Overlay(dev) => boot.overlay = Some(dev.clone()),
            Directive::Hostname(name) => boot.hostname = Some(name.clone()),
            Directive::PoweroffByReboot => boot.poweroff_by_reboot = true,
            Directive::Net(spec) => boot.net = Some(*spec),
            _ => {}
        }
    }
    boot
}

/// Switches to the disk root, or stops the boot visibly: the reason on the
/// console, then PID 1 exits (kernel panic, which the VMM reports as a failure).
fn switch_root(lower: &std::path::Path, overlay: Option<&std::path::Path>) {
    if let Err(e) = root::switch(lower, overlay) {
        say!("root: {e}");
        // SAFETY: tcdrain on our stdout; waits until the line left the UART.
        unsafe { libc::tcdrain(1) };
        std::process::exit(1);
    }
}

/// Runs the step directives in order; returns the `kiln.mount=` mount points.
fn run_steps(directives: &[Directive]) -> Vec<PathBuf> {
    let mut mounted = Vec::new();
    for directive in directives {
        match directive {
            Directive::Report => steps::report(),
            Directive::Mount(spec) => mounted.extend(mounts::mount_spec(spec)),
            Directive::Cat(path) => steps::cat(path),
            Directive::Write { path, data } => steps::write(path, data),
            Directive::Bad { key, value } => say!("bad {key}: {value}"),
            Directive::Action(_)
            | Directive::Verbose
            | Directive::Root(_)
            | Directive::Overlay(_)
            | Directive::Hostname(_)
            | Directive::Net(_)
            | Directive::PoweroffByReboot => {}
        }
    }
    mounted
}

fn setup_system(boot: &Boot) {
    let name = boot.hostname.as_deref().unwrap_or(system::DEFAULT_HOSTNAME);
    if let Err(e) = system::set_hostname(name) {
        say!("sethostname {name} failed: {}", console::io_strerror(&e));
    }
    if let Err(e) = system::loopback_up() {
        if boot.verbose {
            say!("lo up failed: {}", console::io_strerror(&e));
        }
    }
    if let Some(spec) = &boot.net {
        setup_network(spec);
    }
    if let Err(e) = system::set_oom_score_adj(-1000) {
        say!("oom_score_adj failed: {}", console::io_strerror(&e));
    }
}

/// `eth0` and resolv.conf; a failure is said on the console (the sandbox then has no
/// network, and its commands see why in `ip addr`).
fn setup_network(spec: &kiln_agent::net::NetSpec) {
    match kiln_agent::net::configure(spec) {
        Ok(()) => {}
        Err(e) => say!("eth0: cannot configure {}/{}: {e}", spec.addr, spec.prefix),
    }
    if let Err(e) = kiln_agent::net::write_resolv_conf(std::path::Path::new("/etc"), spec) {
        say!("/etc/resolv.conf: {}", console::io_strerror(&e));
    }
}

fn start_reaper() -> Waiter {
    Waiter::reaper().unwrap_or_else(|e| {
        say!(
            "cannot start the reaper thread ({}): orphans will not be reaped",
            console::io_strerror(&e)
        );
        Waiter::PerPid
    })
}

/// The vsock listener, or `None` without vsock.
fn bind_vsock(boot: &Boot) -> Option<VsockListener> {
    match VsockListener::bind(kiln_proto::AGENT_PORT) {
        Ok(l) => {
            if boot.verbose {
                say!("vsock: listening on port {}", kiln_proto::AGENT_PORT);
            }
            Some(l)
        }
        Err(e) => {
            if boot.verbose {
                say!("vsock: unavailable ({})", console::io_strerror(&e));
            }
            None
        }
    }
}

/// What every connection shares, over vsock or the serial port.
fn server_context(waiter: &Waiter, mounted: Vec<PathBuf>) -> Arc<Context> {
    let ctx = Context::new(waiter.clone(), move |reboot| {
        // ioperm is per thread: open the port on the thread that powers off.
        let port = port::ControlPort::open();
        if reboot {
            actions::reboot(&mounted);
        } else {
            actions::power_off(&port, &mounted);
        }
    });
    Arc::new(ctx)
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
