//! The VMM's own log, configured as Firecracker's logger is: `--log-path`, `--level`,
//! `--show-level`, `--show-log-origin`, `--module` or `PUT /logger` (once per process).
//! Every `tracing` event of kiln-vmm goes through [`VmmLog`]: it is dropped below the
//! level (or outside the module), else written as one line
//! `SECONDS.MICROS [ID:THREAD(:LEVEL)(:FILE:LINE)] message` to the log file or, when none
//! is set, to stderr.
//!
//! The destination is opened like the metrics path: a regular file (created if missing,
//! appended to) or a named pipe opened write-only without blocking, so a pipe with no
//! reader is an error at configuration time and a full pipe drops the line, never
//! stalls the VMM.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Firecracker's levels (case-insensitive in the API and on the command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Level {
    Off = 0,
    Error = 1,
    Warning = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

impl Level {
    /// `error`, `Warning`, `warn`, `INFO`, ... (case-insensitive).
    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "off" => Self::Off,
            "error" => Self::Error,
            "warning" | "warn" => Self::Warning,
            "info" => Self::Info,
            "debug" => Self::Debug,
            "trace" => Self::Trace,
            _ => {
                return Err(format!(
                    "unknown log level '{s}'; use Error, Warning, Info, Debug, Trace or Off"
                ))
            }
        })
    }

    fn of(l: &tracing::Level) -> Self {
        match *l {
            tracing::Level::ERROR => Self::Error,
            tracing::Level::WARN => Self::Warning,
            tracing::Level::INFO => Self::Info,
            tracing::Level::DEBUG => Self::Debug,
            tracing::Level::TRACE => Self::Trace,
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Error,
            2 => Self::Warning,
            3 => Self::Info,
            4 => Self::Debug,
            5 => Self::Trace,
            _ => Self::Off,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Off => "OFF",
            Self::Error => "ERROR",
            Self::Warning => "WARN",
            Self::Info => "INFO",
            Self::Debug => "DEBUG",
            Self::Trace => "TRACE",
        }
    }
}

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Level::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The body of `PUT /logger` (Firecracker's `Logger`); also built from the flags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggerConfig {
    #[serde(default)]
    pub log_path: Option<PathBuf>,
    #[serde(default)]
    pub level: Option<Level>,
    #[serde(default)]
    pub show_level: Option<bool>,
    #[serde(default)]
    pub show_log_origin: Option<bool>,
    /// Only events whose module path starts with this (e.g. `kiln_vmm::devices`).
    #[serde(default)]
    pub module: Option<String>,
}

/// Why the logger cannot be configured as asked; each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum LoggerError {
    #[error("the logger is already configured (Firecracker's rule: once per process, by --log-path/--level or one PUT /logger)")]
    AlreadySet,
    #[error("log_path is empty; give the path of a file or named pipe (FIFO) for the log")]
    EmptyPath,
    #[error("log_path {} is a directory; give the path of a file or named pipe (FIFO) in it", .0.display())]
    IsDirectory(PathBuf),
    #[error("log_path {} is a named pipe with no reader; start the reader first (e.g. cat {} &)", .0.display(), .0.display())]
    NoReader(PathBuf),
    #[error("cannot open log_path {} for writing: {source}; check that it names a file or named pipe kiln-vmm may write to", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

struct State {
    configured: bool,
    show_level: bool,
    show_origin: bool,
    module: Option<String>,
    instance_id: String,
    /// None: stderr.
    sink: Option<File>,
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Off as u8);
static STATE: Mutex<State> = Mutex::new(State {
    configured: false,
    show_level: false,
    show_origin: false,
    module: None,
    instance_id: String::new(),
    sink: None,
});

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// The current level.
pub fn level() -> Level {
    Level::from_u8(LEVEL.load(Ordering::Relaxed))
}

/// Sets the level without counting as a configuration (`KILN_VMM_LOG`, the default).
pub fn set_default_level(l: Level) {
    LEVEL.store(l as u8, Ordering::Relaxed);
}

/// The instance id shown in each line (`--id`).
pub fn set_instance_id(id: &str) {
    state().instance_id = id.to_string();
}

