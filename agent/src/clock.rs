//! The agent's clock: a monotonic clock anchored once to the wall clock.
//!
//! All measurement maths uses monotonic durations since [`Clock::origin`]
//! (`now: Duration`), so a wall-clock step (NTP) can never produce a negative
//! or inflated RTT. Wall-clock instants for the wire (`_unix_us`) and for
//! STAMP's NTP timestamps are derived as `anchor + monotonic elapsed`, which
//! keeps differences between two of them exact.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Monotonic clock with a wall-clock anchor.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
    origin_unix: Duration,
}

impl Clock {
    /// Anchor a new clock at the current instant.
    pub fn new() -> Self {
        let origin = Instant::now();
        // A wall clock before 1970 only happens on a broken machine; the
        // monotonic maths is unaffected, only the reported instants shift.
        let origin_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            origin,
            origin_unix,
        }
    }

    /// A clock anchored at explicit values (tests).
    pub fn with_anchor(origin: Instant, origin_unix: Duration) -> Self {
        Self {
            origin,
            origin_unix,
        }
    }

    /// Monotonic time since the origin.
    pub fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// Monotonic time of an `Instant` taken elsewhere (e.g. by a socket task).
    pub fn since_origin(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.origin)
    }

    /// Wall-clock time (since the Unix epoch) of a monotonic instant.
    pub fn to_unix(&self, mono: Duration) -> Duration {
        self.origin_unix + mono
    }

    /// Microseconds since the Unix epoch of a monotonic instant.
    pub fn unix_us(&self, mono: Duration) -> u64 {
        u64::try_from(self.to_unix(mono).as_micros()).unwrap_or(u64::MAX)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}
