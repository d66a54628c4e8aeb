//! `kiln --remote URL snapshot [ls | rm] | restore | fork`. Verifying and importing
//! snapshot directories work on files of the server's host, so they stay local.

use std::time::Instant;

use anyhow::{bail, Result};
use kiln_server::api::RestoreRequest;
use kiln_server::client::Client;

use super::explain;
use super::sandboxes::memory_backend;
use crate::listing;
use crate::snapshots::{ForkArgs, RestoreArgs, SnapCmd, SnapshotArgs};

pub fn snapshot(c: &Client, a: SnapshotArgs) -> Result<i32> {
    match (a.cmd, a.id) {
        (Some(SnapCmd::Ls), _) => {
            let now = listing::now_secs();
            listing::print_snapshot_header();
            for s in c.snapshots().map_err(explain)? {
                listing::print_snapshot_row(&s.meta, now, Some(s.pool));
            }
            Ok(0)
        }
        (Some(SnapCmd::Rm { names }), _) => {
            for n in names {
                c.remove_snapshot(&n).map_err(explain)?;
                println!("{n} removed");
            }
            Ok(0)
        }
        (Some(SnapCmd::Verify { .. } | SnapCmd::Import { .. }), _) => bail!(
            "`kiln snapshot verify|import` does not work with --remote: they read snapshot files on the server's host; run them there"
        ),
        (None, Some(id)) => {
            let m = c.snapshot(&id, a.name.as_deref()).map_err(explain)?;
            println!("{}", m.name);
            Ok(0)
        }
        (None, None) => bail!("give a sandbox id (`kiln snapshot ID --name N`) or a subcommand"),
    }
}

pub fn restore(c: &Client, a: RestoreArgs) -> Result<i32> {
    let req = RestoreRequest {
        id: a.id,
        memory_backend: Some(memory_backend(&a.memory_backend)?),
    };
    let sb = c.restore(&a.snapshot, &req).map_err(explain)?;
    println!("{}", sb.id);
    Ok(0)
}

pub fn fork(c: &Client, a: ForkArgs) -> Result<i32> {
    let t = Instant::now();
    let children = c.fork(&a.id, a.n).map_err(explain)?;
    for child in &children {
        println!("{}", child.id);
    }
    eprintln!(
        "kiln: {} children in {:.1} ms (as the client saw it)",
        children.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    Ok(0)
}
