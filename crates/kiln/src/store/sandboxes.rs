//! The `sandboxes` table: records, queries, pid and activity. State changes and deletion
//! are in `lifecycle`.

use std::collections::BTreeMap;

use rusqlite::types::{Type, Value};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::{is_duplicate, Result, StoreError};
use super::events::insert_event;
use super::state::SbState;
use super::{now_ms, Store};

/// One sandbox as the store records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxRow {
    pub id: String,
    pub state: SbState,
    /// Which `VmBackend` runs it (`"kiln"`: our own VMM).
    pub backend: String,
    pub image: Option<String>,
    pub cpus: Option<u32>,
    pub memory_mib: Option<u64>,
    /// The VMM's pid while it runs.
    pub pid: Option<u32>,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// Why it failed (state `failed`).
    pub failure: Option<String>,
    /// The caller's labels; string values, so they can be filtered on exactly.
    pub metadata: BTreeMap<String, String>,
    /// Reap it after this long without activity (running or paused).
    pub idle_timeout_ms: Option<u64>,
    /// Reap it this long after its creation, whatever it does.
    pub max_lifetime_ms: Option<u64>,
    /// The last exec/file/API call; `None` counts as its creation time.
    pub last_activity_ms: Option<i64>,
    /// The snapshot it was restored from.
    pub snapshot: Option<String>,
    /// The sandbox it was forked from.
    pub parent: Option<String>,
    /// The VMM's start time (clock ticks after boot, `/proc/<pid>/stat`), recorded with
    /// its pid as soon as it is spawned.
    pub vmm_start: Option<u64>,
    /// A snapshot or fork in progress on it, and by which process.
    pub operation: Option<Operation>,
    /// Why it stopped (state `stopped`): the guest powered off or rebooted, or the step
    /// of a stop that ended it.
    pub stop_reason: Option<String>,
    /// The CPU quota (CPUs of time per second) of its cgroup; `None`: no quota.
    pub cpu_quota: Option<f64>,
}

/// An operation in progress on a sandbox that must be undone if the process doing it
/// dies: it may have paused the VM and be writing a folder that is garbage without it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// `snapshot` or `fork`.
    pub kind: String,
    /// The process doing it, and its start time (clock ticks after boot).
    pub pid: u32,
    pub start: u64,
    /// Whether it has paused the VM (and so must resume it).
    pub paused: bool,
    /// A folder it writes, removed if it dies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch: Option<std::path::PathBuf>,
}

impl SandboxRow {
    /// A sandbox being created now: state `creating`, backend `kiln`, nothing else set.
    pub fn new(id: impl Into<String>, now_ms: i64) -> SandboxRow {
        SandboxRow {
            id: id.into(),
            state: SbState::Creating,
            backend: "kiln".into(),
            image: None,
            cpus: None,
            memory_mib: None,
            pid: None,
            created_ms: now_ms,
            updated_ms: now_ms,
            failure: None,
            metadata: BTreeMap::new(),
            idle_timeout_ms: None,
            max_lifetime_ms: None,
            last_activity_ms: None,
            snapshot: None,
            parent: None,
            vmm_start: None,
            operation: None,
            stop_reason: None,
            cpu_quota: None,
        }
    }
}

/// Which sandboxes [`Store::list_sandboxes`] returns: all conditions must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxFilter {
    pub state: Option<SbState>,
    pub backend: Option<String>,
    /// Each `(key, value)` must be in the sandbox's metadata.
    pub metadata: Vec<(String, String)>,
}

const COLUMNS: &str = "id, state, backend, image, cpus, memory_mib, pid, created_ms, \
    updated_ms, failure, metadata, idle_timeout_ms, max_lifetime_ms, last_activity_ms, \
    snapshot, parent, vmm_start, operation, stop_reason, cpu_quota";

fn from_row(r: &Row<'_>) -> rusqlite::Result<SandboxRow> {
    let operation = match r.get::<_, Option<String>>(17)? {
        None => None,
        Some(text) => Some(
            serde_json::from_str(&text)
                .map_err(|e| rusqlite::Error::FromSqlConversionFailure(17, Type::Text, e.into()))?,
        ),
    };
    let metadata = match r.get::<_, Option<String>>(10)? {
        None => BTreeMap::new(),
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(10, Type::Text, e.into()))?,
    };
    Ok(SandboxRow {
        id: r.get(0)?,
        state: r.get(1)?,
        backend: r.get(2)?,
        image: r.get(3)?,
        cpus: r.get(4)?,
        memory_mib: r.get(5)?,
        pid: r.get(6)?,
        created_ms: r.get(7)?,
        updated_ms: r.get(8)?,
        failure: r.get(9)?,
        metadata,
        idle_timeout_ms: r.get(11)?,
        max_lifetime_ms: r.get(12)?,
        last_activity_ms: r.get(13)?,
        snapshot: r.get(14)?,
        parent: r.get(15)?,
        vmm_start: r.get(16)?,
        operation,
        stop_reason: r.get(18)?,
        cpu_quota: r.get(19)?,
    })
}

