//! The disk root (`kiln.root=` and `kiln.overlay=`): an overlayfs of a read-only
//! image and a writable layer becomes `/`, the initramfs way.
//!
//! On the initramfs (a rootfs that cannot be pivoted away):
//!
//! 1. the image device is mounted read-only (ext4) on `/kiln/lower`;
//! 2. the writable layer is mounted on `/kiln/rw`: the scratch device (ext4, rw) or
//!    a tmpfs; `upper/` and `work/` are created in it if missing;
//! 3. the overlay of the two is mounted on `/kiln/root`;
//! 4. `/dev /proc /sys /run /tmp` (already mounted by `mounts::mount_base`) are moved
//!    into the new root;
//! 5. `chdir /kiln/root; mount --move . /; chroot .; chdir /`.
//!
//! The agent keeps running from memory; the initramfs stays underneath, unreachable
//! (it holds little more than the agent itself). Every failure names its step: the
//! caller prints it and stops the boot.

use std::ffi::CString;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::console::{errno, strerror};
use crate::mounts::sys_mount;

/// Where the layers are staged on the initramfs.
pub const STAGE: &str = "/kiln";
/// Mounts carried over from the initramfs into the new root.
pub const CARRIED: [&str; 5] = ["/dev", "/proc", "/sys", "/run", "/tmp"];

/// Which step of the switch failed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootError {
    pub step: String,
    pub reason: String,
}

impl fmt::Display for RootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.step, self.reason)
    }
}

/// A layer of the overlay.
#[derive(Debug, Clone, Copy)]
pub enum Layer<'a> {
    /// An ext4 block device.
    Ext4(&'a Path),
    /// A directory, bind-mounted (tests).
    Bind(&'a Path),
}

/// What [`switch_with`] assembles.
#[derive(Debug, Clone, Copy)]
pub struct Plan<'a> {
    /// Staging directory (`lower/`, `rw/`, `root/` inside); no `,` or `:` in it.
    pub stage: &'a Path,
    /// Mounted read-only.
    pub lower: Layer<'a>,
    /// Mounted read-write and holding `upper/` and `work/`; `None`: a tmpfs.
    pub upper: Option<Layer<'a>>,
    /// Mount points moved into the new root.
    pub carried: &'a [&'a str],
}

/// The guest's switch: `lower` (ext4, read-only) under `upper` (ext4) or a tmpfs.
pub fn switch(lower: &Path, upper: Option<&Path>) -> Result<(), RootError> {
    switch_with(&Plan {
        stage: Path::new(STAGE),
        lower: Layer::Ext4(lower),
        upper: upper.map(Layer::Ext4),
        carried: &CARRIED,
    })
}

/// Mounts the overlay `plan` describes and makes it `/` (see the module docs).
pub fn switch_with(plan: &Plan) -> Result<(), RootError> {
    let stage = plan.stage;
    let lower_dir = stage.join("lower");
    let rw_dir = stage.join("rw");
    let newroot = stage.join("root");
    for dir in [stage, &lower_dir, &rw_dir, &newroot] {
        mkdir(dir, "create the staging directories")?;
    }

    mount_layer(plan.lower, &lower_dir, true)?;
    match plan.upper {
        Some(layer) => mount_layer(layer, &rw_dir, false)?,
        None => check(
            sys_mount(
                c"tmpfs",
                &cstring(&rw_dir)?,
                c"tmpfs",
                0,
                Some(c"mode=0755"),
            ),
            || "mount the tmpfs writable layer".to_owned(),
        )?,
    }
    let (upper_dir, work_dir) = (rw_dir.join("upper"), rw_dir.join("work"));
    mkdir(&upper_dir, "create upper/ in the writable layer")?;
    mkdir(&work_dir, "create work/ in the writable layer")?;

    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower_dir.display(),
        upper_dir.display(),
        work_dir.display()
    );
    let opts = CString::new(opts).map_err(|_| RootError {
        step: "overlay options".into(),
        reason: "contain NUL".into(),
    })?;
    check(
        sys_mount(c"overlay", &cstring(&newroot)?, c"overlay", 0, Some(&opts)),
        || "mount the overlay".to_owned(),
    )?;

    for dir in plan.carried {
        let to = newroot.join(dir.trim_start_matches('/'));
        mkdir(&to, "create mount points in the new root")?;
        check(
            sys_mount(
                &cstring(Path::new(dir))?,
                &cstring(&to)?,
                c"",
                libc::MS_MOVE,
                None,
            ),
            || format!("move {dir} into the new root"),
        )?;
    }

    let newroot_c = cstring(&newroot)?;
    // SAFETY: NUL-terminated strings; chdir/mount/chroot only change this
    // process's view of the filesystem, which is the point.
    unsafe {
        check(libc::chdir(newroot_c.as_ptr()), || {
            "chdir to the new root".into()
        })?;
        check(sys_mount(c".", c"/", c"", libc::MS_MOVE, None), || {
            "move the new root onto /".into()
        })?;
        check(libc::chroot(c".".as_ptr()), || "chroot".into())?;
        check(libc::chdir(c"/".as_ptr()), || "chdir /".into())?;
    }
    Ok(())
}

fn mount_layer(layer: Layer, dir: &Path, read_only: bool) -> Result<(), RootError> {
    let target = cstring(dir)?;
    let how = if read_only { "read-only" } else { "read-write" };
    match layer {
        Layer::Ext4(dev) => {
            // The writable layer is a lazily initialised template: `noinit_itable` keeps
            // the kernel from zeroing its inode tables in the background (I/O for
            // nothing, and it would fill the host's sparse file).
            let (flags, data) = if read_only {
                (libc::MS_RDONLY, None)
            } else {
                (libc::MS_NOATIME, Some(c"noinit_itable"))
            };
            check(
                sys_mount(&cstring(dev)?, &target, c"ext4", flags, data),
                || format!("mount {} (ext4, {how})", dev.display()),
            )
        }
        Layer::Bind(src) => {
            let step = || format!("bind {} ({how})", src.display());
            check(
                sys_mount(&cstring(src)?, &target, c"", libc::MS_BIND, None),
                step,
            )?;
            if !read_only {
                return Ok(());
            }
            let flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY;
            check(sys_mount(c"", &target, c"", flags, None), step)
        }
    }
}

/// mkdir(dir, 0755); an existing directory is fine.
fn mkdir(dir: &Path, step: &str) -> Result<(), RootError> {
    let c = cstring(dir)?;
    // SAFETY: c is NUL-terminated.
    if unsafe { libc::mkdir(c.as_ptr(), 0o755) } != 0 && errno() != libc::EEXIST {
        return Err(RootError {
            step: format!("{step} ({})", dir.display()),
            reason: strerror(errno()),
        });
    }
    Ok(())
}

fn check(rc: libc::c_int, step: impl FnOnce() -> String) -> Result<(), RootError> {
    if rc == 0 {
        return Ok(());
    }
    let e = errno();
    Err(RootError {
        step: step(),
        reason: strerror(e),
    })
}

fn cstring(p: &Path) -> Result<CString, RootError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| RootError {
        step: format!("path {}", p.display()),
        reason: "contains NUL".into(),
    })
}
