//! The logger: levels, module filter, line format and its destinations.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

use tracing_subscriber::layer::SubscriberExt;

use super::*;
use crate::test_dir::TempDir;

fn emit_all() {
    tracing::error!("an error");
    tracing::warn!("a warning");
    tracing::info!("some info");
    tracing::debug!(n = 3, "a debug line");
    tracing::trace!("a trace line");
}

/// Configures the logger, emits one event of each level and returns the file's text.
fn lines_with(cfg: LoggerConfig, dir: &TempDir) -> String {
    let path = dir.path().join("vmm.log");
    let _ = std::fs::remove_file(&path);
    configure(&LoggerConfig {
        log_path: Some(path.clone()),
        ..cfg
    })
    .unwrap();
    let sub = tracing_subscriber::registry().with(VmmLog);
    tracing::subscriber::with_default(sub, emit_all);
    std::fs::read_to_string(&path).unwrap()
}

#[test]
fn levels_are_honoured_and_lines_show_what_was_asked() {
    let dir = TempDir::new("logger");
    {
        let _g = test_guard();
        let text = lines_with(LoggerConfig::default(), &dir);
        // Firecracker's default: Info.
        assert!(text.contains("] an error\n"), "{text}");
        assert!(text.contains("] a warning\n"), "{text}");
        assert!(text.contains("] some info\n"), "{text}");
        assert!(!text.contains("debug"), "{text}");
        assert!(!text.contains("ERROR"), "no level unless asked: {text}");
        assert_eq!(text.lines().count(), 3, "{text}");
        // Once per process.
        assert!(matches!(
            configure(&LoggerConfig::default()),
            Err(LoggerError::AlreadySet)
        ));
    }
    {
        let _g = test_guard();
        let cfg = LoggerConfig {
            level: Some(Level::Warning),
            show_level: Some(true),
            show_log_origin: Some(true),
            ..Default::default()
        };
        let text = lines_with(cfg, &dir);
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("logger/tests.rs:12] an error"), "{text}");
        assert!(
            text.contains(":WARN:crates/kiln-vmm/src/logger/tests.rs:13] a warning"),
            "{text}"
        );
    }
    {
        let _g = test_guard();
        let cfg = LoggerConfig {
            level: Some(Level::Trace),
            ..Default::default()
        };
        let text = lines_with(cfg, &dir);
        assert_eq!(text.lines().count(), 5, "{text}");
        assert!(text.contains("] a debug line n=3\n"), "{text}");
    }
    {
        let _g = test_guard();
        let cfg = LoggerConfig {
            level: Some(Level::Off),
            ..Default::default()
        };
        assert_eq!(lines_with(cfg, &dir), "");
    }
    {
        let _g = test_guard();
        let cfg = LoggerConfig {
            level: Some(Level::Trace),
            module: Some("kiln_vmm::devices".into()),
            ..Default::default()
        };
        assert_eq!(lines_with(cfg, &dir), "", "other modules filtered out");
    }
}

#[test]
fn levels_parse_case_insensitively() {
    assert_eq!(Level::parse("warning"), Ok(Level::Warning));
    assert_eq!(Level::parse("DEBUG"), Ok(Level::Debug));
    assert_eq!(Level::parse("Off"), Ok(Level::Off));
    let e = Level::parse("loud").unwrap_err();
    assert!(
        e.contains("use Error, Warning, Info, Debug, Trace or Off"),
        "{e}"
    );
    let cfg: LoggerConfig = serde_json::from_str(r#"{"level": "trace"}"#).unwrap();
    assert_eq!(cfg.level, Some(Level::Trace));
}

#[test]
fn destinations_are_checked_without_blocking() {
    let dir = TempDir::new("logger-dst");
    assert!(matches!(
        open_log_path(Path::new("")),
        Err(LoggerError::EmptyPath)
    ));
    assert!(matches!(
        open_log_path(dir.path()),
        Err(LoggerError::IsDirectory(_))
    ));
    let e = open_log_path(&dir.path().join("no/such/file")).unwrap_err();
    assert!(e.to_string().contains("cannot open log_path"), "{e}");
    let fifo = dir.path().join("pipe");
    let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let e = open_log_path(&fifo).unwrap_err();
    assert!(e.to_string().contains("named pipe with no reader"), "{e}");
    // With a reader it opens.
    let _reader = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    open_log_path(&fifo).unwrap();
    open_log_path(Path::new("/dev/null")).unwrap();
}
