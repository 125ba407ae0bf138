//! The behaviour every store must show, written once and run against memory, SQLite and
//! Redis. A slice of stores stands for replicas sharing one backing store (memory and SQLite
//! get one).

use std::sync::Arc;
use std::time::Duration;

use tollgate_store::{
    Ask, Begin, Decision, Limit, Limits, Refusal, Reservation, Store, StoredAnswer,
};

use super::{at, TO_MIDNIGHT_MS};

pub type Stores = [Arc<dyn Store>];

fn rpm(n: u64) -> Limits {
    Limits {
        rpm: Some(n),
        ..Limits::default()
    }
}

fn daily(n: u64) -> Limits {
    Limits {
        tokens_per_day: Some(n),
        ..Limits::default()
    }
}

/// Admits one ask; panics on a store error.
pub async fn ask(
    store: &dyn Store,
    scope: &str,
    limits: Limits,
    tokens: u64,
    now_ms: u64,
) -> Decision {
    store
        .admit(
            &[Ask {
                scope,
                limits,
                tokens,
            }],
            at(now_ms),
        )
        .await
        .expect("the store answers")
}

pub fn admitted(d: Decision) -> Reservation {
    match d {
        Decision::Admitted { reservation, .. } => reservation,
        Decision::Refused(r) => panic!("refused: {r:?}"),
    }
}

pub fn refused(d: Decision) -> Refusal {
    match d {
        Decision::Refused(r) => r,
        Decision::Admitted { states, .. } => panic!("admitted: {states:?}"),
    }
}

/// `n` concurrent asks of `tokens` on `scope`, spread over `stores`, all at `now_ms`.
async fn burst(
    stores: &Stores,
    scope: &'static str,
    limits: Limits,
    tokens: u64,
    n: usize,
    now_ms: u64,
) -> (Vec<(Reservation, u64)>, Vec<Refusal>) {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let store = Arc::clone(&stores[i % stores.len()]);
            tokio::spawn(async move {
                store
                    .admit(
                        &[Ask {
                            scope,
                            limits,
                            tokens,
                        }],
                        at(now_ms),
                    )
                    .await
                    .expect("the store answers")
            })
        })
        .collect();
    let mut yes = Vec::new();
    let mut no = Vec::new();
    for t in tasks {
        match t.await.expect("task") {
            Decision::Admitted {
                reservation,
                states,
            } => {
                let left = states[0]
                    .requests
                    .or(states[0].tokens_today)
                    .map_or(0, |q| q.remaining);
                yes.push((reservation, left));
            }
            Decision::Refused(r) => no.push(r),
        }
    }
    (yes, no)
}

async fn flush_all(stores: &Stores) {
    for s in stores {
        s.flush().await.expect("flush");
    }
}

/// A 60-rpm scope admits exactly 60 of 100 concurrent asks; each admitted request saw its own
/// count (remaining 59, 58, … 0, each once); the refused are told to come back within 60 s.
pub async fn rpm_is_exact(stores: &Stores, limit: u64, asks: usize) {
    let (yes, no) = burst(stores, "key:burst", rpm(limit), 0, asks, 0).await;
    assert_eq!(yes.len() as u64, limit, "admitted exactly rpm");
    assert_eq!(no.len(), asks - limit as usize);
    let mut left: Vec<u64> = yes.iter().map(|(_, left)| *left).collect();
    left.sort_unstable();
    assert_eq!(
        left,
        (0..limit).collect::<Vec<_>>(),
        "each admission counted once"
    );
    for r in &no {
        assert_eq!(r.limit, Limit::Rpm);
        assert!(r.retry_after > Duration::ZERO && r.retry_after <= Duration::from_secs(60));
        assert!(!r.oversized);
        assert_eq!(r.states[0].requests.map(|q| q.remaining), Some(0));
    }
}

