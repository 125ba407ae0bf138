//! `state.store: sqlite` — the memory store's decisions, written behind to a SQLite file so
//! that daily budgets, usage and idempotency answers survive a restart or a `kill -9`.
//!
//! The request path never touches the disk: decisions are made in memory (the same
//! [`Ledger`] as [`crate::MemoryStore`]) and marked dirty; a dedicated thread (not a tokio
//! worker) copies what changed and writes it in one transaction about every second. What a
//! crash loses is the last interval's changes. Reservations are never written: they belong to
//! this process's requests, and a crash ends those requests too.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{params, Connection};
use tokio::sync::oneshot;

use crate::decision::{Ask, Decision, Usage};
use crate::error::StoreError;
use crate::idempotency::{Begin, Persisted, StoredAnswer};
use crate::ledger::Ledger;
use crate::window::{millis, Counters};
use crate::Store;

/// How often the writer thread writes what changed.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// How often expired answers are deleted from the file (lookups ignore them anyway).
const PURGE_INTERVAL: Duration = Duration::from_secs(60);
/// The file layout this code writes; a file with a higher number came from a newer tollgate.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS scopes (
    scope TEXT PRIMARY KEY,
    window_start INTEGER,
    window_requests INTEGER NOT NULL,
    window_tokens INTEGER NOT NULL,
    day INTEGER NOT NULL,
    day_tokens INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS answers (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint BLOB NOT NULL,
    expires INTEGER NOT NULL,
    status INTEGER NOT NULL,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (scope, key)
);
";

#[derive(Debug)]
enum Msg {
    /// Write now and say how it went.
    Flush(oneshot::Sender<Result<(), String>>),
    /// Write what is left and end the thread.
    Stop,
}

/// The memory store plus a SQLite file that outlives the process. Dropping it writes what is
/// left and waits for the writer thread (a few milliseconds): drop it at shutdown.
#[derive(Debug)]
pub struct SqliteStore {
    ledger: Arc<Ledger>,
    writer: mpsc::Sender<Msg>,
    thread: Option<JoinHandle<()>>,
    /// False while the last write failed (disk full, file removed): decisions still work, but
    /// would not survive a restart.
    healthy: Arc<AtomicBool>,
}

impl SqliteStore {
    /// Opens (or creates) the file at `path` and loads what it holds. Blocking file I/O: call
    /// it at start-up or on a blocking thread.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with_interval(path, FLUSH_INTERVAL)
    }

    /// [`SqliteStore::open`] with another write-behind interval (what a crash can lose).
    pub fn open_with_interval(
        path: impl AsRef<Path>,
        interval: Duration,
    ) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        // WAL: the writer's transactions survive a crash of the process (not necessarily of
        // the machine with `synchronous = NORMAL`), and readers never block it.
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;")?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Config(format!(
                "the state database has schema version {version}, newer than this tollgate's \
                 {SCHEMA_VERSION}"
            )));
        }
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;

        let ledger = Arc::new(Ledger::new(true));
        load(&conn, &ledger)?;
        // What was just loaded is already on disk.
        let _ = ledger.take_dirty();

        let (writer, inbox) = mpsc::channel();
        let healthy = Arc::new(AtomicBool::new(true));
        let thread = std::thread::Builder::new()
            .name("tollgate-sqlite".into())
            .spawn({
                let ledger = Arc::clone(&ledger);
                let healthy = Arc::clone(&healthy);
                move || write_behind(conn, &ledger, &inbox, interval, &healthy)
            })
            .map_err(|e| StoreError::Config(format!("cannot start the SQLite writer: {e}")))?;
        Ok(SqliteStore {
            ledger,
            writer,
            thread: Some(thread),
            healthy,
        })
    }
}

