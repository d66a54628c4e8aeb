//! Extractors whose rejections are JSON errors: axum's own answer in plain text, which
//! must never reach a client of this API.
//!
//! - [`JsonBody`]: a JSON body, whatever the `Content-Type` (so `curl -d` works). An
//!   empty body reads as `{}`. Malformed JSON, a missing or unknown field: 400
//!   `bad_request`; a body over the limit, or larger than the server's whole body
//!   memory budget: 413 `payload_too_large`; a body that stalls: 408 `request_timeout`.
//!   Before reading, it waits for its share of the budget (crate::conn::budget): twice
//!   the body's `Content-Length` (the bytes and what is parsed from them), or the most a
//!   body may take when there is none; the share comes with the value.
//! - [`Q`]: query parameters; a malformed one: 400 `bad_request`.
//! - [`SandboxId`]: the `{id}` path segment. An id that cannot name a sandbox (bad
//!   characters, too long) is a sandbox that does not exist: 404 `not_found`, as for
//!   [`kiln::Sandbox::get`].
//! - [`SnapshotName`]: the `{name}` path segment; an impossible name (including one with
//!   a `/`, which the library would read as a directory path) is 404
//!   `snapshot_not_found`.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::app::BODY_LIMIT;
use crate::conn::budget::{BodyBudget, Charge};
use crate::conn::timed_body::is_body_timeout;
use crate::errors::ApiError;

/// A JSON request body and its share of the body memory budget (see the module docs):
/// keep the share as long as large parts of the value live (an exec's stdin).
pub struct JsonBody<T>(pub T, pub Charge);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let len = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if len.is_some_and(|n| n > BODY_LIMIT as u64) {
            return Err(too_large());
        }
        let mut charge = match req.extensions().get::<BodyBudget>() {
            Some(b) => {
                // Without a length, the most a body may take, capped at the budget.
                let want = len.map_or((2 * BODY_LIMIT as u64).min(b.bytes()), |n| 2 * n);
                b.reserve(want).await.map_err(|e| {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        format!(
                            "the request body needs {} MiB of the server's body memory budget, which is {} MiB (KILN_SERVE_BODY_MEMORY_MIB); send a smaller body, or raise the budget",
                            e.needed.div_ceil(1 << 20),
                            e.budget >> 20
                        ),
                    )
                })?
            }
            None => Charge::none(),
        };
        let bytes = read_body(req.into_body(), len).await?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        let parsed = serde_json::from_slice(text)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid: {e}")));
        let size = bytes.len() as u64;
        drop(bytes);
        // The bytes are gone; what was parsed out of them is at most as large.
        charge.shrink_to(size);
        Ok(JsonBody(parsed?, charge))
    }
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the request body is larger than {BODY_LIMIT} bytes"),
    )
}

/// The body's bytes, in one buffer sized by `Content-Length` when there is one.
async fn read_body(body: Body, len: Option<u64>) -> Result<Vec<u8>, ApiError> {
    let mut buf = Vec::with_capacity(len.unwrap_or(0).min(BODY_LIMIT as u64) as usize);
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| body_error(&e))?;
        if buf.len() + chunk.len() > BODY_LIMIT {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// A request body that could not be read: 408 if it stalled, else 400.
pub fn body_error(e: &axum::Error) -> ApiError {
    if is_body_timeout(e) {
        ApiError::request_timeout(e.to_string())
    } else {
        ApiError::bad_request(format!("cannot read the request body: {e}"))
    }
}

/// Query parameters (see the module docs).
pub struct Q<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(q)| Q(q))
            .map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))
    }
}

/// The `{id}` of a sandbox route (see the module docs).
pub struct SandboxId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for SandboxId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let id = path_segment(parts, state).await?;
        kiln::state_dir::check_id(&id).map_err(|_| ApiError::not_found(&id))?;
        Ok(SandboxId(id))
    }
}

/// The `{name}` of a snapshot route (see the module docs).
pub struct SnapshotName(pub String);

impl<S: Send + Sync> FromRequestParts<S> for SnapshotName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let name = path_segment(parts, state).await?;
        check_snapshot_name(&name)?;
        Ok(SnapshotName(name))
    }
}

/// A snapshot named over the API is a name in the store, never a host path.
pub fn check_snapshot_name(name: &str) -> Result<(), ApiError> {
    kiln::state_dir::check_id(name).map_err(|_| {
        ApiError::from(kiln::Error::SnapshotNotFound {
            name: name.to_string(),
        })
    })
}

async fn path_segment<S: Send + Sync>(parts: &mut Parts, state: &S) -> Result<String, ApiError> {
    Path::<String>::from_request_parts(parts, state)
        .await
        .map(|Path(s)| s)
        .map_err(|e| ApiError::bad_request(format!("bad path: {}", e.body_text())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct T {
        cmd: Vec<String>,
    }

    async fn parse(body: &str) -> Result<JsonBody<T>, ApiError> {
        let req = Request::builder()
            .method("POST")
            .uri("/")
            .body(Body::from(body.to_string()))
            .unwrap();
        JsonBody::<T>::from_request(req, &()).await
    }

    #[tokio::test]
    async fn malformed_missing_and_unknown_fields_are_bad_requests() {
        assert_eq!(parse(r#"{"cmd":["a"]}"#).await.unwrap().0.cmd, ["a"]);
        for (body, needle) in [
            ("{", "EOF"),
            ("", "missing field `cmd`"),
            (r#"{"cmd":"a"}"#, "invalid type"),
            (r#"{"cmd":[],"cwdd":"/"}"#, "unknown field `cwdd`"),
        ] {
            let e = parse(body).await.err().unwrap();
            assert_eq!((e.status.as_u16(), e.code), (400, "bad_request"), "{body}");
            assert!(e.message.contains(needle), "{body}: {}", e.message);
        }
    }

    #[test]
    fn snapshot_names_are_never_paths() {
        assert!(check_snapshot_name("snap-1").is_ok());
        for bad in ["../x", "/tmp/snap", "a/b", ""] {
            let e = check_snapshot_name(bad).err().unwrap();
            assert_eq!((e.status.as_u16(), e.code), (404, "snapshot_not_found"));
        }
    }
}
