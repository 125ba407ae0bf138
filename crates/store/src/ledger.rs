//! The in-memory engine behind [`crate::MemoryStore`] and [`crate::SqliteStore`]: one lock per
//! scope, taken in name order so a key+backend decision is atomic without a global lock.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use crate::decision::{check_distinct, refusal, Ask, Decision, Limit, States, Usage};
use crate::error::StoreError;
use crate::idempotency::{Answers, Begin, Claim, ClaimHeld, Persisted, StoredAnswer};
use crate::reservation::{Held, Reservation};
use crate::window::Counters;

/// One scope's counters behind their own lock.
#[derive(Debug)]
pub(crate) struct Cell {
    name: Box<str>,
    state: Mutex<CellState>,
}

#[derive(Debug, Default)]
struct CellState {
    counters: Counters,
    /// Changed since the SQLite writer last copied it.
    dirty: bool,
}

impl Cell {
    /// Every change to `CellState` is a handful of integer writes that cannot panic halfway,
    /// so a poisoned lock (a panic elsewhere while it was held) still guards whole counters.
    fn lock(&self) -> MutexGuard<'_, CellState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Releases `tokens` held here and, when settled (`(used, now)`), charges the real usage.
    fn finish(&self, tokens: u64, settled: Option<(u64, u64)>) {
        let mut state = self.lock();
        state.counters.release(tokens);
        if let Some((used, now)) = settled {
            state.counters.charge(used, now);
        }
        state.dirty = true;
    }
}

/// The tokens a ledger reservation holds, per scope.
#[derive(Debug)]
pub(crate) enum Ticket {
    /// One scope's: the usual decision (a key's at admission, a backend's before an attempt),
    /// held without a `Vec`.
    One(Arc<Cell>, u64),
    /// Several scopes', in the asks' order.
    Many(Vec<(Arc<Cell>, u64)>),
}

impl Ticket {
    /// Releases every held amount and, when settled, charges the real usage. Each scope is
    /// locked on its own: a settlement only lowers what others see, so it needs no atomicity
    /// across scopes.
    pub(crate) fn finish(self, settled: Option<(u64, u64)>) {
        match self {
            Ticket::One(cell, tokens) => cell.finish(tokens, settled),
            Ticket::Many(cells) => {
                for (cell, tokens) in cells {
                    cell.finish(tokens, settled);
                }
            }
        }
    }
}

/// FNV-1a, for maps keyed by names from the configuration (keys, backends, scopes) or capped
/// label sets, not by what clients choose: SipHash's defence against chosen keys buys nothing
/// there, and it cost more than the rest of a decision's lookup. The gateway's metrics and
/// limits use it too.
#[derive(Default)]
pub struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// Scopes and idempotency answers of one process.
#[derive(Debug)]
pub(crate) struct Ledger {
    /// Read-locked on every admission (shared, uncontended); write-locked only when a scope is
    /// seen for the first time. Scopes come from the configuration (keys and backends), so the
    /// map stays small and is never swept.
    scopes: RwLock<HashMap<Box<str>, Arc<Cell>, BuildHasherDefault<Fnv>>>,
    pub(crate) answers: Answers,
    /// Completed answers not yet written to SQLite; `None` for the memory store.
    journal: Option<Mutex<Vec<Persisted>>>,
    /// The latest `now` seen (ms), so the SQLite writer purges expired answers by the callers'
    /// clock rather than its own.
    latest: AtomicU64,
}

impl Ledger {
    /// A ledger; `journal` keeps completed answers for a writer to persist.
    pub(crate) fn new(journal: bool) -> Self {
        Ledger {
            scopes: RwLock::default(),
            answers: Answers::new(),
            journal: journal.then(Mutex::default),
            latest: AtomicU64::new(0),
        }
    }

    fn cell(&self, scope: &str) -> Arc<Cell> {
        if let Some(cell) = self
            .scopes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(scope)
        {
            return Arc::clone(cell);
        }
        let mut scopes = self.scopes.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(scopes.entry(scope.into()).or_insert_with(|| {
            Arc::new(Cell {
                name: scope.into(),
                state: Mutex::default(),
            })
        }))
    }

    fn seen(&self, now: u64) {
        self.latest.fetch_max(now, Ordering::Relaxed);
    }

    pub(crate) fn latest(&self) -> u64 {
        self.latest.load(Ordering::Relaxed)
    }

