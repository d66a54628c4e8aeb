//! What every handler shares ([`AppState`]) and the request body limit, used by the
//! router's layers, the extractors and the handlers alike.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::children::Children;
use crate::metrics::ServerMetrics;

/// The largest JSON request body (an exec's stdin can ride in one): 256 MiB. File
/// uploads are streamed and not limited.
pub const BODY_LIMIT: usize = 256 << 20;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub metrics: Arc<ServerMetrics>,
    /// Set when the server shuts down: long-running streams (log follow) end.
    pub shutdown: Arc<AtomicBool>,
    /// The VMMs this server started, to reap when they exit.
    pub children: Children,
}
