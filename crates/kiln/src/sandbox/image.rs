//! Guest images: the minimal initramfs-only image, or a disk image (the Debian root
//! filesystem, or any ext4 file) attached read-only with a per-sandbox writable layer.

use std::fs::File;
use std::path::{Path, PathBuf};

use kiln_vmm::snapshot::disk::{copy_range, data_extents};

use crate::error::{Error, Result};
use crate::paths;
use crate::state_dir::store;
use crate::store::ImageRow;

/// The default image.
pub const DEFAULT: &str = "debian";
/// Size of a sandbox's writable layer (a sparse ext4 file).
pub const SCRATCH_MIB: u64 = 2048;

/// A resolved image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Image {
    /// Only the initramfs: the agent is the whole userland (fastest).
    Minimal,
    /// An ext4 root filesystem, read-only, under an overlay with a writable layer.
    Disk { name: String, rootfs: PathBuf },
}

impl Image {
    /// `minimal`, `debian`, or a path to an ext4 image.
    pub fn resolve(name: &str) -> Result<Image> {
        let missing = |what: &str, p: &Path, how: &str| Error::BootFailed {
            stage: "image",
            errno: Some(libc::ENOENT),
            message: format!("{what} {} not found; {how}", p.display()),
        };
        let image = match name {
            "minimal" => Ok(Image::Minimal),
            "debian" => {
                let rootfs = paths::guest_dir().join("images/debian.ext4");
                if !rootfs.is_file() {
                    return Err(missing(
                        "image",
                        &rootfs,
                        "build it with guest/images/debian/build.sh (scripts/setup does)",
                    ));
                }
                Ok(Image::Disk {
                    name: name.into(),
                    rootfs,
                })
            }
            p if p.contains('/') || p.ends_with(".ext4") => {
                let rootfs = PathBuf::from(p);
                if !rootfs.is_file() {
                    return Err(missing("image", &rootfs, "give a path to an ext4 image"));
                }
                Ok(Image::Disk {
                    name: p.into(),
                    rootfs: std::fs::canonicalize(&rootfs).unwrap_or(rootfs),
                })
            }
            other => Err(Error::InvalidInput(format!(
                "unknown image {other:?}: use minimal, debian or a path to an ext4 image"
            ))),
        }?;
        let initramfs = paths::default_initramfs();
        if !initramfs.is_file() {
            return Err(missing("initramfs", &initramfs, "run scripts/setup"));
        }
        Ok(image)
    }

    pub fn name(&self) -> &str {
        match self {
            Image::Minimal => "minimal",
            Image::Disk { name, .. } => name,
        }
    }

    /// Records the image in the state store's catalog, unless the same file is recorded
    /// already.
    pub(crate) fn record(&self) -> Result<()> {
        let path = match self {
            Image::Minimal => paths::default_initramfs(),
            Image::Disk { rootfs, .. } => rootfs.clone(),
        };
        Ok(store()?.record_image(self.name(), &path)?)
    }
}

/// The images sandboxes have booted, by name (the state store's catalog).
pub fn images() -> Result<Vec<ImageRow>> {
    Ok(store()?.list_images()?)
}

/// The empty ext4 template a writable layer is copied from.
pub fn scratch_template() -> Result<PathBuf> {
    let p = paths::guest_dir().join(format!("images/scratch-{SCRATCH_MIB}.ext4"));
    if p.is_file() {
        Ok(p)
    } else {
        Err(Error::BootFailed {
            stage: "image",
            errno: Some(libc::ENOENT),
            message: format!(
                "writable-layer template {} not found; build it with guest/images/scratch.sh (scripts/setup does)",
                p.display()
            ),
        })
    }
}

