//! The agent server: the host's way into the guest (protocol: `kiln-proto`), over
//! vsock or, for VMMs without it, a multiplexed virtio-console port.
//!
//! | module | owns |
//! | --- | --- |
//! | `vsock` | the AF_VSOCK listener and its streams |
//! | `serial`, `mux` | the `kiln.agent` virtio-console port and its demultiplexer: each logical stream becomes a connection, as an accepted vsock stream would |
//! | `conn` | one connection: handshake, frame routing by request id |
//! | `routes` | live ids per connection, and the [`routes::Op`] handle operations answer through |
//! | `writer` | the shared, frame-atomic write half of a connection |
//! | `inbox` | an operation's input queue (stdin/file data, control, cancellation) |
//! | `exec`, `pump`, `command`, `pty`, `group` | running commands |
//! | `reaper` | collecting exit statuses as PID 1 |
//! | `files`, `fsops`, `meta` | file transfer, filesystem metadata, env/secrets/ping/shutdown |
//! | `identity` | `reidentify`: clone safety after a restore or fork |
//! | `tunnel` | `connect`: the connection becomes a raw TCP stream to a guest port |
//!
//! Threads: one accept loop (PID 1's main thread), the serial demultiplexer and one
//! pump per serial stream when the port exists, one thread per connection (reads
//! and routes frames), one per operation, and the reaper. Thread creation can fail
//! (a fork bomb exhausts pids): a connection is then closed, an operation gets an
//! error reply; the agent never panics on it.

pub mod command;
pub mod conn;
pub mod exec;
pub mod files;
pub mod fsops;
pub mod group;
pub mod identity;
pub mod inbox;
pub mod meta;
pub mod mux;
pub mod pty;
pub mod pump;
pub mod reaper;
pub mod routes;
pub mod serial;
pub mod sys;
pub mod tunnel;
pub mod vsock;
pub mod writer;

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_proto::Request;

pub use conn::serve_connection;
use identity::{GuestSys, IdentitySys};
pub use reaper::Waiter;
use routes::Op;
use sys::lock;

/// Where `set_secret` writes.
pub const SECRETS_DIR: &str = "/run/kiln/secrets";

/// A connection's byte stream: the vsock stream in the guest, a `UnixStream` in tests.
pub trait Stream: Read + Write + Send + Sync + 'static {
    fn try_clone_box(&self) -> io::Result<Box<dyn Stream>>;
    /// shutdown(SHUT_RDWR): wakes a blocked reader or writer on another handle.
    fn shutdown_both(&self);
    /// shutdown(SHUT_WR): the host reads EOF, and may still send (a tunnel's half-close).
    fn shutdown_write(&self);
    /// Whether the host has closed (or shut down its sending side), without reading.
    fn peer_closed(&self) -> bool;
}

impl Stream for UnixStream {
    fn try_clone_box(&self) -> io::Result<Box<dyn Stream>> {
        Ok(Box::new(self.try_clone()?))
    }

    fn shutdown_both(&self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
    }

    fn shutdown_write(&self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }

    fn peer_closed(&self) -> bool {
        sys::peer_closed(std::os::fd::AsRawFd::as_raw_fd(self))
    }
}

/// What operations share across connections.
pub struct Context {
    pub waiter: Waiter,
    /// `set_env` values, applied to every later exec.
    env: Mutex<BTreeMap<String, String>>,
    pub secrets_dir: PathBuf,
    /// Powers off (`false`) or reboots (`true`); returns only if that failed.
    power: Box<dyn Fn(bool) + Send + Sync>,
    /// The privileged steps of `reidentify` ([`GuestSys`] unless a test says otherwise).
    identity_sys: Box<dyn IdentitySys>,
    pub software: String,
}

