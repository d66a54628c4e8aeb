//! Launching and driving one `kiln-vmm` process through its Firecracker-style API.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::fc::{ApiError, FcClient};
use crate::paths;
use crate::process::{kill_if_running, wait_or_kill};
pub use kiln_vmm::config::boot_source::DEFAULT_BOOT_ARGS;

/// A block device for the guest.
#[derive(Debug, Clone)]
pub struct DriveSpec {
    pub id: String,
    pub path: PathBuf,
    pub read_only: bool,
    pub root: bool,
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub boot_args: Option<String>,
    pub cpus: u8,
    pub memory_mib: u64,
    pub drives: Vec<DriveSpec>,
    /// The vsock device's host socket (guest CID 3), if any.
    pub vsock: Option<PathBuf>,
    /// A network interface on a TAP, if any.
    pub nic: Option<NicSpec>,
    /// The network namespace (a name under /run/netns) the VMM runs in: where its TAP is.
    pub netns: Option<String>,
}

/// A network interface on a TAP: Firecracker's `PUT /network-interfaces/{iface_id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicSpec {
    pub iface_id: String,
    pub host_dev_name: String,
    /// `aa:bb:cc:dd:ee:ff`.
    pub guest_mac: String,
}

impl GuestSpec {
    /// The project's kernel and minimal initramfs, 1 vCPU, 128 MiB.
    pub fn minimal() -> Self {
        Self {
            kernel: paths::default_kernel(),
            initrd: Some(paths::default_initramfs()),
            boot_args: None,
            cpus: 1,
            memory_mib: 128,
            drives: Vec::new(),
            vsock: None,
            nic: None,
            netns: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("cannot start {bin}: {source}; build it with `cargo build --release` or set KILN_VMM")]
    Spawn {
        bin: PathBuf,
        source: std::io::Error,
    },
    #[error("kiln-vmm exited before {what} ({status}): {stderr}")]
    Exited {
        what: &'static str,
        status: String,
        stderr: String,
    },
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, &'static str),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A running `kiln-vmm`. Dropping it kills the process and removes its socket.
pub struct VmmProcess {
    child: Child,
    pub sock: PathBuf,
    pub client: FcClient,
    pub spawned_at: Instant,
    boot_rx: Receiver<Duration>,
    stderr_tail: Arc<Mutex<Vec<String>>>,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

impl VmmProcess {
    /// Spawns `kiln-vmm --api-sock <runtime>/<id>.sock`. `console` is `off`, `stdout`
    /// or a file path. VMM stderr lines are forwarded to ours when `echo` is set.
    pub fn spawn(console: &str, echo: bool) -> Result<Self, VmmError> {
        let id = format!(
            "vm-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let sock = paths::runtime_dir()?.join(format!("{id}.sock"));
        let _ = std::fs::remove_file(&sock);
        let bin = paths::vmm_binary();
        let spawned_at = Instant::now();
        let mut child = Command::new(&bin)
            .args(["--api-sock".as_ref(), sock.as_os_str()])
            .args(["--id", &id, "--console", console])
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| VmmError::Spawn { bin, source })?;
        let (tx, boot_rx) = channel();
        let stderr_tail = Arc::new(Mutex::new(Vec::new()));
        let tail = stderr_tail.clone();
        let stderr = child.stderr.take().expect("stderr is piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(t) = parse_boot_time(&line) {
                    let _ = tx.send(t);
                    continue;
                }
                if echo {
                    eprintln!("{line}");
                }
                if let Ok(mut t) = tail.lock() {
                    t.push(line);
                    if t.len() > 50 {
                        t.remove(0);
                    }
                }
            }
        });
        Ok(Self {
            child,
            client: FcClient::new(&sock),
            sock,
            spawned_at,
            boot_rx,
            stderr_tail,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The VMM's stderr lines so far (the boot-time line excluded).
    pub fn stderr(&self) -> String {
        self.stderr_tail
            .lock()
            .map(|t| t.join("\n"))
            .unwrap_or_default()
    }

    fn exited(&mut self, what: &'static str) -> Option<VmmError> {
        let status = self.child.try_wait().ok().flatten()?;
        // Give the reader thread a moment to collect the last lines.
        std::thread::sleep(Duration::from_millis(20));
        Some(VmmError::Exited {
            what,
            status: status.to_string(),
            stderr: self.stderr(),
        })
    }

    /// Waits until the API answers; returns the time since spawn.
    pub fn wait_api(&mut self, timeout: Duration) -> Result<Duration, VmmError> {
        let deadline = self.spawned_at + timeout;
        loop {
            if self.client.get("/").is_ok() {
                return Ok(self.spawned_at.elapsed());
            }
            if let Some(e) = self.exited("its API socket was ready") {
                return Err(e);
            }
            if Instant::now() > deadline {
                return Err(VmmError::Timeout(timeout, "the VMM API socket"));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// PUTs machine config, boot source, drives and vsock.
    pub fn configure(&self, g: &GuestSpec) -> Result<(), VmmError> {
        configure(&self.client, g)
    }

    /// Spawns a VMM, waits for its API (up to `api_timeout`), configures `g` and sends
    /// InstanceStart. Returns the process and the time from spawn to API ready.
    pub fn boot(
        g: &GuestSpec,
        console: &str,
        echo: bool,
        api_timeout: Duration,
    ) -> Result<(Self, Duration), VmmError> {
        let mut vm = Self::spawn(console, echo)?;
        let api = vm.wait_api(api_timeout)?;
        vm.configure(g)?;
        vm.instance_start()?;
        Ok((vm, api))
    }

    pub fn instance_start(&self) -> Result<(), VmmError> {
        Ok(self.client.action("InstanceStart")?)
    }

    /// Waits for the guest agent's ready signal; returns the VMM-measured time from
    /// InstanceStart.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Duration, VmmError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.boot_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(t) => return Ok(t),
                Err(RecvTimeoutError::Disconnected) | Err(RecvTimeoutError::Timeout) => {
                    if let Some(e) = self.exited("the guest was ready") {
                        return Err(e);
                    }
                    if Instant::now() > deadline {
                        return Err(VmmError::Timeout(timeout, "the guest's ready signal"));
                    }
                }
            }
        }
    }

    /// Waits for the process to exit (killing it after `timeout`).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, VmmError> {
        wait_or_kill(&mut self.child, timeout)?.ok_or(VmmError::Timeout(timeout, "the VMM to exit"))
    }
}

impl Drop for VmmProcess {
    fn drop(&mut self) {
        kill_if_running(&mut self.child);
        let _ = std::fs::remove_file(&self.sock);
    }
}

/// `boot_args` (default [`DEFAULT_BOOT_ARGS`]) for a VMM that exits on a guest reboot
/// but has no power-off device: `reboot=<how>` (`k`: the i8042 reset, `t`: a triple
/// fault) and `kiln.poweroff=reboot` (the agent powers off by rebooting), replacing any
/// given.
pub fn poweroff_by_reboot(boot_args: Option<&str>, how: &str) -> String {
    let base = boot_args.unwrap_or(DEFAULT_BOOT_ARGS);
    let mut out: Vec<String> = base
        .split_whitespace()
        .filter(|p| !p.starts_with("reboot=") && !p.starts_with("kiln.poweroff="))
        .map(str::to_string)
        .collect();
    out.extend([format!("reboot={how}"), "kiln.poweroff=reboot".to_string()]);
    out.join(" ")
}

/// PUTs machine config, boot source, drives, vsock and the network interface through `c`.
pub fn configure(c: &FcClient, g: &GuestSpec) -> Result<(), VmmError> {
    c.put(
        "/machine-config",
        &json!({"vcpu_count": g.cpus, "mem_size_mib": g.memory_mib, "smt": false}),
    )?;
    let mut boot = json!({"kernel_image_path": g.kernel});
    if let Some(i) = &g.initrd {
        boot["initrd_path"] = json!(i);
    }
    if let Some(a) = &g.boot_args {
        boot["boot_args"] = json!(a);
    }
    c.put("/boot-source", &boot)?;
    for d in &g.drives {
        c.put(
            &format!("/drives/{}", d.id),
            &json!({"drive_id": d.id, "path_on_host": d.path,
                    "is_root_device": d.root, "is_read_only": d.read_only}),
        )?;
    }
    if let Some(uds) = &g.vsock {
        c.put("/vsock", &json!({"guest_cid": 3, "uds_path": uds}))?;
    }
    if let Some(n) = &g.nic {
        c.put(
            &format!("/network-interfaces/{}", n.iface_id),
            &json!({"iface_id": n.iface_id, "host_dev_name": n.host_dev_name,
                    "guest_mac": n.guest_mac}),
        )?;
    }
    Ok(())
}

/// Parses Firecracker's `Guest-boot-time = N us M ms` line.
pub fn parse_boot_time(line: &str) -> Option<Duration> {
    let rest = line.split("Guest-boot-time =").nth(1)?;
    let us: u64 = rest.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_micros(us))
}

/// The line kiln-vmm's SIGSYS handler writes when a seccomp filter stops a syscall
/// (`seccomp: killed on syscall NAME (NR) in thread T (KIND filter)`), if its log has one.
pub fn seccomp_violation(log: &str) -> Option<&str> {
    log.lines()
        .map(str::trim)
        .find(|l| l.starts_with("seccomp: killed on syscall "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_time_line() {
        assert_eq!(
            parse_boot_time("Guest-boot-time =  41234 us 41 ms"),
            Some(Duration::from_micros(41234))
        );
        assert_eq!(parse_boot_time("something else"), None);
    }
}
