//! The files a QEMU sandbox keeps in its folder (besides [`Dir`]'s common ones:
//! `v.sock`, `vmm.log`, `console.log`). All of them live inside the folder, so the
//! processes that use them are recognised by their command lines.

use std::path::PathBuf;

use crate::state_dir::Dir;

/// QMP, QEMU's control socket.
pub fn qmp_sock(dir: &Dir) -> PathBuf {
    dir.path.join("qmp.sock")
}

/// The chardev socket behind the `kiln.agent` virtio-console port (one client: the relay).
pub fn agent_port(dir: &Dir) -> PathBuf {
    dir.path.join("agent.port")
}

pub fn relay_log(dir: &Dir) -> PathBuf {
    dir.path.join("relay.log")
}

pub fn relay_pid(dir: &Dir) -> PathBuf {
    dir.path.join("relay.pid")
}
