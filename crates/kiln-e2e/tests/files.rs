//! Files in real sandboxes: big binary round trips, trees, metadata and typed errors.

use std::io::Write;

use kiln::{Error, FileErrorKind, FileKind};
use kiln_e2e::{sandbox, sandbox_with, sh, TempDir};

fn kind_and_path(e: Error) -> (FileErrorKind, String) {
    match e {
        Error::GuestFile { kind, path, .. } => (kind, path),
        other => panic!("expected a guest file error, got {other}"),
    }
}

#[test]
fn a_512_mib_binary_file_round_trips_with_the_same_sha256() {
    let b = kiln::Sandbox::builder().image("debian").memory_mib(256);
    let Some(sb) = sandbox_with("big_file", b) else {
        return;
    };
    let dir = TempDir::new("bigfile");
    let src = dir.path("src.bin");
    let mut f = std::fs::File::create(&src).unwrap();
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..512 {
        for w in chunk.chunks_mut(8) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            w.copy_from_slice(&seed.to_le_bytes());
        }
        f.write_all(&chunk).unwrap();
    }
    drop(f);
    let want = sha256_file(&src);
    assert_eq!(sb.upload(&src, "/data/big.bin").unwrap(), 512 << 20);
    let guest = sh(&sb, "sha256sum /data/big.bin");
    assert_eq!(
        guest.stdout_str().split_whitespace().next(),
        Some(want.as_str())
    );
    std::fs::remove_file(&src).unwrap();
    let back = dir.path("back.bin");
    assert_eq!(sb.download("/data/big.bin", &back).unwrap(), 512 << 20);
    if let Some(r) = kiln_e2e::cgroup_report(&sb) {
        eprintln!("after the 512 MiB round trip: {r}");
    }
    assert_eq!(sha256_file(&back), want);
}

fn sha256_file(p: &std::path::Path) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let mut f = std::fs::File::open(p).unwrap();
    std::io::copy(&mut f, &mut h).unwrap();
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn trees_metadata_rename_and_remove() {
    let Some(sb) = sandbox("tree", "minimal") else {
        return;
    };
    let dir = TempDir::new("tree");
    let root = dir.path("in");
    std::fs::create_dir_all(root.join("a/b")).unwrap();
    std::fs::write(root.join("top.txt"), b"top").unwrap();
    std::fs::write(root.join("a/b/deep.bin"), [0u8, 1, 2, 255]).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("top.txt"), std::fs::Permissions::from_mode(0o751)).unwrap();
    sb.upload(&root, "/tmp/up").unwrap();
    let st = sb.stat("/tmp/up/top.txt").unwrap();
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
    assert_eq!(names, ["a", "top.txt"]);
    assert_eq!(
        sb.read_file("/tmp/up/a/b/deep.bin").unwrap(),
        [0u8, 1, 2, 255]
    );

    sb.rename("/tmp/up/top.txt", "/tmp/up/renamed.txt").unwrap();
    let out = dir.path("out");
    sb.download("/tmp/up", &out).unwrap();
    assert_eq!(std::fs::read(out.join("renamed.txt")).unwrap(), b"top");
    assert_eq!(
        std::fs::read(out.join("a/b/deep.bin")).unwrap(),
        [0u8, 1, 2, 255]
    );

    sb.write_file("/tmp/empty", b"", Some(0o600)).unwrap();
    assert_eq!(sb.read_file("/tmp/empty").unwrap(), b"");
    let (k, p) = kind_and_path(sb.remove_path("/tmp/up", false).unwrap_err());
    assert_eq!(
        (k, p.as_str()),
        (FileErrorKind::DirectoryNotEmpty, "/tmp/up")
    );
    sb.remove_path("/tmp/up", true).unwrap();
    let (k, _) = kind_and_path(sb.stat("/tmp/up").unwrap_err());
    assert_eq!(k, FileErrorKind::NotFound);
}

#[test]
fn file_errors_carry_the_kind_and_the_path() {
    let Some(sb) = sandbox("file_errors", "minimal") else {
        return;
    };
    let (k, p) = kind_and_path(sb.read_file("/no/such/file").unwrap_err());
    assert_eq!((k, p.as_str()), (FileErrorKind::NotFound, "/no/such/file"));
    let (k, p) = kind_and_path(sb.read_file("/tmp").unwrap_err());
    assert_eq!((k, p.as_str()), (FileErrorKind::IsADirectory, "/tmp"));
    sb.write_file("/tmp/f", b"x", None).unwrap();
    let (k, p) = kind_and_path(sb.list_dir("/tmp/f").unwrap_err());
    assert_eq!((k, p.as_str()), (FileErrorKind::NotADirectory, "/tmp/f"));
    let (k, _) = kind_and_path(sb.write_file("/tmp/f/child", b"x", None).unwrap_err());
    assert_eq!(k, FileErrorKind::NotADirectory);
    // A 1 MiB filesystem cannot take 2 MiB.
    assert!(sh(
        &sb,
        "mkdir -p /mnt/small && mount -t tmpfs -o size=1m tmpfs /mnt/small"
    )
    .status
    .success());
    let (k, p) = kind_and_path(
        sb.write_file("/mnt/small/big", &vec![7u8; 2 << 20], None)
            .unwrap_err(),
    );
    assert_eq!((k, p.as_str()), (FileErrorKind::NoSpace, "/mnt/small/big"));
    // Read-only: /proc refuses new files.
    let e = sb.write_file("/proc/kiln-test", b"x", None).unwrap_err();
    assert!(e.file_kind().is_some(), "{e}");
}
