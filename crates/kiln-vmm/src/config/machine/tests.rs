use super::*;
use crate::config::parse_json;

/// A host with 4 GiB of RAM.
const HOST: HostFacts = HostFacts {
    mem_mib: Some(4096),
};

fn cfg(vcpu_count: u8, mem_size_mib: u64) -> MachineConfig {
    MachineConfig {
        vcpu_count,
        mem_size_mib,
        ..Default::default()
    }
}

#[test]
fn bad_sizes_say_what_to_use() {
    assert!(cfg(0, 128)
        .validate(&HOST)
        .unwrap_err()
        .0
        .contains("1 to 32"));
    assert!(cfg(33, 128).validate(&HOST).is_err());
    assert!(cfg(1, 8)
        .validate(&HOST)
        .unwrap_err()
        .0
        .contains("at least 32"));
    assert!(cfg(1, 1 << 40)
        .validate(&HostFacts::read())
        .unwrap_err()
        .0
        .contains("host's"));
    assert!(cfg(2, 256).validate(&HOST).is_ok());
    let smt = MachineConfig {
        smt: true,
        ..cfg(2, 256)
    };
    assert!(smt.validate(&HOST).is_err());
}

#[test]
fn memory_is_checked_against_the_given_host() {
    let e = cfg(1, 4097).validate(&HOST).unwrap_err().0;
    assert!(
        e.contains("mem_size_mib 4097") && e.contains("4096 MiB"),
        "{e}"
    );
    assert!(cfg(1, 4096).validate(&HOST).is_ok());
    // An unknown host size is not a limit.
    assert!(cfg(1, 1 << 20).validate(&HostFacts::default()).is_ok());
}

#[test]
fn choices_kiln_vmm_does_not_have_are_refused_and_its_own_accepted() {
    let parse = |extra: &str| {
        parse_json::<MachineConfig>(&format!(
            r#"{{"vcpu_count": 1, "mem_size_mib": 128{extra}}}"#
        ))
    };
    // Firecracker's defaults, sent explicitly, still work and are shown back.
    let defaults = parse(
        r#", "smt": false, "track_dirty_pages": false, "cpu_template": "None", "huge_pages": "None""#,
    )
    .unwrap();
    assert!(defaults.validate(&HOST).is_ok());
    let shown = serde_json::to_value(&defaults).unwrap();
    assert_eq!(shown["cpu_template"], "None");
    assert_eq!(shown["huge_pages"], "None");
    // Absent choices are not shown.
    let shown = serde_json::to_value(parse("").unwrap()).unwrap();
    assert!(shown.get("cpu_template").is_none() && shown.get("huge_pages").is_none());

    let refused = |extra: &str| parse(extra).unwrap().validate(&HOST).unwrap_err().0;
    let e = refused(r#", "track_dirty_pages": true"#);
    assert!(
        e.contains("track_dirty_pages") && e.contains("set it to false"),
        "{e}"
    );
    let e = refused(r#", "cpu_template": "C3""#);
    assert!(
        e.contains("cpu_template \"C3\" is not supported by kiln-vmm"),
        "{e}"
    );
    assert!(e.contains("use \"None\""), "{e}");
    let e = refused(r#", "huge_pages": "2M""#);
    assert!(
        e.contains("huge_pages \"2M\" is not supported by kiln-vmm"),
        "{e}"
    );
    // Spellings Firecracker does not have are malformed.
    let e = parse(r#", "cpu_template": "Fast""#).unwrap_err().0;
    assert!(e.contains("unknown variant") && e.contains("None"), "{e}");
    assert!(parse(r#", "huge_pages": "1G""#).is_err());
}
