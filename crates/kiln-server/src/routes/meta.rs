//! `GET /v1/health` (no auth), `GET /openapi.json`, `GET /metrics`.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{blocking, json};
use crate::api::Health;
use crate::app::AppState;
use crate::errors::ApiError;
use crate::metrics::{memory, sandbox};

pub async fn health() -> Response {
    json(
        StatusCode::OK,
        &Health {
            status: "ok".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
    )
}

pub async fn openapi() -> Response {
    let mut r = crate::OPENAPI.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Samples every sandbox (asking each VMM to flush its metrics) and renders the
/// exposition.
pub async fn metrics(State(app): State<AppState>) -> Result<Response, ApiError> {
    let samples = blocking(|| Ok(sandbox::collect()?)).await?;
    let mem = blocking(|| Ok(memory::collect()?)).await?;
    let mut text = app.metrics.render(&samples);
    memory::render(&mut text, &mem);
    let mut r = text.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(r)
}
