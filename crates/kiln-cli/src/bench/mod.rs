//! `kiln bench ...`: benchmark programs. Each reports p50/p99 and a ratio against a
//! baseline measured in the same run.

mod boot;
mod procstat;
mod qemu;
mod stats;

use anyhow::Result;

#[derive(clap::Subcommand)]
pub enum BenchCmd {
    /// Boot N guests with kiln-vmm and with QEMU microvm (baseline); report p50/p99.
    Boot(boot::BootBenchArgs),
}

pub fn run(cmd: BenchCmd) -> Result<i32> {
    match cmd {
        BenchCmd::Boot(a) => boot::run(a),
    }
}
