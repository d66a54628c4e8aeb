//! Firecracker-compatible routes: field names, status codes (204 on success, 400 with
//! `{"fault_message": ...}` on any error) and pre-/post-boot rules follow Firecracker's
//! API so its clients drive kiln-vmm unchanged.

use std::sync::Mutex;

use serde::Deserialize;
use serde_json::json;

use crate::devices::rate_limiter::RateLimiterConfig;

use super::error::{ApiError, Outcome};
use super::http::{Request, Response};
use super::snapshot;
use crate::config::{
    drive, parse_json, BootSource, Drive, EntropyConfig, MachineConfig, VsockConfig,
};
use crate::vmm::Vmm;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Action {
    action_type: String,
}

/// The actions of `PUT /actions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ActionType {
    InstanceStart,
    SendCtrlAltDel,
    FlushMetrics,
}

impl ActionType {
    fn parse(s: &str) -> Result<Self, ApiError> {
        match s {
            "InstanceStart" => Ok(Self::InstanceStart),
            "SendCtrlAltDel" => Ok(Self::SendCtrlAltDel),
            "FlushMetrics" => Ok(Self::FlushMetrics),
            other => Err(ApiError::UnknownAction(other.into())),
        }
    }
}

fn pre_boot(vmm: &Vmm) -> Result<(), ApiError> {
    if vmm.is_running() {
        Err(ApiError::AfterStart)
    } else {
        Ok(())
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Outcome {
    let v = serde_json::to_value(v)?;
    Ok(Response::json(200, &v))
}

fn put_machine_config(vmm: &mut Vmm, body: &str) -> Outcome {
    pre_boot(vmm)?;
    let mc: MachineConfig = parse_json(body)?;
    mc.validate(vmm.host())?;
    vmm.config.machine_config = mc;
    vmm.refresh_prepared();
    Ok(Response::no_content())
}

/// PATCH: only the given fields change.
fn patch_machine_config(vmm: &mut Vmm, body: &str) -> Outcome {
    pre_boot(vmm)?;
    let patch: serde_json::Map<String, serde_json::Value> = parse_json(body)?;
    let mut current = serde_json::to_value(&vmm.config.machine_config)?;
    if let Some(obj) = current.as_object_mut() {
        obj.extend(patch);
    }
    let mc: MachineConfig = parse_json(&current.to_string())?;
    mc.validate(vmm.host())?;
    vmm.config.machine_config = mc;
    vmm.refresh_prepared();
    Ok(Response::no_content())
}

fn put_boot_source(vmm: &mut Vmm, body: &str) -> Outcome {
    pre_boot(vmm)?;
    let bs: BootSource = parse_json(body)?;
    bs.validate()?;
    vmm.config.boot_source = Some(bs);
    vmm.refresh_prepared();
    Ok(Response::no_content())
}

/// The drive_id in a body must name the drive in the path.
fn same_drive_id(body_id: &str, path_id: &str) -> Result<(), ApiError> {
    if body_id == path_id {
        return Ok(());
    }
    Err(ApiError::DriveIdMismatch {
        body: body_id.into(),
        path: path_id.into(),
    })
}

fn put_drive(vmm: &mut Vmm, id: &str, body: &str) -> Outcome {
    pre_boot(vmm)?;
    let d: Drive = parse_json(body)?;
    same_drive_id(&d.drive_id, id)?;
    d.validate()?;
    let mut drives = vmm.config.drives.clone();
    match drives.iter_mut().find(|x| x.drive_id == id) {
        Some(slot) => *slot = d,
        None => drives.push(d),
    }
    drive::check_single_root(&drives)?;
    vmm.config.drives = drives;
    Ok(Response::no_content())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DrivePatch {
    drive_id: String,
    path_on_host: Option<String>,
    rate_limiter: Option<RateLimiterConfig>,
}

/// PATCH: a new backing file for an existing drive and/or a new rate limiter, before
/// boot or on a running VM (a new file is opened at once and the guest gets a
/// config-change interrupt; new buckets start full).
fn patch_drive(vmm: &mut Vmm, id: &str, body: &str) -> Outcome {
    let p: DrivePatch = parse_json(body)?;
    same_drive_id(&p.drive_id, id)?;
    let Some(pos) = vmm.config.drives.iter().position(|d| d.drive_id == id) else {
        return Err(ApiError::NoSuchDrive(id.into()));
    };
    let mut d = vmm.config.drives[pos].clone();
    if let Some(path) = &p.path_on_host {
        d.path_on_host = path.clone();
    }
    if let Some(patch) = &p.rate_limiter {
        // Firecracker's merge: a bucket given replaces the current one, one left out stays.
        d.rate_limiter = Some(d.rate_limiter.unwrap_or_default().patched(patch));
    }
    if vmm.is_running() {
        if let (Some(l), Some(_)) = (&d.rate_limiter, &p.rate_limiter) {
            l.validate("rate_limiter")
                .map_err(crate::config::ConfigError::new)?;
            vmm.update_drive_limiter(id, l)?;
        }
        if let Some(path) = &p.path_on_host {
            if path.is_empty() {
                return Err(crate::config::ConfigError::new(
                    "path_on_host is empty; give the path of the drive's new image",
                )
                .into());
            }
            vmm.swap_drive_backing(id, std::path::Path::new(path))?;
        }
    } else {
        d.validate()?;
    }
    vmm.config.drives[pos] = d;
    Ok(Response::no_content())
}

/// PUT /vsock: one vsock device; a second PUT replaces the first (before boot).
fn put_vsock(vmm: &mut Vmm, body: &str) -> Outcome {
    pre_boot(vmm)?;
    let v: VsockConfig = parse_json(body)?;
    v.validate()?;
    vmm.config.vsock = Some(v);
    Ok(Response::no_content())
}

fn put_action(vmm: &mut Vmm, body: &str) -> Outcome {
    let a: Action = parse_json(body)?;
    match ActionType::parse(&a.action_type)? {
        ActionType::InstanceStart => vmm.instance_start()?,
        ActionType::SendCtrlAltDel => vmm.send_ctrl_alt_del()?,
        ActionType::FlushMetrics => crate::metrics::flush()?,
    }
    Ok(Response::no_content())
}

fn instance_info(vmm: &Vmm) -> Outcome {
    let state = if vmm.is_paused() {
        "Paused"
    } else if vmm.is_running() {
        "Running"
    } else {
        "Not started"
    };
    let mut info = json!({
        "id": vmm.id,
        "state": state,
        "vmm_version": env!("CARGO_PKG_VERSION"),
        "app_name": "kiln-vmm",
    });
    if let Some(us) = vmm.boot_time_us() {
        info["kiln_boot_time_us"] = json!(us as u64);
    }
    Ok(Response::json(200, &info))
}

/// `PUT /entropy`: the virtio-rng's rate limiter (before boot).
fn put_entropy(vmm: &mut Vmm, body: &str) -> Outcome {
    pre_boot(vmm)?;
    let e: EntropyConfig = parse_json(body)?;
    e.validate()?;
    vmm.config.entropy = Some(e);
    Ok(Response::no_content())
}

/// `GET /version`: Firecracker's shape, kiln-vmm's version.
fn version() -> Outcome {
    Ok(Response::json(
        200,
        &json!({"firecracker_version": env!("CARGO_PKG_VERSION")}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Serial {
    serial_out_path: std::path::PathBuf,
}

/// `PUT /serial`: where the guest's serial console goes (as `--console FILE`).
fn put_serial(vmm: &mut Vmm, body: &str) -> Outcome {
    pre_boot(vmm)?;
    let s: Serial = parse_json(body)?;
    if s.serial_out_path.as_os_str().is_empty() {
        return Err(crate::config::ConfigError::new(
            "serial_out_path is empty; give the path of a file for the guest console",
        )
        .into());
    }
    vmm.set_serial_out(&s.serial_out_path)?;
    Ok(Response::no_content())
}

const NET: &str = "/network-interfaces/";

fn route(vmm: &mut Vmm, req: &Request) -> Outcome {
    let path = req.path.split('?').next().unwrap_or("");
    let path = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    let body = req.body.as_str();
    match (req.method.as_str(), path) {
        ("GET", "/") => instance_info(vmm),
        ("GET", "/version") => version(),
        ("PUT", "/logger") => super::logger::put(body),
        ("PUT", "/serial") => put_serial(vmm, body),
        ("PUT", "/entropy") => put_entropy(vmm, body),
        ("PUT", "/mmds/config") => super::mmds::put_config(vmm, body),
        ("PUT", "/mmds") => super::mmds::put(vmm, body),
        ("PATCH", "/mmds") => super::mmds::patch(vmm, body),
        ("GET", "/mmds") => super::mmds::get(vmm),
        ("GET", "/machine-config") => to_json(&vmm.config.machine_config),
        ("PUT", "/machine-config") => put_machine_config(vmm, body),
        ("PATCH", "/machine-config") => patch_machine_config(vmm, body),
        ("PUT", "/boot-source") => put_boot_source(vmm, body),
        ("GET", "/vm/config") => to_json(&vmm.config),
        ("PUT", "/actions") => put_action(vmm, body),
        ("PUT", "/vsock") => put_vsock(vmm, body),
        ("PUT", "/metrics") => super::metrics::put(vmm, body),
        ("PUT", p) if p.starts_with(NET) => super::net::put(vmm, &p[NET.len()..], body),
        ("PATCH", p) if p.starts_with(NET) => super::net::patch(vmm, &p[NET.len()..], body),
        ("PUT", p) if p.starts_with("/drives/") => put_drive(vmm, &p["/drives/".len()..], body),
        ("PATCH", p) if p.starts_with("/drives/") => patch_drive(vmm, &p["/drives/".len()..], body),
        ("PATCH", "/vm") => snapshot::patch_vm(vmm, body),
        ("PUT", "/snapshot/create") => snapshot::create(vmm, body),
        ("PUT", "/snapshot/load") => snapshot::load(vmm, body),
        ("PUT", "/snapshot/working-set") => snapshot::save_working_set(vmm),
        (m, p) => Err(ApiError::NoRoute {
            method: m.into(),
            path: p.into(),
        }),
    }
}

/// Handles one request against the shared VMM state.
pub fn handle(vmm: &Mutex<Vmm>, req: &Request) -> Response {
    let mut vmm = match vmm.lock() {
        Ok(v) => v,
        Err(p) => p.into_inner(),
    };
    route(&mut vmm, req).unwrap_or_else(|e| {
        let msg = e.to_string();
        // A failed configuration call before the VM runs is why it will not boot, until
        // corrected (InstanceStart records its own failures).
        let path = req.path.split('?').next().unwrap_or("");
        if req.method != "GET" && path != "/actions" && !vmm.is_running() {
            crate::boot_error::record(crate::boot_error::api_stage(path), None, &msg);
        }
        Response::fault(400, msg)
    })
}

#[cfg(test)]
mod tests;
