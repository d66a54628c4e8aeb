//! `kiln run | create | exec | shell`: sandboxes and the commands run in them.

use anyhow::{Context, Result};
use kiln::{ExecOptions, Sandbox};

use crate::sandbox_args::{CommandArgs, SandboxArgs};
use crate::stream;

#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    #[command(flatten)]
    pub command: CommandArgs,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub cmd: Vec<String>,
}

#[derive(clap::Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    /// Environment variable for every command (repeatable).
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Default per-command timeout in seconds.
    #[arg(long, value_name = "S")]
    pub timeout: Option<f64>,
    /// Use this id instead of a generated one.
    #[arg(long)]
    pub id: Option<String>,
}

#[derive(clap::Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub command: CommandArgs,
    /// The sandbox.
    pub id: String,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub cmd: Vec<String>,
}

#[derive(clap::Args)]
pub struct ShellArgs {
    /// The sandbox.
    id: String,
}

/// Boots a sandbox, runs one command, tears the sandbox down; exits with the command's
/// status.
pub fn run(a: RunArgs) -> Result<i32> {
    let opts = a.command.options(&a.cmd)?;
    let sb = a
        .sandbox
        .builder()?
        .create()
        .context("creating the sandbox")?;
    let code = stream::run(&sb, &opts, a.command.tty);
    let removed = sb.remove();
    let code = code?;
    removed.context("removing the sandbox")?;
    Ok(code)
}

/// Boots a sandbox that keeps running in the background; prints its id.
pub fn create(a: CreateArgs) -> Result<i32> {
    let mut b = a.sandbox.builder()?.detach(true);
    for kv in &a.env {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("-e {kv}: use KEY=VALUE"))?;
        b = b.env(k, v);
    }
    if let Some(t) = a.timeout {
        anyhow::ensure!(
            t.is_finite() && t > 0.0,
            "--timeout {t}: use a positive number of seconds"
        );
        b = b.timeout(std::time::Duration::from_secs_f64(t));
    }
    if let Some(id) = a.id {
        b = b.id(id);
    }
    let sb = b.create().context("creating the sandbox")?;
    println!("{}", sb.id());
    if let Some(snap) = &a.sandbox.from {
        crate::snapshots::refill_pool(snap);
    }
    Ok(0)
}

pub fn exec(a: ExecArgs) -> Result<i32> {
    let opts = a.command.options(&a.cmd)?;
    let sb = Sandbox::get(&a.id)?;
    stream::run(&sb, &opts, a.command.tty)
}

/// An interactive login shell (bash if the image has it).
pub fn shell(a: ShellArgs) -> Result<i32> {
    let sb = Sandbox::get(&a.id)?;
    let mut opts = ExecOptions::new([
        "/bin/sh",
        "-c",
        "command -v bash >/dev/null && exec bash -l; exec sh -l",
    ]);
    opts.stdin = Some(Vec::new());
    stream::run(&sb, &opts, true)
}
