use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::mpsc::channel;
use std::time::Duration;

use serde_json::Value;

use super::*;
use crate::test_dir::TempDir;

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

fn parse(line: &str) -> Value {
    assert!(
        line.ends_with('\n') && line.matches('\n').count() == 1,
        "{line:?}"
    );
    serde_json::from_str(line).unwrap()
}

#[test]
fn a_line_is_one_json_object_with_every_counter() {
    let m = Metrics::new();
    let line = parse(&m.line(1, 2));
    assert!(line.get("boot_time_us").is_none(), "no ready signal yet");
    assert_eq!(line["per_vcpu"], serde_json::json!([]));

    m.set_vcpu_count(2);
    inc(&m.vcpu(0).io_out);
    inc(&m.vcpu(0).io_out);
    inc(&m.vcpu(1).mmio_write);
    inc(&m.vcpu(1).hlt);
    let d = m.drive("rootfs");
    assert!(
        Arc::ptr_eq(&d, &m.drive("rootfs")),
        "one entry per drive_id"
    );
    inc(&d.read_ops);
    add(&d.read_bytes, 4096);
    add(&m.vsock.tx_bytes, 10);
    add(&m.rng.bytes, 64);
    inc(&m.vm.pauses);
    m.set_boot_time(Duration::from_micros(41_000));
    m.set_boot_time(Duration::from_micros(99_000));

    let line = parse(&m.line(1_700_000_000_000, 1234));
    assert_eq!(line["utc_timestamp_ms"], 1_700_000_000_000u64);
    assert_eq!(line["uptime_ms"], 1234);
    assert_eq!(
        line["boot_time_us"], 41_000,
        "the first ready signal counts"
    );
    assert_eq!(line["vcpu"]["exits_total"], 4);
    assert_eq!(line["vcpu"]["io_out"], 2);
    assert_eq!(line["per_vcpu"][1]["exits_total"], 2);
    assert_eq!(line["per_vcpu"].as_array().unwrap().len(), 2);
    let blk = &line["block"]["rootfs"];
    assert_eq!(
        (blk["read_ops"].as_u64(), blk["read_bytes"].as_u64()),
        (Some(1), Some(4096))
    );
    for (section, keys) in [
        (
            "vcpu",
            &["io_in", "io_out", "mmio_read", "mmio_write", "hlt", "other"][..],
        ),
        (
            "vsock",
            &[
                "rx_bytes",
                "tx_bytes",
                "conns_opened",
                "conns_closed",
                "rx_packets",
                "tx_packets",
                "resets",
            ],
        ),
        ("rng", &["bytes"]),
        (
            "vm",
            &["pauses", "resumes", "snapshots_created", "snapshots_loaded"],
        ),
    ] {
        for k in keys {
            assert!(line[section][k].is_u64(), "{section}.{k} in {line}");
        }
    }
    for k in ["write_ops", "flush_ops", "write_bytes", "errors"] {
        assert_eq!(blk[k], 0, "{k}");
    }
    assert_eq!(
        (
            line["vsock"]["tx_bytes"].as_u64(),
            line["rng"]["bytes"].as_u64()
        ),
        (Some(10), Some(64))
    );
    assert_eq!(line["vm"]["pauses"], 1);
}

#[test]
fn a_file_is_appended_to_and_bad_paths_say_what_to_fix() {
    let dir = TempDir::new("file");
    let path = dir.0.join("metrics.json");
    std::fs::write(&path, "earlier\n").unwrap();
    let mut w = MetricsWriter::open(&path).unwrap();
    w.write_line("{\"a\":1}\n").unwrap();
    w.write_line("{\"a\":2}\n").unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "earlier\n{\"a\":1}\n{\"a\":2}\n"
    );
    // A missing file in an existing directory is created.
    assert!(MetricsWriter::open(&dir.0.join("new.json")).is_ok());

    let err = |p: &Path| MetricsWriter::open(p).err().unwrap().to_string();
    let e = err(&dir.0.join("no-such-dir/metrics.json"));
    assert!(
        e.contains("does not exist") && e.contains("create it"),
        "{e}"
    );
    assert!(err(&dir.0).contains("is a directory"));
    assert!(err(Path::new("")).contains("empty"));
}

#[test]
fn a_fifo_without_a_reader_never_blocks_and_a_reader_gets_whole_lines() {
    let dir = TempDir::new("fifo");
    let path = dir.0.join("metrics.fifo");
    mkfifo(&path);
    let line = Metrics::new().line(1, 2);

    // No reader: opening and flushing return at once (in a thread, so a regression
    // fails the test instead of hanging it).
    let (tx, rx) = channel();
    let p = path.clone();
    let l = line.clone();
    std::thread::spawn(move || {
        let mut w = MetricsWriter::open(&p).unwrap();
        w.write_line(&l).unwrap();
        tx.send(w).unwrap();
    });
    let mut w = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("flush blocked on a FIFO with no reader");

    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .unwrap();
    // Fill the pipe: lines that do not fit are skipped, never cut.
    for _ in 0..1000 {
        w.write_line(&line).unwrap();
    }
    let mut got = Vec::new();
    let _ = reader.read_to_end(&mut got); // ends with EAGAIN: the writer is still open
    let got = String::from_utf8(got).unwrap();
    assert!(
        got.len() >= line.len() && got.len().is_multiple_of(line.len()),
        "{} bytes",
        got.len()
    );
    for l in got.lines() {
        assert_eq!(format!("{l}\n"), line);
    }
    // The reader goes away: the next flushes are skipped without an error.
    drop(reader);
    w.write_line(&line).unwrap();
    w.write_line(&line).unwrap();
}
