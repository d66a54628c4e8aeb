//! Jailed VMMs (`KILN_JAIL=1`, docs/JAIL.md) with real guests: each runs as its own
//! unprivileged uid, in its own namespaces, with a root that holds only what it needs;
//! exec, files, snapshot, restore (file and userfaultfd) and fork work jailed; nothing
//! (uid lease, jail mounts) is left after removal.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use kiln::{MemoryBackend, Sandbox};
use kiln_e2e::{require_kvm, sh, TempDir};

/// The jailed VMM: the only child of the recorded pid (the jailer).
fn vmm_of(sb: &Sandbox) -> u32 {
    let jailer = sb.record().pid;
    let kids = fs::read_to_string(format!("/proc/{jailer}/task/{jailer}/children")).unwrap();
    let kids: Vec<u32> = kids
        .split_whitespace()
        .map(|k| k.parse().unwrap())
        .collect();
    assert_eq!(kids.len(), 1, "the jailer {jailer} has children {kids:?}");
    kids[0]
}

/// The open flags of `pid`'s fd `fd` (octal in /proc/PID/fdinfo/FD).
fn fdinfo_flags(pid: u32, fd: &str) -> i32 {
    let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap();
    let flags = info.lines().find_map(|l| l.strip_prefix("flags:")).unwrap();
    i32::from_str_radix(flags.trim(), 8).unwrap()
}

fn status(pid: u32, key: &str) -> String {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let l = s.lines().find(|l| l.starts_with(key)).unwrap_or_default();
    l[key.len()..]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every path under the jailed process's root, as it sees them (mount points only:
/// the folders on the way and the bound files).
fn visible(pid: u32, dir: &Path) -> BTreeSet<String> {
    let root = format!("/proc/{pid}/root");
    let mut out = BTreeSet::new();
    let mut todo = vec![std::path::PathBuf::from(&root)];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(&root).unwrap().display().to_string();
            // The sandbox's own vm/ folder is the VMM's; list it but not its files.
            if p.is_dir() && !p.starts_with(format!("{root}{}", dir.join("vm").display())) {
                todo.push(p);
            }
            out.insert(format!("/{rel}"));
        }
    }
    out
}

