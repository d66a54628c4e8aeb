//! kiln-jailer run for real (as root, no KVM needed): a busybox inside the jail, and
//! the jailed process inspected from the host through /proc.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const UID: u32 = 61_234;
const BUSYBOX: &str = "/bin/busybox";

struct Root(PathBuf);

impl Root {
    fn new(name: &str) -> Root {
        let p = std::env::temp_dir().join(format!("kiln-jailer-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir(&p).unwrap();
        Root(p)
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn skip() -> bool {
    // SAFETY: a getter.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || !Path::new(BUSYBOX).exists() {
        eprintln!("skipped: needs root and {BUSYBOX} (busybox-static)");
        return true;
    }
    false
}

fn jailer(root: &Path, extra: &[&str], program: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln-jailer"));
    c.args(["--id", "t1", "--root"])
        .arg(root)
        .args(["--uid", &UID.to_string(), "--gid", &UID.to_string()])
        .arg("--bind-ro")
        .arg(format!("{BUSYBOX}:busybox"))
        .args(extra)
        .arg("--")
        .args(program);
    c
}

fn run(c: &mut Command) -> Output {
    c.stdin(Stdio::null()).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The jailer's child (the jailed program), once it has exec'd `argv0`.
fn jailed(jailer: &Child, argv0: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let kids = fs::read_to_string(format!("/proc/{0}/task/{0}/children", jailer.id()))
            .unwrap_or_default();
        if let Some(pid) = kids.split_whitespace().next() {
            let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmd.starts_with(argv0.as_bytes()) {
                return pid.parse().unwrap();
            }
        }
        assert!(
            Instant::now() < deadline,
            "the jailed program did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(s)
                if s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z') =>
            {
                return true
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    false
}

fn status_field(pid: u32, key: &str) -> String {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with(key)).unwrap_or_default();
    line[key.len()..]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn names(dir: impl AsRef<Path>) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn the_program_runs_alone_unprivileged_in_its_own_root_and_namespaces() {
    if skip() {
        return;
    }
    let root = Root::new("alone");
    // An fd without CLOEXEC, as a careless parent would leak it.
    let leak = fs::File::open("/etc/hostname").unwrap();
    // SAFETY: dup of an open fd; the copy has no CLOEXEC and is closed below.
    let leaked = unsafe { libc::dup(leak.as_raw_fd()) };
    let mut j = jailer(
        &root.0,
        &[
            "--dev",
            "kvm",
            "--dev",
            "userfaultfd",
            "--nofile",
            "64",
            "--env",
            "ONLY=this",
        ],
        &["/busybox", "sleep", "60"],
    )
    .env("SECRET", "host")
    .stdin(Stdio::null())
    .spawn()
    .unwrap();
    // SAFETY: our own copy, no longer needed.
    unsafe { libc::close(leaked) };
    let pid = jailed(&j, "/busybox");

    assert_eq!(
        status_field(pid, "Uid:"),
        format!("{UID} {UID} {UID} {UID}")
    );
    assert_eq!(
        status_field(pid, "Gid:"),
        format!("{UID} {UID} {UID} {UID}")
    );
    assert_eq!(status_field(pid, "Groups:"), "");
    assert_eq!(status_field(pid, "NoNewPrivs:"), "1");
    assert_eq!(status_field(pid, "CapEff:"), "0000000000000000");
    // PID 1 of its own PID namespace.
    assert_eq!(status_field(pid, "NSpid:"), format!("{pid} 1"));
    for ns in ["mnt", "pid", "ipc", "uts"] {
        let mine = fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let its = fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        assert_ne!(mine, its, "{ns} namespace shared with the host");
    }
    assert_eq!(names(format!("/proc/{pid}/fd")), ["0", "1", "2"]);
    assert_eq!(
        fs::read(format!("/proc/{pid}/environ")).unwrap(),
        b"ONLY=this\0"
    );
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(" 64 ")),
        "{limits}"
    );
    // Its / holds only what was put there; its /dev only the node asked for.
    assert_eq!(names(format!("/proc/{pid}/root")), ["busybox", "dev"]);
    assert_eq!(
        names(format!("/proc/{pid}/root/dev")),
        ["kvm", "userfaultfd"]
    );
    let host = fs::metadata("/dev/userfaultfd").unwrap();
    let jailed = fs::metadata(format!("/proc/{pid}/root/dev/userfaultfd")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (jailed.rdev(), jailed.uid(), jailed.mode() & 0o777),
        (host.rdev(), UID, 0o600)
    );
    // None of its mounts shows on the host.
    let host_mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !host_mounts.contains(root.0.to_str().unwrap()),
        "{host_mounts}"
    );

    // SIGKILL of the jailer takes the program with it.
    j.kill().unwrap();
    j.wait().unwrap();
    assert!(gone(pid), "the jailed program outlived its jailer");
}

#[test]
fn inside_it_sees_only_the_jail() {
    if skip() {
        return;
    }
    let root = Root::new("inside");
    let script = "/busybox id -u; /busybox hostname; /busybox ls /; \
                  /busybox cat /etc/passwd 2>&1; /busybox touch /busybox 2>&1; \
                  /busybox mknod /x c 1 3 2>&1; echo end";
    let out = run(&mut jailer(&root.0, &[], &["/busybox", "sh", "-c", script]));
    let said = text(&out.stdout);
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(lines[0], UID.to_string(), "{said}");
    assert_eq!(lines[1], "t1");
    assert_eq!(lines[2], "busybox");
    assert!(lines[3].contains("No such file"), "{said}");
    assert!(lines[4].contains("Read-only file system"), "{said}");
    assert!(lines[5].contains("Operation not permitted"), "{said}");
    assert_eq!(lines.last(), Some(&"end"));
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn it_ends_as_the_program_ends_and_forwards_signals() {
    if skip() {
        return;
    }
    let root = Root::new("ends");
    let out = run(&mut jailer(
        &root.0,
        &[],
        &["/busybox", "sh", "-c", "exit 7"],
    ));
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));

    let script =
        "trap 'echo got-term; exit 3' TERM; echo up; while :; do /busybox sleep 0.05; done";
    let mut j = jailer(&root.0, &[], &["/busybox", "sh", "-c", script])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = jailed(&j, "/busybox");
    let mut first = [0u8; 3];
    std::io::Read::read_exact(j.stdout.as_mut().unwrap(), &mut first).unwrap();
    assert_eq!(&first, b"up\n");
    // SAFETY: the jailer we started.
    unsafe { libc::kill(j.id() as i32, libc::SIGTERM) };
    let out = j.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stdout).contains("got-term"));
    assert!(gone(pid));
}

