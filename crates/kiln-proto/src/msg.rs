//! Message types carried as JSON in hello, request, reply and control frames.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::identity::{Reidentified, Reidentify};

/// First frame each way on a connection (id 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    pub version: u32,
    /// Who is speaking, e.g. "kiln-agent 0.1.0" (informational).
    #[serde(default)]
    pub software: String,
}

/// Terminal size for PTY execs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WinSize {
    pub rows: u16,
    pub cols: u16,
}

/// Run a program.
///
/// The agent replies `Started`, streams `Stdout`/`Stderr` frames (each ending with an EOF
/// frame), and finishes with `Exited`. In PTY mode stdout and stderr are one stream
/// (`Stdout`). The per-command timeout kills the whole process group (SIGKILL) and the
/// reply says `timed_out`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exec {
    pub argv: Vec<String>,
    /// Added to (and overriding) the agent's environment for this command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub gid: Option<u32>,
    /// Whether the host will send stdin (`DataIn` frames, EOF closes it). Without it the
    /// command's stdin is /dev/null.
    #[serde(default)]
    pub stdin: bool,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Run on a pseudo-terminal of this size (interactive shells).
    #[serde(default)]
    pub pty: Option<WinSize>,
}

/// A request, host → agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Exec(Exec),
    /// Reply `FileStart`, then `DataOut` frames (the last has EOF), then `Done`.
    ReadFile {
        path: String,
    },
    /// Followed by `DataIn` frames (the last has EOF); reply `Written`. The file is
    /// written to a temporary name and renamed into place when complete.
    WriteFile {
        path: String,
        #[serde(default)]
        mode: Option<u32>,
        /// Create missing parent directories.
        #[serde(default)]
        parents: bool,
    },
    Mkdir {
        path: String,
        #[serde(default)]
        parents: bool,
        #[serde(default)]
        mode: Option<u32>,
    },
    ListDir {
        path: String,
    },
    Stat {
        path: String,
    },
    Remove {
        path: String,
        #[serde(default)]
        recursive: bool,
    },
    Rename {
        from: String,
        to: String,
    },
    /// Environment for later execs; a `null` value removes the variable.
    SetEnv {
        env: BTreeMap<String, Option<String>>,
    },
    /// Writes `/run/kiln/secrets/<name>` with mode 0600; the value is never logged.
    SetSecret {
        name: String,
        value: String,
    },
    Ping,
    /// After a restore or fork, before anything else: reseed the RNG, step the clock,
    /// new hostname and machine id. Reply `Reidentified`.
    Reidentify(Reidentify),
    /// Turn this connection into a raw TCP stream to `127.0.0.1:port` in the guest
    /// (port-forwarding without a NIC). It must be the only operation on its connection.
    /// The agent replies `Connected` (or an error: `io` with errno 111 and "connection
    /// refused: nothing listens on guest port N"), after which the connection carries raw
    /// bytes both ways, no frames; a half-close (EOF) one way leaves the other open.
    Connect {
        port: u16,
    },
    /// Sync disks and power off (or reboot).
    Shutdown {
        #[serde(default)]
        reboot: bool,
    },
}

/// A message for a live operation, host → agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Control {
    /// Send a signal to the command's process group.
    Signal { signal: i32 },
    /// Resize the command's terminal.
    Resize(WinSize),
}

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// `stat` of one path (symlinks are not followed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits (e.g. 0o644).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: String,
    #[serde(flatten)]
    pub stat: FileStat,
}

/// Error classes a caller can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NotFound,
    PermissionDenied,
    NoSpace,
    IsADirectory,
    NotADirectory,
    AlreadyExists,
    DirectoryNotEmpty,
    /// The request is wrong (empty argv, bad path, bad name).
    InvalidInput,
    /// A malformed frame or message.
    Protocol,
    /// The agent does not support this.
    Unsupported,
    /// Anything else; see `errno` and the message.
    Io,
}

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub kind: ErrorKind,
    pub message: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub errno: Option<i32>,
}

/// ECONNREFUSED: the errno of a `connect` to a guest port nothing listens on.
pub const ECONNREFUSED: i32 = 111;

impl ErrorReply {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ErrorReply {
        ErrorReply {
            kind,
            message: message.into(),
            path: None,
            errno: None,
        }
    }

    /// Classifies an errno.
    pub fn from_errno(errno: i32, message: impl Into<String>, path: Option<&str>) -> ErrorReply {
        let kind = match errno {
            2 => ErrorKind::NotFound,                   // ENOENT
            1 | 13 | 30 => ErrorKind::PermissionDenied, // EPERM, EACCES, EROFS
            28 | 122 => ErrorKind::NoSpace,             // ENOSPC, EDQUOT
            21 => ErrorKind::IsADirectory,              // EISDIR
            20 => ErrorKind::NotADirectory,             // ENOTDIR
            17 => ErrorKind::AlreadyExists,             // EEXIST
            39 => ErrorKind::DirectoryNotEmpty,         // ENOTEMPTY
            22 | 36 => ErrorKind::InvalidInput,         // EINVAL, ENAMETOOLONG
            _ => ErrorKind::Io,
        };
        ErrorReply {
            kind,
            message: message.into(),
            path: path.map(str::to_owned),
            errno: Some(errno),
        }
    }
}

impl std::fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.path {
            Some(p) => write!(f, "{p}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// A reply, agent → host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// An exec's process is running.
    Started {
        pid: i32,
    },
    /// An exec finished. Exactly one of `code` and `signal` is set.
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
        timed_out: bool,
    },
    /// A file read begins; `DataOut` frames follow.
    FileStart {
        size: u64,
        mode: u32,
    },
    /// A file write finished.
    Written {
        bytes: u64,
    },
    Stat(FileStat),
    Entries {
        entries: Vec<DirEntry>,
    },
    /// Agent's monotonic clock (ns) when it answered.
    Pong {
        agent_ns: u64,
    },
    /// What `reidentify` did.
    Reidentified(Reidentified),
    /// A `connect` reached its guest port: raw bytes follow both ways.
    Connected,
    /// The request finished (mkdir, remove, rename, set_env, set_secret, read_file, control,
    /// shutdown).
    Done,
    Error(ErrorReply),
}

#[cfg(test)]
mod tests;
