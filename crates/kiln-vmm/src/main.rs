//! `kiln-vmm`: one process per microVM. Drive it like Firecracker: `--api-sock PATH`
//! and the REST API, or `--config-file FILE --no-api` to boot at once.
//!
//! Exit status: 0 when the guest powers off or reboots, 1 when the guest kernel panics
//! (a one-line reason on stderr), 2 on bad input or a VMM error.

mod signals;

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use kiln_vmm::api::Limits;
use kiln_vmm::config::{HostFacts, ValidConfig};
use kiln_vmm::exit::{code, panic_reason, ExitReason};
use kiln_vmm::logger::{Level, LoggerConfig};
use kiln_vmm::vmm::{ConsoleTarget, Started, Vmm};

#[derive(Parser, Debug)]
#[command(
    name = "kiln-vmm",
    version,
    about = "kiln's KVM virtual machine monitor (Firecracker-compatible API)"
)]
struct Args {
    /// Unix socket for the Firecracker-compatible REST API.
    #[arg(long, value_name = "PATH")]
    api_sock: Option<PathBuf>,
    /// Firecracker-style JSON config; the VM starts at once.
    #[arg(long, value_name = "FILE")]
    config_file: Option<PathBuf>,
    /// Do not serve the API (needs --config-file).
    #[arg(long)]
    no_api: bool,
    /// Instance id reported by `GET /`.
    #[arg(long, default_value = "anonymous-instance")]
    id: String,
    /// Guest serial console: `off` (default, fastest), `stdout`, or a file to append to.
    #[arg(long, default_value = "off", value_name = "off|stdout|FILE")]
    console: String,
    /// Cap of the --console FILE: past it the oldest half is dropped (the file's first
    /// line then says so). 0: no cap.
    #[arg(long, default_value_t = 8, value_name = "MIB")]
    console_max_mib: u64,
    /// Write why the VM failed before its agent was ready to this JSON file (atomically);
    /// a successful start removes a stale one.
    #[arg(long, value_name = "FILE")]
    boot_error: Option<PathBuf>,
    /// Append metrics (one JSON line per flush) to this file or named pipe; flushed on
    /// FlushMetrics, every 60 s and at exit. Same as `PUT /metrics`.
    #[arg(long, alias = "metrics-path", value_name = "PATH")]
    metrics: Option<PathBuf>,
    /// Accepted for Firecracker compatibility: kiln's boot timer is always on.
    #[arg(long)]
    boot_timer: bool,
    /// Write the VMM's log lines to this file or named pipe instead of stderr (as
    /// `PUT /logger {"log_path": ...}`; then the logger cannot be configured again).
    #[arg(long, value_name = "PATH")]
    log_path: Option<PathBuf>,
    /// Log level: Error, Warning, Info, Debug, Trace or Off (case-insensitive). Default:
    /// Info with --log-path, else Off (or KILN_VMM_LOG).
    #[arg(long, value_name = "LEVEL", value_parser = parse_level)]
    level: Option<Level>,
    /// Show each line's level.
    #[arg(long)]
    show_level: bool,
    /// Show each line's source file and line.
    #[arg(long)]
    show_log_origin: bool,
    /// Log only events of modules under this path (e.g. kiln_vmm::devices).
    #[arg(long, value_name = "MODULE")]
    module: Option<String>,
    /// Largest MMDS data store, in bytes (JSON as sent); a bigger PUT/PATCH /mmds is a 400.
    #[arg(long, value_name = "BYTES", default_value_t = kiln_vmm::mmds::DEFAULT_SIZE_LIMIT)]
    mmds_size_limit: usize,
    /// Refused: kiln-vmm runs only its built-in per-thread filters (docs/VMM.md).
    #[arg(long, value_name = "FILE")]
    seccomp_filter: Option<PathBuf>,
    /// Accepted for Firecracker compatibility and ignored (the jailer's timestamps).
    #[arg(long, value_name = "US", hide = true)]
    start_time_us: Option<u64>,
    #[arg(long, value_name = "US", hide = true)]
    start_time_cpu_us: Option<u64>,
    #[arg(long, value_name = "US", hide = true)]
    parent_cpu_time_us: Option<u64>,
    /// DEBUGGING ONLY: run every thread without its seccomp filter (docs/VMM.md). A
    /// compromised VMM thread could then make any syscall the host allows.
    #[arg(long)]
    no_seccomp: bool,
}

fn parse_level(s: &str) -> Result<Level, String> {
    Level::parse(s)
}

