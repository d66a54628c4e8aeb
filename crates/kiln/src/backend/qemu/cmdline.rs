//! The QEMU command line for a sandbox: `-M microvm` with no default devices, the
//! kernel and initramfs of the [`GuestSpec`], drives as virtio-blk, the agent's
//! virtio-console port on a chardev socket, QMP, the serial console to a file.
//!
//! Machine options (QEMU 7.2): `acpi=off` — our kernel has no ACPI, and without ACPI
//! QEMU appends a `virtio_mmio.device=` entry per virtio device to the kernel command
//! line (`auto-kernel-cmdline`, on by default), which is how the kernel finds them;
//! `x-option-roms=off`; `isa-serial=on` (ttyS0, the console); `rtc=off`. Under KVM
//! the guest's clock is kvmclock and its timer the local APIC, so `pit=off,pic=off`;
//! under TCG there is no kvmclock and the kernel hangs calibrating without the PIT,
//! so both stay on.
//!
//! Guest command line: microvm has no i8042 and our kernel no ACPI, so a reboot
//! must triple-fault (`reboot=t`, replacing kiln's `reboot=k`) for QEMU to see it,
//! and power off must be a reboot (`kiln.poweroff=reboot`: the kernel would halt
//! instead); with `-no-reboot` QEMU exits on either, as kiln-vmm does.

use std::ffi::OsString;
use std::path::Path;

use super::accel::Accel;
use super::{files, PORT_NAME};
use crate::state_dir::Dir;
use crate::vmm::GuestSpec;

/// The arguments after the QEMU binary.
pub fn args(dir: &Dir, spec: &GuestSpec, accel: Accel) -> Vec<OsString> {
    let mut a = Args::default();
    let legacy = if accel == Accel::Kvm { "off" } else { "on" };
    a.pair(
        "-M",
        format!(
            "microvm,acpi=off,x-option-roms=off,isa-serial=on,rtc=off,pit={legacy},pic={legacy}"
        ),
    );
    match accel {
        Accel::Kvm => a.pair("-accel", "kvm").pair("-cpu", "host"),
        Accel::Tcg => a.pair("-accel", "tcg").pair("-cpu", "max"),
    };
    a.flag("-nodefaults")
        .flag("-no-user-config")
        .flag("-nographic")
        .flag("-no-reboot")
        .pair("-smp", spec.cpus.to_string())
        .pair("-m", spec.memory_mib.to_string())
        .pair("-kernel", path(&spec.kernel));
    if let Some(initrd) = &spec.initrd {
        a.pair("-initrd", path(initrd));
    }
    a.pair("-append", kernel_args(spec.boot_args.as_deref()));
    a.pair(
        "-chardev",
        format!("file,id=console,path={}", opt(&dir.console_log())),
    )
    .pair("-serial", "chardev:console");
    for (i, d) in spec.drives.iter().enumerate() {
        let ro = if d.read_only { "on" } else { "off" };
        a.pair(
            "-drive",
            format!(
                "id=drive{i},file={},format=raw,if=none,readonly={ro}",
                opt(&d.path)
            ),
        )
        .pair("-device", format!("virtio-blk-device,drive=drive{i}"));
    }
    a.pair(
        "-chardev",
        format!(
            "socket,id=agent,path={},server=on,wait=off",
            opt(&files::agent_port(dir))
        ),
    )
    .pair("-device", "virtio-serial-device,max_ports=2")
    .pair(
        "-device",
        format!("virtserialport,chardev=agent,name={PORT_NAME}"),
    )
    .pair(
        "-qmp",
        format!("unix:{},server=on,wait=off", opt(&files::qmp_sock(dir))),
    );
    a.0
}

/// kiln's boot arguments with QEMU's reboot and power-off settings (see the module
/// docs).
pub fn kernel_args(boot_args: Option<&str>) -> String {
    crate::vmm::poweroff_by_reboot(boot_args, "t")
}

/// A path inside a QEMU option string: commas are doubled (QEMU's escape).
fn opt(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

fn path(p: &Path) -> OsString {
    p.as_os_str().to_owned()
}

#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    fn flag(&mut self, f: &str) -> &mut Self {
        self.0.push(f.into());
        self
    }
    fn pair(&mut self, f: &str, v: impl Into<OsString>) -> &mut Self {
        self.0.push(f.into());
        self.0.push(v.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::DriveSpec;

    fn joined(dir: &Dir, g: &GuestSpec, accel: Accel) -> String {
        args(dir, g, accel)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn every_socket_and_log_is_in_the_folder_and_drives_keep_read_only() {
        let dir = Dir {
            path: "/run/kiln/sb,1".into(),
        };
        let mut g = GuestSpec::minimal();
        g.drives = vec![
            DriveSpec {
                id: "rootfs".into(),
                path: "/img/root.ext4".into(),
                read_only: true,
                root: false,
            },
            DriveSpec {
                id: "scratch".into(),
                path: "/run/kiln/sb,1/scratch.ext4".into(),
                read_only: false,
                root: false,
            },
        ];
        let s = joined(&dir, &g, Accel::Kvm);
        for f in ["vm/console.log", "agent.port", "qmp.sock"] {
            assert!(s.contains(&format!("/run/kiln/sb,,1/{f}")), "{f}: {s}");
        }
        assert!(
            s.contains("file=/img/root.ext4,format=raw,if=none,readonly=on"),
            "{s}"
        );
        assert!(s.contains("file=/run/kiln/sb,,1/scratch.ext4,format=raw,if=none,readonly=off"));
        assert!(
            s.contains("pit=off,pic=off") && s.contains("-accel kvm"),
            "{s}"
        );
        assert!(joined(&dir, &g, Accel::Tcg).contains("pit=on,pic=on"));
        assert!(s.contains("name=kiln.agent"));
    }

    #[test]
    fn reboot_and_power_off_are_rewritten_for_qemu() {
        let a = kernel_args(Some("console=ttyS0 reboot=k panic=-1 kiln.hostname=x"));
        assert_eq!(
            a,
            "console=ttyS0 panic=-1 kiln.hostname=x reboot=t kiln.poweroff=reboot"
        );
        assert!(kernel_args(None).starts_with("console=ttyS0"));
    }
}
