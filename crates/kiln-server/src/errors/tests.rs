use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use kiln::{Error, FileErrorKind, State};
use serde_json::Value;

use super::ApiError;

fn map(e: Error) -> (u16, &'static str, Value) {
    let a = ApiError::from(e);
    let extra = Value::Object(a.extra.clone());
    (a.status.as_u16(), a.code, extra)
}

#[test]
fn library_errors_map_to_stable_codes_and_statuses() {
    let id = || "sb-1".to_string();
    let cases: Vec<(Error, u16, &str)> = vec![
        (Error::NotFound { id: id() }, 404, "not_found"),
        (Error::AlreadyExists { id: id() }, 409, "already_exists"),
        (
            Error::SnapshotNotFound { name: "s".into() },
            404,
            "snapshot_not_found",
        ),
        (
            Error::SnapshotExists { name: "s".into() },
            409,
            "snapshot_exists",
        ),
        (
            Error::UnsupportedByBackend {
                id: id(),
                backend: "qemu".into(),
                operation: "snapshots".into(),
            },
            422,
            "unsupported_by_backend",
        ),
        (Error::Unsupported("x".into()), 422, "unsupported"),
        (Error::InvalidInput("x".into()), 400, "invalid_input"),
        (
            Error::AgentUnavailable {
                id: id(),
                reason: "paused".into(),
            },
            409,
            "agent_unavailable",
        ),
        (Error::BadSnapshot("bad".into()), 422, "bad_snapshot"),
        (
            Error::InsufficientMemory {
                id: id(),
                requested_mib: 288,
                committed_mib: 800,
                budget_mib: 864,
            },
            409,
            "insufficient_memory",
        ),
        (
            Error::DiskFull {
                what: "x".into(),
                path: "/s".into(),
                free_mib: 0,
                needed_mib: Some(8),
            },
            507,
            "disk_full",
        ),
        (
            Error::HostIo {
                what: "cannot write",
                path: "/s/x".into(),
                cause: std::io::Error::from_raw_os_error(libc::ENOSPC),
            },
            507,
            "disk_full",
        ),
        (Error::Protocol("x".into()), 500, "internal"),
        (
            Error::Vmm {
                id: id(),
                message: "x".into(),
            },
            500,
            "internal",
        ),
        (Error::Io(std::io::Error::other("disk")), 500, "internal"),
        (
            Error::Net(kiln::net::NetError::NeedsRoot),
            422,
            "network_unavailable",
        ),
        (
            Error::Net(kiln::net::NetError::PoolExhausted {
                pool: "10.200.0.0/30".into(),
            }),
            503,
            "network_pool_exhausted",
        ),
        (
            Error::CommandTimedOut {
                after: Duration::from_secs(1),
                output: Box::new(kiln::ExecOutput {
                    status: kiln::ExitStatus {
                        code: None,
                        signal: Some(9),
                        timed_out: true,
                    },
                    stdout: vec![],
                    stderr: vec![],
                }),
            },
            500,
            "internal",
        ),
    ];
    for (e, status, code) in cases {
        let text = e.to_string();
        let a = ApiError::from(e);
        assert_eq!((a.status.as_u16(), a.code), (status, code), "{text}");
        assert_eq!(a.message, text, "the message is the library's");
    }
}

#[test]
fn extra_fields_name_what_the_client_needs() {
    let (s, c, x) = map(Error::InvalidTransition {
        id: "sb-1".into(),
        from: State::Paused,
        to: State::Stopped,
    });
    assert_eq!((s, c), (409, "invalid_transition"));
    assert_eq!(x["id"], "sb-1");
    assert_eq!(x["from"], "paused");
    assert_eq!(x["to"], "stopped");

    let (s, c, x) = map(Error::BootFailed {
        stage: "InstanceStart",
        errno: Some(12),
        message: "no memory".into(),
    });
    assert_eq!((s, c), (500, "boot_failed"));
    assert_eq!(x["stage"], "InstanceStart");
    assert_eq!(x["errno"], 12);

    let (s, c, x) = map(Error::GuestFile {
        kind: FileErrorKind::NotFound,
        path: "/nope".into(),
        message: "No such file".into(),
    });
    assert_eq!((s, c), (404, "guest_file_not_found"));
    assert_eq!(x["kind"], "not_found");
    assert_eq!(x["path"], "/nope");

    let (s, c, x) = map(Error::GuestFile {
        kind: FileErrorKind::IsADirectory,
        path: "/tmp".into(),
        message: "Is a directory".into(),
    });
    assert_eq!((s, c), (400, "guest_file_error"));
    assert_eq!(x["kind"], "is_a_directory");
}

#[tokio::test]
async fn the_response_is_json_with_the_code_message_and_extra_fields() {
    let r = ApiError::from(Error::NotFound { id: "sb-9".into() }).into_response();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.headers()["content-type"], "application/json");
    let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["error"]["code"], "not_found");
    assert_eq!(v["error"]["id"], "sb-9");
    assert!(v["error"]["message"].as_str().unwrap().contains("sb-9"));
    let back: crate::api::ErrorBody = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(back.error.code, "not_found");
    assert_eq!(back.error.extra["id"], "sb-9");
}
