//! A private `kiln serve` for `kiln bench api`: a child process of this very binary with
//! its own state directory, socket and token, stopped (SIGTERM) at the end.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kiln_server::client::Client;

pub struct OwnServer {
    child: Child,
    pub log: PathBuf,
}

impl OwnServer {
    /// Starts `kiln serve` on `<state>/kiln.sock` and waits until it answers; returns
    /// it and a client holding its token.
    pub fn start(state: &Path, log: PathBuf) -> Result<(OwnServer, Client)> {
        let exe = std::env::current_exe().context("finding the kiln binary")?;
        let child = Command::new(exe)
            .arg("serve")
            .env("KILN_STATE_DIR", state)
            .env("KILN_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).context("creating the server log")?)
            .spawn()
            .context("starting kiln serve")?;
        let mut s = OwnServer { child, log };
        let url = format!("unix://{}", state.join("kiln.sock").display());
        let probe = Client::new(&url, None)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while probe.health().is_err() {
            if let Some(st) = s.child.try_wait()? {
                bail!(
                    "kiln serve exited ({st}) before answering:\n{}",
                    s.log_text()
                );
            }
            if Instant::now() > deadline {
                bail!("kiln serve did not answer within 60 s:\n{}", s.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let token = std::fs::read_to_string(state.join("token")).context("reading the token")?;
        Ok((s, Client::new(&url, Some(token.trim().to_string()))?))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then SIGKILL if it has not exited within 15 s.
    pub fn stop(mut self) -> Result<()> {
        // SAFETY: kill on our own child, not yet waited for.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                self.child.wait()?;
                bail!("kiln serve did not exit within 15 s of SIGTERM; killed it");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        // Only when stop() was not reached (an error on the way).
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
