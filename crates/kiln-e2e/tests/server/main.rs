//! `kiln serve` as a client drives it: the real binary on a unix socket in a private
//! state directory, real guests behind it, the blocking client of kiln-server in front.
//! Two guests in all: one for the API tour, one that outlives kills of the server.
//! The tour is named steps over one fixture (kiln_e2e::steps): a failure names its step.

use std::path::Path;
use std::time::{Duration, Instant};

use kiln_e2e::serve::{Leftovers, Serve, Served};
use kiln_e2e::steps::run_steps;
use kiln_e2e::{process_running, require_kvm, wait_until, TempDir};
use kiln_server::api::{CreateSandbox, ExecRequest, OutputEncoding, Removed};
use kiln_server::client::{Client, ClientError, ListFilter, Output};

mod exec;
mod observe;
mod sandboxes;
mod snapshots;

use exec::*;
use observe::*;
use sandboxes::*;
use snapshots::*;

fn minimal(id: &str) -> CreateSandbox {
    CreateSandbox {
        id: Some(id.into()),
        image: Some("minimal".into()),
        ..Default::default()
    }
}

/// (status, code) of a failed call.
fn err<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (u16, String) {
    let e = r.expect_err("an error");
    (e.status().unwrap_or(0), e.code().unwrap_or("").to_string())
}

/// Waits until `pid` is not even a zombie (the server reaps its VMM children).
fn wait_gone(pid: u32) -> bool {
    wait_until(Duration::from_secs(10), || {
        !Path::new(&format!("/proc/{pid}")).exists()
    })
}

/// The API tour's fixture: the server, its client (with the token) and what the steps
/// hand on (srv-a's VMM, the restored copy's VMM, the answer to srv-a's delete).
struct Tour {
    served: Served,
    c: Client,
    pid: u32,
    copy_pid: u32,
    removed: Option<Removed>,
}

#[test]
fn server_api_tour() {
    if !require_kvm("server_api_tour") {
        return;
    }
    let served = Served::start("server-tour");
    let c = served.server.client();
    let mut tour = Tour {
        served,
        c,
        pid: 0,
        copy_pid: 0,
        removed: None,
    };
    run_steps(
        &mut tour,
        &[
            ("auth is required", auth_is_required),
            ("create, get and list with filters", create_get_and_list),
            ("exec output is streamed", exec_output_is_streamed),
            (
                "a streamed exec whose client leaves is killed",
                exec_client_gone,
            ),
            ("collected exec: exit code, stdin, timeout", collected_exec),
            ("files: mkdir, write, read, stat, list, remove", files),
            (
                "4xx answers are JSON with stable codes",
                errors_are_json_with_stable_codes,
            ),
            (
                "pause refuses exec and names wrong transitions",
                pause_and_resume,
            ),
            ("metrics per sandbox and per exec", metrics),
            (
                "the OpenAPI document lists every route",
                openapi_lists_every_route,
            ),
            ("events and logs", events_and_logs),
            (
                "snapshot and restore keep the environment",
                snapshot_and_restore,
            ),
            ("a warm pool hands off and refills", warm_pool),
            (
                "a copy from a snapshot takes labels and limits, and is reaped",
                labels_limits_and_reaping,
            ),
            (
                "removing the snapshot leaves no restored VMM",
                removing_the_snapshot,
            ),
            (
                "a followed log ends when its sandbox goes",
                followed_log_ends,
            ),
            ("delete leaves nothing", delete_leaves_nothing),
        ],
    );
}

#[test]
fn sandboxes_outlive_the_server() {
    if !require_kvm("sandboxes_outlive_the_server") {
        return;
    }
    let state = TempDir::new("server-restart");
    let _leftovers = Leftovers(state.0.clone());
    let mut first = Serve::start(&state.0);
    let c = first.client();
    let sb = c.create(&minimal("srv-k")).unwrap();
    let pid = sb.pid.unwrap();
    let run = |c: &Client, what: &str| {
        let r = c
            .exec_collect(
                "srv-k",
                &ExecRequest::new(["echo", what]),
                OutputEncoding::Text,
            )
            .unwrap();
        assert_eq!(r.stdout, format!("{what}\n"));
    };
    run(&c, "one");

    // A graceful stop leaves the sandbox running and removes the socket.
    let st = first.signal(libc::SIGTERM);
    assert!(
        st.success(),
        "kiln serve exited with {st}:\n{}",
        first.log()
    );
    assert!(!state.path("kiln.sock").exists());
    assert!(
        process_running(pid as i32),
        "SIGTERM of the server stopped the VMM"
    );

    // A new server adopts it; then a kill -9 of that one loses nothing either.
    let mut second = Serve::start(&state.0);
    let c = second.client();
    assert!(
        second.log().contains("adopted [\"srv-k\"]"),
        "{}",
        second.log()
    );
    run(&c, "two");
    second.signal(libc::SIGKILL);
    assert!(
        process_running(pid as i32),
        "kill -9 of the server stopped the VMM"
    );
    let third = Serve::start(&state.0);
    let c = third.client();
    let listed = c.list(&ListFilter::default()).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].id.as_str(), listed[0].state),
        ("srv-k", kiln::State::Running)
    );
    run(&c, "three");
    assert_eq!(c.stop("srv-k").unwrap().step, "agent shutdown");
    assert_eq!(c.get("srv-k").unwrap().state, kiln::State::Stopped);
    assert!(c.remove("srv-k").unwrap().step.is_none());
    assert!(!state.path("srv-k").exists());
    assert!(
        !process_running(pid as i32),
        "the VMM still runs:\n{}",
        third.log()
    );
}
