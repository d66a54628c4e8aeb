//! The agent over a virtio-console port named [`PORT_NAME`], for VMMs without
//! vsock (kiln's QEMU backend). The host side is kiln's relay, which turns the
//! multiplexed channel back into hybrid-vsock connections (see `mux`).
//!
//! Without udev the port is found through sysfs: `/sys/class/virtio-ports/*/name`
//! holds each port's name, and devtmpfs has made `/dev/<vportNpM>` for it. Ports
//! are announced by the host after the device probed, so the agent waits for the
//! name a while; a guest without a virtio-console device does not wait at all.
//!
//! Sessions: while the host end is not connected, a read of the port returns 0 and
//! a write blocks. Each session therefore starts with the `Listen` frame (which
//! waits for the host to connect) and ends when a read returns 0 or fails; then
//! every stream of the session is reset and the next session starts.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::mux::{serve_channel, ChannelWriter};
use super::Context;

/// The port's name (QEMU: `-device virtserialport,name=kiln.agent`).
pub const PORT_NAME: &str = "kiln.agent";
/// How long to wait for the port to be announced once a console device exists.
const PORT_WAIT: Duration = Duration::from_secs(30);
/// virtio device id of a console (`/sys/bus/virtio/devices/*/device`).
const VIRTIO_ID_CONSOLE: &str = "0x0003";
/// Read buffer: many frames per read syscall (every guest exit is costly).
const READ_BUF: usize = 256 << 10;

/// Whether the guest has a virtio-console device (under `sys`, normally `/sys`).
pub fn has_console_device(sys: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(sys.join("bus/virtio/devices")) else {
        return false;
    };
    rd.flatten().any(|d| {
        std::fs::read_to_string(d.path().join("device"))
            .is_ok_and(|id| id.trim() == VIRTIO_ID_CONSOLE)
    })
}

/// The device node of the port called `name`, if it is announced yet.
pub fn find_port(sys: &Path, dev: &Path, name: &str) -> Option<PathBuf> {
    let rd = std::fs::read_dir(sys.join("class/virtio-ports")).ok()?;
    rd.flatten().find_map(|p| {
        let n = std::fs::read_to_string(p.path().join("name")).ok()?;
        (n.trim_end_matches('\n') == name).then(|| dev.join(p.file_name()))
    })
}

/// Waits for the agent port; `None` without a console device or after [`PORT_WAIT`].
pub fn wait_port() -> Option<PathBuf> {
    let (sys, dev) = (Path::new("/sys"), Path::new("/dev"));
    if !has_console_device(sys) {
        return None;
    }
    let deadline = Instant::now() + PORT_WAIT;
    loop {
        if let Some(p) = find_port(sys, dev, PORT_NAME).filter(|p| p.exists()) {
            return Some(p);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Serves the port at `path` forever, a session at a time (see the module docs).
pub fn serve_port(path: &Path, ctx: Arc<Context>, verbose: bool) -> io::Result<()> {
    let port = open(path)?;
    let writer = Arc::new(ChannelWriter::new(port.try_clone()?));
    let mut reader = BufReader::with_capacity(READ_BUF, port);
    loop {
        let ended = serve_channel(&mut reader, &writer, &ctx);
        if verbose {
            match ended {
                Ok(()) => say!("{PORT_NAME}: the host disconnected"),
                Err(e) => say!("{PORT_NAME}: channel reset: {e}"),
            }
        }
        // Whatever was half read belongs to the old session.
        reader = BufReader::with_capacity(READ_BUF, reader.into_inner());
        // An error that is not a disconnect would repeat at once: slow down.
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
}

/// Starts [`serve_port`] on its own thread when the guest has the port; whether it
/// did. The thread waits for the port (announced asynchronously) before serving.
pub fn start(ctx: Arc<Context>, verbose: bool) -> bool {
    if !has_console_device(Path::new("/sys")) {
        return false;
    }
    let spawned =
        std::thread::Builder::new()
            .name("serial".into())
            .spawn(move || match wait_port() {
                Some(p) => {
                    if verbose {
                        say!("{PORT_NAME}: serving on {}", p.display());
                    }
                    if let Err(e) = serve_port(&p, ctx, verbose) {
                        say!(
                            "{PORT_NAME}: {}: {}",
                            p.display(),
                            crate::console::io_strerror(&e)
                        );
                    }
                }
                None => say!("{PORT_NAME}: no such virtio-console port; not serving on it"),
            });
    spawned.is_ok()
}
