//! `POST /v1/sandboxes/{id}/exec`: runs a command and streams its output as NDJSON
//! lines ([`ExecLine`]) while it runs, or with `?stream=false` answers once with
//! [`ExecResult`].
//!
//! A blocking thread drives [`kiln::Sandbox::exec_stream`] and hands each event to the
//! response through a channel, so a client sees output as the guest writes it. Errors
//! before the command starts (unknown sandbox, paused, bad command) are ordinary JSON
//! error responses; once it started, the answer is 200 and a broken agent connection
//! ends the stream with an `error` line. A client that disconnects (the response body,
//! and with it the channel's receiver, is dropped) is noticed at once, also while the
//! command prints nothing: a watcher task then shuts the agent connection down, the
//! agent kills the command's process group, and the thread ends.

use std::convert::Infallible;
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use kiln::{ExecEvent, ExecOptions, Sandbox};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use super::{json, secs};
use crate::api::{ExecLine, ExecRequest, ExecResult, OutputEncoding};
use crate::app::AppState;
use crate::conn::budget::Charge;
use crate::errors::ApiError;
use crate::extract::{JsonBody, SandboxId, Q};
use crate::metrics::{ExecStatus, ServerMetrics};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecParams {
    /// Default true.
    stream: Option<bool>,
    /// For `stream=false`: how stdout and stderr are encoded (default `text`).
    encoding: Option<OutputEncoding>,
}

pub async fn exec(
    State(app): State<AppState>,
    SandboxId(id): SandboxId,
    Q(params): Q<ExecParams>,
    JsonBody(req, charge): JsonBody<ExecRequest>,
) -> Result<Response, ApiError> {
    let (opts, stdin) = options(req)?;
    let (tx, rx) = mpsc::channel::<ExecLine>(64);
    let (started_tx, started_rx) = oneshot::channel();
    let metrics = app.metrics.clone();
    // The stdin bytes keep their share of the body memory budget until they are sent.
    let stdin = stdin.map(|s| (s, charge));
    tokio::task::spawn_blocking(move || run(id, opts, stdin, started_tx, tx, &metrics));
    started_rx
        .await
        .map_err(|_| ApiError::internal("the exec worker ended before the command started"))??;
    if params.stream.unwrap_or(true) {
        Ok(streamed(rx))
    } else {
        collect(rx, params.encoding.unwrap_or_default()).await
    }
}

/// The library's options for a request, and the stdin bytes to feed.
fn options(req: ExecRequest) -> Result<(ExecOptions, Option<Vec<u8>>), ApiError> {
    if req.cmd.is_empty() {
        return Err(ApiError::invalid_input(
            "cmd is empty: give the command and its arguments, e.g. [\"sh\", \"-c\", \"echo hi\"]",
        ));
    }
    let mut opts = ExecOptions::new(req.cmd);
    opts.env = req.env;
    opts.cwd = req.cwd;
    opts.timeout = secs("timeout_secs", req.timeout_secs)?;
    let stdin = req.stdin.map(String::into_bytes);
    if stdin.is_some() {
        // Opens the command's stdin; the bytes are written by the worker.
        opts.stdin = Some(Vec::new());
    }
    Ok((opts, stdin))
}

/// The blocking side: starts the command, reports whether it started, then forwards
/// its events until the exit status or until the client leaves.
fn run(
    id: String,
    opts: ExecOptions,
    stdin: Option<(Vec<u8>, Charge)>,
    started: oneshot::Sender<Result<(), ApiError>>,
    tx: mpsc::Sender<ExecLine>,
    metrics: &Arc<ServerMetrics>,
) {
    let t0 = Instant::now();
    let mut stream = match Sandbox::get(&id).and_then(|sb| sb.exec_stream(&opts)) {
        Ok(s) => s,
        Err(e) => {
            metrics.exec(&id, ExecStatus::Error, None);
            let _ = started.send(Err(e.into()));
            return;
        }
    };
    if let Some((data, charge)) = stdin {
        match stream.input() {
            // A thread of its own, so a command that writes before it reads all of its
            // stdin cannot deadlock against us.
            Ok(mut input) => {
                std::thread::spawn(move || {
                    let _ = input.write_all(&data).and_then(|()| input.close());
                    drop(data);
                    drop(charge);
                });
            }
            Err(e) => {
                metrics.exec(&id, ExecStatus::Error, None);
                let _ = started.send(Err(e.into()));
                return;
            }
        }
    }
    if started.send(Ok(())).is_err() {
        metrics.exec(&id, ExecStatus::Abandoned, None);
        return;
    }
    let _watch = match stream.canceller() {
        Ok(c) => Some(watch_client(&tx, c)),
        Err(e) => {
            tracing::warn!("exec in {id}: no cancel handle ({e}); a client that leaves is noticed at the next output");
            None
        }
    };
    loop {
        let (line, end) = match stream.next_event() {
            Ok(Some(ExecEvent::Stdout(b))) => (
                ExecLine::Stdout {
                    data: B64.encode(b),
                },
                None,
            ),
            Ok(Some(ExecEvent::Stderr(b))) => (
                ExecLine::Stderr {
                    data: B64.encode(b),
                },
                None,
            ),
            Ok(Some(ExecEvent::Exit(st))) => {
                let took = t0.elapsed();
                let line = ExecLine::Exit {
                    code: st.code,
                    signal: st.signal,
                    timed_out: st.timed_out,
                    duration_ms: took.as_millis() as u64,
                };
                (
                    line,
                    Some((ExecStatus::of(st.code, st.timed_out), Some(took))),
                )
            }
            Ok(None) => {
                let e = ApiError::internal("the agent ended the command without an exit status");
                (
                    ExecLine::Error {
                        error: e.body().error,
                    },
                    Some((ExecStatus::Error, None)),
                )
            }
            Err(e) => {
                let e = ApiError::from(e);
                (
                    ExecLine::Error {
                        error: e.body().error,
                    },
                    Some((ExecStatus::Error, None)),
                )
            }
        };
        if tx.blocking_send(line).is_err() {
            // The client left: dropping the stream closes the connection, and the agent
            // kills the command.
            metrics.exec(&id, ExecStatus::Abandoned, None);
            return;
        }
        if let Some((status, took)) = end {
            metrics.exec(&id, status, took);
            return;
        }
    }
}