/// Opens a log destination: a regular file (created, appended to) or a FIFO with a reader.
pub fn open_log_path(path: &Path) -> Result<File, LoggerError> {
    if path.as_os_str().is_empty() {
        return Err(LoggerError::EmptyPath);
    }
    let err = |source| LoggerError::Open {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => return Err(LoggerError::IsDirectory(path.to_path_buf())),
        Ok(m) if m.file_type().is_fifo() => {
            return match OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                .open(path)
            {
                Ok(f) => Ok(f),
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                    Err(LoggerError::NoReader(path.to_path_buf()))
                }
                Err(e) => Err(err(e)),
            };
        }
        _ => {}
    }
    let f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(err)?;
    if !f.metadata().map_err(err)?.is_file() {
        // A character device such as /dev/null: written as is, blocking.
        crate::host_file::set_blocking(&f).map_err(err)?;
    }
    Ok(f)
}

/// Applies a logger configuration (once per process). The level defaults to Info, as in
/// Firecracker.
pub fn configure(cfg: &LoggerConfig) -> Result<(), LoggerError> {
    let mut st = state();
    if st.configured {
        return Err(LoggerError::AlreadySet);
    }
    let sink = cfg.log_path.as_deref().map(open_log_path).transpose()?;
    st.configured = true;
    st.sink = sink;
    st.show_level = cfg.show_level.unwrap_or(false);
    st.show_origin = cfg.show_log_origin.unwrap_or(false);
    st.module = cfg.module.clone().filter(|m| !m.is_empty());
    LEVEL.store(cfg.level.unwrap_or(Level::Info) as u8, Ordering::Relaxed);
    Ok(())
}

/// Formats one line (without the timestamp's dependence on anything but `now`).
fn format_line(st: &State, level: Level, meta: &Metadata<'_>, msg: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let thread = std::thread::current();
    let mut head = format!(
        "{}:{}",
        if st.instance_id.is_empty() {
            "anonymous-instance"
        } else {
            &st.instance_id
        },
        thread.name().unwrap_or("-")
    );
    if st.show_level {
        head.push(':');
        head.push_str(level.label());
    }
    if st.show_origin {
        head.push_str(&format!(
            ":{}:{}",
            meta.file().unwrap_or("?"),
            meta.line().unwrap_or(0)
        ));
    }
    format!(
        "{}.{:06} [{head}] {msg}\n",
        now.as_secs(),
        now.subsec_micros()
    )
}

/// Writes one line; a full pipe or a failing file loses the line, never blocks.
fn write_line(st: &mut State, line: &str) {
    match st.sink.as_mut() {
        Some(f) => {
            let _ = f.write_all(line.as_bytes());
        }
        None => {
            let _ = io::stderr().write_all(line.as_bytes());
        }
    }
}

/// Whether an event of `meta` passes the level and the module filter.
fn wanted(meta: &Metadata<'_>) -> bool {
    if Level::of(meta.level()) > level() {
        return false;
    }
    let st = state();
    match &st.module {
        Some(m) => meta.module_path().unwrap_or(meta.target()).starts_with(m),
        None => true,
    }
}

/// Collects an event's message and fields into one string.
#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let s = format!("{value:?}");
            self.0.insert_str(0, &s);
        } else {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }
}

/// The `tracing` layer that writes the VMM log.
pub struct VmmLog;

impl<S: Subscriber> Layer<S> for VmmLog {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        // The level changes at run time (PUT /logger): ask each time.
        Interest::sometimes()
    }

    fn enabled(&self, meta: &Metadata<'_>, _: Context<'_, S>) -> bool {
        wanted(meta)
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        if !wanted(meta) {
            return;
        }
        let mut msg = Message::default();
        event.record(&mut msg);
        let mut st = state();
        let line = format_line(&st, Level::of(meta.level()), meta, &msg.0);
        write_line(&mut st, &line);
    }
}

/// Installs the layer as the process's subscriber (the binary calls it once).
pub fn install() {
    use tracing_subscriber::layer::SubscriberExt;
    let subscriber = tracing_subscriber::registry().with(VmmLog);
    let _ = tracing::subscriber::set_global_default(subscriber);
    tracing::callsite::rebuild_interest_cache();
}

/// Serialises the tests that configure the process-wide logger, and resets it.
#[cfg(test)]
pub(crate) fn test_guard() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let mut st = state();
    st.configured = false;
    st.sink = None;
    st.module = None;
    st.show_level = false;
    st.show_origin = false;
    LEVEL.store(Level::Off as u8, Ordering::Relaxed);
    drop(st);
    g
}

#[cfg(test)]
mod tests;
