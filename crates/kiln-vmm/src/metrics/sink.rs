//! Where metric lines go, set once per process before the VM starts: a file or a named
//! pipe. A pipe is opened non-blocking for writing; with no reader, or with too little
//! room for a whole line, the line is skipped (a debug log), so a slow or absent scraper
//! never stalls the VMM and never sees half a line.
//!
//! A file (created if missing, emptied when opened) holds the latest line only, written
//! in place at offset 0 with one `pwrite`: every counter is cumulative, so the latest
//! line says everything the earlier ones did. It must stay writable when the host
//! filesystem is full — that is when a drive's ENOSPC has to be reported — so
//! [`RESERVE`] bytes are reserved for it when it is opened (`fallocate` with
//! `FALLOC_FL_KEEP_SIZE`: blocks, not length) and it never shrinks (a truncation would
//! give the reserved blocks back): a line shorter than the file is padded with spaces
//! before its newline, so the file is always exactly one whole JSON line, never a new
//! line followed by the tail of an old one.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::pacer::{Due, PACER, PROMPT_GAP};
use super::{FLUSH_INTERVAL, METRICS};

/// Bytes reserved on disk for a metrics file (a line is a few KiB at most).
pub const RESERVE: u64 = 128 * 1024;

/// The body of `PUT /metrics` and the config file's `"metrics"` section (Firecracker's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// A file or a named pipe (FIFO).
    pub metrics_path: PathBuf,
}

enum Target {
    /// The file and its length (the longest line written so far).
    File(File, u64),
    /// The write end, once a reader had the pipe open.
    Fifo(Option<File>),
}

/// An open metrics destination.
pub struct MetricsWriter {
    path: PathBuf,
    target: Target,
}

/// Why metrics cannot go where asked, or a line could not be written. Each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics_path is empty; give the path of a file or named pipe (FIFO) for the metrics")]
    EmptyPath,
    #[error("metrics_path {} is a directory; give the path of a file or named pipe (FIFO) in it", .0.display())]
    IsDirectory(PathBuf),
    #[error("the directory {} of metrics_path {} does not exist; create it first or choose another metrics_path", .dir.display(), .path.display())]
    NoDirectory { dir: PathBuf, path: PathBuf },
    #[error("cannot open metrics_path {} for writing: {source}; check that it names a file or named pipe kiln-vmm may write to", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("metrics already go to {}; metrics_path can be set only once per kiln-vmm", .0.display())]
    AlreadySet(PathBuf),
    #[error("cannot start the metrics thread: {0}")]
    Thread(#[source] io::Error),
    #[error("cannot write metrics to {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn cannot_open(path: &Path) -> impl FnOnce(io::Error) -> MetricsError + '_ {
    move |source| MetricsError::Open {
        path: path.to_path_buf(),
        source,
    }
}

/// Opens a pipe's write end without blocking: None while no reader has it open (ENXIO).
fn open_fifo(path: &Path) -> io::Result<Option<File>> {
    match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(None),
        Err(e) => Err(e),
    }
}

impl MetricsWriter {
    /// Validates `path` and opens it. Errors say what to fix.
    pub fn open(path: &Path) -> Result<Self, MetricsError> {
        if path.as_os_str().is_empty() {
            return Err(MetricsError::EmptyPath);
        }
        let open_file = |p: &Path| {
            let f = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(p)
                .map_err(cannot_open(p))?;
            reserve(&f, p);
            Ok(Target::File(f, 0))
        };
        let target = match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => return Err(MetricsError::IsDirectory(path.to_path_buf())),
            Ok(m) if m.file_type().is_fifo() => {
                Target::Fifo(open_fifo(path).map_err(cannot_open(path))?)
            }
            Ok(_) => open_file(path)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let dir = match path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => Path::new("."),
                };
                if !dir.is_dir() {
                    return Err(MetricsError::NoDirectory {
                        dir: dir.to_path_buf(),
                        path: path.to_path_buf(),
                    });
                }
                open_file(path)?
            }
            Err(e) => return Err(cannot_open(path)(e)),
        };
        Ok(Self {
            path: path.to_path_buf(),
            target,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one line (a skipped pipe write is not an error).
    pub fn write_line(&mut self, line: &str) -> io::Result<()> {
        match &mut self.target {
            Target::File(f, len) => write_in_place(f, len, line.as_bytes()),
            Target::Fifo(fifo) => write_fifo(&self.path, fifo, line.as_bytes()),
        }
    }
}

/// Reserves [`RESERVE`] bytes of disk for `f` without changing its length. Where the
/// filesystem cannot (EOPNOTSUPP) or is already full, metrics still work, only without
/// the guarantee for a full disk: a warning says so.
fn reserve(f: &File, path: &Path) {
    // SAFETY: fallocate on an fd we own; no memory is passed.
    let r = unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            libc::FALLOC_FL_KEEP_SIZE,
            0,
            RESERVE as libc::off_t,
        )
    };
    if r != 0 {
        tracing::warn!(
            "metrics: cannot reserve {RESERVE} bytes for {}: {}; metrics may be lost if its filesystem fills up",
            path.display(),
            io::Error::last_os_error()
        );
    }
}

