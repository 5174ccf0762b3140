//! Timed topology events: when each is due, and applying one to the
//! running emulator and `tc`.

use std::time::Duration;

use tokio::time::Instant;
use tracing::info;

use super::Lab;
use crate::error::Result;
use crate::report::AppliedEvent;
use crate::topology::{Event, Topology};

/// Topology events in time order, relative to `start` (when measuring
/// began). Pure bookkeeping: the caller sleeps until [`due`](Self::due) and
/// then takes the event with [`take`](Self::take).
#[derive(Debug)]
pub(super) struct EventSchedule<'a> {
    events: &'a [Event],
    start: Instant,
    next: usize,
}

impl<'a> EventSchedule<'a> {
    pub fn new(events: &'a [Event], start: Instant) -> Self {
        Self {
            events,
            start,
            next: 0,
        }
    }

    /// When the next event is due; `None` once every event was taken.
    pub fn due(&self) -> Option<Instant> {
        self.events
            .get(self.next)
            .map(|e| self.start + Duration::from_secs_f64(e.at_s))
    }

    /// The next event, if it is due at `now`.
    pub fn take(&mut self, now: Instant) -> Option<&'a Event> {
        let events = self.events;
        let e = events.get(self.next)?;
        if now < self.start + Duration::from_secs_f64(e.at_s) {
            return None;
        }
        self.next += 1;
        Some(e)
    }
}

/// Sleep until the schedule's next event; never resolves once none is left
/// (so a `select!` branch on it simply never fires).
pub(super) async fn next_due(schedule: &EventSchedule<'_>) {
    match schedule.due() {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Apply one event: emulator parameters at once, bandwidth caps via tc.
/// `applied_unix_us` is when it took effect, for the report.
pub(super) fn apply(
    lab: &Lab,
    topo: &Topology,
    ev: &Event,
    applied_unix_us: u64,
) -> Result<AppliedEvent> {
    for (src, dst, p) in &ev.changes {
        if let Some(e) = lab.emulator.as_ref() {
            e.set_link(*src, *dst, *p);
        }
        if let Some(bw) = p.bandwidth_mbps
            && topo.link(*src, *dst).bandwidth_mbps.is_some()
        {
            lab.network.set_bandwidth(topo, *src, *dst, bw)?;
        }
    }
    info!(
        at_s = ev.at_s,
        links = ev.changes.len(),
        "topology event applied"
    );
    Ok(AppliedEvent {
        at_s: ev.at_s,
        applied_unix_us,
        links: ev.changes.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(at_s: f64) -> Event {
        Event {
            at_s,
            changes: Vec::new(),
        }
    }

    #[test]
    fn events_come_in_order_each_once_and_not_before_their_time() {
        let events = [event(0.0), event(1.5), event(1.5), event(4.0)];
        let start = Instant::now();
        let mut s = EventSchedule::new(&events, start);
        let at = |secs: f64| start + Duration::from_secs_f64(secs);

        assert_eq!(s.due(), Some(at(0.0)));
        assert_eq!(s.take(at(0.0)).map(|e| e.at_s), Some(0.0));
        // Not yet due: nothing is taken, and the due time stays.
        assert!(s.take(at(1.0)).is_none());
        assert_eq!(s.due(), Some(at(1.5)));
        // Two events at the same time both fire, one per call.
        assert_eq!(s.take(at(1.5)).map(|e| e.at_s), Some(1.5));
        assert_eq!(s.take(at(1.5)).map(|e| e.at_s), Some(1.5));
        // Late is fine: an overdue event is taken at once.
        assert_eq!(s.take(at(9.0)).map(|e| e.at_s), Some(4.0));
        assert_eq!(s.due(), None);
        assert!(s.take(at(99.0)).is_none());
    }

    #[test]
    fn a_topology_without_events_has_nothing_due() {
        let s = EventSchedule::new(&[], Instant::now());
        assert_eq!(s.due(), None);
    }
}
