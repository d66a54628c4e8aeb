//! The tables and lines `kiln ls`, `kiln snapshot ls` and `kiln events` print, shared by
//! the local commands and `kiln --remote` so scripts read the same columns either way.

use std::time::{SystemTime, UNIX_EPOCH};

use kiln::snapshot::SnapshotMeta;
use kiln::store::{Event, ImageRow};

/// Seconds since the epoch, now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One line of `kiln ls`.
pub struct SandboxRow<'a> {
    pub id: &'a str,
    /// `running`, `paused`, `pooled`, ...
    pub state: String,
    pub backend: &'a str,
    pub image: &'a str,
    pub cpus: u8,
    pub memory_mib: u64,
    /// Seconds since the epoch.
    pub created: u64,
    /// The VMM's pid (`None`: not known, printed as `-`).
    pub pid: Option<u32>,
}

pub fn print_sandbox_header() {
    println!(
        "{:<14} {:<9} {:<11} {:<10} {:>4} {:>7} {:>8} {:>8}",
        "ID", "STATE", "BACKEND", "IMAGE", "CPUS", "MEMORY", "AGE", "PID"
    );
}

pub fn print_sandbox_row(r: &SandboxRow, now: u64) {
    let pid = r.pid.map_or_else(|| "-".to_string(), |p| p.to_string());
    println!(
        "{:<14} {:<9} {:<11} {:<10} {:>4} {:>6}M {:>7}s {:>8}",
        r.id,
        r.state,
        r.backend,
        r.image,
        r.cpus,
        r.memory_mib,
        now.saturating_sub(r.created),
        pid
    );
}

pub fn print_snapshot_header() {
    println!(
        "{:<20} {:<14} {:<10} {:>4} {:>7} {:>8} {:>5}",
        "NAME", "SOURCE", "IMAGE", "CPUS", "MEMORY", "AGE", "POOL"
    );
}

/// One line of `kiln snapshot ls`; `pool` is the warm pool's size (`None`: not known,
/// printed as `-`).
pub fn print_snapshot_row(m: &SnapshotMeta, now: u64, pool: Option<usize>) {
    let pool = pool.map_or_else(|| "-".to_string(), |n| n.to_string());
    println!(
        "{:<20} {:<14} {:<10} {:>4} {:>6}M {:>7}s {:>5}",
        m.name,
        m.source,
        m.image,
        m.cpus,
        m.memory_mib,
        now.saturating_sub(m.created),
        pool
    );
}

/// `kiln images`: the images sandboxes have booted (the state store's `images` table).
pub fn print_images(rows: &[ImageRow]) {
    println!("{:<20} {:>10} PATH", "NAME", "SIZE");
    for r in rows {
        let size = r
            .size_bytes
            .map_or_else(|| "-".to_string(), |b| format!("{}M", b.div_ceil(1 << 20)));
        println!("{:<20} {:>10} {}", r.name, size, r.path.display());
    }
}

/// `SEQ TIME SANDBOX KIND DETAIL`, TIME in seconds since the epoch (millisecond precision).
pub fn event_line(e: &Event) -> String {
    let detail = if e.detail.is_null() {
        String::new()
    } else {
        e.detail.to_string()
    };
    format!(
        "{:>6} {}.{:03} {:<14} {:<10} {}",
        e.seq,
        e.time_ms.div_euclid(1000),
        e.time_ms.rem_euclid(1000),
        e.sandbox.as_deref().unwrap_or("-"),
        e.kind,
        detail
    )
    .trim_end()
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lines() {
        let e = Event {
            seq: 7,
            time_ms: 1_700_000_000_042,
            sandbox: Some("sb-1".into()),
            kind: "state".into(),
            detail: serde_json::json!({"from": "running", "to": "paused"}),
        };
        assert_eq!(
            event_line(&e),
            r#"     7 1700000000.042 sb-1           state      {"from":"running","to":"paused"}"#
        );
        let e = Event {
            sandbox: None,
            detail: serde_json::Value::Null,
            ..e
        };
        assert_eq!(event_line(&e), "     7 1700000000.042 -              state");
    }
}
