//! Port forwarding into sandboxes: `kiln port-forward` (in the foreground) and published
//! ports (`kiln create -p`, served by a detached publisher per sandbox). See
//! docs/NETWORK.md, "Published ports".
//!
//! | module | owns |
//! | --- | --- |
//! | `spec` | [`PortSpec`]: `[HOST_IP:]HOST_PORT:GUEST_PORT[/tcp]` |
//! | `splice` | copying both ways with half-close |
//! | `dial` | [`Dial`]: reaching the guest port over the agent's vsock or from the sandbox's network namespace |
//! | `forward` | [`Forwarder`]: bind every listener, then dial and splice per connection |
//! | `publisher` | the `kiln-publish` process: [`publish`], [`unpublish`], its record |
//! | `error` | [`PortError`] |
//!
//! ```no_run
//! use kiln::ports::{Dial, Forwarder, PortSpec};
//! let sb = kiln::Sandbox::get("sb1")?;
//! let spec: PortSpec = "127.0.0.1:0:8080".parse()?;
//! let fwd = Forwarder::bind(&[spec], Dial::Agent(sb.agent().clone()))?;
//! println!("forwarding {} -> guest port 8080", fwd.bound()[0].host_addr());
//! fwd.serve(std::sync::Arc::new(|msg| eprintln!("{msg}")));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod dial;
mod error;
mod forward;
mod publisher;
mod spec;
mod splice;

pub use dial::{Dial, Dialed};
pub use error::PortError;
pub use forward::{Forwarder, OnError, MAX_CONNECTIONS};
pub use publisher::{
    publish, record, run_publisher, running, unpublish, Published, PublisherArgs, LOG, RECORD,
};
pub use spec::PortSpec;
pub use splice::{splice, Duplex, Spliced};
