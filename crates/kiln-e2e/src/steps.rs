//! Named steps over one fixture, for the long tours (tests/server.rs, tests/remote.rs):
//! the steps run in order on the same fixture, and a failing step fails the test with
//! its name, `step 'auth is required' failed: <panic message>`, so a red tour says
//! where it broke without reading line numbers. The steps after a failed one do not
//! run (each builds on what the ones before left); the fixture is dropped as usual.
//! Its own tests are tests/steps.rs (an e2e test binary, so scripts/test runs them).

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::time::Instant;

/// One step: its name (a short sentence saying what it checks) and its body.
pub type Step<T> = (&'static str, fn(&mut T));

/// Runs `steps` in order on `fixture`. Panics, naming the step, at the first step
/// that panics.
pub fn run_steps<T>(fixture: &mut T, steps: &[Step<T>]) {
    for (name, step) in steps {
        let t0 = Instant::now();
        // AssertUnwindSafe: a fixture a step broke halfway is never used again; the
        // panic goes on at once.
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| step(fixture))) {
            panic!("step '{name}' failed: {}", panic_message(&*payload));
        }
        eprintln!("step '{name}' passed in {:.1?}", t0.elapsed());
    }
}

/// The message of a panic's payload (`panic!` and `assert!` give a `&str` or a
/// `String`).
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(a panic without a message)"
    }
}
