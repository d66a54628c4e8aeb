//! virtio-net: a guest booted with a network interface on a TAP sees `eth0` with the
//! configured MAC. The TAP lives in a network namespace the test makes (a thread that
//! unshared CLONE_NEWNET; kiln-vmm, spawned from that thread, runs in it), so nothing is
//! left on the host: the namespace and its TAP go when the thread and the VMM end.
//! Without /dev/net/tun (under scripts/harness: the outer kernel's `tun` module) the test
//! fails and says so.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use kiln_e2e::*;

const TAP: &str = "kilne0";
const MAC: &str = "06:00:ac:10:00:02";
/// The TAP a restored VM moves to.
const TAP2: &str = "kilne1";

/// A persistent TAP `name` in the calling thread's network namespace.
fn make_tap(name: &str) -> std::io::Result<()> {
    #[repr(C)]
    struct IfReq {
        name: [libc::c_char; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
        _pad: [0; 22],
    };
    for (d, s) in req.name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: TUNSETIFF reads one ifreq; TUNSETPERSIST takes an int by value.
    let ok = unsafe {
        libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req) == 0
            && libc::ioctl(tun.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_int) == 0
    };
    if ok {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Runs `f` on a thread in a new network namespace holding the TAP.
fn in_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: unshare with a flag only changes this thread's namespaces.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            panic!(
                "cannot make a network namespace: {}; run the test as root",
                std::io::Error::last_os_error()
            );
        }
        if let Err(e) = make_tap(TAP) {
            panic!(
                "cannot make TAP {TAP}: {e}; the host needs /dev/net/tun (the tun module: \
                 under scripts/harness the outer kernel must load it)"
            );
        }
        f()
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// Ends the VMM however the test ends.
struct Vmm(Child);

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_text(path: &Path, text: &str) -> String {
    let mut got = String::new();
    wait_until(TIMEOUT, || {
        got = std::fs::read_to_string(path).unwrap_or_default();
        got.contains(text)
    });
    got
}

/// Over the API socket: interfaces configured before boot, refused after it with a
/// reason, their rate limiters changed on the running VM, their counters in the metrics
/// line.
#[test]
fn a_running_vm_changes_its_interface_limits_over_the_api() {
    if !require_kvm("net_api") {
        return;
    }
    let t = TempDir::new("net-api");
    let g = spec("kiln.cat=/sys/class/net/eth0/address");
    let (sock, console, metrics) = (t.path("api.sock"), t.path("console.log"), t.path("metrics"));
    let vmm_bin = kiln::paths::vmm_binary();
    in_netns(move || {
        let child = Command::new(&vmm_bin)
            .arg("--api-sock")
            .arg(&sock)
            .arg("--console")
            .arg(&console)
            .arg("--metrics")
            .arg(&metrics)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", vmm_bin.display()));
        let _vmm = Vmm(child);
        assert!(wait_until(TIMEOUT, || sock.exists()), "no API socket");
        let api = kiln::FcClient::new(&sock);
        api.put(
            "/boot-source",
            &serde_json::json!({"kernel_image_path": g.kernel, "initrd_path": g.initrd,
                "boot_args": g.boot_args}),
        )
        .unwrap();
        api.put(
            "/machine-config",
            &serde_json::json!({"vcpu_count": 1, "mem_size_mib": 128}),
        )
        .unwrap();
        let limit =
            |size: u64| serde_json::json!({"bandwidth": {"size": size, "refill_time": 1000}});
        api.put(
            "/network-interfaces/eth0",
            &serde_json::json!({"iface_id": "eth0", "host_dev_name": TAP, "guest_mac": MAC,
                "tx_rate_limiter": limit(1 << 20)}),
        )
        .unwrap();
        let fault = |method: &str, path: &str, body: serde_json::Value| {
            let (status, text) = api.request(method, path, Some(&body)).unwrap();
            assert_eq!(status, 400, "{method} {path}: {text}");
            text
        };
        let e = fault(
            "PUT",
            "/network-interfaces/eth1",
            serde_json::json!({"iface_id": "eth1", "host_dev_name": TAP}),
        );
        assert!(e.contains("give each interface its own TAP"), "{e}");
        api.action("InstanceStart").unwrap();
        let text = wait_for_text(&console, &format!("eth0/address: {MAC}"));
        assert!(
            text.contains(MAC),
            "the guest has no eth0 with MAC {MAC}:\n{text}"
        );

        api.patch(
            "/network-interfaces/eth0",
            &serde_json::json!({"iface_id": "eth0", "tx_rate_limiter": limit(10 << 20),
                "rx_rate_limiter": limit(1 << 20)}),
        )
        .unwrap();
        let cfg = api.get("/vm/config").unwrap();
        let eth0 = &cfg["network-interfaces"][0];
        assert_eq!(eth0["tx_rate_limiter"]["bandwidth"]["size"], 10 << 20);
        assert_eq!(eth0["rx_rate_limiter"]["bandwidth"]["size"], 1 << 20);
        let e = fault(
            "PATCH",
            "/network-interfaces/eth9",
            serde_json::json!({"iface_id": "eth9"}),
        );
        assert!(e.contains("PUT /network-interfaces/eth9 first"), "{e}");
        let e = fault(
            "PUT",
            "/network-interfaces/eth1",
            serde_json::json!({"iface_id": "eth1", "host_dev_name": "tap9"}),
        );
        assert!(e.contains("only be added before the microVM starts"), "{e}");

        api.action("FlushMetrics").unwrap();
        let line = std::fs::read_to_string(&metrics).unwrap();
        let line: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        for k in [
            "rx_bytes",
            "tx_bytes",
            "rx_packets",
            "tx_packets",
            "rx_drops",
            "tx_drops",
            "rx_throttled",
            "tx_throttled",
        ] {
            assert!(line["net"]["eth0"][k].is_u64(), "net.eth0.{k} in {line}");
        }
    });
}

