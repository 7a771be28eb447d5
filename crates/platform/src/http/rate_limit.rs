//! Per-caller rate limiting: a token bucket per API key (governor's keyed limiter, GCRA), 429 with Retry-After
//! when a caller's bucket is empty. With authentication off every request is the one anonymous caller.

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::auth::Caller;
use super::HttpError;
use crate::EnvReader;

/// How fast one caller may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// `HERALD_RATE_LIMIT_PER_SEC`: sustained requests per second per API key; 0 turns the limit off. Default 500.
    pub per_second: u32,
    /// `HERALD_RATE_LIMIT_BURST`: requests a key may send at once after being idle. Default twice the rate.
    pub burst: u32,
}

impl RateLimitConfig {
    pub const OFF: Self = Self {
        per_second: 0,
        burst: 0,
    };

    pub fn read(env: &mut EnvReader) -> Self {
        let per_second = env.parse("HERALD_RATE_LIMIT_PER_SEC", 500u32);
        let burst = env.parse("HERALD_RATE_LIMIT_BURST", per_second.saturating_mul(2));
        if per_second > 0 && burst == 0 {
            env.problem("HERALD_RATE_LIMIT_BURST", "must be greater than 0");
        }
        Self { per_second, burst }
    }

    /// The limiter, or `None` when the limit is off.
    pub fn limiter(&self) -> Option<Limiter> {
        let per_second = NonZeroU32::new(self.per_second)?;
        let burst = NonZeroU32::new(self.burst).unwrap_or(per_second);
        Some(Limiter(Arc::new(RateLimiter::keyed(
            Quota::per_second(per_second).allow_burst(burst),
        ))))
    }
}

/// The buckets of every caller. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Limiter(Arc<DefaultKeyedRateLimiter<String>>);

impl Limiter {
    /// Takes a token from `caller`'s bucket, or says how many seconds until one is back (at least 1).
    pub fn check(&self, caller: &str) -> Result<(), u64> {
        self.0.check_key(&caller.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

/// Middleware: 429 with Retry-After when the caller (set by the auth middleware, which must run first) has no
/// token left.
pub async fn limit(State(limiter): State<Limiter>, request: Request, next: Next) -> Response {
    let caller = request
        .extensions()
        .get::<Caller>()
        .map_or("anonymous", |c| c.0.as_str());
    if let Err(retry_after_secs) = limiter.check(caller) {
        tracing::info!(caller, retry_after_secs, "rate limited");
        metrics::counter!("herald_http_rate_limited_total", "caller" => caller.to_owned())
            .increment(1);
        return HttpError::RateLimited {
            retry_after_secs: retry_after_secs.max(1),
        }
        .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_empties_per_caller_and_says_when_to_come_back() {
        let limiter = RateLimitConfig {
            per_second: 1,
            burst: 3,
        }
        .limiter()
        .expect("on");
        for _ in 0..3 {
            assert_eq!(limiter.check("a"), Ok(()));
        }
        assert_eq!(limiter.check("a"), Err(1));
        assert_eq!(
            limiter.check("b"),
            Ok(()),
            "another caller has its own bucket"
        );
        assert!(RateLimitConfig::OFF.limiter().is_none());
    }
}
