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
        ("rng", &["bytes", "throttled"]),
        (
            "vm",
            &["pauses", "resumes", "snapshots_created", "snapshots_loaded"],
        ),
    ] {
        for k in keys {
            assert!(line[section][k].is_u64(), "{section}.{k} in {line}");
        }
    }
    for k in [
        "write_ops",
        "flush_ops",
        "write_bytes",
        "errors",
        "io_errors",
        "enospc",
    ] {
        assert_eq!(blk[k], 0, "{k}");
    }
    assert!(blk["last_io_error"].is_null());
    assert_eq!(
        (
            line["vsock"]["tx_bytes"].as_u64(),
            line["rng"]["bytes"].as_u64()
        ),
        (Some(10), Some(64))
    );
    assert_eq!(line["vm"]["pauses"], 1);
    assert_eq!(
        line["net"],
        serde_json::json!({}),
        "no interface, an empty table"
    );
}

#[test]
fn each_interface_has_its_counters_in_the_line() {
    let m = Metrics::new();
    let n = m.net("eth0");
    assert!(Arc::ptr_eq(&n, &m.net("eth0")), "one entry per iface_id");
    add(&n.rx_bytes, 1500);
    inc(&n.rx_packets);
    inc(&n.tx_drops);
    inc(&n.tx_throttled);
    inc(&m.drive("rootfs").throttled);
    let line = parse(&m.line(1, 2));
    let eth0 = &line["net"]["eth0"];
    assert_eq!(eth0["rx_bytes"], 1500);
    assert_eq!(eth0["rx_packets"], 1);
    assert_eq!(eth0["tx_drops"], 1);
    assert_eq!(eth0["tx_throttled"], 1);
    for k in [
        "tx_bytes",
        "tx_packets",
        "rx_drops",
        "rx_malformed",
        "tx_malformed",
        "rx_throttled",
    ] {
        assert_eq!(eth0[k], 0, "{k}");
    }
    assert_eq!(line["block"]["rootfs"]["throttled"], 1);
}

#[test]
fn a_file_holds_the_latest_line_whole_and_bad_paths_say_what_to_fix() {
    let dir = TempDir::new("file");
    let path = dir.0.join("metrics.json");
    std::fs::write(&path, "an earlier process's line\n").unwrap();
    let mut w = MetricsWriter::open(&path).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "",
        "emptied when opened"
    );
    w.write_line("{\"a\":1}\n").unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}\n");
    w.write_line("{\"a\":1000}\n").unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1000}\n");
    // A shorter line is padded: still one whole line, never a tail of the longer one.
    w.write_line("{\"a\":2}\n").unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text, "{\"a\":2}   \n");
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["a"], 2);
    // Disk is reserved beyond the length (on filesystems that can: tmpfs, ext4).
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(&path).unwrap();
    assert!(m.blocks() * 512 >= RESERVE, "{} blocks", m.blocks());
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

/// A small tmpfs, unmounted (lazily) on drop.
struct SmallFs(TempDir);

impl SmallFs {
    /// None unless this process may mount (root).
    fn mount(name: &str, bytes: u64) -> Option<SmallFs> {
        // SAFETY: geteuid has no memory effects.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping the full-filesystem part: mounting a tmpfs needs root");
            return None;
        }
        let dir = TempDir::new(name);
        let c = |s: &str| CString::new(s).unwrap();
        let target = CString::new(dir.0.as_os_str().as_bytes()).unwrap();
        let opts = c(&format!("size={bytes}"));
        // SAFETY: valid NUL-terminated strings for the duration of the call.
        let r = unsafe {
            libc::mount(
                c("tmpfs").as_ptr(),
                target.as_ptr(),
                c("tmpfs").as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        assert_eq!(r, 0, "mount tmpfs: {}", std::io::Error::last_os_error());
        Some(SmallFs(dir))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let target = CString::new(self.0 .0.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// The case the reserve is for: a drive's ENOSPC happens when the host filesystem is
/// full, and the metrics file there must still take the line that reports it.
#[test]
fn a_full_filesystem_still_takes_whole_lines() {
    let Some(fs) = SmallFs::mount("fullfs", 1 << 20) else {
        return;
    };
    let path = fs.0 .0.join("metrics.json");
    let mut w = MetricsWriter::open(&path).unwrap();
    // Fill every block that is left.
    let mut filler = std::fs::File::create(fs.0 .0.join("filler")).unwrap();
    let chunk = vec![7u8; 4096];
    let full = loop {
        if let Err(e) = std::io::Write::write_all(&mut filler, &chunk) {
            break e;
        }
    };
    assert_eq!(full.raw_os_error(), Some(libc::ENOSPC), "{full}");
    let m = Metrics::new();
    let d = m.drive("scratch");
    // Lines grow and shrink (the error text's length varies).
    for i in 0..60u64 {
        let text = "x".repeat(((i * 37) % 200) as usize);
        d.io_error(Some(libc::ENOSPC), &text);
        w.write_line(&m.line(1_700_000_000_000 + i, i)).unwrap();
        let v = parse(&std::fs::read_to_string(&path).unwrap());
        assert_eq!(v["block"]["scratch"]["io_errors"], i + 1);
        assert_eq!(v["block"]["scratch"]["last_io_error"], text.as_str());
        assert_eq!(v["uptime_ms"], i);
    }
}

#[test]
fn a_request_wakes_the_pacer_and_prompt_flushes_are_spaced() {
    use super::pacer::{Due, Pacer};
    let p = std::sync::Arc::new(Pacer::new());
    let hour = Duration::from_secs(3600);
    let mut last = None;
    // Nothing asked: the interval decides.
    assert_eq!(
        p.wait(Duration::from_millis(1), hour, &mut last),
        Due::Periodic
    );
    assert!(last.is_none());
    // Asked before the wait: it returns at once, asked; repeated requests wake once.
    p.request();
    p.request();
    assert_eq!(p.wait(hour, Duration::ZERO, &mut last), Due::Asked);
    assert!(last.is_some());
    assert_eq!(
        p.wait(Duration::from_millis(1), hour, &mut last),
        Due::Periodic
    );
    // Asked from another thread while waiting.
    let q = p.clone();
    let t = std::thread::spawn(move || q.wait(hour, Duration::ZERO, &mut None));
    std::thread::sleep(Duration::from_millis(20));
    p.request();
    assert_eq!(t.join().unwrap(), Due::Asked);
    // The next prompt flush comes no sooner than the gap after the previous one.
    let gap = Duration::from_millis(50);
    let before = std::time::Instant::now();
    last = Some(before);
    p.request();
    assert_eq!(p.wait(hour, gap, &mut last), Due::Asked);
    assert!(last.unwrap() >= before + gap);
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
