//! What the API's route tests share: a VMM that is not booted, behind the lock the
//! server holds.

use std::sync::mpsc::channel;
use std::sync::Mutex;

use crate::config::HostFacts;
use crate::vmm::{ConsoleTarget, Vmm};

/// A fresh, unconfigured VMM with its console off.
pub(crate) fn vmm() -> Mutex<Vmm> {
    let (tx, _rx) = channel();
    Mutex::new(Vmm::new(
        "t".into(),
        ConsoleTarget::Off,
        HostFacts::default(),
        tx,
    ))
}
