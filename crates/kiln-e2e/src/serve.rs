//! A `kiln serve` child process for the tests that drive the API: the release binary on
//! `<state>/kiln.sock` with a private state directory (under the temp dir, a tmpfs in
//! the harness: unix sockets cannot live on 9p). [`Served`] bundles it with its state
//! directory and the clean-up of what a failed test leaves, as the tours' fixture.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kiln_server::client::Client;

use crate::{kiln_bin, unique, wait_until, TempDir};

pub struct Serve {
    child: Child,
    pub state: PathBuf,
    log: PathBuf,
}

impl Serve {
    /// Starts the server on `state` and waits until it answers.
    pub fn start(state: &Path) -> Serve {
        Serve::start_with(state, &[])
    }

    /// [`Serve::start`] with extra environment variables for the server.
    pub fn start_with(state: &Path, env: &[(&str, &str)]) -> Serve {
        let log = state.with_extension(format!("serve-{}.log", unique()));
        let child = Command::new(kiln_bin())
            .arg("serve")
            .env("KILN_STATE_DIR", state)
            .env("KILN_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the server log"))
            .spawn()
            .expect("spawn kiln serve");
        let s = Serve {
            child,
            state: state.to_path_buf(),
            log,
        };
        let c = s.client();
        let up = wait_until(Duration::from_secs(60), || c.health().is_ok());
        assert!(up, "kiln serve did not come up:\n{}", s.log());
        s
    }

    /// `unix:///.../kiln.sock`.
    pub fn url(&self) -> String {
        format!("unix://{}", self.state.join("kiln.sock").display())
    }

    /// A client with the server's token (read from the token file beside the socket).
    pub fn client(&self) -> Client {
        Client::new(&self.url(), None).expect("client")
    }

    /// The server's peak resident memory so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the server's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Serve {
    /// Whether the server process still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `sig` to the server and waits for it to exit.
    pub fn signal(&mut self, sig: i32) -> std::process::ExitStatus {
        // SAFETY: kill on the pid of our own child, which has not been waited for.
        unsafe { libc::kill(self.child.id() as i32, sig) };
        self.child.wait().expect("wait for kiln serve")
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Removes, when dropped, whatever sandboxes a (failed) test left in a state directory,
/// with the local CLI: their VMMs outlive the server. Create it before the server so it
/// runs after the server is gone.
pub struct Leftovers(pub PathBuf);

impl Drop for Leftovers {
    fn drop(&mut self) {
        let ids: Vec<String> = std::fs::read_dir(&self.0)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("sandbox.json").is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if !ids.is_empty() {
            let _ = Command::new(kiln_bin())
                .arg("rm")
                .args(&ids)
                .env("KILN_STATE_DIR", &self.0)
                .output();
        }
    }
}

/// A `kiln serve` on a private state directory of its own, the fixture the tours
/// (tests/server.rs, tests/remote.rs) run their steps over. Dropped in this order: the
/// server, then whatever sandboxes are left (their VMMs outlive it), then the directory.
pub struct Served {
    pub server: Serve,
    _leftovers: Leftovers,
    pub state: TempDir,
}

impl Served {
    /// Starts a server on a fresh state directory named after `name`.
    pub fn start(name: &str) -> Served {
        let state = TempDir::new(name);
        let leftovers = Leftovers(state.0.clone());
        let server = Serve::start(&state.0);
        Served {
            server,
            _leftovers: leftovers,
            state,
        }
    }
}
