//! Named network namespaces, kept the way `ip netns` keeps them: an empty file under
//! /run/netns with the namespace bind-mounted on it (so `ip netns list` and
//! `ip netns exec` see kiln's too), and code run inside one on a thread of its own.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Where named namespaces live.
pub const NETNS_DIR: &str = "/run/netns";

pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

pub fn exists(name: &str) -> bool {
    path(name).exists()
}

/// The names under /run/netns.
pub fn list() -> Vec<String> {
    let Ok(rd) = fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn mount(src: &Path, dst: &Path, flags: libc::c_ulong) -> io::Result<()> {
    let (s, d, none) = (cstr(src)?, cstr(dst)?, c"none");
    // SAFETY: NUL-terminated strings that outlive the call; no data argument.
    let r = unsafe {
        libc::mount(
            s.as_ptr(),
            d.as_ptr(),
            none.as_ptr(),
            flags,
            std::ptr::null(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes /run/netns a shared mount, as `ip netns add` does, so a namespace mounted
/// there shows in every mount namespace that has it (a jail's too).
fn share_dir() -> io::Result<()> {
    let dir = Path::new(NETNS_DIR);
    fs::create_dir_all(dir)?;
    let shared = libc::MS_SHARED | libc::MS_REC;
    match mount(Path::new(""), dir, shared) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            // Not a mount point yet: bind it onto itself first.
            mount(dir, dir, libc::MS_BIND | libc::MS_REC)?;
            mount(Path::new(""), dir, shared)
        }
        r => r,
    }
}

/// Creates the namespace `name`. EEXIST if one of that name exists (left untouched).
pub fn create(name: &str) -> io::Result<()> {
    share_dir()?;
    let file = path(name);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&file)?;
    let made = std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare affects only this thread, which ends right after.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            mount(Path::new("/proc/thread-self/ns/net"), &file, libc::MS_BIND)
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    });
    if made.is_err() {
        let _ = fs::remove_file(&file);
    }
    made
}

/// Removes the namespace `name` (gone already: fine). The kernel frees it once no
/// process is left inside.
pub fn remove(name: &str) -> io::Result<()> {
    let file = path(name);
    let c = cstr(&file)?;
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        let e = io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) {
            return Err(e);
        }
    }
    match fs::remove_file(&file) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// An open handle on the namespace `name` (for setns or IFLA_NET_NS_FD).
pub fn open(name: &str) -> io::Result<fs::File> {
    let f = fs::File::open(path(name))?;
    // A file that is not a namespace (nothing mounted on it) must not be mistaken for one.
    let nsfs = 0x6e73_6673; // NSFS_MAGIC
                            // SAFETY: statfs is plain data; all zeroes is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs writes into `st` for an fd we own.
    if unsafe { libc::fstatfs(f.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if st.f_type != nsfs {
        return Err(io::Error::other(format!(
            "{} is not a mounted network namespace",
            path(name).display()
        )));
    }
    Ok(f)
}

/// Joins the calling thread to the namespace behind `ns`.
pub fn enter(ns: &fs::File) -> io::Result<()> {
    // SAFETY: setns on an fd we own; only this thread moves.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a new thread inside the namespace `name` (sockets it opens belong there).
pub fn run_in<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    let ns = open(name)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(&ns)?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}
