//! kiln-server: `kiln serve`, a REST API over the [`kiln`] library (axum over hyper, on a unix
//! socket and optionally loopback TCP, bearer-token auth, JSON errors with stable
//! codes, streamed exec, Prometheus metrics, an OpenAPI document), and [`client`], a
//! blocking client for it. docs/API.md describes the API.

pub mod api;
mod app;
mod auth;
mod children;
pub mod client;
mod conn;
mod errors;
mod extract;
mod metrics;
mod router;
mod routes;
mod serve;

pub use app::BODY_LIMIT;
pub use auth::TokenError;
pub use conn::limits::{Limits, LimitsError};
pub use router::routes;
pub use serve::{run, serve, shutdown_signal, ServeError, ServeOptions};

/// The OpenAPI 3.0 document served at `GET /openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

#[cfg(test)]
mod tests;
