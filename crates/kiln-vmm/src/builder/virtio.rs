//! virtio-mmio devices: one 4 KiB window and one GSI each, announced to the guest on the
//! kernel command line (`virtio_mmio.device=`). Queue notifications are KVM ioeventfds
//! (matched on the queue index written to QueueNotify) served by one event-loop thread;
//! interrupts are irqfds.

use std::sync::{Arc, Mutex};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use kvm_ioctls::{IoEventAddress, VmFd};
use vm_memory::GuestMemoryMmap;

use super::{device_err, DeviceError, StartError};
use crate::arch::layout::{IRQ_MAX, VIRTIO_IRQ_START, VIRTIO_MMIO_START};
use crate::config::{Drive, VmConfig};
use crate::devices::bus::Bus;
use crate::devices::virtio::{
    Block, MmioTransport, Net, Rng, Tap, VirtioDevice, Vsock, MMIO_REGION_SIZE, NOTIFY_REG_OFFSET,
};
use crate::exit::{ExitReason, ExitSignal};

/// Which device a setup error is about: a drive's errors are the drive's (the image
/// stage of a boot error), every other device's are the devices'.
enum Slot {
    Drive(String),
    Other(&'static str),
}

impl Slot {
    /// Maps an error setting up `part` of this device ("" for the device itself).
    fn err<E: Into<DeviceError>>(&self, part: &str) -> impl FnOnce(E) -> StartError {
        let (drive_id, what) = match self {
            Slot::Drive(id) => (Some(id.clone()), format!("drive '{id}'{part}")),
            Slot::Other(name) => (None, format!("{name}{part}")),
        };
        move |e| match drive_id {
            Some(drive_id) => StartError::Drive {
                drive_id,
                what,
                source: e.into(),
            },
            None => StartError::Device {
                what,
                source: e.into(),
            },
        }
    }
}

pub struct VirtioSet {
    pub cmdline_args: Vec<String>,
    pub transports: Vec<Arc<Mutex<MmioTransport>>>,
}

/// Attaches one virtio-blk per drive (in device order: /dev/vda, /dev/vdb, ...), a
/// virtio-rng, if configured a virtio-vsock (which creates its `uds_path` socket
/// now; dropping the set on a later failure removes it again), then one virtio-net per
/// network interface, on its TAP (last, so snapshots of VMs without one keep their
/// device order).
pub fn attach(
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    mmio: &mut Bus,
    drives: &[&Drive],
    cfg: &VmConfig,
) -> Result<VirtioSet, StartError> {
    let (vsock, nets) = (cfg.vsock.as_ref(), &cfg.network_interfaces);
    let mut devices: Vec<(Slot, Box<dyn VirtioDevice>)> = Vec::new();
    for d in drives {
        let slot = Slot::Drive(d.drive_id.clone());
        let mut blk = Block::new(
            std::path::Path::new(&d.path_on_host),
            d.is_read_only,
            &d.drive_id,
        )
        .map_err(slot.err(""))?;
        blk.set_metrics(crate::metrics::METRICS.drive(&d.drive_id));
        if let Some(l) = &d.rate_limiter {
            blk.set_rate_limiter(l);
        }
        devices.push((slot, Box::new(blk)));
    }
    let entropy = cfg
        .entropy
        .as_ref()
        .and_then(|e| e.rate_limiter)
        .unwrap_or_default();
    let rng = Rng::new(&entropy).map_err(Slot::Other("virtio-rng").err(""))?;
    devices.push((Slot::Other("virtio-rng"), Box::new(rng)));
    if let Some(v) = vsock {
        let slot = Slot::Other("vsock");
        let path = std::path::Path::new(&v.uds_path);
        let dev = Vsock::new(u64::from(v.guest_cid), path).map_err(slot.err(""))?;
        devices.push((slot, Box::new(dev)));
    }
    for n in nets {
        let slot = Slot::Other("virtio-net");
        let what = format!(" '{}'", n.iface_id);
        let tap = Tap::open(&n.host_dev_name).map_err(slot.err(&what))?;
        let mac = n.mac().map_err(StartError::Config)?;
        let (rx, tx) = (
            n.rx_rate_limiter.unwrap_or_default(),
            n.tx_rate_limiter.unwrap_or_default(),
        );
        let mut dev = Net::new(&n.iface_id, tap, mac, &rx, &tx).map_err(slot.err(&what))?;
        dev.set_metrics(crate::metrics::METRICS.net(&n.iface_id));
        devices.push((slot, Box::new(dev)));
    }

    let mut set = VirtioSet {
        cmdline_args: Vec::new(),
        transports: Vec::new(),
    };
    for (i, (slot, dev)) in devices.into_iter().enumerate() {
        let gsi = VIRTIO_IRQ_START + i as u32;
        if gsi > IRQ_MAX {
            let max = IRQ_MAX - VIRTIO_IRQ_START + 1;
            return Err(slot.err("")(DeviceError::TooMany { max }));
        }
        let base = VIRTIO_MMIO_START + i as u64 * MMIO_REGION_SIZE;
        let transport = MmioTransport::new(mem.clone(), dev).map_err(slot.err(""))?;
        for (q, evt) in transport.queue_evts().iter().enumerate() {
            vm.register_ioevent(
                evt,
                &IoEventAddress::Mmio(base + NOTIFY_REG_OFFSET),
                q as u32,
            )
            .map_err(slot.err(" ioeventfd"))?;
        }
        vm.register_irqfd(transport.irq_evt(), gsi)
            .map_err(slot.err(" irqfd"))?;
        let transport = Arc::new(Mutex::new(transport));
        mmio.insert(transport.clone(), base, MMIO_REGION_SIZE)
            .map_err(slot.err(""))?;
        set.transports.push(transport);
        set.cmdline_args
            .push(format!("virtio_mmio.device=4K@{base:#x}:{gsi}"));
    }
    Ok(set)
}

/// Serves the devices' queue eventfds (and backend fds, e.g. vsock's sockets) on one
/// thread until the process exits.
pub fn spawn_event_loop(
    transports: Vec<Arc<Mutex<MmioTransport>>>,
    exit: Arc<ExitSignal>,
) -> Result<(), StartError> {
    let mut em: EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>> =
        EventManager::new().map_err(|e| device_err("event loop")(DeviceError::EventLoop(e)))?;
    for t in transports {
        em.add_subscriber(t);
    }
    std::thread::Builder::new()
        .name("devices".into())
        .spawn(move || {
            crate::seccomp::enter("devices");
            loop {
                if let Err(e) = em.run() {
                    exit.exit(ExitReason::Error(format!(
                        "device event loop failed: {e:?}"
                    )));
                    return;
                }
            }
        })
        .map_err(device_err("event loop thread"))?;
    Ok(())
}
