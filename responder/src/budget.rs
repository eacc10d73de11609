//! The signing budget: a token bucket that bounds how many OCSP responses are
//! signed on the request path for answers that cannot be pre-signed (issue 8,
//! finding 9).
//!
//! The responder signs without limit only what it can pre-sign and serve again:
//! one CertID of a certificate it knows, without nonce, in canonical encoding.
//! Everything else that misses the cache — an unknown serial, a nonce, several
//! CertIDs in one request, a non-minimal serial encoding — would let a client
//! make it sign per request (~0.4 ms of CPU each with RSA-2048), so each such
//! signature takes a token. Tokens refill at [`SignBudget::rate`] per second up
//! to [`SignBudget::burst`]; without one the caller answers without signing
//! (`docs/responder.md`, "Signing budget").

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// A token bucket; cheap enough for the request path (one short lock).
#[derive(Debug)]
pub struct SignBudget {
    rate: f64,
    burst: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl SignBudget {
    /// A full bucket of `burst` tokens refilled at `rate` per second. A rate or
    /// burst of 0 (or less, or not a number) never grants a token.
    pub fn new(rate: f64, burst: u32) -> Self {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            0.0
        };
        let burst = f64::from(burst);
        SignBudget {
            rate,
            burst,
            state: Mutex::new(Bucket {
                tokens: burst,
                last: Instant::now(),
            }),
        }
    }

    /// Tokens per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Most tokens held.
    pub fn burst(&self) -> f64 {
        self.burst
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.last = now;
    }

    /// Take one token at `now`, if there is one.
    pub fn try_take(&self, now: Instant) -> bool {
        let mut b = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.refill(&mut b, now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Tokens available at `now` (for the gauge).
    pub fn available(&self, now: Instant) -> f64 {
        let mut b = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.refill(&mut b, now);
        b.tokens
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use std::time::Duration;

    #[test]
    fn bounded_and_refills() {
        let b = SignBudget::new(10.0, 3);
        let t0 = Instant::now();
        assert!((0..3).all(|_| b.try_take(t0)));
        assert!(!b.try_take(t0), "burst spent");
        assert!(!b.try_take(t0 + Duration::from_millis(50)), "half a token");
        assert!(b.try_take(t0 + Duration::from_millis(110)), "refilled");
        assert!(!b.try_take(t0 + Duration::from_millis(110)));
        // Never more than the burst, however long the pause.
        let later = t0 + Duration::from_secs(3600);
        assert!((b.available(later) - 3.0).abs() < 1e-9);
        assert!((0..3).all(|_| b.try_take(later)));
        assert!(!b.try_take(later));
        let never = SignBudget::new(0.0, 0);
        assert!(!never.try_take(later));
        assert!(!SignBudget::new(f64::NAN, 0).try_take(later));
    }
}
