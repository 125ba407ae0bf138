//! Request ids: the client's `x-request-id` when it is sane, else a new one. The id is
//! returned on every response, sent upstream, and written in the request's log line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use http::header::HeaderName;
use http::HeaderMap;

/// A constant name: a lookup by `&str` would parse and validate the name on every request.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The client's id (printable ASCII, at most 128 bytes), or a fresh one.
pub fn from_headers(headers: &HeaderMap) -> String {
    let given = headers
        .get(&HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()));
    match given {
        Some(id) => id.to_owned(),
        None => generate(),
    }
}

/// A new id: unique within the process (a counter) and across processes (a random seed).
pub fn generate() -> String {
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.write_u32(std::process::id());
        h.finish()
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Written by hand into a fixed buffer, then copied once: this runs once per request, and
    // `format!` (or a `String::push` per digit) costs several times more.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 36];
    id[..4].copy_from_slice(b"req_");
    let mut at = 4;
    for word in [mix(seed ^ n), seed] {
        for shift in (0..16).rev() {
            id[at] = HEX[((word >> (shift * 4)) & 0xf) as usize];
            at += 1;
        }
    }
    // Every byte is ASCII (the prefix and hex digits): the check cannot fail.
    std::str::from_utf8(&id).unwrap_or_default().to_owned()
}

/// splitmix64's finalizer: spreads a counter's bits so ids do not look sequential.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn keeps_sane_client_ids_and_makes_unique_ones() {
        let mut h = HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_static("abc-123"));
        assert_eq!(from_headers(&h), "abc-123");
        h.insert(HEADER, HeaderValue::from_static("has space"));
        assert!(from_headers(&h).starts_with("req_"));
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| generate()).collect();
        assert_eq!(ids.len(), 1000);
        let id = generate();
        assert_eq!(id.len(), 36);
        assert!(id[4..].bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    }
}