#[test]
fn jailed_vmms_run_alone_and_every_operation_works() {
    if !require_kvm("jail") {
        return;
    }
    let state = TempDir::new("jail");
    let uid_dir = TempDir::new("jail-uids");
    std::env::set_var("KILN_STATE_DIR", &state.0);
    std::env::set_var("KILN_JAIL", "1");
    std::env::set_var("KILN_JAIL_UID_DIR", &uid_dir.0);
    std::env::set_var("KILN_JAIL_UIDS", "700000-700009");

    let mut a = Sandbox::builder()
        .image("debian")
        .create()
        .expect("jailed create");
    let b = Sandbox::builder()
        .image("minimal")
        .create()
        .expect("second jailed create");
    let (va, vb) = (vmm_of(&a), vmm_of(&b));
    let ua: u32 = status(va, "Uid:")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let ub: u32 = status(vb, "Uid:")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((700_000..=700_009).contains(&ua) && (700_000..=700_009).contains(&ub));
    assert_ne!(ua, ub, "two sandboxes share a uid");
    assert_eq!(status(va, "Uid:"), format!("{ua} {ua} {ua} {ua}"));
    assert_eq!(status(va, "Groups:"), "");
    assert_eq!(status(va, "CapEff:"), "0000000000000000");
    assert_eq!(status(va, "NoNewPrivs:"), "1");
    assert!(
        status(va, "NSpid:").ends_with(" 1"),
        "{}",
        status(va, "NSpid:")
    );
    // "net": the sandbox's own network namespace, which the jail entered.
    for ns in ["mnt", "pid", "ipc", "uts", "net"] {
        assert_ne!(
            fs::read_link(format!("/proc/self/ns/{ns}")).unwrap(),
            fs::read_link(format!("/proc/{va}/ns/{ns}")).unwrap(),
            "{ns}"
        );
    }
    let fds: Vec<String> = fs::read_dir(format!("/proc/{va}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(fds.len() < 64, "{fds:?}");
    assert_eq!(fs::read(format!("/proc/{va}/environ")).unwrap(), b"");
    // What the VMM can see: its vm/ folder, the kernel, initramfs and image, its own
    // binary and libraries, and /dev/kvm. Not the state dir's other folders, not /etc.
    let seen = visible(va, a.dir());
    let dev: Vec<&String> = seen.iter().filter(|p| p.starts_with("/dev/")).collect();
    // A sandbox with a network (root's default) also has the TUN device for its TAP.
    assert_eq!(dev, ["/dev/kvm", "/dev/net", "/dev/net/tun"], "{seen:?}");
    assert!(
        !seen.contains("/etc") && !seen.contains("/proc"),
        "{seen:?}"
    );
    assert!(
        seen.contains(&a.dir().join("vm").display().to_string()),
        "{seen:?}"
    );
    let other = b.dir().display().to_string();
    assert!(!seen.iter().any(|p| p.starts_with(&other)), "{seen:?}");
    assert!(!seen.contains(&a.dir().join("sandbox.json").display().to_string()));
    // Every fd the VMM holds is to something inside its jail: an anonymous inode, a
    // socket, a pipe, a memfd, or a file its jail shows it (compared by device and
    // inode: how a path reads across mount namespaces depends on the host's mounts).
    let ids = |p: &Path| fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let root = format!("/proc/{va}/root");
    let mut inside_jail: BTreeSet<(u64, u64)> = seen
        .iter()
        .filter_map(|p| ids(Path::new(&format!("{root}{p}"))))
        .collect();
    for e in fs::read_dir(a.dir().join("vm")).unwrap().flatten() {
        inside_jail.extend(ids(&e.path()));
    }
    for fd in &fds {
        let link = format!("/proc/{va}/fd/{fd}");
        let Ok(target) = fs::read_link(&link) else {
            continue; // closed since the listing
        };
        let t = target.display().to_string();
        let id = ids(Path::new(&link));
        let inside = !t.starts_with('/')
            || t.starts_with("/memfd:")
            || id.is_some_and(|i| inside_jail.contains(&i));
        // The one exception (docs/JAIL.md): stdout and stderr are the sandbox's
        // vmm.log, opened by kiln write-only and append-only.
        let own_log = (fd == "1" || fd == "2")
            && id == ids(&a.dir().join("vmm.log"))
            && fdinfo_flags(va, fd) & (libc::O_ACCMODE | libc::O_APPEND)
                == libc::O_WRONLY | libc::O_APPEND;
        assert!(
            inside || own_log,
            "the VMM holds fd {fd} to {t}, outside its jail"
        );
    }
    // Asked through its own API to open a host file outside its jail, the VMM cannot:
    // /etc/shadow does not exist in its root. The drive keeps working.
    let api = kiln::FcClient::new(a.dir().join("vm/api.sock"));
    let body = serde_json::json!({"drive_id": "scratch", "path_on_host": "/etc/shadow"});
    let (code, text) = api
        .request("PATCH", "/drives/scratch", Some(&body))
        .unwrap();
    assert_eq!(code, 400, "PATCH to /etc/shadow: {text}");
    assert!(
        text.contains("/etc/shadow") && text.contains("No such file"),
        "{text}"
    );
    assert_eq!(String::from_utf8_lossy(&sh(&a, "echo ok").stdout), "ok\n");
    // The vm/ folder is the jail's; the sandbox folder stays kiln's.
    assert_eq!(fs::metadata(a.dir().join("vm")).unwrap().uid(), ua);
    assert_eq!(fs::metadata(a.dir()).unwrap().uid(), 0);

    // Exec and files.
    assert_eq!(String::from_utf8_lossy(&sh(&a, "echo hi").stdout), "hi\n");
    a.write_file("/tmp/x", b"jailed", None).unwrap();
    assert_eq!(a.read_file("/tmp/x").unwrap(), b"jailed");

    // Snapshot, restore (file and uffd) and fork, all jailed.
    let snap = a
        .snapshot(Some("jailed-snap"))
        .expect("snapshot of a jailed VMM");
    for f in fs::read_dir(snap.state_path().parent().unwrap()).unwrap() {
        let f = f.unwrap();
        assert_eq!(
            f.metadata().unwrap().uid(),
            0,
            "{:?} is the jail's",
            f.path()
        );
    }
    for mem in [MemoryBackend::File, MemoryBackend::Uffd] {
        let r = Sandbox::builder()
            .from_snapshot("jailed-snap")
            .memory_backend(mem)
            .create()
            .unwrap_or_else(|e| panic!("restore ({mem:?}) jailed: {e}"));
        assert_eq!(r.read_file("/tmp/x").unwrap(), b"jailed", "{mem:?}");
        let ur: u32 = status(vmm_of(&r), "Uid:")
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(ur != ua && ur != ub, "a restored sandbox shares a uid");
        r.remove().unwrap();
    }
    let kids = a.fork(2).expect("fork of a jailed VMM");
    for k in &kids {
        assert_eq!(k.read_file("/tmp/x").unwrap(), b"jailed");
    }
    for k in kids {
        k.remove().unwrap();
    }

    // Removal gives the uids back and leaves no lease and no mount.
    a.remove().unwrap();
    b.remove().unwrap();
    kiln::Snapshot::remove_named("jailed-snap").unwrap();
    let leases: Vec<_> = fs::read_dir(&uid_dir.0)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name() != ".lock")
        .map(|e| e.file_name())
        .collect();
    assert!(leases.is_empty(), "uid leases left: {leases:?}");
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(state.0.to_str().unwrap()), "{mounts}");

    // Bad jail settings fail the create with one clear line and leave nothing.
    std::env::set_var("KILN_JAIL_UIDS", "700010-700010");
    let only = Sandbox::builder().image("minimal").create().unwrap();
    let refused = |what: &str, want: &str| {
        let e = Sandbox::builder()
            .image("minimal")
            .create()
            .err()
            .unwrap_or_else(|| panic!("{what}: a create succeeded"))
            .to_string();
        assert!(e.contains(want), "{what}: {e}");
        let left = kiln_e2e::cli::state_entries(&state.0);
        assert_eq!(left, [only.id()], "{what}: left {left:?}");
        assert_eq!(
            kiln::Sandbox::list().unwrap().len(),
            1,
            "{what}: a row is left"
        );
        let groups = kiln::cgroup::state_group(&kiln::cgroup::root(), &state.0);
        let n =
            fs::read_dir(&groups).map_or(0, |d| d.flatten().filter(|e| e.path().is_dir()).count());
        assert!(n <= 1, "{what}: {n} cgroups in {}", groups.display());
    };
    refused(
        "a uid range in use",
        "every uid of KILN_JAIL_UIDS (700010-700010) is in use",
    );
    std::env::set_var("KILN_JAIL_UIDS", "9-1");
    refused("a bad uid range", "KILN_JAIL_UIDS=9-1: expected LOW-HIGH");
    std::env::set_var("KILN_JAIL_UIDS", "700000-700009");
    let not_a_dir = uid_dir.0.join("a-file");
    fs::write(&not_a_dir, b"").unwrap();
    std::env::set_var("KILN_JAIL_UID_DIR", &not_a_dir);
    refused("an unusable uid folder", "cannot create");
    std::env::set_var("KILN_JAIL_UID_DIR", &uid_dir.0);
    std::env::set_var("KILN_JAIL", "yes");
    refused("a bad KILN_JAIL", "KILN_JAIL=yes: use 1");
    std::env::set_var("KILN_JAIL", "1");
    only.remove().unwrap();
}
