use super::*;

/// A host with 4 GiB of RAM.
const HOST: HostFacts = HostFacts {
    mem_mib: Some(4096),
};

#[test]
fn firecracker_config_file_parses() {
    let dir = std::env::temp_dir();
    let kernel = dir.join("kiln-cfg-test-kernel");
    std::fs::write(&kernel, b"x").unwrap();
    let json = format!(
        r#"{{"boot-source": {{"kernel_image_path": "{}", "boot_args": "console=ttyS0"}},
            "drives": [], "machine-config": {{"vcpu_count": 2, "mem_size_mib": 256, "smt": false}},
            "network-interfaces": [], "logger": null}}"#,
        kernel.display()
    );
    let cfg = ValidConfig::from_json(&json, &HOST).unwrap();
    assert_eq!(cfg.machine_config.vcpu_count, 2);
    assert!(ValidConfig::from_json("{\"boot-source\": 3}", &HOST)
        .unwrap_err()
        .0
        .starts_with("malformed JSON"));
    assert!(ValidConfig::from_json(
        r#"{"machine-config": {"vcpu_count": 1, "mem_size_mib": 128}}"#,
        &HOST
    )
    .unwrap_err()
    .0
    .contains("boot-source"));
    std::fs::remove_file(kernel).unwrap();
}

