//! The state owner's part in bandwidth tests: starting the tests the
//! scheduler picks, and taking in their results (checked first: an
//! impossible result counts as a failed test).

use std::time::Instant;

use netaware_model::validate;
use netaware_proto::v1::aggregator_message::Msg as AggMsg;
use netaware_proto::v1::{BandwidthGrant, BandwidthResult, BandwidthTest};
use tracing::{debug, info, warn};

use super::{Owner, SessionId, ms};
use netaware_common::now_unix_us;

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
            info!(sender = %a.sender, receiver = %a.receiver, token = a.token, "bandwidth test scheduled");
            let start = now_unix_us();
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
            return;
        }
        self.metrics.bandwidth_test("ok");
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

    /// Once both reports of a test are in, its disturbance period ends now
    /// and the next tests can start.
    pub(super) fn test_ended(&mut self, token: u64, now: Instant) {
        if !self.bandwidth.is_running(token) {
            self.test_periods.end(token, now_unix_us());
            self.schedule_bandwidth(now);
        }
    }
}
