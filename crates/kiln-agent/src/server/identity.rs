//! `reidentify`: clone safety after a restore or fork (see `kiln_proto::identity`).
//!
//! The request is checked whole first (a bad field changes nothing: `invalid_input`);
//! then each step runs even if an earlier one failed, and the reply says truthfully
//! which ones happened. Steps, in order of importance:
//!
//! 1. reseed: credit the host's 64 bytes to the kernel pool and rekey the CRNG;
//! 2. clock: set CLOCK_REALTIME to the host's time;
//! 3. hostname: sethostname, then read back what the kernel has;
//! 4. machine id: replace `/etc/machine-id` (a read-only or missing `/etc` is skipped).
//!
//! Calls are serialised, and any number of them is fine: each one reseeds again
//! (mixing in more entropy never weakens the pool) and sets the same state again.
//! The privileged steps go through [`IdentitySys`], so that host tests (which may run
//! as root) use a fake and never touch the host's clock or hostname.

use std::io;
use std::path::Path;
use std::sync::Mutex;

use kiln_proto::identity::ENTROPY_LEN;
use kiln_proto::{ErrorReply, Reidentified, Reidentify, Reply};

use super::routes::Op;
use super::sys::{invalid, lock};
use super::Context;
use crate::console::io_strerror;

/// The system calls behind `reidentify`, one method per step.
pub trait IdentitySys: Send + Sync {
    fn reseed(&self, entropy: &[u8; ENTROPY_LEN]) -> io::Result<()>;
    /// Sets CLOCK_REALTIME; returns how far it moved (ns).
    fn step_realtime(&self, unix_time_ns: u64) -> io::Result<i128>;
    fn set_hostname(&self, name: &str) -> io::Result<()>;
    fn hostname(&self) -> io::Result<String>;
    fn write_machine_id(&self, id: &str) -> io::Result<()>;
}

/// The real thing, for the agent as the guest's PID 1. Every step refuses (EPERM)
/// in any other process, so a host test that forgot its fake cannot step the host's
/// clock or rename the host.
pub struct GuestSys;

impl GuestSys {
    fn check() -> io::Result<()> {
        // SAFETY: getpid has no preconditions.
        if unsafe { libc::getpid() } == 1 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(libc::EPERM))
        }
    }
}

impl IdentitySys for GuestSys {
    fn reseed(&self, entropy: &[u8; ENTROPY_LEN]) -> io::Result<()> {
        Self::check().and_then(|()| crate::entropy::reseed(entropy))
    }
    fn step_realtime(&self, unix_time_ns: u64) -> io::Result<i128> {
        Self::check().and_then(|()| crate::system::step_realtime(unix_time_ns))
    }
    fn set_hostname(&self, name: &str) -> io::Result<()> {
        Self::check().and_then(|()| crate::system::set_hostname(name))
    }
    fn hostname(&self) -> io::Result<String> {
        crate::system::hostname()
    }
    fn write_machine_id(&self, id: &str) -> io::Result<()> {
        Self::check().and_then(|()| crate::system::write_machine_id(Path::new("/etc"), id))
    }
}

/// One `reidentify` at a time (they share the machine-id temporary).
static SERIAL: Mutex<()> = Mutex::new(());

pub fn reidentify(op: Op, req: Reidentify, ctx: &Context) {
    match apply(&req, ctx.identity_sys()) {
        Ok(done) => op.finish(Reply::Reidentified(done)),
        Err(e) => op.fail(e),
    }
}

/// Checks `req`, runs every step through `sys`, logs one line (never the entropy).
pub fn apply(req: &Reidentify, sys: &dyn IdentitySys) -> Result<Reidentified, ErrorReply> {
    let entropy = req.check().map_err(|m| invalid(m, None))?;
    let _serial = lock(&SERIAL);
    let mut errors = Vec::new();
    let mut failed = |step: &str, e: io::Error| errors.push(format!("{step}: {}", io_strerror(&e)));

    let reseeded = sys
        .reseed(&entropy)
        .map_err(|e| failed("reseed", e))
        .is_ok();
    let step = sys
        .step_realtime(req.unix_time_ns)
        .map_err(|e| failed("clock_settime", e))
        .ok();
    let _ = sys
        .set_hostname(&req.hostname)
        .map_err(|e| failed("sethostname", e));
    let hostname = sys
        .hostname()
        .map_err(|e| failed("uname", e))
        .unwrap_or_default();
    let machine_id_written = match sys.write_machine_id(&req.machine_id) {
        Ok(()) => true,
        // An initramfs without /etc, or a read-only root: nothing to replace.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EROFS | libc::ENOENT)) => false,
        Err(e) => {
            failed("machine-id", e);
            false
        }
    };
    let done = Reidentified {
        reseeded,
        clock_stepped: step.is_some(),
        hostname,
        machine_id_written,
        errors,
    };
    say!("{}", summary(&done, step));
    Ok(done)
}

/// The log line: `reidentified as NAME: rng reseeded, clock +1.234s, machine-id written`.
fn summary(done: &Reidentified, step: Option<i128>) -> String {
    let mut line = format!("reidentified as {}: ", done.hostname);
    line += if done.reseeded {
        "rng reseeded"
    } else {
        "rng NOT reseeded"
    };
    match step {
        Some(ns) => line += &format!(", clock {:+.3}s", ns as f64 / 1e9),
        None => line += ", clock not set",
    }
    line += if done.machine_id_written {
        ", machine-id written"
    } else {
        ", machine-id unchanged"
    };
    for e in &done.errors {
        line += &format!("; {e}");
    }
    line
}

#[cfg(test)]
mod tests;
