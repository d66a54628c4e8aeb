//! A minimal i8042 keyboard controller: enough for the kernel's driver to probe it,
//! for `reboot` (command 0xfe pulses the CPU reset line) and for Ctrl-Alt-Del injection.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vm_superio::Trigger;

use super::bus::BusDevice;
use super::irq::IrqLine;
use super::persist::Persist;
use crate::exit::{ExitReason, ExitSignal};

const OFS_DATA: u64 = 0;
const OFS_STATUS: u64 = 4;

const SB_OUT_FULL: u8 = 0x01;
const SB_SYSTEM: u8 = 0x04;
const SB_LAST_WAS_CMD: u8 = 0x08;
const SB_KBD_ENABLED: u8 = 0x10;

const CB_KBD_INT: u8 = 0x01;
const CB_POST_OK: u8 = 0x04;

const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_WRITE_OUTP: u8 = 0xd1;
const CMD_WRITE_AUX: u8 = 0xd4;
const CMD_RESET_CPU: u8 = 0xfe;

const KBD_ACK: u8 = 0xfa;
const KBD_RESET_OK: u8 = 0xaa;
const OUTPUT_MAX: usize = 16;

/// Scan code set 2 make codes for Ctrl, Alt, Del (translation is off, see `CB_POST_OK`).
const CTRL_ALT_DEL: [u8; 4] = [0x14, 0x11, 0xe0, 0x71];

/// Status bits this model sets; `SB_SYSTEM | SB_KBD_ENABLED` are always on.
const SB_BITS: u8 = SB_OUT_FULL | SB_SYSTEM | SB_LAST_WAS_CMD | SB_KBD_ENABLED;

/// Snapshot of the controller: its registers, a command waiting for its data byte, and
/// the bytes the guest has not read yet.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct I8042State {
    pub status: u8,
    pub control: u8,
    pub pending_cmd: Option<u8>,
    /// At most 16 bytes.
    pub output: Vec<u8>,
}

/// Why a saved [`I8042State`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum I8042StateError {
    #[error("i8042: invalid status {status:#x} with {output} output bytes")]
    Status { status: u8, output: usize },
    #[error("i8042: {0} output bytes, at most {OUTPUT_MAX}")]
    Output(usize),
    #[error("i8042: invalid pending command {0:#x}")]
    PendingCommand(u8),
}

pub struct I8042 {
    status: u8,
    control: u8,
    pending_cmd: Option<u8>,
    output: VecDeque<u8>,
    kbd_irq: IrqLine,
    exit: Arc<ExitSignal>,
}

impl I8042 {
    pub fn new(kbd_irq: IrqLine, exit: Arc<ExitSignal>) -> Self {
        Self {
            status: SB_SYSTEM | SB_KBD_ENABLED,
            control: CB_POST_OK | CB_KBD_INT,
            pending_cmd: None,
            output: VecDeque::new(),
            kbd_irq,
            exit,
        }
    }

    fn push(&mut self, byte: u8) {
        if self.output.len() < OUTPUT_MAX {
            self.output.push_back(byte);
        }
        self.status |= SB_OUT_FULL;
        if self.control & CB_KBD_INT != 0 {
            let _ = self.kbd_irq.trigger();
        }
    }

    /// Presses Ctrl-Alt-Del on the guest's keyboard (the API's `SendCtrlAltDel`).
    pub fn ctrl_alt_del(&mut self) {
        for b in CTRL_ALT_DEL {
            self.push(b);
        }
    }

    fn command(&mut self, cmd: u8) {
        match cmd {
            CMD_READ_CTR => self.push(self.control),
            CMD_WRITE_CTR | CMD_WRITE_OUTP | CMD_WRITE_AUX => self.pending_cmd = Some(cmd),
            CMD_SELF_TEST => self.push(0x55),
            CMD_KBD_TEST => self.push(0x00),
            CMD_RESET_CPU => self.exit.exit(ExitReason::Reset),
            _ => {}
        }
    }

    fn data(&mut self, value: u8) {
        match self.pending_cmd.take() {
            Some(CMD_WRITE_CTR) => self.control = value,
            // Bit 0 of the output port is the CPU reset line (active low).
            Some(CMD_WRITE_OUTP) if value & 1 == 0 => self.exit.exit(ExitReason::Reset),
            Some(_) => {}
            None => {
                // A command to the keyboard itself: acknowledge; reset also reports BAT ok.
                self.push(KBD_ACK);
                if value == 0xff {
                    self.push(KBD_RESET_OK);
                }
            }
        }
    }
}

impl Persist for I8042 {
    type State = I8042State;
    type Error = I8042StateError;

    fn save(&self) -> I8042State {
        I8042State {
            status: self.status,
            control: self.control,
            pending_cmd: self.pending_cmd,
            output: self.output.iter().copied().collect(),
        }
    }

