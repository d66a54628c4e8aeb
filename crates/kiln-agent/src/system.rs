//! Small pieces of system setup PID 1 does: hostname, loopback, its own OOM
//! score at boot; the realtime clock and the machine id after a restore.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The hostname when `kiln.hostname=` is not given.
pub const DEFAULT_HOSTNAME: &str = "kiln";

/// sethostname(2).
pub fn set_hostname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes; no NUL needed.
    let rc = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The kernel's hostname (uname(2)'s nodename).
pub fn hostname() -> io::Result<String> {
    // SAFETY: utsname is plain data; all-zero is a valid value for uname to fill.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: u is a live, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let bytes: Vec<u8> = u
        .nodename
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Sets CLOCK_REALTIME to `unix_time_ns`; returns how far it moved (new - old, ns).
pub fn step_realtime(unix_time_ns: u64) -> io::Result<i128> {
    let mut old = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: old is a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut old) };
    let new = libc::timespec {
        tv_sec: (unix_time_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (unix_time_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: new is a valid, normalised timespec the call only reads.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &new) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let old_ns = old.tv_sec as i128 * 1_000_000_000 + old.tv_nsec as i128;
    Ok(unix_time_ns as i128 - old_ns)
}

/// Replaces `<etc>/machine-id` with `id` and a newline (mode 0444), atomically:
/// written to a temporary name, synced, renamed over. A failed write leaves the old
/// file and no temporary behind.
pub fn write_machine_id(etc: &Path, id: &str) -> io::Result<()> {
    let tmp = etc.join(".machine-id.kiln-tmp");
    // A temporary left by an interrupted call is replaced, never followed.
    let _ = fs::remove_file(&tmp);
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&tmp)?;
        f.write_all(format!("{id}\n").as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, etc.join("machine-id"))
    };
    write().inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// Sets IFF_UP on `lo` (SIOCGIFFLAGS, then SIOCSIFFLAGS), so that servers a command
/// starts on 127.0.0.1 are reachable from inside the guest.
pub fn loopback_up() -> io::Result<()> {
    crate::net::set_up(&crate::net::ioctl_socket()?, "lo")
}

/// Writes `/proc/self/oom_score_adj` (-1000: the OOM killer never picks PID 1's
/// threads; commands reset theirs to 0).
pub fn set_oom_score_adj(value: i32) -> io::Result<()> {
    std::fs::write("/proc/self/oom_score_adj", value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_id_is_replaced_whole() {
        let dir = std::env::temp_dir().join(format!("kiln-agent-mid-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let id = "0123456789abcdef0123456789abcdef";
        // Twice: a second call (and a stale temporary) is fine.
        fs::write(dir.join(".machine-id.kiln-tmp"), "junk").unwrap();
        for _ in 0..2 {
            write_machine_id(&dir, id).unwrap();
        }
        assert_eq!(
            fs::read_to_string(dir.join("machine-id")).unwrap(),
            format!("{id}\n")
        );
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["machine-id"]);
        let missing = write_machine_id(&dir.join("nope"), id).unwrap_err();
        assert_eq!(missing.raw_os_error(), Some(libc::ENOENT));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hostname_reads_back() {
        assert!(!hostname().unwrap().is_empty());
    }
}
