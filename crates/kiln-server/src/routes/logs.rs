//! `GET /v1/sandboxes/{id}/logs?kind=console|vmm&follow=bool`: the guest console (or
//! the VMM's log) as `text/plain`. With `follow=true` the response stays open and
//! carries what is appended, until the sandbox is no longer creating, running or
//! paused, the client leaves, or the server shuts down.

use std::convert::Infallible;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use kiln::{Sandbox, State as SbState};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::blocking;
use crate::app::AppState;
use crate::errors::ApiError;
use crate::extract::{SandboxId, Q};

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogKind {
    #[default]
    Console,
    Vmm,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogParams {
    kind: Option<LogKind>,
    follow: Option<bool>,
}

pub async fn logs(
    State(app): State<AppState>,
    SandboxId(id): SandboxId,
    Q(p): Q<LogParams>,
) -> Result<Response, ApiError> {
    let name = match p.kind.unwrap_or_default() {
        LogKind::Console => "vm/console.log",
        LogKind::Vmm => "vmm.log",
    };
    let (sb, path) = blocking(move || {
        let sb = Sandbox::get(&id)?;
        let path = sb.dir().join(name);
        Ok((sb, path))
    })
    .await?;
    let body = if p.follow.unwrap_or(false) {
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        let stop = app.shutdown.clone();
        tokio::task::spawn_blocking(move || follow(sb, path, tx, stop));
        let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
            let b = rx.recv().await?;
            Some((Ok::<_, Infallible>(b), rx))
        });
        Body::from_stream(chunks)
    } else {
        let text = blocking(move || match std::fs::read(&path) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(ApiError::internal(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        })
        .await?;
        Body::from(text)
    };
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(r)
}

/// Sends the log and then what is appended to it (see the module docs).
fn follow(sb: Sandbox, path: PathBuf, tx: mpsc::Sender<Bytes>, stop: Arc<AtomicBool>) {
    let mut file: Option<File> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if tx.is_closed() || stop.load(Ordering::Relaxed) {
            return;
        }
        if file.is_none() {
            file = File::open(&path).ok();
        }
        let n = match file.as_mut().map(|f| f.read(&mut buf)) {
            Some(Ok(n)) => n,
            Some(Err(_)) | None => 0,
        };
        if n > 0 {
            if tx.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                return;
            }
            continue;
        }
        if !matches!(
            sb.state(),
            SbState::Running | SbState::Paused | SbState::Creating
        ) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
        // A log truncated under us: start over.
        if let Some(f) = file.as_mut() {
            let pos = f.stream_position().unwrap_or(0);
            if std::fs::metadata(&path).is_ok_and(|m| m.len() < pos) {
                let _ = f.seek(SeekFrom::Start(0));
            }
        }
    }
}
