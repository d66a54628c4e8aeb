//! `kiln port ID` (the published ports) and `kiln port-forward ID SPEC...` (in the
//! foreground, over the agent's vsock: works for a sandbox with no network).

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use kiln::ports::{Dial, Forwarder, PortSpec};
use kiln::Sandbox;

#[derive(clap::Args)]
pub struct PortArgs {
    /// The sandbox.
    pub id: String,
}

#[derive(clap::Args)]
pub struct PortForwardArgs {
    /// The sandbox.
    pub id: String,
    /// `[HOST_IP:]HOST_PORT:GUEST_PORT[/tcp]` (repeatable; host 127.0.0.1 unless named;
    /// HOST_PORT 0: any free port, printed).
    #[arg(required = true, value_name = "SPEC")]
    pub specs: Vec<String>,
}

/// Parses `-p`/port-forward specs.
pub fn parse_specs(specs: &[String]) -> Result<Vec<PortSpec>> {
    specs
        .iter()
        .map(|s| s.parse::<PortSpec>().map_err(Into::into))
        .collect()
}

/// One line a port: `127.0.0.1:8080 -> 80/tcp`.
pub fn port_line(spec: &PortSpec) -> String {
    format!("{} -> {}/tcp", spec.host_addr(), spec.guest_port)
}

pub fn port(a: PortArgs) -> Result<i32> {
    for spec in Sandbox::get(&a.id)?.ports()? {
        println!("{}", port_line(&spec));
    }
    Ok(0)
}

pub fn port_forward(a: PortForwardArgs) -> Result<i32> {
    let specs = parse_specs(&a.specs)?;
    let sb = Sandbox::get(&a.id)?;
    let state = sb.state();
    if state != kiln::State::Running {
        bail!(
            "sandbox {} is {state}: port-forward needs a running sandbox",
            a.id
        );
    }
    let vmm = kiln::process::pidfd_of(sb.record().pid, sb.record().vmm_start)
        .with_context(|| format!("watching the VMM of sandbox {}", a.id))?;
    let fwd = Forwarder::bind(&specs, Dial::Agent(sb.agent().clone()))?;
    for s in fwd.bound() {
        println!(
            "forwarding {} -> guest port {}",
            s.host_addr(),
            s.guest_port
        );
    }
    let id = a.id.clone();
    std::thread::Builder::new()
        .name("vmm-watch".into())
        .spawn(move || {
            kiln::process::wait_pidfd(&vmm);
            eprintln!("kiln: sandbox {id} stopped; port-forward ends");
            std::process::exit(1);
        })?;
    // Runs until Ctrl-C or SIGTERM ends the process (its listeners close with it).
    fwd.serve(Arc::new(|msg| eprintln!("kiln: port-forward: {msg}")));
    Ok(0)
}
