//! What a benchmark run left behind in a state directory: VMM processes whose command
//! line names it, and entries in it other than the store, token and socket (sandbox
//! folders with their sockets, logs and disk layers).

use std::path::Path;

use serde_json::{json, Value};

/// Files a state directory keeps between sandboxes: kiln's own, and a rollback journal
/// of the store caught mid-write.
fn kept(name: &str) -> bool {
    kiln::state_dir::STATE_FILES.contains(&name) || name == "kiln.db-journal"
}

/// Which leftovers count: everything in the directory, or only what names one of
/// these sandboxes (a shared server's other sandboxes are not ours).
pub enum Scope<'a> {
    All,
    Ids(&'a [String]),
}

impl Scope<'_> {
    /// Whether `text` (a command line, a file name) names one of ours.
    fn owns(&self, text: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Ids(ids) => ids.iter().any(|id| text.contains(id.as_str())),
        }
    }

    /// Whether sandbox `id` is ours.
    pub fn owns_id(&self, id: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Ids(ids) => ids.iter().any(|x| x == id),
        }
    }
}

/// Live processes (pid, command line) whose command line names `state`.
pub fn processes(state: &Path, scope: &Scope) -> Vec<(u32, String)> {
    let needle = state.to_string_lossy().into_owned();
    let me = std::process::id();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        if pid != me && cmd.contains(&needle) && scope.owns(&cmd) {
            out.push((pid, cmd.trim_end().to_string()));
        }
    }
    out.sort();
    out
}

/// Entries of `state` that a run with nothing left would not have.
pub fn entries(state: &Path, scope: &Scope) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(state)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !kept(n) && scope.owns(n))
        .collect();
    out.sort();
    out
}

/// `{"vmm_processes": [...], "state_dir_entries": [...]}` for `state`.
pub fn report(state: &Path, scope: &Scope) -> (usize, Value) {
    let procs = processes(state, scope);
    let files = entries(state, scope);
    let n = procs.len() + files.len();
    let procs: Vec<Value> = procs
        .into_iter()
        .map(|(pid, cmd)| json!({"pid": pid, "cmdline": cmd}))
        .collect();
    (
        n,
        json!({
            "state_dir": state,
            "vmm_processes": procs,
            "state_dir_entries": files,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_files_are_not_leaks_and_scopes_filter() {
        let d = std::env::temp_dir().join(format!("kiln-leaks-test-{}", std::process::id()));
        std::fs::create_dir_all(d.join("sb-1")).unwrap();
        std::fs::create_dir_all(d.join("other")).unwrap();
        std::fs::write(d.join("kiln.db"), "").unwrap();
        std::fs::write(d.join("token"), "").unwrap();
        assert_eq!(entries(&d, &Scope::All), ["other", "sb-1"]);
        let ids = ["sb-1".to_string()];
        assert_eq!(entries(&d, &Scope::Ids(&ids)), ["sb-1"]);
        assert!(processes(&d, &Scope::All).is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
