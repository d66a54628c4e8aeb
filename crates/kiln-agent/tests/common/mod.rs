//! A test client for the agent's server: drives `serve_connection` over a
//! `UnixStream` pair with kiln-proto frames, as the host would over vsock.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_agent::server::{spawn_connection, Context, Waiter};
use kiln_proto::{
    read_frame, write_frame, ErrorKind, ErrorReply, Exec, Frame, Hello, Kind, Reply, Request,
    CHUNK, FLAG_EOF, VERSION,
};

mod fake_identity;
pub use fake_identity::FakeIdentity;

/// A fresh scratch directory under the system temp dir.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-agent-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A server context and what its power hook was asked to do.
pub struct Agent {
    pub ctx: Arc<Context>,
    pub power_calls: Arc<Mutex<Vec<bool>>>,
    pub identity: FakeIdentity,
    pub secrets: PathBuf,
    scratch: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

pub fn agent(waiter: Waiter, name: &str) -> Agent {
    let power_calls = Arc::new(Mutex::new(Vec::new()));
    let calls = power_calls.clone();
    let dir = scratch(&format!("agent-{name}"));
    let secrets = dir.join("secrets");
    let identity = FakeIdentity::default();
    let ctx = Context::new(waiter, move |reboot| calls.lock().unwrap().push(reboot))
        .with_secrets_dir(&secrets)
        .with_identity_sys(identity.clone());
    Agent {
        ctx: Arc::new(ctx),
        power_calls,
        identity,
        secrets,
        scratch: dir,
    }
}

pub struct Client {
    pub r: BufReader<UnixStream>,
    pub w: UnixStream,
}

impl Agent {
    /// A new connection, without the handshake.
    pub fn connect_raw(&self) -> Client {
        let (ours, theirs) = UnixStream::pair().unwrap();
        spawn_connection(theirs, self.ctx.clone());
        ours.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        Client {
            w: ours.try_clone().unwrap(),
            r: BufReader::new(ours),
        }
    }

    /// A new connection after a successful hello.
    pub fn connect(&self) -> Client {
        let mut c = self.connect_raw();
        let h = c.hello(VERSION);
        assert_eq!(h.version, VERSION);
        c
    }
}

/// Everything an exec sent back.
#[derive(Debug, Default)]
pub struct ExecResult {
    pub pid: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub error: Option<ErrorReply>,
    stdout_eof: bool,
    stderr_eof: bool,
    done: bool,
}

impl ExecResult {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Takes one frame of this exec, checking the reply sequence.
    fn take(&mut self, f: Frame) {
        assert!(!self.done, "frame after the final reply: {f:?}");
        match f.kind {
            Kind::Stdout | Kind::Stderr => {
                let (buf, eof) = if f.kind == Kind::Stdout {
                    (&mut self.stdout, &mut self.stdout_eof)
                } else {
                    (&mut self.stderr, &mut self.stderr_eof)
                };
                assert!(!*eof, "{:?} data after its EOF", f.kind);
                assert!(f.payload.len() <= CHUNK);
                buf.extend_from_slice(&f.payload);
                if f.eof() {
                    assert!(f.payload.is_empty(), "EOF frames are empty");
                    *eof = true;
                }
            }
            Kind::Reply => match f.parse::<Reply>().unwrap() {
                Reply::Started { pid } => {
                    assert_eq!(self.pid, 0, "Started twice");
                    self.pid = pid;
                }
                Reply::Exited {
                    code,
                    signal,
                    timed_out,
                } => {
                    assert!(self.pid > 0, "Exited before Started");
                    assert!(
                        self.stdout_eof && self.stderr_eof,
                        "Exited before both EOF frames"
                    );
                    assert!(code.is_some() != signal.is_some(), "{code:?} {signal:?}");
                    (self.code, self.signal, self.timed_out) = (code, signal, timed_out);
                    self.done = true;
                }
                Reply::Error(e) => {
                    self.error = Some(e);
                    self.done = true;
                }
                r => panic!("unexpected reply in an exec: {r:?}"),
            },
            k => panic!("unexpected {k:?} frame in an exec"),
        }
    }
}

impl Client {
    pub fn raw(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).unwrap();
    }

