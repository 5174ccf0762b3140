//! Per-peer, per-method probe accounting: which probes were sent in which
//! report window, which were answered, and the statistics of each window.
//!
//! Everything here is pure: the caller passes the current time (`now`, a
//! monotonic [`Duration`] since the agent's clock origin) into every call, so
//! the maths is tested with synthetic packet traces and no sleeping.

use std::collections::VecDeque;
use std::time::Duration;

use hdrhistogram::Histogram;
use netaware_proto::histogram::{self, encode_histogram, new_histogram};

use crate::error::{Error, Result};

/// RFC 3550 interarrival jitter of one window, applied to its round-trip
/// times: the mean |D| over consecutive answers of the window.
///
/// For consecutive answered probes i, j the RFC's D(i,j) = (Rj − Ri) − (Sj − Si)
/// is the difference of their transit times; with round trips the transit time
/// is the RTT itself, so D = RTTj − RTTi and no clock synchronisation is needed.
/// The RFC's running estimate (J += (|D| − J) / 16) follows E|D|; a window
/// takes the mean itself, over its own answers only, so a window after a
/// disturbed one (a bandwidth test queueing the probes by milliseconds)
/// carries none of it: the running estimate kept a tenth of it 36 probes
/// later and the next clean windows read jitter the link does not have.
#[derive(Debug, Clone, Default)]
struct Jitter {
    sum_abs_d_ns: f64,
    pairs: u64,
    last_rtt_ns: Option<u64>,
}

impl Jitter {
    /// Feed the RTT of the window's next answer, in arrival order.
    fn update(&mut self, rtt_ns: u64) {
        if let Some(last) = self.last_rtt_ns {
            self.sum_abs_d_ns += (rtt_ns as f64 - last as f64).abs();
            self.pairs += 1;
        }
        self.last_rtt_ns = Some(rtt_ns);
    }

    /// The mean |D| in nanoseconds; `None` before two answers.
    fn value_ns(&self) -> Option<f64> {
        (self.pairs > 0).then(|| self.sum_abs_d_ns / self.pairs as f64)
    }
}

/// Finished statistics of one report window (probes *sent* in `[start, end)`).
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSummary {
    /// Window start, monotonic time since the clock origin.
    pub start: Duration,
    /// Window end (exclusive).
    pub end: Duration,
    pub sent: u64,
    pub received: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub rtt_min_ns: u64,
    pub rtt_mean_ns: u64,
    pub rtt_p50_ns: u64,
    pub rtt_p90_ns: u64,
    pub rtt_p99_ns: u64,
    pub rtt_max_ns: u64,
    /// RFC 3550 jitter of the window's answers ([`Jitter`]); a window with
    /// fewer than two answers repeats the previous window's figure.
    pub jitter_ns: u64,
    /// The window's RTT histogram, HdrHistogram V2 encoded.
    pub histogram: Vec<u8>,
}

impl WindowSummary {
    /// Lost probes: sent but not answered within the loss timeout.
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.received)
    }
}

/// One window under construction. Sequence numbers are assigned in send order,
/// so a window owns the contiguous range `first_seq .. first_seq + sent`.
#[derive(Debug)]
struct OpenWindow {
    start: Duration,
    end: Duration,
    first_seq: u64,
    /// Send time of each probe, indexed by `seq - first_seq`.
    sent_at: Vec<Duration>,
    /// Whether each probe has been answered, indexed like `sent_at`.
    answered: Vec<bool>,
    received: u64,
    duplicates: u64,
    reordered: u64,
    /// u32 counters: a window holds far fewer than 4 billion probes.
    hist: Histogram<u32>,
    rtt_sum_ns: u128,
    jitter: Jitter,
}

impl OpenWindow {
    fn new(start: Duration, len: Duration, first_seq: u64) -> Result<Self> {
        Ok(Self {
            start,
            end: start + len,
            first_seq,
            sent_at: Vec::new(),
            answered: Vec::new(),
            received: 0,
            duplicates: 0,
            reordered: 0,
            hist: new_histogram()?,
            rtt_sum_ns: 0,
            jitter: Jitter::default(),
        })
    }

    fn index(&self, seq: u64) -> Option<usize> {
        let i = usize::try_from(seq.checked_sub(self.first_seq)?).ok()?;
        (i < self.sent_at.len()).then_some(i)
    }

    /// `jitter_before_ns`: the previous window's figure, for a window too
    /// sparse to have its own.
    fn finish(self, jitter_before_ns: u64) -> Result<WindowSummary> {
        let n = self.hist.len();
        let q = |x: f64| {
            if n == 0 {
                0
            } else {
                self.hist.value_at_quantile(x)
            }
        };
        Ok(WindowSummary {
            start: self.start,
            end: self.end,
            sent: self.sent_at.len() as u64,
            received: self.received,
            duplicates: self.duplicates,
            reordered: self.reordered,
            rtt_min_ns: if n == 0 { 0 } else { self.hist.min() },
            rtt_mean_ns: if n == 0 {
                0
            } else {
                u64::try_from(self.rtt_sum_ns / u128::from(n)).unwrap_or(u64::MAX)
            },
            rtt_p50_ns: q(0.50),
            rtt_p90_ns: q(0.90),
            rtt_p99_ns: q(0.99),
            rtt_max_ns: if n == 0 { 0 } else { self.hist.max() },
            jitter_ns: self
                .jitter
                .value_ns()
                .map_or(jitter_before_ns, |j| j.round() as u64),
            histogram: encode_histogram(&self.hist)?,
        })
    }
}

