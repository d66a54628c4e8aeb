//! Where kiln finds its VMM binary, guest kernel and images, and keeps runtime files.

use std::path::PathBuf;

fn exe_dir() -> Option<PathBuf> {
    std::env::current_exe().ok()?.parent().map(PathBuf::from)
}

/// `kiln-vmm`: `$KILN_VMM`, else next to the running binary, else on PATH.
pub fn vmm_binary() -> PathBuf {
    sibling_binary("KILN_VMM", "kiln-vmm")
}

/// `kiln-relay` (the QEMU backend's agent relay): `$KILN_RELAY`, else next to the
/// running binary, else on PATH.
pub fn relay_binary() -> PathBuf {
    sibling_binary("KILN_RELAY", "kiln-relay")
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

/// Per-user directory for VMM sockets.
pub fn runtime_dir() -> std::io::Result<PathBuf> {
    let base = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) => PathBuf::from(d).join("kiln"),
        // SAFETY: getuid has no failure mode.
        None => std::env::temp_dir().join(format!("kiln-{}", unsafe { libc::getuid() })),
    };
    std::fs::create_dir_all(&base)?;
    Ok(base)
}
