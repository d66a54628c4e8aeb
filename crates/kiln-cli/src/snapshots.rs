//! `kiln pause | resume | snapshot | restore | fork | pool`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use kiln::snapshot::Trust;
use kiln::{Sandbox, Snapshot};

use crate::listing;
use crate::sandbox_args::parse_backend;

#[derive(clap::Args)]
pub struct IdArg {
    /// The sandbox.
    pub id: String,
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    pub cmd: Option<SnapCmd>,
    /// The sandbox to snapshot (`kiln snapshot ID --name N`).
    pub id: Option<String>,
    /// Name of the snapshot (default: generated).
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(clap::Subcommand)]
pub enum SnapCmd {
    /// List snapshots.
    Ls,
    /// Delete snapshots.
    Rm { names: Vec<String> },
    /// Hash every file of a snapshot and compare with the recorded SHA-256.
    Verify { name: String },
    /// Copy a snapshot directory into the store, verifying it.
    Import {
        dir: PathBuf,
        #[arg(long)]
        name: String,
    },
}

#[derive(clap::Args)]
pub struct RestoreArgs {
    /// Snapshot name (or a snapshot directory path).
    pub snapshot: String,
    /// Use this id instead of a generated one.
    #[arg(long)]
    pub id: Option<String>,
    /// `file` (copy-on-write mapping of the memory file) or `uffd` (userfaultfd with the
    /// recorded working set prefetched).
    #[arg(long, default_value = "file")]
    pub memory_backend: String,
}

#[derive(clap::Args)]
pub struct ForkArgs {
    /// The sandbox to fork.
    pub id: String,
    /// Number of children.
    #[arg(short, default_value_t = 1)]
    pub n: usize,
}

#[derive(clap::Args)]
pub struct PoolArgs {
    /// The snapshot whose pool to fill.
    pub snapshot: String,
    /// Pool size.
    #[arg(short, default_value_t = 2)]
    pub n: usize,
}

pub fn pause(a: IdArg) -> Result<i32> {
    Sandbox::get(&a.id)?.pause()?;
    println!("{} paused", a.id);
    Ok(0)
}

pub fn resume(a: IdArg) -> Result<i32> {
    Sandbox::get(&a.id)?.resume()?;
    println!("{} resumed", a.id);
    Ok(0)
}

pub fn snapshot(a: SnapshotArgs) -> Result<i32> {
    match (a.cmd, a.id) {
        (Some(SnapCmd::Ls), _) => list(),
        (Some(SnapCmd::Rm { names }), _) => {
            for n in names {
                Snapshot::remove_named(&n)?;
                println!("{n} removed");
            }
            Ok(0)
        }
        (Some(SnapCmd::Verify { name }), _) => {
            let (_, v) = Snapshot::get(&name)?.verify(Trust::Rehash)?;
            println!("{name}: {} files match their SHA-256", v.hashed);
            Ok(0)
        }
        (Some(SnapCmd::Import { dir, name }), _) => {
            Snapshot::import(&dir, &name)?;
            println!("{name}");
            Ok(0)
        }
        (None, Some(id)) => {
            let s = Sandbox::get(&id)?.snapshot(a.name.as_deref())?;
            println!("{}", s.name());
            Ok(0)
        }
        (None, None) => bail!("give a sandbox id (`kiln snapshot ID --name N`) or a subcommand"),
    }
}

fn list() -> Result<i32> {
    let now = listing::now_secs();
    listing::print_snapshot_header();
    let pools = Sandbox::pool_sizes()?;
    for s in Snapshot::list()? {
        let pool = pools.get(&s.meta.name).copied().unwrap_or(0);
        listing::print_snapshot_row(&s.meta, now, Some(pool));
    }
    Ok(0)
}

pub fn restore(a: RestoreArgs) -> Result<i32> {
    let mut b = Sandbox::builder()
        .from_snapshot(&a.snapshot)
        .memory_backend(parse_backend(&a.memory_backend)?)
        .detach(true);
    if let Some(id) = a.id {
        b = b.id(id);
    }
    let sb = b.create()?;
    println!("{}", sb.id());
    refill_pool(&a.snapshot);
    Ok(0)
}

pub fn fork(a: ForkArgs) -> Result<i32> {
    let mut parent = Sandbox::get(&a.id)?;
    let f = parent.fork_timed(a.n)?;
    for mut c in f.children {
        c.set_detach(true);
        println!("{}", c.id());
    }
    eprintln!(
        "kiln: {} children in {:.1} ms; {} was paused for {:.1} ms",
        a.n,
        f.total.as_secs_f64() * 1e3,
        a.id,
        f.pause_window.as_secs_f64() * 1e3
    );
    Ok(0)
}

pub fn pool(a: PoolArgs) -> Result<i32> {
    let added = Sandbox::pool_fill(&a.snapshot, a.n)?;
    eprintln!("kiln: pool of {} holds {} ({added} added)", a.snapshot, a.n);
    Ok(0)
}

/// If `snapshot` has a warm pool below its target size, refills it in the background
/// (a detached `kiln pool`), so the next create is a hand-off again.
pub fn refill_pool(snapshot: &str) {
    let Some(target) = Sandbox::pool_refill_target(snapshot) else {
        return;
    };
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["pool", snapshot, "-n", &target.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // Its own session: the refill outlives a Ctrl-C of this command.
    kiln::process::in_own_session(&mut cmd);
    if let Err(e) = cmd.spawn() {
        eprintln!("kiln: warning: cannot refill the pool of {snapshot}: {e}");
    }
}
