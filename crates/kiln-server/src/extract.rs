//! Extractors whose rejections are JSON errors: axum's own answer in plain text, which
//! must never reach a client of this API.
//!
//! - [`JsonBody`]: a JSON body, whatever the `Content-Type` (so `curl -d` works). An
//!   empty body reads as `{}`. Malformed JSON, a missing or unknown field: 400
//!   `bad_request`; a body over the limit: 413 `payload_too_large`.
//! - [`Q`]: query parameters; a malformed one: 400 `bad_request`.
//! - [`SandboxId`]: the `{id}` path segment. An id that cannot name a sandbox (bad
//!   characters, too long) is a sandbox that does not exist: 404 `not_found`, as for
//!   [`kiln::Sandbox::get`].
//! - [`SnapshotName`]: the `{name}` path segment; an impossible name (including one with
//!   a `/`, which the library would read as a directory path) is 404
//!   `snapshot_not_found`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::errors::ApiError;

/// A JSON request body (see the module docs).
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(text)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid: {e}")))
    }
}

fn body_rejection(r: BytesRejection) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the request body is larger than {} bytes",
                crate::app::BODY_LIMIT
            ),
        )
    } else {
        ApiError::bad_request(format!("cannot read the request body: {}", r.body_text()))
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
    use axum::body::Body;

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
