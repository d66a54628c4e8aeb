//! The boot structures a fresh VM starts from: the kernel command line (the configured
//! `boot_args` plus kiln's device arguments), the MP table and the zero page.

use vm_memory::{Bytes, GuestAddress};

use super::{Prepared, StartError};
use crate::arch::{boot_params, layout, mptable};
use crate::config::{BootSource, ConfigError, Drive, VmConfig};

/// The kernel command line: `boot_args`, one `virtio_mmio.device=` per virtio device and
/// the root device if a drive is the root (always /dev/vda: the root drive attaches first).
fn cmdline(boot: &BootSource, drives: &[&Drive], device_args: &[String]) -> String {
    let mut cmdline = boot.boot_args().to_string();
    for arg in device_args {
        cmdline.push(' ');
        cmdline.push_str(arg);
    }
    if let Some(root) = drives.first().filter(|d| d.is_root_device) {
        let mode = if root.is_read_only { "ro" } else { "rw" };
        cmdline.push_str(&format!(" root=/dev/vda {mode}"));
    }
    cmdline
}

/// Writes the command line, the MP table and the zero page into the prepared VM's memory.
pub fn write(
    cfg: &VmConfig,
    boot: &BootSource,
    drives: &[&Drive],
    device_args: &[String],
    p: &Prepared,
) -> Result<(), StartError> {
    let cmdline = cmdline(boot, drives, device_args);
    if cmdline.len() >= layout::CMDLINE_MAX_SIZE {
        return Err(ConfigError::new(format!(
            "the kernel command line with kiln's device arguments is {} bytes; the limit is {}: shorten boot_args",
            cmdline.len(),
            layout::CMDLINE_MAX_SIZE - 1
        ))
        .into());
    }
    let mut cmdline_bytes = cmdline.into_bytes();
    cmdline_bytes.push(0);
    let mem = &p.mem;
    mem.write_slice(&cmdline_bytes, GuestAddress(layout::CMDLINE_START))?;

    let count = cfg.machine_config.vcpu_count;
    mem.write_slice(
        &mptable::build(layout::MPTABLE_START, count),
        GuestAddress(layout::MPTABLE_START),
    )?;
    let zero_page = boot_params::build(
        cfg.machine_config.mem_size_mib << 20,
        cmdline_bytes.len() - 1,
        p.initrd,
        p.kernel.setup_header,
    );
    mem.write_obj(zero_page, GuestAddress(layout::ZERO_PAGE_START))?;
    Ok(())
}
