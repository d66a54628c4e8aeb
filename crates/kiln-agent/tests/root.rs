//! The overlay root switch (`kiln.root=`), on the host: a child process in a
//! private mount namespace assembles an overlay of a directory (bind-mounted
//! read-only, standing in for the ext4 image) and a tmpfs, moves /proc and /dev
//! into it and chroots, then checks the result. Needs root (mount namespaces).

use std::path::Path;
use std::process::Command;

use kiln_agent::root::{switch_with, Layer, Plan};

const CHILD_ENV: &str = "KILN_AGENT_ROOT_TEST_DIR";

fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

#[test]
fn switches_to_an_overlay_root() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        // We are the child: do it and report on stdout.
        match child(Path::new(&dir)) {
            Ok(()) => println!("ROOT-OK"),
            Err(e) => println!("ROOT-FAILED: {e}"),
        }
        return;
    }
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = std::env::temp_dir().join(format!("kiln-agent-root-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("image/etc")).unwrap();
    std::fs::write(dir.join("image/etc/marker"), "from the image\n").unwrap();

    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "switches_to_an_overlay_root",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ROOT-OK"),
        "child: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The image was read-only underneath: writes went to the upper layer.
    assert!(!dir.join("image/written").exists());
    assert_eq!(std::fs::read_dir(dir.join("image")).unwrap().count(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn child(dir: &Path) -> Result<(), String> {
    // SAFETY: unshare/mount affect only this (child) process's mount namespace.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(format!("unshare: {}", std::io::Error::last_os_error()));
        }
        let rc = libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        );
        if rc != 0 {
            return Err(format!(
                "make / private: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    let image = dir.join("image");
    let stage = dir.join("stage");
    switch_with(&Plan {
        stage: &stage,
        lower: Layer::Bind(&image),
        upper: None,
        carried: &["/proc", "/dev"],
    })
    .map_err(|e| format!("switch: {e}"))?;

    let check = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_string()) };
    let marker = std::fs::read_to_string("/etc/marker").map_err(|e| format!("/etc/marker: {e}"))?;
    check(marker == "from the image\n", "the image's file is visible")?;
    std::fs::write("/written", b"x").map_err(|e| format!("write /written: {e}"))?;
    std::fs::write("/etc/marker", b"changed").map_err(|e| format!("overwrite: {e}"))?;
    check(std::fs::read("/proc/self/status").is_ok(), "/proc moved in")?;
    check(Path::new("/dev/null").exists(), "/dev moved in")?;
    // SAFETY: statfs fills a struct we own.
    let magic = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        if libc::statfs(c"/".as_ptr(), &mut st) != 0 {
            return Err("statfs /".into());
        }
        st.f_type
    };
    check(magic == 0x794c_7630, "/ is an overlay")?;
    check(
        std::env::current_dir()
            .map(|d| d == Path::new("/"))
            .unwrap_or(false),
        "cwd is /",
    )
}

#[test]
fn a_missing_image_names_the_failed_step() {
    if !is_root() || std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("kiln-agent-root-fail-{}", std::process::id()));
    // Only the staging directories are created before the mount fails.
    let e = switch_with(&Plan {
        stage: &dir,
        lower: Layer::Ext4(Path::new("/dev/kiln-no-such-disk")),
        upper: None,
        carried: &[],
    })
    .unwrap_err();
    assert_eq!(e.step, "mount /dev/kiln-no-such-disk (ext4, read-only)");
    assert_eq!(e.reason, "No such file or directory");
    assert_eq!(
        e.to_string(),
        "mount /dev/kiln-no-such-disk (ext4, read-only): No such file or directory"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
