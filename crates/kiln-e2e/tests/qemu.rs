//! The `qemu` backend with real guests: the exec and file checks of the default backend
//! (exec.rs, files.rs) over QEMU microvm, whose agent channel is a multiplexed
//! virtio-console port behind `kiln-relay`; pause/resume over QMP; stop and remove
//! leave no process and no folder; and `kiln run --backend qemu`.

use std::process::Command;
use std::time::Duration;

use kiln::backend::GuestChannel;
use kiln::{ExecOptions, FileKind};
use kiln_e2e::{
    kiln_bin, process_running, require_kvm, sandbox_with, sh, sha256_hex, wait_until, TempDir,
};

fn qemu(test: &str, image: &str) -> Option<kiln::Sandbox> {
    let b = kiln::Sandbox::builder()
        .image(image)
        .backend("qemu")
        .env("FROM_SANDBOX", "s1");
    sandbox_with(test, b)
}

/// QEMU's and the relay's pids.
fn pids(sb: &mut kiln::Sandbox) -> (i32, i32) {
    let info = sb.info();
    assert_eq!(info.backend, "qemu");
    let GuestChannel::Serial {
        relay_pid: Some(relay),
        port_name,
        ..
    } = info.guest_channel
    else {
        panic!("no relay: {:?}", info.guest_channel);
    };
    assert_eq!(port_name, "kiln.agent");
    (sb.record().pid as i32, relay as i32)
}

/// Whether `pid` is gone within a few seconds (the relay exits right after QEMU).
fn gone(pid: i32) -> bool {
    wait_until(Duration::from_secs(10), || !process_running(pid))
}

#[test]
fn exec_status_output_stdin_env_and_eight_concurrent_execs() {
    let Some(sb) = qemu("qemu_exec", "minimal") else {
        return;
    };
    let out = sh(&sb, "exit 3");
    assert_eq!((out.status.code, out.status.signal), (Some(3), None));
    let out = sh(&sb, "kill -TERM $$");
    assert_eq!((out.status.code, out.status.signal), (None, Some(15)));
    let e = sb.exec(&ExecOptions::new(["/no/such/binary"])).unwrap_err();
    assert!(e.to_string().contains("/no/such/binary"), "{e}");

    let out = sh(&sb, "echo out; echo err >&2; echo out2");
    assert_eq!(out.stdout_str(), "out\nout2\n");
    assert_eq!(out.stderr_str(), "err\n");
    let opts = ExecOptions::new(["sh", "-c", "echo $FROM_SANDBOX $FROM_EXEC; pwd"])
        .env("FROM_EXEC", "e1")
        .cwd("/tmp");
    assert_eq!(sb.exec(&opts).unwrap().stdout_str(), "s1 e1\n/tmp\n");

    // Binary stdin, several mux frames long, echoed back.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let out = sb
        .exec(&ExecOptions::new(["cat"]).stdin(data.clone()))
        .unwrap();
    assert!(
        out.stdout == data,
        "cat echoed {} of {} bytes",
        out.stdout.len(),
        data.len()
    );

    // Eight connections at once over the one port.
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let sb = &sb;
                s.spawn(move || {
                    let out = sh(sb, &format!("sleep 0.3; echo {i}; echo e{i} >&2; exit {i}"));
                    assert_eq!(out.stdout_str(), format!("{i}\n"));
                    assert_eq!(out.stderr_str(), format!("e{i}\n"));
                    assert_eq!(out.status.code, Some(i));
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
}

#[test]
fn files_round_trip_with_the_same_sha256_and_stat_and_list() {
    let Some(sb) = qemu("qemu_files", "minimal") else {
        return;
    };
    let dir = TempDir::new("qemu-files");
    let src = dir.path("src.bin");
    let mut seed = 0x1234_5678_9abc_def0u64;
    let data: Vec<u8> = (0..(6 << 20) / 8)
        .flat_map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed.to_le_bytes()
        })
        .collect();
    std::fs::write(&src, &data).unwrap();
    let want = sha256_hex(&data);
    assert_eq!(sb.upload(&src, "/tmp/up/big.bin").unwrap(), 6 << 20);
    let guest = sh(&sb, "sha256sum /tmp/up/big.bin");
    assert_eq!(
        guest.stdout_str().split_whitespace().next(),
        Some(want.as_str())
    );
    let back = dir.path("back.bin");
    assert_eq!(sb.download("/tmp/up/big.bin", &back).unwrap(), 6 << 20);
    assert_eq!(sha256_hex(&std::fs::read(&back).unwrap()), want);

    sb.write_file("/tmp/up/small.txt", b"top", Some(0o751))
        .unwrap();
    let st = sb.stat("/tmp/up/small.txt").unwrap();
    assert_eq!(
        (st.kind, st.size, st.mode & 0o777),
        (FileKind::File, 3, 0o751)
    );
    let names: Vec<String> = sb
        .list_dir("/tmp/up")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["big.bin", "small.txt"]);
    assert_eq!(sb.read_file("/tmp/up/small.txt").unwrap(), b"top");
}

