//! Guest images: the minimal initramfs-only image, or a disk image (the Debian root
//! filesystem, or any ext4 file) attached read-only with a per-sandbox writable layer.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::paths;

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

/// Copies `src` to a new file `dst`, keeping holes: only the data extents are copied
/// (SEEK_DATA/SEEK_HOLE), so a 2 GiB empty filesystem costs a few MiB.
pub fn sparse_copy(src: &Path, dst: &Path) -> Result<()> {
    let s = File::open(src).map_err(Error::host_io("cannot open", src))?;
    let d = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .map_err(Error::host_io("cannot create", dst))?;
    let len = s
        .metadata()
        .map_err(Error::host_io("cannot stat", src))?
        .len();
    d.set_len(len).map_err(Error::host_io("cannot size", dst))?;
    let (sfd, dfd) = (s.as_raw_fd(), d.as_raw_fd());
    let mut pos: i64 = 0;
    while (pos as u64) < len {
        // SAFETY: plain lseek on an fd we own.
        let data = unsafe { libc::lseek(sfd, pos, libc::SEEK_DATA) };
        if data < 0 {
            break; // ENXIO: no more data.
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(sfd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(Error::host_io("cannot seek in", src)(
                std::io::Error::last_os_error(),
            ));
        }
        let (mut off_in, mut off_out) = (data, data);
        let mut left = (hole - data) as usize;
        while left > 0 {
            // SAFETY: offsets point at our own locals; fds are open.
            let n = unsafe { libc::copy_file_range(sfd, &mut off_in, dfd, &mut off_out, left, 0) };
            if n <= 0 {
                let e = std::io::Error::last_os_error();
                return Err(Error::host_io("cannot copy to", dst)(e));
            }
            left -= n as usize;
        }
        pos = hole;
    }
    Ok(())
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
    fn unknown_image_names_are_refused() {
        let e = Image::resolve("ubuntu").unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{e}");
        let e = Image::resolve("/nonexistent/x.ext4").unwrap_err();
        assert!(matches!(e, Error::BootFailed { stage: "image", .. }), "{e}");
    }
}
