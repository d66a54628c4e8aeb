//! The virtio-vsock packet header (virtio 1.2 §5.10.6) and bounds-checked copies of packets
//! out of tx descriptor chains and into rx descriptor chains.
//!
//! Nothing here allocates: a tx packet is gathered into the caller's bounce buffer, and an
//! rx chain is validated (every writable descriptor inside guest memory) before any byte is
//! taken from a host socket, so a bad rx chain never loses host data.

use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestMemoryBackend, GuestMemoryMmap};

/// Size of `struct virtio_vsock_hdr`.
pub const HDR_LEN: usize = 44;
/// Largest payload of one packet, both ways. Longer guest packets are refused with RST.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// The host's well-known CID.
pub const HOST_CID: u64 = 2;
/// `VIRTIO_VSOCK_TYPE_STREAM`, the only socket type offered.
pub const TYPE_STREAM: u16 = 1;

/// `VIRTIO_VSOCK_OP_*`.
pub mod op {
    pub const REQUEST: u16 = 1;
    pub const RESPONSE: u16 = 2;
    pub const RST: u16 = 3;
    pub const SHUTDOWN: u16 = 4;
    pub const RW: u16 = 5;
    pub const CREDIT_UPDATE: u16 = 6;
    pub const CREDIT_REQUEST: u16 = 7;
}

/// `VIRTIO_VSOCK_SHUTDOWN_RCV`: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// `VIRTIO_VSOCK_SHUTDOWN_SEND`: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;

/// `struct virtio_vsock_hdr`, host-endian (the wire format is little-endian).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

impl Header {
    pub fn from_bytes(b: &[u8; HDR_LEN]) -> Header {
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| (u64::from(u32_at(o + 4)) << 32) | u64::from(u32_at(o));
        Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    pub fn to_bytes(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// The RST answering `self` (a packet from the guest), with the ports swapped.
    pub fn rst_reply(&self) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: self.src_cid,
            src_port: self.dst_port,
            dst_port: self.src_port,
            type_: TYPE_STREAM,
            op: op::RST,
            ..Header::default()
        }
    }
}

/// Why a tx chain was refused. The variants after [`PacketError::ShortHeader`] carry the
/// parsed header, so the connection it names can be reset.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PacketError {
    #[error("a readable descriptor is outside guest memory")]
    BadBuffer,
    #[error("the chain has fewer than {HDR_LEN} readable bytes")]
    ShortHeader,
    #[error("payload length {} exceeds the {MAX_PAYLOAD}-byte cap", .0.len)]
    TooLarge(Header),
    #[error("payload length {} exceeds the chain's readable bytes", .0.len)]
    Truncated(Header),
    #[error("a payload descriptor is outside guest memory")]
    BadPayload(Header),
}

impl PacketError {
    /// The header, if it could be read.
    pub fn header(&self) -> Option<&Header> {
        match self {
            PacketError::TooLarge(h) | PacketError::Truncated(h) | PacketError::BadPayload(h) => {
                Some(h)
            }
            PacketError::BadBuffer | PacketError::ShortHeader => None,
        }
    }
}

/// Copies the readable part of a chain (the descriptors before the first writable one)
/// into `out`, from byte `skip` of the chain on; returns the bytes copied. Descriptors are
/// checked against guest memory only as far as they are read.
fn gather(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    mut skip: u64,
    out: &mut [u8],
) -> Result<usize, ()> {
    let mut done = 0usize;
    for desc in chain {
        if desc.is_write_only() || done == out.len() {
            break;
        }
        let len = u64::from(desc.len());
        if skip >= len {
            skip -= len;
            continue;
        }
        // `skip < len <= u32::MAX`, so the casts below are lossless.
        let avail = (len - skip) as usize;
        let n = avail.min(out.len() - done);
        let addr = desc.addr().checked_add(skip).ok_or(())?;
        mem.read_slice(&mut out[done..done + n], addr)
            .map_err(|_| ())?;
        skip = 0;
        done += n;
    }
    Ok(done)
}

