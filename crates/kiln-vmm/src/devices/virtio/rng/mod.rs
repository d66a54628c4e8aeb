//! virtio-entropy (virtio-rng): fills device-writable buffers from the host's getrandom.

mod device;

pub use device::{Rng, MAX_BYTES_PER_REQUEST};
