//! The state owner's probe plans and the node statuses GetNode reads:
//! who probes whom (`netaware_model::plan`), replanned at once while the
//! cluster is a full mesh and at most once a tick beyond, and only the
//! sessions whose targets changed get a new plan.

use std::sync::Arc;
use std::time::Instant;

use netaware_model::plan::PlanIndex;
use netaware_proto::v1::AggregatorMessage;
use netaware_proto::v1::aggregator_message::Msg as AggMsg;

use super::{Owner, SessionId};

impl Owner {
    /// The set of connected nodes changed: replan everyone and publish
    /// the statuses now while the cluster is a full mesh (cheap, and what
    /// small clusters expect), else on the next tick.
    pub(super) fn peers_changed(&mut self) {
        if self.matrix.connected().count() <= self.config.plan.max_targets + 1 {
            self.replan();
            self.publish_statuses();
        } else {
            self.replan_due = true;
        }
    }

    /// Hand every node's status to GetNode, if anything changed since the
    /// last time (at most once a tick on a large cluster: O(n) each).
    pub(super) fn publish_statuses(&mut self) {
        if self.statuses_at == self.changes {
            return;
        }
        self.statuses_at = self.changes;
        self.statuses_tx
            .send_replace(Arc::new(self.matrix.node_statuses().collect()));
    }

    /// Replan when something asked for it, or when a new epoch rotates the
    /// representatives and samples.
    pub(super) fn replan_if_due(&mut self, now: Instant) {
        let epoch = self
            .config
            .plan
            .epoch(now.saturating_duration_since(self.started));
        if epoch != self.epoch {
            self.epoch = epoch;
            self.replan_due = true;
        }
        if self.replan_due {
            self.replan();
        }
    }

    /// Send every session whose targets changed its new plan.
    pub(super) fn replan(&mut self) {
        self.replan_due = false;
        let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        self.plan_sessions(&ids);
    }

    /// Work out the plans of `ids` and send those that changed (or were
    /// never sent). One index of the connected nodes and their groups
    /// serves them all.
    pub(super) fn plan_sessions(&mut self, ids: &[SessionId]) {
        let names: Vec<String> = self.matrix.connected().map(String::from).collect();
        let assignment = self.recomputer.assignment().clone();
        let index = PlanIndex::new(&names, &assignment);
        let mut changed = Vec::new();
        for &id in ids {
            let Some(s) = self.sessions.get(&id) else {
                continue;
            };
            let targets = index.targets(&s.node, self.config.plan.max_targets, self.epoch);
            if s.plan.as_ref().is_some_and(|p| p.iter().eq(targets.iter())) {
                continue;
            }
            changed.push((id, s.node.clone(), targets));
        }
        if changed.is_empty() {
            return;
        }
        self.plan_version += 1;
        for (id, node, targets) in changed {
            let Some(plan) =
                self.matrix
                    .plan_with(&node, &targets, self.plan_version, self.config.timing)
            else {
                continue;
            };
            if let Some(s) = self.sessions.get_mut(&id) {
                s.plan = Some(targets.iter().map(|t| t.to_string()).collect());
            }
            self.push(
                id,
                AggregatorMessage {
                    msg: Some(AggMsg::Plan(plan)),
                },
            );
        }
    }
}
