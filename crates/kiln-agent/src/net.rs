//! `kiln.net=`: the guest's `eth0`, set up before the first command runs. The address,
//! gateway and MTU come from the kernel command line; they are the same in every
//! sandbox (docs/NETWORK.md), so a restored or forked guest keeps them unchanged.
//! `/etc/resolv.conf` names the gateway, where the sandbox's DNS answers.

use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// The interface kiln's NIC is in the guest.
pub const IFACE: &str = "eth0";

/// `kiln.net=<addr>/<prefix>,<gateway>[,<mtu>]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetSpec {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
}

/// The MTU when `kiln.net=` names none.
pub const DEFAULT_MTU: u32 = 1500;

impl NetSpec {
    /// Parses the value of `kiln.net=`; `None` if any field is malformed, the prefix is
    /// outside 1..=30, the gateway is not in the address's subnet (or is the address),
    /// or the MTU is outside 68..=65535.
    pub fn parse(value: &str) -> Option<NetSpec> {
        let mut fields = value.split(',');
        let (addr, prefix) = fields.next()?.split_once('/')?;
        let addr: Ipv4Addr = addr.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        let gateway: Ipv4Addr = fields.next()?.parse().ok()?;
        let mtu = match fields.next() {
            Some(m) => m.parse().ok()?,
            None => DEFAULT_MTU,
        };
        if fields.next().is_some() || !(1..=30).contains(&prefix) || !(68..=65535).contains(&mtu) {
            return None;
        }
        let spec = NetSpec {
            addr,
            prefix,
            gateway,
            mtu,
        };
        let mask = spec.netmask_bits();
        let same_subnet = u32::from(addr) & mask == u32::from(gateway) & mask;
        (same_subnet && addr != gateway).then_some(spec)
    }

    fn netmask_bits(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix))
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.netmask_bits())
    }
}

fn sockaddr(a: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(a).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; the kernel reads it as the
    // family says.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    ifr
}

/// `e` with what failed in front ("set the MTU: Invalid argument").
fn context(what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn check(what: &str, rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        return Ok(());
    }
    Err(context(what, io::Error::last_os_error()))
}

/// An AF_INET datagram socket: the handle interface and route ioctls go through.
pub(crate) fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: a plain socket call; the fd is checked and wrapped below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a freshly created descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets IFF_UP and IFF_RUNNING on interface `name` (SIOCGIFFLAGS, then SIOCSIFFLAGS),
/// through `sock` ([`ioctl_socket`]); the error is the kernel's.
pub(crate) fn set_up(sock: &OwnedFd, name: &str) -> io::Result<()> {
    let mut ifr = ifreq(name);
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write an ifreq we own; the union field
    // used is ifru_flags, which these requests define.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) != 0 {
            return Err(io::Error::last_os_error());
        }
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Gives `eth0` the address, netmask and MTU of `spec`, sets it up and adds the default
/// route through the gateway (an existing one is kept).
pub fn configure(spec: &NetSpec) -> io::Result<()> {
    let sock = ioctl_socket()?;
    let s = sock.as_raw_fd();
    // SAFETY: each ioctl below reads or writes an ifreq or rtentry we own, through the
    // union field its request defines; rtentry is plain data, valid all-zero.
    unsafe {
        let mut ifr = ifreq(IFACE);
        ifr.ifr_ifru.ifru_addr = sockaddr(spec.addr);
        check("set the address", libc::ioctl(s, libc::SIOCSIFADDR, &ifr))?;
        let mut ifr = ifreq(IFACE);
        ifr.ifr_ifru.ifru_netmask = sockaddr(spec.netmask());
        check(
            "set the netmask",
            libc::ioctl(s, libc::SIOCSIFNETMASK, &ifr),
        )?;
        let mut ifr = ifreq(IFACE);
        ifr.ifr_ifru.ifru_mtu = spec.mtu as libc::c_int;
        check("set the MTU", libc::ioctl(s, libc::SIOCSIFMTU, &ifr))?;
        set_up(&sock, IFACE).map_err(|e| context("set it up", e))?;
        let mut rt: libc::rtentry = std::mem::zeroed();
        rt.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
        rt.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
        rt.rt_gateway = sockaddr(spec.gateway);
        rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
        if libc::ioctl(s, libc::SIOCADDRT, &rt) != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(context("add the default route", e));
            }
        }
    }
    Ok(())
}

/// The resolv.conf naming the gateway.
pub fn resolv_conf(spec: &NetSpec) -> String {
    format!(
        "# written by kiln-agent: the sandbox's DNS is its gateway\nnameserver {}\n",
        spec.gateway
    )
}

/// Writes `<etc>/resolv.conf` (a symlink there, e.g. to a resolver's runtime file that
/// does not exist in a sandbox, is replaced by a file).
pub fn write_resolv_conf(etc: &Path, spec: &NetSpec) -> io::Result<()> {
    let path = etc.join("resolv.conf");
    if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
        fs::remove_file(&path)?;
    }
    fs::write(&path, resolv_conf(spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kiln_net() {
        let s = NetSpec::parse("169.254.0.2/30,169.254.0.1").unwrap();
        assert_eq!(s.addr, Ipv4Addr::new(169, 254, 0, 2));
        assert_eq!(s.gateway, Ipv4Addr::new(169, 254, 0, 1));
        assert_eq!((s.prefix, s.mtu), (30, DEFAULT_MTU));
        assert_eq!(s.netmask(), Ipv4Addr::new(255, 255, 255, 252));
        let m = NetSpec::parse("10.0.0.2/24,10.0.0.1,9000").unwrap();
        assert_eq!(m.mtu, 9000);
    }

    #[test]
    fn refuses_malformed_kiln_net() {
        for bad in [
            "",
            "169.254.0.2",
            "169.254.0.2/30",
            "169.254.0.2/31,169.254.0.3",
            "169.254.0.2/0,1.2.3.4",
            "169.254.0.2/30,169.254.0.5",
            "169.254.0.2/30,169.254.0.2",
            "169.254.0.2/30,169.254.0.1,67",
            "169.254.0.2/30,169.254.0.1,70000",
            "169.254.0.2/30,169.254.0.1,1500,x",
            "300.0.0.1/24,300.0.0.2",
        ] {
            assert_eq!(NetSpec::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn resolv_conf_names_the_gateway_and_replaces_a_symlink() {
        let dir = std::env::temp_dir().join(format!("kiln-agent-resolv-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink("/nonexistent/stub-resolv.conf", dir.join("resolv.conf"))
            .unwrap();
        let spec = NetSpec::parse("169.254.0.2/30,169.254.0.1").unwrap();
        write_resolv_conf(&dir, &spec).unwrap();
        let text = fs::read_to_string(dir.join("resolv.conf")).unwrap();
        assert!(text.contains("nameserver 169.254.0.1\n"), "{text}");
        assert!(!fs::symlink_metadata(dir.join("resolv.conf"))
            .unwrap()
            .file_type()
            .is_symlink());
        fs::remove_dir_all(&dir).unwrap();
    }
}
