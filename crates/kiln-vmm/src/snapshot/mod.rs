//! Snapshots: the on-disk format (`state.json` + `memory.bin` + disk copies), taking
//! one of a paused VM, sealing and verifying its integrity, and the memory backends a
//! restore maps it with (MAP_PRIVATE of the file, or userfaultfd).

pub mod create;
pub mod disk;
pub mod format;
pub mod memory;
pub mod seal;
pub mod uffd;
mod uffd_sys;

pub use create::{create, CreateReport, CreateRequest};
pub use format::{SnapshotError, SnapshotState};
pub use seal::{seal, verify, Trust, Verified};
