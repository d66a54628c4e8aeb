//! kiln: the host runtime library. For now: locating the VMM binary and guest images,
//! a Firecracker-API client, and launching `kiln-vmm` processes.

pub mod fc;
pub mod paths;
pub mod process;
pub mod vmm;

pub use fc::{ApiError, FcClient};
pub use vmm::{DriveSpec, GuestSpec, VmmProcess};
