//! Unit tests of cgroup paths and limits.

use super::*;

fn limits(cpus: u8, memory_mib: u64, cpu_quota: Option<f64>) -> Limits {
    Limits {
        cpus,
        memory_mib,
        cpu_quota,
        file_allowance_mib: 0,
    }
}

#[test]
fn limits_are_computed_from_the_settings() {
    let l = limits(2, 256, Some(0.5));
    assert_eq!(l.cpu_max(), "50000 100000");
    assert_eq!(l.memory_max_mib(), 256 + VMM_OVERHEAD_MIB);
    assert_eq!(l.pids_max(), PIDS_BASE + 2);
    assert_eq!(limits(1, 128, None).cpu_max(), "max 100000");
    assert_eq!(limits(4, 128, Some(1.5)).cpu_max(), "150000 100000");
    assert_eq!(limits(1, 128, Some(0.01)).cpu_max(), "1000 100000");
    let tmpfs = Limits {
        file_allowance_mib: 300,
        ..l
    };
    assert_eq!(tmpfs.memory_max_mib(), 256 + VMM_OVERHEAD_MIB + 300);
}

#[test]
fn quotas_are_checked_against_the_vcpus() {
    assert!(check_quota(0.5, 1).is_ok());
    assert!(check_quota(2.0, 2).is_ok());
    assert!(check_quota(0.01, 1).is_ok());
    for (bad, cpus) in [(0.0, 1), (-1.0, 1), (0.001, 1), (1.5, 1), (f64::NAN, 2)] {
        let e = check_quota(bad, cpus).unwrap_err().to_string();
        assert!(e.starts_with("cpu quota "), "{e}");
        assert!(e.contains("use "), "{e}");
    }
}

#[test]
fn modes_parse_and_bad_ones_say_what_to_use() {
    assert_eq!(Mode::parse("").unwrap(), Mode::Auto);
    assert_eq!(Mode::parse("off").unwrap(), Mode::Off);
    assert_eq!(Mode::parse("required").unwrap(), Mode::Required);
    let e = Mode::parse("yes").unwrap_err().to_string();
    assert!(e.contains("use off, auto or required"), "{e}");
}

#[test]
fn group_paths_are_per_state_dir_and_sandbox() {
    let tmp = std::env::temp_dir().join(format!("kiln-cg-test-{}", std::process::id()));
    let (a, b) = (tmp.join("a"), tmp.join("b"));
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    let root = Path::new("/sys/fs/cgroup/kiln");
    let ga = state_group(root, &a);
    assert_eq!(ga.parent(), Some(root));
    let name = ga.file_name().unwrap().to_str().unwrap().to_string();
    assert!(name.starts_with("state-") && name.len() == 6 + 12, "{name}");
    assert_ne!(ga, state_group(root, &b));
    // The same folder by another spelling is the same group.
    assert_eq!(state_group(root, &a.join("../a")), ga);
    // A known digest: sha256("/run/kiln") starts with these 12 hex digits.
    let want: String = Sha256::digest(b"/run/kiln")
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(state_key(Path::new("/run/kiln")), format!("state-{want}"));
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn a_memory_fs_adds_the_files_the_vmm_writes() {
    let shm = Path::new("/dev/shm");
    if on_memory_fs(shm) {
        assert_eq!(file_allowance_mib(shm, 256, 2048), 256 + 2 * 2048);
    }
    assert!(!on_memory_fs(Path::new("/proc")));
    assert_eq!(file_allowance_mib(Path::new("/proc"), 256, 2048), 0);
}

#[test]
fn a_missing_hierarchy_is_named() {
    let why = unavailable(Path::new("/nonexistent-kiln/kiln")).unwrap();
    assert!(why.contains("cgroup v2 is not available"), "{why}");
    assert!(Group::at("/nonexistent-kiln/x").stats().is_none());
    assert!(Group::at("/nonexistent-kiln/x").remove().is_ok());
}
