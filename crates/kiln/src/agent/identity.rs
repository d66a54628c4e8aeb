//! Clone safety: `reidentify`, the first request to a restored or forked guest.

use std::time::{SystemTime, UNIX_EPOCH};

use kiln_proto::identity::{encode_hex, valid_hostname, ENTROPY_LEN, HOSTNAME_MAX};
use kiln_proto::{Reidentified, Reidentify, Reply, Request};

use super::{unexpected, AgentAddr};
use crate::error::{Error, Result};

impl AgentAddr {
    /// Makes a guest that continues from shared memory (a restore, a fork child) its
    /// own machine: sends 64 fresh bytes from the host's getrandom (credited to the
    /// guest kernel's pool, then a CRNG reseed), the host's realtime clock, `hostname`
    /// and a fresh random machine id. Send it before any other request; sending it
    /// again is harmless.
    ///
    /// `Ok` means the agent ran every step; the reply says which ones took effect
    /// (`reseeded`, `clock_stepped`, ..., with reasons in `errors`). A guest that was
    /// not reseeded shares its RNG output with its siblings: the caller decides
    /// whether to use it.
    pub fn reidentify(&self, hostname: &str) -> Result<Reidentified> {
        if !valid_hostname(hostname) {
            return Err(Error::InvalidInput(format!(
                "hostname {hostname:?}: use 1-{HOSTNAME_MAX} letters, digits, '-' and '.'"
            )));
        }
        let mut entropy = [0u8; ENTROPY_LEN];
        host_random(&mut entropy)?;
        let mut machine_id = [0u8; 16];
        host_random(&mut machine_id)?;
        // Shaped as a v4 UUID, as systemd makes them (and never all zero).
        machine_id[6] = (machine_id[6] & 0x0f) | 0x40;
        machine_id[8] = (machine_id[8] & 0x3f) | 0x80;
        let unix_time_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| Error::Io(std::io::Error::other(format!("host clock: {e}"))))?
            .as_nanos() as u64;
        let req = Request::Reidentify(Reidentify {
            entropy: encode_hex(&entropy),
            unix_time_ns,
            hostname: hostname.into(),
            machine_id: encode_hex(&machine_id),
        });
        let done = match self.call(&req)? {
            Reply::Reidentified(done) => done,
            r => return Err(unexpected("reidentify", r)),
        };
        if done.reseeded && done.clock_stepped && done.errors.is_empty() {
            tracing::debug!(sandbox = %self.sandbox, hostname = %done.hostname, "reidentified");
        } else {
            tracing::warn!(
                sandbox = %self.sandbox,
                reseeded = done.reseeded,
                clock_stepped = done.clock_stepped,
                errors = ?done.errors,
                "reidentify was incomplete"
            );
        }
        Ok(done)
    }
}

/// Fills `buf` from getrandom(2) (the kernel CRNG, blocking only before it is seeded).
fn host_random(buf: &mut [u8]) -> Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: writes at most rest.len() bytes into the live slice `rest`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::Io(std::io::Error::new(
                e.kind(),
                format!("getrandom: {e}"),
            )));
        }
        filled += n as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