#[test]
fn the_guest_sees_eth0_with_the_configured_mac() {
    if !require_kvm("net_mac") {
        return;
    }
    let t = TempDir::new("net-mac");
    let g = spec("kiln.cat=/sys/class/net/eth0/address kiln.action=poweroff");
    let cfg = serde_json::json!({
        "boot-source": {
            "kernel_image_path": g.kernel,
            "initrd_path": g.initrd,
            "boot_args": g.boot_args,
        },
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 128},
        "network-interfaces": [{"iface_id": "eth0", "host_dev_name": TAP, "guest_mac": MAC}],
    });
    let cfg_path = t.path("vm.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let console = t.path("console.log");
    let vmm = kiln::paths::vmm_binary();
    let console_arg = console.clone();
    let status = in_netns(move || {
        let mut child = Command::new(&vmm)
            .arg("--config-file")
            .arg(&cfg_path)
            .arg("--no-api")
            .arg("--console")
            .arg(&console_arg)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", vmm.display()));
        let mut status = None;
        wait_until(TIMEOUT, || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        (status, err)
    });
    let text = std::fs::read_to_string(&console).unwrap_or_default();
    let (status, err) = status;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "kiln-vmm did not power off cleanly\nstderr: {err}\nconsole:\n{text}"
    );
    assert!(
        text.contains(&format!("cat /sys/class/net/eth0/address: {MAC}")),
        "the guest has no eth0 with MAC {MAC}\nconsole:\n{text}"
    );
}

/// A snapshot of a VM with an interface restores onto another TAP through
/// `network_overrides`; without one the parent's TAP, still held, is a 400 saying so.
#[test]
fn a_snapshot_restores_its_interface_onto_the_overriding_tap() {
    if !require_kvm("net_snapshot") {
        return;
    }
    let t = TempDir::new("net-snap");
    let g = spec("kiln.cat=/sys/class/net/eth0/address");
    let dir = t.0.clone();
    let vmm_bin = kiln::paths::vmm_binary();
    in_netns(move || {
        make_tap(TAP2).expect("second TAP");
        let spawn = |name: &str| {
            let sock = dir.join(format!("{name}.sock"));
            let child = Command::new(&vmm_bin)
                .arg("--api-sock")
                .arg(&sock)
                .arg("--console")
                .arg(dir.join(format!("{name}.console")))
                .arg("--metrics")
                .arg(dir.join(format!("{name}.metrics")))
                .stdin(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", vmm_bin.display()));
            let vmm = Vmm(child);
            assert!(wait_until(TIMEOUT, || sock.exists()), "no API socket");
            (vmm, kiln::FcClient::new(&sock))
        };
        let (_parent, a) = spawn("parent");
        a.put(
            "/boot-source",
            &serde_json::json!({"kernel_image_path": g.kernel, "initrd_path": g.initrd,
                "boot_args": g.boot_args}),
        )
        .unwrap();
        a.put(
            "/network-interfaces/eth0",
            &serde_json::json!({"iface_id": "eth0", "host_dev_name": TAP, "guest_mac": MAC,
                "tx_rate_limiter": {"ops": {"size": 1000, "refill_time": 1000}}}),
        )
        .unwrap();
        a.action("InstanceStart").unwrap();
        let text = wait_for_text(&dir.join("parent.console"), &format!("eth0/address: {MAC}"));
        assert!(
            text.contains(MAC),
            "the guest has no eth0 with MAC {MAC}:\n{text}"
        );
        a.patch("/vm", &serde_json::json!({"state": "Paused"}))
            .unwrap();
        let (state, mem) = (dir.join("state.json"), dir.join("mem"));
        a.put(
            "/snapshot/create",
            &serde_json::json!({"snapshot_type": "Full", "snapshot_path": state,
                "mem_file_path": mem}),
        )
        .unwrap();
        let saved = std::fs::read_to_string(&state).unwrap();
        assert!(
            saved.contains("\"kind\":\"net\"") || saved.contains("\"kind\": \"net\""),
            "no net device state in the snapshot"
        );

        let (_child, b) = spawn("child");
        let load = |overrides: serde_json::Value| {
            b.request(
                "PUT",
                "/snapshot/load",
                Some(&serde_json::json!({"snapshot_path": state,
                    "mem_backend": {"backend_type": "File", "backend_path": mem},
                    "resume_vm": true, "network_overrides": overrides})),
            )
            .unwrap()
        };
        let (status, e) = load(serde_json::json!([]));
        assert_eq!(status, 400, "{e}");
        assert!(e.contains("TAP 'kilne0' is busy"), "{e}");
        let (status, e) = load(serde_json::json!([{"iface_id": "eth0", "host_dev_name": TAP2}]));
        assert_eq!(status, 204, "{e}");
        assert_eq!(b.get("/").unwrap()["state"], "Running");
        let cfg = b.get("/vm/config").unwrap();
        let eth0 = &cfg["network-interfaces"][0];
        assert_eq!(eth0["host_dev_name"], TAP2);
        assert_eq!(eth0["guest_mac"], MAC);
        assert_eq!(eth0["tx_rate_limiter"]["ops"]["size"], 1000);
        b.action("FlushMetrics").unwrap();
        let line = std::fs::read_to_string(dir.join("child.metrics")).unwrap();
        assert!(line.contains("\"net\":{\"eth0\""), "{line}");
    });
}
