//! The step runner the tours use (kiln_e2e::steps): order, the failing step's name and
//! message, and nothing after it. No guest: this runs anywhere, and as an e2e test
//! binary it runs wherever scripts/test runs the suite.

use std::panic::{self, AssertUnwindSafe};

use kiln_e2e::steps::{run_steps, Step};

fn first(log: &mut Vec<&'static str>) {
    log.push("first");
}

fn second(log: &mut Vec<&'static str>) {
    log.push("second");
}

fn fails_with_a_string(log: &mut Vec<&'static str>) {
    log.push("fails");
    let n = 2;
    assert_eq!(n, 3, "two is not {}", 3);
}

fn fails_with_a_str(_: &mut Vec<&'static str>) {
    panic!("plain");
}

/// The message `run_steps(steps)` panics with, and the steps that ran.
fn failure(steps: &[Step<Vec<&'static str>>]) -> (String, Vec<&'static str>) {
    let mut log = Vec::new();
    let payload = panic::catch_unwind(AssertUnwindSafe(|| run_steps(&mut log, steps)))
        .expect_err("a step failed, so run_steps panics");
    let msg = payload
        .downcast_ref::<String>()
        .expect("run_steps panics with a formatted message")
        .clone();
    (msg, log)
}

#[test]
fn steps_run_in_order_on_one_fixture() {
    let mut log = Vec::new();
    run_steps(
        &mut log,
        &[("one", first), ("two", second), ("three", first)],
    );
    assert_eq!(log, ["first", "second", "first"]);
}

#[test]
fn a_failing_step_is_named_with_its_message_and_ends_the_run() {
    let (msg, log) = failure(&[
        ("one", first),
        ("auth is required", fails_with_a_string),
        ("never", second),
    ]);
    assert!(
        msg.starts_with(
            "step 'auth is required' failed: assertion `left == right` failed: two is not 3"
        ),
        "{msg}"
    );
    assert_eq!(log, ["first", "fails"]);
}

#[test]
fn a_static_panic_message_is_kept() {
    let (msg, log) = failure(&[("plain step", fails_with_a_str), ("never", second)]);
    assert_eq!(msg, "step 'plain step' failed: plain");
    assert!(log.is_empty());
}
