//! On/off settings read from the environment (`KILN_JAIL`, `KILN_NO_SECCOMP`): one
//! spelling for all of them, and a clear error for any other value.

use crate::error::{Error, Result};

/// `name`'s value: `1`/`on` is true, `0`/`off` false, unset or empty `default`; any
/// other value is an error naming what `1` means (`on_means`).
pub(crate) fn read(name: &str, default: bool, on_means: &str) -> Result<bool> {
    parse(
        name,
        &std::env::var(name).unwrap_or_default(),
        default,
        on_means,
    )
}

fn parse(name: &str, v: &str, default: bool, on_means: &str) -> Result<bool> {
    match v {
        "" => Ok(default),
        "1" | "on" => Ok(true),
        "0" | "off" => Ok(false),
        other => Err(Error::InvalidInput(format!(
            "{name}={other}: use 1 ({on_means}) or 0"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn values() {
        assert!(parse("X", "", true, "").unwrap());
        assert!(!parse("X", "", false, "").unwrap());
        assert!(parse("X", "on", false, "").unwrap());
        assert!(!parse("X", "0", true, "").unwrap());
        let e = parse("KILN_X", "yes", false, "do it")
            .unwrap_err()
            .to_string();
        assert!(e.contains("KILN_X=yes: use 1 (do it) or 0"), "{e}");
    }
}
