//! Event-loop glue: the transport as an `event_manager` subscriber of its queue eventfds
//! and of the device's backend fd.
//!
//! Each queue eventfd is registered with the queue index as epoll data. On an event the
//! eventfd is drained and, if the device is running, the queue is processed (which raises
//! the used-ring interrupt when used entries were added). The backend fd, if the device
//! has one, is registered with [`BACKEND_DATA`] and handed to the device on each event.

use std::os::fd::AsRawFd;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use super::MmioTransport;

/// Epoll data of the device's backend fd (queue indexes are far below).
const BACKEND_DATA: u32 = u32::MAX;

impl MmioTransport {
    fn backend_event(&mut self, events: Events, ops: &mut EventOps) {
        let Some(fd) = self.device.backend_fd() else {
            return;
        };
        if fd != events.fd() {
            tracing::warn!("virtio: backend event fd does not match the device's");
            return;
        }
        if events
            .event_set()
            .intersects(EventSet::ERROR | EventSet::HANG_UP)
        {
            tracing::error!("virtio: device backend fd failed; unregistering it");
            let ev = Events::with_data_raw(fd, BACKEND_DATA, EventSet::IN);
            if let Err(e) = ops.remove(ev) {
                tracing::error!("virtio: cannot unregister the backend fd: {e:?}");
            }
            return;
        }
        self.process_backend();
    }
}

impl MutEventSubscriber for MmioTransport {
    fn init(&mut self, ops: &mut EventOps) {
        if let Some(fd) = self.device.backend_fd() {
            let ev = Events::with_data_raw(fd, BACKEND_DATA, EventSet::IN);
            if let Err(e) = ops.add(ev) {
                tracing::error!("virtio: cannot register the device backend fd: {e:?}");
            }
        }
        for (i, evt) in self.queue_evts.iter().enumerate() {
            let Ok(data) = u32::try_from(i) else {
                break;
            };
            if let Err(e) = ops.add(Events::with_data(evt, data, EventSet::IN)) {
                tracing::error!("virtio: cannot register queue {i} eventfd: {e:?}");
            }
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if events.data() == BACKEND_DATA {
            self.backend_event(events, ops);
            return;
        }
        let index = events.data() as usize;
        let Some(evt) = self.queue_evts.get(index) else {
            tracing::warn!("virtio: event for unknown queue {index}");
            return;
        };
        if evt.as_raw_fd() != events.fd() {
            tracing::warn!("virtio: event fd does not match queue {index}");
            return;
        }
        if events
            .event_set()
            .intersects(EventSet::ERROR | EventSet::HANG_UP)
        {
            tracing::error!("virtio: queue {index} eventfd failed; unregistering it");
            if let Err(e) = ops.remove(Events::with_data(evt, events.data(), EventSet::IN)) {
                tracing::error!("virtio: cannot unregister queue {index} eventfd: {e:?}");
            }
            return;
        }
        // Drain the counter; EAGAIN (already drained) is harmless.
        let _ = evt.read();
        self.process_queue(index);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use event_manager::{EventManager, SubscriberOps};
    use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;

    use crate::devices::virtio::test_utils::{activate, guest_mem, TestQueue};
    use crate::devices::virtio::{MmioTransport, Rng, INT_USED_RING};

    #[test]
    fn queue_eventfd_drives_processing_through_event_manager() {
        let mem = guest_mem();
        let mut t = MmioTransport::new(
            mem.clone(),
            Box::new(Rng::new(&Default::default()).unwrap()),
        )
        .unwrap();
        let mut tq = TestQueue::new(&mem, 0x1000, 16);
        activate(&mut t, VIRTIO_ID_RNG, &[&tq]);
        assert!(t.is_activated());
        tq.add_chain(&[(0x10_0000, 64, true)]);

        let t = Arc::new(Mutex::new(t));
        let mut em: EventManager<Arc<Mutex<dyn event_manager::MutEventSubscriber + Send>>> =
            EventManager::new().unwrap();
        em.add_subscriber(t.clone());

        t.lock().unwrap().queue_evts()[0].write(1).unwrap();
        assert_eq!(em.run_with_timeout(1000).unwrap(), 1);

        assert_eq!(tq.used_idx(), 1);
        assert_eq!(tq.used(0), (0, 64));
        let t = t.lock().unwrap();
        assert_eq!(t.interrupt().status() & INT_USED_RING, INT_USED_RING);
        assert_eq!(t.irq_evt().read().unwrap(), 1);
        // The queue eventfd was drained.
        assert!(t.queue_evts()[0].read().is_err());
    }
}
