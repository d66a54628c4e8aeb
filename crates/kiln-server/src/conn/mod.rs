//! The server's own accept loop: the router served over hyper's HTTP/1 on the unix socket
//! and the TCP listener, with every connection bounded ([`Limits`]):
//!
//! - counted in all and per peer ([`registry`]); when full, the oldest connection that
//!   made no authenticated request is closed to make room, else the newcomer gets 503
//!   `too_many_connections` and is closed;
//! - a watchdog per connection closes it when a request's headers take longer than the
//!   header timeout from their first byte, or when no request is in flight for the idle
//!   timeout (a streamed answer is in flight until its last byte, so it is never cut);
//!   hyper's own header timer is not used: it also runs while a kept-alive connection
//!   waits for its next request, which is the idle timeout's business;
//! - request bodies stall out after the body timeout ([`timed_body`]) and buffered
//!   bodies share one memory budget ([`budget`]).

pub mod budget;
pub mod limits;
pub mod registry;
pub mod timed_body;
mod timed_io;

use std::convert::Infallible;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, watch, Semaphore};
use tower_service::Service;

use crate::errors::ApiError;
use budget::BodyBudget;
use limits::Limits;
use registry::{ConnMark, Peer, Refused, Registry, Slot};
use timed_body::{InFlight, TimedBody, Tracked};
use timed_io::TimedIo;

/// Refusals (503) being written at once; past that a refused connection is just closed.
const REFUSING: usize = 64;

/// A listening socket of the server.
pub enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// What every connection of one server shares.
struct Shared {
    router: Router,
    limits: Limits,
    registry: Arc<Registry>,
    budget: BodyBudget,
    refusing: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
    /// Held by every connection task; the server is drained when all are dropped.
    alive: mpsc::Sender<()>,
}

/// Serves `router` on `listeners` until `stop` turns true, then lets the connections
/// finish their requests; returns when the last one is closed.
pub async fn serve(
    listeners: Vec<Listener>,
    router: Router,
    limits: Limits,
    stop: watch::Receiver<bool>,
) {
    let (alive, mut drained) = mpsc::channel::<()>(1);
    let shared = Arc::new(Shared {
        router,
        registry: Registry::new(limits.max_conns, limits.max_conns_per_peer),
        budget: BodyBudget::new(limits.body_memory),
        limits,
        refusing: Arc::new(Semaphore::new(REFUSING)),
        stop: stop.clone(),
        alive,
    });
    let loops: Vec<_> = listeners
        .into_iter()
        .map(|l| tokio::spawn(accept_loop(l, shared.clone())))
        .collect();
    for l in loops {
        let _ = l.await;
    }
    drop(shared);
    let _ = drained.recv().await;
}

async fn accept_loop(l: Listener, shared: Arc<Shared>) {
    let mut stop = shared.stop.clone();
    let mut failures = 0u32;
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|v| *v) => return,
            a = accept(&l) => a,
        };
        match accepted {
            Ok(Accepted::Unix(s, peer)) => admit(s, peer, &shared),
            Ok(Accepted::Tcp(s, peer)) => admit(s, peer, &shared),
            Err(e) => {
                // EMFILE and the like: wait for descriptors to come back rather than spin.
                failures += 1;
                if failures.is_power_of_two() {
                    tracing::warn!("accepting a connection failed ({failures} times so far): {e}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

enum Accepted {
    Unix(tokio::net::UnixStream, Peer),
    Tcp(tokio::net::TcpStream, Peer),
}

async fn accept(l: &Listener) -> io::Result<Accepted> {
    match l {
        Listener::Unix(l) => {
            let (s, _) = l.accept().await?;
            let uid = s.peer_cred()?.uid();
            Ok(Accepted::Unix(s, Peer::Uid(uid)))
        }
        Listener::Tcp(l) => {
            let (s, addr) = l.accept().await?;
            let _ = s.set_nodelay(true);
            let ip = match addr.ip() {
                std::net::IpAddr::V6(v6) => v6
                    .to_ipv4_mapped()
                    .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
                ip => ip,
            };
            Ok(Accepted::Tcp(s, Peer::Ip(ip)))
        }
    }
}

/// Lets the connection in (its task serves it) or refuses it.
fn admit<S>(s: S, peer: Peer, shared: &Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + AsRawFd + Unpin + Send + 'static,
{
    match shared.registry.admit(peer, s.as_raw_fd()) {
        Ok(slot) => {
            tokio::spawn(serve_conn(s, slot, shared.clone()));
        }
        Err(why) => {
            tracing::warn!("refusing a connection: {}", why.message());
            if let Ok(permit) = shared.refusing.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(s, &why).await;
                    drop(permit);
                });
            }
        }
    }
}

/// Answers 503 `too_many_connections` before reading anything, then reads (and drops)
/// what the client sends for a moment, so that closing does not reset the answer away.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, why: &Refused) {
    let body = serde_json::to_vec(
        &ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            why.message(),
        )
        .body(),
    )
    .unwrap_or_default();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n",
        body.len()
    );
    let sent = async {
        s.write_all(head.as_bytes()).await?;
        s.write_all(&body).await?;
        s.shutdown().await
    };
    if tokio::time::timeout(Duration::from_secs(1), sent)
        .await
        .is_err()
    {
        return;
    }
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut total = 0;
        while total < 64 << 10 {
            match s.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

/// Serves one connection until it closes, is evicted, times out, or the server stops.
async fn serve_conn<S>(s: S, slot: Slot, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _alive = shared.alive.clone();
    let state = slot.state.clone();
    let io = TokioIo::new(TimedIo::new(s, state.clone()));
    let service = {
        let (state, shared) = (state.clone(), shared.clone());
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let in_flight = InFlight::start(state.clone());
            let mut req = req.map(|b| Body::new(TimedBody::new(b, shared.limits.body_timeout)));
            req.extensions_mut().insert(ConnMark(state.clone()));
            req.extensions_mut().insert(shared.budget.clone());
            let mut router = shared.router.clone();
            async move {
                let r = router
                    .call(req)
                    .await
                    .unwrap_or_else(|e: Infallible| match e {});
                Ok::<_, Infallible>(r.map(|inner| Tracked {
                    inner,
                    _in_flight: in_flight,
                }))
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .header_read_timeout(None)
        .keep_alive(true)
        .serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut stop = shared.stop.clone();
    let mut stopping = false;
    let (header, idle) = (shared.limits.header_timeout, shared.limits.idle_timeout);
    loop {
        let deadline = state.deadline(header, idle);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!("connection closed: {e}");
                }
                break;
            }
            _ = state.close.notified() => break,
            _ = state.changed.notified() => {}
            _ = sleep_until(deadline) => {
                if state.deadline(header, idle).is_some_and(|d| d <= tokio::time::Instant::now().into_std()) {
                    tracing::debug!("closing a connection: no request for the idle timeout, or headers too slow");
                    break;
                }
            }
            _ = stop.wait_for(|v| *v), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
    // Out of the registry before the socket closes (its descriptor may be reused).
    drop(slot);
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
