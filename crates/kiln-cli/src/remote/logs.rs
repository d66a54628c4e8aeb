//! `kiln --remote URL logs [-f] | events`: the console or VMM log, and the event log,
//! from the server.

use std::io::Write;

use anyhow::{Context, Result};
use kiln::store::Event;
use kiln_server::client::Client;

use super::explain;
use crate::events::{print_events, EventSource, EventsArgs};
use crate::logs::LogsArgs;

pub fn logs(c: &Client, a: LogsArgs) -> Result<i32> {
    let mut out = std::io::stdout().lock();
    if !a.follow {
        out.write_all(&c.logs(&a.id, a.vmm).map_err(explain)?)?;
        out.flush()?;
        return Ok(0);
    }
    let mut write_error = None;
    c.follow_logs(&a.id, a.vmm, |chunk| {
        match out.write_all(chunk).and_then(|()| out.flush()) {
            Ok(()) => true,
            Err(e) => {
                write_error = Some(e);
                false
            }
        }
    })
    .map_err(explain)?;
    match write_error {
        Some(e) => Err(e).context("writing the log"),
        None => Ok(0),
    }
}

struct Server<'a>(&'a Client);

impl EventSource for Server<'_> {
    fn since(&self, seq: i64, limit: u32) -> Result<Vec<Event>> {
        self.0.events(seq, limit).map_err(explain)
    }
    fn of_sandbox(&self, id: &str, limit: u32) -> Result<Vec<Event>> {
        self.0.sandbox_events(id, limit).map_err(explain)
    }
}

pub fn events(c: &Client, a: EventsArgs) -> Result<i32> {
    print_events(&a, &Server(c))
}
