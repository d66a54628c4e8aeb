//! Running a command in a sandbox with our terminal attached: output streamed as it
//! comes, stdin forwarded, Ctrl-C/SIGTERM forwarded to the command, exit code returned.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use anyhow::Result;
use kiln::{ExecEvent, ExecOptions, Sandbox};

use crate::tty;

/// The last signal we received (0: none), forwarded to the command by a watcher.
static PENDING_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    PENDING_SIGNAL.store(sig, Ordering::SeqCst);
}

/// Runs `opts` (on a terminal if `pty`) and returns the shell-style exit code (124 on
/// timeout, like timeout(1)).
pub fn run(sb: &Sandbox, opts: &ExecOptions, pty: bool) -> Result<i32> {
    let mut stream = if pty {
        let (rows, cols) = tty::size().unwrap_or((24, 80));
        sb.spawn_pty(opts, kiln::WinSize { rows, cols })?
    } else {
        sb.exec_stream(opts)?
    };
    let _raw = if pty { tty::RawMode::enter() } else { None };
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    let mut control = stream.input()?;
    std::thread::spawn(move || {
        let mut last = tty::size();
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let sig = PENDING_SIGNAL.swap(0, Ordering::SeqCst);
            if sig != 0 && control.signal(sig).is_err() {
                return;
            }
            if pty {
                let now = tty::size();
                if now != last {
                    if let Some((r, c)) = now {
                        let _ = control.resize(r, c);
                    }
                    last = now;
                }
            }
        }
    });
    if opts.stdin.is_some() {
        let mut input = stream.input()?;
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut stdin = std::io::stdin().lock();
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if input.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = input.close();
        });
    }
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr());
    loop {
        match stream.next_event()? {
            Some(ExecEvent::Stdout(b)) => {
                out.write_all(&b)?;
                out.flush()?;
            }
            Some(ExecEvent::Stderr(b)) => {
                err.write_all(&b)?;
            }
            Some(ExecEvent::Exit(st)) => {
                drop(_raw);
                return Ok(exit_code(&st));
            }
            None => anyhow::bail!("the command ended without an exit status"),
        }
    }
}

/// Our exit code for a command's status: its shell-style code, or 124 (like timeout(1))
/// when kiln killed it for its timeout, which is also said on stderr.
pub fn exit_code(st: &kiln::ExitStatus) -> i32 {
    if st.timed_out {
        eprintln!("kiln: the command timed out and was killed");
        return 124;
    }
    st.shell_code()
}