/// Reads the header and payload of a tx chain. The payload lands in `payload[..len]`
/// (`payload` should hold [`MAX_PAYLOAD`] bytes); returns the header, whose `len` has been
/// checked against the cap, `payload` and the chain.
pub fn read_tx(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    payload: &mut [u8],
) -> Result<Header, PacketError> {
    let mut raw = [0u8; HDR_LEN];
    match gather(mem, chain.clone(), 0, &mut raw) {
        Ok(HDR_LEN) => {}
        Ok(_) => return Err(PacketError::ShortHeader),
        Err(()) => return Err(PacketError::BadBuffer),
    }
    let hdr = Header::from_bytes(&raw);
    let len = hdr.len as usize;
    let Some(dst) = payload.get_mut(..len).filter(|_| len <= MAX_PAYLOAD) else {
        return Err(PacketError::TooLarge(hdr));
    };
    match gather(mem, chain, HDR_LEN as u64, dst) {
        Ok(n) if n == len => Ok(hdr),
        Ok(_) => Err(PacketError::Truncated(hdr)),
        Err(()) => Err(PacketError::BadPayload(hdr)),
    }
}

/// Room in the writable descriptors of a chain, capped at `cap`; None if one of them (up
/// to the cap) is not entirely inside guest memory.
pub fn writable_room(
    mem: &GuestMemoryMmap,
    chain: &DescriptorChain<&GuestMemoryMmap>,
    cap: usize,
) -> Option<usize> {
    let mut room = 0usize;
    for desc in chain.clone().filter(|d| d.is_write_only()) {
        if room >= cap {
            break;
        }
        if !mem.check_range(desc.addr(), desc.len() as usize) {
            return None;
        }
        room = room.saturating_add(desc.len() as usize);
    }
    Some(room.min(cap))
}

/// Writes `parts` one after the other into the writable descriptors of a chain whose
/// [`writable_room`] covers them. Returns the bytes written.
pub fn scatter<const N: usize>(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    mut parts: [&[u8]; N],
) -> Result<usize, vm_memory::GuestMemoryError> {
    let mut written = 0usize;
    for desc in chain.filter(|d| d.is_write_only()) {
        if parts.iter().all(|p| p.is_empty()) {
            break;
        }
        let mut room = desc.len() as usize;
        let mut addr = desc.addr();
        for part in parts.iter_mut() {
            let n = room.min(part.len());
            if n == 0 {
                continue;
            }
            mem.write_slice(&part[..n], addr)?;
            *part = &part[n..];
            room -= n;
            written += n;
            addr = addr.unchecked_add(n as u64);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_little_endian() {
        let h = Header {
            src_cid: 0x0102_0304_0506_0708,
            dst_cid: 2,
            src_port: 0xaabb_ccdd,
            dst_port: 52,
            len: 7,
            type_: TYPE_STREAM,
            op: op::RW,
            flags: 3,
            buf_alloc: 1 << 18,
            fwd_cnt: 99,
        };
        let b = h.to_bytes();
        assert_eq!(b[0], 0x08);
        assert_eq!(b[7], 0x01);
        assert_eq!(&b[16..20], &[0xdd, 0xcc, 0xbb, 0xaa]);
        assert_eq!(&b[30..32], &[5, 0]);
        assert_eq!(Header::from_bytes(&b), h);
    }

    #[test]
    fn rst_reply_swaps_ends() {
        let h = Header {
            src_cid: 3,
            dst_cid: 2,
            src_port: 1000,
            dst_port: 52,
            op: op::RW,
            len: 5,
            ..Header::default()
        };
        let r = h.rst_reply();
        assert_eq!((r.src_cid, r.dst_cid), (2, 3));
        assert_eq!((r.src_port, r.dst_port), (52, 1000));
        assert_eq!((r.op, r.len, r.type_), (op::RST, 0, TYPE_STREAM));
    }
}
