//! kiln-vmm's API under hostile clients: many idle connections, silent and half-sent
//! requests, FIFOs named as files. No guest is needed: the API serves before
//! InstanceStart without KVM. Each test spawns the kiln-vmm binary on a socket in its
//! own temp dir; the guard kills the process and removes the dir however the test ends.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a test waits for an answer it expects: far longer than any deadline under
/// test, so only a server that never answers makes it fail.
const PATIENCE: Duration = Duration::from_secs(30);

/// A kiln-vmm process on its own socket.
struct Vmm {
    child: Child,
    dir: PathBuf,
    sock: PathBuf,
}

impl Vmm {
    fn spawn(tag: &str, env: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(format!("kiln-vmm-api-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("api.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_kiln-vmm"))
            .arg("--api-sock")
            .arg(&sock)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut vmm = Vmm { child, dir, sock };
        for _ in 0..3000 {
            if UnixStream::connect(&vmm.sock).is_ok() {
                return vmm;
            }
            assert!(vmm.child.try_wait().unwrap().is_none(), "kiln-vmm exited");
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("kiln-vmm never listened on {}", vmm.sock.display());
    }

    fn connect(&self) -> UnixStream {
        let s = UnixStream::connect(&self.sock).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s.set_write_timeout(Some(PATIENCE)).unwrap();
        s
    }

    /// One request on a fresh connection: the status and body.
    fn request(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let mut s = self.connect();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply)
            .unwrap_or_else(|e| panic!("no reply to {method} {path}: {e}"));
        parse(&reply)
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The VMM's thread count.
    fn threads(&self) -> usize {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn parse(reply: &str) -> (u16, String) {
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP reply: {reply:?}"));
    let body = reply.split_once("\r\n\r\n").map_or("", |x| x.1).to_string();
    (status, body)
}

/// Lets this process hold a few thousand sockets.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(
        lim.rlim_cur >= 2200,
        "RLIMIT_NOFILE hard limit {} is too low for this test",
        lim.rlim_max
    );
}

fn mkfifo(p: &Path) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// The bound of concurrent connections (16) plus the VMM's own threads, with margin.
const MAX_THREADS: usize = 16 + 8;

#[test]
fn thousands_of_idle_connections_neither_multiply_threads_nor_stop_the_api() {
    raise_fd_limit();
    let mut vmm = Vmm::spawn("idle", &[]);
    let mut held = Vec::new();
    for wave in 0..4 {
        for _ in 0..500 {
            held.push(vmm.connect());
        }
        let (status, body) = vmm.request("GET", "/", "");
        assert_eq!(status, 200, "wave {wave}: {body}");
        assert!(body.contains("Not started"), "{body}");
        let threads = vmm.threads();
        assert!(threads <= MAX_THREADS, "wave {wave}: {threads} threads");
        assert!(vmm.alive(), "kiln-vmm died at wave {wave}");
        if wave == 1 {
            held.clear(); // they come and go
        }
    }
    // An idle connection the server closed to make room reads end-of-file.
    let mut first = held.remove(0);
    assert_eq!(first.read(&mut [0u8; 1]).unwrap(), 0);
    drop(held);
    assert_eq!(vmm.request("GET", "/", "").0, 200);
    assert!(vmm.alive());
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let vmm = Vmm::spawn("timeout", &[("KILN_VMM_API_IDLE_TIMEOUT_MS", "200")]);
    let mut idle = vmm.connect();
    // Closed by the server (end-of-file), not by our own PATIENCE timeout.
    assert_eq!(idle.read(&mut [0u8; 1]).unwrap(), 0);
    assert_eq!(vmm.request("GET", "/", "").0, 200);
}

#[test]
fn a_half_sent_request_gets_408_after_the_request_timeout() {
    let vmm = Vmm::spawn("slow", &[("KILN_VMM_API_REQUEST_TIMEOUT_MS", "200")]);
    let mut slow = vmm.connect();
    slow.write_all(b"PUT /actions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
        .unwrap();
    let mut reply = String::new();
    slow.read_to_string(&mut reply).unwrap();
    let (status, body) = parse(&reply);
    assert_eq!(status, 408, "{reply}");
    assert!(body.contains("did not arrive within"), "{body}");
    assert_eq!(vmm.request("GET", "/", "").0, 200);
}

#[test]
fn a_fifo_named_as_a_file_gets_400_at_once_and_wedges_nothing() {
    let vmm = Vmm::spawn("fifo", &[]);
    let fifo = vmm.dir.join("pipe");
    mkfifo(&fifo);
    let kernel = vmm.dir.join("vmlinux");
    std::fs::write(&kernel, b"not really a kernel").unwrap();
    let f = fifo.display().to_string();
    let k = kernel.display().to_string();
    let cases = [
        (
            "/boot-source",
            format!(r#"{{"kernel_image_path": "{f}"}}"#),
            format!("kernel_image_path '{f}' is a FIFO, not a regular file"),
        ),
        (
            "/boot-source",
            format!(r#"{{"kernel_image_path": "{k}", "initrd_path": "{f}"}}"#),
            format!("initrd_path '{f}' is a FIFO, not a regular file"),
        ),
        (
            "/drives/rootfs",
            format!(r#"{{"drive_id": "rootfs", "path_on_host": "{f}", "is_root_device": true}}"#),
            format!("path_on_host '{f}' is a FIFO, not a regular file or a block device"),
        ),
        (
            "/snapshot/load",
            format!(r#"{{"snapshot_path": "{f}"}}"#),
            "snapshot_path is a FIFO, not a regular file".to_string(),
        ),
    ];
    for (path, body, want) in cases {
        // A second connection is open while the first one's call runs.
        let other = vmm.connect();
        let (status, reply) = vmm.request("PUT", path, &body);
        assert_eq!(status, 400, "PUT {path}: {reply}");
        assert!(reply.contains(&want), "PUT {path}: {reply}");
        drop(other);
        assert_eq!(vmm.request("GET", "/", "").0, 200);
    }
    // Nothing was configured by the refused calls.
    let (status, config) = vmm.request("GET", "/vm/config", "");
    assert_eq!(status, 200);
    assert!(
        !config.contains("boot-source") && !config.contains("rootfs"),
        "{config}"
    );
}
