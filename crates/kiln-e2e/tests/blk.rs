//! virtio-blk: the guest reads a file from a drive; writes persist (read-write) or are
//! refused (read-only).

use kiln_e2e::*;

fn drive_with_hello(t: &TempDir) -> std::path::PathBuf {
    let files = t.path("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("hello.txt"), "hello from the host\n").unwrap();
    let img = t.path("disk.ext4");
    ext4_image(&img, &files, 16);
    img
}

fn boot_with_drive(img: &std::path::Path, read_only: bool, args: &str) -> (String, i32, String) {
    let mut g = spec(args);
    g.drives.push(DriveSpec {
        id: "data".into(),
        path: img.to_path_buf(),
        read_only,
        root: false,
    });
    let mut b = boot(&g);
    let code = b.exit_code();
    (b.console(), code, b.vm.stderr())
}

#[test]
fn guest_reads_a_file_and_its_write_persists_in_the_image() {
    if !require_kvm("blk_read_write") {
        return;
    }
    let t = TempDir::new("blk-rw");
    let img = drive_with_hello(&t);
    let (console, code, err) = boot_with_drive(
        &img,
        false,
        "kiln.mount=/dev/vda,/mnt,rw kiln.cat=/mnt/hello.txt kiln.write=/mnt/out.txt,written%20by%20the%20guest kiln.action=poweroff",
    );
    assert_eq!(code, 0, "console:\n{console}\nstderr: {err}");
    assert!(
        console.contains("kiln-agent: cat /mnt/hello.txt: hello from the host"),
        "console:\n{console}"
    );
    assert!(
        console.contains("kiln-agent: write /mnt/out.txt: ok"),
        "console:\n{console}"
    );
    assert_eq!(ext4_cat(&img, "/out.txt"), "written by the guest");
}

#[test]
fn read_only_drive_refuses_writes_and_stays_unchanged() {
    if !require_kvm("blk_read_only") {
        return;
    }
    let t = TempDir::new("blk-ro");
    let img = drive_with_hello(&t);
    let before = std::fs::read(&img).unwrap();
    let (console, code, err) = boot_with_drive(
        &img,
        true,
        "kiln.mount=/dev/vda,/mnt,ro kiln.cat=/mnt/hello.txt kiln.write=/mnt/out.txt,nope kiln.action=poweroff",
    );
    assert_eq!(code, 0, "console:\n{console}\nstderr: {err}");
    assert!(
        console.contains("cat /mnt/hello.txt: hello from the host"),
        "console:\n{console}"
    );
    assert!(
        console.contains("write /mnt/out.txt failed: Read-only file system"),
        "console:\n{console}"
    );
    assert!(
        std::fs::read(&img).unwrap() == before,
        "a read-only image was modified"
    );
}

#[test]
fn read_only_block_device_rejects_a_read_write_mount() {
    if !require_kvm("blk_read_only_device") {
        return;
    }
    let t = TempDir::new("blk-ro-dev");
    let img = drive_with_hello(&t);
    let before = std::fs::read(&img).unwrap();
    // The guest asks for rw; the device says it is read-only, so ext4 refuses.
    let (console, code, _) = boot_with_drive(
        &img,
        true,
        "kiln.mount=/dev/vda,/mnt,rw kiln.write=/mnt/out.txt,nope kiln.action=poweroff",
    );
    assert_eq!(code, 0);
    assert!(
        console.contains("mount /dev/vda on /mnt failed"),
        "console:\n{console}"
    );
    assert!(std::fs::read(&img).unwrap() == before);
}
