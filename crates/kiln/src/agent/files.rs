//! File operations: streamed reads and writes of any size, directory trees, metadata.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use kiln_proto::{DirEntry, FileKind, FileStat, Kind, Reply, Request, CHUNK, FLAG_EOF};

use super::{parse_reply, unexpected, AgentAddr};
use crate::error::{Error, Result};

impl AgentAddr {
    /// Streams a guest file into `out`; returns its size.
    pub fn read_file_to(&self, path: &str, out: &mut impl Write) -> Result<u64> {
        let mut conn = self.open(&Request::ReadFile { path: path.into() })?;
        match conn.reply()? {
            Reply::FileStart { .. } => {}
            r => return Err(unexpected("read_file", r)),
        }
        let mut total = 0u64;
        loop {
            let frame = conn.recv()?;
            match frame.kind {
                Kind::DataOut => {
                    out.write_all(&frame.payload).map_err(|e| {
                        Error::Io(std::io::Error::new(
                            e.kind(),
                            format!("writing {path} locally: {e}"),
                        ))
                    })?;
                    total += frame.payload.len() as u64;
                    if frame.eof() {
                        break;
                    }
                }
                // An error in the middle of the file (e.g. EIO).
                _ => {
                    parse_reply(&frame)?;
                    return Err(Error::Protocol(
                        "read_file: reply before the end of the data".into(),
                    ));
                }
            }
        }
        match conn.reply()? {
            Reply::Done => Ok(total),
            r => Err(unexpected("read_file", r)),
        }
    }

