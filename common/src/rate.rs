//! A token bucket with the time passed in: the aggregator's Node writes and
//! the agent's STAMP reflector are rate limited with it.

use std::time::Duration;

use tokio::time::Instant;

/// Token bucket: `qps` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    qps: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// A full bucket at `now`.
    pub fn new(qps: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            qps: qps.max(f64::MIN_POSITIVE),
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.qps).min(self.burst);
        self.last = now;
    }

    /// Take a token at `now`, or say how long until one is available.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.qps))
        }
    }

    /// Whether the bucket has refilled completely by `now`: it then says
    /// nothing a new bucket would not (so it can be forgotten).
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10.0, 3, t0);
        for _ in 0..3 {
            assert!(r.try_take(t0).is_ok());
        }
        let wait = r.try_take(t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        assert!(r.try_take(t0 + Duration::from_millis(100)).is_ok());
        assert!(r.try_take(t0 + Duration::from_millis(100)).is_err());
        assert!(!r.is_full(t0 + Duration::from_millis(100)));
        // Idle time refills up to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        assert!(r.is_full(later));
        for _ in 0..3 {
            assert!(r.try_take(later).is_ok());
        }
        assert!(r.try_take(later).is_err());
    }
}
