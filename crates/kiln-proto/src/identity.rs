//! Clone safety: the `reidentify` request and its reply, and the rules both sides check.
//!
//! A guest restored from a snapshot, or forked, continues from memory it shares with its
//! siblings: the same kernel RNG state, the same (stale) clock, the same hostname. Right
//! after a restore the host sends [`Reidentify`] before anything else: fresh entropy
//! (credited and followed by a CRNG reseed), the host's realtime clock, the new hostname
//! and a new machine id. The agent answers [`Reidentified`], which says what was actually
//! done; a step that failed is `false` and its reason is in `errors`.

use serde::{Deserialize, Serialize};

/// Bytes of entropy in a [`Reidentify`] (sent as twice as many hex digits).
pub const ENTROPY_LEN: usize = 64;
/// Longest hostname Linux accepts (HOST_NAME_MAX).
pub const HOSTNAME_MAX: usize = 64;
/// Length of a machine id: 32 lower-case hex digits (machine-id(5)).
pub const MACHINE_ID_LEN: usize = 32;

/// Host → agent, first thing after a restore or fork. Safe to send more than once.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reidentify {
    /// [`ENTROPY_LEN`] fresh random bytes from the host, hex.
    pub entropy: String,
    /// The host's CLOCK_REALTIME when it sent the request, ns since the epoch.
    pub unix_time_ns: u64,
    /// The new hostname (see [`valid_hostname`]).
    pub hostname: String,
    /// The new `/etc/machine-id` (see [`valid_machine_id`]).
    pub machine_id: String,
}

/// Agent → host: what `reidentify` did. The request succeeds even if a step failed;
/// the flags are true only for steps that fully happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reidentified {
    /// The entropy was added and credited (RNDADDENTROPY) *and* the kernel's CRNG was
    /// reseeded from it (RNDRESEEDCRNG).
    pub reseeded: bool,
    /// CLOCK_REALTIME was set to the request's time.
    pub clock_stepped: bool,
    /// The guest's hostname after the request, read back from the kernel.
    pub hostname: String,
    /// `/etc/machine-id` was replaced. False without an error when `/etc` is read-only
    /// or missing (an initramfs guest, a read-only root).
    pub machine_id_written: bool,
    /// Why a step failed, one line each (e.g. `"RNDRESEEDCRNG: Operation not permitted"`).
    #[serde(default)]
    pub errors: Vec<String>,
}

impl std::fmt::Debug for Reidentify {
    /// The entropy is never printed: it seeds the guest's RNG.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reidentify")
            .field(
                "entropy",
                &format_args!("<{} hex digits>", self.entropy.len()),
            )
            .field("unix_time_ns", &self.unix_time_ns)
            .field("hostname", &self.hostname)
            .field("machine_id", &self.machine_id)
            .finish()
    }
}

impl Reidentify {
    /// Checks every field; returns the decoded entropy, or what is wrong (the message
    /// never contains the entropy).
    pub fn check(&self) -> Result<[u8; ENTROPY_LEN], String> {
        let entropy = decode_hex(&self.entropy)
            .and_then(|b| <[u8; ENTROPY_LEN]>::try_from(b).ok())
            .ok_or_else(|| {
                format!(
                    "entropy must be {} hex digits ({ENTROPY_LEN} bytes)",
                    2 * ENTROPY_LEN
                )
            })?;
        if !valid_hostname(&self.hostname) {
            return Err(format!(
                "bad hostname {:?}: use 1-{HOSTNAME_MAX} letters, digits, '-' and '.'",
                self.hostname
            ));
        }
        if !valid_machine_id(&self.machine_id) {
            return Err(format!(
                "bad machine id {:?}: use {MACHINE_ID_LEN} lower-case hex digits, not all 0",
                self.machine_id
            ));
        }
        Ok(entropy)
    }
}

/// A hostname: 1 to [`HOSTNAME_MAX`] ASCII letters, digits, `-` and `.`.
pub fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= HOSTNAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// A machine id: [`MACHINE_ID_LEN`] lower-case hex digits, not all zero (machine-id(5)).
pub fn valid_machine_id(id: &str) -> bool {
    id.len() == MACHINE_ID_LEN
        && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && id.bytes().any(|b| b != b'0')
}

/// Lower-case hex of `bytes`.
pub fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 * bytes.len());
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Bytes from hex (either case); `None` for an odd length or a non-hex digit.
pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    fn digit(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> Reidentify {
        Reidentify {
            entropy: encode_hex(&[0xA5; ENTROPY_LEN]),
            unix_time_ns: 1,
            hostname: "sb-1.example".into(),
            machine_id: "0123456789abcdef0123456789abcdef".into(),
        }
    }

    #[test]
    fn hex_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode_hex(&encode_hex(&all)).unwrap(), all);
        assert_eq!(encode_hex(&[0x0f, 0xa0]), "0fa0");
        assert_eq!(decode_hex("0FA0").unwrap(), [0x0f, 0xa0]);
        for bad in ["0", "0g", "zz", "é0", " 00"] {
            assert_eq!(decode_hex(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn check_accepts_a_good_request_and_names_the_bad_field() {
        assert_eq!(req().check().unwrap(), [0xA5; ENTROPY_LEN]);
        let bad = |f: fn(&mut Reidentify), what: &str| {
            let mut r = req();
            f(&mut r);
            let e = r.check().unwrap_err();
            assert!(e.contains(what), "{e}");
            assert!(!e.contains("a5a5"), "entropy leaked: {e}");
        };
        bad(|r| r.entropy.truncate(126), "entropy");
        bad(|r| r.entropy.push_str("00"), "entropy");
        bad(|r| r.entropy.replace_range(0..1, "x"), "entropy");
        bad(|r| r.entropy.clear(), "entropy");
        bad(|r| r.hostname = "a_b".into(), "hostname");
        bad(|r| r.hostname = "x".repeat(65), "hostname");
        bad(|r| r.hostname.clear(), "hostname");
        bad(|r| r.machine_id.make_ascii_uppercase(), "machine id");
        bad(|r| r.machine_id.push('0'), "machine id");
        bad(|r| r.machine_id = "0".repeat(32), "machine id");
    }

    #[test]
    fn hostnames() {
        for ok in ["kiln", "sb-42.example", "A1", &"x".repeat(64)] {
            assert!(valid_hostname(ok), "{ok}");
        }
        for bad in ["", "a b", "a_b", "a/b", "é", "a\0", &"x".repeat(65)] {
            assert!(!valid_hostname(bad), "{bad:?}");
        }
    }
}
