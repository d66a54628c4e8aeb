//! `kiln ls | stop | rm | cp`: finding, stopping, removing sandboxes and copying files.

use std::path::Path;

use anyhow::{bail, Context, Result};
use kiln::Sandbox;

use crate::listing;

#[derive(clap::Args)]
pub struct IdsArgs {
    /// Sandbox ids.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

#[derive(clap::Args)]
pub struct CpArgs {
    /// Source: a local path or ID:/path.
    pub src: String,
    /// Destination: a local path or ID:/path.
    pub dst: String,
}

#[derive(clap::Args)]
pub struct ReapArgs {
    /// Keep reaping every second until interrupted.
    #[arg(long)]
    watch: bool,
}

pub fn reap(a: ReapArgs) -> Result<i32> {
    loop {
        for (id, why) in kiln::reap_expired()? {
            println!("{id} removed ({why} limit reached)");
        }
        if !a.watch {
            return Ok(0);
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

pub fn inspect(a: crate::snapshots::IdArg) -> Result<i32> {
    let info = Sandbox::get(&a.id)?.info();
    println!("{}", serde_json::to_string_pretty(&info)?);
    Ok(0)
}

pub fn ls() -> Result<i32> {
    let done = kiln::reconcile()?;
    for (id, why) in &done.failed {
        eprintln!("kiln: sandbox {id} failed: {why}");
    }
    let now = listing::now_secs();
    listing::print_sandbox_header();
    for sb in Sandbox::list()? {
        let state = match sb.state() {
            kiln::State::Running if sb.record().pool.is_some() => "pooled".to_string(),
            s => s.to_string(),
        };
        let r = sb.record();
        let row = listing::SandboxRow {
            id: &r.id,
            state,
            backend: sb.backend_name(),
            image: &r.image,
            cpus: r.cpus,
            memory_mib: r.memory_mib,
            created: r.created,
            pid: Some(r.pid),
        };
        listing::print_sandbox_row(&row, now);
    }
    Ok(0)
}

pub fn stop(a: IdsArgs) -> Result<i32> {
    for id in &a.ids {
        let how = Sandbox::get(id)?.stop()?;
        println!("{id} stopped ({how})");
    }
    Ok(0)
}

pub fn rm(a: IdsArgs) -> Result<i32> {
    for id in &a.ids {
        let mut sb = Sandbox::get(id)?;
        if matches!(
            sb.state(),
            kiln::State::Running | kiln::State::Paused | kiln::State::Failed
        ) {
            let how = sb.stop()?;
            println!("{id} stopped ({how})");
        }
        sb.remove()?;
        println!("{id} removed");
    }
    Ok(0)
}

/// `ID:/path` → (Some(ID), path); anything else is local.
pub fn split(spec: &str) -> (Option<&str>, &str) {
    match spec.split_once(':') {
        Some((id, path)) if !id.is_empty() && !id.contains('/') && path.starts_with('/') => {
            (Some(id), path)
        }
        _ => (None, spec),
    }
}

pub fn cp(a: CpArgs) -> Result<i32> {
    let bytes =
        match (split(&a.src), split(&a.dst)) {
            ((None, local), (Some(id), remote)) => Sandbox::get(id)?
                .upload(Path::new(local), remote)
                .with_context(|| format!("copying {local} to {id}:{remote}"))?,
            ((Some(id), remote), (None, local)) => Sandbox::get(id)?
                .download(remote, Path::new(local))
                .with_context(|| format!("copying {id}:{remote} to {local}"))?,
            ((None, _), (None, _)) => bail!("one side must be in a sandbox: ID:/path"),
            _ => bail!("copying between two sandboxes is not supported; copy through the host"),
        };
    eprintln!("kiln: copied {bytes} bytes");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn cp_specs() {
        assert_eq!(split("sb-1:/tmp/x"), (Some("sb-1"), "/tmp/x"));
        assert_eq!(split("./a:b"), (None, "./a:b"));
        assert_eq!(split("/abs/path"), (None, "/abs/path"));
        assert_eq!(split("C:relative"), (None, "C:relative"));
    }
}