#[test]
fn bad_input_fails_clearly_and_changes_nothing() {
    if skip() {
        return;
    }
    let root = Root::new("bad");
    let before = fs::read_to_string("/proc/self/mountinfo").unwrap();

    let out = run(Command::new(env!("CARGO_BIN_EXE_kiln-jailer")).args(["--id", "x"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--root is required"),
        "{}",
        text(&out.stderr)
    );

    let out = run(&mut jailer(&root.0, &[], &["/nope"]));
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot run /nope inside the jail: No such file"),
        "{err}"
    );

    // A symlink where a bind would go (the jailed user could have left one) is refused.
    std::os::unix::fs::symlink("/etc", root.0.join("etc")).unwrap();
    let out = run(&mut jailer(
        &root.0,
        &["--bind-ro", "/bin/true:etc/passwd"],
        &["/busybox", "true"],
    ));
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("it is a symlink"),
        "{}",
        text(&out.stderr)
    );

    let out = run(&mut jailer(&root.0, &["--uid", "0"], &["/busybox", "true"]));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(fs::read_to_string("/proc/self/mountinfo").unwrap(), before);
}

/// A caller who is not root (uid 65534 here) gets the same jail inside a user namespace
/// of its own: its own uid mapped to itself, no capabilities left at exec, new
/// namespaces, a root with only what was bound, the host's device node bound in.
#[test]
fn without_root_it_jails_in_a_user_namespace_of_its_own() {
    use std::os::unix::process::CommandExt;
    if skip() {
        return;
    }
    const NOBODY: u32 = 65_534;
    let root = Root::new("userns");
    std::os::unix::fs::chown(&root.0, Some(NOBODY), Some(NOBODY)).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln-jailer"));
    c.args(["--id", "t-userns", "--root"])
        .arg(&root.0)
        .args([
            "--uid", "65534", "--gid", "65534", "--userns", "--dev", "kvm",
        ])
        .arg("--bind-ro")
        .arg(format!("{BUSYBOX}:busybox"))
        .args(["--", "/busybox", "sh", "-c"])
        .arg("/busybox ls / /dev; exec /busybox sleep 30")
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let jailer = c.spawn().unwrap();
    let pid = jailed(&jailer, "/busybox");
    assert_eq!(status_field(pid, "Uid:"), "65534 65534 65534 65534");
    assert_eq!(status_field(pid, "CapEff:"), "0000000000000000");
    assert_eq!(status_field(pid, "CapPrm:"), "0000000000000000");
    assert_eq!(status_field(pid, "NoNewPrivs:"), "1");
    for ns in ["user", "mnt", "pid", "ipc", "uts"] {
        assert_ne!(
            fs::read_link(format!("/proc/self/ns/{ns}")).unwrap(),
            fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap(),
            "{ns}"
        );
    }
    let uid_map = fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    assert_eq!(
        uid_map.split_whitespace().collect::<Vec<_>>(),
        ["65534", "65534", "1"]
    );
    // SAFETY: SIGKILL to the jailed process (PID 1 of its namespace ignores SIGTERM
    // without a handler); the jailer then exits as it did.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let out = jailer.wait_with_output().unwrap();
    let seen = text(&out.stdout);
    assert!(
        seen.contains("busybox") && seen.contains("kvm") && !seen.contains("etc"),
        "{seen} {}",
        text(&out.stderr)
    );
    assert!(gone(pid));
}
