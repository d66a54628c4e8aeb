//! The control API on a unix socket: a compatible subset of Firecracker's REST API.

pub mod error;
pub mod http;
pub mod metrics;
pub mod routes;
pub mod snapshot;

use std::os::unix::net::UnixListener;
use std::sync::{Arc, Mutex};

use crate::vmm::Vmm;

pub use error::ApiError;

/// Accepts connections forever, one thread per connection (clients may hold a
/// keep-alive connection open while opening another).
pub fn serve(listener: UnixListener, vmm: Arc<Mutex<Vmm>>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let vmm = vmm.clone();
        let spawned = std::thread::Builder::new()
            .name("api-conn".into())
            .spawn(move || http::serve(stream, |req| routes::handle(&vmm, req)));
        if let Err(e) = spawned {
            tracing::error!("api: cannot start a connection thread: {e}");
        }
    }
}
