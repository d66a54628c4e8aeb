//! `kiln --remote URL ...`: the same commands against a `kiln serve` instead of the
//! local library, through the blocking client of kiln-server. Output is the local
//! commands' (same ids, tables and exit codes), so scripts work either way; commands
//! that only make sense on the server's host fail with one line saying so.
//!
//! The URL is `unix:///path/kiln.sock` or `http://127.0.0.1:PORT` (also `$KILN_REMOTE`);
//! the token comes from `--token`, else `$KILN_TOKEN`, else the `token` file beside a
//! unix socket.

mod exec;
mod files;
mod logs;
mod sandboxes;
mod snapshots;

use anyhow::{bail, Result};
use kiln_server::client::{Client, ClientError};

use crate::bench::BenchCmd;
use crate::Cmd;

/// The server URL from `--remote`, else `$KILN_REMOTE` (unset or empty: run locally).
pub fn url(flag: Option<String>) -> Option<String> {
    flag.or_else(|| std::env::var("KILN_REMOTE").ok())
        .filter(|u| !u.is_empty())
}

/// Runs `cmd` against the server at `url`.
pub fn run(url: &str, token: Option<String>, cmd: Cmd) -> Result<i32> {
    let c = Client::new(url, token).map_err(explain)?;
    match cmd {
        Cmd::Run(a) => exec::run(&c, a),
        Cmd::Create(a) => sandboxes::create(&c, a),
        Cmd::Exec(a) => exec::exec(&c, a),
        Cmd::Cp(a) => files::cp(&c, a),
        Cmd::Ls => sandboxes::ls(&c),
        Cmd::Images => {
            crate::listing::print_images(&c.images().map_err(explain)?);
            Ok(0)
        }
        Cmd::Inspect(a) => sandboxes::inspect(&c, a),
        Cmd::Stop(a) => sandboxes::stop(&c, a),
        Cmd::Rm(a) => sandboxes::rm(&c, a),
        Cmd::Pause(a) => sandboxes::pause(&c, a),
        Cmd::Resume(a) => sandboxes::resume(&c, a),
        Cmd::Logs(a) => logs::logs(&c, a),
        Cmd::Events(a) => logs::events(&c, a),
        Cmd::Snapshot(a) => snapshots::snapshot(&c, a),
        Cmd::Restore(a) => snapshots::restore(&c, a),
        Cmd::Fork(a) => snapshots::fork(&c, a),
        Cmd::Bench(BenchCmd::Api(a)) => crate::bench::api::run(a, Some(c)),
        Cmd::Bench(_) => local_only(
            "bench",
            "only `kiln bench api` measures a server; the other benchmarks drive the library and VMMs on this host",
        ),
        Cmd::Shell(_) => local_only(
            "shell",
            "the API has no terminal (PTY) sessions; use `kiln --remote URL exec ID -- CMD`",
        ),
        Cmd::Reap(_) => local_only(
            "reap",
            "the server enforces idle timeouts and lifetimes itself, every second",
        ),
        Cmd::Pool(a) => {
            let s = c.pool(&a.snapshot, a.n).map_err(explain)?;
            eprintln!("kiln: pool of {} holds {}", s.meta.name, s.pool);
            Ok(0)
        }
        Cmd::Serve(_) => local_only("serve", "it starts a server on this host"),
        Cmd::Port(a) => sandboxes::port(&c, a),
        Cmd::PortForward(_) => local_only(
            "port-forward",
            "it listens on this host; run it on the server's host",
        ),
        Cmd::Boot(_) => local_only("boot", "it attaches a VMM's console on this host"),
    }
}

fn local_only(cmd: &str, why: &str) -> Result<i32> {
    bail!("`kiln {cmd}` does not work with --remote: {why}")
}

/// A client error with what to do about it, for the one-line `kiln: error: ...`.
pub fn explain(e: ClientError) -> anyhow::Error {
    match &e {
        ClientError::Api { status: 401, .. } => anyhow::anyhow!(
            "the server refused our credentials: {e}; pass --token TOKEN or set $KILN_TOKEN to the contents of the server's token file (<state dir>/token)"
        ),
        ClientError::Connect { .. } => {
            anyhow::anyhow!("{e} (is `kiln serve` running there?)")
        }
        _ => e.into(),
    }
}

/// `KEY=VALUE` of a repeatable `--flag`, with the local commands' error.
pub fn key_value<'a>(flag: &str, kv: &'a str) -> Result<(&'a str, &'a str)> {
    match kv.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k, v)),
        _ => bail!("{flag} {kv}: use KEY=VALUE"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_and_urls() {
        assert_eq!(key_value("-e", "A=b=c").unwrap(), ("A", "b=c"));
        assert!(key_value("-e", "A").is_err());
        assert!(key_value("--label", "=x").is_err());
        assert_eq!(url(Some("unix:///s".into())).as_deref(), Some("unix:///s"));
    }

    #[test]
    fn auth_errors_say_where_the_token_is() {
        let e = kiln_server::client::api_error(
            401,
            br#"{"error":{"code":"unauthorized","message":"wrong bearer token"}}"#,
        );
        let msg = format!("{:#}", explain(e));
        assert!(
            msg.contains("wrong bearer token") && msg.contains("--token"),
            "{msg}"
        );
    }
}
