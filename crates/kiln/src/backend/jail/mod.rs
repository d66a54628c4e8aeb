//! Starting a VMM through `kiln-jailer` (docs/JAIL.md): what its jail holds and under
//! which uid it runs.
//!
//! The jail mirrors host paths: every file the VMM needs is bind mounted at its own host
//! path inside an otherwise empty root (`<sandbox>/jail`), so the paths kiln passes in
//! API calls are the same jailed or not. The VMM's only writable folder is the
//! sandbox's `vm/` ([`Dir::vm`]), owned by the jail's uid; the sandbox folder itself,
//! with kiln's own records, stays kiln's. The kernel, initramfs, read-only images,
//! snapshot files of a restore, the VMM binary and the libraries it links are bound
//! read-only; `/dev` holds only `kvm` (and `userfaultfd` for a userfaultfd restore,
//! `net/tun` for a sandbox with a network: the jail enters its namespace, whose TAP is
//! given to the jail's uid).

mod libs;
pub mod snapshot_out;
mod uids;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use kiln_jailer::{Bind, Device, Spec};

use crate::error::{Error, Result};
use crate::state_dir::Dir;

pub use uids::{release, UID_RANGE_ENV};

/// `KILN_JAIL`: `1`/`on` (the default for root) jails every kiln-vmm and Firecracker
/// VMM; `0`/`off` runs them unjailed, a loud choice for debugging.
pub const JAIL_ENV: &str = "KILN_JAIL";

/// Whether new VMMs are jailed; an error if jailing is asked for but impossible.
/// Root jails by default. Another user cannot make the jail's namespaces, mounts and
/// uids yet: their VMMs run unjailed, and each launch says so in one line.
pub fn enabled() -> Result<bool> {
    // SAFETY: a getter.
    let root = unsafe { libc::geteuid() } == 0;
    let on = super::switch::read(JAIL_ENV, root, "jail every VMM")?;
    if on && !root {
        return Err(Error::InvalidInput(format!(
            "{JAIL_ENV}=1 needs root (the jail makes namespaces, mounts and device nodes); \
             run kiln as root or unset {JAIL_ENV}"
        )));
    }
    if !on && root {
        tracing::warn!(
            "{JAIL_ENV}=0: this VMM runs UNJAILED as root, in the host's namespaces; a guest that escapes it owns the host. Use it only to debug"
        );
    } else if !on && std::env::var_os(JAIL_ENV).is_none() {
        tracing::warn!(
            "this VMM runs unjailed: the jail (namespaces, chroot, its own uid) needs root; as another user only the cgroup limits and seccomp filters apply"
        );
    }
    Ok(on)
}

/// The uid a sandbox's VMM runs as: the owner of its `vm/` folder, if not root.
pub fn uid_of(dir: &Dir) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata(dir.vm()).ok()?.uid();
    // SAFETY: a getter.
    (uid != unsafe { libc::geteuid() }).then_some(uid)
}

