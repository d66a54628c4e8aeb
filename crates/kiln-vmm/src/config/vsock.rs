//! `PUT /vsock`: the virtio-vsock device and the unix socket its host side listens on.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Longest unix socket path (`sun_path` holds 108 bytes with the NUL). Guest-initiated
/// connections to port P need `<uds_path>_<P>` to fit too, or the guest gets a reset.
pub const MAX_UDS_PATH: usize = 107;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VsockConfig {
    /// Accepted for compatibility (Firecracker's deprecated field) and ignored.
    #[serde(default, skip_serializing)]
    pub vsock_id: Option<String>,
    /// The guest's context id (3 or more).
    pub guest_cid: u32,
    /// The unix socket kiln-vmm creates and listens on for host-initiated connections.
    pub uds_path: String,
}

impl VsockConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.guest_cid < 3 || self.guest_cid == u32::MAX {
            return Err(ConfigError::new(format!(
                "guest_cid {} is reserved; use 3 to 4294967294 (0-2 are the hypervisor, \
                 local and host CIDs)",
                self.guest_cid
            )));
        }
        let path = Path::new(&self.uds_path);
        if self.uds_path.is_empty() {
            return Err(ConfigError::new("uds_path is empty; give a socket path"));
        }
        if self.uds_path.len() > MAX_UDS_PATH {
            return Err(ConfigError::new(format!(
                "uds_path '{}' is {} bytes; unix socket paths allow at most {MAX_UDS_PATH}",
                self.uds_path,
                self.uds_path.len()
            )));
        }
        if path.symlink_metadata().is_ok() {
            return Err(ConfigError::new(format!(
                "vsock uds_path '{}' already exists; kiln-vmm creates the socket itself: \
                 remove the file (is another VM using it?) or choose another path",
                self.uds_path
            )));
        }
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if !parent.is_dir() {
            return Err(ConfigError::new(format!(
                "the directory of vsock uds_path '{}' ({}) does not exist; create it first",
                self.uds_path,
                parent.display()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_json;

    fn cfg(cid: u32, path: &str) -> VsockConfig {
        VsockConfig {
            vsock_id: None,
            guest_cid: cid,
            uds_path: path.into(),
        }
    }

    #[test]
    fn parses_firecracker_bodies() {
        let v: VsockConfig =
            parse_json(r#"{"vsock_id": "vsock0", "guest_cid": 3, "uds_path": "/tmp/v.sock"}"#)
                .unwrap();
        assert_eq!((v.guest_cid, v.uds_path.as_str()), (3, "/tmp/v.sock"));
        // vsock_id is not echoed back.
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, r#"{"guest_cid":3,"uds_path":"/tmp/v.sock"}"#);
        let e = parse_json::<VsockConfig>(r#"{"guest_cid": 3, "uds_path": "x", "cid": 4}"#);
        assert!(e.unwrap_err().0.contains("unknown field"));
        assert!(parse_json::<VsockConfig>(r#"{"guest_cid": -1, "uds_path": "x"}"#).is_err());
    }

    #[test]
    fn validation_says_what_to_fix() {
        let dir = std::env::temp_dir();
        let free = dir.join(format!("kiln-vsock-cfg-{}", std::process::id()));
        let free = free.to_str().unwrap();
        assert!(cfg(3, free).validate().is_ok());
        for cid in [0, 1, 2, u32::MAX] {
            let e = cfg(cid, free).validate().unwrap_err().0;
            assert!(e.contains("guest_cid"), "{e}");
        }
        let taken = dir.join(format!("kiln-vsock-cfg-taken-{}", std::process::id()));
        std::fs::write(&taken, b"").unwrap();
        let e = cfg(3, taken.to_str().unwrap()).validate().unwrap_err().0;
        assert!(e.contains("already exists"), "{e}");
        std::fs::remove_file(&taken).unwrap();
        let e = cfg(3, "/nonexistent/kiln/v.sock").validate().unwrap_err().0;
        assert!(e.contains("does not exist"), "{e}");
        assert!(cfg(3, "").validate().is_err());
        let long = format!("/tmp/{}", "x".repeat(MAX_UDS_PATH));
        assert!(cfg(3, &long).validate().unwrap_err().0.contains("at most"));
    }
}
