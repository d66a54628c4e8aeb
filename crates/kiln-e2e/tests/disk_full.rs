//! A guest whose disk layer hits the host's ENOSPC (issue "Hardening", item 7): the
//! sandbox's state directory is a small tmpfs, filled up while a real guest runs; the
//! guest's writes fail, and `kiln inspect`, the API and `/metrics` say so while the
//! disk is still full (the VMM's metrics file has space reserved for this), the server
//! logs one `disk_error` event once the store can be written again, and `kiln events`
//! shows it.
//!
//! The state store lives on the same filesystem as the disk layer (`<state>/kiln.db`
//! beside `<state>/<id>/scratch.ext4`), so while it is full nothing can be appended to
//! the event log; the event is checked after the filler is removed.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kiln_e2e::cli::Kiln;
use kiln_e2e::serve::{Leftovers, Serve};
use kiln_e2e::*;
use serde_json::Value;

/// A tmpfs of `size` bytes at `path`, unmounted (lazily, so a VMM that still holds a
/// file cannot keep it) when dropped.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(path: &Path, size: u64) -> SmallFs {
        std::fs::create_dir_all(path).unwrap();
        let c = |s: &[u8]| CString::new(s).unwrap();
        let opts = c(format!("size={size},mode=0700").as_bytes());
        // SAFETY: valid NUL-terminated strings for the duration of the call.
        let r = unsafe {
            libc::mount(
                c(b"tmpfs").as_ptr(),
                c(path.as_os_str().as_bytes()).as_ptr(),
                c(b"tmpfs").as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        assert_eq!(
            r,
            0,
            "mount a tmpfs at {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        SmallFs(path.to_path_buf())
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let p = CString::new(self.0.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Writes `path` until the filesystem refuses (ENOSPC): 1 MiB, then 4 KiB at a time.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).expect("create the filler");
    for chunk in [1 << 20, 4096, 512] {
        let buf = vec![0x5au8; chunk];
        let e = loop {
            if let Err(e) = f.write_all(&buf).and_then(|()| f.flush()) {
                break e;
            }
        };
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "filling: {e}");
    }
}

fn disk_errors(v: &Value) -> (u64, u64, String) {
    let d = &v["disk_errors"];
    (
        d["count"]
            .as_u64()
            .unwrap_or_else(|| panic!("no disk_errors.count: {v}")),
        d["enospc"].as_u64().unwrap_or(0),
        d["last_error"].as_str().unwrap_or("").to_string(),
    )
}

fn events_of_kind(k: &Kiln, id: &str, kind: &str) -> Vec<String> {
    k.ok(&["events", id])
        .lines()
        .filter(|l| l.split_whitespace().nth(3) == Some(kind))
        .map(String::from)
        .collect()
}

#[test]
fn a_full_host_disk_layer_is_reported_by_inspect_events_and_metrics() {
    if !require_kvm("disk_full") {
        return;
    }
    // SAFETY: geteuid has no memory effects.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "disk_full mounts a small tmpfs and needs root (the harness runs as root)"
    );
    // Dropped in reverse: the server, the sandboxes, the mount, the directory.
    let t = TempDir::new("disk-full");
    let state = t.path("state");
    let _fs = SmallFs::mount(&state, 64 << 20);
    let _left = Leftovers(state.clone());
    let server = Serve::start(&state);
    let c = server.client();
    let k = Kiln { state: &state };

    let id = k.ok(&["create", "--image", "debian"]).trim().to_string();
    // kiln-vmm writes its first metrics line once the guest is up (just after create).
    let mut info = Value::Null;
    wait_until(Duration::from_secs(10), || {
        info = k.inspect(&id).expect("inspect");
        !info["disk_errors"].is_null()
    });
    assert_eq!(info["state"], "running", "{info}");
    assert_eq!(disk_errors(&info), (0, 0, String::new()), "{info}");
    assert!(info["disk_errors"]["last_error"].is_null(), "{info}");

    // The host filesystem under the disk layer fills up; then the guest writes.
    let filler = state.join("filler");
    fill(&filler);
    let out = k
        .cmd(&[
            "exec",
            &id,
            "--",
            "sh",
            "-c",
            "dd if=/dev/zero of=/fill bs=1M count=48 conv=fsync 2>&1; echo dd-status=$?",
        ])
        .output()
        .expect("kiln exec");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("dd-status=") && !said.contains("dd-status=0"),
        "the guest's write should fail: {said}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // While the disk is still full: inspect (no server involved) and the API.
    let mut info = Value::Null;
    let seen = wait_until(Duration::from_secs(30), || {
        info = k.inspect(&id).expect("inspect");
        disk_errors(&info).0 > 0
    });
    assert!(seen, "inspect never showed the disk errors: {info}");
    let (count, enospc, last) = disk_errors(&info);
    assert!(enospc > 0 && enospc <= count, "{info}");
    assert!(
        last.starts_with("scratch: ") && last.contains("No space left on device"),
        "{last}"
    );
    assert_eq!(info["state"], "running", "the VMM itself runs on: {info}");
    let view = c.get(&id).expect("GET the sandbox");
    let d = view.disk_errors.expect("disk_errors in the API");
    assert!(d.count >= count && d.enospc > 0, "{d:?}");

    let text = c.metrics().expect("GET /metrics");
    let sample = format!("kiln_sandbox_block_io_errors_total{{sandbox=\"{id}\"}} ");
    let n: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(&sample))
        .unwrap_or_else(|| panic!("no {sample} in:\n{text}"))
        .trim()
        .parse()
        .expect("a number");
    assert!(n >= count as f64, "{n} < {count}");

    // Room again: the server's periodic check logs the event (the API's event list
    // reads the store only, so this is the server's doing), once.
    std::fs::remove_file(&filler).unwrap();
    let logged = wait_until(Duration::from_secs(30), || {
        c.sandbox_events(&id, 100)
            .is_ok_and(|ev| ev.iter().any(|e| e.kind == "disk_error"))
    });
    assert!(
        logged,
        "kiln serve never logged a disk_error event:\n{}",
        server.log()
    );
    let events = c.sandbox_events(&id, 100).unwrap();
    let e = events.iter().find(|e| e.kind == "disk_error").unwrap();
    assert!(e.detail["count"].as_u64().is_some_and(|n| n > 0), "{e:?}");
    assert!(e.detail["enospc"].as_u64().is_some_and(|n| n > 0), "{e:?}");
    assert!(
        e.detail["last_error"]
            .as_str()
            .is_some_and(|t| t.contains("No space left on device")),
        "{e:?}"
    );
    // More checks (the server's ticks, inspect, kiln events) log nothing new.
    for _ in 0..3 {
        k.inspect(&id).expect("inspect");
        std::thread::sleep(Duration::from_secs(1));
    }
    let lines = events_of_kind(&k, &id, "disk_error");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("No space left on device"), "{lines:?}");

    k.ok(&["rm", &id]);
    assert!(k.inspect(&id).is_none());
}
