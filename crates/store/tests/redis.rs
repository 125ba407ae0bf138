//! RedisStore against a real `redis-server` started by each test: replicas share limits
//! exactly, a killed replica's reservations end with their lease, an outage fails fast and
//! heals by itself.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::contract::{self, admitted, ask, refused};
use common::{at, RedisServer};
use tollgate_store::{Limit, Limits, RedisOptions, RedisStore, Store, StoreError};

/// `n` stores on `server`, under one prefix of their own (as replicas would be).
fn replicas(server: &RedisServer, prefix: &str, n: usize, lease: Duration) -> Vec<Arc<dyn Store>> {
    (0..n)
        .map(|_| {
            let mut options = RedisOptions::new(server.url());
            options.prefix = prefix.into();
            options.lease = lease;
            Arc::new(RedisStore::new(options).expect("store")) as Arc<dyn Store>
        })
        .collect()
}

const LEASE: Duration = Duration::from_secs(660);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_rpm_admits_exactly_hundred_of_three_hundred_across_three_replicas() {
    let Some(server) = RedisServer::start("redis rpm") else {
        return;
    };
    let stores = replicas(&server, "t-rpm", 3, LEASE);
    contract::rpm_is_exact(&stores, 100, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn daily_budget_is_exact_across_three_replicas() {
    let Some(server) = RedisServer::start("redis daily") else {
        return;
    };
    let stores = replicas(&server, "t-daily", 3, LEASE);
    contract::daily_budget_is_exact(&stores).await;
}

#[tokio::test]
async fn windows_atomicity_and_release() {
    let Some(server) = RedisServer::start("redis windows") else {
        return;
    };
    let stores = replicas(&server, "t-windows", 2, LEASE);
    contract::windows_reset(&stores).await;
    contract::atomic_across_scopes(&stores).await;
    contract::dropping_releases(&stores).await;
}

#[tokio::test]
async fn idempotency_across_replicas() {
    let Some(server) = RedisServer::start("redis idempotency") else {
        return;
    };
    let stores = replicas(&server, "t-idem", 2, LEASE);
    contract::idempotency(&stores).await;
}

#[tokio::test]
async fn a_killed_replicas_reservations_end_with_their_lease() {
    let Some(server) = RedisServer::start("redis lease") else {
        return;
    };
    let lease = Duration::from_secs(30);
    let budget = Limits {
        tokens_per_day: Some(1000),
        ..Limits::default()
    };
    let killed = replicas(&server, "t-lease", 1, lease).remove(0);
    let survivor = replicas(&server, "t-lease", 1, lease).remove(0);
    for i in 0..3 {
        // kill -9 mid-burst: no settlement, no release ever leaves the replica.
        std::mem::forget(admitted(ask(&*killed, "key:ci", budget, 300, i).await));
    }
    drop(killed);
    let r = refused(ask(&*survivor, "key:ci", budget, 200, 29_000).await);
    assert_eq!(r.limit, Limit::TokensPerDay);
    // At 30 s the first lease has ended.
    let held = admitted(ask(&*survivor, "key:ci", budget, 400, 30_002).await);
    let usage = survivor.usage("key:ci", at(30_003)).await.expect("usage");
    assert_eq!((usage.reserved, usage.tokens_today), (400, 0));
    held.settle(350, at(30_004));
    survivor.flush().await.expect("flush");
    let usage = survivor.usage("key:ci", at(30_005)).await.expect("usage");
    assert_eq!((usage.reserved, usage.tokens_today), (0, 350));
    // Nothing of the dead replica is left in Redis but the sequence and the counters.
    let left = server.command(&["ZCARD", "{t-lease}:z:key:ci"]);
    assert_eq!(left.trim(), ":0", "expired reservations purged");
}

#[tokio::test]
async fn an_outage_fails_fast_and_heals_without_a_new_store() {
    let Some(mut server) = RedisServer::start("redis outage") else {
        return;
    };
    let store = replicas(&server, "t-outage", 1, LEASE).remove(0);
    let limits = Limits {
        rpm: Some(1000),
        ..Limits::default()
    };
    drop(admitted(ask(&*store, "key:ci", limits, 10, 0).await));
    assert!(store.healthy());

    server.stop();
    for i in 0..20 {
        let start = Instant::now();
        let err = store
            .admit(
                &[tollgate_store::Ask {
                    scope: "key:ci",
                    limits,
                    tokens: 10,
                }],
                at(i),
            )
            .await
            .expect_err("redis is down");
        assert!(err.is_unavailable(), "{err}");
        assert!(
            start.elapsed() < Duration::from_millis(300),
            "fails fast: {:?}",
            start.elapsed()
        );
    }
    assert!(!store.healthy());
    assert!(matches!(
        store.usage("key:ci", at(30)).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(
        store.flush().await.is_err(),
        "nothing can land while Redis is down"
    );

    // Back, empty (nothing saved) and without the scripts: the same store recovers by itself.
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store
            .admit(
                &[tollgate_store::Ask {
                    scope: "key:ci",
                    limits,
                    tokens: 10,
                }],
                at(100),
            )
            .await
        {
            Ok(d) => {
                drop(admitted(d));
                break;
            }
            Err(e) => {
                assert!(e.is_unavailable(), "{e}");
                assert!(Instant::now() < deadline, "recovered within 10 s");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert!(store.healthy());
    store.flush().await.expect("flush after recovery");
}

#[tokio::test]
async fn settlements_queued_while_redis_stalls_land_afterwards() {
    let Some(server) = RedisServer::start("redis stall") else {
        return;
    };
    let mut options = RedisOptions::new(server.url());
    options.prefix = "t-stall".into();
    options.timeout = Duration::from_millis(200);
    let store = RedisStore::new(options).expect("store");
    let budget = Limits {
        tokens_per_day: Some(1000),
        ..Limits::default()
    };
    let held = admitted(ask(&store, "key:ci", budget, 500, 0).await);
    // Redis stops answering but keeps its data: the settlement waits in the queue.
    assert!(server
        .command(&["CLIENT", "PAUSE", "1500", "ALL"])
        .starts_with("+OK"));
    let paused = Instant::now();
    held.settle(300, at(1_000));
    assert!(store.flush().await.is_err(), "not applied during the stall");
    assert!(!store.healthy());
    tokio::time::sleep(Duration::from_millis(1600).saturating_sub(paused.elapsed())).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.flush().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "applied once Redis answers again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let usage = store.usage("key:ci", at(2_000)).await.expect("usage");
    assert_eq!((usage.reserved, usage.tokens_today), (0, 300));
    assert!(store.healthy());
}

#[tokio::test]
async fn health_comes_back_while_idle() {
    let Some(mut server) = RedisServer::start("redis idle health") else {
        return;
    };
    let store = replicas(&server, "t-idle", 1, LEASE).remove(0);
    server.stop();
    assert!(store.usage("key:ci", at(0)).await.is_err());
    assert!(!store.healthy());
    server.restart();
    // No call is made: the background task's probe notices.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !store.healthy() {
        assert!(Instant::now() < deadline, "healthy again within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_bad_prefix_is_refused() {
    let mut options = RedisOptions::new("redis://127.0.0.1:1/");
    options.prefix = "a{b}".into();
    assert!(matches!(
        RedisStore::new(options),
        Err(StoreError::Config(_))
    ));
}

/// The Redis half of the micro-benchmark in docs/limits.md:
/// `cargo test --release -p tollgate-store --test redis -- --ignored --nocapture round_trip`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check; run by hand with --release"]
async fn admit_round_trip_cost() {
    let Some(server) = RedisServer::start("redis round trip") else {
        return;
    };
    let store = replicas(&server, "t-bench", 1, LEASE).remove(0);
    let limits = Limits {
        rpm: Some(u64::MAX >> 12),
        tpm: Some(u64::MAX >> 12),
        tokens_per_day: Some(u64::MAX >> 12),
    };
    let rounds = 5_000u32;
    let start = Instant::now();
    for i in 0..rounds {
        let now = at(u64::from(i));
        let asks = [
            tollgate_store::Ask {
                scope: "key:bench",
                limits,
                tokens: 1_000,
            },
            tollgate_store::Ask {
                scope: "backend:bench",
                limits,
                tokens: 1_000,
            },
        ];
        admitted(store.admit(&asks, now).await.expect("admit")).settle(900, now);
    }
    store.flush().await.expect("flush");
    let per = start.elapsed() / rounds;
    println!(
        "redis admit (key + backend), sequential, loopback: {} µs",
        per.as_micros()
    );
    let usage = store
        .usage("key:bench", at(u64::from(rounds)))
        .await
        .expect("usage");
    assert_eq!(usage.tokens_today, 900 * u64::from(rounds));
}
