//! What a command is and what it produced: the public exec types.

use std::collections::BTreeMap;
use std::time::Duration;

pub use kiln_proto::WinSize;

/// A command to run in a sandbox.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Bytes fed to the command's stdin (then closed). `None`: stdin is /dev/null
    /// (for [`crate::Sandbox::exec_stream`]: `Some` opens stdin for streaming).
    pub stdin: Option<Vec<u8>>,
    /// Kill the command's process group after this long. Default: the sandbox's.
    pub timeout: Option<Duration>,
}

impl ExecOptions {
    pub fn new<I, S>(argv: I) -> ExecOptions
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ExecOptions {
            argv: argv.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.insert(k.into(), v.into());
        self
    }

    pub fn cwd(mut self, dir: impl Into<String>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    pub(crate) fn to_proto(
        &self,
        pty: Option<WinSize>,
        default_timeout: Option<Duration>,
    ) -> kiln_proto::Exec {
        kiln_proto::Exec {
            argv: self.argv.clone(),
            env: self.env.clone(),
            cwd: self.cwd.clone(),
            uid: self.uid,
            gid: self.gid,
            stdin: self.stdin.is_some() || pty.is_some(),
            timeout_ms: self
                .timeout
                .or(default_timeout)
                .map(|t| t.as_millis().min(u64::MAX as u128) as u64),
            pty,
        }
    }
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit code, if it exited.
    pub code: Option<i32>,
    /// The terminating signal, if it was killed.
    pub signal: Option<i32>,
    /// Killed by the per-command timeout.
    pub timed_out: bool,
}

impl ExitStatus {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// A shell-style status: the code, or 128 + signal.
    pub fn shell_code(&self) -> i32 {
        self.code.unwrap_or_else(|| 128 + self.signal.unwrap_or(0))
    }
}

/// A finished command's status and output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// One event of a streaming exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(ExitStatus),
}
