//! An answer's headers, kept built per thread: for a whole JSON answer the content type, for a
//! stream the content type, `cache-control` and `x-accel-buffering`; then `x-tollgate-backend`,
//! `x-tollgate-attempts`, `x-request-id` and the `x-ratelimit-*` headers. A header map hashes
//! every name it is given, and a limited answer's ten inserts (six of them long custom names)
//! cost more than the limits' whole decision; an answer's map is instead a copy of the kept map
//! of its shape, this answer's values written into it by position. Every position but the
//! content type's (a constant) is written for each answer, or the kept value is this answer's
//! (the backend's name, a limit or a reset that did not change).

use std::cell::RefCell;

use http::header::{HeaderMap, HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use tollgate_store::{Quota, ScopeState};

use crate::limits::{self, RateHeaders};

pub const X_TOLLGATE_BACKEND: HeaderName = HeaderName::from_static("x-tollgate-backend");
pub const X_TOLLGATE_ATTEMPTS: HeaderName = HeaderName::from_static("x-tollgate-attempts");

const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// What an answer is, as its fixed headers say.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A whole JSON answer.
    Json,
    /// An event stream.
    Stream,
}

impl Kind {
    /// The headers every answer of the kind has, with their constant values.
    fn fixed(self) -> &'static [(HeaderName, &'static str)] {
        match self {
            Kind::Json => &JSON,
            Kind::Stream => &STREAM,
        }
    }
}

static JSON: [(HeaderName, &str); 1] = [(CONTENT_TYPE, "application/json")];
static STREAM: [(HeaderName, &str); 3] = [
    (CONTENT_TYPE, "text/event-stream"),
    (CACHE_CONTROL, "no-cache"),
    // Tells nginx (and proxies that copy it) not to buffer the stream.
    (X_ACCEL_BUFFERING, "no"),
];

/// One kind's and shape's kept map: the kind's fixed headers, then the backend's, the attempts',
/// the request id's and from there the `x-ratelimit-*` ones.
struct Kept {
    map: HeaderMap,
    /// The backend name the `x-tollgate-backend` value was made from.
    backend: Box<str>,
    rates: RateHeaders,
}

thread_local! {
    /// By kind, then `limits::shape` (0: no `x-ratelimit-*` headers).
    static KEPT: RefCell<[[Option<Kept>; 4]; 2]> =
        const { RefCell::new([const { [const { None }; 4] }; 2]) };
}

impl Kept {
    fn new(kind: Kind, quotas: &[Option<Quota>; 2], backend: &str) -> Option<Kept> {
        // A copy keeps this index table (room for twelve), so the upstream's few passed headers
        // do not grow it.
        let mut map = HeaderMap::with_capacity(12);
        for (name, value) in kind.fixed() {
            map.insert(name.clone(), HeaderValue::from_static(value));
        }
        map.insert(X_TOLLGATE_BACKEND, HeaderValue::from_str(backend).ok()?);
        map.insert(X_TOLLGATE_ATTEMPTS, HeaderValue::from_static("0"));
        map.insert(crate::request_id::HEADER, HeaderValue::from_static("-"));
        let rates = RateHeaders::append(quotas, &mut map);
        Some(Kept {
            map,
            backend: backend.into(),
            rates,
        })
    }
}

