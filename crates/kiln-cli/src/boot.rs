//! `kiln boot`: boot a guest with its console on stdout.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kiln::vmm::DEFAULT_BOOT_ARGS;
use kiln::vmm::{DriveSpec, GuestSpec, VmmProcess};

#[derive(clap::Args)]
pub struct BootArgs {
    /// Kernel (ELF vmlinux or bzImage). Default: the project's guest kernel.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Initramfs. Default: the project's minimal image (unless --rootfs is given).
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Root filesystem image (raw ext4), attached as /dev/vda.
    #[arg(long)]
    rootfs: Option<PathBuf>,
    /// Attach the root filesystem read-only.
    #[arg(long)]
    read_only: bool,
    #[arg(long, default_value_t = 1)]
    cpus: u8,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 128)]
    memory: u64,
    /// Extra kernel command-line arguments (e.g. `kiln.report=1`).
    #[arg(long, default_value = "")]
    append: String,
    /// Keep the guest running (no automatic power-off once ready); end it with Ctrl-C.
    #[arg(long)]
    wait: bool,
    /// Only emergency kernel messages on the console (what kiln-vmm does by default).
    #[arg(long)]
    quiet: bool,
}

pub fn run(a: BootArgs) -> Result<i32> {
    let mut g = GuestSpec::minimal();
    if let Some(k) = a.kernel {
        g.kernel = k;
    }
    g.initrd = match (a.initrd, &a.rootfs) {
        (Some(i), _) => Some(i),
        (None, Some(_)) => None,
        (None, None) => g.initrd,
    };
    for (what, p) in [
        ("kernel", Some(&g.kernel)),
        ("initramfs", g.initrd.as_ref()),
    ] {
        if let Some(p) = p.filter(|p| !p.is_file()) {
            bail!(
                "{what} {} not found; run scripts/setup (or pass --{})",
                p.display(),
                if what == "kernel" { "kernel" } else { "initrd" }
            );
        }
    }
    if let Some(r) = a.rootfs {
        g.drives.push(DriveSpec {
            id: "rootfs".into(),
            path: r,
            read_only: a.read_only,
            root: true,
        });
    }
    g.cpus = a.cpus;
    g.memory_mib = a.memory;
    let action = if a.wait { "wait" } else { "poweroff" };
    // kiln-vmm's defaults keep the console quiet; a debugging boot shows the kernel log.
    let base = if a.quiet {
        DEFAULT_BOOT_ARGS.to_string()
    } else {
        DEFAULT_BOOT_ARGS.replace(" loglevel=1", "")
    };
    g.boot_args = Some(format!("{base} kiln.action={action} {}", a.append));

    let (mut vm, _) = VmmProcess::boot(&g, "stdout", true, Duration::from_secs(10))?;
    let ready = vm
        .wait_ready(Duration::from_secs(120))
        .context("the guest did not become ready")?;
    eprintln!(
        "kiln: guest ready in {:.1} ms (InstanceStart -> agent ready, measured by kiln-vmm)",
        ready.as_secs_f64() * 1e3
    );
    let status = vm.wait_exit(Duration::from_secs(if a.wait { 1 << 30 } else { 120 }))?;
    match status.code() {
        Some(0) => {
            eprintln!(
                "kiln: boot OK: guest booted in {:.1} ms and powered off cleanly",
                ready.as_secs_f64() * 1e3
            );
            Ok(0)
        }
        Some(c) => {
            eprintln!("kiln: the VMM exited with status {c}");
            Ok(c)
        }
        None => bail!("the VMM was killed by a signal ({status})"),
    }
}