#[test]
fn pause_resume_then_stop_and_remove_leave_no_process_and_no_folder() {
    let Some(mut sb) = qemu("qemu_lifecycle", "debian") else {
        return;
    };
    let (vmm, relay) = pids(&mut sb);
    assert!(process_running(vmm) && process_running(relay));
    assert!(sb.backend().capabilities().pause_resume);

    sb.pause().expect("pause");
    assert_eq!(sb.state(), kiln::State::Paused);
    // While paused the guest does not run: a ping sent now (straight to the agent; the
    // library refuses operations on a paused sandbox) is answered only after the
    // resume, the relay holding the connection meanwhile.
    let agent = sb.agent().clone();
    let ping = std::thread::spawn(move || agent.ping());
    std::thread::sleep(Duration::from_millis(500));
    assert!(!ping.is_finished(), "a paused guest answered");
    sb.resume().expect("resume");
    assert_eq!(sb.state(), kiln::State::Running);
    ping.join().unwrap().expect("ping across the pause");
    assert_eq!(sh(&sb, "echo resumed").stdout_str(), "resumed\n");

    assert_eq!(sb.stop().expect("stop"), "agent shutdown");
    assert!(gone(vmm), "QEMU {vmm} still runs");
    assert!(gone(relay), "the relay {relay} still runs");
    let folder = sb.dir().to_path_buf();
    sb.remove().expect("remove");
    assert!(!folder.exists(), "{} is left", folder.display());

    // Remove of a running sandbox (the usual drop path) leaves nothing either.
    let Some(mut sb) = qemu("qemu_remove", "minimal") else {
        return;
    };
    let (vmm, relay) = pids(&mut sb);
    let folder = sb.dir().to_path_buf();
    sb.remove().expect("remove");
    assert!(
        gone(vmm) && gone(relay),
        "QEMU {vmm} or the relay {relay} still runs"
    );
    assert!(!folder.exists(), "{} is left", folder.display());
}

#[test]
fn kiln_run_with_the_qemu_backend() {
    if !require_kvm("qemu_cli_run") {
        return;
    }
    let state = TempDir::new("qemu-cli");
    let out = Command::new(kiln_bin())
        .args(["run", "--backend", "qemu", "--", "uname", "-a"])
        .env("KILN_STATE_DIR", &state.0)
        .output()
        .expect("run kiln");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("Linux "),
        "{stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(&state.0)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != ".snapshots" && !n.to_string_lossy().starts_with("kiln.db"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let out = Command::new(kiln_bin())
        .args(["run", "--backend", "nope", "--", "true"])
        .env("KILN_STATE_DIR", &state.0)
        .output()
        .expect("run kiln");
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("qemu"));
}
