//! `kiln ls | stop | rm | cp`: finding, stopping, removing sandboxes and copying files.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use kiln::Sandbox;

#[derive(clap::Args)]
pub struct IdsArgs {
    /// Sandbox ids.
    #[arg(required = true)]
    ids: Vec<String>,
}

#[derive(clap::Args)]
pub struct CpArgs {
    /// Source: a local path or ID:/path.
    src: String,
    /// Destination: a local path or ID:/path.
    dst: String,
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
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    println!(
        "{:<14} {:<9} {:<11} {:<10} {:>4} {:>7} {:>8} {:>8}",
        "ID", "STATE", "BACKEND", "IMAGE", "CPUS", "MEMORY", "AGE", "PID"
    );
    for sb in Sandbox::list()? {
        let state = match sb.state() {
            kiln::State::Running if sb.record().pool.is_some() => "pooled".to_string(),
            s => s.to_string(),
        };
        let r = sb.record();
        println!(
            "{:<14} {:<9} {:<11} {:<10} {:>4} {:>6}M {:>7}s {:>8}",
            r.id,
            state,
            sb.backend_name(),
            r.image,
            r.cpus,
            r.memory_mib,
            now.saturating_sub(r.created),
            r.pid
        );
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
fn split(spec: &str) -> (Option<&str>, &str) {
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