impl Drop for SqliteStore {
    /// A clean shutdown writes what is left before the file is closed.
    fn drop(&mut self) {
        let _ = self.writer.send(Msg::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
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
        let (done, wait) = oneshot::channel();
        let gone = || StoreError::Unavailable("the SQLite writer has stopped".into());
        self.writer.send(Msg::Flush(done)).map_err(|_| gone())?;
        wait.await
            .map_err(|_| gone())?
            .map_err(StoreError::Unavailable)
    }

    fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

/// Reads the saved scopes and answers into `ledger`.
fn load(conn: &Connection, ledger: &Ledger) -> Result<(), StoreError> {
    let mut scopes = conn.prepare(
        "SELECT scope, window_start, window_requests, window_tokens, day, day_tokens FROM scopes",
    )?;
    let rows = scopes.query_map([], |row| {
        let scope: String = row.get(0)?;
        let window_start: Option<i64> = row.get(1)?;
        Ok((
            scope,
            Counters {
                window_start: window_start.map(to_u64),
                window_requests: to_u64(row.get(2)?),
                window_tokens: to_u64(row.get(3)?),
                day: to_u64(row.get(4)?),
                day_tokens: to_u64(row.get(5)?),
                reserved: 0,
            },
        ))
    })?;
    for row in rows {
        let (scope, counters) = row?;
        ledger.restore_scope(&scope, counters);
    }

    // Expired rows load too: whether an answer has expired is judged by the callers' clock at
    // lookup, and the table's sweep drops them.
    let mut answers = conn
        .prepare("SELECT scope, key, fingerprint, expires, status, headers, body FROM answers")?;
    let rows = answers.query_map([], |row| {
        let headers: String = row.get(5)?;
        Ok((
            Persisted {
                scope: row.get::<_, String>(0)?.into(),
                key: row.get::<_, String>(1)?.into(),
                fingerprint: row.get::<_, Vec<u8>>(2)?.into(),
                expires: to_u64(row.get(3)?),
                answer: Arc::new(StoredAnswer {
                    status: u16::try_from(row.get::<_, i64>(4)?).unwrap_or(500),
                    headers: Vec::new(),
                    body: Bytes::from(row.get::<_, Vec<u8>>(6)?),
                }),
            },
            headers,
        ))
    })?;
    for row in rows {
        let (mut stored, headers) = row?;
        match serde_json::from_str::<Vec<(String, String)>>(&headers) {
            Ok(headers) => {
                if let Some(answer) = Arc::get_mut(&mut stored.answer) {
                    answer.headers = headers;
                }
                ledger.answers.restore(stored);
            }
            // A row this code did not write: better to run the request again than to replay
            // an answer without its headers.
            Err(e) => tracing::warn!(error = %e, "state database: unreadable answer skipped"),
        }
    }
    Ok(())
}

/// The writer thread: every `interval`, or when asked, writes what changed since the last
/// successful write. A failed write is kept and retried with the next one.
fn write_behind(
    mut conn: Connection,
    ledger: &Ledger,
    inbox: &mpsc::Receiver<Msg>,
    interval: Duration,
    healthy: &AtomicBool,
) {
    let mut scopes: HashMap<Box<str>, Counters> = HashMap::new();
    let mut answers: Vec<Persisted> = Vec::new();
    let mut next_write = Instant::now() + interval;
    let mut next_purge = Instant::now() + PURGE_INTERVAL;
    loop {
        let (waiter, stop) =
            match inbox.recv_timeout(next_write.saturating_duration_since(Instant::now())) {
                Ok(Msg::Flush(done)) => (Some(done), false),
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => (None, true),
                Err(RecvTimeoutError::Timeout) => (None, false),
            };
        scopes.extend(ledger.take_dirty());
        answers.extend(ledger.take_journal());
        let purge = (Instant::now() >= next_purge).then(|| ledger.latest());
        let result = write(&mut conn, &scopes, &answers, purge).map_err(|e| e.to_string());
        match &result {
            Ok(()) => {
                scopes.clear();
                answers.clear();
                if purge.is_some() {
                    next_purge = Instant::now() + PURGE_INTERVAL;
                }
                healthy.store(true, Ordering::Relaxed);
            }
            Err(e) => {
                if healthy.swap(false, Ordering::Relaxed) {
                    tracing::error!(error = %e, "state database: write failed; retrying");
                }
            }
        }
        if let Some(done) = waiter {
            let _ = done.send(result);
        }
        if stop {
            return;
        }
        next_write = Instant::now() + interval;
    }
}

/// One transaction with every changed scope and answer; `purge`: also delete the answers that
/// expired by then (ms).
fn write(
    conn: &mut Connection,
    scopes: &HashMap<Box<str>, Counters>,
    answers: &[Persisted],
    purge: Option<u64>,
) -> rusqlite::Result<()> {
    if scopes.is_empty() && answers.is_empty() && purge.is_none() {
        return Ok(());
    }
    let tx = conn.transaction()?;
    {
        let mut put_scope = tx.prepare(
            "INSERT OR REPLACE INTO scopes \
             (scope, window_start, window_requests, window_tokens, day, day_tokens) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for (scope, c) in scopes {
            put_scope.execute(params![
                scope.as_ref(),
                c.window_start.map(to_i64),
                to_i64(c.window_requests),
                to_i64(c.window_tokens),
                to_i64(c.day),
                to_i64(c.day_tokens),
            ])?;
        }
        let mut put_answer = tx.prepare(
            "INSERT OR REPLACE INTO answers \
             (scope, key, fingerprint, expires, status, headers, body) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for p in answers {
            let headers = match serde_json::to_string(&p.answer.headers) {
                Ok(headers) => headers,
                Err(e) => {
                    tracing::warn!(error = %e, "state database: answer not saved");
                    continue;
                }
            };
            put_answer.execute(params![
                p.scope.as_ref(),
                p.key.as_ref(),
                p.fingerprint.as_ref(),
                to_i64(p.expires),
                i64::from(p.answer.status),
                headers,
                p.answer.body.as_ref(),
            ])?;
        }
        if let Some(before) = purge {
            tx.execute(
                "DELETE FROM answers WHERE expires <= ?1",
                params![to_i64(before)],
            )?;
        }
    }
    tx.commit()
}

/// SQLite integers are signed; counters and times stay far below `i64::MAX`, and a value out of
/// range (a corrupt row) saturates instead of wrapping.
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
