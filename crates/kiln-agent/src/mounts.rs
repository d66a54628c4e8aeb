//! Mounting: the base filesystems every guest gets, and the `kiln.mount=`
//! requests from the command line.

use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::cmdline::MountSpec;
use crate::console::{errno, strerror};

/// One base mount: source, target, fstype, flags, data.
struct Base {
    src: &'static CStr,
    dir: &'static CStr,
    fstype: &'static CStr,
    flags: libc::c_ulong,
    data: Option<&'static CStr>,
    /// Mounted already (e.g. devtmpfs auto-mounted by the kernel) is fine.
    ok_if_busy: bool,
}

const NOSUID_NODEV_NOEXEC: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

const BASE: [Base; 7] = [
    Base {
        src: c"proc",
        dir: c"/proc",
        fstype: c"proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
        ok_if_busy: false,
    },
    Base {
        src: c"sysfs",
        dir: c"/sys",
        fstype: c"sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
        ok_if_busy: false,
    },
    Base {
        src: c"devtmpfs",
        dir: c"/dev",
        fstype: c"devtmpfs",
        flags: libc::MS_NOSUID,
        data: Some(c"mode=0755"),
        ok_if_busy: true,
    },
    // Pseudo-terminals for PTY execs (devtmpfs provides /dev/ptmx; it finds this
    // devpts instance as its sibling "pts"). gid 5 is the conventional tty group.
    Base {
        src: c"devpts",
        dir: c"/dev/pts",
        fstype: c"devpts",
        flags: libc::MS_NOSUID | libc::MS_NOEXEC,
        data: Some(c"gid=5,mode=0620,ptmxmode=0666"),
        ok_if_busy: true,
    },
    // POSIX shared memory (shm_open, Python multiprocessing).
    Base {
        src: c"tmpfs",
        dir: c"/dev/shm",
        fstype: c"tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: Some(c"mode=1777"),
        ok_if_busy: true,
    },
    Base {
        src: c"tmpfs",
        dir: c"/tmp",
        fstype: c"tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: Some(c"mode=1777"),
        ok_if_busy: false,
    },
    Base {
        src: c"tmpfs",
        dir: c"/run",
        fstype: c"tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: Some(c"mode=0755"),
        ok_if_busy: false,
    },
];

/// The /dev symlinks devtmpfs does not create (shells use /dev/fd for `<(...)`).
const DEV_LINKS: [(&CStr, &CStr); 4] = [
    (c"/proc/self/fd", c"/dev/fd"),
    (c"/proc/self/fd/0", c"/dev/stdin"),
    (c"/proc/self/fd/1", c"/dev/stdout"),
    (c"/proc/self/fd/2", c"/dev/stderr"),
];

/// Mounts /proc, /sys, /dev (with /dev/pts and /dev/shm), /tmp and /run,
/// creating the directories if needed, and adds the /dev/fd links. Failures
/// are printed and otherwise ignored: a guest without /sys is still more
/// useful than a kernel panic.
pub fn mount_base() {
    for m in &BASE {
        mkdir(m.dir);
        let rc = sys_mount(m.src, m.dir, m.fstype, m.flags, m.data);
        if rc != 0 {
            let e = errno();
            if !(m.ok_if_busy && e == libc::EBUSY) {
                say!(
                    "mount {} on {} failed: {}",
                    m.src.to_string_lossy(),
                    m.dir.to_string_lossy(),
                    strerror(e)
                );
            }
        }
    }
    for (target, link) in DEV_LINKS {
        // SAFETY: both are NUL-terminated literals. EEXIST (a link already
        // there) is fine; anything else only costs the convenience link.
        unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) };
    }
}

/// Mounts a `kiln.mount=` request. Returns the mount point on success (so
/// that it can be unmounted at shutdown); prints the failure otherwise.
pub fn mount_spec(spec: &MountSpec) -> Option<PathBuf> {
    let fail = |err: String| {
        say!(
            "mount {} on {} failed: {}",
            spec.dev.display(),
            spec.dir.display(),
            err
        );
        None
    };
    // The parser rejects NUL, so these conversions only fail on a bug.
    let (Some(dev), Some(dir), Ok(fstype)) = (
        cpath(&spec.dev),
        cpath(&spec.dir),
        CString::new(spec.fstype.as_str()),
    ) else {
        return fail("path contains NUL".into());
    };
    if let Err(e) = mkdir_p(&spec.dir) {
        return fail(strerror(e));
    }
    let flags = if spec.read_only { libc::MS_RDONLY } else { 0 };
    if sys_mount(&dev, &dir, &fstype, flags, None) != 0 {
        return fail(strerror(errno()));
    }
    Some(spec.dir.clone())
}

/// Unmounts `dirs` in reverse order (the `kiln.mount=` mounts, before power
/// off or reboot), printing failures.
pub fn unmount_all(dirs: &[PathBuf]) {
    for dir in dirs.iter().rev() {
        let Some(c) = cpath(dir) else { continue };
        // SAFETY: c is a valid NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
            say!("umount {} failed: {}", dir.display(), strerror(errno()));
        }
    }
}

/// mount(2) with C strings; returns 0 or -1 (errno set).
pub(crate) fn sys_mount(
    src: &CStr,
    dir: &CStr,
    fstype: &CStr,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> libc::c_int {
    let data = data.map_or(std::ptr::null(), |d| d.as_ptr().cast());
    // SAFETY: all strings are NUL-terminated and outlive the call; data is a
    // NUL-terminated option string or null.
    unsafe { libc::mount(src.as_ptr(), dir.as_ptr(), fstype.as_ptr(), flags, data) }
}

/// mkdir(path, 0755), ignoring EEXIST (and any other error: mount reports it).
fn mkdir(path: &CStr) {
    // SAFETY: path is NUL-terminated.
    unsafe { libc::mkdir(path.as_ptr(), 0o755) };
}

/// `mkdir -p`: creates every missing component of `path` (mode 0755).
/// Returns the errno of the first failure other than EEXIST.
pub(crate) fn mkdir_p(path: &Path) -> Result<(), i32> {
    let bytes = path.as_os_str().as_bytes();
    // Every prefix ending just before a `/`, then the whole path.
    let ends = bytes
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'/' && i > 0)
        .map(|(i, _)| i)
        .chain(std::iter::once(bytes.len()));
    for end in ends {
        let prefix = &bytes[..end];
        if prefix.ends_with(b"/") {
            continue;
        }
        let c = CString::new(prefix).map_err(|_| libc::EINVAL)?;
        // SAFETY: c is NUL-terminated.
        if unsafe { libc::mkdir(c.as_ptr(), 0o755) } != 0 {
            let e = errno();
            if e != libc::EEXIST {
                return Err(e);
            }
        }
    }
    Ok(())
}

pub(crate) fn cpath(p: &Path) -> Option<CString> {
    CString::new(p.as_os_str().as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mkdir_p_creates_nested_dirs_and_tolerates_existing() {
        let base = std::env::temp_dir().join(format!("kiln-agent-mkdir-{}", std::process::id()));
        let nested = base.join("a//b/c/");
        assert_eq!(mkdir_p(&nested), Ok(()));
        assert!(base.join("a/b/c").is_dir());
        assert_eq!(mkdir_p(&nested), Ok(()));
        std::fs::write(base.join("file"), b"").unwrap();
        assert_eq!(mkdir_p(&base.join("file/x")), Err(libc::ENOTDIR));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
