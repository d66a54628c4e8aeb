//! The command-line steps that print or touch files: `kiln.report`,
//! `kiln.cat` and `kiln.write`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::console::{io_strerror, say_bytes};

/// How much of a file `kiln.cat` prints.
const CAT_LIMIT: u64 = 4096;

/// `kiln-agent: cpus=<online> mem_total_kib=<MemTotal>`.
pub fn report() {
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    let mem = std::fs::read("/proc/meminfo")
        .ok()
        .and_then(|m| mem_total_kib(&m))
        .map_or_else(|| "unknown".to_owned(), |kib| kib.to_string());
    say!("cpus={cpus} mem_total_kib={mem}");
}

/// `MemTotal:` from /proc/meminfo, in KiB.
fn mem_total_kib(meminfo: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(meminfo).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let mut words = line.split_whitespace();
    let value = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => Some(value),
        Some(_) => None,
    }
}

/// Prints up to 4 KiB of `path`, trailing newlines trimmed.
pub fn cat(path: &Path) {
    let mut buf = Vec::new();
    let result = File::open(path).and_then(|f| f.take(CAT_LIMIT).read_to_end(&mut buf));
    match result {
        Ok(_) => {
            let len = buf.iter().rposition(|&b| b != b'\n').map_or(0, |i| i + 1);
            say_bytes(format_args!("cat {}: ", path.display()), &buf[..len]);
        }
        Err(e) => say!("cat {} failed: {}", path.display(), io_strerror(&e)),
    }
}

/// Creates or truncates `path` (mode 0644), writes `data` and fsyncs.
pub fn write(path: &Path, data: &[u8]) {
    let result = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(path)
        .and_then(|mut f| {
            f.write_all(data)?;
            f.sync_all()
        });
    match result {
        Ok(()) => say!("write {}: ok", path.display()),
        Err(e) => say!("write {} failed: {}", path.display(), io_strerror(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mem_total() {
        let meminfo = b"MemTotal:         503108 kB\nMemFree:          480000 kB\n";
        assert_eq!(mem_total_kib(meminfo), Some(503108));
        assert_eq!(mem_total_kib(b"MemFree: 1 kB\n"), None);
        assert_eq!(mem_total_kib(b"MemTotal: lots kB\n"), None);
        assert_eq!(mem_total_kib(b""), None);
    }
}
