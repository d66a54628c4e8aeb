//! Legacy PC devices on the port-I/O bus: the 8250 console, the i8042 (reset and
//! Ctrl-Alt-Del) and kiln's control port (boot timer, power-off). Their interrupts are
//! irqfds, so raising one never needs the VMM's attention.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kvm_ioctls::VmFd;
use vm_superio::Serial;

use super::{device_err, StartError};
use crate::arch::layout::{CONTROL_PORT, I8042_IRQ, I8042_PORT, SERIAL_IRQ, SERIAL_PORT};
use crate::devices::bus::Bus;
use crate::devices::control::{BootTimes, ControlPort};
use crate::devices::i8042::I8042;
use crate::devices::irq::IrqLine;
use crate::devices::serial::{ConsoleSink, ConsoleTail, SerialDevice};
use crate::exit::ExitSignal;

pub struct Legacy {
    pub console_tail: ConsoleTail,
    pub serial: Arc<Mutex<SerialDevice>>,
    pub i8042: Arc<Mutex<I8042>>,
}

/// An irqfd registered with KVM for `gsi`.
fn irq_line(vm: &VmFd, gsi: u32, what: &str) -> Result<IrqLine, StartError> {
    let line = IrqLine::new().map_err(device_err(format!("{what} irq eventfd")))?;
    vm.register_irqfd(&line.0, gsi)
        .map_err(device_err(format!("{what} irqfd (GSI {gsi})")))?;
    Ok(line)
}

pub fn attach(
    vm: &VmFd,
    pio: &mut Bus,
    console: Option<Box<dyn Write + Send>>,
    start: Instant,
    boot_times: &Arc<Mutex<BootTimes>>,
    exit: &Arc<ExitSignal>,
) -> Result<Legacy, StartError> {
    let sink = ConsoleSink::new(console);
    let console_tail = sink.tail();
    let serial = Serial::new(irq_line(vm, SERIAL_IRQ, "serial")?, sink);
    let serial = Arc::new(Mutex::new(SerialDevice(serial)));
    pio.insert(serial.clone(), SERIAL_PORT, 8)
        .map_err(device_err("serial"))?;

    let i8042 = Arc::new(Mutex::new(I8042::new(
        irq_line(vm, I8042_IRQ, "i8042")?,
        exit.clone(),
    )));
    pio.insert(i8042.clone(), I8042_PORT, 5)
        .map_err(device_err("i8042"))?;

    let control = ControlPort::new(start, boot_times.clone(), exit.clone());
    pio.insert(Arc::new(Mutex::new(control)), CONTROL_PORT, 4)
        .map_err(device_err("control port"))?;
    Ok(Legacy {
        console_tail,
        serial,
        i8042,
    })
}
