//! TAP devices through /dev/net/tun, in the calling thread's namespace.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};

const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
// _IOW('T', 202..206, int)
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const TUNSETOWNER: libc::c_ulong = 0x4004_54cc;
const TUNSETGROUP: libc::c_ulong = 0x4004_54ce;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn ioctl(f: &File, req: libc::c_ulong, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: a tun ioctl taking an integer argument on an fd we own.
    if unsafe { libc::ioctl(f.as_raw_fd(), req, arg) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens (and makes, if it does not exist) the TAP `name` with `vnet_hdr` or not.
pub fn attach(name: &str, vnet_hdr: bool) -> io::Result<File> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: a NUL-terminated path; the fd is checked and owned by the File.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nothing else owns.
    let f = unsafe { File::from_raw_fd(fd) };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI | if vnet_hdr { IFF_VNET_HDR } else { 0 },
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes a struct ifreq, which IfReq lays out.
    if unsafe { libc::ioctl(f.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(f)
}

/// Gives the persistent TAP `name` in namespace `netns` to `uid`/`gid` (a jailed VMM's),
/// so that user may open it without privileges. The TAP must exist: one made here by
/// the open would go away when it is closed.
pub fn set_owner_in(netns: &str, name: &str, uid: u32, gid: u32) -> io::Result<()> {
    super::netns::run_in(netns, || -> io::Result<()> {
        let c =
            std::ffi::CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: a NUL-terminated name; the call only reads it (and asks this thread's
        // namespace, unlike /sys/class/net, which is the namespace sysfs was mounted in).
        if unsafe { libc::if_nametoindex(c.as_ptr()) } == 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no TAP {name} in this namespace"),
            ));
        }
        let f = attach(name, true)?;
        ioctl(&f, TUNSETOWNER, uid.into())?;
        ioctl(&f, TUNSETGROUP, gid.into())
    })?
}

/// Makes the persistent TAP `name` (with a virtio-net header, as a VMM opens it), owned
/// by `owner` (uid, gid) if given, so that user may open it later without privileges.
pub fn create_persistent(name: &str, owner: Option<(u32, u32)>) -> io::Result<()> {
    let f = attach(name, true)?;
    if let Some((uid, gid)) = owner {
        ioctl(&f, TUNSETOWNER, uid.into())?;
        ioctl(&f, TUNSETGROUP, gid.into())?;
    }
    ioctl(&f, TUNSETPERSIST, 1)
}
