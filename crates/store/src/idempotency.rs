//! Idempotency keys (`Idempotency-Key`, `anthropic-idempotency-key`): a non-stream request is
//! answered once within a TTL. [`Begin`] is what a request learns on arrival, [`Claim`] is the
//! right to answer it, and [`Answers`] is the in-memory table behind the memory and SQLite
//! stores.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::error::StoreError;
use crate::ledger::Ledger;
use crate::redis::RedisClaim;
use crate::window::millis;

/// A stored answer, replayed to a repeat of the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAnswer {
    /// The HTTP status sent the first time.
    pub status: u16,
    /// The response headers worth replaying (the server chooses; never `set-cookie`-like
    /// per-client state), in order.
    pub headers: Vec<(String, String)>,
    /// The whole response body (idempotency is for non-stream requests only).
    pub body: Bytes,
}

/// What a request carrying an idempotency key learns on arrival.
#[derive(Debug)]
pub enum Begin {
    /// First of its key (or the previous answer expired, or its first attempt was abandoned):
    /// the request runs, then [`Claim::complete`] stores its answer. Dropping the claim
    /// abandons it, so a failed request can be retried under the same key.
    Claimed(Claim),
    /// Answered before with the same body: send this again.
    Replay(StoredAnswer),
    /// The same key and body are being answered right now: the server answers 409, since
    /// running the request twice is what the key exists to prevent.
    InFlight,
    /// The key was used with a different body: the server answers 422; the key names one
    /// request, and replaying another request's answer would be wrong.
    Mismatch,
}

/// The right to answer one idempotency key. Complete it with the answer, or drop it (or call
/// [`Claim::abandon`]) to let the next request with that key run.
#[derive(Debug)]
pub struct Claim {
    held: ClaimHeld,
}

#[derive(Debug)]
pub(crate) enum ClaimHeld {
    /// Completed or abandoned: nothing left to do on drop.
    Spent,
    Ledger {
        ledger: Arc<Ledger>,
        scope: Box<str>,
        key: Box<str>,
        id: u64,
        ttl: Duration,
    },
    Redis(RedisClaim),
}

impl Claim {
    pub(crate) fn new(held: ClaimHeld) -> Self {
        Claim { held }
    }

    /// Stores `answer`, kept for the TTL given to `begin`, from `now`. When the claim was lost
    /// meanwhile (its in-flight hold expired and another request took the key), the answer is
    /// not stored and `Ok` is returned: the other request answers for the key.
    pub async fn complete(
        mut self,
        answer: StoredAnswer,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        match std::mem::replace(&mut self.held, ClaimHeld::Spent) {
            ClaimHeld::Spent => Ok(()),
            ClaimHeld::Ledger {
                ledger,
                scope,
                key,
                id,
                ttl,
            } => {
                ledger.complete(&scope, &key, id, answer, ttl, millis(now));
                Ok(())
            }
            ClaimHeld::Redis(claim) => claim.complete(answer, now).await,
        }
    }

    /// Gives the key up without an answer: the next request with it runs. The same as
    /// dropping the claim, said out loud.
    pub fn abandon(self) {}
}

impl Drop for Claim {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.held, ClaimHeld::Spent) {
            ClaimHeld::Spent => {}
            ClaimHeld::Ledger {
                ledger,
                scope,
                key,
                id,
                ..
            } => ledger.answers.abandon(&scope, &key, id),
            ClaimHeld::Redis(claim) => claim.abandon(),
        }
    }
}

/// What the table holds for one key.
#[derive(Debug)]
struct Entry {
    /// The request body's fingerprint: a repeat with another one is a mismatch.
    fingerprint: Box<[u8]>,
    /// When the entry stops counting (ms since the epoch).
    expires: u64,
    state: EntryState,
}

#[derive(Debug)]
enum EntryState {
    /// Being answered by the claim with this id.
    InFlight(u64),
    Done(Arc<StoredAnswer>),
}

/// Shards keep unrelated keys off one lock: requests with idempotency keys do not line up
/// behind each other.
const SHARDS: usize = 16;
/// Expired entries are swept from a shard at most this often (ms); lookups ignore them anyway.
const SWEEP_MS: u64 = 60_000;

