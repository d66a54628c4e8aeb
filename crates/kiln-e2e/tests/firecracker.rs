//! The `firecracker` backend: the Firecracker-API driver with only Firecracker's own
//! flags and API, pointed (through `KILN_FIRECRACKER`) at `kiln-vmm`, which speaks that
//! API. One test per binary: it sets an environment variable.

use kiln::{Error, ExecOptions, Sandbox, State};
use kiln_e2e::{process_running, require_kvm, sh};

#[test]
fn the_firecracker_backend_runs_execs_files_pause_and_stop() {
    if !require_kvm("firecracker_backend") {
        return;
    }
    // SAFETY (of the call's contract): this binary has this single test, so no other
    // thread reads the environment meanwhile.
    std::env::set_var("KILN_FIRECRACKER", kiln::paths::vmm_binary());
    let mut sb = Sandbox::builder()
        .image("minimal")
        .backend("firecracker")
        .create()
        .expect("create on the firecracker backend");
    assert_eq!(sb.backend_name(), "firecracker");
    let dir = sb.dir().to_path_buf();
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", sb.record().pid)).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        cmdline.contains("--boot-timer") && !cmdline.contains("--console"),
        "only Firecracker's flags: {cmdline}"
    );
    // Metrics were configured through the API (PUT /metrics), as for Firecracker.
    assert!(dir.join("vm/metrics.json").exists());
    // The VMM's own log goes to vmm.log (--log-path), never into the console.
    let vmm_log = dir.join("vmm.log");
    let console_log = dir.join("vm/console.log");
    let log = std::fs::read_to_string(&vmm_log).unwrap();
    assert!(cmdline.contains("--log-path "), "{cmdline}");
    assert!(log.contains("serving the API on"), "vmm.log: {log}");
    let console = std::fs::read_to_string(&console_log).unwrap_or_default();
    assert!(
        !console.contains("serving the API on"),
        "console.log: {console}"
    );
    // The guest powers off by rebooting through the i8042 (what Firecracker exits on).
    let guest_cmdline = sh(&sb, "cat /proc/cmdline").stdout_str();
    assert!(
        guest_cmdline.contains("reboot=k") && guest_cmdline.contains("kiln.poweroff=reboot"),
        "{guest_cmdline}"
    );

    let out = sh(&sb, "echo out; echo err >&2; exit 3");
    assert_eq!(out.status.code, Some(3));
    assert_eq!(
        (out.stdout_str(), out.stderr_str()),
        ("out\n".into(), "err\n".into())
    );
    sb.write_file("/tmp/f", b"through firecracker", None)
        .unwrap();
    assert_eq!(sb.read_file("/tmp/f").unwrap(), b"through firecracker");

    sb.pause().unwrap();
    assert_eq!(sb.state(), State::Paused);
    assert!(sb.exec(&ExecOptions::new(["true"])).is_err());
    sb.resume().unwrap();
    assert!(sh(&sb, "true").status.success());

    match sb.snapshot(Some("fc-snap")) {
        Err(Error::UnsupportedByBackend {
            backend, operation, ..
        }) => assert_eq!(
            (backend.as_str(), operation.as_str()),
            ("firecracker", "snapshots")
        ),
        other => panic!("snapshot on firecracker: {:?}", other.map(|s| s.dir)),
    }
    assert_eq!(
        sb.state(),
        State::Running,
        "a refused snapshot does not pause"
    );

    let pid = sb.record().pid as i32;
    assert_eq!(sb.stop().unwrap(), "agent shutdown");
    assert!(!process_running(pid));
    // It ended by a reset, not kiln-vmm's power-off port (which Firecracker ignores).
    let log = std::fs::read_to_string(&vmm_log).unwrap();
    assert!(
        log.trim_end().ends_with("kiln-vmm: the guest rebooted"),
        "vmm.log: {log}"
    );
    sb.remove().unwrap();
    assert!(!dir.exists());
}