/// `tokens_per_day: 1000`, 50 concurrent asks of 100: exactly 10 hold the whole budget;
/// settling less gives room back; the refusal points at 00:00 UTC.
pub async fn daily_budget_is_exact(stores: &Stores) {
    let scope = "key:daily";
    let (yes, no) = burst(stores, scope, daily(1000), 100, 50, 0).await;
    assert_eq!(yes.len(), 10, "1000 / 100");
    assert_eq!(no.len(), 40);
    flush_all(stores).await;
    let usage = stores[0].usage(scope, at(1)).await.expect("usage");
    assert_eq!((usage.reserved, usage.tokens_today), (1000, 0));
    assert_eq!(usage.remaining_today(1000), 0);
    for r in &no {
        assert_eq!(r.limit, Limit::TokensPerDay);
        assert_eq!(r.retry_after, Duration::from_millis(TO_MIDNIGHT_MS));
        assert_eq!(r.retry_after_secs(), TO_MIDNIGHT_MS.div_ceil(1000));
    }

    // Each used 40 of its 100: 600 come back.
    for (reservation, _) in yes {
        reservation.settle(40, at(1_000));
    }
    flush_all(stores).await;
    let usage = stores[0].usage(scope, at(1_001)).await.expect("usage");
    assert_eq!((usage.reserved, usage.tokens_today), (0, 400));
    assert_eq!(usage.remaining_today(1000), 600);

    let (yes, no) = burst(stores, scope, daily(1000), 100, 15, 2_000).await;
    assert_eq!(yes.len(), 6, "400 used + 6 × 100 reserved = 1000");
    assert_eq!(no.len(), 9);
    assert_eq!(
        no[0].retry_after,
        Duration::from_millis(TO_MIDNIGHT_MS - 2_000)
    );
    // A settlement above the estimate is charged in full: the budget may be exceeded by what
    // a request really used, never by what was admitted.
    for (reservation, _) in yes {
        reservation.settle(150, at(3_000));
    }
    flush_all(stores).await;
    let usage = stores[0].usage(scope, at(3_001)).await.expect("usage");
    assert_eq!(usage.tokens_today, 400 + 6 * 150);
    // The next day starts at zero.
    let next_day = TO_MIDNIGHT_MS;
    drop(admitted(
        ask(&*stores[0], scope, daily(1000), 1000, next_day).await,
    ));
}

/// Windows open at the first request, wherever the minute falls, and last 60 s.
pub async fn windows_reset(stores: &Stores) {
    let store = &*stores[0];
    let scope = "key:window";
    // Opens the window 17.3 s after BASE.
    let first = 17_300;
    drop(admitted(ask(store, scope, rpm(2), 0, first).await));
    drop(admitted(ask(store, scope, rpm(2), 0, first + 10_000).await));
    let r = refused(ask(store, scope, rpm(2), 0, first + 20_000).await);
    assert_eq!(r.retry_after, Duration::from_secs(40));
    let r = refused(ask(store, scope, rpm(2), 0, first + 59_999).await);
    assert_eq!(r.retry_after, Duration::from_millis(1));
    assert_eq!(r.retry_after_secs(), 1);
    // The next window opens at this request, not at a wall-clock minute.
    drop(admitted(
        ask(store, scope, rpm(2), 0, first + 60_000 + 5_000).await,
    ));
    drop(admitted(
        ask(store, scope, rpm(2), 0, first + 60_000 + 64_000).await,
    ));
    let r = refused(ask(store, scope, rpm(2), 0, first + 60_000 + 64_999).await);
    assert_eq!(r.retry_after, Duration::from_millis(1));

    // tpm: settled tokens fill the window; the next window is empty again.
    let scope = "backend:tpm";
    let tpm = Limits {
        tpm: Some(100),
        ..Limits::default()
    };
    admitted(ask(store, scope, tpm, 60, 0).await).settle(100, at(500));
    flush_all(stores).await;
    let r = refused(ask(store, scope, tpm, 1, 1_000).await);
    assert_eq!(
        (r.limit, r.retry_after),
        (Limit::Tpm, Duration::from_secs(59))
    );
    drop(admitted(ask(store, scope, tpm, 100, 60_000).await));
    // An ask larger than the limit is refused as oversized: waiting cannot help.
    let r = refused(ask(store, "backend:tiny", tpm, 101, 0).await);
    assert!(r.oversized, "{r:?}");
}

/// Key and backend are decided together: a refusal by one changes neither.
pub async fn atomic_across_scopes(stores: &Stores) {
    let store = &*stores[0];
    let key = Limits {
        rpm: Some(10),
        tokens_per_day: Some(10_000),
        ..Limits::default()
    };
    let backend = Limits {
        rpm: Some(1),
        ..Limits::default()
    };
    let both = |tokens| {
        [
            Ask {
                scope: "key:atomic",
                limits: key,
                tokens,
            },
            Ask {
                scope: "backend:atomic",
                limits: backend,
                tokens,
            },
        ]
    };
    let first = store.admit(&both(100), at(0)).await.expect("admit");
    let Decision::Admitted {
        reservation,
        states,
    } = first
    else {
        panic!("first admitted");
    };
    assert_eq!(states.len(), 2);
    assert_eq!(states[0].requests.map(|q| q.remaining), Some(9));
    assert_eq!(states[0].tokens_today.map(|q| q.remaining), Some(9_900));
    assert_eq!(states[1].requests.map(|q| q.remaining), Some(0));

    let second = refused(store.admit(&both(100), at(1)).await.expect("admit"));
    assert_eq!((second.ask, second.scope.as_str()), (1, "backend:atomic"));
    assert_eq!(second.limit, Limit::Rpm);
    // Nothing of the refused request was counted or reserved in the key.
    let usage = store.usage("key:atomic", at(2)).await.expect("usage");
    assert_eq!((usage.window_requests, usage.reserved), (1, 100));
    assert_eq!(second.states[0].requests.map(|q| q.remaining), Some(9));

    // The key still admits through another backend.
    let other = [
        Ask {
            scope: "key:atomic",
            limits: key,
            tokens: 100,
        },
        Ask {
            scope: "backend:other",
            limits: backend,
            tokens: 100,
        },
    ];
    let Decision::Admitted {
        states,
        reservation: r2,
    } = store.admit(&other, at(3)).await.expect("admit")
    else {
        panic!("admitted through the other backend");
    };
    assert_eq!(states[0].requests.map(|q| q.remaining), Some(8));
    drop((reservation, r2));

    // The same scope twice is a caller error, not a double count.
    let twice = [both(1)[0], both(1)[0]];
    assert!(store.admit(&twice, at(4)).await.is_err());
}

