//! Which network a sandbox has (`--net`): a choice recorded with the sandbox and its
//! snapshots, mapped to an [`EgressPolicy`] when its network is made.

use serde::{Deserialize, Serialize};

use super::config::EgressPolicy;

/// Which network a sandbox has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetMode {
    /// No NIC at all (`--net none`); the agent is still reached over vsock.
    #[default]
    None,
    /// A NIC in a namespace of its own, with no egress: every connection the guest
    /// starts is dropped (`--net default`, what root gets when it asks for nothing).
    Deny,
    /// A NIC whose traffic all leaves, NATed, private ranges included (`--net
    /// allow-all`): for tests and explicit opt-in until egress rules exist.
    AllowAll,
}

impl NetMode {
    /// Parses `none`, `default` (or `deny`) and `allow-all`.
    pub fn parse(s: &str) -> Result<NetMode, String> {
        match s {
            "none" => Ok(NetMode::None),
            "default" | "deny" => Ok(NetMode::Deny),
            "allow-all" => Ok(NetMode::AllowAll),
            other => Err(format!(
                "--net {other:?}: use none (no NIC), default (a NIC, no egress) or allow-all \
                 (a NIC, all egress)"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            NetMode::None => "none",
            NetMode::Deny => "default",
            NetMode::AllowAll => "allow-all",
        }
    }

    /// The egress policy of its network; `None`: no network.
    pub fn policy(self) -> Option<EgressPolicy> {
        match self {
            NetMode::None => None,
            NetMode::Deny => Some(EgressPolicy::DenyAll),
            NetMode::AllowAll => Some(EgressPolicy::AllowAll),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_name_themselves() {
        for m in [NetMode::None, NetMode::Deny, NetMode::AllowAll] {
            assert_eq!(NetMode::parse(m.name()).unwrap(), m);
        }
        assert_eq!(NetMode::parse("deny").unwrap(), NetMode::Deny);
        let e = NetMode::parse("bridge").unwrap_err().to_string();
        assert!(e.contains("use none"), "{e}");
    }
}
