//! The memory budget of sandbox admission (see `kiln::memory`): `kiln_memory_budget_bytes`
//! and `kiln_memory_committed_bytes` (guest memory plus VMM overhead of the sandboxes
//! that hold memory).

use super::text::{family, sample};

/// The budget and what is committed against it, in MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemorySample {
    pub budget_mib: u64,
    pub committed_mib: u64,
}

/// Reads the budget and the committed sum from the state store.
pub fn collect() -> kiln::Result<MemorySample> {
    let limit = kiln::memory::limit()?;
    let committed_mib = kiln::state_dir::store()?.committed_memory_mib(&limit)?;
    Ok(MemorySample {
        budget_mib: limit.budget_mib,
        committed_mib,
    })
}

/// Appends the two gauges.
pub fn render(out: &mut String, m: &MemorySample) {
    for (name, help, mib) in [
        (
            "kiln_memory_budget_bytes",
            "Guest memory plus VMM overhead that sandboxes may commit (KILN_MEMORY_BUDGET_MIB, else MemTotal x 1.5).",
            m.budget_mib,
        ),
        (
            "kiln_memory_committed_bytes",
            "Guest memory plus VMM overhead committed by the sandboxes that hold memory (creating, running, paused, stopping).",
            m.committed_mib,
        ),
    ] {
        family(out, name, "gauge", help);
        sample(out, name, &[], (mib << 20) as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_gauges_are_rendered_in_bytes() {
        let mut out = String::new();
        render(
            &mut out,
            &MemorySample {
                budget_mib: 2,
                committed_mib: 1,
            },
        );
        assert!(
            out.contains("# TYPE kiln_memory_budget_bytes gauge\n"),
            "{out}"
        );
        assert!(
            out.contains("\nkiln_memory_budget_bytes 2097152\n"),
            "{out}"
        );
        assert!(
            out.contains("\nkiln_memory_committed_bytes 1048576\n"),
            "{out}"
        );
    }
}
