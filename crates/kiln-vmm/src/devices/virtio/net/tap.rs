//! The host side of virtio-net: a TAP interface opened from `/dev/net/tun` with
//! `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR` and a 12-byte vnet header (virtio_net_hdr_v1,
//! the same layout the guest uses), non-blocking. The interface must exist already (kiln,
//! or the operator, creates it in the VMM's network namespace); the VMM never creates one.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::HDR_LEN;

/// Longest interface name (IFNAMSIZ - 1).
pub const MAX_NAME: usize = libc::IFNAMSIZ - 1;

/// Why a TAP could not be opened. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error(
        "host_dev_name '{0}' is not a valid interface name; use 1-{MAX_NAME} characters \
         without '/', whitespace or ':' (e.g. \"tap0\")"
    )]
    BadName(String),
    #[error(
        "there is no network interface '{0}' in this network namespace; create the TAP first \
         (e.g. `ip tuntap add {0} mode tap`) or give another host_dev_name"
    )]
    NoSuchDevice(String),
    #[error(
        "cannot open /dev/net/tun: {0}; the host needs the tun module (`modprobe tun`) and \
         the VMM read-write access to /dev/net/tun"
    )]
    OpenTun(io::Error),
    #[error(
        "TAP '{0}' is busy: another process has it open; stop it or give another \
         host_dev_name"
    )]
    Busy(String),
    #[error(
        "not allowed to attach to TAP '{0}': the VMM needs CAP_NET_ADMIN, or the TAP must be \
         created for the VMM's user (`ip tuntap add {0} mode tap user $(id -u)`)"
    )]
    Denied(String),
    #[error("'{0}' is not a TAP device (or does not support IFF_VNET_HDR); give a TAP's name")]
    NotATap(String),
    #[error("cannot configure TAP '{name}': {source}")]
    Setup { name: String, source: io::Error },
}

/// Checks an interface name without touching the host.
pub fn check_name(name: &str) -> Result<(), TapError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(TapError::BadName(name.to_string()))
    }
}

/// `struct ifreq` as TUNSETIFF reads it: the name and the flags (the rest is padding).
#[repr(C)]
pub(super) struct IfReq {
    pub name: [libc::c_char; libc::IFNAMSIZ],
    pub flags: libc::c_short,
    _pad: [u8; 22],
}

impl IfReq {
    /// `name` must have passed [`check_name`] (it fits with its NUL).
    pub fn new(name: &str, flags: libc::c_int) -> IfReq {
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: flags as libc::c_short,
            _pad: [0; 22],
        };
        for (d, s) in req.name.iter_mut().zip(name.bytes().take(MAX_NAME)) {
            *d = s as libc::c_char;
        }
        req
    }
}

/// An open, configured TAP.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Attaches to the existing TAP `name`.
    pub fn open(name: &str) -> Result<Tap, TapError> {
        check_name(name)?;
        let c = CString::new(name).map_err(|_| TapError::BadName(name.to_string()))?;
        // SAFETY: `c` is a valid NUL-terminated string.
        if unsafe { libc::if_nametoindex(c.as_ptr()) } == 0 {
            return Err(TapError::NoSuchDevice(name.to_string()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::OpenTun)?;
        let mut req = IfReq::new(name, libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR);
        // SAFETY: TUNSETIFF reads (and may write back) one ifreq, which `req` is and
        // outlives the call; the fd is ours.
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EBUSY) => TapError::Busy(name.to_string()),
                Some(libc::EPERM) | Some(libc::EACCES) => TapError::Denied(name.to_string()),
                Some(libc::EINVAL) => TapError::NotATap(name.to_string()),
                _ => TapError::Setup {
                    name: name.to_string(),
                    source: e,
                },
            });
        }
        let hdr = HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int, which `hdr` is.
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr) } < 0 {
            return Err(TapError::Setup {
                name: name.to_string(),
                source: io::Error::last_os_error(),
            });
        }
        // No offloads: the host hands over only whole, checksummed frames of at most the
        // TAP's MTU.
        // SAFETY: TUNSETOFFLOAD takes its argument by value.
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETOFFLOAD, 0 as libc::c_uint) } < 0 {
            return Err(TapError::Setup {
                name: name.to_string(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(Tap {
            file,
            name: name.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one frame (vnet header first) into `buf`; Ok(None) when none is queued.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            // SAFETY: writes at most `buf.len()` bytes into `buf`.
            let n =
                unsafe { libc::read(self.file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(Some(n as usize));
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(None),
                _ => return Err(e),
            }
        }
    }

    /// Writes one frame (vnet header first); Ok(false) when the TAP's queue is full.
    pub fn write(&self, frame: &[u8]) -> io::Result<bool> {
        loop {
            // SAFETY: reads `frame.len()` bytes from `frame`.
            let n =
                unsafe { libc::write(self.file.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
            if n >= 0 {
                return Ok(true);
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(false),
                _ => return Err(e),
            }
        }
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}
