//! Snapshots: the on-disk format (`state.json` + `memory.bin` + disk copies), taking
//! one of a paused VM, and sealing and verifying its integrity. The memory backends a
//! restore maps `memory.bin` with (MAP_PRIVATE of the file, or userfaultfd) and the
//! memory file's own format live in [`crate::vstate`] ([`crate::vstate::mem_file`],
//! [`crate::vstate::uffd`]): they are guest memory, which snapshots only read and write.

pub mod create;
pub mod disk;
pub mod format;
pub mod seal;

pub use create::{create, CreateReport, CreateRequest};
pub use format::{SnapshotError, SnapshotState};
pub use seal::{seal, verify, Trust, Verified};
