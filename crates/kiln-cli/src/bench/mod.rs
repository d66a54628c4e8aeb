//! `kiln bench ...`: benchmark programs. Each reports p50/p99 and a ratio against a
//! baseline measured in the same run.

mod boot;
mod procstat;
mod qemu;
mod sandbox;
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
}

pub fn run(cmd: BenchCmd) -> Result<i32> {
    match cmd {
        BenchCmd::Boot(a) => boot::run(a),
        BenchCmd::Create(a) => sandbox::run(sandbox::What::Create, a),
        BenchCmd::Exec(a) => sandbox::run(sandbox::What::Exec, a),
        BenchCmd::Files(a) => sandbox::run(sandbox::What::Files, a),
    }
}
