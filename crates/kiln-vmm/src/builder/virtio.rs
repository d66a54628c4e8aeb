//! virtio-mmio devices: one 4 KiB window and one GSI each, announced to the guest on the
//! kernel command line (`virtio_mmio.device=`). Queue notifications are KVM ioeventfds
//! (matched on the queue index written to QueueNotify) served by one event-loop thread;
//! interrupts are irqfds.

use std::sync::{Arc, Mutex};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use kvm_ioctls::{IoEventAddress, VmFd};
use vm_memory::GuestMemoryMmap;

use super::{device_err, StartError};
use crate::arch::layout::{IRQ_MAX, VIRTIO_IRQ_START, VIRTIO_MMIO_START};
use crate::config::{Drive, VsockConfig};
use crate::devices::bus::Bus;
use crate::devices::virtio::{
    Block, MmioTransport, Rng, VirtioDevice, Vsock, MMIO_REGION_SIZE, NOTIFY_REG_OFFSET,
};
use crate::exit::{ExitReason, ExitSignal};

pub struct VirtioSet {
    pub cmdline_args: Vec<String>,
    pub transports: Vec<Arc<Mutex<MmioTransport>>>,
}

/// Attaches one virtio-blk per drive (in device order: /dev/vda, /dev/vdb, ...), a
/// virtio-rng and, if configured, a virtio-vsock (which creates its `uds_path` socket
/// now; dropping the set on a later failure removes it again).
pub fn attach(
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    mmio: &mut Bus,
    drives: &[&Drive],
    vsock: Option<&VsockConfig>,
) -> Result<VirtioSet, StartError> {
    let mut devices: Vec<(String, Box<dyn VirtioDevice>)> = Vec::new();
    for d in drives {
        let mut blk = Block::new(
            std::path::Path::new(&d.path_on_host),
            d.is_read_only,
            &d.drive_id,
        )
        .map_err(device_err(format!("drive '{}'", d.drive_id)))?;
        blk.set_metrics(crate::metrics::METRICS.drive(&d.drive_id));
        devices.push((format!("drive '{}'", d.drive_id), Box::new(blk)));
    }
    devices.push(("virtio-rng".into(), Box::new(Rng::new())));
    if let Some(v) = vsock {
        let path = std::path::Path::new(&v.uds_path);
        let dev = Vsock::new(u64::from(v.guest_cid), path).map_err(device_err("vsock"))?;
        devices.push(("vsock".into(), Box::new(dev)));
    }

    let mut set = VirtioSet {
        cmdline_args: Vec::new(),
        transports: Vec::new(),
    };
    for (i, (what, dev)) in devices.into_iter().enumerate() {
        let gsi = VIRTIO_IRQ_START + i as u32;
        if gsi > IRQ_MAX {
            return Err(StartError::Device {
                what,
                msg: format!(
                    "too many devices: at most {} virtio devices fit",
                    IRQ_MAX - VIRTIO_IRQ_START + 1
                ),
            });
        }
        let base = VIRTIO_MMIO_START + i as u64 * MMIO_REGION_SIZE;
        let transport = MmioTransport::new(mem.clone(), dev).map_err(device_err(what.clone()))?;
        for (q, evt) in transport.queue_evts().iter().enumerate() {
            vm.register_ioevent(
                evt,
                &IoEventAddress::Mmio(base + NOTIFY_REG_OFFSET),
                q as u32,
            )
            .map_err(device_err(format!("{what} ioeventfd")))?;
        }
        vm.register_irqfd(transport.irq_evt(), gsi)
            .map_err(device_err(format!("{what} irqfd")))?;
        let transport = Arc::new(Mutex::new(transport));
        mmio.insert(transport.clone(), base, MMIO_REGION_SIZE)
            .map_err(device_err(what))?;
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
        EventManager::new().map_err(|e| device_err("event loop")(format!("{e:?}")))?;
    for t in transports {
        em.add_subscriber(t);
    }
    std::thread::Builder::new()
        .name("devices".into())
        .spawn(move || loop {
            if let Err(e) = em.run() {
                exit.exit(ExitReason::Error(format!(
                    "device event loop failed: {e:?}"
                )));
                return;
            }
        })
        .map_err(device_err("event loop thread"))?;
    Ok(())
}
