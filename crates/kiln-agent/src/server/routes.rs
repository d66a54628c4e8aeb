//! Which request ids are live on a connection, and the handle an operation uses
//! to answer ([`Op`]).
//!
//! An id is *live* from its `Request` until the operation's final reply. An
//! operation that takes data (`write_file`, an exec with stdin or a PTY) and ends
//! before the host's EOF frame leaves a *drain* entry behind, which swallows the
//! rest of that data silently (the host may still be sending it when the final
//! reply crosses it) until the EOF frame arrives or a new request reuses the id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kiln_proto::{ErrorReply, Kind, Reply};

use super::inbox::Inbox;
use super::sys::lock;
use super::writer::Writer;

/// Live operations per connection at most (a runaway host gets errors, not threads).
pub const MAX_LIVE: usize = 1024;

enum Route {
    Live {
        token: u64,
        inbox: Option<Arc<Inbox>>,
    },
    Drain,
}

/// What the connection thread finds for a frame's id.
pub enum Lookup {
    Live(Option<Arc<Inbox>>),
    Drain,
    Unknown,
}

#[derive(Default)]
pub struct Routes {
    map: Mutex<HashMap<u32, Route>>,
    next_token: AtomicU64,
}

impl Routes {
    pub fn lookup(&self, id: u32) -> Lookup {
        match lock(&self.map).get(&id) {
            Some(Route::Live { inbox, .. }) => Lookup::Live(inbox.clone()),
            Some(Route::Drain) => Lookup::Drain,
            None => Lookup::Unknown,
        }
    }

    /// Whether no id is live or draining.
    pub fn is_empty(&self) -> bool {
        lock(&self.map).is_empty()
    }

    /// Makes `id` live; a drain entry is replaced. Errors say why not.
    pub fn insert(&self, id: u32, inbox: Option<Arc<Inbox>>) -> Result<u64, String> {
        let mut map = lock(&self.map);
        match map.get(&id) {
            Some(Route::Live { .. }) => return Err(format!("request id {id} is already in use")),
            Some(Route::Drain) => {}
            None if map.len() >= MAX_LIVE => {
                return Err(format!(
                    "too many operations on one connection (max {MAX_LIVE})"
                ))
            }
            None => {}
        }
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        map.insert(id, Route::Live { token, inbox });
        Ok(token)
    }

    /// The operation `(id, token)` ended: free the id, or leave a drain entry if
    /// its data stream is still open.
    fn finish(&self, id: u32, token: u64) {
        let mut map = lock(&self.map);
        let drain = match map.get(&id) {
            Some(Route::Live { token: t, inbox }) if *t == token => inbox
                .as_ref()
                .is_some_and(|i| i.accepts_data() && !i.eof_seen()),
            _ => return,
        };
        if drain {
            map.insert(id, Route::Drain);
        } else {
            map.remove(&id);
        }
    }

    /// The data stream of a drained id has ended.
    pub fn end_drain(&self, id: u32) {
        let mut map = lock(&self.map);
        if let Some(Route::Drain) = map.get(&id) {
            map.remove(&id);
        }
    }

    /// The connection is gone: cancel every live operation and forget all ids.
    pub fn cancel_all(&self) {
        let map = std::mem::take(&mut *lock(&self.map));
        for route in map.into_values() {
            if let Route::Live {
                inbox: Some(inbox), ..
            } = route
            {
                inbox.cancel();
            }
        }
    }
}

/// One live operation: where it writes and how it ends.
pub struct Op {
    pub id: u32,
    token: u64,
    pub writer: Arc<Writer>,
    routes: Arc<Routes>,
    pub inbox: Option<Arc<Inbox>>,
    finished: bool,
}

impl Op {
    pub fn new(
        id: u32,
        token: u64,
        writer: Arc<Writer>,
        routes: Arc<Routes>,
        inbox: Option<Arc<Inbox>>,
    ) -> Op {
        Op {
            id,
            token,
            writer,
            routes,
            inbox,
            finished: false,
        }
    }

    /// A data frame of this operation (false once the host is gone).
    pub fn send(&self, kind: Kind, flags: u8, payload: &[u8]) -> bool {
        self.writer.frame(kind, flags, self.id, payload)
    }

    /// A reply that is not the last one (`Started`, `FileStart`).
    pub fn reply(&self, r: &Reply) -> bool {
        self.writer.reply(self.id, r)
    }

    /// The final reply. The id is freed first, so the host may reuse it as soon
    /// as it reads this reply.
    pub fn finish(mut self, r: Reply) {
        self.end();
        self.writer.reply(self.id, &r);
    }

    pub fn fail(self, e: ErrorReply) {
        self.finish(Reply::Error(e));
    }

    /// Ends without a reply (the connection is gone).
    pub fn abandon(mut self) {
        self.end();
    }

    fn end(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        if let Some(inbox) = &self.inbox {
            inbox.discard();
        }
        self.routes.finish(self.id, self.token);
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        self.end();
    }
}
