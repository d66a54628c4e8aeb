use std::path::PathBuf;

use super::*;

/// A log file path under the temp dir, removed on drop.
struct TempLog(PathBuf);

impl TempLog {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("kiln-console-{tag}-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&p);
        TempLog(p)
    }

    fn read(&self) -> String {
        String::from_utf8(std::fs::read(&self.0).unwrap()).unwrap()
    }
}

impl Drop for TempLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes lines "line 0\n", "line 1\n", ... byte by byte, as the UART does.
fn write_lines(log: &mut CappedLog, range: std::ops::Range<usize>) -> u64 {
    let mut total = 0;
    for i in range {
        for b in format!("line {i}\n").bytes() {
            log.write_all(&[b]).unwrap();
            total += 1;
        }
    }
    total
}

#[test]
fn below_the_cap_the_log_is_written_as_is() {
    let t = TempLog::new("small");
    let mut log = CappedLog::open(&t.0, 4096).unwrap();
    write_lines(&mut log, 0..10);
    let text = t.read();
    assert!(
        text.starts_with("line 0\n") && text.ends_with("line 9\n"),
        "{text}"
    );
    assert!(!text.contains(DROPPED_NOTE));
}

#[test]
fn the_log_never_exceeds_its_cap_and_keeps_the_newest_whole_lines() {
    let t = TempLog::new("cap");
    let max = 4096;
    let mut log = CappedLog::open(&t.0, max).unwrap();
    let mut written = 0;
    for chunk in 0..20 {
        written += write_lines(&mut log, chunk * 500..(chunk + 1) * 500);
        let len = std::fs::metadata(&t.0).unwrap().len();
        assert!(len <= max, "{len} > {max}");
    }
    let text = t.read();
    let (note, rest) = text.split_once('\n').unwrap();
    let dropped: u64 = note
        .strip_prefix(DROPPED_NOTE)
        .and_then(|s| s.strip_prefix("4096 bytes; "))
        .and_then(|s| s.strip_suffix(" bytes dropped so far)"))
        .unwrap_or_else(|| panic!("bad note '{note}'"))
        .parse()
        .unwrap();
    // The note counts exactly what is missing, and the kept part is whole lines, the
    // newest ones, in order.
    assert_eq!(dropped + rest.len() as u64, written);
    assert!(
        rest.len() as u64 >= max / 2 - 128,
        "kept only {}",
        rest.len()
    );
    let lines: Vec<&str> = rest.lines().collect();
    assert_eq!(*lines.last().unwrap(), "line 9999");
    for w in lines.windows(2) {
        let n = |l: &str| l.strip_prefix("line ").unwrap().parse::<u32>().unwrap();
        assert_eq!(n(w[0]) + 1, n(w[1]));
    }
}

#[test]
fn a_write_larger_than_the_cap_keeps_its_tail() {
    let t = TempLog::new("big");
    let mut log = CappedLog::open(&t.0, 2048).unwrap();
    let big: Vec<u8> = (0..10_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    log.write_all(&big).unwrap();
    let data = std::fs::read(&t.0).unwrap();
    assert!(data.len() <= 2048);
    assert!(data.starts_with(DROPPED_NOTE.as_bytes()));
    assert!(big.ends_with(&data[data.len() - 500..]));
}

#[test]
fn an_existing_log_is_continued_and_cut_when_it_is_already_too_big() {
    let t = TempLog::new("existing");
    std::fs::write(&t.0, "old\n".repeat(2000)).unwrap();
    let mut log = CappedLog::open(&t.0, 4096).unwrap();
    log.write_all(b"new\n").unwrap();
    let text = t.read();
    assert!(text.len() <= 4096);
    assert!(text.starts_with(DROPPED_NOTE) && text.ends_with("old\nnew\n"));
}

#[test]
fn the_note_says_the_cap_in_mib() {
    assert_eq!(
        dropped_note(8 << 20, 12),
        "(older console output was dropped: the log keeps the newest 8 MiB; 12 bytes dropped so far)\n"
    );
}
