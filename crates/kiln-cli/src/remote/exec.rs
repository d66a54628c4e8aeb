//! `kiln --remote URL exec | run`: a command's output streamed to our stdout and
//! stderr as the server sends it, its exit code ours (as with the local commands).
//!
//! The API has no terminal sessions and takes stdin as text given up front: `-t` is
//! refused, `-i` reads our stdin to its end first. Interrupting `kiln exec` closes the
//! connection, and the server kills the command; interrupting `kiln run` also removes
//! its sandbox.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kiln_server::api::ExecRequest;
use kiln_server::client::{Client, Output};

use super::explain;
use crate::commands::{ExecArgs, RunArgs};
use crate::sandbox_args::CommandArgs;

/// The request for `-e/-w/--timeout/-i` and the command, validated like the local one.
fn request(a: &CommandArgs, cmd: &[String]) -> Result<ExecRequest> {
    if a.tty {
        bail!("-t: the API has no terminal sessions; run without -t (-i still passes stdin)");
    }
    let o = a.options(cmd)?;
    let stdin = if a.interactive {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading stdin")?;
        Some(String::from_utf8(buf).map_err(|_| {
            anyhow::anyhow!("-i: the API takes stdin as text and this input is not UTF-8; copy it in with `kiln cp` and redirect from the file")
        })?)
    } else {
        None
    };
    Ok(ExecRequest {
        cmd: o.argv,
        env: o.env,
        cwd: o.cwd,
        timeout_secs: o.timeout.map(|t| t.as_secs_f64()),
        stdin,
    })
}

/// Runs `req` in sandbox `id`, output to ours as it arrives; returns the exit code.
pub fn stream(c: &Client, id: &str, req: &ExecRequest) -> Result<i32> {
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr());
    let mut write_error = None;
    let exit = c
        .exec(id, req, |o| {
            let r = match o {
                Output::Stdout(b) => out.write_all(b).and_then(|()| out.flush()),
                Output::Stderr(b) => err.write_all(b),
            };
            if let Err(e) = r {
                write_error.get_or_insert(e);
            }
        })
        .map_err(explain)?;
    if let Some(e) = write_error {
        return Err(e).context("writing the command's output");
    }
    Ok(crate::stream::exit_code(&kiln::ExitStatus {
        code: exit.code,
        signal: exit.signal,
        timed_out: exit.timed_out,
    }))
}

pub fn exec(c: &Client, a: ExecArgs) -> Result<i32> {
    let req = request(&a.command, &a.cmd)?;
    stream(c, &a.id, &req)
}

/// The last signal received during `kiln run` (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
}

/// On SIGINT/SIGTERM/SIGHUP, removes sandbox `id` and exits 128 + the signal.
fn remove_on_signal(c: &Client, id: &str) {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    let (c, id) = (c.clone(), id.to_string());
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(50));
        let sig = SIGNAL.load(Ordering::SeqCst);
        if sig != 0 {
            match c.remove(&id) {
                Ok(_) => eprintln!("kiln: interrupted; sandbox {id} removed"),
                Err(e) => eprintln!("kiln: interrupted; removing sandbox {id}: {e}"),
            }
            std::process::exit(128 + sig);
        }
    });
}

/// Creates a sandbox, runs one command in it, removes it; exits with the command's code.
pub fn run(c: &Client, a: RunArgs) -> Result<i32> {
    let req = request(&a.command, &a.cmd)?;
    let create = super::sandboxes::request(&a.sandbox)?;
    let sb = c
        .create(&create)
        .map_err(explain)
        .context("creating the sandbox")?;
    remove_on_signal(c, &sb.id);
    let code = stream(c, &sb.id, &req);
    let removed = c.remove(&sb.id).map_err(explain);
    let code = code?;
    removed.context("removing the sandbox")?;
    Ok(code)
}