#[test]
fn config_file_vsock_section() {
    let dir = std::env::temp_dir();
    let kernel = dir.join(format!("kiln-cfg-vsock-kernel-{}", std::process::id()));
    std::fs::write(&kernel, b"x").unwrap();
    let uds = dir.join(format!("kiln-cfg-vsock-{}.sock", std::process::id()));
    let json = |vsock: &str| {
        format!(
            r#"{{"boot-source": {{"kernel_image_path": "{}"}}, "vsock": {vsock}}}"#,
            kernel.display()
        )
    };
    let body = format!(r#"{{"guest_cid": 7, "uds_path": "{}"}}"#, uds.display());
    let cfg = ValidConfig::from_json(&json(&body), &HOST).unwrap();
    assert_eq!(cfg.vsock.as_ref().unwrap().guest_cid, 7);
    let shown = serde_json::to_value(&*cfg).unwrap();
    assert_eq!(shown["vsock"]["guest_cid"], 7);
    assert!(ValidConfig::from_json(&json("null"), &HOST)
        .unwrap()
        .vsock
        .is_none());
    let bad = format!(r#"{{"guest_cid": 2, "uds_path": "{}"}}"#, uds.display());
    assert!(ValidConfig::from_json(&json(&bad), &HOST)
        .unwrap_err()
        .0
        .contains("guest_cid"));
    std::fs::remove_file(kernel).unwrap();
}

#[test]
fn config_file_metrics_section() {
    let dir = std::env::temp_dir();
    let kernel = dir.join(format!("kiln-cfg-metrics-kernel-{}", std::process::id()));
    std::fs::write(&kernel, b"x").unwrap();
    let json = |metrics: &str| {
        format!(
            r#"{{"boot-source": {{"kernel_image_path": "{}"}}, "metrics": {metrics}}}"#,
            kernel.display()
        )
    };
    let cfg = ValidConfig::from_json(&json(r#"{"metrics_path": "/run/m.fifo"}"#), &HOST).unwrap();
    let m = cfg.metrics.as_ref().unwrap();
    assert_eq!(m.metrics_path, std::path::Path::new("/run/m.fifo"));
    // Not part of the VM's shown (or snapshotted) configuration.
    assert!(serde_json::to_value(&*cfg)
        .unwrap()
        .get("metrics")
        .is_none());
    assert!(ValidConfig::from_json(&json("null"), &HOST)
        .unwrap()
        .metrics
        .is_none());
    let e =
        ValidConfig::from_json(&json(r#"{"metrics_path": "/m", "level": 1}"#), &HOST).unwrap_err();
    assert!(e.0.contains("unknown field"), "{e}");
    std::fs::remove_file(kernel).unwrap();
}

/// A config file naming a kernel that exists, with `rest` after the boot source.
fn with_kernel(name: &str, rest: &str) -> (std::path::PathBuf, String) {
    let kernel = std::env::temp_dir().join(format!("kiln-cfg-{name}-{}", std::process::id()));
    std::fs::write(&kernel, b"x").unwrap();
    let json = format!(
        r#"{{"boot-source": {{"kernel_image_path": "{}"}}{rest}}}"#,
        kernel.display()
    );
    (kernel, json)
}

#[test]
fn validation_checks_memory_against_the_given_host() {
    let (kernel, json) = with_kernel(
        "host",
        r#", "machine-config": {"vcpu_count": 1, "mem_size_mib": 8192}"#,
    );
    let e = ValidConfig::from_json(&json, &HOST).unwrap_err().0;
    assert!(
        e.contains("mem_size_mib 8192") && e.contains("host's 4096 MiB"),
        "{e}"
    );
    let big_host = HostFacts {
        mem_mib: Some(16384),
    };
    let cfg = ValidConfig::from_json(&json, &big_host).unwrap();
    assert_eq!(cfg.machine_config.mem_size_mib, 8192);
    assert_eq!(
        cfg.boot_source().kernel_image_path,
        kernel.display().to_string()
    );
    std::fs::remove_file(kernel).unwrap();
}

#[test]
fn a_valid_config_has_a_boot_source_unique_drives_and_one_root() {
    let no_boot = VmConfig::default();
    let e = ValidConfig::new(no_boot, &HOST).unwrap_err().0;
    assert!(e.contains("boot-source"), "{e}");

    let (kernel, _) = with_kernel("drives", "");
    let path = kernel.display().to_string();
    let drive = |id: &str, root: bool| {
        format!(r#"{{"drive_id": "{id}", "path_on_host": "{path}", "is_root_device": {root}}}"#)
    };
    let file = |drives: &[String]| {
        format!(
            r#"{{"boot-source": {{"kernel_image_path": "{path}"}}, "drives": [{}]}}"#,
            drives.join(",")
        )
    };
    let twice = file(&[drive("a", false), drive("a", false)]);
    let e = ValidConfig::from_json(&twice, &HOST).unwrap_err().0;
    assert!(e.contains("used twice"), "{e}");
    let two_roots = file(&[drive("a", true), drive("b", true)]);
    let e = ValidConfig::from_json(&two_roots, &HOST).unwrap_err().0;
    assert!(e.contains("more than one drive"), "{e}");
    let good = ValidConfig::from_json(&file(&[drive("a", true), drive("b", false)]), &HOST);
    assert_eq!(good.unwrap().into_inner().drives.len(), 2);
    std::fs::remove_file(kernel).unwrap();
}

#[test]
fn logger_and_mmds_sections_are_parsed_and_checked() {
    let (kernel, json) = with_kernel(
        "logger",
        r#", "logger": {"log_path": "/tmp/fc.log", "level": "debug", "show_level": true}"#,
    );
    let cfg = ValidConfig::from_json(&json, &HOST).unwrap().into_inner();
    let l = cfg.logger.unwrap();
    assert_eq!(l.level, Some(crate::logger::Level::Debug));
    std::fs::remove_file(kernel).unwrap();
    let (kernel, json) = with_kernel("logger-bad", r#", "logger": {"level": "loud"}"#);
    let e = ValidConfig::from_json(&json, &HOST).unwrap_err().0;
    assert!(e.contains("unknown log level 'loud'"), "{e}");
    std::fs::remove_file(kernel).unwrap();
    let (kernel, json) = with_kernel(
        "mmds",
        r#", "mmds-config": {"network_interfaces": ["eth0"]}"#,
    );
    let e = ValidConfig::from_json(&json, &HOST).unwrap_err().0;
    assert!(e.contains("PUT /network-interfaces/eth0 first"), "{e}");
    std::fs::remove_file(kernel).unwrap();
    let (kernel, json) = with_kernel("net", r#", "network-interfaces": [{"iface_id": "eth0"}]"#);
    let e = ValidConfig::from_json(&json, &HOST).unwrap_err().0;
    assert!(e.contains("host_dev_name"), "{e}");
    std::fs::remove_file(kernel).unwrap();
}

#[test]
fn network_interfaces_of_a_config_file_are_checked() {
    let two = r#", "network-interfaces": [
        {"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:00:00:00:01",
         "tx_rate_limiter": {"bandwidth": {"size": 1048576, "refill_time": 1000}}},
        {"iface_id": "eth0", "host_dev_name": "tap1"}]"#;
    let (kernel, json) = with_kernel("net2", two);
    let e = ValidConfig::from_json(&json, &HOST).unwrap_err().0;
    assert!(e.contains("iface_id 'eth0' is used twice"), "{e}");
    std::fs::remove_file(kernel).unwrap();
    let (kernel, json) = with_kernel(
        "net3",
        &two.replace(
            r#""eth0", "host_dev_name": "tap1""#,
            r#""eth1", "host_dev_name": "tap1""#,
        ),
    );
    let cfg = ValidConfig::from_json(&json, &HOST).unwrap();
    assert_eq!(cfg.network_interfaces.len(), 2);
    let l = cfg.network_interfaces[0].tx_rate_limiter.unwrap();
    assert_eq!(l.bandwidth.unwrap().size, 1048576);
    // Shown again by GET /vm/config.
    let v = serde_json::to_value(cfg.as_config()).unwrap();
    assert_eq!(v["network-interfaces"][1]["host_dev_name"], "tap1");
    std::fs::remove_file(kernel).unwrap();
}

#[test]
fn mmds_config_and_entropy_round_trip_as_a_snapshot_keeps_them() {
    // A snapshot's state.json holds the VmConfig as serialised here.
    let cfg = VmConfig {
        mmds_config: Some(crate::mmds::MmdsConfig {
            version: crate::mmds::MmdsVersion::V2,
            network_interfaces: vec!["eth0".into()],
            ipv4_address: Some("169.254.170.2".parse().unwrap()),
            imds_compat: true,
        }),
        entropy: Some(super::EntropyConfig {
            rate_limiter: Some(
                serde_json::from_str(r#"{"ops": {"size": 10, "refill_time": 100}}"#).unwrap(),
            ),
        }),
        ..Default::default()
    };
    let text = serde_json::to_string(&cfg).unwrap();
    assert!(text.contains("\"mmds-config\""), "{text}");
    let back: VmConfig = serde_json::from_str(&text).unwrap();
    assert_eq!(back, cfg);
    // An older state.json without them still loads.
    let old: VmConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(old.mmds_config, None);
    assert_eq!(old.entropy, None);
}
