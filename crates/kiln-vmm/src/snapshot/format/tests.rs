//! Loading state files: the format version gate and the saved virtio device kinds.

use super::*;
use crate::devices::i8042::I8042State;
use crate::devices::virtio::{BlockState, RngState, VirtioDeviceState};
use crate::test_dir::TempDir;
use crate::vstate::vcpu_state::VcpuState;

fn vcpu() -> VcpuState {
    serde_json::from_value(serde_json::json!({
        "cpuid": [], "msrs": [], "regs": kvm_bindings::kvm_regs::default(),
        "sregs": kvm_bindings::kvm_sregs::default(), "xsave": kvm_bindings::kvm_xsave::default(),
        "xcrs": kvm_bindings::kvm_xcrs::default(), "debug_regs": kvm_bindings::kvm_debugregs::default(),
        "lapic": kvm_bindings::kvm_lapic_state::default(), "mp_state": kvm_bindings::kvm_mp_state::default(),
        "vcpu_events": kvm_bindings::kvm_vcpu_events::default(), "tsc_khz": null
    }))
    .unwrap()
}

fn transport(device: VirtioDeviceState) -> TransportState {
    TransportState {
        status: 0,
        device_features_sel: 0,
        driver_features_sel: 0,
        driver_features: 0,
        queue_sel: 0,
        activated: false,
        interrupt_status: 0,
        queue_config_error: vec![false],
        queues: vec![virtio_queue::QueueState {
            max_size: 256,
            ..Default::default()
        }],
        device,
    }
}

/// A well-formed state of a 1-vCPU, 128 MiB machine without drives, and its memory file.
fn sample(dir: &TempDir) -> SnapshotState {
    let config = VmConfig::default();
    let ranges = ram_ranges(config.machine_config.mem_size_mib << 20);
    let size = ranges.iter().map(|r| r.1).sum();
    let mem = std::fs::File::create(dir.0.join(MEMORY_FILE)).unwrap();
    mem.set_len(size).unwrap();
    SnapshotState {
        format: FORMAT.into(),
        version: VERSION,
        created_unix_ms: 0,
        config,
        memory_ranges: ranges,
        memory: SnapFile {
            file: MEMORY_FILE.into(),
            size,
            sha256: None,
            stamp: None,
        },
        disks: Vec::new(),
        vm: VmState {
            pic_master: Default::default(),
            pic_slave: Default::default(),
            ioapic: Default::default(),
            pit: Default::default(),
            clock: Default::default(),
        },
        vcpus: vec![vcpu()],
        devices: DevicesState {
            virtio: vec![transport(VirtioDeviceState::Rng(RngState::default()))],
            serial: UartState(Default::default()),
            i8042: I8042State {
                status: 0x14,
                control: 0x05,
                pending_cmd: None,
                output: Vec::new(),
            },
        },
    }
}

#[test]
fn a_well_formed_state_loads() {
    let dir = TempDir::new("good");
    let path = dir.0.join(STATE_FILE);
    sample(&dir).write(&path).unwrap();
    let s = SnapshotState::load(&path).unwrap();
    assert_eq!(s.version, VERSION);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(r#""device":{"kind":"rng"}"#), "{text}");
}

#[test]
fn a_version_1_state_file_is_refused_naming_both_versions() {
    assert_eq!(VERSION, 2);
    let dir = TempDir::new("v1");
    let path = dir.0.join(STATE_FILE);
    sample(&dir).write(&path).unwrap();
    // A version-1 file: the same layout, with untyped device state beside device_type.
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["version"] = 1.into();
    v["devices"]["virtio"][0]["device_type"] = 4.into();
    v["devices"]["virtio"][0]["device"] = serde_json::Value::Null;
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    let err = SnapshotState::load(&path).err().unwrap().to_string();
    assert!(
        err.contains("snapshot format version 1 is not supported by this kiln-vmm")
            && err.contains("it reads version 2")
            && err.contains("take the snapshot again"),
        "{err}"
    );
}

#[test]
fn saved_device_kinds_must_be_the_configured_ones() {
    let dir = TempDir::new("kinds");
    let path = dir.0.join(STATE_FILE);
    let mut s = sample(&dir);
    s.devices.virtio = vec![transport(VirtioDeviceState::Block(BlockState {
        capacity: 8,
        read_only: false,
    }))];
    s.write(&path).unwrap();
    let err = SnapshotState::load(&path).err().unwrap().to_string();
    assert!(
        err.contains("[virtio-blk]") && err.contains("attaches [virtio-rng]"),
        "{err}"
    );
    // A kind that does not exist does not parse.
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["devices"]["virtio"][0]["device"] = serde_json::json!({"kind": "floppy"});
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    let err = SnapshotState::load(&path).err().unwrap().to_string();
    assert!(err.contains("does not parse"), "{err}");
}

#[test]
fn a_network_interface_is_saved_after_the_other_devices() {
    let dir = TempDir::new("kinds-net");
    let path = dir.0.join(STATE_FILE);
    let mut s = sample(&dir);
    s.config.network_interfaces = vec![crate::config::NetworkInterface {
        iface_id: "eth0".into(),
        host_dev_name: "tap0".into(),
        guest_mac: None,
        rx_rate_limiter: None,
        tx_rate_limiter: None,
    }];
    s.write(&path).unwrap();
    let err = SnapshotState::load(&path).err().unwrap().to_string();
    assert!(err.contains("attaches [virtio-rng, virtio-net]"), "{err}");
    s.devices.virtio.push(transport(VirtioDeviceState::Net(
        crate::devices::virtio::NetState {
            iface_id: "eth0".into(),
            mac: None,
            rx_limiter: Default::default(),
            tx_limiter: Default::default(),
        },
    )));
    s.write(&path).unwrap();
    SnapshotState::load(&path).unwrap();
}
