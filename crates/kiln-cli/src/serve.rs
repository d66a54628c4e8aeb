//! `kiln serve`: the REST API (see docs/API.md and the kiln-server crate).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The unix socket to listen on (default: <state dir>/kiln.sock, mode 0600).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Also listen on this TCP address, e.g. 127.0.0.1:8080 (loopback only unless
    /// --allow-non-loopback).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// The bearer token file (default: <state dir>/token; created on first start).
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Allow --listen on an address other than loopback (plain HTTP: put TLS in front).
    #[arg(long)]
    allow_non_loopback: bool,
}

pub fn serve(a: ServeArgs) -> Result<i32> {
    let listen = a
        .listen
        .as_deref()
        .map(|s| {
            s.parse::<SocketAddr>()
                .with_context(|| format!("--listen {s}: use IP:PORT, e.g. 127.0.0.1:8080"))
        })
        .transpose()?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    kiln_server::serve(kiln_server::ServeOptions {
        socket: a.socket,
        listen,
        token_file: a.token_file,
        allow_non_loopback: a.allow_non_loopback,
        limits: None,
    })?;
    Ok(0)
}
