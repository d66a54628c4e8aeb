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
use super::persist::Persist;

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

/// vm-superio's `SerialState`, as it is stored in `state.json` (serde's remote derive:
/// the field list is checked against vm-superio's own at compile time).
#[derive(Serialize, Deserialize)]
#[serde(remote = "SerialState", deny_unknown_fields)]
struct SerialStateDef {
    baud_divisor_low: u8,
    baud_divisor_high: u8,
    interrupt_enable: u8,
    interrupt_identification: u8,
    line_control: u8,
    line_status: u8,
    modem_control: u8,
    modem_status: u8,
    scratch: u8,
    /// Received bytes the guest has not read (at most 64).
    in_buffer: Vec<u8>,
}

/// Snapshot of the UART registers: vm-superio's own state, serialized field by field.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(transparent)]
pub struct UartState(#[serde(with = "SerialStateDef")] pub SerialState);

/// Why a saved [`UartState`] was refused.
#[derive(Debug, thiserror::Error)]
pub enum SerialStateError {
    #[error("serial: {0} bytes in the receive FIFO, at most {FIFO_SIZE}")]
    Fifo(usize),
    #[error("serial: invalid IER {ier:#x} or IIR {iir:#x}")]
    Registers { ier: u8, iir: u8 },
    #[error("serial: {0}")]
    Uart(vm_superio::serial::Error<std::io::Error>),
    #[error("serial: cannot duplicate the irq eventfd: {0}")]
    Eventfd(std::io::Error),
}

impl SerialDevice {
    /// A UART in its power-on state.
    pub fn new(irq: IrqLine, sink: ConsoleSink) -> Self {
        SerialDevice(Serial::new(irq, sink))
    }

    /// A UART with the registers of a snapshot (untrusted: checked first). An interrupt
    /// that was pending and enabled is raised on `irq` again.
    pub fn from_state(
        state: &UartState,
        irq: IrqLine,
        sink: ConsoleSink,
    ) -> Result<Self, SerialStateError> {
        let s = &state.0;
        if s.in_buffer.len() > FIFO_SIZE {
            return Err(SerialStateError::Fifo(s.in_buffer.len()));
        }
        if s.interrupt_enable & !IER_VALID_BITS != 0
            || s.interrupt_identification & !IIR_VALID_BITS != 0
        {
            return Err(SerialStateError::Registers {
                ier: s.interrupt_enable,
                iir: s.interrupt_identification,
            });
        }
        Serial::from_state(s, irq, NoEvents, sink)
            .map(SerialDevice)
            .map_err(SerialStateError::Uart)
    }
}

impl Persist for SerialDevice {
    type State = UartState;
    type Error = SerialStateError;

    fn save(&self) -> UartState {
        UartState(self.0.state())
    }

    /// Replaces the registers with a snapshot's, keeping this device's irq line (the same
    /// eventfd, duplicated) and console sink. On error nothing changes.
    fn restore(&mut self, state: &UartState) -> Result<(), SerialStateError> {
        let evt = self
            .0
            .interrupt_evt()
            .0
            .try_clone()
            .map_err(SerialStateError::Eventfd)?;
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
        let saved = d.save();
        assert_eq!(saved.0.in_buffer, b"hi");
        let json = serde_json::to_string(&saved).unwrap();
        let back: UartState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, saved);

        let sink = ConsoleSink::new(None);
        let tail = sink.tail();
        let line = irq();
        let evt = line.0.try_clone().unwrap();
        let mut r = SerialDevice::from_state(&back, line, sink).unwrap();
        // The pending, enabled interrupts were raised again.
        assert!(evt.read().unwrap() > 0);
        assert_eq!(r.save(), saved);
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
        r.restore(&UartState(SerialState {
            modem_control: 0x08, // loopback off
            in_buffer: Vec::new(),
            ..saved.0.clone()
        }))
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
        let good = d.save();
        let bad = [
            UartState(SerialState {
                in_buffer: vec![0; FIFO_SIZE + 1],
                ..good.0.clone()
            }),
            UartState(SerialState {
                interrupt_enable: 0xff,
                ..good.0.clone()
            }),
            UartState(SerialState {
                interrupt_identification: 0x80,
                ..good.0.clone()
            }),
        ];
        for s in &bad {
            assert!(d.restore(s).is_err(), "{s:?}");
            assert_eq!(d.save(), good);
        }
        let unknown = r#"{"baud_divisor_low":12,"extra":1}"#;
        assert!(serde_json::from_str::<UartState>(unknown).is_err());
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
