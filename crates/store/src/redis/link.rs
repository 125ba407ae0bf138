//! One multiplexed connection to Redis that fails fast and mends itself: while Redis is down a
//! call returns `Unavailable` at once (at most one reconnection attempt every
//! [`RECONNECT_EVERY`]), and the first call after Redis is back reconnects.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ErrorKind, RedisError, ServerErrorKind};

use crate::error::StoreError;

/// The shortest time between two connection attempts while Redis is unreachable: requests in
/// between fail at once instead of each waiting for a connect.
const RECONNECT_EVERY: Duration = Duration::from_millis(250);

pub(crate) struct Link {
    client: Client,
    config: AsyncConnectionConfig,
    /// Upper bound for one exchange (connect, or command and reply).
    timeout: Duration,
    /// The connection in use; `None` after a failure until the next attempt succeeds.
    /// A std lock held only to clone or replace it, never across an await.
    conn: Mutex<Option<MultiplexedConnection>>,
    /// One connection attempt at a time: a burst arriving while disconnected waits for that
    /// one attempt (bounded by `timeout`) rather than opening a connection each.
    connecting: tokio::sync::Mutex<()>,
    /// No attempt before this instant.
    retry_at: Mutex<Option<Instant>>,
    healthy: AtomicBool,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("timeout", &self.timeout)
            .field("healthy", &self.healthy())
            .finish_non_exhaustive()
    }
}

impl Link {
    pub(crate) fn new(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        let client =
            Client::open(url).map_err(|e| StoreError::Config(format!("redis url: {e}")))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        Ok(Link {
            client,
            config,
            timeout,
            conn: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            retry_at: Mutex::new(None),
            // Unknown until the first exchange; optimistic so a fresh store is not reported
            // down before anyone asked it anything.
            healthy: AtomicBool::new(true),
        })
    }

    pub(crate) fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn current(&self) -> Option<MultiplexedConnection> {
        self.conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn backing_off(&self) -> bool {
        self.retry_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|at| Instant::now() < at)
    }

    /// Forgets the connection and holds further attempts off for [`RECONNECT_EVERY`].
    fn broke(&self) {
        self.healthy.store(false, Ordering::Relaxed);
        *self.conn.lock().unwrap_or_else(PoisonError::into_inner) = None;
        *self.retry_at.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(Instant::now() + RECONNECT_EVERY);
    }

    async fn connection(&self) -> Result<MultiplexedConnection, StoreError> {
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let down = || StoreError::Unavailable("redis unreachable; reconnecting".into());
        if self.backing_off() {
            return Err(down());
        }
        let _one = self.connecting.lock().await;
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        if self.backing_off() {
            return Err(down());
        }
        let attempt = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config);
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(conn)) => {
                *self.conn.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn.clone());
                Ok(conn)
            }
            Ok(Err(e)) => {
                self.broke();
                Err(StoreError::Unavailable(format!("redis connect: {e}")))
            }
            Err(_) => {
                self.broke();
                Err(StoreError::Unavailable("redis connect timed out".into()))
            }
        }
    }

    /// Runs one exchange on the shared connection, bounded by the timeout, and classifies its
    /// failure: unreachable (the connection is dropped and rebuilt later) or a protocol error.
    pub(crate) async fn run<T, F, Fut>(&self, exchange: F) -> Result<T, StoreError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let conn = self.connection().await?;
        match tokio::time::timeout(self.timeout, exchange(conn)).await {
            Ok(Ok(value)) => {
                self.healthy.store(true, Ordering::Relaxed);
                Ok(value)
            }
            Ok(Err(e)) if unreachable(&e) => {
                self.broke();
                Err(StoreError::Unavailable(format!("redis: {e}")))
            }
            Ok(Err(e)) if busy(&e) => {
                self.healthy.store(false, Ordering::Relaxed);
                Err(StoreError::Unavailable(format!("redis: {e}")))
            }
            Ok(Err(e)) => Err(StoreError::Protocol(format!("redis: {e}"))),
            Err(_) => {
                self.broke();
                Err(StoreError::Unavailable("redis timed out".into()))
            }
        }
    }

    /// A `PING`, to learn that Redis is back while no request is asking.
    pub(crate) async fn probe(&self) {
        let _ = self
            .run(
                |mut conn| async move { redis::cmd("PING").query_async::<String>(&mut conn).await },
            )
            .await;
    }
}

/// The connection itself failed: rebuild it.
fn unreachable(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
}

/// Redis answered but cannot serve now (loading its data after a restart, a failover): the
/// connection is fine, the store is not.
fn busy(e: &RedisError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
                | ServerErrorKind::ClusterDown
        )
    )
}
