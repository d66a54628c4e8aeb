//! The 8250 UART on port 0x3f8 (vm-superio's state machine), its output sink, and a
//! tail of everything the guest printed so a panic can be reported after the fact.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};

use vm_superio::Serial;

use super::bus::BusDevice;
use super::irq::IrqLine;

/// How many bytes of console output are kept for panic reports.
pub const TAIL_BYTES: usize = 8192;

/// Shared view of the last console bytes.
pub type ConsoleTail = Arc<Mutex<VecDeque<u8>>>;

/// Where console bytes go: an optional sink (stdout or a log file) plus the tail.
pub struct ConsoleSink {
    out: Option<Box<dyn Write + Send>>,
    tail: ConsoleTail,
}

impl ConsoleSink {
    pub fn new(out: Option<Box<dyn Write + Send>>) -> Self {
        Self {
            out,
            tail: Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_BYTES))),
        }
    }

    pub fn tail(&self) -> ConsoleTail {
        self.tail.clone()
    }
}

impl Write for ConsoleSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut tail) = self.tail.lock() {
            for b in buf {
                if tail.len() == TAIL_BYTES {
                    tail.pop_front();
                }
                tail.push_back(*b);
            }
        }
        if let Some(out) = self.out.as_mut() {
            // A full disk or closed pipe must not stop the guest.
            let _ = out.write_all(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.out.as_mut() {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }
}

/// The serial port as a bus device.
pub struct SerialDevice(pub Serial<IrqLine, vm_superio::serial::NoEvents, ConsoleSink>);

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if data.len() == 1 {
            data[0] = self.0.read(offset as u8);
        } else {
            data.fill(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() == 1 {
            let _ = self.0.write(offset as u8, data[0]);
            if offset == 0 && data[0] == b'\n' {
                let _ = self.0.writer_mut().flush();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_bytes() {
        let mut sink = ConsoleSink::new(None);
        let tail = sink.tail();
        sink.write_all(&vec![b'a'; TAIL_BYTES]).unwrap();
        sink.write_all(b"end").unwrap();
        let t = tail.lock().unwrap();
        assert_eq!(t.len(), TAIL_BYTES);
        assert_eq!(t.iter().rev().take(3).copied().collect::<Vec<_>>(), b"dne");
    }
}
