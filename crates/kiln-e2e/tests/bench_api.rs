//! `kiln bench api --json` end to end: a short run through its own `kiln serve` with
//! zero errors and nothing left behind. A test binary of its own so that no other VM
//! boots while `bench.rs` counts one VM's exits in KVM's debugfs (the binaries run one
//! after another).

use kiln_e2e::{bench_json, positive_p50, require_kvm};

#[test]
fn bench_api_reports_no_errors_and_no_leftovers() {
    if !require_kvm("bench_api") {
        return;
    }
    let v = bench_json(&["api", "-n", "6", "--clients", "3", "--idle-flood", "2000"]);
    assert_eq!(
        (v["errors"].as_u64(), v["leaked"].as_u64()),
        (Some(0), Some(0)),
        "{v}"
    );
    assert_eq!(
        (v["sandboxes"].as_u64(), v["clients"].as_u64()),
        (Some(6), Some(3)),
        "{v}"
    );
    for side in ["api", "api_one_client", "library_baseline"] {
        for op in ["create_ms", "exec_ms", "delete_ms"] {
            positive_p50(&v[side], op);
        }
        assert!(
            v[side]["sandboxes_per_s"].as_f64().is_some_and(|x| x > 0.0),
            "{v}"
        );
    }
    assert_eq!(v["api"]["create_ms"]["n"].as_u64(), Some(6), "{v}");
    assert_eq!(v["library_baseline"]["sandboxes"].as_u64(), Some(4), "{v}");
    assert_eq!(
        v["api_one_client"]["create_ms"]["n"].as_u64(),
        Some(4),
        "{v}"
    );
    for r in [
        "ratio_api_over_library_create_p50",
        "ratio_api_over_library_exec_p50",
    ] {
        assert!(v[r].as_f64().is_some_and(|x| x > 0.0), "{r}: {v}");
    }
    // The loaded run again under 2000 idle connections without a token: served, no error.
    let f = &v["idle_flood"];
    assert_eq!(f["api"]["errors"].as_u64(), Some(0), "{v}");
    assert_eq!(f["api"]["create_ms"]["n"].as_u64(), Some(6), "{v}");
    assert_eq!(f["flood"]["connections"].as_u64(), Some(2000), "{v}");
    assert!(
        f["flood"]["open_max"].as_u64().is_some_and(|n| n >= 1000),
        "{v}"
    );
    let leaks = &v["leaks"];
    assert!(
        leaks["rows"].as_array().is_some_and(|a| a.is_empty()),
        "{v}"
    );
    assert!(
        leaks["local"]["vmm_processes"]
            .as_array()
            .is_some_and(|a| a.is_empty()),
        "{v}"
    );
    assert!(
        leaks["local"]["state_dir_entries"]
            .as_array()
            .is_some_and(|a| a.is_empty()),
        "{v}"
    );
}
