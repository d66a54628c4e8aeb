//! `kiln events [ID] [--since SEQ] [-f]`: the event log (creations, state changes,
//! deletions), from the local store or, with `--remote`, from the server.

use std::time::Duration;

use anyhow::Result;
use kiln::store::Event;

use crate::listing::event_line;

#[derive(clap::Args)]
pub struct EventsArgs {
    /// Only this sandbox's events (its last --limit; they outlive the sandbox).
    pub id: Option<String>,
    /// Events after this sequence number (0: from the start).
    #[arg(long, default_value_t = 0, value_name = "SEQ")]
    pub since: i64,
    /// At most this many events (1 to 1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Keep printing new events as they happen (Ctrl-C to stop).
    #[arg(short = 'f', long)]
    pub follow: bool,
}

/// Where events come from: the local store or a server.
pub trait EventSource {
    /// Up to `limit` events after `seq`, oldest first.
    fn since(&self, seq: i64, limit: u32) -> Result<Vec<Event>>;
    /// The last `limit` events of sandbox `id`, oldest first.
    fn of_sandbox(&self, id: &str, limit: u32) -> Result<Vec<Event>>;
}

struct Local;

impl EventSource for Local {
    fn since(&self, seq: i64, limit: u32) -> Result<Vec<Event>> {
        Ok(kiln::sandbox::events_since(seq, limit)?)
    }
    fn of_sandbox(&self, id: &str, limit: u32) -> Result<Vec<Event>> {
        Ok(kiln::sandbox::events_for(id, limit)?)
    }
}

pub fn events(a: EventsArgs) -> Result<i32> {
    // What `kiln serve` would have logged by now (it checks every second): the first
    // host I/O errors of running sandboxes' disks, as `disk_error` events. A store that
    // cannot be written to here fails the listing below with its own error.
    let _ = kiln::note_disk_errors();
    print_events(&a, &Local)
}

/// Prints the events `a` asks for, one line each (see [`event_line`]).
pub fn print_events(a: &EventsArgs, src: &dyn EventSource) -> Result<i32> {
    let first = match &a.id {
        Some(id) => src.of_sandbox(id, a.limit)?,
        None => src.since(a.since, a.limit)?,
    };
    let mut last = a.since;
    for e in &first {
        println!("{}", event_line(e));
        last = last.max(e.seq);
    }
    if !a.follow {
        return Ok(0);
    }
    loop {
        let new = src.since(last, 1000)?;
        if new.is_empty() {
            std::thread::sleep(Duration::from_millis(500));
        }
        for e in new {
            last = last.max(e.seq);
            if a.id.is_none() || e.sandbox == a.id {
                println!("{}", event_line(&e));
            }
        }
    }
}
