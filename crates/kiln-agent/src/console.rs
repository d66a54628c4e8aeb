//! Console output: one line per message on stdout, which the kernel connects
//! to /dev/console for init. Write errors are ignored: PID 1 must keep going
//! even without a console.

use std::io::Write;

/// Prints `kiln-agent: <msg>` as one line.
pub fn say(msg: std::fmt::Arguments<'_>) {
    let line = format!("kiln-agent: {msg}\n");
    write_all(line.as_bytes());
}

/// Prints `kiln-agent: <prefix><bytes>` as one line; `bytes` are written as is
/// (file contents need not be UTF-8).
pub fn say_bytes(prefix: std::fmt::Arguments<'_>, bytes: &[u8]) {
    let mut line = format!("kiln-agent: {prefix}").into_bytes();
    line.extend_from_slice(bytes);
    line.push(b'\n');
    write_all(&line);
}

fn write_all(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(bytes);
    let _ = out.flush();
}

/// `say!("format", args...)`: prints one `kiln-agent: ...` line.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::console::say(format_args!($($arg)*))
    };
}

/// Makes sure fds 0, 1 and 2 are open. The kernel opens /dev/console for init
/// when it can (the initramfs ships the node); if it could not, stdout is
/// closed, and once devtmpfs is mounted we try again.
pub fn ensure_stdio() {
    // SAFETY: fcntl(F_GETFD) on a small fd number only queries the descriptor.
    if unsafe { libc::fcntl(1, libc::F_GETFD) } != -1 {
        return;
    }
    // SAFETY: the path is a NUL-terminated literal; the returned fd is checked.
    let fd = unsafe { libc::open(c"/dev/console".as_ptr(), libc::O_RDWR | libc::O_NOCTTY) };
    if fd < 0 {
        return;
    }
    for target in 0..=2 {
        // SAFETY: fcntl only queries; dup2 onto a closed standard fd is what we want.
        unsafe {
            if target != fd && libc::fcntl(target, libc::F_GETFD) == -1 {
                libc::dup2(fd, target);
            }
        }
    }
    if fd > 2 {
        // SAFETY: fd was opened above and is no longer needed.
        unsafe { libc::close(fd) };
    }
}

/// The C library's message for an errno value (`strerror`), without Rust's
/// " (os error N)" suffix.
pub fn strerror(errno: i32) -> String {
    let mut buf = [0u8; 128];
    // SAFETY: buf is writable for buf.len() bytes; the XSI strerror_r that libc
    // binds NUL-terminates on success.
    let rc = unsafe { libc::strerror_r(errno, buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return format!("error {errno}");
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

/// `strerror` of an `io::Error` (falls back to its Display when it carries no errno).
pub fn io_strerror(err: &std::io::Error) -> String {
    match err.raw_os_error() {
        Some(errno) => strerror(errno),
        None => err.to_string(),
    }
}

/// The calling thread's errno.
pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strerror_matches_libc() {
        assert_eq!(strerror(libc::ENOENT), "No such file or directory");
        assert_eq!(
            io_strerror(&std::io::Error::from_raw_os_error(libc::EBUSY)),
            "Device or resource busy"
        );
    }
}