pub(super) fn get(conn: &Connection, id: &str) -> Result<SandboxRow> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM sandboxes WHERE id = ?1"),
        [id],
        from_row,
    )
    .optional()
    .map_err(StoreError::db("read a sandbox"))?
    .ok_or_else(|| not_found(id))
}

fn operation_text(op: Option<&Operation>) -> Option<String> {
    op.map(|o| serde_json::to_string(o).expect("operations serialise"))
}

pub(super) fn not_found(id: &str) -> StoreError {
    StoreError::NotFound {
        what: "sandbox",
        id: id.into(),
    }
}

impl Store {
    /// Records a new sandbox and appends a `created` event. `AlreadyExists` if the id is
    /// taken (by a sandbox in any state).
    pub fn insert_sandbox(&self, row: &SandboxRow) -> Result<()> {
        self.insert_sandbox_within(row, None)
    }

    /// [`Store::insert_sandbox`], admitted against `limit` in the same transaction:
    /// `InsufficientMemory` if the row's memory plus what the sandboxes holding memory
    /// have committed would exceed the budget (see [`super::MemoryLimit`]).
    pub fn insert_sandbox_within(
        &self,
        row: &SandboxRow,
        limit: Option<&super::MemoryLimit>,
    ) -> Result<()> {
        let metadata = if row.metadata.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&row.metadata).expect("string maps serialise"))
        };
        self.write("insert a sandbox", |tx| {
            if let Some(limit) = limit {
                limit.admit(tx, &row.id, row.memory_mib.unwrap_or(0))?;
            }
            let r = tx.execute(
                &format!(
                    "INSERT INTO sandboxes ({COLUMNS}) VALUES \
                     (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
                      ?17, ?18, ?19, ?20)"
                ),
                params![
                    row.id,
                    row.state,
                    row.backend,
                    row.image,
                    row.cpus,
                    row.memory_mib,
                    row.pid,
                    row.created_ms,
                    row.updated_ms,
                    row.failure,
                    metadata,
                    row.idle_timeout_ms,
                    row.max_lifetime_ms,
                    row.last_activity_ms,
                    row.snapshot,
                    row.parent,
                    row.vmm_start,
                    operation_text(row.operation.as_ref()),
                    row.stop_reason,
                    row.cpu_quota,
                ],
            );
            match r {
                Err(e) if is_duplicate(&e) => {
                    return Err(StoreError::AlreadyExists {
                        what: "sandbox",
                        id: row.id.clone(),
                    })
                }
                r => r.map_err(StoreError::db("insert a sandbox"))?,
            };
            let detail = json!({ "state": row.state, "backend": row.backend, "image": row.image });
            insert_event(tx, now_ms(), Some(&row.id), "created", &detail)?;
            Ok(())
        })
    }

    pub fn get_sandbox(&self, id: &str) -> Result<SandboxRow> {
        get(&self.conn(), id)
    }

    /// The sandboxes that match `filter`, oldest first.
    pub fn list_sandboxes(&self, filter: &SandboxFilter) -> Result<Vec<SandboxRow>> {
        let mut sql = format!("SELECT {COLUMNS} FROM sandboxes WHERE 1");
        let mut args: Vec<Value> = Vec::new();
        if let Some(state) = filter.state {
            args.push(state.as_str().to_string().into());
            sql += &format!(" AND state = ?{}", args.len());
        }
        if let Some(backend) = &filter.backend {
            args.push(backend.clone().into());
            sql += &format!(" AND backend = ?{}", args.len());
        }
        for (key, value) in &filter.metadata {
            args.push(key.clone().into());
            args.push(value.clone().into());
            let (k, v) = (args.len() - 1, args.len());
            // json_each matches the key exactly: no JSON-path quoting of dots or quotes.
            sql += &format!(
                " AND EXISTS (SELECT 1 FROM json_each(sandboxes.metadata) AS m \
                 WHERE m.key = ?{k} AND m.type = 'text' AND m.value = ?{v})"
            );
        }
        sql += " ORDER BY created_ms, id";
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&sql)
            .map_err(StoreError::db("list sandboxes"))?;
        let rows = stmt
            .query_map(params_from_iter(args), from_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
        rows.map_err(StoreError::db("list sandboxes"))
    }

    /// Records the VMM's pid (`None` once it has exited).
    pub fn set_pid(&self, id: &str, pid: Option<u32>) -> Result<()> {
        let n = self
            .conn()
            .execute(
                "UPDATE sandboxes SET pid = ?1, updated_ms = ?2 WHERE id = ?3",
                params![pid, now_ms(), id],
            )
            .map_err(StoreError::db("set a sandbox's pid"))?;
        if n == 0 {
            return Err(not_found(id));
        }
        Ok(())
    }

    /// Records the sandbox's published ports (specs as bound; empty: none).
    pub fn set_ports(&self, id: &str, ports: &[String]) -> Result<()> {
        let text =
            (!ports.is_empty()).then(|| serde_json::to_string(ports).expect("strings serialise"));
        let n = self
            .conn()
            .execute(
                "UPDATE sandboxes SET ports = ?1, updated_ms = ?2 WHERE id = ?3",
                params![text, now_ms(), id],
            )
            .map_err(StoreError::db("set a sandbox's ports"))?;
        if n == 0 {
            return Err(not_found(id));
        }
        Ok(())
    }

    /// The sandbox's published ports (empty: none).
    pub fn ports(&self, id: &str) -> Result<Vec<String>> {
        let text: Option<String> = self
            .conn()
            .query_row("SELECT ports FROM sandboxes WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(StoreError::db("read a sandbox's ports"))?
            .ok_or_else(|| not_found(id))?;
        Ok(text
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default())
    }

    /// Records the VMM's pid and start time, right after it is spawned.
    pub fn set_vmm(&self, id: &str, pid: u32, start: u64) -> Result<()> {
        let n = self
            .conn()
            .execute(
                "UPDATE sandboxes SET pid = ?1, vmm_start = ?2, updated_ms = ?3 WHERE id = ?4",
                params![pid, start, now_ms(), id],
            )
            .map_err(StoreError::db("record a sandbox's VMM"))?;
        if n == 0 {
            return Err(not_found(id));
        }
        Ok(())
    }

    /// Replaces the operation in progress on `id` if it is still `expected` (compare and
    /// set: of two processes starting one, one wins). `Busy` with the one in progress
    /// otherwise.
    pub fn swap_operation(
        &self,
        id: &str,
        expected: Option<&Operation>,
        new: Option<&Operation>,
    ) -> Result<()> {
        self.write("record a sandbox's operation", |tx| {
            let row = get(tx, id)?;
            if row.operation.as_ref() != expected {
                match row.operation {
                    // Already cleared (undone by a process that took us for dead).
                    None if new.is_none() => return Ok(()),
                    Some(o) => {
                        return Err(StoreError::OperationInProgress {
                            id: id.into(),
                            kind: o.kind,
                            pid: o.pid,
                        })
                    }
                    None => {
                        return Err(StoreError::OperationInProgress {
                            id: id.into(),
                            kind: "cleanup of this operation".into(),
                            pid: 0,
                        })
                    }
                }
            }
            tx.execute(
                "UPDATE sandboxes SET operation = ?1, updated_ms = ?2 WHERE id = ?3",
                params![operation_text(new), now_ms(), id],
            )
            .map_err(StoreError::db("record a sandbox's operation"))?;
            Ok(())
        })
    }

    /// Notes activity at `now_ms` (never moves the mark backwards: processes race).
    pub fn touch_activity(&self, id: &str, now_ms: i64) -> Result<()> {
        let n = self
            .conn()
            .execute(
                "UPDATE sandboxes SET last_activity_ms = MAX(COALESCE(last_activity_ms, ?1), ?1) \
                 WHERE id = ?2",
                params![now_ms, id],
            )
            .map_err(StoreError::db("note a sandbox's activity"))?;
        if n == 0 {
            return Err(not_found(id));
        }
        Ok(())
    }

    /// Replaces a sandbox's labels and limits (a sandbox handed out of a warm pool gets
    /// its new owner's).
    pub fn set_limits(
        &self,
        id: &str,
        metadata: &BTreeMap<String, String>,
        idle_timeout_ms: Option<u64>,
        max_lifetime_ms: Option<u64>,
    ) -> Result<()> {
        let metadata = (!metadata.is_empty())
            .then(|| serde_json::to_string(metadata).expect("string maps serialise"));
        let n = self
            .conn()
            .execute(
                "UPDATE sandboxes SET metadata = ?1, idle_timeout_ms = ?2, max_lifetime_ms = ?3, \
                 updated_ms = ?4 WHERE id = ?5",
                params![metadata, idle_timeout_ms, max_lifetime_ms, now_ms(), id],
            )
            .map_err(StoreError::db("set a sandbox's limits"))?;
        if n == 0 {
            return Err(not_found(id));
        }
        Ok(())
    }
}
