//! kiln-agent: the guest's PID 1, as a library so that the server can be tested on the
//! host (see `tests/`). The binary (`main.rs`) is the boot sequence.
//!
//! | module | owns |
//! | --- | --- |
//! | [`cmdline`] | the `kiln.*` kernel command-line directives |
//! | [`mounts`] | base filesystems and `kiln.mount=` |
//! | [`root`] | `kiln.root=` / `kiln.overlay=`: the overlay root and the switch to it |
//! | [`net`] | `kiln.net=`: eth0's address, route and MTU, /etc/resolv.conf |
//! | [`system`] | hostname, loopback, PID 1's OOM score, realtime clock, machine id |
//! | [`entropy`] | reseeding the kernel RNG with the host's entropy |
//! | [`steps`] | `kiln.report` / `kiln.cat` / `kiln.write` |
//! | [`port`] | the VMM control port (ready, power off) |
//! | [`actions`] | power off / reboot / panic |
//! | [`ctrl_alt_del`] | Ctrl-Alt-Del (SIGINT to PID 1) as a clean shutdown |
//! | [`server`] | the vsock server: connections, exec, files, metadata |

#[macro_use]
pub mod console;
pub mod actions;
pub mod cmdline;
pub mod ctrl_alt_del;
pub mod entropy;
pub mod mounts;
pub mod net;
pub mod port;
pub mod root;
pub mod server;
pub mod steps;
pub mod system;
