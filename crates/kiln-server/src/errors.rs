//! Error responses: `{"error": {"code", "message", ...}}` with a stable `code` per
//! [`kiln::Error`] variant (the table is in docs/API.md), so clients match on codes,
//! never on messages.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::api::{ErrorBody, ErrorDetail};

/// An error on its way to the client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub extra: Map<String, Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: Map::new(),
        }
    }

    /// Adds a per-code field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }

    /// A request the server cannot parse (malformed JSON, a missing field, a bad query).
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// A well-formed request with a value the server refuses.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// A request body that stalled (crate::conn::timed_body); the connection is closed
    /// after the answer, since the rest of the body may still come.
    pub fn request_timeout(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", message)
    }

    pub fn not_found(id: &str) -> Self {
        kiln::Error::NotFound { id: id.into() }.into()
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.into(),
                message: self.message.clone(),
                extra: self.extra.clone(),
            },
        }
    }
}

impl From<kiln::Error> for ApiError {
    fn from(e: kiln::Error) -> Self {
        use kiln::Error as E;
        let message = e.to_string();
        let err = |status, code| ApiError::new(status, code, message.clone());
        match e {
            E::NotFound { id } => err(StatusCode::NOT_FOUND, "not_found").with("id", id),
            E::AlreadyExists { id } => err(StatusCode::CONFLICT, "already_exists").with("id", id),
            E::InvalidTransition { id, from, to } => {
                err(StatusCode::CONFLICT, "invalid_transition")
                    .with("id", id)
                    .with("from", from.as_str())
                    .with("to", to.as_str())
            }
            E::SnapshotNotFound { name } => {
                err(StatusCode::NOT_FOUND, "snapshot_not_found").with("name", name)
            }
            E::SnapshotExists { name } => {
                err(StatusCode::CONFLICT, "snapshot_exists").with("name", name)
            }
            E::UnsupportedByBackend {
                id,
                backend,
                operation,
            } => err(StatusCode::UNPROCESSABLE_ENTITY, "unsupported_by_backend")
                .with("id", id)
                .with("backend", backend)
                .with("operation", operation),
            E::Unsupported(_) => err(StatusCode::UNPROCESSABLE_ENTITY, "unsupported"),
            E::InvalidInput(_) => err(StatusCode::BAD_REQUEST, "invalid_input"),
            E::BootFailed { stage, errno, .. } => {
                let e = err(StatusCode::INTERNAL_SERVER_ERROR, "boot_failed").with("stage", stage);
                match errno {
                    Some(n) => e.with("errno", n),
                    None => e,
                }
            }
            E::AgentUnavailable { id, .. } => {
                err(StatusCode::CONFLICT, "agent_unavailable").with("id", id)
            }
            E::GuestFile { kind, path, .. } => {
                let (status, code) = if kind == kiln::FileErrorKind::NotFound {
                    (StatusCode::NOT_FOUND, "guest_file_not_found")
                } else {
                    (StatusCode::BAD_REQUEST, "guest_file_error")
                };
                let kind = serde_json::to_value(kind).unwrap_or(Value::Null);
                err(status, code).with("kind", kind).with("path", path)
            }
            E::BadSnapshot(_) => err(StatusCode::UNPROCESSABLE_ENTITY, "bad_snapshot"),
            E::InsufficientMemory {
                requested_mib,
                committed_mib,
                budget_mib,
                ..
            } => err(StatusCode::CONFLICT, "insufficient_memory")
                .with("requested_mib", requested_mib)
                .with("committed_mib", committed_mib)
                .with("budget_mib", budget_mib),
            E::PortInUse { addr } => {
                err(StatusCode::CONFLICT, "port_in_use").with("addr", addr.to_string())
            }
            E::Net(kiln::net::NetError::NeedsRoot) => {
                err(StatusCode::UNPROCESSABLE_ENTITY, "network_unavailable")
            }
            E::Net(kiln::net::NetError::PoolExhausted { .. }) => {
                err(StatusCode::SERVICE_UNAVAILABLE, "network_pool_exhausted")
            }
            ref e if e.is_disk_full() => err(StatusCode::INSUFFICIENT_STORAGE, "disk_full"),
            _ => err(StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!("{} {}: {}", self.status.as_u16(), self.code, self.message);
        }
        let body = serde_json::to_vec(&self.body()).unwrap_or_else(|_| {
            json!({"error": {"code": "internal", "message": "unserialisable error"}})
                .to_string()
                .into_bytes()
        });
        let mut r = (self.status, body).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        if self.status == StatusCode::REQUEST_TIMEOUT {
            r.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        r
    }
}

#[cfg(test)]
mod tests;