/// `p` without `..`, `.` or symlinks (as it is bound in a jail), or `p` itself if it
/// cannot be resolved (the VMM then says it is missing).
pub fn real(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Lets a jail's uid read `p` (a file, or a folder and the files in it), bound
/// read-only: a snapshot is restored by VMMs of many uids. The state dir above it stays
/// 0700, so no host user gains anything; no other jail has it bound.
pub fn share_read_only(p: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let add = |p: &Path, bits: u32| -> Result<()> {
        let m = std::fs::symlink_metadata(p).map_err(Error::host_io("cannot read", p))?;
        if m.file_type().is_symlink() {
            return Ok(());
        }
        let mode = m.permissions().mode() | bits;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
            .map_err(Error::host_io("cannot share", p))
    };
    if p.is_dir() {
        add(p, 0o055)?;
        for e in std::fs::read_dir(p)
            .map_err(Error::host_io("cannot read", p))?
            .flatten()
        {
            if e.path().is_file() {
                add(&e.path(), 0o044)?;
            }
        }
        Ok(())
    } else {
        add(p, 0o044)
    }
}

/// A host file the VMM reads (or writes) outside its `vm/` folder.
pub struct Input {
    pub path: PathBuf,
    pub writable: bool,
}

/// What a VMM reads or writes outside its `vm/` folder (bound into its jail), whether
/// it serves memory by userfaultfd, and its guest memory (the largest file it may
/// write, a snapshot's, is that size).
pub struct Needs {
    pub inputs: Vec<Input>,
    pub uffd: bool,
    pub memory_bytes: u64,
    /// The network namespace (a name under /run/netns) the VMM runs in, with the TAP
    /// `kiln::net::TAP_NAME` the jail's uid is given.
    pub netns: Option<String>,
}

/// Room above the largest file a VMM has or may write, for `RLIMIT_FSIZE`.
const FSIZE_HEADROOM: u64 = 64 << 20;

/// The jail's `RLIMIT_FSIZE`: no file the VMM writes may outgrow the largest it needs
/// (a disk layer, or a snapshot of its memory), so a compromised VMM cannot fill the
/// host's disk with one file. Sizes are apparent sizes (disk layers are sparse).
fn file_size_limit(dir: &Dir, inputs: &[Input], memory_bytes: u64) -> u64 {
    let own = std::fs::read_dir(dir.vm())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path());
    let len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let largest = inputs
        .iter()
        .map(|i| len(&i.path))
        .chain(own.map(|p| len(&p)))
        .fold(memory_bytes, u64::max);
    largest + FSIZE_HEADROOM
}

/// The jailer's command line for running `vmm` with `args` jailed: allocates the
/// sandbox's uid and gives it the `vm/` folder.
pub fn command(
    dir: &Dir,
    id: &str,
    vmm: &Path,
    args: Vec<OsString>,
    needs: &Needs,
) -> Result<Vec<OsString>> {
    let (inputs, uffd) = (&needs.inputs, needs.uffd);
    let vmm = std::fs::canonicalize(vmm).map_err(Error::host_io("cannot find", vmm))?;
    let mut binds = vec![bind(&vmm, false)?, bind(&dir.vm(), true)?];
    for lib in libs::needed(&vmm)? {
        binds.push(bind(&lib, false)?);
    }
    for i in inputs.iter() {
        if !i.path.starts_with(dir.vm()) {
            binds.push(bind(&i.path, i.writable)?);
        }
    }
    let root = dir.path.join("jail");
    match std::fs::create_dir(&root) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(Error::host_io("cannot create", &root)(e))
        }
        _ => {}
    }
    let uid = uids::allocate(dir)?;
    let mut devices = vec![Device::Kvm];
    if uffd && Device::Userfaultfd.host_rdev().is_some() {
        devices.push(Device::Userfaultfd);
    }
    let netns = match &needs.netns {
        Some(name) => {
            crate::net::tap::set_owner_in(name, crate::net::TAP_NAME, uid, uid).map_err(|e| {
                Error::InvalidInput(format!(
                    "cannot give TAP {} in {name} to the jail's uid {uid}: {e}",
                    crate::net::TAP_NAME
                ))
            })?;
            devices.push(Device::NetTun);
            Some(crate::net::netns::path(name))
        }
        None => None,
    };
    let spec = Spec {
        id: id.to_string(),
        root,
        uid,
        gid: uid,
        binds,
        devices,
        cgroup: None,
        netns,
        nofile: kiln_jailer::spec::DEFAULT_NOFILE,
        fsize: Some(file_size_limit(dir, inputs, needs.memory_bytes)),
        env: Vec::new(),
        exec: vmm,
        args,
        userns: false,
    };
    spec.validate()
        .map_err(|e| Error::InvalidInput(format!("cannot jail the VMM: {e}")))?;
    Ok(spec.to_args())
}

fn bind(p: &Path, writable: bool) -> Result<Bind> {
    let dst = kiln_jailer::spec::inside(p).map_err(|e| {
        Error::InvalidInput(format!("cannot jail the VMM with {}: {e}", p.display()))
    })?;
    Ok(Bind {
        src: p.to_path_buf(),
        dst,
        read_only: !writable,
    })
}
