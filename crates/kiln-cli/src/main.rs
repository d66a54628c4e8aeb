//! `kiln`: the command-line tool.

mod bench;
mod boot;
mod commands;
mod events;
mod listing;
mod logs;
mod manage;
mod ports;
mod remote;
mod sandbox_args;
mod serve;
mod snapshots;
mod stream;
mod tty;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "kiln", version, about = "kiln microVM sandboxes")]
struct Cli {
    /// Run the command against a `kiln serve` at this URL (`unix:///path/kiln.sock` or
    /// `http://127.0.0.1:PORT`) instead of on this host; also `$KILN_REMOTE`.
    #[arg(long, global = true, value_name = "URL")]
    remote: Option<String>,
    /// The server's bearer token with --remote (default: `$KILN_TOKEN`, else the `token`
    /// file beside the unix socket).
    #[arg(long, global = true, value_name = "TOKEN")]
    token: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one command in a fresh sandbox, then remove it: `kiln run -- python3 -c 'print(42)'`.
    Run(commands::RunArgs),
    /// Create a sandbox that keeps running in the background; prints its id.
    Create(commands::CreateArgs),
    /// Run a command in a sandbox: `kiln exec ID -- CMD...`.
    Exec(commands::ExecArgs),
    /// Interactive shell in a sandbox.
    Shell(commands::ShellArgs),
    /// Copy files or directories: `kiln cp ./dir ID:/work`, `kiln cp ID:/out.txt .`.
    Cp(manage::CpArgs),
    /// List sandboxes (and reconcile the state store with the running VMMs).
    Ls,
    /// List the images sandboxes have booted (name, size, file).
    Images,
    /// Print everything known about a sandbox as JSON (state, failure reason, limits, pid).
    Inspect(snapshots::IdArg),
    /// Stop and remove sandboxes past their idle timeout or max lifetime; --watch keeps
    /// doing it every second (what `kiln serve` does by itself).
    Reap(manage::ReapArgs),
    /// Stop sandboxes (agent power-off, then SIGTERM, then SIGKILL).
    Stop(manage::IdsArgs),
    /// Stop and delete sandboxes with everything they left on the host.
    Rm(manage::IdsArgs),
    /// Print a sandbox's guest console (or, with --vmm, the VMM's log); -f follows it.
    Logs(logs::LogsArgs),
    /// Print the event log (creations, state changes, deletions); -f follows it.
    Events(events::EventsArgs),
    /// List a sandbox's published ports (`kiln create -p`): `HOST_IP:HOST_PORT -> GUEST_PORT/tcp`.
    Port(ports::PortArgs),
    /// Forward host ports to guest ports over the agent (no network needed), in the
    /// foreground until Ctrl-C: `kiln port-forward ID 8080:80`.
    PortForward(ports::PortForwardArgs),
    /// Pause a sandbox's vCPUs.
    Pause(snapshots::IdArg),
    /// Resume a paused sandbox.
    Resume(snapshots::IdArg),
    /// Snapshot a sandbox (`kiln snapshot ID --name N`), or manage snapshots (ls, rm, verify, import).
    Snapshot(snapshots::SnapshotArgs),
    /// Start a sandbox from a snapshot; prints its id.
    Restore(snapshots::RestoreArgs),
    /// Fork a running sandbox into N children that continue from the same instant; prints their ids.
    Fork(snapshots::ForkArgs),
    /// Fill the warm pool of a snapshot, so `kiln create --from SNAP` is a hand-off.
    Pool(snapshots::PoolArgs),
    /// Serve the REST API on a unix socket (and optionally loopback TCP); see docs/API.md.
    Serve(serve::ServeArgs),
    /// Boot a kernel with an initramfs and/or root disk, console attached (for debugging).
    Boot(boot::BootArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
}

fn main() {
    let cli = Cli::parse();
    if let Some(url) = remote::url(cli.remote) {
        exit(remote::run(&url, cli.token, cli.cmd));
    }
    // Timeouts are enforced by whoever runs: `kiln serve` every second, every command once.
    if let Err(e) = kiln::reap_expired() {
        eprintln!("kiln: warning: enforcing sandbox timeouts: {e}");
    }
    let result = match cli.cmd {
        Cmd::Run(a) => commands::run(a),
        Cmd::Create(a) => commands::create(a),
        Cmd::Exec(a) => commands::exec(a),
        Cmd::Shell(a) => commands::shell(a),
        Cmd::Cp(a) => manage::cp(a),
        Cmd::Ls => manage::ls(),
        Cmd::Images => kiln::sandbox::images()
            .map(|rows| {
                listing::print_images(&rows);
                0
            })
            .map_err(Into::into),
        Cmd::Inspect(a) => manage::inspect(a),
        Cmd::Reap(a) => manage::reap(a),
        Cmd::Stop(a) => manage::stop(a),
        Cmd::Rm(a) => manage::rm(a),
        Cmd::Logs(a) => logs::logs(a),
        Cmd::Events(a) => events::events(a),
        Cmd::Port(a) => ports::port(a),
        Cmd::PortForward(a) => ports::port_forward(a),
        Cmd::Pause(a) => snapshots::pause(a),
        Cmd::Resume(a) => snapshots::resume(a),
        Cmd::Snapshot(a) => snapshots::snapshot(a),
        Cmd::Restore(a) => snapshots::restore(a),
        Cmd::Fork(a) => snapshots::fork(a),
        Cmd::Pool(a) => snapshots::pool(a),
        Cmd::Serve(a) => serve::serve(a),
        Cmd::Boot(a) => boot::run(a),
        Cmd::Bench(b) => bench::run(b),
    };
    exit(result);
}

fn exit(result: anyhow::Result<i32>) -> ! {
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("kiln: error: {e:#}");
            // 125 like `docker run`: kiln failed, not the command.
            std::process::exit(125);
        }
    }
}