/// What happened to an answer handed to [`ProbeTracker::on_reply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyOutcome {
    /// First answer to the probe, within the loss timeout: recorded.
    Recorded,
    /// Another copy of an already answered probe.
    Duplicate,
    /// Answer after the loss timeout, or to a probe this tracker never sent
    /// (or whose window is already reported): ignored, the probe counts as lost.
    Late,
}

/// Accounting for one (peer, method) pair.
#[derive(Debug)]
pub struct ProbeTracker {
    window_len: Duration,
    loss_timeout: Duration,
    next_seq: u64,
    /// Oldest first; the last one is the window new probes go into.
    windows: VecDeque<OpenWindow>,
    highest_answered: Option<u64>,
    /// The last finished window's jitter.
    last_jitter_ns: u64,
}

impl ProbeTracker {
    /// `window_len` is the report interval; a probe unanswered after
    /// `loss_timeout` is lost. Windows are aligned to multiples of
    /// `window_len` since the clock origin, so all peers share boundaries.
    pub fn new(window_len: Duration, loss_timeout: Duration) -> Result<Self> {
        if window_len.is_zero() {
            return Err(Error::Config {
                name: "report interval",
                message: "must be greater than zero".into(),
            });
        }
        Ok(Self {
            window_len,
            loss_timeout,
            next_seq: 0,
            windows: VecDeque::new(),
            highest_answered: None,
            last_jitter_ns: 0,
        })
    }

    fn aligned_start(&self, now: Duration) -> Duration {
        let len = self.window_len.as_nanos();
        let start = now.as_nanos() / len * len;
        Duration::from_nanos(u64::try_from(start).unwrap_or(u64::MAX))
    }

    /// Register a probe sent at `now`; returns its sequence number.
    pub fn on_send(&mut self, now: Duration) -> Result<u64> {
        let needs_new = self.windows.back().is_none_or(|w| now >= w.end);
        if needs_new {
            let start = self.aligned_start(now);
            self.windows
                .push_back(OpenWindow::new(start, self.window_len, self.next_seq)?);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(w) = self.windows.back_mut() {
            w.sent_at.push(now);
            w.answered.push(false);
        }
        Ok(seq)
    }

    /// Sequence number the next probe will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// When probe `seq` was sent, if it is still being tracked.
    pub fn sent_at(&self, seq: u64) -> Option<Duration> {
        let w = self.window_of(seq)?;
        w.index(seq).map(|i| w.sent_at[i])
    }

    fn window_of(&self, seq: u64) -> Option<&OpenWindow> {
        self.windows.iter().find(|w| w.index(seq).is_some())
    }

    /// Register an answer to probe `seq` arriving at `now` with round-trip time `rtt`.
    pub fn on_reply(&mut self, seq: u64, now: Duration, rtt: Duration) -> ReplyOutcome {
        let loss_timeout = self.loss_timeout;
        let Some(w) = self.windows.iter_mut().find(|w| w.index(seq).is_some()) else {
            return ReplyOutcome::Late;
        };
        let Some(i) = w.index(seq) else {
            return ReplyOutcome::Late;
        };
        if w.answered[i] {
            w.duplicates += 1;
            return ReplyOutcome::Duplicate;
        }
        if now.saturating_sub(w.sent_at[i]) > loss_timeout {
            return ReplyOutcome::Late;
        }
        w.answered[i] = true;
        w.received += 1;
        let rtt_ns = u64::try_from(rtt.as_nanos())
            .unwrap_or(u64::MAX)
            .clamp(histogram::LOW_NS, histogram::HIGH_NS);
        w.hist.saturating_record(rtt_ns);
        w.rtt_sum_ns += u128::from(rtt_ns);
        match self.highest_answered {
            Some(h) if seq < h => w.reordered += 1,
            _ => self.highest_answered = Some(seq),
        }
        w.jitter.update(rtt_ns);
        ReplyOutcome::Recorded
    }

    /// Finish every window whose probes have all been answered or timed out
    /// by `now` (that is, `end + loss_timeout <= now`), oldest first.
    pub fn poll(&mut self, now: Duration) -> Result<Vec<WindowSummary>> {
        let mut done = Vec::new();
        while let Some(w) = self.windows.front() {
            if w.end + self.loss_timeout > now {
                break;
            }
            if let Some(w) = self.windows.pop_front() {
                let w = w.finish(self.last_jitter_ns)?;
                self.last_jitter_ns = w.jitter_ns;
                done.push(w);
            }
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests;
