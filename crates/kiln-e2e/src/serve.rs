//! A `kiln serve` child process for the tests that drive the API: the release binary on
//! `<state>/kiln.sock` with a private state directory (under the temp dir, a tmpfs in
//! the harness: unix sockets cannot live on 9p).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_server::client::Client;

use crate::kiln_bin;

pub struct Serve {
    child: Child,
    pub state: PathBuf,
    log: PathBuf,
}

impl Serve {
    /// Starts the server on `state` and waits until it answers.
    pub fn start(state: &Path) -> Serve {
        let log = state.with_extension("serve.log");
        let child = Command::new(kiln_bin())
            .arg("serve")
            .env("KILN_STATE_DIR", state)
            .env("KILN_LOG", "info")
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
        let deadline = Instant::now() + Duration::from_secs(60);
        while s.client().health().is_err() {
            assert!(
                Instant::now() < deadline,
                "kiln serve did not come up:\n{}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
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

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Serve {
    /// Stops the server, then removes with the local CLI whatever sandboxes a failed
    /// test left in the state directory (their VMMs outlive the server).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
        let ids: Vec<String> = std::fs::read_dir(&self.state)
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
                .env("KILN_STATE_DIR", &self.state)
                .output();
        }
    }
}
