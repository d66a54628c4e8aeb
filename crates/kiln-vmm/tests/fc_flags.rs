//! Firecracker's command-line flags on the real kiln-vmm binary, and the endpoints
//! that need no guest (`GET /version`, `PUT /logger`, `/mmds`) over its real socket.
//! Each test spawns kiln-vmm in its own temp dir; the guard kills it and removes the dir.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

struct Vmm {
    child: Child,
    dir: PathBuf,
    sock: PathBuf,
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-vmm-flags-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Vmm {
    /// kiln-vmm on `DIR/api.sock` with `args` (`{dir}` in one is replaced by the dir).
    fn spawn(tag: &str, args: &[&str]) -> Self {
        let dir = temp_dir(tag);
        let sock = dir.join("api.sock");
        let args: Vec<String> = args
            .iter()
            .map(|a| a.replace("{dir}", &dir.display().to_string()))
            .collect();
        let child = Command::new(env!("CARGO_BIN_EXE_kiln-vmm"))
            .arg("--api-sock")
            .arg(&sock)
            .args(&args)
            .env_remove("KILN_VMM_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut vmm = Vmm { child, dir, sock };
        for _ in 0..3000 {
            if UnixStream::connect(&vmm.sock).is_ok() {
                return vmm;
            }
            if let Some(st) = vmm.child.try_wait().unwrap() {
                let mut err = String::new();
                let _ = vmm.child.stderr.take().unwrap().read_to_string(&mut err);
                panic!("kiln-vmm exited ({st}): {err}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("kiln-vmm never listened on {}", vmm.sock.display());
    }

    fn request(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let mut s = UnixStream::connect(&self.sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        let status = reply.split(' ').nth(1).unwrap().parse().unwrap();
        let body = reply.split_once("\r\n\r\n").map_or("", |x| x.1).to_string();
        (status, body)
    }

    /// Stops the VMM and returns its stderr.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut err = String::new();
        let _ = self.child.stderr.take().unwrap().read_to_string(&mut err);
        err
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs kiln-vmm to its exit with `args`.
fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln-vmm"))
        .args(args)
        .env_remove("KILN_VMM_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn log_path_level_and_show_flags_put_lines_in_the_file() {
    let vmm = Vmm::spawn(
        "log",
        &[
            "--log-path",
            "{dir}/vmm.log",
            "--level",
            "iNfO",
            "--show-level",
            "--show-log-origin",
            "--id",
            "fc-id-1",
        ],
    );
    let log = vmm.dir.join("vmm.log");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("[fc-id-1:main:INFO:crates/kiln-vmm/src/main.rs:"),
        "{text}"
    );
    assert!(text.contains("serving the API on"), "{text}");
    // The logger is configured once: PUT /logger is then refused.
    let body = format!(r#"{{"log_path": "{}"}}"#, log.display());
    let (status, msg) = vmm.request("PUT", "/logger", &body);
    assert_eq!(status, 400);
    assert!(msg.contains("already configured"), "{msg}");
    let (_, info) = vmm.request("GET", "/", "");
    assert!(info.contains("\"fc-id-1\""), "{info}");
    let err = vmm.stop();
    assert!(
        !err.contains("serving the API"),
        "log lines left stderr: {err}"
    );
}

#[test]
fn a_higher_level_hides_info_and_put_logger_works_without_flags() {
    let vmm = Vmm::spawn(
        "level",
        &["--log-path", "{dir}/vmm.log", "--level", "Warning"],
    );
    let text = std::fs::read_to_string(vmm.dir.join("vmm.log")).unwrap();
    assert_eq!(text, "", "info is below Warning");
    drop(vmm);

    let vmm = Vmm::spawn("putlog", &["--boot-timer"]);
    let log = vmm.dir.join("fc.log");
    let body = format!(r#"{{"log_path": "{}", "level": "Debug"}}"#, log.display());
    assert_eq!(vmm.request("PUT", "/logger", &body), (204, String::new()));
    assert!(log.is_file());
}

#[test]
fn bad_flags_fail_with_what_to_do() {
    let out = run(&["--api-sock", "/tmp/x.sock", "--level", "loud"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("use Error, Warning, Info, Debug, Trace or Off"),
        "{err}"
    );

    let out = run(&[
        "--api-sock",
        "/tmp/x.sock",
        "--seccomp-filter",
        "/tmp/f.json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("only its built-in per-thread filters"),
        "{err}"
    );
    assert!(err.contains("remove --seccomp-filter"), "{err}");

    let out = run(&["--no-api"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--no-api needs --config-file"), "{err}");

    let dir = temp_dir("badcfg");
    let cfg = dir.join("vm.json");
    std::fs::write(
        &cfg,
        r#"{"boot-source": {"kernel_image_path": "/no/kernel"}}"#,
    )
    .unwrap();
    let out = run(&["--config-file", cfg.to_str().unwrap(), "--no-api"]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--config-file") && err.contains("/no/kernel"),
        "{err}"
    );

    let out = run(&[
        "--api-sock",
        "/tmp/x.sock",
        "--log-path",
        "/no/such/dir/vmm.log",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot open log_path /no/such/dir/vmm.log"),
        "{err}"
    );
}

#[test]
fn no_seccomp_metrics_path_and_mmds_size_limit() {
    let vmm = Vmm::spawn(
        "misc",
        &[
            "--no-seccomp",
            "--metrics-path",
            "{dir}/metrics.json",
            "--mmds-size-limit",
            "64",
        ],
    );
    let (status, body) = vmm.request("GET", "/version", "");
    assert_eq!(status, 200);
    assert_eq!(
        body,
        format!(
            r#"{{"firecracker_version":"{}"}}"#,
            env!("CARGO_PKG_VERSION")
        )
    );
    assert_eq!(
        vmm.request("PUT", "/actions", r#"{"action_type": "FlushMetrics"}"#)
            .0,
        204
    );
    let m = std::fs::read_to_string(vmm.dir.join("metrics.json")).unwrap();
    assert!(m.contains("\"uptime_ms\""), "{m}");
    assert_eq!(vmm.request("PUT", "/mmds", r#"{"a": "b"}"#).0, 204);
    let big = format!(r#"{{"a": "{}"}}"#, "b".repeat(100));
    let (status, msg) = vmm.request("PUT", "/mmds", &big);
    assert_eq!(status, 400);
    assert!(msg.contains("over its limit of 64 bytes"), "{msg}");
    assert_eq!(
        vmm.request("GET", "/mmds", ""),
        (200, r#"{"a":"b"}"#.into())
    );
    let err = vmm.stop();
    assert!(
        err.contains("--no-seccomp: seccomp filters are OFF"),
        "{err}"
    );
}
