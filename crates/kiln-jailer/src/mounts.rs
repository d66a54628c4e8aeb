//! The jail's filesystem, built inside its new mount namespace: the root folder bind
//! mounted onto itself, each bind under it, a tmpfs `/dev` with only the device nodes
//! asked for, then pivot_root into it with the old root detached. Nothing of this is
//! visible on the host, and it all goes when the jailed process exits.

use std::fs;
use std::os::unix::fs::{chown, DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::spec::{Bind, Spec};
use crate::sys::{check, cstr, mount, step, Step};

pub fn enter(spec: &Spec) -> Step {
    let root = &spec.root;
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )
    .map_err(step("make the mounts private"))?;
    mount(Some(root), root, None, libc::MS_BIND | libc::MS_REC, None)
        .map_err(step(format!("bind mount {} onto itself", root.display())))?;
    let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV;
    let what = || format!("remount {} nosuid,nodev", root.display());
    let kept = kept_flags(root).map_err(step(what()))?;
    mount(None, root, None, flags | kept, None).map_err(step(what()))?;
    chown(root, Some(spec.uid), Some(spec.gid))
        .map_err(step(format!("give {} to the jail's user", root.display())))?;
    fs::set_permissions(root, fs::Permissions::from_mode(0o700))
        .map_err(step(format!("make {} 0700", root.display())))?;
    for b in &spec.binds {
        bind(root, b)?;
    }
    if !spec.devices.is_empty() {
        devices(root, spec)?;
    }
    pivot(root)
}

/// The flags of the mount at `at` that a remount must keep: in a user namespace the
/// kernel locks a mount's noexec and atime flags, and a remount that drops them fails.
fn kept_flags(at: &Path) -> std::io::Result<libc::c_ulong> {
    let c = cstr(at)?;
    // SAFETY: statvfs is plain data, valid zeroed.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid out pointer.
    let ret = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    check(ret.into())?;
    let pairs = [
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ];
    Ok(pairs
        .iter()
        .filter(|(st_flag, _)| st.f_flag & st_flag != 0)
        .fold(0, |acc, (_, ms)| acc | ms))
}

/// `root/rel`, refusing a symlink on the way (the jailed user may have written one).
fn target(root: &Path, rel: &Path) -> Step<PathBuf> {
    let mut at = root.to_path_buf();
    for c in rel.components() {
        at.push(c);
        if let Ok(m) = fs::symlink_metadata(&at) {
            if m.file_type().is_symlink() {
                return Err(step(format!("mount on {}", at.display()))(
                    std::io::Error::other("it is a symlink"),
                ));
            }
        }
    }
    Ok(at)
}

fn bind(root: &Path, b: &Bind) -> Step {
    let at = target(root, &b.dst)?;
    let what = || format!("bind mount {} at {}", b.src.display(), at.display());
    let is_dir = b.src.is_dir();
    if let Some(parent) = at.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(step(what()))?;
    }
    if !at.exists() {
        if is_dir {
            fs::create_dir(&at).map_err(step(what()))?;
        } else {
            fs::File::create(&at).map_err(step(what()))?;
        }
    }
    let rec = if is_dir { libc::MS_REC } else { 0 };
    mount(Some(&b.src), &at, None, libc::MS_BIND | rec, None).map_err(step(what()))?;
    let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV;
    if b.read_only {
        flags |= libc::MS_RDONLY;
    }
    flags |= kept_flags(&at).map_err(step(what()))?;
    mount(None, &at, None, flags, None).map_err(step(what()))
}

/// A tmpfs `/dev` with only the asked-for nodes: made with mknod as root; in a user
/// namespace (where mknod is refused) the host's node is bind mounted onto an empty file
/// and keeps its host owner and mode (the caller's groups open it).
fn devices(root: &Path, spec: &Spec) -> Step {
    let (uid, gid) = (spec.uid, spec.gid);
    let dev = target(root, Path::new("dev"))?;
    if !dev.exists() {
        fs::create_dir(&dev).map_err(step(format!("create {}", dev.display())))?;
    }
    let flags = libc::MS_NOSUID | libc::MS_NOEXEC;
    mount(None, &dev, Some("tmpfs"), flags, Some("mode=755,size=64k"))
        .map_err(step(format!("mount a tmpfs on {}", dev.display())))?;
    for d in &spec.devices {
        let path = dev.join(d.node());
        let rdev = d.host_rdev().unwrap_or(0);
        let what = || format!("create the device node {}", path.display());
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(step(what()))?;
        }
        if spec.userns {
            fs::File::create(&path).map_err(step(what()))?;
            let host = Path::new("/dev").join(d.node());
            mount(Some(&host), &path, None, libc::MS_BIND, None).map_err(step(what()))?;
            continue;
        }
        let c = cstr(&path).map_err(step(what()))?;
        // SAFETY: `c` is a NUL-terminated path; mknod takes plain integers otherwise.
        let ret = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, rdev) };
        check(ret.into()).map_err(step(what()))?;
        chown(&path, Some(uid), Some(gid)).map_err(step(what()))?;
    }
    Ok(())
}

/// pivot_root(".", ".") in the new root, then the old root (stacked under it) detached.
fn pivot(root: &Path) -> Step {
    let what = || format!("pivot_root into {}", root.display());
    std::env::set_current_dir(root).map_err(step(what()))?;
    let dot = cstr(Path::new(".")).map_err(step(what()))?;
    // SAFETY: pivot_root takes two NUL-terminated paths.
    let ret = unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) };
    check(ret).map_err(step(what()))?;
    // SAFETY: as above; MNT_DETACH lazily unmounts the old root stacked on ".".
    let ret = unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) };
    check(ret.into()).map_err(step("detach the host's root"))?;
    std::env::set_current_dir("/").map_err(step(what()))
}
