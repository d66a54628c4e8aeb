//! `kiln logs ID [--vmm] [-f]`: the guest console (or the VMM's log) of a sandbox.
//!
//! kiln-vmm caps `console.log` (8 MiB by default): past the cap it keeps the newest half
//! behind a first line `(older console output was dropped: the log keeps the newest N MiB;
//! D bytes dropped so far)`, which is printed as it is. When following, a changed count
//! in that line means the log was cut under us: the count tells where to resume, so
//! nothing is shown twice.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use anyhow::{Context, Result};
use kiln::Sandbox;

#[derive(clap::Args)]
pub struct LogsArgs {
    /// The sandbox.
    pub id: String,
    /// The VMM's log (vmm.log) instead of the guest console.
    #[arg(long)]
    pub vmm: bool,
    /// Keep printing what is appended until the sandbox stops (or Ctrl-C).
    #[arg(short = 'f', long)]
    pub follow: bool,
}

/// The first line of a console log kiln-vmm cut to its cap.
const DROPPED_NOTE: &str = "(older console output was dropped: the log keeps the newest ";

/// The note at the start of a cut log: its length with the newline, and the count of
/// bytes dropped before what follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Note {
    len: u64,
    dropped: u64,
}

fn parse_note(head: &[u8]) -> Option<Note> {
    let end = head.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&head[..end]).ok()?;
    let rest = line.strip_prefix(DROPPED_NOTE)?;
    let count = rest
        .strip_suffix(" bytes dropped so far)")?
        .rsplit("; ")
        .next()?;
    Some(Note {
        len: end as u64 + 1,
        dropped: count.parse().ok()?,
    })
}

/// The note the file starts with now (none: a log never cut). Keeps the position.
fn read_note(f: &mut File) -> std::io::Result<Note> {
    let pos = f.stream_position()?;
    f.seek(SeekFrom::Start(0))?;
    let mut head = Vec::with_capacity(256);
    Read::by_ref(f).take(256).read_to_end(&mut head)?;
    f.seek(SeekFrom::Start(pos))?;
    Ok(parse_note(&head).unwrap_or_default())
}

/// Where to read on after a cut: the file offset of the first byte not yet shown, given
/// how far (`pos`) the file was read under its old note.
fn resume_at(old: Note, pos: u64, new: Note) -> u64 {
    let shown = old.dropped + pos.saturating_sub(old.len);
    new.len + shown.saturating_sub(new.dropped)
}

pub fn logs(a: LogsArgs) -> Result<i32> {
    let sb = Sandbox::get(&a.id)?;
    let dir = sb.dir().to_path_buf();
    if let Some(e) = kiln::boot_error::read(&dir.join("vm/boot-error.json")) {
        eprintln!("kiln: boot error at {}: {}", e.stage, e.message);
    }
    let path = dir.join(if a.vmm { "vmm.log" } else { "vm/console.log" });
    let mut f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !a.follow => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let mut note = read_note(&mut f)?;
    let mut out = std::io::stdout().lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        f.read_to_end(&mut buf)?;
        out.write_all(&buf)?;
        out.flush()?;
        if !a.follow {
            return Ok(0);
        }
        if buf.is_empty() {
            if !matches!(
                sb.state(),
                kiln::State::Running | kiln::State::Paused | kiln::State::Creating
            ) {
                return Ok(0);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let pos = f.stream_position()?;
        let now = read_note(&mut f)?;
        if now != note {
            // Cut to its cap under us: resume after what was shown.
            f.seek(SeekFrom::Start(resume_at(note, pos, now)))?;
            note = now;
        } else if std::fs::metadata(&path).is_ok_and(|m| m.len() < pos) {
            // Truncated or replaced: start over.
            f.seek(SeekFrom::Start(0))?;
            note = Note::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_log_resumes_after_what_was_shown() {
        // The note kiln-vmm writes (kiln-vmm's devices::console_log::dropped_note).
        let head = b"(older console output was dropped: the log keeps the newest 8 MiB; \
                     4194390 bytes dropped so far)\nline 7\n";
        let note = parse_note(head).unwrap();
        assert_eq!(note.dropped, 4194390);
        assert_eq!(note.len as usize, head.len() - "line 7\n".len());
        assert_eq!(parse_note(b"plain console output\n"), None);
        // Before any cut, 6000 bytes were shown; the cut dropped 5000 of them: resume
        // 1000 bytes after the new note.
        let fresh = Note::default();
        assert_eq!(
            resume_at(
                fresh,
                6000,
                Note {
                    len: 100,
                    dropped: 5000
                }
            ),
            1100
        );
        // A second cut, while reading under the first note.
        let first = Note {
            len: 100,
            dropped: 5000,
        };
        let second = Note {
            len: 101,
            dropped: 9000,
        };
        assert_eq!(resume_at(first, 100 + 4500, second), 101 + 500);
        // Output dropped before it was shown: resume at the start of the kept part.
        assert_eq!(resume_at(fresh, 10, second), 101);
    }
}
