//! The handlers, one file per resource. Every library call blocks (it talks to a VMM or
//! an agent over a unix socket), so each runs on tokio's blocking pool via [`blocking`].

pub mod events;
pub mod exec;
pub mod files;
pub mod logs;
pub mod meta;
pub mod sandboxes;
pub mod snapshots;
pub mod transfer;

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::errors::ApiError;

/// Runs `f` on the blocking pool.
pub async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("the worker thread failed: {e}")))?
}

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(body) => {
            let mut r = (status, body).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => ApiError::internal(format!("cannot serialise the answer: {e}")).into_response(),
    }
}

/// A number of seconds from a request, as a duration: positive, finite, at most a year.
pub fn secs(field: &str, v: Option<f64>) -> Result<Option<Duration>, ApiError> {
    match v {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 && s <= 365.0 * 86400.0 => {
            Ok(Some(Duration::from_secs_f64(s)))
        }
        Some(s) => Err(ApiError::invalid_input(format!(
            "{field} {s}: use a positive number of seconds (at most a year)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_must_be_positive_and_finite() {
        assert_eq!(secs("t", None).unwrap(), None);
        assert_eq!(
            secs("t", Some(1.5)).unwrap(),
            Some(Duration::from_millis(1500))
        );
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e12] {
            let e = secs("timeout_secs", Some(bad)).unwrap_err();
            assert_eq!(e.code, "invalid_input");
            assert!(e.message.contains("timeout_secs"));
        }
    }
}
