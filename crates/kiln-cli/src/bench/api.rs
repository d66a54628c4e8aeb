//! `kiln bench api`: N sandboxes created, exec'd in (`echo`, output checked) and deleted
//! through the REST API by C clients in parallel; wall time, throughput, p50/p99 per
//! operation, errors, and what was left behind (VMM processes, state-dir entries, rows).
//! Baseline in the same run: the same cycle for fewer sandboxes (n/10, at least 4) one
//! at a time through the library in this process, and as many one at a time through
//! the API: their ratio is what the API path adds to create and exec. (A ratio against
//! the loaded run would mostly measure the load: with C clients on few CPUs every
//! operation waits for the others.)
//!
//! With `--idle-flood N` the loaded run is repeated while N connections without a token
//! sit idle on the server ([`super::flood`]): the errors of that run must be zero too.
//!
//! Without `--remote` it starts its own `kiln serve` (a child of this binary) with a
//! private state directory under the temp dir, which the library baseline shares. With
//! `--remote URL` it measures that server; leftovers there are counted among the
//! sandboxes this run created only, and processes and folders only when the server's
//! state directory is on this host. The baseline then uses a private state directory.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Result};
use kiln_server::client::{Client, ListFilter};
use serde_json::{json, Value};

use super::cycle::{drive, Api, Library, Measured};
use super::flood::Flood;
use super::leaks::{self, Scope};
use super::own_server::OwnServer;
use super::sandbox::ratio;
use super::stats::{percentile, summary};

#[derive(clap::Args)]
pub struct ApiBenchArgs {
    /// Sandboxes created, exec'd in and deleted through the API.
    #[arg(short = 'n', long, default_value_t = 200)]
    n: usize,
    /// API clients working in parallel.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Image of the sandboxes.
    #[arg(long, default_value = "minimal")]
    image: String,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 128)]
    memory: u64,
    /// Sandboxes of the unloaded comparison, one at a time through the library and
    /// through the API (default: n/10, at least 4).
    #[arg(long, value_name = "N")]
    baseline: Option<usize>,
    /// Also run the loaded cycle again while N connections without a token sit idle on
    /// the server (reopened as fast as the server closes them); reports both runs and
    /// their ratio.
    #[arg(long, value_name = "N", default_value_t = 0)]
    idle_flood: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs the benchmark against `remote`, or against a server of its own.
pub fn run(a: ApiBenchArgs, remote: Option<Client>) -> Result<i32> {
    ensure!(a.n >= 1, "-n {}: give at least one sandbox", a.n);
    ensure!(a.clients >= 1, "--clients 0: give at least one client");
    let tmp = std::env::temp_dir().join(format!("kiln-bench-api-{}", std::process::id()));
    let state = tmp.join("state");
    std::fs::create_dir_all(&state)?;
    // The library baseline (and our own server) keep their sandboxes here. Set before
    // this process starts any thread.
    std::env::set_var("KILN_STATE_DIR", &state);
    let report = measure(&a, remote, &tmp, &state)?;
    let failed = report["errors"].as_u64() != Some(0) || report["leaked"].as_u64() != Some(0);
    if failed {
        eprintln!(
            "kiln: errors or leftovers; the run's files are kept in {}",
            tmp.display()
        );
    } else {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_text(&report);
    }
    Ok(if failed { 1 } else { 0 })
}

