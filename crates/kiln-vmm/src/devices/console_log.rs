//! The console log file (`--console FILE`), bounded in size, keeping the newest bytes.
//!
//! One file, rewritten in place: when a write would take it past its cap (8 MiB unless
//! `--console-max-mib` says otherwise), its newest half is moved to the front (starting at
//! a line boundary when there is one), behind a first line saying that older output was
//! dropped and how many bytes so far:
//!
//! ```text
//! (older console output was dropped: the log keeps the newest 8 MiB; 4194390 bytes dropped so far)
//! ```
//!
//! and the file is truncated after it. So the file never exceeds the cap, holds between
//! half of it and all of it of the newest output, and whoever reads it (`kiln logs`, the
//! REST API's logs route, a plain `cat`) sees the note as its first line without knowing
//! about the cap. The same inode is kept (no rename), so a reader following the file sees
//! it shrink, as after a truncation; the byte count in the note lets a follower skip what
//! it has already seen. kiln-vmm is the file's only writer. A crash in the middle of a
//! cut leaves the note and a partly moved tail, never a larger file.
//!
//! A console target that is not a regular file (`/dev/null`, a pipe) is written as is,
//! without a cap.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// The default cap of the console log.
pub const DEFAULT_MAX_BYTES: u64 = 8 << 20;
/// The start of the first line of a log that was cut.
pub const DROPPED_NOTE: &str = "(older console output was dropped: the log keeps the newest ";
/// The smallest cap (room for the note and some output).
const MIN_MAX_BYTES: u64 = 1024;
/// How far into the kept half a line boundary is looked for.
const LINE_SEARCH: u64 = 4096;

/// "8 MiB", or bytes when the cap is not a whole number of MiB.
fn size_words(n: u64) -> String {
    if n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else {
        format!("{n} bytes")
    }
}

/// The first line of a cut log.
pub fn dropped_note(max: u64, dropped: u64) -> String {
    format!(
        "{DROPPED_NOTE}{}; {dropped} bytes dropped so far)\n",
        size_words(max)
    )
}

/// A console log file of at most `max` bytes (see the module docs).
pub struct CappedLog {
    file: File,
    /// Current length of the file (its only writer is this).
    len: u64,
    max: u64,
    /// Length of the note at the file's start (0 before the first cut).
    note_len: u64,
    /// Guest bytes dropped so far.
    dropped: u64,
}

impl CappedLog {
    /// Opens (creating, 0600) or continues the log at `path`.
    pub fn open(path: &Path, max: u64) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        Self::from_file(file, max)
    }

    /// Wraps an open regular file, continuing after its current end.
    pub fn from_file(file: File, max: u64) -> io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(Self {
            file,
            len,
            max: max.max(MIN_MAX_BYTES),
            note_len: 0,
            dropped: 0,
        })
    }

    /// Moves the newest half of the file to its front, behind the note.
    fn cut(&mut self) -> io::Result<()> {
        let keep = self.max / 2;
        let mut start = self.len.saturating_sub(keep).max(self.note_len);
        // Begin at a line boundary when one is near.
        let mut probe = vec![0u8; LINE_SEARCH.min(self.len - start) as usize];
        self.file.read_exact_at(&mut probe, start)?;
        if let Some(i) = probe.iter().position(|&b| b == b'\n') {
            if start + i as u64 + 1 < self.len {
                start += i as u64 + 1;
            }
        }
        self.dropped += start - self.note_len;
        let note = dropped_note(self.max, self.dropped);
        self.file.write_all_at(note.as_bytes(), 0)?;
        let mut to = note.len() as u64;
        let mut buf = vec![0u8; 64 * 1024];
        let mut from = start;
        // Forward copy: the destination is always before the source.
        while from < self.len {
            let n = buf.len().min((self.len - from) as usize);
            self.file.read_exact_at(&mut buf[..n], from)?;
            self.file.write_all_at(&buf[..n], to)?;
            (from, to) = (from + n as u64, to + n as u64);
        }
        self.file.set_len(to)?;
        self.len = to;
        self.note_len = note.len() as u64;
        Ok(())
    }

    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.len + buf.len() as u64 > self.max {
            if let Err(e) = self.cut() {
                // Keep the bound even then: what is known to be on disk.
                self.len = self.file.metadata().map(|m| m.len()).unwrap_or(self.len);
                return Err(e);
            }
        }
        // A write larger than what is left keeps only its newest bytes.
        let room = self.max.saturating_sub(self.len) as usize;
        let tail = &buf[buf.len().saturating_sub(room)..];
        self.dropped += (buf.len() - tail.len()) as u64;
        self.file.write_all_at(tail, self.len)?;
        self.len += tail.len() as u64;
        Ok(())
    }
}

impl Write for CappedLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.append(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
