//! The state directory's owner and mode checks, on real directories (the owner tests
//! chown to uid 65534, so they need root; under `CI=true` they fail rather than skip).

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::*;

/// A scratch directory removed however the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("kiln-private-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
}

/// True when this process may chown files to another user.
fn can_chown() -> bool {
    if euid() == 0 {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the owner tests need root (chown to 65534)"
    );
    eprintln!("skipping the owner checks: they need root (chown to 65534)");
    false
}

#[test]
fn a_fresh_state_dir_is_0700_and_a_private_file_0600() {
    let s = Scratch::new("fresh");
    let dir = s.0.join("parent/state");
    ensure_private_dir(&dir).unwrap();
    assert_eq!(mode(&dir), 0o700);
    let db = dir.join("kiln.db");
    create_private_file(&db).unwrap();
    assert_eq!(mode(&db), 0o600);
    create_private_file(&db).unwrap();
    check_private_file("the state database", &db, true).unwrap();
    // Passing again changes nothing.
    ensure_private_dir(&dir).unwrap();
    assert_eq!(mode(&dir), 0o700);
}

#[test]
fn a_dir_others_may_write_to_is_refused_and_left_alone() {
    let s = Scratch::new("0777");
    fs::set_permissions(&s.0, fs::Permissions::from_mode(0o777)).unwrap();
    let e = ensure_private_dir(&s.0).unwrap_err().to_string();
    assert!(e.contains(&s.0.display().to_string()), "{e}");
    assert!(e.contains("mode 777"), "{e}");
    assert!(e.contains("owner uid"), "{e}");
    assert!(e.contains("KILN_STATE_DIR"), "{e}");
    assert_eq!(mode(&s.0), 0o777, "a refused dir is not changed");

    // A db file others may write to is refused; one they may only read is tightened.
    fs::set_permissions(&s.0, fs::Permissions::from_mode(0o700)).unwrap();
    let db = s.0.join("kiln.db");
    fs::write(&db, "").unwrap();
    fs::set_permissions(&db, fs::Permissions::from_mode(0o666)).unwrap();
    let e = check_private_file("the state database", &db, true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("mode 666"), "{e}");
    fs::set_permissions(&db, fs::Permissions::from_mode(0o644)).unwrap();
    check_private_file("the state database", &db, true).unwrap();
    assert_eq!(mode(&db), 0o600);

    // An older kiln's 0755 dir of ours is tightened.
    fs::set_permissions(&s.0, fs::Permissions::from_mode(0o755)).unwrap();
    ensure_private_dir(&s.0).unwrap();
    assert_eq!(mode(&s.0), 0o700);
}

#[test]
fn a_file_in_place_of_the_dir_is_refused() {
    let s = Scratch::new("file");
    let f = s.0.join("state");
    fs::write(&f, "").unwrap();
    let e = ensure_private_dir(&f).unwrap_err().to_string();
    assert!(e.contains("is not a directory"), "{e}");
}

#[test]
fn another_users_dir_symlink_or_file_is_refused() {
    if !can_chown() {
        return;
    }
    let s = Scratch::new("owner");
    // The plant: a 0777 dir of uid 65534, chmod 700 does not make it ours.
    let planted = s.0.join("kiln-0");
    fs::create_dir(&planted).unwrap();
    fs::set_permissions(&planted, fs::Permissions::from_mode(0o700)).unwrap();
    chown(&planted, 65534);
    let e = ensure_private_dir(&planted).unwrap_err().to_string();
    assert!(e.contains(&planted.display().to_string()), "{e}");
    assert!(e.contains("owned by uid 65534 (mode 700)"), "{e}");
    assert!(e.contains("KILN_STATE_DIR"), "{e}");
    assert_eq!(fs::metadata(&planted).unwrap().uid(), 65534, "left alone");

    // A symlink another user planted, even to a dir of ours.
    let ours = s.0.join("ours");
    ensure_private_dir(&ours).unwrap();
    let link = s.0.join("link");
    std::os::unix::fs::symlink(&ours, &link).unwrap();
    chown(&link, 65534);
    let e = ensure_private_dir(&link).unwrap_err().to_string();
    assert!(e.contains("(a symlink)"), "{e}");
    assert!(e.contains("uid 65534"), "{e}");
    // Our own symlink to our dir is fine; ours to theirs is not.
    let mine = s.0.join("mine");
    std::os::unix::fs::symlink(&ours, &mine).unwrap();
    ensure_private_dir(&mine).unwrap();
    let to_theirs = s.0.join("to-theirs");
    std::os::unix::fs::symlink(&planted, &to_theirs).unwrap();
    assert!(ensure_private_dir(&to_theirs).is_err());

    // A file of theirs in our dir.
    let db = ours.join("kiln.db");
    fs::write(&db, "").unwrap();
    fs::set_permissions(&db, fs::Permissions::from_mode(0o600)).unwrap();
    chown(&db, 65534);
    let e = check_private_file("the state database", &db, true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("owned by uid 65534 (mode 600)"), "{e}");
}
