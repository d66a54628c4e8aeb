use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::*;
use crate::vstate::vcpu_state::VcpuStateError;

fn state(rip: u64) -> VcpuState {
    let mut s: VcpuState = serde_json::from_value(serde_json::json!({
        "cpuid": [], "msrs": [], "regs": kvm_bindings::kvm_regs::default(),
        "sregs": kvm_bindings::kvm_sregs::default(), "xsave": kvm_bindings::kvm_xsave::default(),
        "xcrs": kvm_bindings::kvm_xcrs::default(), "debug_regs": kvm_bindings::kvm_debugregs::default(),
        "lapic": kvm_bindings::kvm_lapic_state::default(), "mp_state": kvm_bindings::kvm_mp_state::default(),
        "vcpu_events": kvm_bindings::kvm_vcpu_events::default(), "tsc_khz": null
    }))
    .unwrap();
    s.regs.rip = rip;
    s
}

/// A stand-in vCPU thread: runs until asked to pause, parks with its "state".
fn fake_vcpu(ctl: Arc<VcpuControl>, index: usize, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        if ctl.want() == Want::Pause {
            ctl.park(index, Ok(state(index as u64)));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn pause_collects_every_vcpu_state_and_resume_releases_them() {
    let ctl = Arc::new(VcpuControl::new(2, Want::Run));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..2)
        .map(|i| {
            let (c, s) = (ctl.clone(), stop.clone());
            std::thread::spawn(move || fake_vcpu(c, i, s))
        })
        .collect();
    for _ in 0..3 {
        let states = ctl.pause().unwrap();
        assert_eq!(
            states.iter().map(|s| s.regs.rip).collect::<Vec<_>>(),
            [0, 1]
        );
        assert_eq!(ctl.parked_states().unwrap().unwrap().len(), 2);
        ctl.resume();
        assert!(ctl.parked_states().is_none());
    }
    stop.store(true, Ordering::SeqCst);
    threads.into_iter().for_each(|t| t.join().unwrap());
}

#[test]
fn a_vcpu_that_cannot_capture_its_state_fails_the_pause_naming_it() {
    let ctl = Arc::new(VcpuControl::new(2, Want::Run));
    let stop = Arc::new(AtomicBool::new(false));
    let good = std::thread::spawn({
        let (c, s) = (ctl.clone(), stop.clone());
        move || fake_vcpu(c, 0, s)
    });
    let bad = std::thread::spawn({
        let (c, s) = (ctl.clone(), stop.clone());
        move || {
            while !s.load(Ordering::SeqCst) {
                if c.want() == Want::Pause {
                    let source = VcpuStateError::Kvm {
                        op: "KVM_GET_XSAVE",
                        source: kvm_ioctls::Error::new(libc::EINVAL),
                    };
                    c.park(1, Err(CaptureError { vcpu: 1, source }));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    let err = ctl.pause().unwrap_err();
    assert!(matches!(
        err,
        PauseError::Capture(CaptureError { vcpu: 1, .. })
    ));
    assert!(
        err.to_string()
            .starts_with("cannot capture the state of vCPU 1: KVM KVM_GET_XSAVE: "),
        "{err}"
    );
    assert!(ctl.parked_states().unwrap().is_err());
    ctl.resume();
    stop.store(true, Ordering::SeqCst);
    good.join().unwrap();
    bad.join().unwrap();
}

#[test]
fn a_vcpu_that_never_parks_fails_the_pause_and_the_vm_keeps_running() {
    let ctl = VcpuControl::new(1, Want::Run);
    let err = ctl.pause().unwrap_err();
    assert!(err.to_string().contains("did not pause"), "{err}");
    assert_eq!(err, PauseError::Timeout);
    assert_eq!(ctl.want(), Want::Run);
}
