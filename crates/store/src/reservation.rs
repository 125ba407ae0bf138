//! The tokens a request holds from admission to its end. Settling is synchronous and never
//! waits (the server settles from `Drop`, where nothing can be awaited); dropping a reservation
//! unsettled releases it.

use std::time::SystemTime;

use crate::ledger::Ticket;
use crate::redis::RedisTicket;
use crate::window::millis;

/// Held tokens of one admitted request, in every scope it was admitted to.
#[derive(Debug)]
#[must_use = "dropping a reservation releases it at once; settle it when the request ends"]
pub struct Reservation {
    held: Held,
}

#[derive(Debug)]
pub(crate) enum Held {
    /// Settled already, or an admission with no asks.
    Nothing,
    /// Memory and SQLite: applied in memory at once.
    Ledger(Ticket),
    /// Redis: queued for the store's background task.
    Redis(RedisTicket),
}

impl Reservation {
    pub(crate) fn new(held: Held) -> Self {
        Reservation { held }
    }

    /// Replaces the reservation by the request's real usage, `used_tokens` (prompt +
    /// completion, more or less than reserved), charged to the window open at `now` and to
    /// `now`'s UTC day. Does not block: memory and SQLite apply it at once, Redis queues it.
    pub fn settle(mut self, used_tokens: u64, now: SystemTime) {
        self.finish(Some((used_tokens, millis(now))));
    }

    fn finish(&mut self, settled: Option<(u64, u64)>) {
        match std::mem::replace(&mut self.held, Held::Nothing) {
            Held::Nothing => {}
            Held::Ledger(ticket) => ticket.finish(settled),
            Held::Redis(ticket) => ticket.finish(settled),
        }
    }
}

impl Drop for Reservation {
    /// A request that ends without settling (a panic, a path that forgot) gives its tokens
    /// back and charges nothing: the usage is unknown, and holding the estimate forever would
    /// shrink the budget for good.
    fn drop(&mut self) {
        self.finish(None);
    }
}
