//! A running command: its output as events, its stdin, signals and terminal size.

use std::io::Write;
use std::os::unix::net::UnixStream;

use kiln_proto::{write_frame, Control, Frame, Kind, Reply, Request, WinSize, FLAG_EOF};

use super::{parse_reply, unexpected, AgentAddr, AgentConn, REQ_ID};
use crate::error::{Error, Result};
use crate::exec::{ExecEvent, ExecOptions, ExecOutput, ExitStatus};

/// A command started with [`AgentAddr::exec_stream`]. Dropping it closes the connection,
/// which makes the agent kill the command.
pub struct ExecStream {
    conn: AgentConn,
    pid: i32,
    done: bool,
}

/// Ends an [`ExecStream`]'s connection from any thread (its reader then returns an
/// error at once), which makes the agent kill the command's process group.
pub struct ExecCancel {
    sock: UnixStream,
}

impl ExecCancel {
    /// Shuts the agent connection down both ways.
    pub fn cancel(&self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }
}

/// Writes stdin, signals and resizes for an [`ExecStream`] from any thread.
pub struct ExecInput {
    writer: UnixStream,
}

impl AgentAddr {
    /// Starts a command; returns once the agent has started it.
    pub fn exec_stream(
        &self,
        opts: &ExecOptions,
        pty: Option<WinSize>,
        default_timeout: Option<std::time::Duration>,
    ) -> Result<ExecStream> {
        if opts.argv.is_empty() {
            return Err(Error::InvalidInput("empty command".into()));
        }
        let mut conn = self.open(&Request::Exec(opts.to_proto(pty, default_timeout)))?;
        let frame = conn.recv()?;
        let pid = match parse_reply(&frame)? {
            Reply::Started { pid } => pid,
            r => return Err(unexpected("exec", r)),
        };
        Ok(ExecStream {
            conn,
            pid,
            done: false,
        })
    }

    /// Runs a command to completion and collects its output.
    pub fn exec(
        &self,
        opts: &ExecOptions,
        default_timeout: Option<std::time::Duration>,
    ) -> Result<ExecOutput> {
        let mut s = self.exec_stream(opts, None, default_timeout)?;
        let feeder = match &opts.stdin {
            Some(data) => {
                let mut input = s.input()?;
                let data = data.clone();
                // A separate thread, so a command that writes before reading all of its
                // stdin cannot deadlock against us.
                Some(std::thread::spawn(move || {
                    let _ = input.write_all(&data).and_then(|_| input.close());
                }))
            }
            None => None,
        };
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let status = loop {
            match s.next_event()? {
                Some(ExecEvent::Stdout(b)) => stdout.extend(b),
                Some(ExecEvent::Stderr(b)) => stderr.extend(b),
                Some(ExecEvent::Exit(st)) => break st,
                None => return Err(Error::Protocol("exec ended without a status".into())),
            }
        };
        drop(s);
        if let Some(f) = feeder {
            let _ = f.join();
        }
        let output = ExecOutput {
            status,
            stdout,
            stderr,
        };
        if status.timed_out {
            let after = opts.timeout.or(default_timeout).unwrap_or_default();
            return Err(Error::CommandTimedOut {
                after,
                output: Box::new(output),
            });
        }
        Ok(output)
    }
}

impl ExecStream {
    /// The command's pid in the guest.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// A handle for stdin, signals and resizes (usable from another thread).
    pub fn input(&self) -> Result<ExecInput> {
        Ok(ExecInput {
            writer: self.conn.writer()?,
        })
    }

    /// A handle that cancels this command from another thread (e.g. when the client
    /// that streams it goes away while it prints nothing).
    pub fn canceller(&self) -> Result<ExecCancel> {
        Ok(ExecCancel {
            sock: self.conn.writer()?,
        })
    }

    /// The next output chunk or the exit status; `None` after the exit status.
    pub fn next_event(&mut self) -> Result<Option<ExecEvent>> {
        if self.done {
            return Ok(None);
        }
        loop {
            let frame = self.conn.recv()?;
            match frame.kind {
                Kind::Stdout | Kind::Stderr if frame.payload.is_empty() => continue,
                Kind::Stdout => return Ok(Some(ExecEvent::Stdout(frame.payload))),
                Kind::Stderr => return Ok(Some(ExecEvent::Stderr(frame.payload))),
                Kind::Reply => match parse_reply(&frame)? {
                    Reply::Exited {
                        code,
                        signal,
                        timed_out,
                    } => {
                        self.done = true;
                        return Ok(Some(ExecEvent::Exit(ExitStatus {
                            code,
                            signal,
                            timed_out,
                        })));
                    }
                    // Acknowledgements of control messages.
                    Reply::Done => continue,
                    r => return Err(unexpected("exec", r)),
                },
                k => {
                    return Err(Error::Protocol(format!(
                        "unexpected {k:?} frame in an exec"
                    )))
                }
            }
        }
    }
}

impl ExecInput {
    fn control(&mut self, c: &Control) -> std::io::Result<()> {
        let f = Frame::json(Kind::Control, REQ_ID, c);
        self.writer.write_all(&f.encode())
    }

    /// Closes the command's stdin.
    pub fn close(&mut self) -> std::io::Result<()> {
        write_frame(&mut self.writer, Kind::DataIn, FLAG_EOF, REQ_ID, &[])
    }

    /// Sends a signal to the command's process group.
    pub fn signal(&mut self, signal: i32) -> std::io::Result<()> {
        self.control(&Control::Signal { signal })
    }

    /// Resizes the command's terminal (PTY mode).
    pub fn resize(&mut self, rows: u16, cols: u16) -> std::io::Result<()> {
        self.control(&Control::Resize(WinSize { rows, cols }))
    }
}

impl Write for ExecInput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(kiln_proto::CHUNK);
        write_frame(&mut self.writer, Kind::DataIn, 0, REQ_ID, &buf[..n])?;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