/// A reservation dropped without settling gives its tokens back and charges nothing.
pub async fn dropping_releases(stores: &Stores) {
    let store = &*stores[0];
    let scope = "key:dropped";
    let r = admitted(ask(store, scope, daily(1000), 700, 0).await);
    refused(ask(store, scope, daily(1000), 400, 1).await);
    drop(r);
    flush_all(stores).await;
    let usage = store.usage(scope, at(2)).await.expect("usage");
    assert_eq!((usage.reserved, usage.tokens_today), (0, 0));
    drop(admitted(ask(store, scope, daily(1000), 1000, 3).await));
}

fn answer(body: &'static str) -> StoredAnswer {
    StoredAnswer {
        status: 200,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-request-id".into(), "req-1".into()),
        ],
        body: body.into(),
    }
}

/// Claim, in-flight, mismatch, replay, TTL expiry, abandon — on one store or across replicas.
pub async fn idempotency(stores: &Stores) {
    let a = &*stores[0];
    let b = &*stores[stores.len() - 1];
    let ttl = Duration::from_secs(3600);
    let scope = "key:idem";

    let Begin::Claimed(claim) = a
        .begin(scope, "k1", b"body-1", ttl, at(0))
        .await
        .expect("begin")
    else {
        panic!("first request claims the key");
    };
    assert!(matches!(
        b.begin(scope, "k1", b"body-1", ttl, at(10))
            .await
            .expect("begin"),
        Begin::InFlight
    ));
    assert!(matches!(
        b.begin(scope, "k1", b"body-2", ttl, at(10))
            .await
            .expect("begin"),
        Begin::Mismatch
    ));
    // Keys are per scope: another client's "k1" is its own.
    assert!(matches!(
        b.begin("key:other", "k1", b"body-9", ttl, at(10))
            .await
            .expect("begin"),
        Begin::Claimed(_)
    ));

    claim
        .complete(answer(r#"{"id":"chatcmpl-1"}"#), at(100))
        .await
        .expect("complete");
    match b
        .begin(scope, "k1", b"body-1", ttl, at(200))
        .await
        .expect("begin")
    {
        Begin::Replay(stored) => assert_eq!(stored, answer(r#"{"id":"chatcmpl-1"}"#)),
        other => panic!("expected the stored answer, got {other:?}"),
    }
    assert!(matches!(
        a.begin(scope, "k1", b"body-2", ttl, at(200))
            .await
            .expect("begin"),
        Begin::Mismatch
    ));
    // The answer is kept for the TTL from its completion, then the key is free again.
    let expiry = 100 + 3_600_000;
    assert!(matches!(
        a.begin(scope, "k1", b"body-1", ttl, at(expiry - 1))
            .await
            .expect("begin"),
        Begin::Replay(_)
    ));
    let Begin::Claimed(again) = a
        .begin(scope, "k1", b"body-2", ttl, at(expiry))
        .await
        .expect("begin")
    else {
        panic!("an expired answer frees the key");
    };

    // Abandoning (or dropping) a claim lets the next request run.
    again.abandon();
    flush_all(stores).await;
    let Begin::Claimed(dropped) = b
        .begin(scope, "k1", b"body-3", ttl, at(expiry + 1))
        .await
        .expect("begin")
    else {
        panic!("an abandoned key is free");
    };
    drop(dropped);
    flush_all(stores).await;
    assert!(matches!(
        a.begin(scope, "k1", b"body-4", ttl, at(expiry + 2))
            .await
            .expect("begin"),
        Begin::Claimed(_)
    ));
}
