//! virtio-entropy (virtio-rng): fills device-writable buffers from the host's getrandom.

mod device;

pub use device::{Rng, RngState, MAX_BYTES_PER_REQUEST};

/// The device kind, as snapshot messages name it.
pub const KIND: &str = "virtio-rng";
