//! virtio-net driven through virtqueues in plain memory, on a real TAP in a network
//! namespace of the test's own (a thread that unshared CLONE_NEWNET: the namespace,
//! its TAP and sockets are gone when the thread ends, however it ends). The far side of
//! the TAP is an AF_PACKET socket on the interface: what it sends the guest receives on
//! rx, what the guest sends on tx it receives.
//!
//! These tests need root (CAP_NET_ADMIN) and /dev/net/tun; without them they fail and say
//! so, they do not pass silently.

mod frames;
mod malformed;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::tap::IfReq;
use super::{Net, Tap};
use crate::devices::rate_limiter::RateLimiterConfig;
use crate::devices::virtio::test_utils::{guest_mem, TestQueue};

/// The TAP every test makes in its own namespace.
pub const TAP_NAME: &str = "kilnt0";
pub const GUEST_MAC: [u8; 6] = [0x06, 0, 0xac, 0x10, 0, 2];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
/// Ethertypes of the test's frames (IEEE local experimental), to skip anything else.
pub const TO_GUEST: u16 = 0x88b5;
pub const FROM_GUEST: u16 = 0x88b6;
pub const RXQ_BASE: u64 = 0x1000;
pub const TXQ_BASE: u64 = 0x3000;
pub const QSIZE: u16 = 256;

/// Runs `f` on a thread in a new network namespace with the TAP made and up.
pub fn in_netns<F: FnOnce() + Send + 'static>(f: F) {
    let r = std::thread::spawn(move || {
        // SAFETY: unshare with a flag only changes this thread's namespaces.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            panic!(
                "cannot make a network namespace for the TAP test: unshare(CLONE_NEWNET): {}; \
                 run the kiln-vmm tests as root",
                io::Error::last_os_error()
            );
        }
        if let Err(e) = make_tap(TAP_NAME) {
            panic!(
                "cannot make TAP {TAP_NAME} for the test: {e}; the test needs /dev/net/tun \
                 (modprobe tun) and CAP_NET_ADMIN"
            );
        }
        f()
    })
    .join();
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A persistent TAP `name`, IPv6 off (no router solicitations on it), up, no ARP.
fn make_tap(name: &str) -> io::Result<()> {
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let mut req = IfReq::new(name, libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR);
    // SAFETY: TUNSETIFF reads one ifreq; TUNSETPERSIST takes an int by value.
    unsafe {
        check(libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req))?;
        check(libc::ioctl(
            tun.as_raw_fd(),
            libc::TUNSETPERSIST,
            1 as libc::c_int,
        ))?;
    }
    drop(tun);
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
    // SAFETY: a plain socket for interface ioctls, owned right away.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    check(sock)?;
    // SAFETY: `sock` is a fresh fd.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    let mut req = IfReq::new(name, 0);
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write one ifreq.
    unsafe {
        check(libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req))?;
        req.flags |= (libc::IFF_UP | libc::IFF_NOARP) as libc::c_short;
        check(libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req))?;
    }
    Ok(())
}

/// The far side of the TAP: a packet socket bound to it that ignores its own frames.
pub struct Peer {
    fd: OwnedFd,
}