    /// Checks every ask and reserves in all of them, or in none.
    pub(crate) fn admit(&self, asks: &[Ask<'_>], now: u64) -> Result<Decision, StoreError> {
        match asks {
            [ask] => Ok(self.admit_one(ask, now)),
            _ => self.admit_all(asks, now),
        }
    }

    /// [`Ledger::admit`] of a single ask, the usual decision: one lock and no lock order, so
    /// none of the `Vec`s of the general case (cells, order, guards, rolled counters). The
    /// same rules, step by step; the tests hold it to [`Ledger::admit_all`].
    fn admit_one(&self, ask: &Ask<'_>, now: u64) -> Decision {
        self.seen(now);
        let cell = self.cell(ask.scope);
        let mut guard = cell.lock();
        let mut counters = guard.counters.rolled(now);
        let broken = counters.broken(&ask.limits, ask.tokens, now);
        if !broken.is_empty() {
            let broken: Vec<(usize, Limit, u64)> = broken
                .into_iter()
                .map(|(limit, wait)| (0, limit, wait))
                .collect();
            let states = vec![counters.state(&ask.limits, now)];
            if let Some(refused) = refusal(std::slice::from_ref(ask), &broken, states) {
                return Decision::Refused(refused);
            }
        }
        counters.admit(ask.tokens, now);
        guard.counters = counters;
        guard.dirty = true;
        drop(guard);
        Decision::Admitted {
            reservation: Reservation::new(Held::Ledger(Ticket::One(cell, ask.tokens))),
            states: States::One(counters.state(&ask.limits, now)),
        }
    }

    /// [`Ledger::admit`] of any number of asks.
    pub(crate) fn admit_all(&self, asks: &[Ask<'_>], now: u64) -> Result<Decision, StoreError> {
        check_distinct(asks)?;
        self.seen(now);
        let cells: Vec<Arc<Cell>> = asks.iter().map(|a| self.cell(a.scope)).collect();
        // Locks are taken in scope-name order, the same for every decision, so two decisions
        // over overlapping scopes cannot each hold one lock and wait for the other.
        let mut order: Vec<usize> = (0..cells.len()).collect();
        order.sort_unstable_by(|&a, &b| cells[a].name.cmp(&cells[b].name));
        let mut guards: Vec<Option<MutexGuard<'_, CellState>>> =
            (0..cells.len()).map(|_| None).collect();
        for &i in &order {
            guards[i] = Some(cells[i].lock());
        }
        let mut guards: Vec<MutexGuard<'_, CellState>> = guards.into_iter().flatten().collect();

        let mut rolled: Vec<Counters> = guards.iter().map(|g| g.counters.rolled(now)).collect();
        let mut broken: Vec<(usize, Limit, u64)> = Vec::new();
        for (i, (ask, counters)) in asks.iter().zip(&rolled).enumerate() {
            for (limit, wait) in counters.broken(&ask.limits, ask.tokens, now) {
                broken.push((i, limit, wait));
            }
        }
        if !broken.is_empty() {
            let states = asks
                .iter()
                .zip(&rolled)
                .map(|(a, c)| c.state(&a.limits, now))
                .collect();
            if let Some(refused) = refusal(asks, &broken, states) {
                return Ok(Decision::Refused(refused));
            }
        }
        for ((ask, counters), guard) in asks.iter().zip(&mut rolled).zip(&mut guards) {
            counters.admit(ask.tokens, now);
            guard.counters = *counters;
            guard.dirty = true;
        }
        drop(guards);
        let states = asks
            .iter()
            .zip(&rolled)
            .map(|(a, c)| c.state(&a.limits, now))
            .collect();
        let cells = cells
            .into_iter()
            .zip(asks)
            .map(|(cell, ask)| (cell, ask.tokens))
            .collect();
        Ok(Decision::Admitted {
            reservation: Reservation::new(Held::Ledger(Ticket::Many(cells))),
            states,
        })
    }

    pub(crate) fn usage(&self, scope: &str, now: u64) -> Usage {
        let found = self
            .scopes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(scope)
            .cloned();
        found.map_or_else(Usage::default, |cell| {
            cell.lock().counters.rolled(now).usage()
        })
    }

    pub(crate) fn begin(
        self: &Arc<Self>,
        scope: &str,
        key: &str,
        fingerprint: &[u8],
        ttl: Duration,
        now: u64,
    ) -> Begin {
        self.seen(now);
        match self.answers.begin(scope, key, fingerprint, ttl, now) {
            Ok(id) => Begin::Claimed(Claim::new(ClaimHeld::Ledger {
                ledger: Arc::clone(self),
                scope: scope.into(),
                key: key.into(),
                id,
                ttl,
            })),
            Err(seen) => seen,
        }
    }

    pub(crate) fn complete(
        &self,
        scope: &str,
        key: &str,
        id: u64,
        answer: StoredAnswer,
        ttl: Duration,
        now: u64,
    ) {
        self.seen(now);
        let stored = self.answers.complete(scope, key, id, answer, ttl, now);
        if let (Some(journal), Some(stored)) = (&self.journal, stored) {
            journal
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(stored);
        }
    }

    /// Puts a scope's counters back as they were saved (SQLite, on open).
    pub(crate) fn restore_scope(&self, scope: &str, counters: Counters) {
        self.cell(scope).lock().counters = counters;
    }

    /// Copies the counters changed since the last call, marking them clean. Reservations are
    /// not part of what is saved: they belong to requests of this process only.
    pub(crate) fn take_dirty(&self) -> Vec<(Box<str>, Counters)> {
        let cells: Vec<Arc<Cell>> = self
            .scopes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let mut changed = Vec::new();
        for cell in cells {
            let mut state = cell.lock();
            if state.dirty {
                state.dirty = false;
                changed.push((cell.name.clone(), state.counters));
            }
        }
        changed
    }

    /// The completed answers not yet persisted.
    pub(crate) fn take_journal(&self) -> Vec<Persisted> {
        self.journal.as_ref().map_or_else(Vec::new, |journal| {
            std::mem::take(&mut *journal.lock().unwrap_or_else(PoisonError::into_inner))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::decision::{Limits, Refusal, ScopeState};
    use crate::window::{DAY_MS, WINDOW_MS};

    /// xorshift: inputs for the comparison without a dependency.
    fn numbers(seed: u64) -> impl Iterator<Item = u64> {
        let mut x = seed;
        std::iter::from_fn(move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Some(x)
        })
    }

    /// What a decision says, to compare two ledgers' (a reservation is compared by what
    /// settling it does).
    fn said(decision: &Decision) -> (Option<&Refusal>, Vec<ScopeState>) {
        match decision {
            Decision::Admitted { states, .. } => (None, states.to_vec()),
            Decision::Refused(r) => (Some(r), r.states.clone()),
        }
    }

    #[test]
    fn one_ask_decides_as_the_general_path_does() {
        let fast = Ledger::new(false);
        let general = Ledger::new(false);
        let mut gen = numbers(0x9e37_79b9_7f4a_7c15);
        let mut next = move |n: u64| gen.next().unwrap_or(0) % n;
        let mut now = 20_000 * DAY_MS - 3 * WINDOW_MS;
        let mut held: Vec<(Reservation, Reservation, u64)> = Vec::new();
        let mut refused = [0; 3];
        for _ in 0..20_000 {
            now += next(4_000);
            // Each limit unset one time in four.
            let mut limit = |of: u64| (next(4) != 0).then(|| next(of));
            let limits = Limits {
                rpm: limit(30),
                tpm: limit(3_000),
                tokens_per_day: limit(4_000_000),
            };
            let scope = ["key:a", "key:b", "backend:c"][next(3) as usize];
            let ask = Ask {
                scope,
                limits,
                tokens: next(600),
            };
            let a = fast.admit(&[ask], now).expect("decided");
            let b = general.admit_all(&[ask], now).expect("decided");
            assert_eq!(said(&a), said(&b), "at {now}: {ask:?}");
            if let Decision::Refused(r) = &a {
                refused[r.limit as usize] += 1;
            }
            if let (
                Decision::Admitted { reservation: a, .. },
                Decision::Admitted { reservation: b, .. },
            ) = (a, b)
            {
                held.push((a, b, next(800)));
            }
            // Settle, release or keep some of the requests in flight.
            while held.len() > next(6) as usize {
                let (a, b, used) = held.swap_remove(next(held.len() as u64) as usize);
                match used % 3 {
                    0 => drop((a, b)),
                    _ => {
                        a.settle(used, UNIX_EPOCH + Duration::from_millis(now));
                        b.settle(used, UNIX_EPOCH + Duration::from_millis(now));
                    }
                }
            }
            for scope in ["key:a", "key:b", "backend:c"] {
                assert_eq!(fast.usage(scope, now), general.usage(scope, now), "{scope}");
            }
        }
        // Every limit refused some, and fewer than three in five were refused.
        assert!(refused.iter().all(|&n| n > 100), "{refused:?}");
        assert!(refused.iter().sum::<i32>() < 12_000, "{refused:?}");
    }
}
