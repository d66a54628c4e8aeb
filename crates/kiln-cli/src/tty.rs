//! Our terminal: its size, and raw mode while a guest terminal is attached.

/// Rows and columns of our stdout's terminal.
pub fn size() -> Option<(u16, u16)> {
    // SAFETY: TIOCGWINSZ fills the winsize we pass.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: as above; fd 1 may not be a terminal, then the ioctl fails.
    let rc = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Raw mode on stdin until dropped (only if stdin is a terminal).
pub struct RawMode(libc::termios);

impl RawMode {
    pub fn enter() -> Option<RawMode> {
        // SAFETY: isatty/tcgetattr/tcsetattr on fd 0 with a termios we own.
        unsafe {
            if libc::isatty(0) != 1 {
                return None;
            }
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return None;
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return None;
            }
            Some(RawMode(saved))
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the settings saved in enter().
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.0) };
    }
}
