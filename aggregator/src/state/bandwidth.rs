//! The state owner's part in bandwidth tests: starting the tests the
//! scheduler picks, and taking in their results (checked first: an
//! impossible result counts as a failed test). The flows of a concurrent
//! test are gathered until all are in, and stored together: never as
//! pairwise figures, which are one flow alone.

use std::time::Instant;

use netaware_model::validate;
use netaware_proto::v1::aggregator_message::Msg as AggMsg;
use netaware_proto::v1::{BandwidthGrant, BandwidthResult, BandwidthTest};
use tracing::{debug, info, warn};

use super::{Owner, SessionId, ms};
use netaware_common::now_unix_us;

/// A concurrent test under way: its flows' results as they come in.
#[derive(Debug)]
pub(super) struct RingRun {
    /// Ring order: member i sends to member i + 1.
    members: Vec<String>,
    /// Mbit/s of each member's flow, once its receiver reported.
    flow_mbps: Vec<Option<f64>>,
    started_unix_us: u64,
    /// Past this the test is over, reported or not.
    deadline: Instant,
}

impl Owner {
    /// Start the bandwidth tests the scheduler picks now.
    pub(super) fn schedule_bandwidth(&mut self, now: Instant) {
        for token in self.bandwidth.expire(now) {
            self.metrics.bandwidth_test("expired");
            warn!(
                token,
                "bandwidth test ended without both reports; its bytes stay reserved"
            );
        }
        // A concurrent test with a flow that never reported is lost whole.
        self.rings.retain(|_, r| now < r.deadline);
        let nodes: Vec<String> = self
            .sessions
            .values()
            .map(|s| s.node.clone())
            .filter(|n| {
                self.matrix
                    .hello(n)
                    .is_some_and(|h| h.bandwidth_port != 0 && !h.probe_addresses.is_empty())
            })
            .collect();
        let cfg = *self.bandwidth.config();
        for a in self.bandwidth.next(&nodes, now, rand::random) {
            let Some(h) = self.matrix.hello(&a.sender) else {
                continue;
            };
            let (address, port) = (
                h.probe_addresses.first().cloned().unwrap_or_default(),
                h.bandwidth_port,
            );
            info!(sender = %a.sender, receiver = %a.receiver, token = a.token, ring = ?a.ring, "bandwidth test scheduled");
            let start = now_unix_us();
            if let Some(ring) = a.ring {
                let run = self.rings.entry(ring).or_insert_with(|| RingRun {
                    members: Vec::new(),
                    flow_mbps: Vec::new(),
                    started_unix_us: start,
                    deadline: now + cfg.deadline_after(),
                });
                // The scheduler hands out a ring's flows in ring order.
                run.members.push(a.sender.clone());
                run.flow_mbps.push(None);
            }
            self.test_periods.prune(start);
            self.test_periods.add(
                a.token,
                &a.sender,
                &a.receiver,
                start,
                start.saturating_add(ms(cfg.deadline_after()) * 1000),
            );
            let grant = AggMsg::BandwidthGrant(BandwidthGrant {
                token: a.token,
                peer: a.receiver.clone(),
                streams: cfg.streams,
                max_bytes: a.max_bytes,
                budget_ms: ms(cfg.sender_budget()),
            });
            let test = AggMsg::BandwidthTest(BandwidthTest {
                token: a.token,
                peer: a.sender.clone(),
                address,
                port,
                streams: cfg.streams,
                omit_ms: ms(cfg.omit),
                duration_ms: ms(cfg.duration),
                max_bytes: a.max_bytes,
            });
            self.push_to_node(&a.sender, grant);
            self.push_to_node(&a.receiver, test);
        }
    }

    pub(super) fn bandwidth_result(
        &mut self,
        session: SessionId,
        mut r: BandwidthResult,
        now: Instant,
    ) {
        let Some(node) = self.sessions.get(&session).map(|s| s.node.clone()) else {
            return;
        };
        if r.error.is_empty()
            && let Err(refusal) = validate::bandwidth_result(&r)
        {
            self.metrics.refused("bandwidth_result");
            self.refusals.warn(&node, "bandwidth_result", &refusal);
            r.error = format!("refused by the aggregator: {refusal}");
        }
        let Some(done) = self.bandwidth.result(r.token, &node, r.error.is_empty()) else {
            debug!(%node, token = r.token, "bandwidth result for no running test (late or foreign)");
            return;
        };
        self.test_ended(r.token, now);
        if !r.error.is_empty() {
            warn!(sender = %done.sender, receiver = %done.receiver, error = %r.error, "bandwidth test failed");
            self.metrics.bandwidth_test("failed");
            if let Some(ring) = done.ring
                && self.rings.remove(&ring).is_some()
            {
                warn!(sender = %done.sender, "concurrent test lost: one of its flows failed");
            }
            return;
        }
        self.metrics.bandwidth_test("ok");
        if let Some(ring) = done.ring {
            self.ring_flow(ring, &done.sender, r.mbps);
            return;
        }
        info!(
            sender = %done.sender,
            receiver = %done.receiver,
            mbps = format!("{:.1}", r.mbps),
            capped = r.byte_capped,
            "bandwidth measured"
        );
        self.matrix.apply_bandwidth(
            &done.sender,
            &done.receiver,
            r.mbps,
            r.stream_mbps,
            r.started_unix_us,
        );
    }

    /// One flow of concurrent test `ring` measured `mbps`; once every flow
    /// is in, the test is stored.
    fn ring_flow(&mut self, ring: u64, sender: &str, mbps: f64) {
        let Some(run) = self.rings.get_mut(&ring) else {
            return;
        };
        if let Some(i) = run.members.iter().position(|m| m == sender) {
            run.flow_mbps[i] = Some(mbps);
        }
        if run.flow_mbps.iter().any(Option::is_none) {
            return;
        }
        let Some(run) = self.rings.remove(&ring) else {
            return;
        };
        let flows: Vec<f64> = run.flow_mbps.into_iter().flatten().collect();
        info!(
            members = %run.members.join(" "),
            flow_mbps = ?flows.iter().map(|m| format!("{m:.1}")).collect::<Vec<_>>(),
            "concurrent test measured"
        );
        self.matrix
            .apply_concurrent(run.members, flows, run.started_unix_us);
    }

    /// Once both reports of a test are in, its disturbance period ends now
    /// and the next tests can start.
    pub(super) fn test_ended(&mut self, token: u64, now: Instant) {
        if !self.bandwidth.is_running(token) {
            self.test_periods.end(token, now_unix_us());
            self.schedule_bandwidth(now);
        }
    }
}