impl Peer {
    pub fn new() -> Peer {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: creating a socket; the fd is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        };
        check(fd).expect("AF_PACKET socket");
        // SAFETY: `fd` is a fresh fd.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let c = std::ffi::CString::new(TAP_NAME).unwrap();
        // SAFETY: valid NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
        assert!(ifindex > 0, "TAP {TAP_NAME} vanished");
        // SAFETY: all-zero sockaddr_ll is valid; fields are set below.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = proto;
        sa.sll_ifindex = ifindex as i32;
        let one: libc::c_int = 1;
        // SAFETY: bind with a sockaddr_ll of its size; setsockopt reads one int
        // (PACKET_IGNORE_OUTGOING = 23).
        unsafe {
            check(libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            ))
            .expect("bind the packet socket");
            check(libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                23,
                (&one as *const libc::c_int).cast(),
                4,
            ))
            .expect("PACKET_IGNORE_OUTGOING");
        }
        Peer { fd }
    }

    /// Sends an Ethernet frame to the guest (out of the TAP).
    pub fn send(&self, frame: &[u8]) {
        // SAFETY: reads `frame.len()` bytes of `frame`.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(n, frame.len() as isize, "{}", io::Error::last_os_error());
    }

    /// The next frame from the guest (ethertype FROM_GUEST), waiting up to 5 s for it.
    pub fn recv(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 70_000];
        loop {
            if !wait_readable(self.fd.as_raw_fd(), 5000) {
                return None;
            }
            // SAFETY: writes at most `buf.len()` bytes into `buf`.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 14 {
                continue;
            }
            if u16::from_be_bytes([buf[12], buf[13]]) == FROM_GUEST {
                buf.truncate(n as usize);
                return Some(buf);
            }
        }
    }

    /// Frames from the guest that arrive without waiting.
    pub fn drain(&self) -> usize {
        let mut buf = vec![0u8; 70_000];
        let mut got = 0;
        while wait_readable(self.fd.as_raw_fd(), 200) {
            // SAFETY: as in `recv`.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n >= 14 && u16::from_be_bytes([buf[12], buf[13]]) == FROM_GUEST {
                got += 1;
            }
        }
        got
    }
}

/// Polls `fd` for input (a wait for an event, not a timing assertion).
pub fn wait_readable(fd: i32, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) == 1 }
}

/// An Ethernet frame of `ethertype` with `payload`.
pub fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let (dst, src) = if ethertype == TO_GUEST {
        (GUEST_MAC, PEER_MAC)
    } else {
        (PEER_MAC, GUEST_MAC)
    };
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The device on the test's TAP with its two queues and guest memory.
pub struct Rig {
    pub mem: GuestMemoryMmap,
    pub dev: Net,
    pub rxq: TestQueue,
    pub txq: TestQueue,
    pub queues: Vec<Queue>,
    pub peer: Peer,
}

/// The fake clock of the limiter tests (nanoseconds).
pub static CLOCK: AtomicU64 = AtomicU64::new(0);

fn fake_now() -> u64 {
    CLOCK.load(Ordering::SeqCst)
}

impl Rig {
    pub fn new() -> Rig {
        Self::with_limits(&RateLimiterConfig::default(), &RateLimiterConfig::default())
    }

    pub fn with_limits(rx: &RateLimiterConfig, tx: &RateLimiterConfig) -> Rig {
        let mem = guest_mem();
        let tap = Tap::open(TAP_NAME).expect("open the test's TAP");
        let mut dev = Net::new("eth0", tap, Some(GUEST_MAC), rx, tx).unwrap();
        dev.set_clock(fake_now);
        let rxq = TestQueue::new(&mem, RXQ_BASE, QSIZE);
        let txq = TestQueue::new(&mem, TXQ_BASE, QSIZE);
        let queues = vec![rxq.queue(), txq.queue()];
        Rig {
            mem,
            dev,
            rxq,
            txq,
            queues,
            peer: Peer::new(),
        }
    }

    /// Writes a zero vnet header and `frame` at `addr`; returns the length.
    pub fn put_frame(&self, addr: u64, frame: &[u8]) -> u32 {
        self.mem
            .write_slice(&[0u8; 12], GuestAddress(addr))
            .unwrap();
        self.mem
            .write_slice(frame, GuestAddress(addr + 12))
            .unwrap();
        12 + frame.len() as u32
    }

    pub fn kick(&mut self, q: usize) -> bool {
        use crate::devices::virtio::VirtioDevice;
        self.dev.process_queue(q, &mut self.queues, &self.mem)
    }

    /// Waits for the device's backend fd (the TAP or a limiter timer), then serves it.
    pub fn backend(&mut self) -> bool {
        use crate::devices::virtio::VirtioDevice;
        let fd = self.dev.backend_fd().unwrap();
        assert!(
            wait_readable(fd, 5000),
            "the backend fd never became readable"
        );
        self.dev.process_backend(Some(&mut self.queues), &self.mem)
    }

    pub fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}
