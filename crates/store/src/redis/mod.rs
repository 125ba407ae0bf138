//! `state.store: redis` — counters shared exactly by any number of replicas.
//!
//! Every admission is one Lua script (`admit.lua`, `EVALSHA`, reloaded on `NOSCRIPT`) that
//! checks and reserves all asks atomically: one round trip on the request path. Settlements
//! and abandoned idempotency claims are queued without waiting and applied by a background
//! task, batched into one `settle.lua` call. Reservations carry a lease: a replica killed
//! mid-burst leaks none of its reservations past it, since the next admission in that scope
//! purges them. All keys share the prefix's hash tag, so one script's keys share a cluster
//! slot.

mod link;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use redis::{Script, Value};
use tokio::sync::{mpsc, oneshot};

use crate::decision::{check_distinct, refusal, Ask, Decision, Limit, ScopeState, States, Usage};
use crate::error::StoreError;
use crate::idempotency::{duration_ms, Begin, Claim, ClaimHeld, StoredAnswer};
use crate::reservation::{Held, Reservation};
use crate::window::{day_of, millis, to_midnight, Counters};
use crate::Store;
use link::Link;

/// Settlements waiting for the background task; past this, a settlement is dropped with a
/// warning and its reservation ends with its lease.
const QUEUE: usize = 65_536;
/// Settlements per `settle.lua` call: large enough to keep up with thousands of requests per
/// second, small enough that one call never holds Redis for long.
const BATCH: usize = 256;
/// Pause between two attempts of a failed batch.
const RETRY_EVERY: Duration = Duration::from_millis(250);
/// How often an idle, unhealthy store asks Redis whether it is back.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Attempts of a failed batch once the store is gone (no more jobs can come).
const CLOSING_ATTEMPTS: u32 = 8;

/// How to reach Redis, and how keys and reservations are named and kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port[/db]` (`state.url`, `REDIS_URL`).
    pub url: String,
    /// Every key starts with `{prefix}:`; the braces make it the cluster hash tag. Replicas
    /// that must share counters use one prefix; tests use a unique one. No `{` or `}`.
    pub prefix: String,
    /// How long a reservation may stay unsettled before an admission in its scope gives its
    /// tokens back, and how long an idempotency claim may stay in flight: longer than the
    /// longest request (`server.request_timeout` + 60 s).
    pub lease: Duration,
    /// Upper bound for one exchange with Redis (connect, or command and reply). A call that
    /// exceeds it fails with [`StoreError::Unavailable`].
    pub timeout: Duration,
}

impl RedisOptions {
    /// Options for `url` with the defaults: prefix `tollgate`, a lease of 660 s (the default
    /// `request_timeout` of 600 s + 60 s), a timeout of 500 ms.
    pub fn new(url: impl Into<String>) -> Self {
        RedisOptions {
            url: url.into(),
            prefix: "tollgate".into(),
            lease: Duration::from_secs(660),
            timeout: Duration::from_millis(500),
        }
    }
}

/// The store's scripts, hashed once; `EVALSHA` falls back to loading on `NOSCRIPT` (a Redis
/// restarted or flushed since).
#[derive(Debug)]
struct Scripts {
    admit: Script,
    settle: Script,
    begin: Script,
    complete: Script,
    abandon: Script,
}

/// Key names. Scope and idempotency keys come from the configuration and clients; the hash tag
/// is the prefix's, so braces inside them do not move a key to another slot.
#[derive(Debug)]
struct Keys {
    tag: String,
}

impl Keys {
    fn counters(&self, scope: &str) -> String {
        format!("{}:s:{scope}", self.tag)
    }
    fn expiry(&self, scope: &str) -> String {
        format!("{}:z:{scope}", self.tag)
    }
    fn amounts(&self, scope: &str) -> String {
        format!("{}:a:{scope}", self.tag)
    }
    fn sequence(&self) -> String {
        format!("{}:seq", self.tag)
    }
    /// The scope's length first: `("a:b", "c")` and `("a", "b:c")` must not meet.
    fn answer(&self, scope: &str, key: &str) -> String {
        format!("{}:i:{}:{scope}:{key}", self.tag, scope.len())
    }
}

/// What the store and its background task share (the task holds no job sender, so it ends
/// once the store and every reservation and claim are gone).
#[derive(Debug)]
struct Shared {
    link: Link,
    scripts: Scripts,
    keys: Keys,
}

/// Work for the background task.
#[derive(Debug)]
enum Job {
    Settle(Settlement),
    Abandon { key: String, token: i64 },
    Flush(oneshot::Sender<Result<(), StoreError>>),
}

