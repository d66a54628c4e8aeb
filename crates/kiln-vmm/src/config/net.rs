//! `PUT /network-interfaces/{iface_id}` and the config file's `network-interfaces`: one
//! virtio-net per entry, on an existing host TAP (Firecracker's fields).

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::devices::rate_limiter::RateLimiterConfig;
use crate::devices::virtio::net::tap::{self, Tap};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterface {
    pub iface_id: String,
    /// The TAP's name in the VMM's network namespace.
    pub host_dev_name: String,
    /// `aa:bb:cc:dd:ee:ff`; absent: the guest picks a random one (as in Firecracker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiterConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiterConfig>,
}

/// Parses `aa:bb:cc:dd:ee:ff` (hex, either case) into a unicast MAC.
pub fn parse_mac(s: &str) -> Result<[u8; 6], ConfigError> {
    let bad = || {
        ConfigError::new(format!(
            "guest_mac '{s}' is not a unicast MAC address; write six hex bytes separated by \
             ':' with the lowest bit of the first byte clear (e.g. \"06:00:ac:10:00:02\")"
        ))
    };
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next().ok_or_else(bad)?;
        if p.len() != 2 {
            return Err(bad());
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() || mac[0] & 1 == 1 || mac == [0; 6] {
        return Err(bad());
    }
    Ok(mac)
}

impl NetworkInterface {
    /// Checks the fields without touching the host.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let id_ok = !self.iface_id.is_empty()
            && self.iface_id.len() <= 64
            && self
                .iface_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !id_ok {
            return Err(ConfigError::new(format!(
                "iface_id '{}' is invalid; use 1-64 letters, digits, '_' or '-'",
                self.iface_id
            )));
        }
        tap::check_name(&self.host_dev_name).map_err(|e| ConfigError::new(e.to_string()))?;
        self.mac()?;
        for (what, l) in [
            ("rx_rate_limiter", &self.rx_rate_limiter),
            ("tx_rate_limiter", &self.tx_rate_limiter),
        ] {
            if let Some(l) = l {
                l.validate(what).map_err(ConfigError::new)?;
            }
        }
        Ok(())
    }

    /// Opens the TAP once and closes it again: a missing, busy or forbidden TAP is
    /// refused when the interface is configured, not at InstanceStart.
    pub fn check_host(&self) -> Result<(), ConfigError> {
        Tap::open(&self.host_dev_name)
            .map(drop)
            .map_err(|e| ConfigError::new(format!("network interface '{}': {e}", self.iface_id)))
    }

    /// The parsed `guest_mac`.
    pub fn mac(&self) -> Result<Option<[u8; 6]>, ConfigError> {
        self.guest_mac.as_deref().map(parse_mac).transpose()
    }
}

/// Interface ids, TAP names and MACs must each be unique.
pub fn check_unique(nets: &[NetworkInterface]) -> Result<(), ConfigError> {
    for (i, a) in nets.iter().enumerate() {
        for b in &nets[..i] {
            if a.iface_id == b.iface_id {
                return Err(ConfigError::new(format!(
                    "iface_id '{}' is used twice; interface ids must be unique",
                    a.iface_id
                )));
            }
            if a.host_dev_name == b.host_dev_name {
                return Err(ConfigError::new(format!(
                    "host_dev_name '{}' is used by interfaces '{}' and '{}'; give each \
                     interface its own TAP",
                    a.host_dev_name, b.iface_id, a.iface_id
                )));
            }
            if a.guest_mac.is_some() && a.mac().ok() == b.mac().ok() {
                return Err(ConfigError::new(format!(
                    "guest_mac {} is used by interfaces '{}' and '{}'; give each its own MAC",
                    a.guest_mac.as_deref().unwrap_or_default(),
                    b.iface_id,
                    a.iface_id
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(id: &str, tap: &str, mac: Option<&str>) -> NetworkInterface {
        NetworkInterface {
            iface_id: id.into(),
            host_dev_name: tap.into(),
            guest_mac: mac.map(Into::into),
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        }
    }

    #[test]
    fn macs_are_parsed_and_bad_ones_say_how_to_write_them() {
        assert_eq!(
            parse_mac("06:00:AC:10:00:02").unwrap(),
            [6, 0, 0xac, 0x10, 0, 2]
        );
        for bad in [
            "06:00:ac:10:00",
            "06:00:ac:10:00:02:03",
            "06-00-ac-10-00-02",
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "6:0:ac:10:0:2",
            "zz:00:ac:10:00:02",
        ] {
            let e = parse_mac(bad).unwrap_err().to_string();
            assert!(e.contains("six hex bytes"), "{bad}: {e}");
        }
    }

    #[test]
    fn names_with_path_separators_and_bad_ids_are_refused() {
        for name in [
            "",
            "../tap0",
            "a/b",
            "tap 0",
            "averyveryverylongname",
            "..",
            "tap:1",
        ] {
            let e = iface("eth0", name, None)
                .validate()
                .unwrap_err()
                .to_string();
            assert!(e.contains("not a valid interface name"), "{name}: {e}");
        }
        let e = iface("eth/0", "tap0", None)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("iface_id"), "{e}");
        iface("eth0", "tap0", Some("06:00:00:00:00:01"))
            .validate()
            .unwrap();
    }

    #[test]
    fn duplicates_are_refused_by_name() {
        let e = check_unique(&[iface("a", "t0", None), iface("a", "t1", None)]).unwrap_err();
        assert!(e.to_string().contains("iface_id 'a' is used twice"), "{e}");
        let e = check_unique(&[iface("a", "t0", None), iface("b", "t0", None)]).unwrap_err();
        assert!(e.to_string().contains("host_dev_name 't0'"), "{e}");
        let m = Some("06:00:00:00:00:01");
        let e = check_unique(&[iface("a", "t0", m), iface("b", "t1", m)]).unwrap_err();
        assert!(e.to_string().contains("guest_mac"), "{e}");
        check_unique(&[iface("a", "t0", None), iface("b", "t1", None)]).unwrap();
    }

    #[test]
    fn a_missing_tap_is_refused_when_configured() {
        let e = iface("eth0", "kilnnone0", None)
            .check_host()
            .unwrap_err()
            .to_string();
        assert!(e.contains("no network interface 'kilnnone0'"), "{e}");
        assert!(e.contains("ip tuntap add"), "{e}");
    }
}
