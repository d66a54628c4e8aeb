//! Memory admission on real SQLite: what counts, and concurrent creates against one
//! budget from separate connections (as separate kiln processes would).

use super::*;

fn with_memory(id: &str, state: SbState, mib: u64) -> SandboxRow {
    SandboxRow {
        memory_mib: Some(mib),
        ..sandbox(id, state, 1)
    }
}

const LIMIT: MemoryLimit = MemoryLimit {
    budget_mib: 3 * (256 + 32),
    overhead_mib: 32,
};

#[test]
fn only_sandboxes_holding_memory_count_and_the_budget_is_enforced() {
    let db = TempDb::new("mem");
    let s = db.open();
    for (id, st) in [("a", Running), ("b", Paused), ("c", Stopped), ("d", Failed)] {
        s.insert_sandbox(&with_memory(id, st, 256)).unwrap();
    }
    assert_eq!(s.committed_memory_mib(&LIMIT).unwrap(), 2 * (256 + 32));
    s.insert_sandbox_within(&with_memory("e", Creating, 256), Some(&LIMIT))
        .unwrap();
    let e = s
        .insert_sandbox_within(&with_memory("f", Creating, 1), Some(&LIMIT))
        .unwrap_err();
    match e {
        StoreError::InsufficientMemory {
            id,
            requested_mib,
            committed_mib,
            budget_mib,
        } => {
            assert_eq!(id, "f");
            assert_eq!((requested_mib, committed_mib, budget_mib), (33, 864, 864));
        }
        e => panic!("{e}"),
    }
    assert!(e_text(&s).contains("KILN_MEMORY_BUDGET_MIB"));
    // Refused means not inserted.
    assert!(matches!(
        s.get_sandbox("f"),
        Err(StoreError::NotFound { .. })
    ));
    // A stopped sandbox frees its share.
    s.transition("a", &[Running], Stopping, None).unwrap();
    s.transition("a", &[Stopping], Stopped, None).unwrap();
    s.insert_sandbox_within(&with_memory("f", Creating, 256), Some(&LIMIT))
        .unwrap();
}

fn e_text(s: &Store) -> String {
    s.insert_sandbox_within(&with_memory("zz", Creating, 1 << 20), Some(&LIMIT))
        .unwrap_err()
        .to_string()
}

#[test]
fn concurrent_creates_cannot_all_pass_the_budget() {
    let db = TempDb::new("mem-race");
    db.open();
    let ok: Vec<bool> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..10)
            .map(|i| {
                let path = db.path();
                sc.spawn(move || {
                    let s = Store::open(path).unwrap();
                    match s.insert_sandbox_within(
                        &with_memory(&format!("c{i}"), Creating, 256),
                        Some(&LIMIT),
                    ) {
                        Ok(()) => true,
                        Err(StoreError::InsufficientMemory { .. }) => false,
                        Err(e) => panic!("{e}"),
                    }
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(ok.iter().filter(|&&b| b).count(), 3, "{ok:?}");
    assert_eq!(
        db.open().list_sandboxes(&Default::default()).unwrap().len(),
        3
    );
}

#[test]
fn opening_allocates_the_reserve_beside_the_database() {
    let db = TempDb::new("reserve");
    let s = db.open();
    let p = db.path().with_file_name(reserve::RESERVE_FILE);
    if reserve::free_bytes(s.dir()).unwrap() >= 2 * reserve::RESERVE_BYTES {
        assert_eq!(std::fs::metadata(&p).unwrap().len(), reserve::RESERVE_BYTES);
        std::fs::remove_file(&p).unwrap();
        assert!(s.ensure_reserve());
        assert!(p.exists());
    }
}
