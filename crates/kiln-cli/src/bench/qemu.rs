//! The baseline: Debian's `qemu-system-x86_64 -M microvm -enable-kvm` booting the same
//! kernel and initramfs. Started paused (`-S`) so "spawn → control socket ready" and
//! "resume → guest ready" are measured like kiln's; the agent's ready write to port
//! 0x440 reaches us through an `isa-debugcon` on that port.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kiln::process::{kill_if_running, wait_or_kill};

pub const QEMU: &str = "qemu-system-x86_64";

pub struct QemuVm {
    child: Child,
    dir: PathBuf,
    pub spawned_at: Instant,
    qmp: Option<BufReader<UnixStream>>,
    dbg: UnixListener,
    dbg_conn: Option<UnixStream>,
}

pub struct QemuSpec<'a> {
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub append: &'a str,
    pub memory_mib: u64,
    pub cpus: u8,
}

impl QemuVm {
    pub fn spawn(spec: &QemuSpec, tag: &str) -> Result<Self> {
        let dir = kiln::paths::runtime_dir()?.join(format!("qemu-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let dbg_path = dir.join("dbg.sock");
        let dbg = UnixListener::bind(&dbg_path)?;
        let qmp = dir.join("qmp.sock");
        let spawned_at = Instant::now();
        let child = Command::new(QEMU)
            .args(["-M", "microvm,rtc=off", "-enable-kvm", "-cpu", "host"])
            .args([
                "-m",
                &spec.memory_mib.to_string(),
                "-smp",
                &spec.cpus.to_string(),
            ])
            .args([
                "-nodefaults",
                "-no-user-config",
                "-nographic",
                "-no-reboot",
                "-S",
            ])
            .args(["-serial", "null", "-device", "virtio-rng-device"])
            .arg("-kernel")
            .arg(spec.kernel)
            .arg("-initrd")
            .arg(spec.initrd)
            .args(["-append", spec.append])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display()))
            .arg("-chardev")
            .arg(format!("socket,id=dbg,path={}", dbg_path.display()))
            .args(["-device", "isa-debugcon,iobase=0x440,chardev=dbg"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!("cannot run {QEMU}; install Debian's qemu-system-x86 (scripts/setup does)")
            })?;
        Ok(Self {
            child,
            dir,
            spawned_at,
            qmp: None,
            dbg,
            dbg_conn: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn qmp_cmd(&mut self, cmd: &str) -> Result<()> {
        let q = self.qmp.as_mut().context("QMP not connected")?;
        q.get_mut()
            .write_all(format!("{{\"execute\":\"{cmd}\"}}\n").as_bytes())?;
        Ok(())
    }

    /// Waits until QMP is connected and negotiated; returns the time since spawn.
    pub fn wait_qmp(&mut self, timeout: Duration) -> Result<Duration> {
        let path = self.dir.join("qmp.sock");
        let stream = loop {
            if let Ok(s) = UnixStream::connect(&path) {
                break s;
            }
            if let Some(st) = self.child.try_wait()? {
                bail!("{QEMU} exited before its QMP socket was ready ({st})");
            }
            if self.spawned_at.elapsed() > timeout {
                bail!("{QEMU}: QMP socket not ready after {timeout:?}");
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        stream.set_read_timeout(Some(timeout))?;
        let mut r = BufReader::new(stream);
        let mut line = String::new();
        r.read_line(&mut line)?; // greeting
        self.qmp = Some(r);
        self.qmp_cmd("qmp_capabilities")?;
        loop {
            line.clear();
            if self.qmp.as_mut().context("QMP")?.read_line(&mut line)? == 0 {
                bail!("{QEMU} closed QMP during negotiation");
            }
            if line.contains("\"return\"") {
                break;
            }
        }
        // The debug console connected at start-up, before QMP was served.
        self.dbg.set_nonblocking(true)?;
        let conn = loop {
            match self.dbg.accept() {
                Ok((c, _)) => break c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
            if self.spawned_at.elapsed() > timeout {
                bail!("{QEMU} did not connect its debug console within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        conn.set_nonblocking(false)?;
        conn.set_read_timeout(Some(Duration::from_millis(100)))?;
        self.dbg_conn = Some(conn);
        Ok(self.spawned_at.elapsed())
    }

    /// Resumes the paused VM (the equivalent of InstanceStart).
    pub fn cont(&mut self) -> Result<Instant> {
        let t = Instant::now();
        self.qmp_cmd("cont")?;
        Ok(t)
    }

    /// Waits for the agent's ready byte (123) on the debug console.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Instant> {
        let deadline = Instant::now() + timeout;
        let conn = self
            .dbg_conn
            .as_mut()
            .context("debug console not connected")?;
        let mut buf = [0u8; 64];
        loop {
            match conn.read(&mut buf) {
                Ok(0) => bail!("{QEMU} exited before the guest was ready"),
                Ok(n) if buf[..n].contains(&123) => return Ok(Instant::now()),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e.into()),
            }
            if Instant::now() > deadline {
                bail!("{QEMU}: guest not ready after {timeout:?}");
            }
        }
    }

    pub fn quit(&mut self) -> Result<()> {
        self.qmp_cmd("quit")
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        wait_or_kill(&mut self.child, timeout)?
            .with_context(|| format!("{QEMU} did not exit within {timeout:?}"))
    }
}

impl Drop for QemuVm {
    fn drop(&mut self) {
        kill_if_running(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
