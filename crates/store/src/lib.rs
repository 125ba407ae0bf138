//! tollgate-store: where limits, budgets and idempotency keys live (SPEC §8), behind one
//! [`Store`] trait with three implementations — [`MemoryStore`] (one process), [`SqliteStore`]
//! (one machine, survives restarts) and [`RedisStore`] (replicas share it exactly).
//!
//! A request's life with a store:
//!
//! 1. [`Store::admit`] with one [`Ask`] per scope it must fit (its key at admission; a backend
//!    before each dispatch attempt). The decision is atomic across the asks: admitted and
//!    reserved everywhere, or refused with nothing changed.
//! 2. [`Reservation::settle`] with the real usage when the request ends, from a `Drop` if need
//!    be: settling is synchronous and never waits. A reservation dropped unsettled is released.
//! 3. Non-stream requests with an idempotency key call [`Store::begin`] first and
//!    [`Claim::complete`] with the answer.
//!
//! docs/limits.md gives the rules (windows, the estimate, what survives a crash) and the Redis
//! scripts' contract.

mod decision;
mod error;
mod estimate;
mod idempotency;
mod ledger;
mod memory;
mod redis;
mod reservation;
mod sqlite;
mod window;

use std::time::{Duration, SystemTime};

use async_trait::async_trait;

pub use decision::{Ask, Decision, Limit, Limits, Quota, Refusal, ScopeState, States, Usage};
pub use error::StoreError;
pub use estimate::estimate_tokens;
pub use idempotency::{Begin, Claim, StoredAnswer};
pub use ledger::Fnv;
pub use memory::MemoryStore;
pub use redis::{RedisOptions, RedisStore};
pub use reservation::Reservation;
pub use sqlite::SqliteStore;

/// Where counters and idempotency answers live. Object-safe: the server holds an
/// `Arc<dyn Store>` chosen by `state.store`.
///
/// Every method takes `now` from the caller (the server passes `SystemTime::now()`, tests a
/// fixed clock), so every store judges windows and days by one clock per request.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Decides one request against every ask at once. `Ok(Refused)` is a limit speaking;
    /// `Err` means the store could not decide (`state.on_error` applies when
    /// [`StoreError::is_unavailable`]). Memory and SQLite answer without waiting; Redis costs
    /// one round trip.
    async fn admit(&self, asks: &[Ask<'_>], now: SystemTime) -> Result<Decision, StoreError>;

    /// [`Store::admit`] at once, from a store that decides in memory (memory, SQLite): the same
    /// decision without the boxed future an `async` trait method costs, on every request.
    /// `None` from a store that must wait for its answer (Redis): ask [`Store::admit`].
    fn admit_now(
        &self,
        _asks: &[Ask<'_>],
        _now: SystemTime,
    ) -> Option<Result<Decision, StoreError>> {
        None
    }

    /// One scope's counters as they stand at `now` (zero for a scope never seen), for the
    /// remaining-tokens gauge and the dashboard: [`Usage::remaining_today`].
    async fn usage(&self, scope: &str, now: SystemTime) -> Result<Usage, StoreError>;

    /// Looks an idempotency key up within `scope` (the client key's scope, so two clients'
    /// keys never meet), claiming it when free. `fingerprint` identifies the request body (a
    /// digest the server computes); `ttl` is how long the answer is kept once complete (and
    /// the longest a claim may stay in flight).
    async fn begin(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &[u8],
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Begin, StoreError>;

    /// Waits until every settlement and answer handed over before the call has reached the
    /// backing store (SQLite: written to the file; Redis: applied by the server). For a clean
    /// shutdown, and for tests. Memory: nothing to wait for.
    async fn flush(&self) -> Result<(), StoreError>;

    /// Whether the backing store is reachable and taking writes: memory always; SQLite while
    /// its writes succeed; Redis while its last exchange succeeded (checked every second when
    /// idle and unhealthy). For `/health/ready` and a gauge; calls fail fast meanwhile.
    fn healthy(&self) -> bool;
}
