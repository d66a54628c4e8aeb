//! Host limits with real guests: a full state filesystem (create and snapshot refused
//! early with nothing left; stop and rm still work; the store's reserve comes back) and
//! the memory budget (concurrent creates admit exactly what fits), through the CLI and
//! through `kiln serve` over its unix socket (507 `disk_full`, 409 `insufficient_memory`).

use std::process::Command;

use kiln_e2e::cli::{leftovers, state_entries, Kiln};
use kiln_e2e::full::SmallFs;
use kiln_e2e::serve::Serve;
use kiln_e2e::{kiln_bin, require_kvm};
use kiln_server::api::CreateSandbox;

const RESERVE: &str = ".reserve";

/// The ids `kiln ls` lists (its first column, header left out).
fn ids(k: &Kiln) -> Vec<String> {
    k.ok(&["ls"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.contains('-'))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_full_state_filesystem_refuses_creates_early_and_still_stops_and_removes() {
    if !require_kvm("a_full_state_filesystem_refuses_creates_early_and_still_stops_and_removes") {
        return;
    }
    let fs = SmallFs::new("cli", 200);
    let k = Kiln { state: &fs.state };
    k.ok(&["create", "--image", "debian", "--id", "full-a"]);
    k.ok(&["create", "--image", "minimal", "--id", "full-b"]);
    let reserve = fs.state.join(RESERVE);
    assert_eq!(std::fs::metadata(&reserve).unwrap().len(), 8 << 20);
    fs.fill();

    // Refused before anything exists.
    let out = k
        .cmd(&["create", "--image", "minimal", "--id", "full-c"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("not enough disk space"), "{err}");
    assert!(err.contains("MiB free"), "{err}");
    assert!(!fs.state.join("full-c").exists());
    let out = k
        .cmd(&["snapshot", "full-a", "--name", "s"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("not enough disk space"), "{err}");
    assert_eq!(ids(&k), ["full-a", "full-b"]);

    // Stop and remove work with no byte free.
    assert_eq!(fs.free(), 0);
    k.ok(&["stop", "full-b"]);
    k.ok(&["rm", "full-a", "full-b"]);
    assert!(ids(&k).is_empty());
    assert!(
        leftovers(&fs.state, &[]).is_empty(),
        "{:?}",
        leftovers(&fs.state, &[])
    );
    assert!(
        state_entries(&fs.state).is_empty(),
        "{:?}",
        state_entries(&fs.state)
    );

    // Room again: the reserve is back at the next store open, and creates work.
    fs.unfill();
    k.ok(&["create", "--image", "minimal", "--id", "full-d"]);
    assert_eq!(std::fs::metadata(&reserve).unwrap().len(), 8 << 20);
    k.ok(&["rm", "full-d"]);
    assert!(
        state_entries(&fs.state).is_empty(),
        "{:?}",
        state_entries(&fs.state)
    );
}

#[test]
fn concurrent_creates_over_the_memory_budget_admit_exactly_what_fits() {
    if !require_kvm("concurrent_creates_over_the_memory_budget_admit_exactly_what_fits") {
        return;
    }
    let fs = SmallFs::new("mem", 256);
    let k = Kiln { state: &fs.state };
    // Three sandboxes of 128 MiB plus 32 MiB of VMM overhead each.
    let budget = (3 * (128 + 32)).to_string();
    let children: Vec<_> = (0..10)
        .map(|i| {
            Command::new(kiln_bin())
                .args(["create", "--image", "minimal", "--memory", "128"])
                .args(["--id", &format!("mem-{i}")])
                .env("KILN_STATE_DIR", &fs.state)
                .env("KILN_MEMORY_BUDGET_MIB", &budget)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut admitted = Vec::new();
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            admitted.push(format!("mem-{i}"));
        } else {
            assert!(err.contains("not enough memory"), "{err}");
            assert!(err.contains("KILN_MEMORY_BUDGET_MIB"), "{err}");
            assert!(err.contains("budget of 480 MiB"), "{err}");
        }
    }
    assert_eq!(admitted.len(), 3, "admitted: {admitted:?}");
    let mut listed = ids(&k);
    listed.sort();
    admitted.sort();
    assert_eq!(listed, admitted);
    let mut folders = state_entries(&fs.state);
    folders.sort();
    assert_eq!(folders, admitted, "refused creates left something");
    let running: Vec<&str> = admitted.iter().map(String::as_str).collect();
    assert!(leftovers(&fs.state, &running).is_empty());
    let mut rm = vec!["rm"];
    rm.extend(&running);
    k.ok(&rm);
    assert!(leftovers(&fs.state, &[]).is_empty());
    assert!(state_entries(&fs.state).is_empty());
}

#[test]
fn the_api_answers_409_insufficient_memory_and_507_disk_full() {
    if !require_kvm("the_api_answers_409_insufficient_memory_and_507_disk_full") {
        return;
    }
    let fs = SmallFs::new("api", 200);
    let serve = Serve::start_with(&fs.state, &[("KILN_MEMORY_BUDGET_MIB", "200")]);
    let c = serve.client();
    let req = |id: &str| CreateSandbox {
        id: Some(id.into()),
        image: Some("minimal".into()),
        memory_mib: Some(128),
        ..Default::default()
    };
    c.create(&req("api-a")).unwrap();
    let e = c.create(&req("api-b")).expect_err("over the budget");
    assert_eq!(e.status(), Some(409), "{e}");
    assert_eq!(e.code(), Some("insufficient_memory"), "{e}");
    let m = c.metrics().unwrap();
    assert!(
        m.contains(&format!("\nkiln_memory_budget_bytes {}\n", 200u64 << 20)),
        "{m}"
    );
    assert!(
        m.contains(&format!("\nkiln_memory_committed_bytes {}\n", 160u64 << 20)),
        "{m}"
    );

    fs.fill();
    let small = CreateSandbox {
        memory_mib: Some(64),
        ..req("api-c")
    };
    let e = c.create(&small).expect_err("no room");
    assert_eq!(e.status(), Some(507), "{e}");
    assert_eq!(e.code(), Some("disk_full"), "{e}");
    assert!(!fs.state.join("api-c").exists());
    // Removal works on the full disk, over the API too.
    c.remove("api-a").unwrap();
    let k = Kiln { state: &fs.state };
    assert!(ids(&k).is_empty());
    drop(serve);
    fs.unfill();
    assert!(
        leftovers(&fs.state, &[]).is_empty(),
        "{:?}",
        leftovers(&fs.state, &[])
    );
}
