//! MemoryStore: the shared behaviour, plus the admit+settle micro-benchmark.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::contract;
use tollgate_store::{Ask, Decision, Limits, MemoryStore, Store};

fn store() -> Vec<Arc<dyn Store>> {
    vec![Arc::new(MemoryStore::new())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_rpm_admits_exactly_sixty_of_a_hundred_concurrent() {
    contract::rpm_is_exact(&store(), 60, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn daily_budget_never_overshoots_and_settling_gives_room_back() {
    contract::daily_budget_is_exact(&store()).await;
}

#[tokio::test]
async fn windows_open_at_the_first_request_and_reset() {
    contract::windows_reset(&store()).await;
}

#[tokio::test]
async fn key_and_backend_are_decided_atomically() {
    contract::atomic_across_scopes(&store()).await;
}

#[tokio::test]
async fn a_dropped_reservation_is_released() {
    contract::dropping_releases(&store()).await;
}

#[tokio::test]
async fn idempotency_keys() {
    contract::idempotency(&store()).await;
}

#[tokio::test]
async fn always_healthy_and_flush_is_immediate() {
    let store = MemoryStore::new();
    assert!(store.healthy());
    store.flush().await.expect("nothing to wait for");
}

/// The micro-benchmark recorded in docs/limits.md:
/// `cargo test --release -p tollgate-store --test memory -- --ignored --nocapture admit_settle`.
#[tokio::test]
#[ignore = "a measurement, not a check; run by hand with --release"]
async fn admit_settle_cost() {
    let store = MemoryStore::new();
    let limits = Limits {
        rpm: Some(u64::MAX),
        tpm: Some(u64::MAX),
        tokens_per_day: Some(u64::MAX),
    };
    let asks = [
        Ask {
            scope: "key:bench",
            limits,
            tokens: 1_000,
        },
        Ask {
            scope: "backend:bench",
            limits,
            tokens: 1_000,
        },
    ];
    for (label, n_asks) in [("key only", 1), ("key + backend", 2)] {
        let rounds = 1_000_000u32;
        let start = Instant::now();
        for i in 0..rounds {
            let now = common::at(u64::from(i) / 1000);
            match store.admit(&asks[..n_asks], now).await {
                Ok(Decision::Admitted { reservation, .. }) => reservation.settle(900, now),
                other => panic!("{other:?}"),
            }
        }
        let per = start.elapsed() / rounds;
        println!("memory admit+settle, {label}: {} ns", per.as_nanos());
        assert!(per < Duration::from_millis(1));
    }
}
