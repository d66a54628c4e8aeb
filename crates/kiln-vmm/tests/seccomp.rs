//! kiln-vmm's seccomp filters, installed for real: every thread kind's filter compiles
//! and installs, denies syscalls that kind does not need (the process dies with the
//! one-line report and status 159) and allows the ones it does. Each probe runs in a
//! child copy of this test binary (`probe` below, selected by an env var), so a kill
//! takes only the child.

use std::process::Command;

use kiln_vmm::seccomp;

const PROBE: &str = "KILN_SECCOMP_PROBE";

/// In a child: installs the filter named by `KIND:SYSCALL` and makes that syscall.
#[test]
fn probe() {
    let Ok(spec) = std::env::var(PROBE) else {
        return;
    };
    let (kind, call) = spec.split_once(':').unwrap();
    seccomp::install(kind).unwrap();
    // SAFETY: each call is made with arguments that touch no memory of ours.
    let r = unsafe {
        match call {
            "execve" => libc::syscall(libc::SYS_execve, c"/bin/true".as_ptr(), 0, 0),
            "socket" => libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_STREAM, 0),
            "unix_socket" => libc::syscall(libc::SYS_socket, libc::AF_UNIX, libc::SOCK_STREAM, 0),
            // FIONBIO on a bad fd: the one non-KVM ioctl the device thread makes.
            "fionbio" => libc::syscall(libc::SYS_ioctl, -1, libc::FIONBIO, 0),
            // UFFDIO_COPY on a bad fd: allowed by the userfaultfd handler's filter.
            "uffdio_copy" => libc::syscall(libc::SYS_ioctl, -1, 0xc028aa03u32, 0),
            "openat" => libc::syscall(libc::SYS_openat, libc::AT_FDCWD, c"/etc/passwd".as_ptr(), 0),
            "ptrace" => libc::syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0),
            // KVM_RUN on a bad fd: allowed by the vCPU filter, fails with EBADF.
            "kvm_run" => libc::syscall(libc::SYS_ioctl, -1, 0xae80, 0),
            // A non-KVM ioctl (TCGETS) on the vCPU filter: denied by argument.
            "tcgets" => libc::syscall(libc::SYS_ioctl, 0, libc::TCGETS, 0),
            "read" => libc::syscall(libc::SYS_read, -1, 0, 0),
            // accept4 on a bad fd: the MMDS responder's one socket call.
            "accept4" => libc::syscall(libc::SYS_accept4, -1, 0, 0, 0),
            other => panic!("unknown probe {other}"),
        }
    };
    println!("survived {call} = {r}");
}

fn run(kind: &str, call: &str) -> (Option<i32>, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "probe", "--nocapture", "--test-threads=1"])
        .env(PROBE, format!("{kind}:{call}"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

fn assert_killed(kind: &str, call: &str, name: &str) {
    let (code, text) = run(kind, call);
    assert_eq!(code, Some(seccomp::EXIT_VIOLATION), "{kind}:{call}: {text}");
    let want = format!("seccomp: killed on syscall {name} (");
    assert!(
        text.contains(&want),
        "{kind}:{call}: no report line in {text}"
    );
    assert!(
        text.contains(&format!("({kind} filter)")),
        "{kind}:{call}: {text}"
    );
    assert!(!text.contains("survived"), "{text}");
}

fn assert_allowed(kind: &str, call: &str) {
    let (code, text) = run(kind, call);
    assert!(
        text.contains(&format!("survived {call}")),
        "{kind}:{call}: {text}"
    );
    assert_eq!(code, Some(0), "{kind}:{call}: {text}");
}

#[test]
fn every_kind_compiles() {
    for kind in seccomp::KINDS {
        assert!(!seccomp::program(kind).unwrap().is_empty(), "{kind}");
    }
    assert!(seccomp::program("nope").is_err());
}

#[test]
fn no_thread_may_execve_ptrace_or_make_a_network_socket() {
    for kind in seccomp::KINDS {
        assert_killed(kind, "execve", "execve");
        assert_killed(kind, "ptrace", "ptrace");
        assert_killed(kind, "socket", "socket");
    }
}

#[test]
fn vcpu_threads_open_no_files_and_make_no_sockets() {
    assert_killed("vcpu", "openat", "openat");
    assert_killed("vcpu", "socket", "socket");
    assert_killed("uffd", "socket", "socket");
    assert_killed("metrics", "socket", "socket");
}

#[test]
fn the_mmds_responder_accepts_but_opens_no_file_or_socket() {
    assert_killed("mmds", "socket", "socket");
    assert_killed("mmds", "openat", "openat");
    assert_killed("mmds", "execve", "execve");
    assert_allowed("mmds", "accept4");
    assert_allowed("mmds", "read");
}

#[test]
fn ioctls_are_filtered_by_number() {
    assert_allowed("vcpu", "kvm_run");
    assert_killed("vcpu", "tcgets", "ioctl");
    assert_killed("vcpu", "fionbio", "ioctl");
    assert_allowed("devices", "kvm_run");
    assert_allowed("devices", "fionbio");
    assert_killed("devices", "tcgets", "ioctl");
    assert_allowed("uffd", "uffdio_copy");
    assert_killed("uffd", "kvm_run", "ioctl");
}

#[test]
fn needed_syscalls_pass() {
    for kind in seccomp::KINDS {
        assert_allowed(kind, "read");
    }
    assert_allowed("metrics", "openat");
    assert_allowed("api", "unix_socket");
    assert_allowed("devices", "unix_socket");
}

#[test]
fn names_come_from_the_table() {
    assert_eq!(seccomp::syscall_name(257), "openat");
    assert_eq!(seccomp::syscall_name(59), "execve");
    assert_eq!(seccomp::syscall_name(100_000), "unknown");
}
