//! `kiln bench ...`: benchmark programs. Each reports p50/p99 and a ratio against a
//! baseline measured in the same run.

pub mod api;
mod boot;
mod cycle;
mod flood;
mod leaks;
mod net;
mod own_server;
mod procstat;
mod qemu;
mod sandbox;
mod snapshot;
mod stats;

use anyhow::Result;

#[derive(clap::Subcommand)]
pub enum BenchCmd {
    /// Boot N guests with kiln-vmm and with QEMU microvm (baseline); report p50/p99.
    Boot(boot::BootBenchArgs),
    /// Create → first exec finished (minimal and Debian images) vs host fork+exec.
    Create(sandbox::SandboxBenchArgs),
    /// Exec round trip of `true` in a running sandbox vs host fork+exec.
    Exec(sandbox::SandboxBenchArgs),
    /// Upload/download throughput of a 256 MiB file vs a host copy.
    Files(sandbox::SandboxBenchArgs),
    /// Snapshot pause window and seal time vs guest memory size, vs a cold create.
    Snapshot(snapshot::SnapBenchArgs),
    /// Restore → first exec finished (File and Uffd memory) vs a cold create.
    Restore(snapshot::SnapBenchArgs),
    /// Fork a python3 parent with live data into N children: each child's first exec, the parent's pause.
    Fork(snapshot::SnapBenchArgs),
    /// Private memory per idle forked child and how many fit in 16 GiB.
    Density(snapshot::SnapBenchArgs),
    /// N sandboxes created, exec'd in and deleted through `kiln serve` by C parallel
    /// clients (its own server, or --remote URL) vs the library; leftovers counted.
    Api(api::ApiBenchArgs),
    /// (root) Guest → upstream TCP throughput and connect round trip vs the same between
    /// host namespaces over a veth; what a network adds to a create (vs --net none).
    Net(net::NetBenchArgs),
}

pub fn run(cmd: BenchCmd) -> Result<i32> {
    match cmd {
        BenchCmd::Boot(a) => boot::run(a),
        BenchCmd::Create(a) => sandbox::run(sandbox::What::Create, a),
        BenchCmd::Exec(a) => sandbox::run(sandbox::What::Exec, a),
        BenchCmd::Files(a) => sandbox::run(sandbox::What::Files, a),
        BenchCmd::Snapshot(a) => snapshot::run(snapshot::What::Snapshot, a),
        BenchCmd::Restore(a) => snapshot::run(snapshot::What::Restore, a),
        BenchCmd::Fork(a) => snapshot::run(snapshot::What::Fork, a),
        BenchCmd::Density(a) => snapshot::run(snapshot::What::Density, a),
        BenchCmd::Api(a) => api::run(a, None),
        BenchCmd::Net(a) => net::run(a),
    }
}