/// Copies `src` to a new file `dst`, keeping holes: only the data extents are copied,
/// so a 2 GiB empty filesystem costs a few MiB. The extents come from `<src>.extents`
/// (written by guest/images/scratch.sh) while it matches `src`'s size and mtime — for
/// filesystems that cannot report holes, such as 9p — else from SEEK_DATA/SEEK_HOLE.
pub fn sparse_copy(src: &Path, dst: &Path) -> Result<()> {
    let s = File::open(src).map_err(Error::host_io("cannot open", src))?;
    let meta = s.metadata().map_err(Error::host_io("cannot stat", src))?;
    let len = meta.len();
    let d = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .map_err(Error::host_io("cannot create", dst))?;
    d.set_len(len).map_err(Error::host_io("cannot size", dst))?;
    if let Some(extents) = extents_map(src, &meta) {
        for (off, n) in extents {
            copy_range(&s, &d, off, n).map_err(Error::host_io("cannot copy to", dst))?;
        }
        return Ok(());
    }
    let extents = data_extents(&s, len).map_err(Error::host_io("cannot seek in", src))?;
    for (off, n) in extents {
        copy_range(&s, &d, off, n).map_err(Error::host_io("cannot copy to", dst))?;
    }
    Ok(())
}

/// `<src>.extents` if it describes `src` as it is now (same size and mtime).
fn extents_map(src: &Path, meta: &std::fs::Metadata) -> Option<Vec<(u64, u64)>> {
    use std::os::unix::fs::MetadataExt;
    let mut name = src.as_os_str().to_owned();
    name.push(".extents");
    let text = std::fs::read_to_string(name).ok()?;
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next()?.split_whitespace().collect();
    let mtime_ns = meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128;
    if head.len() != 4
        || head[..2] != ["kiln-extents", "1"]
        || head[2].parse::<u64>().ok()? != meta.len()
        || head[3].parse::<i128>().ok()? != mtime_ns
    {
        return None;
    }
    let mut out = Vec::new();
    for l in lines {
        let (off, n) = l.split_once(' ')?;
        let (off, n): (u64, u64) = (off.parse().ok()?, n.parse().ok()?);
        if off.checked_add(n)? > meta.len() {
            return None;
        }
        out.push((off, n));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn sparse_copy_keeps_data_and_holes() {
        let dir = std::env::temp_dir().join(format!("kiln-sparse-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        let mut f = File::create(&a).unwrap();
        f.write_all(b"head").unwrap();
        f.seek(SeekFrom::Start(64 << 20)).unwrap();
        f.write_all(b"tail").unwrap();
        f.set_len(128 << 20).unwrap();
        drop(f);
        sparse_copy(&a, &b).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let m = std::fs::metadata(&b).unwrap();
        assert_eq!(m.len(), 128 << 20);
        assert!(
            m.blocks() * 512 < 8 << 20,
            "copy is not sparse: {} blocks",
            m.blocks()
        );
        assert!(sparse_copy(&a, &b).is_err(), "never overwrites");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_matching_extents_map_is_used_and_a_stale_one_ignored() {
        let dir = std::env::temp_dir().join(format!("kiln-extents-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a");
        std::fs::write(&a, vec![9u8; 8192]).unwrap();
        let m = std::fs::metadata(&a).unwrap();
        let ns = m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128;
        // The map names only the first 4 KiB: a copy through it has zeros after that.
        let map = dir.join("a.extents");
        std::fs::write(&map, format!("kiln-extents 1 8192 {ns}\n0 4096\n")).unwrap();
        sparse_copy(&a, &dir.join("b")).unwrap();
        let b = std::fs::read(dir.join("b")).unwrap();
        assert_eq!(
            (&b[..4096], &b[4096..]),
            (&[9u8; 4096][..], &[0u8; 4096][..])
        );
        // A map for another size/mtime is ignored: a full copy.
        std::fs::write(&map, format!("kiln-extents 1 8192 {}\n0 4096\n", ns + 1)).unwrap();
        sparse_copy(&a, &dir.join("c")).unwrap();
        assert_eq!(std::fs::read(dir.join("c")).unwrap(), vec![9u8; 8192]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_image_names_are_refused() {
        let e = Image::resolve("ubuntu").unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{e}");
        let e = Image::resolve("/nonexistent/x.ext4").unwrap_err();
        assert!(matches!(e, Error::BootFailed { stage: "image", .. }), "{e}");
    }
}
