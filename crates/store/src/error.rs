//! The one error type of the crate. The server maps `Unavailable` through `state.on_error`
//! (admit or refuse while the store is down) and everything else to a 500-class error.

/// Why a store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backing store cannot be reached (Redis down, timed out, or reconnecting). Returned
    /// fast, without waiting for a reconnection; the store recovers by itself.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// The backing store answered something this crate does not understand (a script error, a
    /// reply of the wrong shape). Not retried: it points at a bug or a foreign writer.
    #[error("state store protocol error: {0}")]
    Protocol(String),
    /// Two asks of one decision named the same scope; each scope is asked once.
    #[error("scope {0:?} asked twice in one decision")]
    DuplicateScope(String),
    /// The store's settings are unusable (a bad Redis URL or prefix).
    #[error("state store configuration: {0}")]
    Config(String),
    /// The SQLite file could not be opened, created or read.
    #[error("state database: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

impl StoreError {
    /// True when the store is unreachable and `state.on_error` applies.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}
