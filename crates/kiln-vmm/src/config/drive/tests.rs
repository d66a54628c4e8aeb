use super::*;
use crate::config::parse_json;

/// A drive body for an image that exists, with `extra` fields.
fn parse(image: &std::path::Path, extra: &str) -> Result<Drive, ConfigError> {
    parse_json(&format!(
        r#"{{"drive_id": "rootfs", "path_on_host": "{}", "is_root_device": true{extra}}}"#,
        image.display()
    ))
}

fn image(name: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("kiln-drive-cfg-{name}-{}", std::process::id()));
    std::fs::write(&p, [0u8; 512]).unwrap();
    p
}

#[test]
fn firecracker_defaults_are_accepted_and_shown_back() {
    let img = image("defaults");
    let d = parse(
        &img,
        r#", "is_read_only": false, "cache_type": "Unsafe", "io_engine": "Sync", "rate_limiter": null, "partuuid": null"#,
    )
    .unwrap();
    d.validate().unwrap();
    assert_eq!(d.cache_type, Some(CacheType::Unsafe));
    let shown = serde_json::to_value(&d).unwrap();
    assert_eq!(shown["cache_type"], "Unsafe");
    assert_eq!(shown["io_engine"], "Sync");
    assert!(shown.get("partuuid").is_none());
    let d = parse(&img, r#", "cache_type": "Writeback""#).unwrap();
    d.validate().unwrap();
    std::fs::remove_file(img).unwrap();
}

#[test]
fn what_kiln_vmm_does_not_do_is_refused_with_what_to_change() {
    let img = image("refused");
    let refused = |extra: &str| parse(&img, extra).unwrap().validate().unwrap_err().0;
    let e = refused(r#", "partuuid": "0eaa91a0-01""#);
    assert!(
        e.contains("partuuid \"0eaa91a0-01\" is not supported by kiln-vmm")
            && e.contains("remove it"),
        "{e}"
    );
    let e = refused(r#", "io_engine": "Async""#);
    assert!(e.contains("Sync"), "{e}");
    let e = refused(r#", "rate_limiter": {"bandwidth": {"size": 1, "refill_time": 99999999999}}"#);
    assert!(
        e.contains("rate_limiter.bandwidth") && e.contains("milliseconds"),
        "{e}"
    );
    let limited = parse(
        &img,
        r#", "rate_limiter": {"bandwidth": {"size": 1048576, "refill_time": 1000}, "ops": {"size": 100, "one_time_burst": 50, "refill_time": 1000}}"#,
    )
    .unwrap();
    limited.validate().unwrap();
    assert_eq!(
        limited.rate_limiter.unwrap().ops.unwrap().one_time_burst,
        Some(50)
    );
    // Spellings Firecracker does not have are malformed.
    let e = parse(&img, r#", "cache_type": "WriteThrough""#)
        .unwrap_err()
        .0;
    assert!(
        e.contains("unknown variant") && e.contains("Writeback"),
        "{e}"
    );
    assert!(parse(&img, r#", "io_engine": "sync""#).is_err());
    std::fs::remove_file(img).unwrap();
}