    /// Checks the state against what this model can reach (on error nothing changes).
    /// Unread output with the keyboard interrupt enabled raises the interrupt again, so
    /// the guest driver comes back for it.
    fn restore(&mut self, s: &I8042State) -> Result<(), I8042StateError> {
        let always = SB_SYSTEM | SB_KBD_ENABLED;
        if s.status & !SB_BITS != 0
            || s.status & always != always
            || (s.status & SB_OUT_FULL != 0) == s.output.is_empty()
        {
            return Err(I8042StateError::Status {
                status: s.status,
                output: s.output.len(),
            });
        }
        if s.output.len() > OUTPUT_MAX {
            return Err(I8042StateError::Output(s.output.len()));
        }
        if let Some(cmd) = s.pending_cmd {
            if ![CMD_WRITE_CTR, CMD_WRITE_OUTP, CMD_WRITE_AUX].contains(&cmd) {
                return Err(I8042StateError::PendingCommand(cmd));
            }
        }
        self.status = s.status;
        self.control = s.control;
        self.pending_cmd = s.pending_cmd;
        self.output = s.output.iter().copied().collect();
        if !self.output.is_empty() && self.control & CB_KBD_INT != 0 {
            let _ = self.kbd_irq.trigger();
        }
        Ok(())
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = match offset {
            OFS_STATUS => self.status,
            OFS_DATA => {
                let v = self.output.pop_front().unwrap_or(0);
                if self.output.is_empty() {
                    self.status &= !SB_OUT_FULL;
                } else if self.control & CB_KBD_INT != 0 {
                    let _ = self.kbd_irq.trigger();
                }
                v
            }
            _ => 0,
        };
        data.fill(0);
        if let Some(d) = data.first_mut() {
            *d = v;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        match offset {
            OFS_STATUS => {
                self.status |= SB_LAST_WAS_CMD;
                self.command(v);
            }
            OFS_DATA => {
                self.status &= !SB_LAST_WAS_CMD;
                self.data(v);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> (I8042, std::sync::mpsc::Receiver<ExitReason>) {
        let (sig, rx) = ExitSignal::new();
        (I8042::new(IrqLine::new().unwrap(), Arc::new(sig)), rx)
    }

    #[test]
    fn reset_command_stops_the_vm() {
        let (mut d, rx) = dev();
        d.write(OFS_STATUS, &[CMD_RESET_CPU]);
        assert_eq!(rx.try_recv().unwrap(), ExitReason::Reset);
    }

    #[test]
    fn ctrl_alt_del_queues_scancodes_and_raises_the_irq() {
        let (mut d, _rx) = dev();
        d.ctrl_alt_del();
        assert_eq!(d.kbd_irq.0.read().unwrap(), 4);
        let mut got = Vec::new();
        let mut b = [0u8];
        while {
            d.read(OFS_STATUS, &mut b);
            b[0] & SB_OUT_FULL != 0
        } {
            d.read(OFS_DATA, &mut b);
            got.push(b[0]);
        }
        assert_eq!(got, CTRL_ALT_DEL);
    }

    #[test]
    fn state_round_trips_and_bad_state_is_refused() {
        let (mut d, _rx) = dev();
        d.write(OFS_STATUS, &[CMD_WRITE_CTR]);
        d.write(OFS_DATA, &[0x47]);
        d.ctrl_alt_del();
        d.write(OFS_STATUS, &[CMD_WRITE_OUTP]);
        let saved = d.save();
        let json = serde_json::to_string(&saved).unwrap();
        let back: I8042State = serde_json::from_str(&json).unwrap();
        assert_eq!(back, saved);

        let (mut r, rx) = dev();
        r.restore(&back).unwrap();
        assert_eq!(r.save(), saved);
        assert!(
            r.kbd_irq.0.read().unwrap() > 0,
            "unread output re-raises the irq"
        );
        // The pending "write output port" command is still waiting for its byte.
        r.write(OFS_DATA, &[0xfe]);
        assert_eq!(rx.try_recv().unwrap(), ExitReason::Reset);
        let mut got = Vec::new();
        let mut b = [0u8];
        for _ in 0..CTRL_ALT_DEL.len() {
            r.read(OFS_DATA, &mut b);
            got.push(b[0]);
        }
        assert_eq!(got, CTRL_ALT_DEL);
        r.read(OFS_STATUS, &mut b);
        assert_eq!(b[0] & SB_OUT_FULL, 0);

        let bad = [
            I8042State {
                output: vec![0; OUTPUT_MAX + 1],
                ..saved.clone()
            },
            I8042State {
                output: Vec::new(),
                ..saved.clone()
            },
            I8042State {
                status: 0xff,
                ..saved.clone()
            },
            I8042State {
                pending_cmd: Some(CMD_RESET_CPU),
                ..saved.clone()
            },
        ];
        let (mut fresh, _rx) = dev();
        let before = fresh.save();
        for s in &bad {
            assert!(fresh.restore(s).is_err(), "{s:?}");
            assert_eq!(fresh.save(), before);
        }
        assert!(serde_json::from_str::<I8042State>(r#"{"status":20,"x":0}"#).is_err());
    }

    #[test]
    fn control_byte_round_trips() {
        let (mut d, _rx) = dev();
        d.write(OFS_STATUS, &[CMD_WRITE_CTR]);
        d.write(OFS_DATA, &[0x47]);
        d.write(OFS_STATUS, &[CMD_READ_CTR]);
        let mut b = [0u8];
        d.read(OFS_DATA, &mut b);
        assert_eq!(b[0], 0x47);
    }
}
