//! kiln's guest control port (I/O port 0x440), written by the agent:
//! `123` — the agent is ready: the boot timer records the time since `InstanceStart`
//! (Firecracker uses the same magic value for its boot-timer device);
//! `124` — power off: the VMM exits with status 0.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::bus::BusDevice;
use crate::exit::{ExitReason, ExitSignal};

pub const MAGIC_READY: u8 = 123;
pub const MAGIC_POWEROFF: u8 = 124;

/// Boot timing shared with the API (`GET /kiln/boot-time`).
#[derive(Debug, Default, Clone, Copy)]
pub struct BootTimes {
    pub ready_after: Option<Duration>,
}

pub struct ControlPort {
    start: Instant,
    times: Arc<Mutex<BootTimes>>,
    exit: Arc<ExitSignal>,
}

impl ControlPort {
    pub fn new(start: Instant, times: Arc<Mutex<BootTimes>>, exit: Arc<ExitSignal>) -> Self {
        Self { start, times, exit }
    }
}

impl BusDevice for ControlPort {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        match data.first() {
            Some(&MAGIC_READY) => {
                let elapsed = self.start.elapsed();
                let mut t = self.times.lock().expect("boot times lock");
                if t.ready_after.is_none() {
                    t.ready_after = Some(elapsed);
                    crate::metrics::METRICS.set_boot_time(elapsed);
                    // Firecracker's log line format, so existing tooling can parse it.
                    eprintln!(
                        "Guest-boot-time = {:>6} us {} ms",
                        elapsed.as_micros(),
                        elapsed.as_millis()
                    );
                }
            }
            Some(&MAGIC_POWEROFF) => self.exit.exit(ExitReason::PowerOff),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_is_recorded_once_and_poweroff_exits() {
        let (sig, rx) = ExitSignal::new();
        let times = Arc::new(Mutex::new(BootTimes::default()));
        let mut port = ControlPort::new(Instant::now(), times.clone(), Arc::new(sig));
        port.write(0, &[MAGIC_READY]);
        let first = times.lock().unwrap().ready_after.unwrap();
        port.write(0, &[MAGIC_READY]);
        assert_eq!(times.lock().unwrap().ready_after.unwrap(), first);
        port.write(0, &[7]);
        assert!(rx.try_recv().is_err());
        port.write(0, &[MAGIC_POWEROFF]);
        assert_eq!(rx.try_recv().unwrap(), ExitReason::PowerOff);
    }
}