/// Sets up the VMM log from the flags (or KILN_VMM_LOG, e.g. `debug`).
fn configure_logger(args: &Args) {
    kiln_vmm::logger::set_instance_id(&args.id);
    kiln_vmm::logger::install();
    let flags = args.log_path.is_some()
        || args.level.is_some()
        || args.show_level
        || args.show_log_origin
        || args.module.is_some();
    if flags {
        let cfg = LoggerConfig {
            log_path: args.log_path.clone(),
            level: args.level,
            show_level: Some(args.show_level),
            show_log_origin: Some(args.show_log_origin),
            module: args.module.clone(),
        };
        if let Err(e) = kiln_vmm::logger::configure(&cfg) {
            die(format!("--log-path/--level: {e}"));
        }
    } else if let Ok(v) = std::env::var("KILN_VMM_LOG") {
        // The level word of the last directive ("debug", "kiln_vmm=debug").
        let word = v.rsplit([',', '=']).next().unwrap_or("");
        match Level::parse(word) {
            Ok(l) => kiln_vmm::logger::set_default_level(l),
            Err(e) => die(format!("KILN_VMM_LOG={v:?}: {e}")),
        }
    }
}

fn die(msg: impl std::fmt::Display) -> ! {
    eprintln!("kiln-vmm: error: {msg}");
    kiln_vmm::boot_error::record_if_absent("config", &msg.to_string());
    signals::exit(code::VMM_ERROR)
}

fn load_config(path: &PathBuf, host: &HostFacts) -> ValidConfig {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| die(format!("cannot read --config-file {}: {e}", path.display())));
    ValidConfig::from_json(&text, host)
        .unwrap_or_else(|e| die(format!("--config-file {}: {e}", path.display())))
}

fn bind(path: &Path) -> UnixListener {
    if path.exists() {
        die(format!(
            "API socket {} already exists; remove it (is another kiln-vmm using it?) or choose another --api-sock",
            path.display()
        ));
    }
    kiln_vmm::exit::bind_socket(path)
        .unwrap_or_else(|e| die(format!("cannot bind API socket {}: {e}", path.display())))
}

/// Records why a VM that never got its agent ready stopped.
fn record_early_exit(reason: &ExitReason, started: &Started) {
    let tail: Vec<u8> = match started.console_tail.lock() {
        Ok(t) => t.iter().copied().collect(),
        Err(_) => Vec::new(),
    };
    let (stage, msg) = match (reason, panic_reason(&tail)) {
        (ExitReason::Error(m), _) => ("other", m.clone()),
        (_, Some(why)) => ("kernel", format!("guest kernel panic: {why}")),
        _ => (
            "agent",
            "the guest stopped before its agent was ready (see console.log)".to_string(),
        ),
    };
    kiln_vmm::boot_error::record(stage, None, &msg);
}

/// Maps why the VM stopped to the process exit status.
fn outcome(reason: ExitReason, started: &Started) -> i32 {
    // The last line of a clean exit says why: kiln reads it from vmm.log to tell a
    // guest that stopped by itself from a VMM that died, when it is not our parent.
    match reason {
        ExitReason::PowerOff => {
            eprintln!("kiln-vmm: the guest powered off");
            code::CLEAN
        }
        ExitReason::Reset => {
            let tail: Vec<u8> = match started.console_tail.lock() {
                Ok(t) => t.iter().copied().collect(),
                Err(_) => Vec::new(),
            };
            match panic_reason(&tail) {
                Some(why) => {
                    eprintln!("kiln-vmm: guest kernel panic: {why}");
                    code::GUEST_PANIC
                }
                None => {
                    eprintln!("kiln-vmm: the guest rebooted");
                    code::CLEAN
                }
            }
        }
        ExitReason::Error(msg) => {
            eprintln!("kiln-vmm: error: {msg}");
            code::VMM_ERROR
        }
    }
}

/// Sets where metric lines go (`--metrics`, the config file's "metrics" section).
fn configure_metrics(metrics_path: PathBuf, from: &str) {
    let cfg = kiln_vmm::metrics::MetricsConfig { metrics_path };
    if let Err(e) = kiln_vmm::metrics::configure(&cfg) {
        die(format!("{from}: {e}"));
    }
}

