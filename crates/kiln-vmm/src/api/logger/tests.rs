//! `PUT /logger` over the router.

use crate::api::test_support::{call, vmm};
use crate::test_dir::TempDir;

#[test]
fn put_logger_opens_the_file_once_and_refuses_bad_bodies() {
    let _g = crate::logger::test_guard();
    let v = vmm();
    let dir = TempDir::new("api-logger");
    let fault = |body: &str, want: &str| {
        let (status, msg) = call(&v, "PUT", "/logger", body);
        assert_eq!(status, 400, "{body}: {msg}");
        assert!(msg.contains(want), "{body}: {msg}");
    };
    fault(
        r#"{"level": "Loud"}"#,
        "use Error, Warning, Info, Debug, Trace or Off",
    );
    fault(r#"{"log_path": "/tmp", "level": "Info"}"#, "is a directory");
    fault(
        r#"{"log_path": "/x", "colour": true}"#,
        "unknown field `colour`",
    );
    let log = dir.path().join("fc.log");
    let body = format!(
        r#"{{"log_path": "{}", "level": "warning", "show_level": true, "show_log_origin": false}}"#,
        log.display()
    );
    assert_eq!(call(&v, "PUT", "/logger", &body), (204, String::new()));
    assert!(log.is_file());
    assert_eq!(crate::logger::level(), crate::logger::Level::Warning);
    fault(&body, "already configured");
}
