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

/// Status and body of one call through the router.
pub(crate) fn call(vmm: &Mutex<Vmm>, method: &str, path: &str, body: &str) -> (u16, String) {
    let req = crate::api::http::Request {
        method: method.into(),
        path: path.into(),
        body: body.into(),
        keep_alive: true,
    };
    let r = crate::api::routes::handle(vmm, &req);
    (r.status, r.body.unwrap_or_default())
}
