//! A sandbox's published ports (`kiln create -p`): started at the end of a create,
//! stopped with the sandbox, restarted or cleaned by reconcile. The serving is
//! `crate::ports` (a detached `kiln-publish` process per sandbox).

use super::{Sandbox, SandboxBuilder, State};
use crate::error::{Error, Result};
use crate::ports::{self, Dial, PortError, PortSpec};
use crate::state_dir::{store, Dir};
use crate::store::SandboxRow;

impl From<PortError> for Error {
    fn from(e: PortError) -> Error {
        match e {
            PortError::BadSpec(m) => Error::InvalidInput(m),
            PortError::InUse { addr } => Error::PortInUse { addr },
            e => Error::Ports(e.to_string()),
        }
    }
}

impl SandboxBuilder {
    /// Publishes a port: connections to the spec's host address reach the guest port
    /// (repeatable; see [`crate::ports`]). A busy host port fails the create.
    pub fn port(mut self, spec: PortSpec) -> Self {
        self.ports.push(spec);
        self
    }
}

/// How a sandbox's published ports reach the guest: from inside its network namespace
/// when it has one (a TCP client of the guest's address), else over the agent's vsock.
fn dial_for(id: &str, dir: &Dir) -> Dial {
    match crate::net::Network::find(&super::network::net_id(dir)) {
        Ok(Some(n)) => Dial::Netns {
            netns: n.netns_path(),
            guest: n.guest_addr(),
        },
        _ => Dial::Agent(crate::agent::AgentAddr::new(dir.vsock(), id)),
    }
}

impl Sandbox {
    /// The published ports, as bound (empty: none).
    pub fn ports(&self) -> Result<Vec<PortSpec>> {
        Ok(store()?
            .ports(&self.id)?
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect())
    }

    /// Starts the publisher for `specs` and records the ports as bound.
    pub(super) fn publish_ports(&self, specs: &[PortSpec]) -> Result<()> {
        if specs.is_empty() {
            return Ok(());
        }
        let dial = dial_for(&self.id, &self.dir);
        let p = ports::publish(&self.dir.path, &self.id, self.record.pid, specs, &dial)?;
        if let Err(e) = store()?.set_ports(&self.id, &p.ports) {
            ports::unpublish(&self.dir.path);
            return Err(e.into());
        }
        Ok(())
    }

    /// Stops the publisher, if any (its listeners close).
    pub(super) fn unpublish_ports(&self) {
        ports::unpublish(&self.dir.path);
    }
}

/// Reconcile (not for a row being created or stopped): a running sandbox with ports whose publisher is gone gets a new one (on
/// the same host ports); any other sandbox's publisher is stopped. Whether it did
/// something.
pub(super) fn reconcile_ports(row: &SandboxRow, dir: &Dir, alive: bool) -> bool {
    // A create or stop in progress owns its publisher (a dead creator's VMM is killed,
    // its publisher exits with it, and the next reconcile finds the row failed).
    if matches!(row.state, State::Creating | State::Stopping) {
        return false;
    }
    let up = alive && matches!(row.state, State::Running | State::Paused);
    let wanted = store()
        .and_then(|s| Ok(s.ports(&row.id)?))
        .unwrap_or_default();
    if !up || wanted.is_empty() {
        return ports::unpublish(&dir.path);
    }
    if ports::running(&dir.path).is_some() {
        return false;
    }
    ports::unpublish(&dir.path); // an orphan without its record
    let specs: Vec<PortSpec> = wanted.iter().filter_map(|p| p.parse().ok()).collect();
    let pid = row.pid.unwrap_or(0);
    match ports::publish(&dir.path, &row.id, pid, &specs, &dial_for(&row.id, dir)) {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!("sandbox {}: republishing its ports: {e}", row.id);
            false
        }
    }
}
