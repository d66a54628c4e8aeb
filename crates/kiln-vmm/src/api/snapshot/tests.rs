use std::sync::Mutex;

use crate::api::http::Request;
use crate::api::routes::handle;
use crate::api::test_support::vmm;
use crate::vmm::Vmm;

fn fault(vmm: &Mutex<Vmm>, method: &str, path: &str, body: &str) -> String {
    let req = Request {
        method: method.into(),
        path: path.into(),
        body: body.into(),
        keep_alive: true,
    };
    let r = handle(vmm, &req);
    assert_eq!(r.status, 400, "{method} {path} {body}");
    r.body.unwrap()
}

#[test]
fn pause_and_snapshot_need_a_running_vm() {
    let v = vmm();
    assert!(fault(&v, "PATCH", "/vm", r#"{"state": "Paused"}"#).contains("not running"));
    assert!(fault(&v, "PATCH", "/vm", r#"{"state": "Frozen"}"#).contains("Paused or Resumed"));
    assert!(fault(&v, "PATCH", "/vm", r#"{"state": "Paused", "x": 1}"#).contains("unknown field"));
    let create = r#"{"snapshot_path": "/nonexistent/s.json", "mem_file_path": "/nonexistent/m"}"#;
    assert!(fault(&v, "PUT", "/snapshot/create", create).contains("not running"));
    let version = r#"{"snapshot_path": "/a", "mem_file_path": "/b", "version": "1.0.0"}"#;
    let msg = fault(&v, "PUT", "/snapshot/create", version);
    assert!(
        msg.contains("1.0.0")
            && msg.contains("is not supported by kiln-vmm")
            && msg.contains("remove it"),
        "{msg}"
    );
    let diff = r#"{"snapshot_type": "Diff", "snapshot_path": "/a", "mem_file_path": "/b"}"#;
    assert!(fault(&v, "PUT", "/snapshot/create", diff).contains("Diff snapshots are not supported"));
}

#[test]
fn bad_snapshots_are_refused_before_any_vm_exists() {
    let v = vmm();
    let dir = std::env::temp_dir().join(format!("kiln-api-snap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state.json");
    let load = format!(r#"{{"snapshot_path": "{}"}}"#, state.display());
    assert!(fault(&v, "PUT", "/snapshot/load", &load).contains("cannot read the state file"));
    std::fs::write(&state, r#"{"format": "kiln-snapshot", "version": 1}"#).unwrap();
    let msg = fault(&v, "PUT", "/snapshot/load", &load);
    assert!(msg.contains("format version 1"), "{msg}");
    std::fs::write(&state, r#"{"format": "other", "version": 1}"#).unwrap();
    assert!(fault(&v, "PUT", "/snapshot/load", &load).contains("not a kiln-snapshot"));
    std::fs::write(&state, r#"{"format": "kiln-snapshot", "version": 2}"#).unwrap();
    assert!(fault(&v, "PUT", "/snapshot/load", &load).contains("damaged"));
    let both = format!(
        r#"{{"snapshot_path": "{}", "mem_file_path": "/m", "mem_backend": {{"backend_type": "File", "backend_path": "/m"}}}}"#,
        state.display()
    );
    assert!(fault(&v, "PUT", "/snapshot/load", &both).contains("not both"));
    let uffd = format!(
        r#"{{"snapshot_path": "{}", "mem_backend": {{"backend_type": "Bogus", "backend_path": "/m"}}}}"#,
        state.display()
    );
    assert!(fault(&v, "PUT", "/snapshot/load", &uffd).contains("File or Uffd"));
    let ws = format!(
        r#"{{"snapshot_path": "{}", "mem_file_path": "/m", "kiln_working_set": {{"prefetch": "/ws"}}}}"#,
        state.display()
    );
    let msg = fault(&v, "PUT", "/snapshot/load", &ws);
    assert!(
        msg.contains("kiln_working_set is used only by the Uffd"),
        "{msg}"
    );
    let ws = format!(
        r#"{{"snapshot_path": "{}", "mem_backend": {{"backend_type": "File", "backend_path": "/m"}}, "kiln_working_set": {{"record": "/ws"}}}}"#,
        state.display()
    );
    assert!(fault(&v, "PUT", "/snapshot/load", &ws).contains("Uffd memory backend"));
    // An empty working set is no request at all.
    let ws = format!(
        r#"{{"snapshot_path": "{}", "kiln_working_set": {{"prefetch": null}}}}"#,
        state.display()
    );
    assert_eq!(
        fault(&v, "PUT", "/snapshot/load", &ws),
        fault(&v, "PUT", "/snapshot/load", &load)
    );
    assert!(!v.lock().unwrap().is_running());
    std::fs::remove_dir_all(&dir).unwrap();
}
