//! Starting and stopping the server: the token, the listeners (a unix socket, and TCP
//! on request), reconciling the store on start, reaping expired sandboxes every second,
//! and a graceful shutdown on SIGTERM/SIGINT. The server holds no state of its own
//! beyond counters: sandboxes are detached VMM processes recorded in the store, so
//! they keep running when it stops and a new server adopts them.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::app::AppState;
use crate::auth::{self, Token};
use crate::children::Children;
use crate::conn::limits::{Limits, LimitsError};
use crate::conn::{self, Listener};
use crate::metrics::ServerMetrics;
use crate::router::router;

/// How long in-flight requests may take to finish after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(10);

/// `kiln serve`'s options.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// The unix socket (default `<state dir>/kiln.sock`); created with mode 0600.
    pub socket: Option<PathBuf>,
    /// Also listen on this TCP address (loopback only, unless `allow_non_loopback`).
    pub listen: Option<SocketAddr>,
    /// The token file (default `<state dir>/token`).
    pub token_file: Option<PathBuf>,
    pub allow_non_loopback: bool,
    /// Connection limits and timeouts (default: [`Limits::from_env`]).
    pub limits: Option<Limits>,
}

/// Descriptors kept for everything but client connections (the store, agent
/// connections, VMM sockets) when the open-file limit caps the connection count.
const FD_RESERVE: usize = 512;

/// The listen backlog: a burst of connections waits in the kernel, not refused there.
const BACKLOG: i32 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("refusing to listen on {0}: it is not a loopback address, so the API would be reachable from the network over plain HTTP with only the bearer token to protect it; pass --allow-non-loopback to do so anyway (behind TLS or a firewall)")]
    NonLoopback(SocketAddr),
    #[error("another kiln serve is already listening on {}", .0.display())]
    AlreadyServing(PathBuf),
    #[error("{what} {path}: {cause}")]
    Io {
        what: &'static str,
        path: String,
        cause: std::io::Error,
    },
    #[error("{0}")]
    Token(#[from] auth::TokenError),
    #[error("reconcile failed: {0}")]
    Reconcile(tokio::task::JoinError),
    #[error(transparent)]
    Kiln(#[from] kiln::Error),
    #[error("{0}")]
    Limits(#[from] LimitsError),
}

fn io_err(
    what: &'static str,
    path: impl std::fmt::Display,
) -> impl FnOnce(std::io::Error) -> ServeError {
    let path = path.to_string();
    move |cause| ServeError::Io { what, path, cause }
}

/// Runs the server until SIGTERM or SIGINT (blocking; it makes its own runtime).
pub fn serve(opts: ServeOptions) -> Result<(), ServeError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(io_err("cannot start the runtime", "tokio"))?;
    let result = rt.block_on(run(opts, shutdown_signal()));
    // Commands still streaming after the drain are cut off (their agent connections
    // close, which kills them) instead of holding the exit.
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM ({e}); stop the server with SIGINT");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Runs the server until `shutdown` resolves.
pub async fn run(
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    if let Some(addr) = opts.listen {
        if !addr.ip().is_loopback() && !opts.allow_non_loopback {
            return Err(ServeError::NonLoopback(addr));
        }
    }
    let mut limits = match opts.limits {
        Some(l) => l,
        None => Limits::from_env()?,
    };
    limits.fit_to_fd_limit(FD_RESERVE);
    let state_dir = kiln::state_dir::state_dir()?;
    let token_path = opts.token_file.unwrap_or_else(|| state_dir.join("token"));
    let token = auth::load_or_create(&token_path)?;
    let socket = opts.socket.unwrap_or_else(|| state_dir.join("kiln.sock"));

    let rec = tokio::task::spawn_blocking(kiln::reconcile)
        .await
        .map_err(ServeError::Reconcile)??;
    tracing::info!(
        "reconciled the store: adopted {:?}, failed {:?}, cleaned {:?}",
        rec.adopted,
        rec.failed,
        rec.cleaned
    );

    let unix = bind_unix(&socket)?;
    let tcp = match opts.listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(io_err("cannot listen on", addr))?,
        ),
        None => None,
    };
    tracing::info!(
        "listening on unix://{}{}; token file {}",
        socket.display(),
        opts.listen
            .map(|a| format!(" and http://{a}"))
            .unwrap_or_default(),
        token_path.display()
    );

    let app = AppState {
        metrics: Arc::new(ServerMetrics::default()),
        shutdown: Arc::new(AtomicBool::new(false)),
        children: Children::default(),
    };
    let routes = router(app.clone(), Token::new(token));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut listeners = vec![Listener::Unix(unix)];
    listeners.extend(tcp.map(Listener::Tcp));
    for l in &listeners {
        let fd = match l {
            Listener::Unix(l) => l.as_raw_fd(),
            Listener::Tcp(l) => l.as_raw_fd(),
        };
        // SAFETY: listen on a socket we own that already listens only resizes its backlog.
        unsafe { libc::listen(fd, BACKLOG) };
    }
    let server = tokio::spawn(conn::serve(listeners, routes, limits, stop_rx.clone()));
    let reaper = tokio::spawn(reap_every_second(app.children.clone(), stop_rx));

    shutdown.await;
    tracing::info!("shutting down; the sandboxes keep running");
    app.shutdown.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN, async {
        let _ = server.await;
        let _ = reaper.await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("requests still running after {DRAIN:?}; leaving them");
    }
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// Binds the socket under a temporary name, makes it 0600, then renames it into place,
/// so it is never reachable with looser permissions. A stale socket (nothing answers)
/// is replaced; a live one means another server runs.
fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener, ServeError> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(ServeError::Io {
                what: "cannot listen on",
                path: path.display().to_string(),
                cause: std::io::Error::other("it exists and is not a socket"),
            });
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ServeError::AlreadyServing(path.to_path_buf()));
        }
        std::fs::remove_file(path)
            .map_err(io_err("cannot remove the stale socket", path.display()))?;
    }
    let name = path
        .file_name()
        .map_or("kiln.sock".into(), |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{name}.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let l = std::os::unix::net::UnixListener::bind(&tmp)
        .map_err(io_err("cannot listen on", tmp.display()))?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&tmp, path))
        .and_then(|()| l.set_nonblocking(true));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err("cannot listen on", path.display())(e));
    }
    tokio::net::UnixListener::from_std(l).map_err(io_err("cannot listen on", path.display()))
}

/// Once a second: stops and removes sandboxes past their idle timeout or lifetime, logs
/// the disk errors of running ones (`disk_error` events), and waits for the server's VMM
/// children that exited.
async fn reap_every_second(children: Children, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|v| *v) => return,
        }
        match tokio::task::spawn_blocking(kiln::reap_expired).await {
            Ok(Ok(reaped)) => {
                for (id, why) in reaped {
                    tracing::info!("reaped sandbox {id}: its {why} limit was reached");
                }
            }
            Ok(Err(e)) => tracing::warn!("reaping expired sandboxes: {e}"),
            Err(e) => tracing::warn!("the reaper failed: {e}"),
        }
        // Logs each sandbox's first host I/O errors as a `disk_error` event.
        match tokio::task::spawn_blocking(kiln::note_disk_errors).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("checking sandboxes' disk errors: {e}"),
            Err(e) => tracing::warn!("the disk error check failed: {e}"),
        }
        for pid in children.reap() {
            tracing::debug!("VMM process {pid} is gone");
        }
    }
}