/// Aborts the watcher task when dropped (the worker is done), so that its sender goes
/// and the response can end.
struct Watch(tokio::task::JoinHandle<()>);

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Cancels the command as soon as the receiving side of `tx` (the response) is gone.
/// Runs on the runtime: `run` is on its blocking pool, which has a handle to it.
fn watch_client(tx: &mpsc::Sender<ExecLine>, cancel: kiln::agent::ExecCancel) -> Watch {
    let tx = tx.clone();
    Watch(tokio::runtime::Handle::current().spawn(async move {
        tx.closed().await;
        cancel.cancel();
    }))
}

/// A chunked `application/x-ndjson` response: one line per event.
fn streamed(rx: mpsc::Receiver<ExecLine>) -> Response {
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        let line = rx.recv().await?;
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        Some((Ok::<_, Infallible>(Bytes::from(bytes)), rx))
    });
    let mut r = Body::from_stream(lines).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    r
}

/// `stream=false`: waits for the end and answers once.
async fn collect(
    mut rx: mpsc::Receiver<ExecLine>,
    encoding: OutputEncoding,
) -> Result<Response, ApiError> {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let decode = |d: &str| B64.decode(d).unwrap_or_default();
    while let Some(line) = rx.recv().await {
        match line {
            ExecLine::Stdout { data } => stdout.extend(decode(&data)),
            ExecLine::Stderr { data } => stderr.extend(decode(&data)),
            ExecLine::Error { error } => {
                let mut e = ApiError::internal(error.message);
                e.extra = error.extra;
                return Err(e);
            }
            ExecLine::Exit {
                code,
                signal,
                timed_out,
                duration_ms,
            } => {
                let enc = |b: Vec<u8>| match encoding {
                    OutputEncoding::Text => String::from_utf8_lossy(&b).into_owned(),
                    OutputEncoding::Base64 => B64.encode(b),
                };
                let result = ExecResult {
                    stdout: enc(stdout),
                    stderr: enc(stderr),
                    encoding,
                    exit_code: code,
                    signal,
                    timed_out,
                    duration_ms,
                };
                return Ok(json(StatusCode::OK, &result));
            }
        }
    }
    Err(ApiError::internal(
        "the command ended without an exit status",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_become_options_and_empty_commands_are_refused() {
        let mut req = ExecRequest::new(["sh", "-c", "cat"]);
        req.stdin = Some("hi".into());
        req.timeout_secs = Some(2.0);
        req.cwd = Some("/tmp".into());
        let (o, stdin) = options(req).unwrap();
        assert_eq!(o.argv, ["sh", "-c", "cat"]);
        assert_eq!(o.stdin, Some(vec![]), "stdin is opened, fed by the worker");
        assert_eq!(stdin.as_deref(), Some(&b"hi"[..]));
        assert_eq!(o.timeout, Some(std::time::Duration::from_secs(2)));
        assert_eq!(o.cwd.as_deref(), Some("/tmp"));

        let (o, stdin) = options(ExecRequest::new(["true"])).unwrap();
        assert!(o.stdin.is_none() && stdin.is_none(), "no stdin: /dev/null");
        let e = options(ExecRequest::new(Vec::<String>::new())).unwrap_err();
        assert_eq!(e.code, "invalid_input");
    }

    #[test]
    fn lines_are_tagged_by_type() {
        let l = ExecLine::Exit {
            code: Some(3),
            signal: None,
            timed_out: false,
            duration_ms: 12,
        };
        assert_eq!(
            serde_json::to_string(&l).unwrap(),
            r#"{"type":"exit","code":3,"signal":null,"timed_out":false,"duration_ms":12}"#
        );
        let l = ExecLine::Stdout {
            data: B64.encode("hi\n"),
        };
        assert_eq!(
            serde_json::to_string(&l).unwrap(),
            r#"{"type":"stdout","data":"aGkK"}"#
        );
    }
}
