//! Logging what is refused without letting a peer flood the log: one line
//! per source and kind a minute; every refusal is still counted in
//! `netaware_refused_total`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use netaware_model::validate::shown;
use tracing::warn;

/// At most one log line per source and kind this often.
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(60);
/// Sources remembered; past this the memory is cleared (a flood of new
/// sources then logs once each, which the rate of new sources bounds).
const MAX_SOURCES: usize = 1024;

#[derive(Debug, Default)]
pub(crate) struct RefusalLog {
    last: HashMap<(String, &'static str), Instant>,
}

impl RefusalLog {
    /// Whether a refusal from `source` of `kind` at `now` gets a log line.
    pub(crate) fn should_log(&mut self, source: &str, kind: &'static str, now: Instant) -> bool {
        let key = (source.to_string(), kind);
        if self
            .last
            .get(&key)
            .is_some_and(|t| now.saturating_duration_since(*t) < LOG_EVERY)
        {
            return false;
        }
        if self.last.len() >= MAX_SOURCES {
            self.last.clear();
        }
        self.last.insert(key, now);
        true
    }

    /// Log `refusal` unless this source and kind were logged within the minute.
    pub(crate) fn warn(
        &mut self,
        source: &str,
        kind: &'static str,
        refusal: &dyn std::fmt::Display,
    ) {
        if self.should_log(source, kind, Instant::now()) {
            warn!(
                source = %shown(source),
                kind,
                %refusal,
                "refused a message from an agent (further ones from it are counted, logged at most once a minute)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_source_and_kind_a_minute() {
        let mut log = RefusalLog::default();
        let t0 = Instant::now();
        assert!(log.should_log("10.0.0.1", "window", t0));
        assert!(!log.should_log("10.0.0.1", "window", t0 + Duration::from_secs(59)));
        // Another kind, another source: their own line.
        assert!(log.should_log("10.0.0.1", "hello", t0));
        assert!(log.should_log("10.0.0.2", "window", t0));
        assert!(log.should_log("10.0.0.1", "window", t0 + LOG_EVERY));
    }

    #[test]
    fn memory_is_bounded() {
        let mut log = RefusalLog::default();
        let t0 = Instant::now();
        for i in 0..MAX_SOURCES * 3 {
            log.should_log(&format!("10.0.{}.{}", i / 256, i % 256), "hello", t0);
            assert!(log.last.len() <= MAX_SOURCES);
        }
    }
}