    pub fn send(&mut self, kind: Kind, flags: u8, id: u32, payload: &[u8]) {
        write_frame(&mut self.w, kind, flags, id, payload).unwrap();
    }

    pub fn hello(&mut self, version: u32) -> Hello {
        let h = Hello {
            version,
            software: "test".into(),
        };
        self.raw(&Frame::json(Kind::Hello, 0, &h).encode());
        let f = self.recv();
        assert_eq!((f.kind, f.id), (Kind::Hello, 0), "{f:?}");
        f.parse().unwrap()
    }

    pub fn request(&mut self, id: u32, req: &Request) {
        self.raw(&Frame::json(Kind::Request, id, req).encode());
    }

    pub fn recv(&mut self) -> Frame {
        read_frame(&mut self.r)
            .expect("a frame")
            .expect("the agent closed the connection")
    }

    /// The next frame, or None at end of stream.
    pub fn recv_or_end(&mut self) -> Option<Frame> {
        read_frame(&mut self.r).ok().flatten()
    }

    pub fn reply(&mut self) -> (u32, Reply) {
        let f = self.recv();
        assert_eq!(f.kind, Kind::Reply, "{f:?}");
        (f.id, f.parse().unwrap())
    }

    /// A request with a single reply.
    pub fn call(&mut self, id: u32, req: &Request) -> Reply {
        self.request(id, req);
        let (got, r) = self.reply();
        assert_eq!(got, id);
        r
    }

    /// The error reply of a call that must fail.
    pub fn call_err(&mut self, id: u32, req: &Request) -> ErrorReply {
        match self.call(id, req) {
            Reply::Error(e) => e,
            r => panic!("expected an error for {req:?}, got {r:?}"),
        }
    }

    pub fn error_reply(&mut self) -> (u32, ErrorReply) {
        match self.reply() {
            (id, Reply::Error(e)) => (id, e),
            (id, r) => panic!("expected an error reply, got {r:?} on {id}"),
        }
    }

    /// Runs an exec to completion; `stdin` is sent from another thread.
    pub fn exec(&mut self, id: u32, mut exec: Exec, stdin: Option<Vec<u8>>) -> ExecResult {
        exec.stdin = exec.stdin || stdin.is_some();
        self.request(id, &Request::Exec(exec));
        let feeder = stdin.map(|data| {
            let mut w = self.w.try_clone().unwrap();
            std::thread::spawn(move || {
                for chunk in data.chunks(CHUNK) {
                    if write_frame(&mut w, Kind::DataIn, 0, id, chunk).is_err() {
                        return;
                    }
                }
                let _ = write_frame(&mut w, Kind::DataIn, FLAG_EOF, id, &[]);
            })
        });
        let mut res = ExecResult::default();
        while !res.done {
            let f = self.recv();
            assert_eq!(f.id, id, "{f:?}");
            res.take(f);
        }
        if let Some(f) = feeder {
            f.join().unwrap();
        }
        res
    }

    /// Collects interleaved execs until each of `ids` has finished.
    pub fn collect(&mut self, ids: &[u32]) -> BTreeMap<u32, ExecResult> {
        let mut out: BTreeMap<u32, ExecResult> =
            ids.iter().map(|&id| (id, ExecResult::default())).collect();
        while out.values().any(|r| !r.done) {
            let f = self.recv();
            out.get_mut(&f.id)
                .unwrap_or_else(|| panic!("frame for unexpected id: {f:?}"))
                .take(f);
        }
        out
    }
}

/// `sh -c script`.
pub fn sh(script: &str) -> Exec {
    Exec {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        ..Exec::default()
    }
}

pub fn argv(args: &[&str]) -> Exec {
    Exec {
        argv: args.iter().map(|s| s.to_string()).collect(),
        ..Exec::default()
    }
}

pub fn assert_kind(e: &ErrorReply, kind: ErrorKind, path: Option<&str>) {
    assert_eq!(e.kind, kind, "{e:?}");
    assert_eq!(e.path.as_deref(), path, "{e:?}");
}

/// Whether any process in group `pgid` is alive (zombies do not count).
pub fn group_alive(pgid: i32) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            return false;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            return false;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        f.len() > 3 && f[2] == pgid.to_string() && f[0] != "Z" && f[0] != "X"
    })
}
