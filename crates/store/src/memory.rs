//! `state.store: memory` — counters of one process, lost on exit. Decisions take one lock per
//! asked scope, never a lock shared by every request.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::decision::{Ask, Decision, Usage};
use crate::error::StoreError;
use crate::idempotency::Begin;
use crate::ledger::Ledger;
use crate::window::millis;
use crate::Store;

/// Limits, budgets and idempotency answers in this process's memory.
#[derive(Debug)]
pub struct MemoryStore {
    ledger: Arc<Ledger>,
}

impl MemoryStore {
    /// An empty store. Scopes are created on first use.
    pub fn new() -> Self {
        MemoryStore {
            ledger: Arc::new(Ledger::new(false)),
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn admit(&self, asks: &[Ask<'_>], now: SystemTime) -> Result<Decision, StoreError> {
        self.ledger.admit(asks, millis(now))
    }

    fn admit_now(&self, asks: &[Ask<'_>], now: SystemTime) -> Option<Result<Decision, StoreError>> {
        Some(self.ledger.admit(asks, millis(now)))
    }

    async fn usage(&self, scope: &str, now: SystemTime) -> Result<Usage, StoreError> {
        Ok(self.ledger.usage(scope, millis(now)))
    }

    async fn begin(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &[u8],
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Begin, StoreError> {
        Ok(self.ledger.begin(scope, key, fingerprint, ttl, millis(now)))
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn healthy(&self) -> bool {
        true
    }
}
