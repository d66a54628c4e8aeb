//! Reading kiln-vmm's metrics file (`<sandbox>/metrics.json`, docs/VMM.md): the latest
//! complete JSON line, and from it the host I/O errors of the sandbox's drives. The file
//! is written by the VMM, which a guest may have compromised: reads are bounded (the
//! last 64 KiB), numbers are summed saturating, texts are cut.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The most of the file's end that is read.
const WINDOW: u64 = 64 * 1024;
/// The longest error text taken from the file.
const MAX_TEXT: usize = 256;

/// The host I/O errors of a sandbox's drives: reads, writes and flushes of its disk
/// images that failed on the host (a full host filesystem gives ENOSPC), as its VMM
/// counted them. The guest saw each as an I/O error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskErrors {
    /// Failed requests, all drives.
    pub count: u64,
    /// Of them, failed with ENOSPC.
    pub enospc: u64,
    /// The last error's text, with its drive (`scratch: write at byte ...: No space
    /// left on device (os error 28)`); None while there was none.
    pub last_error: Option<String>,
}

/// The last newline-terminated line of a file (reading at most its last 64 KiB): a line
/// being written has no newline yet and is skipped.
pub fn last_line(path: &Path) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let start = len.saturating_sub(WINDOW);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut buf = Vec::new();
    f.take(WINDOW).read_to_end(&mut buf).ok()?;
    let end = buf.iter().rposition(|b| *b == b'\n')?;
    let begin = buf[..end]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    if begin == 0 && start > 0 {
        return None; // a line longer than the window
    }
    String::from_utf8(buf[begin..end].to_vec()).ok()
}

/// The disk errors of a kiln-vmm metrics line (`block.<drive>.io_errors`, `enospc`,
/// `last_io_error`); None for a line without them (another VMM's, or not JSON).
pub fn disk_errors(line: &str) -> Option<DiskErrors> {
    let v: Value = serde_json::from_str(line).ok()?;
    let drives: &serde_json::Map<String, Value> = v.get("block")?.as_object()?;
    let mut out = DiskErrors::default();
    let mut seen = false;
    // Sorted, so the text chosen among several failing drives is stable.
    let sorted: BTreeMap<&String, &Value> = drives.iter().collect();
    for (id, d) in sorted {
        let Some(n) = d.get("io_errors").and_then(Value::as_u64) else {
            continue;
        };
        seen = true;
        out.count = out.count.saturating_add(n);
        let enospc = d.get("enospc").and_then(Value::as_u64).unwrap_or(0);
        out.enospc = out.enospc.saturating_add(enospc.min(n));
        if let Some(t) = d.get("last_io_error").and_then(Value::as_str) {
            if n > 0 {
                out.last_error = Some(bounded(&format!("{id}: {t}")));
            }
        }
    }
    seen.then_some(out)
}

/// The disk errors in the metrics file at `path` (None: no file or no such counters).
pub fn read_disk_errors(path: &Path) -> Option<DiskErrors> {
    disk_errors(&last_line(path)?)
}

fn bounded(s: &str) -> String {
    let mut cut = s.len().min(MAX_TEXT);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s[..cut].chars().filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_summed_over_drives_with_the_last_text() {
        let line = r#"{"block":{"rootfs":{"read_ops":3,"errors":1,"io_errors":0,"enospc":0,"last_io_error":null},
            "scratch":{"errors":9,"io_errors":7,"enospc":5,"last_io_error":"write at byte 4096: No space left on device (os error 28)"}}}   "#
            .replace('\n', "");
        let d = disk_errors(&line).unwrap();
        assert_eq!((d.count, d.enospc), (7, 5));
        assert_eq!(
            d.last_error.as_deref(),
            Some("scratch: write at byte 4096: No space left on device (os error 28)")
        );
        let none =
            disk_errors(r#"{"block":{"data":{"io_errors":0,"enospc":0,"last_io_error":null}}}"#);
        assert_eq!(none, Some(DiskErrors::default()));
    }

    #[test]
    fn other_lines_and_hostile_values_give_nothing_or_bounded_values() {
        // Firecracker's block metrics have no io_errors; garbage is not a line.
        assert_eq!(disk_errors(r#"{"block":{"execute_fails":1}}"#), None);
        assert_eq!(disk_errors("not json"), None);
        assert_eq!(disk_errors(r#"{"vcpu":{}}"#), None);
        let huge = format!(
            r#"{{"block":{{"a":{{"io_errors":18446744073709551615,"enospc":99,"last_io_error":"{}\u0007"}},"b":{{"io_errors":5,"enospc":18446744073709551615}}}}}}"#,
            "x".repeat(5000)
        );
        let d = disk_errors(&huge).unwrap();
        assert_eq!(d.count, u64::MAX, "saturates");
        assert_eq!(d.enospc, 99 + 5, "never more ENOSPC than errors per drive");
        let t = d.last_error.unwrap();
        assert!(t.len() <= MAX_TEXT && !t.contains('\u{7}'), "{}", t.len());
    }

    #[test]
    fn the_last_complete_line_is_read() {
        let dir = std::env::temp_dir().join(format!("kiln-vmm-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("metrics.json");
        assert_eq!(last_line(&p), None);
        std::fs::write(&p, "{\"a\":1}\n{\"a\":2}   \n{\"a\":3").unwrap();
        assert_eq!(last_line(&p).as_deref(), Some("{\"a\":2}   "));
        std::fs::write(&p, format!("{}\n", "y".repeat(70_000))).unwrap();
        assert_eq!(last_line(&p), None, "longer than the window");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