/// An answer's headers: those of the module's comment, then the upstream's passed headers
/// (`upstream`) that name none of them — the answer's own win, as they did when they were
/// inserted after the upstream's. `Err(upstream)` when the backend's name or the request id is
/// no header value: the caller then builds the map header by header.
pub fn answer(
    kind: Kind,
    limits: Option<&ScopeState>,
    backend: &str,
    attempts: HeaderValue,
    request_id: &str,
    upstream: HeaderMap,
) -> Result<HeaderMap, HeaderMap> {
    let Ok(request_id) = HeaderValue::from_str(request_id) else {
        return Err(upstream);
    };
    let quotas = limits.map_or([None, None], limits::shown);
    let shape = limits::shape(&quotas);
    KEPT.with_borrow_mut(|kept| {
        let slot = &mut kept[kind as usize][shape];
        if slot.is_none() {
            *slot = Kept::new(kind, &quotas, backend);
        }
        let fixed = kind.fixed().len();
        let Some(k) = slot.as_mut() else {
            return Err(upstream);
        };
        if *k.backend != *backend {
            let Ok(value) = HeaderValue::from_str(backend) else {
                return Err(upstream);
            };
            if let Some(v) = k.map.values_mut().nth(fixed) {
                *v = value;
            }
            k.backend = backend.into();
        }
        k.rates.refresh(&quotas, k.map.values_mut().skip(fixed + 3));
        let mut map = k.map.clone();
        let mut values = map.values_mut().skip(fixed + 1);
        if let Some(v) = values.next() {
            *v = attempts;
        }
        if let Some(v) = values.next() {
            *v = request_id;
        }
        RateHeaders::write_remaining(&quotas, values);
        for (name, value) in &upstream {
            if !k.map.contains_key(name) {
                map.append(name.clone(), value.clone());
            }
        }
        Ok(map)
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The headers as they were built before, one insert each: the content type, the
    /// upstream's passed headers, the limits', tollgate's, the request id.
    fn one_by_one(
        kind: Kind,
        limits: Option<&ScopeState>,
        backend: &str,
        attempts: &HeaderValue,
        request_id: &str,
        upstream: &HeaderMap,
    ) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.extend(upstream.clone());
        for (name, value) in kind.fixed() {
            map.insert(name.clone(), HeaderValue::from_static(value));
        }
        if let Some(state) = limits {
            limits::headers(state, &mut map);
        }
        map.insert(
            X_TOLLGATE_BACKEND,
            HeaderValue::from_str(backend).expect("a valid name"),
        );
        map.insert(X_TOLLGATE_ATTEMPTS, attempts.clone());
        map.insert(
            crate::request_id::HEADER,
            HeaderValue::from_str(request_id).expect("a valid id"),
        );
        map
    }

    #[test]
    fn a_kept_copy_is_the_map_built_one_by_one() {
        let mut gen = crate::limits::tests::numbers(0x1234_5678_9abc_def1);
        let mut next = move |n: u64| gen.next().unwrap_or(0) % n;
        let quota = |next: &mut dyn FnMut(u64) -> u64, keep: Option<Quota>| {
            if next(5) == 0 {
                return None;
            }
            Some(match keep {
                // Most answers keep the limit and the reset, with less remaining.
                Some(q) if next(3) > 0 => Quota {
                    remaining: q.remaining.saturating_sub(next(10)),
                    ..q
                },
                _ => Quota {
                    limit: next(1 << 40),
                    remaining: next(1 << 40),
                    reset: Duration::from_millis(next(100_000_000)),
                },
            })
        };
        let backends = ["nv", "openai", "a-much-longer-backend-name"];
        let mut state = ScopeState::default();
        for round in 0..3000 {
            state = ScopeState {
                requests: quota(&mut next, state.requests),
                tokens: quota(&mut next, state.tokens),
                tokens_today: quota(&mut next, state.tokens_today),
            };
            let limits = (next(4) > 0).then_some(&state);
            let backend = backends[next(backends.len() as u64) as usize];
            let attempts = HeaderValue::from(next(4) + 1);
            let request_id = format!("req_{round:032x}");
            // The upstream's passed headers: none mostly, else some, with `x-ratelimit-*` ones
            // the limits' replace and a repeated name.
            let mut upstream = HeaderMap::new();
            if next(3) == 0 {
                upstream.insert("openai-processing-ms", HeaderValue::from(next(900)));
                upstream.insert("x-ratelimit-limit-requests", HeaderValue::from_static("7"));
                upstream.insert(
                    "x-ratelimit-remaining-tokens",
                    HeaderValue::from_static("3"),
                );
                upstream.append("retry-after", HeaderValue::from_static("1"));
                upstream.append("retry-after", HeaderValue::from_static("2"));
            }
            let kind = [Kind::Json, Kind::Stream][next(2) as usize];
            let want = one_by_one(kind, limits, backend, &attempts, &request_id, &upstream);
            let got =
                answer(kind, limits, backend, attempts, &request_id, upstream).expect("valid");
            assert_eq!(got, want, "round {round}: {limits:?}");
        }
    }

    #[test]
    fn a_value_that_is_no_header_value_gives_the_upstream_headers_back() {
        let mut upstream = HeaderMap::new();
        upstream.insert("openai-version", HeaderValue::from_static("2020-10-01"));
        let back = answer(
            Kind::Json,
            None,
            "nv",
            HeaderValue::from_static("1"),
            "bad\nid",
            upstream.clone(),
        );
        assert_eq!(back, Err(upstream.clone()));
        let back = answer(
            Kind::Stream,
            None,
            "bad\u{7f}",
            HeaderValue::from_static("1"),
            "req_1",
            upstream.clone(),
        );
        assert_eq!(back, Err(upstream));
    }
}