#[derive(Debug, Default)]
struct Shard {
    entries: HashMap<(Box<str>, Box<str>), Entry>,
    next_sweep: u64,
}

/// A completed answer on its way to the SQLite file.
#[derive(Debug)]
pub(crate) struct Persisted {
    pub scope: Box<str>,
    pub key: Box<str>,
    pub fingerprint: Box<[u8]>,
    pub expires: u64,
    pub answer: Arc<StoredAnswer>,
}

/// The in-memory idempotency table (memory and SQLite stores).
#[derive(Debug)]
pub(crate) struct Answers {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    next_claim: AtomicU64,
}

impl Answers {
    pub(crate) fn new() -> Self {
        Answers {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            next_claim: AtomicU64::new(1),
        }
    }

    fn shard(&self, scope: &str, key: &str) -> std::sync::MutexGuard<'_, Shard> {
        let index = (self.hasher.hash_one((scope, key)) as usize) % SHARDS;
        // A panic while holding a shard leaves whole entries behind (every change is one
        // insert or remove), so a poisoned lock is still consistent.
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Looks `(scope, key)` up at `now`; claims it when it is free. The returned claim id is
    /// what `complete` and `abandon` must present.
    pub(crate) fn begin(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &[u8],
        ttl: Duration,
        now: u64,
    ) -> Result<u64, Begin> {
        let mut shard = self.shard(scope, key);
        if now >= shard.next_sweep {
            shard.entries.retain(|_, e| e.expires > now);
            shard.next_sweep = now + SWEEP_MS;
        }
        let lookup = (Box::<str>::from(scope), Box::<str>::from(key));
        if let Some(entry) = shard.entries.get(&lookup).filter(|e| e.expires > now) {
            if *entry.fingerprint != *fingerprint {
                return Err(Begin::Mismatch);
            }
            return Err(match &entry.state {
                EntryState::InFlight(_) => Begin::InFlight,
                EntryState::Done(answer) => Begin::Replay(StoredAnswer::clone(answer)),
            });
        }
        let id = self.next_claim.fetch_add(1, Ordering::Relaxed);
        shard.entries.insert(
            lookup,
            Entry {
                fingerprint: fingerprint.into(),
                expires: now.saturating_add(duration_ms(ttl)),
                state: EntryState::InFlight(id),
            },
        );
        Ok(id)
    }

    /// Stores the answer of claim `id`; returns the entry to persist, or `None` when the claim
    /// no longer holds the key.
    pub(crate) fn complete(
        &self,
        scope: &str,
        key: &str,
        id: u64,
        answer: StoredAnswer,
        ttl: Duration,
        now: u64,
    ) -> Option<Persisted> {
        let mut shard = self.shard(scope, key);
        let lookup = (Box::<str>::from(scope), Box::<str>::from(key));
        let entry = shard.entries.get_mut(&lookup)?;
        if !matches!(entry.state, EntryState::InFlight(held) if held == id) {
            return None;
        }
        let answer = Arc::new(answer);
        entry.expires = now.saturating_add(duration_ms(ttl));
        entry.state = EntryState::Done(Arc::clone(&answer));
        Some(Persisted {
            scope: lookup.0,
            key: lookup.1,
            fingerprint: entry.fingerprint.clone(),
            expires: entry.expires,
            answer,
        })
    }

    /// Frees the key held by claim `id`, if it still holds it.
    pub(crate) fn abandon(&self, scope: &str, key: &str, id: u64) {
        let mut shard = self.shard(scope, key);
        let lookup = (Box::<str>::from(scope), Box::<str>::from(key));
        if matches!(
            shard.entries.get(&lookup).map(|e| &e.state),
            Some(EntryState::InFlight(held)) if *held == id
        ) {
            shard.entries.remove(&lookup);
        }
    }

    /// Puts back an answer read from the SQLite file.
    pub(crate) fn restore(&self, p: Persisted) {
        let mut shard = self.shard(&p.scope, &p.key);
        shard.entries.insert(
            (p.scope, p.key),
            Entry {
                fingerprint: p.fingerprint,
                expires: p.expires,
                state: EntryState::Done(p.answer),
            },
        );
    }
}

/// A duration in whole milliseconds, saturating (a TTL of `Duration::MAX` means "forever").
pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