/// The API's connection limits; tests shorten the timeouts through
/// `KILN_VMM_API_IDLE_TIMEOUT_MS` and `KILN_VMM_API_REQUEST_TIMEOUT_MS`.
fn api_limits() -> Limits {
    let ms = |var: &str, default: Duration| match std::env::var(var) {
        Err(_) => default,
        Ok(v) => match v.parse::<u64>() {
            Ok(n) if n > 0 => Duration::from_millis(n),
            _ => die(format!(
                "{var}={v:?} is not a positive number of milliseconds"
            )),
        },
    };
    let d = Limits::default();
    Limits {
        idle_timeout: ms("KILN_VMM_API_IDLE_TIMEOUT_MS", d.idle_timeout),
        request_timeout: ms("KILN_VMM_API_REQUEST_TIMEOUT_MS", d.request_timeout),
        ..d
    }
}

/// `--console-max-mib` in bytes (0: no cap).
fn console_max_bytes(mib: u64) -> u64 {
    match mib {
        0 => u64::MAX,
        n => n.saturating_mul(1 << 20),
    }
}

fn main() {
    kiln_vmm::metrics::mark_start();
    let args = Args::parse();
    if let Some(f) = &args.seccomp_filter {
        die(format!(
            "--seccomp-filter {}: kiln-vmm runs only its built-in per-thread filters \
             (seccomp/x86_64.json, compiled in; docs/VMM.md); remove --seccomp-filter \
             (--no-seccomp turns them off, for debugging only)",
            f.display()
        ));
    }
    configure_logger(&args);
    if args.no_seccomp {
        eprintln!(
            "kiln-vmm: WARNING: --no-seccomp: seccomp filters are OFF; every VMM thread may make any syscall. Use it only to debug a filter, never for untrusted guests"
        );
    } else {
        kiln_vmm::seccomp::enable();
    }
    signals::block_and_handle();
    if let Some(p) = &args.boot_error {
        kiln_vmm::boot_error::set_path(p.clone());
    }
    if args.no_api && args.config_file.is_none() {
        die("--no-api needs --config-file FILE (there would be no way to configure the VM)");
    }
    if !args.no_api && args.api_sock.is_none() {
        die("give --api-sock PATH, or --config-file FILE --no-api");
    }
    let host = HostFacts::read();
    let config = args.config_file.as_ref().map(|p| load_config(p, &host));
    if let Some(p) = &args.metrics {
        configure_metrics(p.clone(), "--metrics");
    }
    if let Some(m) = config.as_ref().and_then(|c| c.metrics.clone()) {
        configure_metrics(m.metrics_path, "the config file's \"metrics\" section");
    }
    if let Some(l) = config.as_ref().and_then(|c| c.logger.clone()) {
        if let Err(e) = kiln_vmm::logger::configure(&l) {
            die(format!("the config file's \"logger\" section: {e}"));
        }
    }
    // The filters allow no new network socket: MMDS's is made now.
    kiln_vmm::mmds::server::reserve_socket();

    let (tx, rx) = channel();
    let mut v = Vmm::new(
        args.id.clone(),
        ConsoleTarget::parse(&args.console, console_max_bytes(args.console_max_mib)),
        host,
        tx,
    );
    v.console_max_bytes = console_max_bytes(args.console_max_mib);
    v.mmds
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .set_size_limit(args.mmds_size_limit);
    let vmm = Arc::new(Mutex::new(v));
    // From here the main thread (and every thread it starts) is filtered; the API thread
    // and the VM's threads narrow it further with their own.
    kiln_vmm::seccomp::enter("main");
    if let Some(sock) = args.api_sock.as_ref().filter(|_| !args.no_api) {
        let listener = bind(sock);
        tracing::info!(
            "kiln-vmm {} serving the API on {}",
            env!("CARGO_PKG_VERSION"),
            sock.display()
        );
        let vmm = vmm.clone();
        let limits = api_limits();
        std::thread::Builder::new()
            .name("api".into())
            .spawn(move || {
                kiln_vmm::seccomp::enter("api");
                kiln_vmm::api::serve(listener, vmm, limits)
            })
            .unwrap_or_else(|e| die(format!("cannot start the API thread: {e}")));
    }
    if let Some(cfg) = config {
        let mut v = vmm.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = v.start_with(cfg) {
            die(e);
        }
    }

    let Ok(started) = rx.recv() else {
        die("internal error: VM start channel closed")
    };
    let reason = started
        .exit_rx
        .recv()
        .unwrap_or_else(|_| ExitReason::Error("all VM threads are gone".into()));
    if !vmm
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .agent_was_ready()
    {
        record_early_exit(&reason, &started);
    }
    signals::exit(outcome(reason, &started))
}
