//! A fake of `reidentify`'s system calls for the server tests.

use std::sync::{Arc, Mutex};

use kiln_agent::server::identity::IdentitySys;
use kiln_proto::identity::{encode_hex, ENTROPY_LEN};

/// `reidentify`'s system calls, recorded and never made: host tests may run as
/// root, and must not reseed, step the clock of, or rename the host.
#[derive(Clone, Default)]
pub struct FakeIdentity {
    pub calls: Arc<Mutex<Vec<String>>>,
    hostname: Arc<Mutex<String>>,
}

impl IdentitySys for FakeIdentity {
    fn reseed(&self, entropy: &[u8; ENTROPY_LEN]) -> std::io::Result<()> {
        let hex = encode_hex(entropy);
        self.calls.lock().unwrap().push(format!("reseed {hex}"));
        Ok(())
    }
    fn step_realtime(&self, unix_time_ns: u64) -> std::io::Result<i128> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("clock {unix_time_ns}"));
        Ok(0)
    }
    fn set_hostname(&self, name: &str) -> std::io::Result<()> {
        self.calls.lock().unwrap().push(format!("hostname {name}"));
        *self.hostname.lock().unwrap() = name.into();
        Ok(())
    }
    fn hostname(&self) -> std::io::Result<String> {
        Ok(self.hostname.lock().unwrap().clone())
    }
    fn write_machine_id(&self, id: &str) -> std::io::Result<()> {
        self.calls.lock().unwrap().push(format!("machine-id {id}"));
        Ok(())
    }
}
