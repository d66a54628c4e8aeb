//! Closing every inherited descriptor but stdin, stdout and stderr.

use std::io;

/// Closes fds 3 and up: close_range(2), or each entry of /proc/self/fd where the
/// kernel is older than 5.9.
pub fn close_inherited() -> io::Result<()> {
    // SAFETY: close_range takes plain integers; closing fds we do not use is harmless
    // (this runs before the jail opens anything).
    let ret = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if ret == 0 {
        return Ok(());
    }
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: as above; the read_dir's own fd is closed already (EBADF is fine).
        unsafe { libc::close(fd) };
    }
    Ok(())
}
