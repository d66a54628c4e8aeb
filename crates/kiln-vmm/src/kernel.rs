//! Loads the guest kernel (ELF `vmlinux`, or a bzImage) and its initrd into memory.

use std::fs::File;

use linux_loader::loader::{bootparam::setup_header, BzImage, Elf, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::arch::boot_params::{place_initrd, InitrdPlacement};
use crate::arch::layout::HIMEM_START;
use crate::host_file::{self, Accept};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot open {what} '{path}': {source}")]
    Open {
        what: BootFile,
        path: String,
        source: std::io::Error,
    },
    #[error("kernel image '{path}' is neither an x86-64 ELF vmlinux nor a bzImage (ELF: {elf}; bzImage: {bz})")]
    Format {
        path: String,
        elf: String,
        bz: String,
    },
    #[error("initrd '{path}' ({size} bytes) does not fit in guest memory above the kernel; give the VM more memory")]
    InitrdTooBig { path: String, size: u64 },
    #[error("cannot copy initrd '{path}' into guest memory: {source}")]
    InitrdCopy {
        path: String,
        source: vm_memory::GuestMemoryError,
    },
}

/// Which boot file a [`LoadError::Open`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootFile {
    Kernel,
    Initrd,
}

impl std::fmt::Display for BootFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BootFile::Kernel => "kernel image",
            BootFile::Initrd => "initrd",
        })
    }
}

/// Where the kernel landed.
pub struct LoadedKernel {
    pub entry: u64,
    pub end: u64,
    /// The bzImage's setup header, to be merged into the zero page.
    pub setup_header: Option<setup_header>,
}

/// Opens a boot file without blocking on a FIFO or device (refused: see
/// [`crate::host_file`]); the path was checked at the PUT, but may have changed since.
fn open(what: BootFile, path: &str) -> Result<File, LoadError> {
    host_file::open(std::path::Path::new(path), false, Accept::File).map_err(|source| {
        LoadError::Open {
            what,
            path: path.into(),
            source,
        }
    })
}

/// Loads the kernel at `path` and returns its 64-bit entry point.
pub fn load_kernel(mem: &GuestMemoryMmap, path: &str) -> Result<LoadedKernel, LoadError> {
    let mut file = open(BootFile::Kernel, path)?;
    let himem = Some(GuestAddress(HIMEM_START));
    let elf = match Elf::load(mem, None, &mut file, himem) {
        Ok(r) => {
            return Ok(LoadedKernel {
                entry: r.kernel_load.0,
                end: r.kernel_end,
                setup_header: None,
            })
        }
        Err(e) => e,
    };
    match BzImage::load(mem, None, &mut file, himem) {
        // The 64-bit entry point of a bzImage is 0x200 past its protected-mode start.
        Ok(r) => Ok(LoadedKernel {
            entry: r.kernel_load.0 + 0x200,
            end: r.kernel_end,
            setup_header: r.setup_header,
        }),
        Err(bz) => Err(LoadError::Format {
            path: path.into(),
            elf: elf.to_string(),
            bz: bz.to_string(),
        }),
    }
}

/// Copies the initrd at `path` to the top of low memory.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    kernel_end: u64,
    path: &str,
) -> Result<InitrdPlacement, LoadError> {
    let mut file = open(BootFile::Initrd, path)?;
    let size = file
        .metadata()
        .map_err(|source| LoadError::Open {
            what: BootFile::Initrd,
            path: path.into(),
            source,
        })?
        .len();
    let place = place_initrd(mem_size, kernel_end, size).ok_or(LoadError::InitrdTooBig {
        path: path.into(),
        size,
    })?;
    mem.read_exact_volatile_from(GuestAddress(place.addr), &mut file, size as usize)
        .map_err(|source| LoadError::InitrdCopy {
            path: path.into(),
            source,
        })?;
    Ok(place)
}
