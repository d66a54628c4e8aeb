//! `kiln --remote URL create | ls | inspect | stop | rm | pause | resume`.

use anyhow::{ensure, Result};
use kiln_server::api::{CreateSandbox, MemoryBackendName};
use kiln_server::client::{Client, ListFilter};

use super::{explain, key_value};
use crate::commands::CreateArgs;
use crate::listing;
use crate::manage::IdsArgs;
use crate::sandbox_args::SandboxArgs;
use crate::snapshots::IdArg;

pub fn memory_backend(name: &str) -> Result<MemoryBackendName> {
    Ok(match crate::sandbox_args::parse_backend(name)? {
        kiln::MemoryBackend::File => MemoryBackendName::File,
        kiln::MemoryBackend::Uffd => MemoryBackendName::Uffd,
    })
}

/// The create request for `--image/--cpus/--memory/--from/...` as the local commands
/// take them. With `--from` the image, size and backend come from the snapshot, so they
/// are not sent (the server refuses them there).
pub fn request(s: &SandboxArgs) -> Result<CreateSandbox> {
    let mut req = CreateSandbox {
        idle_timeout_secs: s.idle_timeout.map(|t| t as f64),
        max_lifetime_secs: s.max_lifetime.map(|t| t as f64),
        cpu_quota: s.cpu_quota,
        ports: s.publish.clone(),
        ..Default::default()
    };
    for kv in &s.labels {
        let (k, v) = key_value("--label", kv)?;
        req.metadata.insert(k.into(), v.into());
    }
    match &s.from {
        Some(snap) => {
            req.from_snapshot = Some(snap.clone());
            req.memory_backend = Some(memory_backend(&s.memory_backend)?);
            if s.backend != "kiln" {
                req.backend = Some(s.backend.clone());
            }
        }
        None => {
            req.image = Some(s.image.clone());
            req.cpus = Some(s.cpus);
            req.memory_mib = Some(s.memory);
            req.backend = Some(s.backend.clone());
        }
    }
    Ok(req)
}

pub fn create(c: &Client, a: CreateArgs) -> Result<i32> {
    let mut req = request(&a.sandbox)?;
    for kv in &a.env {
        let (k, v) = key_value("-e", kv)?;
        req.env.insert(k.into(), v.into());
    }
    if let Some(t) = a.timeout {
        ensure!(
            t.is_finite() && t > 0.0,
            "--timeout {t}: use a positive number of seconds"
        );
        req.timeout_secs = Some(t);
    }
    req.id = a.id;
    let sb = c.create(&req).map_err(explain)?;
    println!("{}", sb.id);
    Ok(0)
}

pub fn ls(c: &Client) -> Result<i32> {
    let all = c.list(&ListFilter::default()).map_err(explain)?;
    let now = listing::now_secs();
    listing::print_sandbox_header();
    for v in &all {
        let row = listing::SandboxRow {
            id: &v.id,
            state: v.state.to_string(),
            backend: &v.backend,
            image: &v.image,
            cpus: v.cpus,
            memory_mib: v.memory_mib,
            created: u64::try_from(v.created_ms / 1000).unwrap_or(0),
            pid: v.pid,
        };
        listing::print_sandbox_row(&row, now);
    }
    Ok(0)
}

pub fn inspect(c: &Client, a: IdArg) -> Result<i32> {
    let v = c.get(&a.id).map_err(explain)?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(0)
}

/// `kiln port ID`: the `ports` of the sandbox as the server shows them.
pub fn port(c: &Client, a: crate::ports::PortArgs) -> Result<i32> {
    let v = c.get(&a.id).map_err(explain)?;
    for p in &v.ports {
        let spec: kiln::ports::PortSpec = p.parse()?;
        println!("{}", crate::ports::port_line(&spec));
    }
    Ok(0)
}

pub fn stop(c: &Client, a: IdsArgs) -> Result<i32> {
    for id in &a.ids {
        let r = c.stop(id).map_err(explain)?;
        println!("{id} stopped ({})", r.step);
    }
    Ok(0)
}

pub fn rm(c: &Client, a: IdsArgs) -> Result<i32> {
    for id in &a.ids {
        let r = c.remove(id).map_err(explain)?;
        if let Some(step) = r.step {
            println!("{id} stopped ({step})");
        }
        println!("{id} removed");
    }
    Ok(0)
}

pub fn pause(c: &Client, a: IdArg) -> Result<i32> {
    c.pause(&a.id).map_err(explain)?;
    println!("{} paused", a.id);
    Ok(0)
}

pub fn resume(c: &Client, a: IdArg) -> Result<i32> {
    c.resume(&a.id).map_err(explain)?;
    println!("{} resumed", a.id);
    Ok(0)
}
