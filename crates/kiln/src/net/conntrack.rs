//! The host's conntrack entries of a sandbox address, found and deleted over ctnetlink
//! (NETLINK_NETFILTER), so a torn-down sandbox leaves no connection state that a later
//! holder of its /30 would inherit. The namespace's own entries die with it.
//!
//! Written by hand: a dump and a delete are two messages, and the netlink crates kiln
//! uses speak rtnetlink only. Every length in the kernel's answer is bounds-checked.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NETLINK_NETFILTER: libc::c_int = 12;
const CT_NEW: u16 = 1 << 8; // NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW
const CT_GET: u16 = (1 << 8) | 1;
const CT_DELETE: u16 = (1 << 8) | 2;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const NLA_TYPE_MASK: u16 = 0x3fff;
const HDR: usize = 16; // nlmsghdr
const NFGEN: usize = 4; // nfgenmsg

/// The attributes in `buf`: (type without flags, the whole attribute, its payload).
fn attrs(mut buf: &[u8]) -> Vec<(u16, &[u8], &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((kind, &buf[..len], &buf[4..len]));
        buf = &buf[((len + 3) & !3).min(buf.len())..];
    }
    out
}

fn find(buf: &[u8], kind: u16) -> Option<&[u8]> {
    attrs(buf).into_iter().find(|a| a.0 == kind).map(|a| a.2)
}

/// The IPv4 source and destination of a tuple attribute's payload.
fn tuple_addrs(tuple: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let ip = find(tuple, CTA_TUPLE_IP)?;
    let four = |k| -> Option<Ipv4Addr> {
        let v: [u8; 4] = find(ip, k)?.try_into().ok()?;
        Some(Ipv4Addr::from(v))
    };
    Some((four(CTA_IP_V4_SRC)?, four(CTA_IP_V4_DST)?))
}

struct Socket(OwnedFd);

impl Socket {
    fn new() -> io::Result<Socket> {
        // SAFETY: plain socket call; the fd is checked and owned.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is fresh and ours.
        let s = Socket(unsafe { OwnedFd::from_raw_fd(fd) });
        let tv = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: a timeval option of the right size on our socket.
        unsafe {
            libc::setsockopt(
                s.0.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            );
        }
        Ok(s)
    }

    fn send(&self, kind: u16, flags: u16, payload: &[u8]) -> io::Result<()> {
        let len = HDR + NFGEN + payload.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&(flags | libc::NLM_F_REQUEST as u16).to_ne_bytes());
        msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
        msg.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel's
        msg.extend_from_slice(&[libc::AF_INET as u8, 0, 0, 0]); // nfgenmsg
        msg.extend_from_slice(payload);
        // SAFETY: sending an initialised buffer of `len` bytes to the kernel (address 0).
        let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: msg and `to` live across the call; the lengths are theirs.
        let n = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                msg.as_ptr() as *const libc::c_void,
                msg.len(),
                0,
                &to as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads messages until DONE or an error/ack, handing each (type, payload past
    /// nfgenmsg) to `each`. An ack's errno (0: fine) ends the reading.
    fn read(&self, mut each: impl FnMut(u16, &[u8])) -> io::Result<()> {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            // SAFETY: receiving into a buffer we own, of its length.
            let n = unsafe {
                libc::recv(
                    self.0.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= HDR {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let kind = u16::from_ne_bytes([rest[4], rest[5]]);
                if len < HDR || len > rest.len() {
                    return Err(io::Error::other("malformed ctnetlink answer"));
                }
                let body = &rest[HDR..len];
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let errno = body
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(0);
                        return if errno == 0 {
                            Ok(())
                        } else {
                            Err(io::Error::from_raw_os_error(-errno))
                        };
                    }
                    _ => each(kind, body.get(NFGEN..).unwrap_or(&[])),
                }
                rest = &rest[((len + 3) & !3).min(rest.len())..];
            }
        }
    }
}

/// The original-direction tuples (raw attributes, with the zone if any) of every entry
/// whose original source or destination is `addr`.
fn matching(addr: Ipv4Addr) -> io::Result<Vec<Vec<u8>>> {
    let s = Socket::new()?;
    s.send(CT_GET, libc::NLM_F_DUMP as u16, &[])?;
    let mut found = Vec::new();
    s.read(|kind, body| {
        if kind != CT_NEW {
            return;
        }
        let all = attrs(body);
        let orig = all.iter().find(|a| a.0 == CTA_TUPLE_ORIG);
        let hit = |k: u16| {
            all.iter()
                .find(|a| a.0 == k)
                .and_then(|a| tuple_addrs(a.2))
                .is_some_and(|(s, d)| s == addr || d == addr)
        };
        if let Some(orig) = orig {
            if hit(CTA_TUPLE_ORIG) || hit(CTA_TUPLE_REPLY) {
                let mut key = orig.1.to_vec();
                key.resize((key.len() + 3) & !3, 0);
                if let Some(zone) = all.iter().find(|a| a.0 == CTA_ZONE) {
                    key.extend_from_slice(zone.1);
                    key.resize((key.len() + 3) & !3, 0);
                }
                found.push(key);
            }
        }
    })?;
    Ok(found)
}

/// How many of this namespace's conntrack entries involve `addr`.
pub fn count(addr: Ipv4Addr) -> io::Result<usize> {
    match matching(addr) {
        Ok(v) => Ok(v.len()),
        // No conntrack in this kernel or namespace: nothing to count.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EPROTONOSUPPORT | libc::EOPNOTSUPP)
            ) =>
        {
            Ok(0)
        }
        Err(e) => Err(e),
    }
}

/// Deletes this namespace's conntrack entries that involve `addr`.
pub fn flush(addr: Ipv4Addr) -> io::Result<()> {
    let entries = match matching(addr) {
        Ok(v) => v,
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EPROTONOSUPPORT | libc::EOPNOTSUPP)
            ) =>
        {
            return Ok(())
        }
        Err(e) => return Err(e),
    };
    let s = Socket::new()?;
    for key in entries {
        s.send(CT_DELETE, libc::NLM_F_ACK as u16, &key)?;
        match s.read(|_, _| {}) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {} // expired meanwhile
            r => r?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = ((4 + payload.len()) as u16).to_ne_bytes().to_vec();
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(payload);
        v.resize((v.len() + 3) & !3, 0);
        v
    }

    #[test]
    fn tuples_parse_and_garbage_is_refused_without_panicking() {
        let ip = [
            attr(CTA_IP_V4_SRC, &[10, 200, 0, 2]),
            attr(CTA_IP_V4_DST, &[198, 51, 100, 10]),
        ]
        .concat();
        let tuple = attr(CTA_TUPLE_IP | 0x8000, &ip);
        assert_eq!(
            tuple_addrs(&tuple),
            Some((
                Ipv4Addr::new(10, 200, 0, 2),
                Ipv4Addr::new(198, 51, 100, 10)
            ))
        );
        // Lengths past the end, under 4, and short addresses.
        for bad in [
            vec![200, 0, 1, 0, 1],
            vec![2, 0, 1, 0],
            attr(CTA_TUPLE_IP, &attr(CTA_IP_V4_SRC, &[1, 2])),
        ] {
            assert_eq!(tuple_addrs(&bad), None);
        }
    }
}
