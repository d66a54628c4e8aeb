//! Options shared by the commands that create sandboxes and run commands in them.

use std::time::Duration;

use anyhow::{bail, Result};
use kiln::{ExecOptions, MemoryBackend, SandboxBuilder};

/// How to build a sandbox (`kiln run`, `kiln create`).
#[derive(clap::Args, Debug, Clone)]
pub struct SandboxArgs {
    /// Image: `debian` (python3 and a Debian userland), `minimal` (fastest: the agent
    /// only) or a path to an ext4 image.
    #[arg(long, default_value = "debian")]
    pub image: String,
    #[arg(long, default_value_t = 1)]
    pub cpus: u8,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 256)]
    pub memory: u64,
    /// Limit the VMM to this many CPUs of time (its cgroup's cpu.max): 0.5 is half a
    /// CPU; 0.01 up to --cpus. Without it, no quota.
    #[arg(long, value_name = "CPUS")]
    pub cpu_quota: Option<f64>,
    /// Restore this snapshot instead of booting (image, cpus and memory come from it;
    /// taken from its warm pool when one is filled: `kiln pool SNAP -n N`).
    #[arg(long, value_name = "SNAP")]
    pub from: Option<String>,
    /// With --from: `file` or `uffd` (see `kiln restore --help`).
    #[arg(long, default_value = "file")]
    pub memory_backend: String,
    /// The VMM: `kiln` (kiln-vmm), `firecracker` or `qemu` (QEMU microvm; see
    /// docs/BACKENDS.md).
    #[arg(long, value_name = "NAME", default_value = "kiln")]
    pub backend: String,
    /// Stop and remove the sandbox after this many seconds without an exec or file
    /// operation (enforced by `kiln serve`, `kiln reap --watch` and every kiln command).
    #[arg(long, value_name = "S")]
    pub idle_timeout: Option<u64>,
    /// Stop and remove the sandbox this many seconds after its creation.
    #[arg(long, value_name = "S")]
    pub max_lifetime: Option<u64>,
    /// A label, filterable in the API (repeatable).
    #[arg(long = "label", value_name = "K=V")]
    pub labels: Vec<String>,
    /// Publish a port: `[HOST_IP:]HOST_PORT:GUEST_PORT[/tcp]` (repeatable; host
    /// 127.0.0.1 unless named; HOST_PORT 0: any free port, see `kiln port ID`).
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    pub publish: Vec<String>,
    /// The network: `default` (a NIC in the sandbox's own namespace; no egress), `none`
    /// (no NIC at all) or `allow-all` (a NIC; all egress, private ranges included: for
    /// tests). Unset: `default` as root, `none` (said once) otherwise. With --from: the
    /// snapshot's.
    #[arg(long, value_name = "MODE")]
    pub net: Option<String>,
}

/// How to run a command (`kiln run`, `kiln exec`).
#[derive(clap::Args, Debug, Clone)]
pub struct CommandArgs {
    /// Environment variable for the command (repeatable).
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Working directory in the guest.
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// Run on a terminal (interactive programs, shells).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Pass our stdin to the command (implied by -t).
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Kill the command after this many seconds.
    #[arg(long, value_name = "S")]
    pub timeout: Option<f64>,
}

/// `--memory-backend`: `file` or `uffd`.
pub fn parse_backend(s: &str) -> Result<MemoryBackend> {
    Ok(match s {
        "file" => MemoryBackend::File,
        "uffd" => MemoryBackend::Uffd,
        other => bail!("--memory-backend {other}: use file or uffd"),
    })
}

impl SandboxArgs {
    pub fn builder(&self) -> Result<SandboxBuilder> {
        let mut b = kiln::Sandbox::builder()
            .image(&self.image)
            .cpus(self.cpus)
            .memory_mib(self.memory)
            .backend(&self.backend);
        if let Some(q) = self.cpu_quota {
            b = b.cpu_quota(q);
        }
        if let Some(n) = &self.net {
            if self.from.is_some() {
                bail!("--net with --from: a restored sandbox gets a network like its snapshot's; leave --net out");
            }
            b = b.network(kiln::sandbox::NetMode::parse(n).map_err(anyhow::Error::msg)?);
        }
        if let Some(s) = self.idle_timeout {
            b = b.idle_timeout(Duration::from_secs(s));
        }
        if let Some(s) = self.max_lifetime {
            b = b.max_lifetime(Duration::from_secs(s));
        }
        for kv in &self.labels {
            let Some((k, v)) = kv.split_once('=') else {
                bail!("--label {kv}: use KEY=VALUE");
            };
            b = b.metadata(k, v);
        }
        for spec in crate::ports::parse_specs(&self.publish)? {
            b = b.port(spec);
        }
        Ok(match &self.from {
            Some(snap) => b
                .from_snapshot(snap)
                .memory_backend(parse_backend(&self.memory_backend)?),
            None => b,
        })
    }
}

impl CommandArgs {
    pub fn options(&self, cmd: &[String]) -> Result<ExecOptions> {
        if cmd.is_empty() {
            bail!("no command given: put it after `--`, e.g. `-- python3 -c 'print(42)'`");
        }
        let mut o = ExecOptions::new(cmd.iter().cloned());
        for kv in &self.env {
            let Some((k, v)) = kv.split_once('=') else {
                bail!("-e {kv}: use KEY=VALUE");
            };
            if k.is_empty() {
                bail!("-e {kv}: the name is empty");
            }
            o = o.env(k, v);
        }
        o.cwd = self.workdir.clone();
        if let Some(t) = self.timeout {
            if !(t.is_finite() && t > 0.0) {
                bail!("--timeout {t}: use a positive number of seconds");
            }
            o.timeout = Some(Duration::from_secs_f64(t));
        }
        if self.interactive || self.tty {
            o.stdin = Some(Vec::new());
        }
        Ok(o)
    }
}
