//! The attack on the state directory, against the real server: a directory and
//! token another user planted make `kiln serve` refuse to start (before it listens or
//! opens a database there), and a fresh state directory is made private. The planted
//! files belong to uid 65534, so this needs root; under `CI=true` it fails rather than
//! skips. This binary has this one test: the process-wide variables are its own.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_server::client::Client;
use kiln_server::ServeOptions;

/// Removes the test's directories however the test ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o7777
}

/// Starts and at once stops a server on the current state dir; its error, if any.
fn start() -> Result<(), String> {
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(kiln_server::run(ServeOptions::default(), async {}))
        .map_err(|e| e.to_string())
}

/// What uid 65534 would do: a dir others may write to, with a token only it wrote.
fn plant(dir: &Path, dir_mode: u32) {
    std::fs::create_dir(dir).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(dir_mode)).unwrap();
    std::os::unix::fs::chown(dir, Some(65534), Some(65534)).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, format!("{:064}\n", 0)).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&token, Some(65534), Some(65534)).unwrap();
}

#[test]
fn a_planted_state_dir_or_token_is_refused_and_a_fresh_one_is_private() {
    // SAFETY: geteuid has no failure mode.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "this test plants files as uid 65534: it needs root"
        );
        eprintln!("skipping: planting files as uid 65534 needs root");
        return;
    }
    let root = std::env::temp_dir().join(format!("kiln-server-planted-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let _cleanup = RemoveOnDrop(root.clone());
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::env::remove_var("KILN_TOKEN");

    // The reproduction, with the dir named directly (root's default is no
    // longer under $TMPDIR): a 0777 dir, and a 0700 one, of uid 65534.
    for dir_mode in [0o777, 0o700] {
        let planted = root.join(format!("kiln-0-{dir_mode:o}"));
        plant(&planted, dir_mode);
        std::env::set_var("KILN_STATE_DIR", &planted);
        let e = start().expect_err("a planted state dir must be refused");
        assert!(e.contains(&planted.display().to_string()), "{e}");
        assert!(
            e.contains(&format!("owned by uid 65534 (mode {dir_mode:o})")),
            "{e}"
        );
        assert!(e.contains("KILN_STATE_DIR"), "{e}");
        for f in ["kiln.sock", "kiln.db"] {
            assert!(!planted.join(f).exists(), "{f} was made in a refused dir");
        }
        assert_eq!(mode(&planted), dir_mode, "a refused dir is left alone");
    }

    // Our own dir with their token in it.
    let ours = root.join("ours");
    std::fs::create_dir(&ours).unwrap();
    std::fs::set_permissions(&ours, std::fs::Permissions::from_mode(0o700)).unwrap();
    let token = ours.join("token");
    std::fs::write(&token, format!("{:064}\n", 0)).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&token, Some(65534), Some(65534)).unwrap();
    std::env::set_var("KILN_STATE_DIR", &ours);
    let e = start().expect_err("another user's token must be refused");
    assert!(e.contains(&token.display().to_string()), "{e}");
    assert!(e.contains("owned by uid 65534 (mode 600)"), "{e}");
    assert!(!ours.join("kiln.sock").exists());

    // A fresh state dir: 0700, and every file the server makes in it 0600.
    let fresh = root.join("fresh/state");
    std::env::set_var("KILN_STATE_DIR", &fresh);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(kiln_server::run(ServeOptions::default(), async {
                let _ = stop_rx.await;
            }))
    });
    let sock = fresh.join("kiln.sock");
    let c = Client::new(&format!("unix://{}", sock.display()), None).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.health().is_err() {
        assert!(Instant::now() < deadline, "the server did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(c.list(&Default::default()).unwrap().is_empty());
    assert_eq!(mode(&fresh), 0o700);
    for f in [
        "token",
        "kiln.sock",
        "kiln.db",
        "kiln.db-wal",
        "kiln.db-shm",
    ] {
        let p = fresh.join(f);
        if p.exists() || !f.starts_with("kiln.db-") {
            assert_eq!(mode(&p), 0o600, "{f}");
        }
    }
    stop_tx.send(()).unwrap();
    server.join().unwrap().unwrap();
}
