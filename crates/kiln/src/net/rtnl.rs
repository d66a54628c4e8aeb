//! Links, addresses and routes over rtnetlink, from the calling thread's namespace.
//!
//! rtnetlink is async; each [`Rtnl`] owns a current-thread tokio runtime and blocks on
//! one request at a time, so callers stay synchronous like the rest of the library. Its
//! socket belongs to the namespace of the thread that made it: make one inside
//! [`super::netns::run_in`] to work in a sandbox namespace.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::RawFd;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo};
use rtnetlink::packet_route::route::{RouteAttribute, RouteMessage};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};

/// An rtnetlink error as an io::Error with the kernel's errno where there is one.
fn to_io(e: rtnetlink::Error) -> io::Error {
    match &e {
        rtnetlink::Error::NetlinkError(m) => match m.code {
            Some(code) => io::Error::from_raw_os_error(-code.get()),
            None => io::Error::other(e.to_string()),
        },
        _ => io::Error::other(e.to_string()),
    }
}

pub struct Rtnl {
    rt: tokio::runtime::Runtime,
    handle: Handle,
}

impl Rtnl {
    /// A connection in the calling thread's namespace.
    pub fn new() -> io::Result<Rtnl> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        let handle = rt.block_on(async {
            let (conn, handle, _) = rtnetlink::new_connection()?;
            tokio::spawn(conn);
            Ok::<_, io::Error>(handle)
        })?;
        Ok(Rtnl { rt, handle })
    }

    /// The index of link `name`, if it exists.
    pub fn index(&self, name: &str) -> io::Result<Option<u32>> {
        let req = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match self.rt.block_on(Box::pin(req).try_next()) {
            Ok(m) => Ok(m.map(|m| m.header.index)),
            Err(e) => match to_io(e) {
                e if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
                e => Err(e),
            },
        }
    }

    fn need(&self, name: &str) -> io::Result<u32> {
        self.index(name)?
            .ok_or_else(|| io::Error::other(format!("link {name} does not exist")))
    }

    /// The names of every link.
    pub fn links(&self) -> io::Result<Vec<String>> {
        let req = self.handle.link().get().execute();
        let msgs: Vec<_> = self.rt.block_on(req.try_collect()).map_err(to_io)?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| {
                m.attributes.into_iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n),
                    _ => None,
                })
            })
            .collect())
    }

    /// A veth pair: `name` here, `peer` made directly in the namespace behind `peer_ns`.
    pub fn add_veth(&self, name: &str, peer: &str, peer_ns: RawFd) -> io::Result<()> {
        let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.to_string())
            .mtu(super::config::MTU)
            .setns_by_fd(peer_ns)
            .build();
        let msg = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
            .name(name.to_string())
            .mtu(super::config::MTU)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .build();
        let req = self.handle.link().add(msg).execute();
        self.rt.block_on(req).map_err(to_io)
    }

    /// Sets link `name` up, optionally with a MAC address first.
    pub fn up(&self, name: &str, mac: Option<[u8; 6]>) -> io::Result<()> {
        let index = self.need(name)?;
        let mut b = LinkUnspec::new_with_index(index).up();
        if let Some(mac) = mac {
            b = b.address(mac.to_vec());
        }
        let req = self.handle.link().set(b.build()).execute();
        self.rt.block_on(req).map_err(to_io)
    }

    /// Deletes link `name` (gone already: fine).
    pub fn delete(&self, name: &str) -> io::Result<()> {
        let Some(index) = self.index(name)? else {
            return Ok(());
        };
        match self.rt.block_on(self.handle.link().del(index).execute()) {
            Err(e) => match to_io(e) {
                e if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
                e => Err(e),
            },
            Ok(()) => Ok(()),
        }
    }

    pub fn add_addr(&self, name: &str, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let index = self.need(name)?;
        let req = self
            .handle
            .address()
            .add(index, addr.into(), prefix)
            .execute();
        self.rt.block_on(req).map_err(to_io)
    }

    /// The default route through `gateway`.
    pub fn add_default_route(&self, gateway: Ipv4Addr) -> io::Result<()> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .build();
        let req = self.handle.route().add(msg).execute();
        self.rt.block_on(req).map_err(to_io)
    }

    /// The link a packet to `dst` leaves by (`ip route get`), and its gateway if any.
    pub fn route_to(&self, dst: Ipv4Addr) -> io::Result<(String, Option<Ipv4Addr>)> {
        let msg: RouteMessage = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, 32)
            .build();
        let req = self.handle.route().get(msg).execute();
        let found = self.rt.block_on(Box::pin(req).try_next()).map_err(to_io)?;
        let found = found.ok_or_else(|| io::Error::other(format!("no route to {dst}")))?;
        let mut oif = None;
        let mut via = None;
        for a in found.attributes {
            match a {
                RouteAttribute::Oif(i) => oif = Some(i),
                RouteAttribute::Gateway(rtnetlink::packet_route::route::RouteAddress::Inet(g)) => {
                    via = Some(g)
                }
                _ => {}
            }
        }
        let oif = oif.ok_or_else(|| io::Error::other(format!("route to {dst} has no device")))?;
        let req = self.handle.link().get().match_index(oif).execute();
        let link = self.rt.block_on(Box::pin(req).try_next()).map_err(to_io)?;
        let name = link
            .and_then(|m| {
                m.attributes.into_iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n),
                    _ => None,
                })
            })
            .ok_or_else(|| io::Error::other(format!("link {oif} vanished")))?;
        Ok((name, via))
    }

    /// The kind (`veth`, `tun`, …) of link `name` and its tun owner uid, if it has one.
    pub fn kind_and_tun_owner(&self, name: &str) -> io::Result<(Option<String>, Option<u32>)> {
        use rtnetlink::packet_core::Nla;
        let index = self.need(name)?;
        let req = self.handle.link().get().match_index(index).execute();
        let msg = self.rt.block_on(Box::pin(req).try_next()).map_err(to_io)?;
        let (mut kind, mut owner) = (None, None);
        let infos = msg
            .into_iter()
            .flat_map(|m| m.attributes)
            .filter_map(|a| match a {
                LinkAttribute::LinkInfo(i) => Some(i),
                _ => None,
            });
        for info in infos.flatten() {
            match info {
                LinkInfo::Kind(k) => kind = Some(k.to_string()),
                LinkInfo::Data(InfoData::Tun(attrs)) => {
                    for a in attrs {
                        // IFLA_TUN_OWNER (1): a u32 uid.
                        let mut v = vec![0u8; a.value_len()];
                        a.emit_value(&mut v);
                        if a.kind() == 1 && v.len() == 4 {
                            owner = Some(u32::from_ne_bytes([v[0], v[1], v[2], v[3]]));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok((kind, owner))
    }
}
