//! The 8250 UART on port 0x3f8 (vm-superio's state machine), its output sink, and a
//! tail of everything the guest printed so a panic can be reported after the fact.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use vm_superio::serial::{NoEvents, SerialState};
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

    /// A sink that goes nowhere, held only while a restore swaps sinks.
    fn detached() -> Self {
        Self {
            out: None,
            tail: Arc::new(Mutex::new(VecDeque::new())),
        }
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
pub struct SerialDevice(pub Serial<IrqLine, NoEvents, ConsoleSink>);

/// Receive FIFO size of vm-superio's UART (its `FIFO_SIZE`, not exported).
const FIFO_SIZE: usize = 64;
/// IER bits a 16550A has (vm-superio masks guest writes to these).
const IER_VALID_BITS: u8 = 0x0f;
/// IIR bits vm-superio sets (no interrupt, THR empty, received data).
const IIR_VALID_BITS: u8 = 0x07;

/// Snapshot of the UART registers: a serializable mirror of vm-superio's `SerialState`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SerialSnapshot {
    pub baud_divisor_low: u8,
    pub baud_divisor_high: u8,
    pub interrupt_enable: u8,
    pub interrupt_identification: u8,
    pub line_control: u8,
    pub line_status: u8,
    pub modem_control: u8,
    pub modem_status: u8,
    pub scratch: u8,
    /// Received bytes the guest has not read (at most 64).
    pub in_buffer: Vec<u8>,
}

impl From<SerialState> for SerialSnapshot {
    fn from(s: SerialState) -> Self {
        SerialSnapshot {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }
}

impl From<SerialSnapshot> for SerialState {
    fn from(s: SerialSnapshot) -> Self {
        SerialState {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }
}

impl SerialDevice {
    /// A UART in its power-on state.
    pub fn new(irq: IrqLine, sink: ConsoleSink) -> Self {
        SerialDevice(Serial::new(irq, sink))
    }

    /// A UART with the registers of a snapshot (untrusted: checked first). An interrupt
    /// that was pending and enabled is raised on `irq` again.
    pub fn from_state(
        state: &SerialSnapshot,
        irq: IrqLine,
        sink: ConsoleSink,
    ) -> Result<Self, String> {
        if state.in_buffer.len() > FIFO_SIZE {
            return Err(format!(
                "serial: {} bytes in the receive FIFO, at most {FIFO_SIZE}",
                state.in_buffer.len()
            ));
        }
        if state.interrupt_enable & !IER_VALID_BITS != 0
            || state.interrupt_identification & !IIR_VALID_BITS != 0
        {
            return Err(format!(
                "serial: invalid IER {:#x} or IIR {:#x}",
                state.interrupt_enable, state.interrupt_identification
            ));
        }
        Serial::from_state(&state.clone().into(), irq, NoEvents, sink)
            .map(SerialDevice)
            .map_err(|e| format!("serial: {e}"))
    }

    /// The UART registers, for a snapshot.
    pub fn save_state(&self) -> SerialSnapshot {
        self.0.state().into()
    }

    /// Replaces the registers with a snapshot's, keeping this device's irq line (the same
    /// eventfd, duplicated) and console sink. On error nothing changes.
    pub fn restore_state(&mut self, state: &SerialSnapshot) -> Result<(), String> {
        let evt = self
            .0
            .interrupt_evt()
            .0
            .try_clone()
            .map_err(|e| format!("serial: cannot duplicate the irq eventfd: {e}"))?;
        let mut restored = Self::from_state(state, IrqLine(evt), ConsoleSink::detached())?;
        std::mem::swap(restored.0.writer_mut(), self.0.writer_mut());
        *self = restored;
        Ok(())
    }
}

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

    fn irq() -> IrqLine {
        IrqLine::new().unwrap()
    }

    /// Reads register `reg`.
    fn rd(d: &mut SerialDevice, reg: u64) -> u8 {
        let mut b = [0u8];
        d.read(reg, &mut b);
        b[0]
    }

    #[test]
    fn state_round_trips_registers_fifo_sink_and_irq() {
        let mut d = SerialDevice::new(irq(), ConsoleSink::new(None));
        d.write(3, &[0x80]); // DLAB on: set the divisor
        d.write(0, &[0x01]);
        d.write(1, &[0x00]);
        d.write(3, &[0x1b]); // 8E1, DLAB off
        d.write(7, &[0x5a]); // scratch
        d.write(4, &[0x1b]); // loopback: bytes written come back in the FIFO
        d.write(0, b"h");
        d.write(0, b"i");
        d.write(1, &[0x03]); // IER: RDA + THR empty
        let saved = d.save_state();
        assert_eq!(saved.in_buffer, b"hi");
        let json = serde_json::to_string(&saved).unwrap();
        let back: SerialSnapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, saved);

        let sink = ConsoleSink::new(None);
        let tail = sink.tail();
        let line = irq();
        let evt = line.0.try_clone().unwrap();
        let mut r = SerialDevice::from_state(&back, line, sink).unwrap();
        // The pending, enabled interrupts were raised again.
        assert!(evt.read().unwrap() > 0);
        assert_eq!(r.save_state(), saved);
        assert_eq!(
            (rd(&mut r, 1), rd(&mut r, 3), rd(&mut r, 7)),
            (0x03, 0x1b, 0x5a)
        );
        assert_eq!((rd(&mut r, 0), rd(&mut r, 0)), (b'h', b'i'));
        r.write(3, &[0x9b]);
        assert_eq!((rd(&mut r, 0), rd(&mut r, 1)), (0x01, 0x00));

        // Restoring in place keeps the sink and the irq eventfd.
        r.write(3, &[0x03]);
        r.write(7, &[0]);
        while evt.read().is_ok() {}
        r.restore_state(&SerialSnapshot {
            modem_control: 0x08, // loopback off
            in_buffer: Vec::new(),
            ..saved.clone()
        })
        .unwrap();
        assert!(
            evt.read().unwrap() > 0,
            "pending interrupt on the same eventfd"
        );
        assert_eq!(rd(&mut r, 7), 0x5a);
        r.write(0, b"x");
        assert_eq!(tail.lock().unwrap().back(), Some(&b'x'));
    }

    #[test]
    fn bad_state_is_refused_and_changes_nothing() {
        let mut d = SerialDevice::new(irq(), ConsoleSink::new(None));
        d.write(7, &[0x11]);
        let good = d.save_state();
        let bad = [
            SerialSnapshot {
                in_buffer: vec![0; FIFO_SIZE + 1],
                ..good.clone()
            },
            SerialSnapshot {
                interrupt_enable: 0xff,
                ..good.clone()
            },
            SerialSnapshot {
                interrupt_identification: 0x80,
                ..good.clone()
            },
        ];
        for s in &bad {
            assert!(d.restore_state(s).is_err(), "{s:?}");
            assert_eq!(d.save_state(), good);
        }
        let unknown = r#"{"baud_divisor_low":12,"extra":1}"#;
        assert!(serde_json::from_str::<SerialSnapshot>(unknown).is_err());
    }

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
