//! Saving and restoring device state for snapshots.
//!
//! Every stateful device implements [`Persist`]: its [`Persist::State`] is what a snapshot
//! keeps of it (serde, stored in `state.json` as readable JSON) and [`Persist::Error`] says
//! why a saved state was refused. `save` and `restore` sit next to each other in the
//! device's own file, so a field added to one is seen missing in the other.
//!
//! A restore goes onto a freshly built device of the same configuration and trusts
//! nothing in the state: it comes from a file on disk and describes what a hostile guest
//! could have driven the device into. Every field is checked against what the device
//! itself could have reached before anything is applied; on error the device is left
//! as it was before the call (or reset, where the device says so).
//!
//! The KVM parts (vCPUs, the VM's irqchip, PIT and clock) have the same pair without the
//! trait, since capturing them needs more than the object itself and can fail: the
//! `VcpuState` and `VmState` of the `vstate` module.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A device part whose state a snapshot keeps.
pub trait Persist {
    /// What a snapshot keeps of the part.
    type State: Serialize + DeserializeOwned;
    /// Why a saved state was refused.
    type Error: std::error::Error;

    /// The part's state, for a snapshot. Call with the VM paused.
    fn save(&self) -> Self::State;

    /// Applies a saved (untrusted) state; see the module docs.
    fn restore(&mut self, state: &Self::State) -> Result<(), Self::Error>;
}
