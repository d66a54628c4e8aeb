//! The control API on a unix socket: a compatible subset of Firecracker's REST API,
//! served within connection and time limits ([`server`]).

pub mod error;
pub mod http;
pub mod logger;
pub mod metrics;
pub mod mmds;
pub mod net;
pub mod routes;
pub mod server;
pub mod snapshot;
#[cfg(test)]
mod test_support;

pub use error::ApiError;
pub use server::{serve, Limits};