    /// Streams `input` into a guest file (created or replaced atomically).
    pub fn write_file_from(
        &self,
        path: &str,
        input: &mut impl Read,
        mode: Option<u32>,
    ) -> Result<u64> {
        let mut conn = self.open(&Request::WriteFile {
            path: path.into(),
            mode,
            parents: true,
        })?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match input.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            let flags = if n == 0 { FLAG_EOF } else { 0 };
            if let Err(e) = conn.send(Kind::DataIn, flags, &buf[..n]) {
                // The agent may have refused the write early (e.g. a directory in the
                // way) and closed; its reply says why.
                return Err(conn.reply().err().unwrap_or(e));
            }
            if n == 0 {
                break;
            }
        }
        match conn.reply()? {
            Reply::Written { bytes } => Ok(bytes),
            r => Err(unexpected("write_file", r)),
        }
    }

    fn done(&self, what: &str, req: Request) -> Result<()> {
        match self.call(&req)? {
            Reply::Done => Ok(()),
            r => Err(unexpected(what, r)),
        }
    }

    pub fn stat(&self, path: &str) -> Result<FileStat> {
        match self.call(&Request::Stat { path: path.into() })? {
            Reply::Stat(s) => Ok(s),
            r => Err(unexpected("stat", r)),
        }
    }

    pub fn list_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        match self.call(&Request::ListDir { path: path.into() })? {
            Reply::Entries { entries } => Ok(entries),
            r => Err(unexpected("list_dir", r)),
        }
    }

    pub fn mkdir(&self, path: &str, parents: bool) -> Result<()> {
        self.done(
            "mkdir",
            Request::Mkdir {
                path: path.into(),
                parents,
                mode: None,
            },
        )
    }

    pub fn remove(&self, path: &str, recursive: bool) -> Result<()> {
        self.done(
            "remove",
            Request::Remove {
                path: path.into(),
                recursive,
            },
        )
    }

    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.done(
            "rename",
            Request::Rename {
                from: from.into(),
                to: to.into(),
            },
        )
    }

    pub fn set_env(&self, env: BTreeMap<String, Option<String>>) -> Result<()> {
        self.done("set_env", Request::SetEnv { env })
    }

    pub fn set_secret(&self, name: &str, value: &str) -> Result<()> {
        self.done(
            "set_secret",
            Request::SetSecret {
                name: name.into(),
                value: value.into(),
            },
        )
    }

    /// Round trip to the agent and back.
    pub fn ping(&self) -> Result<Duration> {
        let t = Instant::now();
        match self.call(&Request::Ping)? {
            Reply::Pong { .. } => Ok(t.elapsed()),
            r => Err(unexpected("ping", r)),
        }
    }

    /// Asks the agent to sync and power off; `Ok` once it has acknowledged.
    pub fn shutdown(&self) -> Result<()> {
        self.done("shutdown", Request::Shutdown { reboot: false })
    }

    /// [`shutdown`](Self::shutdown), giving up (`AgentUnavailable`) when the agent
    /// has not acknowledged within `limit` (it syncs before it answers).
    pub fn shutdown_within(&self, limit: Duration) -> Result<()> {
        let mut conn = self.open(&Request::Shutdown { reboot: false })?;
        conn.set_read_timeout(Some(limit))?;
        match conn.reply()? {
            Reply::Done => Ok(()),
            r => Err(unexpected("shutdown", r)),
        }
    }

    /// Copies a local file or directory tree to `remote`. Returns bytes copied.
    pub fn upload(&self, local: &Path, remote: &str) -> Result<u64> {
        let meta = fs::symlink_metadata(local).map_err(Error::host_io("cannot read", local))?;
        if meta.is_dir() {
            self.mkdir(remote, true)?;
            let mut total = 0;
            let mut entries: Vec<_> = fs::read_dir(local)
                .map_err(Error::host_io("cannot list", local))?
                .collect::<std::io::Result<_>>()
                .map_err(Error::host_io("cannot list", local))?;
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let name = e.file_name();
                let Some(name) = name.to_str() else {
                    return Err(Error::InvalidInput(format!(
                        "{}: file name is not UTF-8",
                        e.path().display()
                    )));
                };
                total += self.upload(&e.path(), &join(remote, name))?;
            }
            Ok(total)
        } else if meta.is_file() {
            use std::os::unix::fs::PermissionsExt;
            let mut f = fs::File::open(local).map_err(Error::host_io("cannot open", local))?;
            self.write_file_from(remote, &mut f, Some(meta.permissions().mode() & 0o7777))
        } else {
            Err(Error::Unsupported(format!(
                "{}: only files and directories can be uploaded",
                local.display()
            )))
        }
    }

    /// Copies a guest file or directory tree to `local`. Returns bytes copied.
    pub fn download(&self, remote: &str, local: &Path) -> Result<u64> {
        let st = self.stat(remote)?;
        match st.kind {
            FileKind::Dir => {
                fs::create_dir_all(local).map_err(Error::host_io("cannot create", local))?;
                let mut total = 0;
                for e in self.list_dir(remote)? {
                    if matches!(e.stat.kind, FileKind::File | FileKind::Dir) {
                        total += self.download(&join(remote, &e.name), &local.join(&e.name))?;
                    }
                }
                Ok(total)
            }
            FileKind::File => {
                use std::os::unix::fs::PermissionsExt;
                let tmp = local.with_file_name(format!(
                    ".{}.kiln-part",
                    local
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or("download")
                ));
                let mut f =
                    fs::File::create(&tmp).map_err(Error::host_io("cannot create", &tmp))?;
                // The buffer is flushed explicitly: an error in the last write (say,
                // ENOSPC) must fail the download, not vanish in a drop.
                let mut out = std::io::BufWriter::with_capacity(CHUNK, &mut f);
                let copied = self.read_file_to(remote, &mut out).and_then(|n| {
                    out.flush()
                        .map_err(Error::host_io("cannot write", &tmp))
                        .map(|_| n)
                });
                drop(out);
                let n = match copied {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = fs::remove_file(&tmp);
                        return Err(e);
                    }
                };
                let _ = f.set_permissions(fs::Permissions::from_mode(st.mode & 0o7777));
                fs::rename(&tmp, local).map_err(Error::host_io("cannot write", local))?;
                Ok(n)
            }
            _ => Err(Error::Unsupported(format!(
                "{remote}: only files and directories can be downloaded"
            ))),
        }
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}
