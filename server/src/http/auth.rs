//! Who is asking: API keys (compared in constant time), namespace limits, and the rate limit per
//! key (or per client address when no keys are configured).

use std::collections::HashMap;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use parking_lot::Mutex;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::AppState;
use crate::config::{ApiKey, Role};
use crate::error::ApiError;

/// Distinct rate-limit buckets kept; past this, the bucket idle longest is dropped.
const MAX_RATE_BUCKETS: usize = 100_000;

pub(crate) fn authenticate<'a>(
    state: &'a AppState,
    req: &Request<Incoming>,
) -> Result<Option<&'a ApiKey>, ApiError> {
    if state.settings.api_keys.is_empty() {
        return Ok(None);
    }
    let presented = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| req.headers().get("x-api-key").and_then(|v| v.to_str().ok()));
    let Some(presented) = presented else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "an API key is required: send Authorization: Bearer <key> or X-API-Key",
        ));
    };
    // Compared as SHA-256 digests, in constant time: the daemon keeps no key in the clear, and
    // the digests have one length. Every key is compared, so the time does not say which.
    let digest = crate::config::sha256(presented.as_bytes());
    let mut found = None;
    for k in &state.settings.api_keys {
        if keys_equal(&k.sha256, &digest) {
            found = Some(k);
        }
    }
    found.map(Some).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "the API key is not valid",
        )
    })
}

/// Compares two digests in time that does not depend on where they differ.
fn keys_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

/// 403 unless `key` (if keys are configured) has at least `needed`'s role.
/// `what` names the call in the refusal; it is only built then.
pub(crate) fn require(
    key: Option<&ApiKey>,
    needed: Role,
    what: impl FnOnce() -> String,
) -> Result<(), ApiError> {
    match key {
        Some(k) if !k.can(needed) => Err(ApiError {
            details: json!({ "role": k.role.as_str(), "needed": needed.as_str() }),
            ..ApiError::new(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                format!(
                    "{} needs a {} key; this key ({}) is {}",
                    what(),
                    needed.as_str(),
                    k.name,
                    k.role.as_str()
                ),
            )
        }),
        _ => Ok(()),
    }
}

pub(crate) fn authorize(key: Option<&ApiKey>, namespace: &str) -> Result<(), ApiError> {
    match key {
        Some(k) if !k.allows(namespace) => Err(ApiError {
            details: json!({ "namespace": namespace }),
            ..ApiError::new(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                format!("this API key may not access namespace {namespace:?}"),
            )
        }),
        _ => Ok(()),
    }
}

/// Token buckets per API key (or client address when there are no keys).
#[derive(Debug)]
pub(crate) struct RateLimiter {
    per_second: f64,
    burst: f64,
    /// Most buckets kept (see [`RateLimiter::make_room`]).
    max_buckets: usize,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub(crate) fn new(per_second: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(per_second)),
            max_buckets: MAX_RATE_BUCKETS,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(seconds to wait)` when the bucket is empty.
    pub(crate) fn check(&self, who: &str) -> Result<(), u64> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() >= self.max_buckets && !buckets.contains_key(who) {
            self.make_room(&mut buckets, now);
        }
        let (tokens, at) = buckets.entry(who.to_owned()).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.per_second).ceil().max(1.0) as u64)
        }
    }

    /// Forgets buckets that have refilled (a full bucket limits exactly as a new one, so this
    /// resets nobody's limit); if every bucket is still in use, forgets the one idle longest.
    fn make_room(&self, buckets: &mut HashMap<String, (f64, Instant)>, now: Instant) {
        buckets.retain(|_, (tokens, at)| {
            *tokens + now.duration_since(*at).as_secs_f64() * self.per_second < self.burst
        });
        if buckets.len() >= self.max_buckets {
            let idlest = buckets
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone());
            if let Some(k) = idlest {
                buckets.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_exactly() {
        let key = |s: &str| crate::config::sha256(s.as_bytes());
        assert!(keys_equal(&key("secret-key"), &key("secret-key")));
        assert!(!keys_equal(&key("secret-key"), &key("secret-kez")));
        assert!(!keys_equal(&key("secret-key"), &key("secret-key ")));
        assert!(!keys_equal(&key(""), &key("x")));
    }

    #[test]
    fn a_full_table_never_resets_a_limited_client() {
        let mut limiter = RateLimiter::new(1, 2);
        limiter.max_buckets = 3;
        // A client empties its bucket and keeps asking while new identities fill the table.
        assert!(limiter.check("busy").is_ok());
        assert!(limiter.check("busy").is_ok());
        for i in 0..10 {
            assert!(
                limiter.check("busy").is_err(),
                "new identities ({i} so far) must not refill a limited bucket"
            );
            let _ = limiter.check(&format!("rotating-{i}"));
            assert!(limiter.buckets.lock().len() <= 3);
        }
    }
}
