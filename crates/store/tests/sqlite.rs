//! SqliteStore: the shared behaviour, and what survives a clean restart and a `kill -9`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::contract::{self, admitted, ask, refused};
use common::{at, remove_db, scratch};
use tollgate_store::{Begin, Limit, Limits, SqliteStore, Store, StoredAnswer};

const BUDGET: Limits = Limits {
    rpm: None,
    tpm: None,
    tokens_per_day: Some(1000),
};
const SCOPE: &str = "key:ci";
const TTL: Duration = Duration::from_secs(24 * 3600);
/// The env variable that turns `crash_child` into the child of `survives_kill_9`.
const CHILD_DB: &str = "TOLLGATE_STORE_CRASH_CHILD_DB";

fn answer() -> StoredAnswer {
    StoredAnswer {
        status: 201,
        headers: vec![("content-type".into(), "application/json".into())],
        body: r#"{"id":"msg_1","type":"message"}"#.into(),
    }
}

/// Uses 600 of the 1000-token budget and stores one idempotency answer.
async fn use_600(store: &SqliteStore) {
    admitted(ask(store, SCOPE, BUDGET, 650, 0).await).settle(600, at(1_000));
    let Begin::Claimed(claim) = store
        .begin(SCOPE, "idem-1", b"fingerprint", TTL, at(1_000))
        .await
        .expect("begin")
    else {
        panic!("fresh key");
    };
    claim.complete(answer(), at(2_000)).await.expect("complete");
}

/// After a restart: the 600 used still count, the answer still replays.
async fn check_survived(store: &SqliteStore) {
    let usage = store.usage(SCOPE, at(60_000)).await.expect("usage");
    assert_eq!((usage.tokens_today, usage.reserved), (600, 0));
    let r = refused(ask(store, SCOPE, BUDGET, 500, 60_000).await);
    assert_eq!(r.limit, Limit::TokensPerDay);
    drop(admitted(ask(store, SCOPE, BUDGET, 400, 60_000).await));
    match store
        .begin(SCOPE, "idem-1", b"fingerprint", TTL, at(60_000))
        .await
        .expect("begin")
    {
        Begin::Replay(stored) => assert_eq!(stored, answer()),
        other => panic!("the answer survives: {other:?}"),
    }
    assert!(matches!(
        store
            .begin(SCOPE, "idem-1", b"other body", TTL, at(60_000))
            .await
            .expect("begin"),
        Begin::Mismatch
    ));
}

fn open(path: &Path) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(path).expect("open"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_behaviour() {
    let path = scratch("contract");
    let stores = [open(&path)];
    contract::rpm_is_exact(&stores, 60, 100).await;
    contract::daily_budget_is_exact(&stores).await;
    contract::windows_reset(&stores).await;
    contract::atomic_across_scopes(&stores).await;
    contract::dropping_releases(&stores).await;
    contract::idempotency(&stores).await;
    assert!(stores[0].healthy());
    drop(stores);
    remove_db(&path);
}

#[tokio::test]
async fn budget_and_answers_survive_a_clean_restart() {
    let path = scratch("restart");
    {
        let store = SqliteStore::open(&path).expect("open");
        use_600(&store).await;
        // Dropped here: the clean shutdown writes what the last interval had not.
    }
    let store = SqliteStore::open(&path).expect("reopen");
    check_survived(&store).await;
    // The next UTC day starts afresh, restart or not.
    drop(admitted(
        ask(&store, SCOPE, BUDGET, 1000, common::TO_MIDNIGHT_MS).await,
    ));
    drop(store);
    remove_db(&path);
}

#[tokio::test]
async fn reservations_do_not_survive_a_restart() {
    let path = scratch("reserved");
    {
        let store = SqliteStore::open(&path).expect("open");
        let held = admitted(ask(&store, SCOPE, BUDGET, 900, 0).await);
        store.flush().await.expect("flush");
        // A crash takes its in-flight requests with it: their reservations go too.
        std::mem::forget(held);
    }
    let store = SqliteStore::open(&path).expect("reopen");
    let usage = store.usage(SCOPE, at(1)).await.expect("usage");
    assert_eq!((usage.reserved, usage.tokens_today), (0, 0));
    drop(admitted(ask(&store, SCOPE, BUDGET, 1000, 1).await));
    drop(store);
    remove_db(&path);
}

#[tokio::test]
async fn writes_happen_behind_on_a_timer() {
    let path = scratch("timer");
    let store = SqliteStore::open_with_interval(&path, Duration::from_millis(100)).expect("open");
    admitted(ask(&store, SCOPE, BUDGET, 100, 0).await).settle(80, at(1));
    // No flush, no shutdown: the writer thread writes it within its interval.
    let deadline = Instant::now() + Duration::from_secs(5);
    while saved_day_tokens(&path) != Some(80) {
        assert!(Instant::now() < deadline, "written within the interval");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(store);
    remove_db(&path);
}

/// What the file holds for `SCOPE`, read on a connection of its own (as a second process
/// would).
fn saved_day_tokens(path: &Path) -> Option<u64> {
    let conn = rusqlite::Connection::open(path).ok()?;
    conn.query_row(
        "SELECT day_tokens FROM scopes WHERE scope = ?1",
        [SCOPE],
        |row| row.get::<_, i64>(0),
    )
    .ok()
    .and_then(|v| u64::try_from(v).ok())
}

fn saved_answers(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .and_then(|c| c.query_row("SELECT count(*) FROM answers", [], |row| row.get(0)))
        .unwrap_or(0)
}

#[test]
fn survives_kill_9_after_its_flush() {
    let path = scratch("crash");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("FLUSHED") {
                let _ = tx.send(());
            }
        }
    });
    let flushed = rx.recv_timeout(Duration::from_secs(60));
    // SIGKILL: no destructor, no final write.
    child.kill().expect("kill -9");
    let _ = child.wait();
    flushed.expect("the child reported its flush");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = SqliteStore::open(&path).expect("reopen after the crash");
        check_survived(&store).await;
    });
    remove_db(&path);
}

/// The child of `survives_kill_9_after_its_flush`: uses the budget, waits until the writer
/// thread's timed write is in the file (no flush call, no shutdown), says so, and waits to be
/// killed.
#[test]
#[ignore = "run by survives_kill_9_after_its_flush as its child process"]
fn crash_child() {
    let path = std::env::var_os(CHILD_DB).expect("run only as the crash test's child");
    let path = Path::new(&path);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = SqliteStore::open(path).expect("open");
        use_600(&store).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while saved_day_tokens(path) != Some(600) || saved_answers(path) != 1 {
            assert!(
                Instant::now() < deadline,
                "the writer thread wrote within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("FLUSHED");
        tokio::time::sleep(Duration::from_secs(120)).await;
        // Never reached: killed first. Keeping the store alive until then matters, so that
        // no clean shutdown runs.
        drop(store);
    });
}