#[derive(Debug)]
struct Settlement {
    id: i64,
    used: u64,
    now: u64,
    scopes: Vec<Box<str>>,
}

/// Limits, budgets and idempotency answers in Redis, shared by every replica using the same
/// server and prefix.
#[derive(Debug)]
pub struct RedisStore {
    shared: Arc<Shared>,
    jobs: mpsc::Sender<Job>,
    lease: Duration,
}

impl RedisStore {
    /// A store for `options`. Connects lazily: Redis may be down at start-up (calls fail with
    /// `Unavailable` until it is up). Must be called within a Tokio runtime, which runs the
    /// settlement task.
    pub fn new(options: RedisOptions) -> Result<Self, StoreError> {
        if options.prefix.is_empty() || options.prefix.contains(['{', '}']) {
            return Err(StoreError::Config(format!(
                "redis prefix {:?}: must be non-empty, without braces",
                options.prefix
            )));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            StoreError::Config("RedisStore::new needs a running Tokio runtime".into())
        })?;
        let shared = Arc::new(Shared {
            link: Link::new(&options.url, options.timeout)?,
            scripts: Scripts {
                admit: Script::new(include_str!("admit.lua")),
                settle: Script::new(include_str!("settle.lua")),
                begin: Script::new(include_str!("begin.lua")),
                complete: Script::new(include_str!("complete.lua")),
                abandon: Script::new(include_str!("abandon.lua")),
            },
            keys: Keys {
                tag: format!("{{{}}}", options.prefix),
            },
        });
        let (jobs, inbox) = mpsc::channel(QUEUE);
        runtime.spawn(background(Arc::clone(&shared), inbox));
        Ok(RedisStore {
            shared,
            jobs,
            lease: options.lease,
        })
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn admit(&self, asks: &[Ask<'_>], now: SystemTime) -> Result<Decision, StoreError> {
        check_distinct(asks)?;
        if asks.is_empty() {
            return Ok(Decision::Admitted {
                reservation: Reservation::new(Held::Nothing),
                states: States::default(),
            });
        }
        let now = millis(now);
        let keys = &self.shared.keys;
        let mut call = self.shared.scripts.admit.prepare_invoke();
        for ask in asks {
            call.key(keys.counters(ask.scope))
                .key(keys.expiry(ask.scope))
                .key(keys.amounts(ask.scope));
        }
        call.key(keys.sequence())
            .arg(now)
            .arg(duration_ms(self.lease))
            .arg(day_of(now))
            .arg(to_midnight(now));
        for ask in asks {
            call.arg(limit_arg(ask.limits.rpm))
                .arg(limit_arg(ask.limits.tpm))
                .arg(limit_arg(ask.limits.tokens_per_day))
                .arg(ask.tokens);
        }
        let reply: Vec<i64> = self
            .shared
            .link
            .run(|mut conn| async move { call.invoke_async(&mut conn).await })
            .await?;

        let malformed = || StoreError::Protocol(format!("admit.lua replied {reply:?}"));
        if reply.len() != 4 + 6 * asks.len() {
            return Err(malformed());
        }
        let states: Vec<ScopeState> = asks
            .iter()
            .zip(reply[4..].chunks_exact(6))
            .map(|(ask, c)| counters(c).state(&ask.limits, now))
            .collect();
        if reply[0] == 1 {
            return Ok(Decision::Admitted {
                reservation: Reservation::new(Held::Redis(RedisTicket {
                    jobs: self.jobs.clone(),
                    id: reply[1],
                    scopes: asks.iter().map(|a| a.scope.into()).collect(),
                })),
                states: states.into(),
            });
        }
        let limit = match reply[2] {
            1 => Limit::Rpm,
            2 => Limit::Tpm,
            3 => Limit::TokensPerDay,
            _ => return Err(malformed()),
        };
        let ask = usize::try_from(reply[1]).map_err(|_| malformed())?;
        let wait = u64::try_from(reply[3]).unwrap_or(0);
        refusal(asks, &[(ask, limit, wait)], states)
            .map(Decision::Refused)
            .ok_or_else(malformed)
    }

    async fn usage(&self, scope: &str, now: SystemTime) -> Result<Usage, StoreError> {
        let key = self.shared.keys.counters(scope);
        let fields: Vec<Option<i64>> = self
            .shared
            .link
            .run(|mut conn| async move {
                redis::cmd("HMGET")
                    .arg(key)
                    .arg(&["ws", "wr", "wt", "day", "dt", "res"])
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let raw: Vec<i64> = fields.iter().map(|f| f.unwrap_or(0)).collect();
        let mut c = counters(&raw);
        if fields.first().copied().flatten().is_none() {
            c.window_start = None;
        }
        Ok(c.rolled(millis(now)).usage())
    }

    async fn begin(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &[u8],
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Begin, StoreError> {
        let entry = self.shared.keys.answer(scope, key);
        let hold = duration_ms(ttl.min(self.lease));
        let mut call = self.shared.scripts.begin.prepare_invoke();
        call.key(&entry)
            .key(self.shared.keys.sequence())
            .arg(fingerprint)
            .arg(millis(now))
            .arg(hold);
        let reply: Vec<Value> = self
            .shared
            .link
            .run(|mut conn| async move { call.invoke_async(&mut conn).await })
            .await?;
        let malformed = || StoreError::Protocol(format!("begin.lua replied {reply:?}"));
        let tag = reply.first().and_then(bytes_of).ok_or_else(malformed)?;
        match tag {
            b"claimed" => {
                let token = match reply.get(1) {
                    Some(Value::Int(token)) => *token,
                    _ => return Err(malformed()),
                };
                Ok(Begin::Claimed(Claim::new(ClaimHeld::Redis(RedisClaim {
                    shared: Arc::clone(&self.shared),
                    jobs: self.jobs.clone(),
                    key: entry,
                    token,
                    ttl,
                }))))
            }
            b"inflight" => Ok(Begin::InFlight),
            b"mismatch" => Ok(Begin::Mismatch),
            b"done" => {
                let field = |i: usize| reply.get(i).and_then(bytes_of);
                let status = field(1)
                    .and_then(|s| std::str::from_utf8(s).ok()?.parse::<u16>().ok())
                    .ok_or_else(malformed)?;
                let headers = field(2)
                    .and_then(|h| serde_json::from_slice::<Vec<(String, String)>>(h).ok())
                    .ok_or_else(malformed)?;
                let body = field(3).ok_or_else(malformed)?;
                Ok(Begin::Replay(StoredAnswer {
                    status,
                    headers,
                    body: Bytes::copy_from_slice(body),
                }))
            }
            _ => Err(malformed()),
        }
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        let gone = || StoreError::Unavailable("the redis settlement task has stopped".into());
        self.jobs
            .try_send(Job::Flush(done))
            .map_err(|_| StoreError::Unavailable("the settlement queue is full".into()))?;
        wait.await.map_err(|_| gone())?
    }

    fn healthy(&self) -> bool {
        self.shared.link.healthy()
    }
}

/// A limit as the scripts take it: -1 for none (Lua has no `nil` in `ARGV`).
fn limit_arg(limit: Option<u64>) -> i64 {
    limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX))
}

/// Six integers of a script's reply, in `admit.lua`'s order, as counters.
fn counters(c: &[i64]) -> Counters {
    let at = |i: usize| c.get(i).copied().unwrap_or(0);
    let non_negative = |i: usize| u64::try_from(at(i)).unwrap_or(0);
    Counters {
        window_start: u64::try_from(at(0)).ok(),
        window_requests: non_negative(1),
        window_tokens: non_negative(2),
        day: non_negative(3),
        day_tokens: non_negative(4),
        reserved: non_negative(5),
    }
}

fn bytes_of(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// A Redis reservation: settling queues it for the background task.
#[derive(Debug)]
pub(crate) struct RedisTicket {
    jobs: mpsc::Sender<Job>,
    id: i64,
    scopes: Vec<Box<str>>,
}

impl RedisTicket {
    pub(crate) fn finish(self, settled: Option<(u64, u64)>) {
        let (used, now) = settled.unwrap_or_else(|| (0, millis(SystemTime::now())));
        let job = Job::Settle(Settlement {
            id: self.id,
            used,
            now,
            scopes: self.scopes,
        });
        if self.jobs.try_send(job).is_err() {
            tracing::warn!(
                "redis settlement queue full or closed: a reservation waits for its lease"
            );
        }
    }
}

/// A Redis idempotency claim.
#[derive(Debug)]
pub(crate) struct RedisClaim {
    shared: Arc<Shared>,
    jobs: mpsc::Sender<Job>,
    key: String,
    token: i64,
    ttl: Duration,
}

impl RedisClaim {
    /// Stores the answer; one round trip, awaited, so a repeat sent after the first answer
    /// reached its client finds it.
    pub(crate) async fn complete(
        self,
        answer: StoredAnswer,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let headers = serde_json::to_vec(&answer.headers)
            .map_err(|e| StoreError::Protocol(format!("answer headers: {e}")))?;
        let mut call = self.shared.scripts.complete.prepare_invoke();
        call.key(&self.key)
            .arg(self.token)
            .arg(millis(now))
            .arg(duration_ms(self.ttl))
            .arg(answer.status)
            .arg(headers)
            .arg(answer.body.as_ref());
        let stored = self
            .shared
            .link
            .run(|mut conn| async move { call.invoke_async::<i64>(&mut conn).await })
            .await;
        if stored.is_err() {
            // Not stored: free the key (once Redis answers) rather than leave it in flight
            // until the lease ends. A completion that did land makes this a no-op.
            self.abandon();
        }
        stored.map(|_| ())
    }

    pub(crate) fn abandon(self) {
        let job = Job::Abandon {
            key: self.key,
            token: self.token,
        };
        if self.jobs.try_send(job).is_err() {
            tracing::warn!("redis settlement queue full or closed: a claim waits for its lease");
        }
    }
}

/// The background task: applies queued settlements and abandons in batches, retrying a failed
/// batch (each is idempotent), and probes Redis every second while it is unhealthy and idle.
async fn background(shared: Arc<Shared>, mut inbox: mpsc::Receiver<Job>) {
    let mut backlog: VecDeque<Job> = VecDeque::new();
    let mut closed = false;
    let mut failures = 0u32;
    loop {
        let mut waiters = Vec::new();
        if backlog.is_empty() {
            if closed {
                return;
            }
            // Wakes every second even when idle: health turns false inside request calls,
            // and only a probe from here turns it true again while no request comes.
            let first = tokio::select! {
                job = inbox.recv() => job,
                () = tokio::time::sleep(PROBE_EVERY) => {
                    if !shared.link.healthy() {
                        shared.link.probe().await;
                    }
                    continue;
                }
            };
            match first {
                Some(Job::Flush(done)) => waiters.push(done),
                Some(job) => backlog.push_back(job),
                None => return,
            }
        }
        // Take what is queued now; jobs arriving while this batch runs wait for the next.
        while backlog.len() < QUEUE {
            match inbox.try_recv() {
                Ok(Job::Flush(done)) => waiters.push(done),
                Ok(job) => backlog.push_back(job),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        let mut outcome = Ok(());
        while !backlog.is_empty() {
            let take = backlog.len().min(BATCH);
            let batch: Vec<&Job> = backlog.iter().take(take).collect();
            match apply(&shared, &batch).await {
                Ok(()) => {
                    backlog.drain(..take);
                    failures = 0;
                }
                Err(e) if e.is_unavailable() => {
                    outcome = Err(e);
                    break;
                }
                // Redis answered with an error: retrying the same batch would get the same
                // answer forever. Its reservations end with their lease.
                Err(e) => {
                    tracing::error!(error = %e, jobs = take, "redis settlements rejected; dropped");
                    backlog.drain(..take);
                }
            }
        }
        for done in waiters {
            let _ = done.send(match &outcome {
                Ok(()) => Ok(()),
                Err(e) => Err(StoreError::Unavailable(e.to_string())),
            });
        }
        if let Err(e) = outcome {
            failures += 1;
            if failures == 1 {
                tracing::warn!(error = %e, pending = backlog.len(), "redis settlements delayed");
            }
            if closed && failures >= CLOSING_ATTEMPTS {
                tracing::warn!(
                    pending = backlog.len(),
                    "redis settlements dropped at shutdown; their reservations end with their lease"
                );
                return;
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }
}

/// One batch: every settlement in one `settle.lua` call, then each abandon.
async fn apply(shared: &Shared, batch: &[&Job]) -> Result<(), StoreError> {
    let keys = &shared.keys;
    let mut call = shared.scripts.settle.prepare_invoke();
    let mut settlements = 0;
    for job in batch {
        if let Job::Settle(s) = job {
            settlements += 1;
            for scope in &s.scopes {
                call.key(keys.counters(scope))
                    .key(keys.expiry(scope))
                    .key(keys.amounts(scope));
            }
            call.arg(s.id)
                .arg(s.used)
                .arg(s.now)
                .arg(day_of(s.now))
                .arg(s.scopes.len());
        }
    }
    if settlements > 0 {
        shared
            .link
            .run(|mut conn| async move { call.invoke_async::<i64>(&mut conn).await })
            .await?;
    }
    for job in batch {
        if let Job::Abandon { key, token } = job {
            let mut call = shared.scripts.abandon.prepare_invoke();
            call.key(key).arg(*token);
            shared
                .link
                .run(|mut conn| async move { call.invoke_async::<i64>(&mut conn).await })
                .await?;
        }
    }
    Ok(())
}
