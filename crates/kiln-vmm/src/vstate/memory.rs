//! Guest RAM: anonymous mappings split around the MMIO hole.

use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::arch::layout::ram_ranges;

/// Error creating guest memory.
#[derive(Debug, thiserror::Error)]
#[error("cannot map {mib} MiB of guest memory: {source}")]
pub struct MemoryError {
    pub mib: u64,
    #[source]
    pub source: vm_memory::mmap::FromRangesError,
}

/// Maps `mib` MiB of guest RAM (private, anonymous; pages are only backed when touched).
pub fn create(mib: u64) -> Result<GuestMemoryMmap, MemoryError> {
    let ranges: Vec<(GuestAddress, usize)> = ram_ranges(mib << 20)
        .into_iter()
        .map(|(start, len)| (GuestAddress(start), len as usize))
        .collect();
    GuestMemoryMmap::from_ranges(&ranges).map_err(|source| MemoryError { mib, source })
}
