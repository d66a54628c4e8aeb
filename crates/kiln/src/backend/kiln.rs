//! The `kiln` backend (the default): kiln's own `kiln-vmm`, driven through its
//! Firecracker-compatible API. The `firecracker` backend reuses these operations.

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use serde_json::json;

use super::fc_launch::{self, failed, Flavor};
use super::jail::{self, Input, Needs};
use super::{Capabilities, GuestChannel, MemoryBackend, OnSpawn, RestoreRequest, VmBackend, VmRef};
use crate::error::{Error, Result};
use crate::fc::FcClient;
use crate::state_dir::Dir;
use crate::vmm::GuestSpec;

/// How long the VMM API may take to take a Ctrl-Alt-Del request.
const API_TIMEOUT: Duration = Duration::from_secs(5);

pub struct KilnVmm;

fn flavor() -> Flavor {
    Flavor {
        bin: crate::paths::vmm_binary(),
        kiln: true,
    }
}

fn api(vm: &VmRef) -> FcClient {
    FcClient::new(vm.dir.api_sock())
}

fn vmm_err(vm: &VmRef, e: impl std::fmt::Display) -> Error {
    Error::Vmm {
        id: vm.id.into(),
        message: e.to_string(),
    }
}

pub(super) fn ctrl_alt_del(vm: &VmRef) -> Result<()> {
    api(vm)
        .with_timeout(API_TIMEOUT)
        .action("SendCtrlAltDel")
        .map_err(|e| vmm_err(vm, e))
}

pub(super) fn set_paused(vm: &VmRef, paused: bool) -> Result<()> {
    let state = if paused { "Paused" } else { "Resumed" };
    api(vm)
        .patch("/vm", &json!({ "state": state }))
        .map_err(|e| vmm_err(vm, e))
}

pub(super) fn vsock(vm: &VmRef) -> GuestChannel {
    GuestChannel::Vsock {
        uds: vm.dir.vsock(),
        port: kiln_proto::AGENT_PORT,
    }
}

impl VmBackend for KilnVmm {
    fn name(&self) -> &'static str {
        "kiln"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            pause_resume: true,
            snapshots: true,
            vsock: true,
            tap_networking: true,
            fork: true,
        }
    }
    fn start(&self, id: &str, dir: &Dir, spec: &GuestSpec, spawned: OnSpawn) -> Result<Child> {
        fc_launch::launch(&flavor(), dir, id, spec, spawned)
    }
    fn request_poweroff(&self, vm: &VmRef) -> Result<()> {
        ctrl_alt_del(vm)
    }
    fn pause(&self, vm: &VmRef) -> Result<()> {
        set_paused(vm, true)
    }
    fn resume(&self, vm: &VmRef) -> Result<()> {
        set_paused(vm, false)
    }
    fn snapshot(&self, vm: &VmRef, dest: &Path) -> Result<()> {
        let jailed = jail::uid_of(vm.dir);
        let out = match jailed {
            Some(uid) => jail::snapshot_out::prepare(vm.dir, uid)?,
            None => dest.to_path_buf(),
        };
        let body = json!({
            "snapshot_type": "Full",
            "snapshot_path": out.join(kiln_vmm::snapshot::format::STATE_FILE),
            "mem_file_path": out.join(kiln_vmm::snapshot::format::MEMORY_FILE),
            "kiln_copy_disks": true,
        });
        api(vm)
            .put("/snapshot/create", &body)
            .map_err(|e| vmm_err(vm, e))?;
        if jailed.is_some() {
            jail::snapshot_out::collect(&out, dest)?;
        }
        Ok(())
    }
    fn restore(
        &self,
        id: &str,
        dir: &Dir,
        req: &RestoreRequest,
        spawned: OnSpawn,
    ) -> Result<Child> {
        // Resolved paths: what the VMM is told is where its jail has them.
        let (state, mem) = (jail::real(req.state_path), jail::real(req.mem_path));
        let ws = req.working_set.map(jail::real);
        let req = &RestoreRequest {
            state_path: &state,
            mem_path: &mem,
            working_set: ws.as_deref(),
            ..req.clone()
        };
        let body = load_body(dir, req);
        // The snapshot's folder, read-only: kiln-vmm checks every file state.json names.
        let folder = req.state_path.parent().unwrap_or(req.state_path);
        let mut inputs = vec![folder.to_path_buf()];
        inputs.extend(
            Some(req.mem_path)
                .filter(|p| !p.starts_with(folder))
                .map(Into::into),
        );
        let ws = req
            .working_set
            .filter(|p| p.is_file() && !p.starts_with(folder));
        inputs.extend(ws.map(Into::into));
        // Read-only drives (the image) are opened where the snapshot names them.
        if let Ok(s) = kiln_vmm::snapshot::format::SnapshotState::load(req.state_path) {
            let ro = s.config.drives.iter().filter(|d| d.is_read_only);
            inputs.extend(ro.map(|d| jail::real(Path::new(&d.path_on_host))));
        }
        if jail::enabled()? {
            for p in &inputs {
                jail::share_read_only(p)?;
            }
        }
        let needs = Needs {
            inputs: inputs
                .into_iter()
                .map(|path| Input {
                    path,
                    writable: false,
                })
                .collect(),
            uffd: req.memory == MemoryBackend::Uffd,
            memory_bytes: std::fs::metadata(req.mem_path).map_or(0, |m| m.len()),
            netns: req.netns.clone(),
        };
        fc_launch::with_vmm(&flavor(), dir, id, &needs, spawned, |_, client| {
            client
                .put("/snapshot/load", &body)
                .map_err(|e| failed("restore", None, e.to_string()))
        })
    }
    fn guest_channel_info(&self, vm: &VmRef) -> GuestChannel {
        vsock(vm)
    }
}

/// `PUT /snapshot/load` with kiln's overrides: this folder's vsock socket and drives.
fn load_body(dir: &Dir, req: &RestoreRequest) -> serde_json::Value {
    let drives: serde_json::Map<String, serde_json::Value> = req
        .drives
        .iter()
        .map(|id| (id.clone(), json!(dir.disk(id))))
        .collect();
    let uffd = req.memory == MemoryBackend::Uffd;
    let mut body = json!({
        "snapshot_path": req.state_path,
        "mem_backend": {
            "backend_type": if uffd { "Uffd" } else { "File" },
            "backend_path": req.mem_path,
        },
        "resume_vm": true,
        "kiln_vsock_uds_path": dir.vsock(),
        "kiln_drives": drives,
    });
    if uffd {
        let ws = req.working_set.filter(|p| p.is_file());
        body["kiln_working_set"] = json!({
            "prefetch": ws,
            "record": if req.record_working_set && ws.is_none() {
                Some(dir.working_set_rec())
            } else {
                None
            },
        });
    }
    body
}
