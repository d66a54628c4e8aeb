//! `kiln`: the command-line tool.

mod bench;
mod boot;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "kiln", version, about = "kiln microVM sandboxes")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Boot a kernel with an initramfs and/or root disk, console attached (for debugging).
    Boot(boot::BootArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Boot(a) => boot::run(a),
        Cmd::Bench(b) => bench::run(b),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("kiln: error: {e:#}");
            std::process::exit(1);
        }
    }
}
