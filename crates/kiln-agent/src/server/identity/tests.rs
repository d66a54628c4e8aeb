use std::sync::Mutex;

use kiln_proto::identity::encode_hex;
use kiln_proto::ErrorKind;

use super::*;

/// Records calls; each step fails with its errno if one is set.
#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<String>>,
    name: Mutex<String>,
    reseed: Option<i32>,
    clock: Option<i32>,
    sethostname: Option<i32>,
    machine_id: Option<i32>,
}

fn result(errno: Option<i32>) -> io::Result<()> {
    errno.map_or(Ok(()), |e| Err(io::Error::from_raw_os_error(e)))
}

impl IdentitySys for Fake {
    fn reseed(&self, entropy: &[u8; ENTROPY_LEN]) -> io::Result<()> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("reseed {}", entropy[0]));
        result(self.reseed)
    }
    fn step_realtime(&self, ns: u64) -> io::Result<i128> {
        self.calls.lock().unwrap().push(format!("clock {ns}"));
        result(self.clock).map(|()| 2_500_000_000)
    }
    fn set_hostname(&self, name: &str) -> io::Result<()> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("sethostname {name}"));
        result(self.sethostname)?;
        *self.name.lock().unwrap() = name.into();
        Ok(())
    }
    fn hostname(&self) -> io::Result<String> {
        Ok(self.name.lock().unwrap().clone())
    }
    fn write_machine_id(&self, id: &str) -> io::Result<()> {
        self.calls.lock().unwrap().push(format!("machine-id {id}"));
        result(self.machine_id)
    }
}

fn fake() -> Fake {
    Fake {
        name: Mutex::new("old".into()),
        ..Fake::default()
    }
}

const MID: &str = "00112233445566778899aabbccddeeff";

fn req() -> Reidentify {
    Reidentify {
        entropy: encode_hex(&[7; ENTROPY_LEN]),
        unix_time_ns: 1_700_000_000_000_000_001,
        hostname: "sb-new".into(),
        machine_id: MID.into(),
    }
}

#[test]
fn every_step_runs_in_order_and_the_reply_says_so() {
    let sys = fake();
    let done = apply(&req(), &sys).unwrap();
    assert_eq!(
        done,
        Reidentified {
            reseeded: true,
            clock_stepped: true,
            hostname: "sb-new".into(),
            machine_id_written: true,
            errors: vec![],
        }
    );
    assert_eq!(
        *sys.calls.lock().unwrap(),
        [
            "reseed 7",
            "clock 1700000000000000001",
            "sethostname sb-new",
            &format!("machine-id {MID}"),
        ]
    );
    assert_eq!(
        summary(&done, Some(2_500_000_000)),
        "reidentified as sb-new: rng reseeded, clock +2.500s, machine-id written"
    );
    // Again: the same steps, the same answer.
    assert_eq!(apply(&req(), &sys).unwrap(), done);
    assert_eq!(sys.calls.lock().unwrap().len(), 8);
}

#[test]
fn a_failed_step_is_false_with_its_reason_and_the_others_still_run() {
    let sys = Fake {
        reseed: Some(libc::EPERM),
        sethostname: Some(libc::EPERM),
        machine_id: Some(libc::ENOSPC),
        ..fake()
    };
    let done = apply(&req(), &sys).unwrap();
    assert!(!done.reseeded && done.clock_stepped && !done.machine_id_written);
    // The hostname is what the kernel has, not what was asked for.
    assert_eq!(done.hostname, "old");
    assert_eq!(
        done.errors,
        [
            "reseed: Operation not permitted",
            "sethostname: Operation not permitted",
            "machine-id: No space left on device",
        ]
    );
    assert_eq!(sys.calls.lock().unwrap().len(), 4);
    let line = summary(&done, None);
    assert!(
        line.contains("rng NOT reseeded") && line.contains("clock not set"),
        "{line}"
    );
}

#[test]
fn a_read_only_or_missing_etc_is_not_an_error() {
    for errno in [libc::EROFS, libc::ENOENT] {
        let sys = Fake {
            machine_id: Some(errno),
            ..fake()
        };
        let done = apply(&req(), &sys).unwrap();
        assert!(done.reseeded && !done.machine_id_written && done.errors.is_empty());
    }
    let sys = Fake {
        clock: Some(libc::EINVAL),
        ..fake()
    };
    let done = apply(&req(), &sys).unwrap();
    assert!(!done.clock_stepped);
    assert_eq!(done.errors, ["clock_settime: Invalid argument"]);
}

#[test]
fn a_bad_field_is_invalid_input_and_changes_nothing() {
    let sys = fake();
    let mut bad = req();
    bad.entropy = "zz".repeat(ENTROPY_LEN);
    let e = apply(&bad, &sys).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidInput);
    assert!(e.message.contains("entropy"), "{e}");
    let mut bad = req();
    bad.hostname = "no_underscores".into();
    assert_eq!(apply(&bad, &sys).unwrap_err().kind, ErrorKind::InvalidInput);
    assert!(sys.calls.lock().unwrap().is_empty());
}

#[test]
fn the_guest_syscalls_refuse_outside_pid_1() {
    let e = GuestSys.step_realtime(0).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM));
    let e = GuestSys.reseed(&[0; ENTROPY_LEN]).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM));
    assert!(GuestSys.set_hostname("x").is_err());
    assert!(GuestSys.write_machine_id(MID).is_err());
}
