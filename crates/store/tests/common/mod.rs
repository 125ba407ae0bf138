//! What the store tests share: an injected clock, scratch files, a real `redis-server` per
//! test, and the behaviour every store must show (`contract`).
#![allow(dead_code)]

pub mod contract;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[allow(unused_imports)] // only the Redis tests start a server
pub use tollgate_testkit::redis::RedisServer;

/// 2025-03-14 13:20:17.250 UTC: inside a minute and a day, so anchoring and midnight are
/// not at round numbers.
pub const BASE_MS: u64 = 1_741_958_417_250;
/// Milliseconds from `BASE_MS` to the next 00:00 UTC.
pub const TO_MIDNIGHT_MS: u64 = 86_400_000 - (BASE_MS % 86_400_000);

/// The injected clock: `BASE_MS` plus `ms`.
pub fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(BASE_MS + ms)
}

/// A path under the temporary directory no other test uses; the caller removes it.
pub fn scratch(name: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "tollgate-store-{name}-{}-{n}-{nanos}.db",
        std::process::id()
    ))
}

/// Removes a SQLite file with its WAL and shared-memory companions.
pub fn remove_db(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}