fn measure(a: &ApiBenchArgs, remote: Option<Client>, tmp: &Path, state: &Path) -> Result<Value> {
    let dots = !a.json;
    let (own, client) = match remote {
        Some(c) => (None, c),
        None => {
            let (s, c) = OwnServer::start(state, tmp.join("serve.log"))?;
            (Some(s), c)
        }
    };
    let lib = Library {
        image: a.image.clone(),
        memory_mib: a.memory,
    };
    // Warm-up (not measured): image files into the page cache for both sides.
    let warm = drive(&lib, 1, 1, false);
    if let Some(e) = warm.errors.first() {
        anyhow::bail!("the warm-up sandbox (through the library) failed: {e}");
    }
    let base_n = a.baseline.unwrap_or((a.n / 10).max(4));
    let base = drive(&lib, base_n, 1, dots);
    let api = Api {
        client,
        image: a.image.clone(),
        memory_mib: a.memory,
        created: Default::default(),
        first_dir: Default::default(),
    };
    let unloaded = drive(&api, base_n, 1, dots);
    let measured = drive(&api, a.n, a.clients, dots);
    let flooded = match a.idle_flood {
        0 => None,
        n => {
            let flood = Flood::start(api.client.url(), n)?;
            let m = drive(&api, a.n, a.clients, dots);
            Some((m, flood.stop()))
        }
    };
    if dots {
        eprintln!();
    }
    let created = api.created.into_inner().unwrap();
    let own_server = own.is_some();
    let scope = if own_server {
        Scope::All
    } else {
        Scope::Ids(&created)
    };
    let rows: Vec<String> = match api.client.list(&ListFilter::default()) {
        Ok(all) => all
            .into_iter()
            .map(|v| v.id)
            .filter(|id| scope.owns_id(id))
            .collect(),
        Err(e) => vec![format!("cannot list the server's sandboxes: {e}")],
    };
    let mut errors: Vec<String> = Vec::new();
    if let Some(s) = own {
        if let Err(e) = s.stop() {
            errors.push(format!("stopping kiln serve: {e:#}"));
        }
    }
    // Our private directory (own server + baseline, or the baseline alone) fully; a
    // remote server's directory only for our sandboxes and only if it is on this host.
    let (mut leaked, local) = leaks::report(state, &Scope::All);
    let server_dir = api
        .first_dir
        .into_inner()
        .unwrap()
        .and_then(|d| d.parent().map(PathBuf::from));
    let server = match server_dir.filter(|d| d != state && d.is_dir()) {
        Some(d) => {
            let (n, v) = leaks::report(&d, &scope);
            leaked += n;
            v
        }
        None => Value::Null,
    };
    leaked += rows.len();
    for m in [&measured, &unloaded, &base] {
        errors.extend(m.errors.iter().cloned());
    }
    let flood = flooded.map_or(Value::Null, |(m, tally)| {
        errors.extend(m.errors.iter().cloned());
        json!({
            "flood": tally,
            "api": phase(&m, a.n, a.clients),
            "ratio_over_api_create_p50": ratio(&m.create, &measured.create),
            "ratio_over_api_exec_p50": ratio(&m.exec, &measured.exec),
            "ratio_over_api_create_p99": ratio_p99(&m.create, &measured.create),
            "ratio_over_api_exec_p99": ratio_p99(&m.exec, &measured.exec),
        })
    });
    Ok(json!({
        "server": if own_server { "own" } else { "remote" },
        "url": api.client.url(),
        "image": a.image,
        "memory_mib": a.memory,
        "sandboxes": a.n,
        "clients": a.clients,
        "api": phase(&measured, a.n, a.clients),
        "api_one_client": phase(&unloaded, base_n, 1),
        "library_baseline": phase(&base, base_n, 1),
        "ratio_api_over_library_create_p50": ratio(&unloaded.create, &base.create),
        "ratio_api_over_library_exec_p50": ratio(&unloaded.exec, &base.exec),
        "idle_flood": flood,
        "errors": errors.len(),
        "first_errors": errors.iter().take(5).collect::<Vec<_>>(),
        "leaked": leaked,
        "leaks": {
            "rows": rows,
            "local": local,
            "server": server,
        },
    }))
}

fn ratio_p99(a: &[f64], b: &[f64]) -> Value {
    let r = percentile(a, 99.0).unwrap_or(f64::NAN) / percentile(b, 99.0).unwrap_or(f64::NAN);
    if r.is_finite() {
        json!((r * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

/// Figures of one run of the cycle.
fn phase(m: &Measured, n: usize, clients: usize) -> Value {
    let secs = m.wall.as_secs_f64();
    json!({
        "sandboxes": n,
        "clients": clients,
        "wall_s": (secs * 1000.0).round() / 1000.0,
        "sandboxes_per_s": (m.delete.len() as f64 / secs * 1000.0).round() / 1000.0,
        "create_ms": summary(&m.create),
        "exec_ms": summary(&m.exec),
        "delete_ms": summary(&m.delete),
        "errors": m.errors.len(),
    })
}

fn print_text(r: &Value) {
    println!(
        "kiln bench api: {} sandboxes ({} image, {} MiB) by {} clients via {}",
        r["sandboxes"],
        r["image"].as_str().unwrap_or_default(),
        r["memory_mib"],
        r["clients"],
        r["url"].as_str().unwrap_or_default()
    );
    for (name, p) in [
        ("API", &r["api"]),
        ("API, one client", &r["api_one_client"]),
        ("library, one client (baseline)", &r["library_baseline"]),
    ] {
        println!(
            "{name}: {} sandboxes by {} clients, wall {} s, {} sandboxes/s",
            p["sandboxes"], p["clients"], p["wall_s"], p["sandboxes_per_s"]
        );
        print_ops(p);
    }
    println!(
        "API / library p50, one client each: create {}, exec {}",
        r["ratio_api_over_library_create_p50"], r["ratio_api_over_library_exec_p50"]
    );
    let f = &r["idle_flood"];
    if !f.is_null() {
        let p = &f["api"];
        println!(
            "API under an idle flood ({}): wall {} s, {} errors",
            f["flood"], p["wall_s"], p["errors"]
        );
        print_ops(p);
        println!(
            "flood / no flood: create p50 {} p99 {}, exec p50 {} p99 {}",
            f["ratio_over_api_create_p50"],
            f["ratio_over_api_create_p99"],
            f["ratio_over_api_exec_p50"],
            f["ratio_over_api_exec_p99"]
        );
    }
    println!("errors: {}", r["errors"]);
    for e in r["first_errors"].as_array().into_iter().flatten() {
        println!("  {}", e.as_str().unwrap_or_default());
    }
    println!("leaked: {} ({})", r["leaked"], r["leaks"]);
}

/// One line per operation of a run: p50, p99 and count.
fn print_ops(p: &Value) {
    for op in ["create_ms", "exec_ms", "delete_ms"] {
        println!(
            "  {:<10} p50 {:>9.1} ms  p99 {:>9.1} ms  (n = {})",
            op.trim_end_matches("_ms"),
            p[op]["p50"].as_f64().unwrap_or(f64::NAN),
            p[op]["p99"].as_f64().unwrap_or(f64::NAN),
            p[op]["n"]
        );
    }
}
