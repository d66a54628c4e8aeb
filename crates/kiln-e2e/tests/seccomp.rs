//! kiln-vmm's seccomp filters on real, jailed VMMs (docs/VMM.md): every thread of a
//! running VMM is filtered (`Seccomp: 2`, `NoNewPrivs: 1`); a syscall a thread's filter
//! does not allow, injected with ptrace into a live VMM (no back door in the binary),
//! kills it, and the sandbox is marked failed with the syscall named; and
//! `KILN_NO_SECCOMP=1` turns the filters off only loudly. One test: the last part sets
//! an environment variable every create reads.

use std::fs;
use std::time::Duration;

use kiln::{Sandbox, State};
use kiln_e2e::vmm_proc::{inject_syscall, status, thread_named, threads, vmm_pid};
use kiln_e2e::{require_kvm, sh, wait_until, TempDir};

fn minimal() -> Sandbox {
    Sandbox::builder()
        .image("minimal")
        .create()
        .expect("create")
}

/// Every thread of `pid`, with its `Seccomp:` and `NoNewPrivs:` values.
fn filter_status(pid: u32) -> Vec<(String, String, String)> {
    threads(pid)
        .into_iter()
        .map(|(tid, name)| {
            let p = format!("/proc/{pid}/task/{tid}");
            (name, status(&p, "Seccomp:"), status(&p, "NoNewPrivs:"))
        })
        .collect()
}

/// Injects `nr` into `thread` of `sb`'s VMM and checks the sandbox fails with `line`
/// first in its reason, and that its removal leaves nothing.
fn breaks_its_filter(mut sb: Sandbox, thread: &str, nr: i64, line: &str) {
    let pid = vmm_pid(&sb);
    inject_syscall(thread_named(pid, thread), nr);
    // The VMM dies, and then its jailer (the recorded pid), which exits with its status.
    let jailer = sb.record().pid as i32;
    let gone = wait_until(Duration::from_secs(30), || {
        !kiln_e2e::process_running(pid as i32) && !kiln_e2e::process_running(jailer)
    });
    assert!(gone, "VMM {pid} survived a forbidden syscall in {thread}");
    assert_eq!(sb.state(), State::Failed, "{thread}");
    let why = sb.info().failure.expect("a failure reason");
    assert!(why.starts_with(line), "{thread}: the reason is {why:?}");
    let log = fs::read_to_string(sb.dir().join("vmm.log")).unwrap();
    assert!(log.contains(line), "{log}");
    let dir = sb.dir().to_path_buf();
    let group = kiln::cgroup::Group::of(dir.parent().unwrap(), sb.id());
    sb.remove().unwrap();
    assert!(!dir.exists(), "{} is left", dir.display());
    let g = group.path();
    assert!(!g.exists(), "cgroup {} is left", g.display());
}

#[test]
fn filters_guard_every_vmm_thread() {
    if !require_kvm("seccomp") {
        return;
    }
    let state = TempDir::new("seccomp");
    std::env::set_var("KILN_STATE_DIR", &state.0);

    // Every thread of a running (jailed) VMM is filtered, the vCPUs before they run
    // the guest; and the guest works under the filters.
    let sb = minimal();
    assert_eq!(String::from_utf8_lossy(&sh(&sb, "echo ok").stdout), "ok\n");
    let pid = vmm_pid(&sb);
    let all = filter_status(pid);
    let names: Vec<&str> = all.iter().map(|(n, _, _)| n.as_str()).collect();
    for want in ["kiln-vmm", "signals", "api", "devices", "vcpu0"] {
        assert!(names.contains(&want), "no {want} thread: {all:?}");
    }
    for (name, seccomp, nnp) in &all {
        assert_eq!(
            (seccomp.as_str(), nnp.as_str()),
            ("2", "1"),
            "thread {name}"
        );
    }
    drop(sb);

    // A vCPU may open no file; the API thread may run no program.
    breaks_its_filter(
        minimal(),
        "vcpu0",
        libc::SYS_openat,
        "seccomp: killed on syscall openat (257) in thread vcpu0 (vcpu filter)",
    );
    breaks_its_filter(
        minimal(),
        "api",
        libc::SYS_execve,
        "seccomp: killed on syscall execve (59) in thread api (api filter)",
    );

    // KILN_NO_SECCOMP=1 (debugging only): no filter, and the VMM's log says so.
    std::env::set_var("KILN_NO_SECCOMP", "1");
    let sb = minimal();
    std::env::remove_var("KILN_NO_SECCOMP");
    for (name, seccomp, _) in filter_status(vmm_pid(&sb)) {
        assert_eq!(seccomp, "0", "thread {name} is filtered with --no-seccomp");
    }
    let log = fs::read_to_string(sb.dir().join("vmm.log")).unwrap();
    assert!(log.contains("WARNING: --no-seccomp"), "{log}");
}
