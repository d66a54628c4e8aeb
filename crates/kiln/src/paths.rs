//! Where kiln finds its VMM binary, guest kernel and images, and keeps runtime files
//! (and, in [`private`], that the directory it keeps them in is private to its user).

use std::path::PathBuf;

pub mod private;

pub use private::{ensure_private_dir, StateDirError};

fn exe_dir() -> Option<PathBuf> {
    std::env::current_exe().ok()?.parent().map(PathBuf::from)
}

/// `kiln-vmm`: `$KILN_VMM`, else next to the running binary, else on PATH.
pub fn vmm_binary() -> PathBuf {
    sibling_binary("KILN_VMM", "kiln-vmm")
}

/// `kiln-jailer` (docs/JAIL.md): `$KILN_JAILER`, else next to the running binary, else
/// on PATH.
pub fn jailer_binary() -> PathBuf {
    sibling_binary("KILN_JAILER", "kiln-jailer")
}

/// `kiln-relay` (the QEMU backend's agent relay): `$KILN_RELAY`, else next to the
/// running binary, else on PATH.
pub fn relay_binary() -> PathBuf {
    sibling_binary("KILN_RELAY", "kiln-relay")
}

/// `kiln-publish` (a sandbox's published ports, `crate::ports`): `$KILN_PUBLISH`, else
/// next to the running binary, else on PATH.
pub fn publish_binary() -> PathBuf {
    sibling_binary("KILN_PUBLISH", "kiln-publish")
}

/// `$env`, else `name` next to the running binary, else `name` (looked up on PATH).
fn sibling_binary(env: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    // Test binaries live in target/<profile>/deps; the binaries in target/<profile>.
    for dir in exe_dir()
        .into_iter()
        .flat_map(|d| [d.clone(), d.join("..")])
    {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    PathBuf::from(name)
}

/// Guest kernel and images: `$KILN_GUEST_DIR`, else `target/guest` next to the
/// binaries (where `scripts/setup` puts them).
pub fn guest_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("KILN_GUEST_DIR") {
        return PathBuf::from(p);
    }
    for dir in exe_dir()
        .into_iter()
        .flat_map(|d| [d.join("../guest"), d.join("../../guest")])
    {
        if dir.join("vmlinux").is_file() {
            return dir;
        }
    }
    PathBuf::from("target/guest")
}

pub fn default_kernel() -> PathBuf {
    guest_dir().join("vmlinux")
}

pub fn default_initramfs() -> PathBuf {
    guest_dir().join("initramfs.cpio")
}

/// The state directory when `$KILN_STATE_DIR` is not set: `$XDG_RUNTIME_DIR/kiln` when
/// `XDG_RUNTIME_DIR` is set, else for root `/run/kiln` (a root-owned place: never a
/// world-writable `$TMPDIR`), else `$TMPDIR/kiln-<uid>`.
pub fn default_state_dir() -> PathBuf {
    default_state_dir_for(
        private::euid(),
        std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
        std::env::temp_dir(),
    )
}

fn default_state_dir_for(uid: u32, xdg_runtime: Option<PathBuf>, tmp: PathBuf) -> PathBuf {
    match xdg_runtime.filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.join("kiln"),
        None if uid == 0 => PathBuf::from("/run/kiln"),
        None => tmp.join(format!("kiln-{uid}")),
    }
}

/// Per-user directory for VMM sockets ([`default_state_dir`]), created 0700 and
/// checked like the state directory ([`ensure_private_dir`]).
pub fn runtime_dir() -> std::io::Result<PathBuf> {
    let base = default_state_dir();
    ensure_private_dir(&base).map_err(std::io::Error::other)?;
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_default_state_dir_is_not_under_tmp() {
        let tmp = PathBuf::from("/tmp/x");
        let xdg = Some(PathBuf::from("/run/user/1000"));
        assert_eq!(
            default_state_dir_for(0, None, tmp.clone()),
            PathBuf::from("/run/kiln")
        );
        assert_eq!(
            default_state_dir_for(1000, None, tmp.clone()),
            PathBuf::from("/tmp/x/kiln-1000")
        );
        assert_eq!(
            default_state_dir_for(0, xdg.clone(), tmp.clone()),
            PathBuf::from("/run/user/1000/kiln")
        );
        assert_eq!(
            default_state_dir_for(1000, Some(PathBuf::new()), tmp),
            PathBuf::from("/tmp/x/kiln-1000")
        );
    }
}
