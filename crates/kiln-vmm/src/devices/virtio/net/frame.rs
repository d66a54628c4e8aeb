//! Moving one frame between a descriptor chain and a host buffer, bounds-checked.

use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestMemoryMmap};

use super::MAX_FRAME;

/// Why a chain could not carry its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a tx descriptor is device-writable")]
    WriteOnly,
    #[error("an rx descriptor is not device-writable")]
    ReadOnly,
    #[error("the chain holds more than {MAX_FRAME} bytes")]
    Oversize,
    #[error("the chain is shorter than the frame or its header")]
    TooShort,
    #[error("a descriptor is outside guest memory")]
    BadAddress,
    #[error("the chain loops or links past the queue")]
    Broken,
}

/// Copies a tx chain (device-readable descriptors only) into `buf`; returns its length.
pub fn gather(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    buf: &mut [u8],
) -> Result<usize, FrameError> {
    let mut len = 0usize;
    let mut more = false;
    for d in chain {
        more = d.has_next();
        if d.is_write_only() {
            return Err(FrameError::WriteOnly);
        }
        let n = d.len() as usize;
        let end = len
            .checked_add(n)
            .filter(|&e| e <= buf.len())
            .ok_or(FrameError::Oversize)?;
        mem.read_slice(&mut buf[len..end], d.addr())
            .map_err(|_| FrameError::BadAddress)?;
        len = end;
    }
    // The chain iterator stops at the queue size or a next index past the queue: a
    // chain that ends on a NEXT flag was cut there.
    if more {
        return Err(FrameError::Broken);
    }
    Ok(len)
}

/// Copies `frame` into an rx chain (device-writable descriptors only); returns the
/// bytes written (the frame's length).
pub fn scatter(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    frame: &[u8],
) -> Result<u32, FrameError> {
    let mut done = 0usize;
    let mut more = false;
    for d in chain {
        if done == frame.len() {
            more = false;
            break;
        }
        more = d.has_next();
        if !d.is_write_only() {
            return Err(FrameError::ReadOnly);
        }
        let n = (d.len() as usize).min(frame.len() - done);
        mem.write_slice(&frame[done..done + n], d.addr())
            .map_err(|_| FrameError::BadAddress)?;
        done += n;
    }
    if more {
        return Err(FrameError::Broken);
    }
    if done < frame.len() {
        return Err(FrameError::TooShort);
    }
    // At most MAX_FRAME bytes.
    Ok(done as u32)
}