/// Writes `line` (one JSON object and its newline) over the file's contents at offset
/// 0, padded with spaces before the newline to the file's length `len` (updated).
fn write_in_place(f: &File, len: &mut u64, line: &[u8]) -> io::Result<()> {
    let n = line.len() as u64;
    if n >= *len {
        f.write_all_at(line, 0)?;
        *len = n;
        return Ok(());
    }
    let mut padded = Vec::with_capacity(*len as usize);
    padded.extend_from_slice(line.strip_suffix(b"\n").unwrap_or(line));
    padded.resize(*len as usize - 1, b' ');
    padded.push(b'\n');
    f.write_all_at(&padded, 0)
}

fn write_fifo(path: &Path, fifo: &mut Option<File>, line: &[u8]) -> io::Result<()> {
    if fifo.is_none() {
        *fifo = open_fifo(path)?;
    }
    let Some(f) = fifo.as_ref() else {
        tracing::debug!(
            "metrics: no reader on the named pipe {}; line skipped",
            path.display()
        );
        return Ok(());
    };
    if pipe_room(f).is_some_and(|room| room < line.len()) {
        tracing::debug!(
            "metrics: the named pipe {} is full; line skipped",
            path.display()
        );
        return Ok(());
    }
    // SIGPIPE is ignored in Rust programs, so a vanished reader is EPIPE, not a signal.
    match (&*f).write(line) {
        Ok(n) if n == line.len() => Ok(()),
        Ok(n) => {
            tracing::warn!(
                "metrics: only {n} of {} bytes fit into {}",
                line.len(),
                path.display()
            );
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            tracing::debug!(
                "metrics: the named pipe {} is full; line skipped",
                path.display()
            );
            Ok(())
        }
        Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
            tracing::debug!(
                "metrics: the reader of {} went away; line skipped",
                path.display()
            );
            *fifo = None;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Free bytes in the pipe behind `f`, so a line is written whole or not at all (a
/// non-blocking write of more than PIPE_BUF bytes may be cut short). None if unknown.
fn pipe_room(f: &File) -> Option<usize> {
    let fd = f.as_raw_fd();
    // SAFETY: F_GETPIPE_SZ only queries the pipe's capacity of an fd we own.
    let capacity = unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) };
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD stores one c_int through the valid, exclusive pointer.
    let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut queued) };
    let capacity = usize::try_from(capacity).ok()?;
    let queued = usize::try_from(queued).ok().filter(|_| r == 0)?;
    Some(capacity.saturating_sub(queued))
}

/// The process's destination (one VM per process).
static SINK: Mutex<Option<MetricsWriter>> = Mutex::new(None);

fn sink() -> MutexGuard<'static, Option<MetricsWriter>> {
    SINK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sets where lines go and starts the periodic flush. Once per process, as in
/// Firecracker; nothing changes on an error.
pub fn configure(cfg: &MetricsConfig) -> Result<(), MetricsError> {
    let mut sink = sink();
    if let Some(w) = sink.as_ref() {
        return Err(MetricsError::AlreadySet(w.path().to_path_buf()));
    }
    let writer = MetricsWriter::open(&cfg.metrics_path)?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(|| {
            crate::seccomp::enter("metrics");
            let mut last_asked = None;
            loop {
                if PACER.wait(FLUSH_INTERVAL, PROMPT_GAP, &mut last_asked) == Due::Asked {
                    tracing::debug!("metrics: a prompt flush was asked for");
                }
                if let Err(e) = flush() {
                    tracing::warn!("{e}");
                }
            }
        })
        .map_err(MetricsError::Thread)?;
    *sink = Some(writer);
    Ok(())
}

/// Writes a line now; without a metrics_path this does nothing (as Firecracker's
/// FlushMetrics).
pub fn flush() -> Result<(), MetricsError> {
    let mut sink = sink();
    let Some(w) = sink.as_mut() else {
        return Ok(());
    };
    w.write_line(&METRICS.line_now())
        .map_err(|source| MetricsError::Write {
            path: w.path().to_path_buf(),
            source,
        })
}
