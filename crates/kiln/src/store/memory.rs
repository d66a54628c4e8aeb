//! Memory admission: the guest memory every sandbox that holds memory has committed,
//! counted against a budget inside the transaction that inserts a new sandbox.

use rusqlite::Connection;

use super::error::{Result, StoreError};
use super::Store;

/// The states in which a sandbox's VMM exists and holds (or may touch) its memory.
const HOLDING: &str = "('creating', 'running', 'paused', 'stopping')";

/// A memory budget: each sandbox counts its guest memory plus `overhead_mib` for its VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimit {
    pub budget_mib: u64,
    pub overhead_mib: u64,
}

impl MemoryLimit {
    /// MiB committed now: guest memory plus overhead of every sandbox holding memory.
    pub fn committed(&self, conn: &Connection) -> Result<u64> {
        let op = "sum the sandboxes' memory";
        let (sum, n): (i64, i64) = conn
            .query_row(
                &format!(
                    "SELECT COALESCE(SUM(COALESCE(memory_mib, 0)), 0), COUNT(*) FROM sandboxes \
                     WHERE state IN {HOLDING}"
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(StoreError::db(op))?;
        Ok(sum.max(0) as u64 + n.max(0) as u64 * self.overhead_mib)
    }

    /// `Ok` if a sandbox `id` of `memory_mib` fits beside what is committed.
    pub(super) fn admit(&self, conn: &Connection, id: &str, memory_mib: u64) -> Result<()> {
        let committed = self.committed(conn)?;
        let requested = memory_mib.saturating_add(self.overhead_mib);
        if committed.saturating_add(requested) > self.budget_mib {
            return Err(StoreError::InsufficientMemory {
                id: id.into(),
                requested_mib: requested,
                committed_mib: committed,
                budget_mib: self.budget_mib,
            });
        }
        Ok(())
    }
}

impl Store {
    /// MiB committed under `limit`'s accounting (for metrics and messages).
    pub fn committed_memory_mib(&self, limit: &MemoryLimit) -> Result<u64> {
        limit.committed(&self.conn())
    }
}