impl Context {
    pub fn new(waiter: Waiter, power: impl Fn(bool) + Send + Sync + 'static) -> Context {
        Context {
            waiter,
            env: Mutex::new(BTreeMap::new()),
            secrets_dir: PathBuf::from(SECRETS_DIR),
            power: Box::new(power),
            identity_sys: Box::new(GuestSys),
            software: format!("kiln-agent {}", env!("CARGO_PKG_VERSION")),
        }
    }

    pub fn with_secrets_dir(mut self, dir: impl Into<PathBuf>) -> Context {
        self.secrets_dir = dir.into();
        self
    }

    /// Replaces the system calls `reidentify` makes (tests use a fake).
    pub fn with_identity_sys(mut self, sys: impl IdentitySys + 'static) -> Context {
        self.identity_sys = Box::new(sys);
        self
    }

    pub fn identity_sys(&self) -> &dyn IdentitySys {
        &*self.identity_sys
    }

    /// The `set_env` environment now.
    pub fn env(&self) -> BTreeMap<String, String> {
        lock(&self.env).clone()
    }

    /// Merges `changes` (`None` removes).
    pub fn update_env(&self, changes: BTreeMap<String, Option<String>>) {
        let mut env = lock(&self.env);
        for (k, v) in changes {
            match v {
                Some(v) => env.insert(k, v),
                None => env.remove(&k),
            };
        }
    }

    pub fn power(&self, reboot: bool) {
        (self.power)(reboot)
    }
}

/// Accepts connections forever, one thread each.
pub fn serve_forever(listener: vsock::VsockListener, ctx: Arc<Context>) -> ! {
    loop {
        let stream = match listener.accept() {
            Ok(s) => s,
            Err(e) => {
                // EMFILE, ENOMEM, ECONNABORTED...: wait a little and go on.
                if e.kind() != io::ErrorKind::Interrupted {
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
        };
        spawn_connection(stream, ctx.clone());
    }
}

/// Serves `stream` on a new thread; if no thread can be made, closes it.
pub fn spawn_connection<S: Stream>(stream: S, ctx: Arc<Context>) {
    let slot = Arc::new(Mutex::new(Some(stream)));
    let theirs = slot.clone();
    let spawned = std::thread::Builder::new()
        .name("conn".into())
        .stack_size(conn::STACK)
        .spawn(move || {
            if let Some(s) = lock(&theirs).take() {
                serve_connection(s, ctx);
            }
        });
    if spawned.is_err() {
        // Dropping the stream closes it; the host sees the connection end.
        if let Some(s) = lock(&slot).take() {
            s.shutdown_both();
        }
    }
}

/// Runs one operation on its own thread.
pub(crate) fn run_op(op: Op, req: Request, ctx: &Context) {
    match req {
        Request::Exec(e) => exec::run(op, e, ctx),
        Request::ReadFile { path } => files::read(op, &path),
        Request::WriteFile {
            path,
            mode,
            parents,
        } => files::write(op, &path, mode, parents),
        Request::Mkdir {
            path,
            parents,
            mode,
        } => fsops::mkdir(op, &path, parents, mode),
        Request::ListDir { path } => fsops::list_dir(op, &path),
        Request::Stat { path } => fsops::stat(op, &path),
        Request::Remove { path, recursive } => fsops::remove(op, &path, recursive),
        Request::Rename { from, to } => fsops::rename(op, &from, &to),
        Request::SetEnv { env } => meta::set_env(op, env, ctx),
        Request::SetSecret { name, value } => meta::set_secret(op, &name, &value, ctx),
        Request::Ping => meta::ping(op),
        Request::Reidentify(r) => identity::reidentify(op, r, ctx),
        Request::Shutdown { reboot } => meta::shutdown(op, reboot, ctx),
        // Served by the connection thread itself (conn.rs), never as an operation.
        Request::Connect { .. } => op.fail(kiln_proto::ErrorReply::new(
            kiln_proto::ErrorKind::Protocol,
            "connect must be the only request on its connection",
        )),
    }
}
