//! Address-range dispatch for port I/O and MMIO exits.
//!
//! The vCPU run loop turns every `KVM_EXIT_IO` / `KVM_EXIT_MMIO` into a `Bus::read` or
//! `Bus::write`. A device is registered once for a non-overlapping range and receives the
//! offset inside that range; unclaimed addresses read as all-ones and ignore writes, as on
//! real hardware.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device that sits on the I/O or MMIO bus.
pub trait BusDevice: Send {
    /// Guest read of `data.len()` bytes at `offset` inside the device's range.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Guest write of `data` at `offset` inside the device's range.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Error registering a device range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("bus range {base:#x}+{len:#x} is empty or overlaps another device")]
    Overlap { base: u64, len: u64 },
}

struct Range {
    len: u64,
    dev: Arc<Mutex<dyn BusDevice>>,
}

/// One bus (PIO or MMIO).
#[derive(Default, Clone)]
pub struct Bus {
    ranges: Arc<BTreeMap<u64, Range>>,
}

impl Clone for Range {
    fn clone(&self) -> Self {
        Range {
            len: self.len,
            dev: self.dev.clone(),
        }
    }
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `dev` for `[base, base+len)`. Must happen before vCPUs start.
    pub fn insert(
        &mut self,
        dev: Arc<Mutex<dyn BusDevice>>,
        base: u64,
        len: u64,
    ) -> Result<(), BusError> {
        let end = base.checked_add(len).filter(|_| len > 0);
        let Some(end) = end else {
            return Err(BusError::Overlap { base, len });
        };
        let clash_before = self
            .ranges
            .range(..end)
            .next_back()
            .is_some_and(|(b, r)| b + r.len > base);
        if clash_before {
            return Err(BusError::Overlap { base, len });
        }
        Arc::make_mut(&mut self.ranges).insert(base, Range { len, dev });
        Ok(())
    }

    fn find(&self, addr: u64, size: usize) -> Option<(u64, &Arc<Mutex<dyn BusDevice>>)> {
        let (base, r) = self.ranges.range(..=addr).next_back()?;
        let off = addr - base;
        (off.checked_add(size as u64)? <= r.len).then_some((off, &r.dev))
    }

    /// Dispatches a read; returns false (and fills `data` with 0xff) if nothing claims it.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((off, dev)) => {
                dev.lock().expect("device lock poisoned").read(off, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Dispatches a write; returns false if nothing claims it.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((off, dev)) => {
                dev.lock().expect("device lock poisoned").write(off, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Reg(u8);
    impl BusDevice for Reg {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(self.0 + offset as u8);
        }
        fn write(&mut self, _offset: u64, data: &[u8]) {
            self.0 = data[0];
        }
    }

    #[test]
    fn dispatches_by_range_and_rejects_overlap() {
        let mut bus = Bus::new();
        bus.insert(Arc::new(Mutex::new(Reg(1))), 0x100, 0x10)
            .unwrap();
        assert_eq!(
            bus.insert(Arc::new(Mutex::new(Reg(2))), 0x108, 0x10),
            Err(BusError::Overlap {
                base: 0x108,
                len: 0x10
            })
        );
        assert!(bus.insert(Arc::new(Mutex::new(Reg(2))), 0xf8, 0x8).is_ok());
        let mut b = [0u8; 1];
        assert!(bus.read(0x102, &mut b));
        assert_eq!(b[0], 3);
        assert!(bus.write(0x100, &[7]));
        bus.read(0x100, &mut b);
        assert_eq!(b[0], 7);
        // Straddling the end of a range is not claimed.
        let mut w = [0u8; 4];
        assert!(!bus.read(0x10e, &mut w));
        assert_eq!(w, [0xff; 4]);
        assert!(!bus.read(0x200, &mut b));
    }
}
