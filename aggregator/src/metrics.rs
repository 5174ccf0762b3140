//! Prometheus metrics of the aggregator, served as text on `/metrics`.
//!
//! The Node label writer's counters, agent sessions, stored and disturbed
//! windows, bandwidth tests and leader state. The endpoint itself (with
//! `/healthz` and `/readyz`) is `netaware_common::observe`.

use std::net::SocketAddr;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tracing::info;

use crate::error::{Error, Result};

/// Counters of the Node label writer (cheap to clone: they share state).
#[derive(Debug, Clone, Default)]
pub struct WriterMetrics {
    /// Node patches sent and accepted.
    pub writes: Counter,
    /// Node reads or patches that failed.
    pub errors: Counter,
    /// Writes skipped because the node already carries the desired keys.
    pub skipped: Counter,
}

/// Counters of the state owner (cheap to clone: they share state).
#[derive(Debug, Clone, Default)]
pub struct StateMetrics {
    /// Agents with an open session.
    pub agents_connected: Gauge,
    /// Report windows stored.
    pub windows: Counter,
    /// Report windows left out of the smoothed figures (our own tests).
    pub windows_disturbed: Counter,
    /// Bandwidth tests finished, by outcome.
    pub bandwidth_tests: Family<OutcomeLabels, Counter>,
    /// Messages from agents refused as invalid, by kind.
    pub refused: Family<RefusedLabels, Counter>,
}

/// Counters of agent authentication (cheap to clone: they share state).
#[derive(Debug, Clone, Default)]
pub struct AuthMetrics {
    /// Sessions refused before they started, by reason.
    pub refused: Family<ReasonLabels, Counter>,
    /// TokenReviews sent to the API server (cache misses).
    pub reviews: Counter,
    /// Queries refused, by reason.
    pub queries_refused: Family<ReasonLabels, Counter>,
    /// TokenReview + SubjectAccessReview pairs sent for queries.
    pub query_reviews: Counter,
}

impl AuthMetrics {
    /// Count one session refused for `reason`.
    pub fn refused(&self, reason: &str) {
        self.refused
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }

    /// Count one query refused for `reason`.
    pub fn query_refused(&self, reason: &str) {
        self.queries_refused
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }
}

/// Labels of a refused session.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// `no_token`, `invalid_token`, `wrong_audience`, `node_mismatch`, ...
    /// (`netaware_aggregator::auth::Denied::reason`).
    pub reason: String,
}

/// Labels of a refused message.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// `hello`, `window` or `bandwidth_result`.
    pub kind: String,
}

/// Labels of a bandwidth-test outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `ok`, `failed` or `expired` (no reports before the deadline).
    pub outcome: String,
}

impl StateMetrics {
    /// Count one refused message of `kind`.
    pub fn refused(&self, kind: &str) {
        self.refused
            .get_or_create(&RefusedLabels { kind: kind.into() })
            .inc();
    }

    pub fn bandwidth_test(&self, outcome: &str) {
        self.bandwidth_tests
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
    }
}

/// Everything `/metrics` shows.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub writer: WriterMetrics,
    pub state: StateMetrics,
    pub auth: AuthMetrics,
    /// 1 while this replica writes Nodes (the leader, or the only replica).
    pub leader: Gauge,
}

impl Metrics {
    /// The metrics, registered in a new registry.
    pub fn new() -> (Self, Registry) {
        let m = Self {
            writer: WriterMetrics::default(),
            state: StateMetrics::default(),
            auth: AuthMetrics::default(),
            leader: Gauge::default(),
        };
        // Every series of a closed set of labels starts at 0, so a
        // dashboard's rate() reads 0 before the first event, not "no data".
        for kind in ["hello", "window", "bandwidth_result"] {
            let _ = m
                .state
                .refused
                .get_or_create(&RefusedLabels { kind: kind.into() });
        }
        for outcome in ["ok", "failed", "expired"] {
            let _ = m.state.bandwidth_tests.get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            });
        }
        for reason in crate::auth::Denied::reasons() {
            let labels = ReasonLabels {
                reason: reason.into(),
            };
            let _ = m.auth.refused.get_or_create(&labels);
            let _ = m.auth.queries_refused.get_or_create(&labels);
        }
        let mut registry = Registry::default();
        // Counter names get `_total` appended in the exposition.
        registry.register(
            "netaware_node_writes",
            "Node label patches accepted by the API server",
            m.writer.writes.clone(),
        );
        registry.register(
            "netaware_node_write_errors",
            "Node reads or label patches that failed",
            m.writer.errors.clone(),
        );
        registry.register(
            "netaware_node_writes_skipped",
            "Node label writes skipped because nothing changed",
            m.writer.skipped.clone(),
        );
        registry.register(
            "netaware_agents_connected",
            "Agents with an open session",
            m.state.agents_connected.clone(),
        );
        registry.register(
            "netaware_report_windows_stored",
            "Report windows stored in the matrix",
            m.state.windows.clone(),
        );
        registry.register(
            "netaware_report_windows_disturbed",
            "Report windows left out of the smoothed figures because they overlapped a bandwidth test",
            m.state.windows_disturbed.clone(),
        );
        registry.register(
            "netaware_bandwidth_tests",
            "Bandwidth tests finished, by outcome",
            m.state.bandwidth_tests.clone(),
        );
        registry.register(
            "netaware_refused",
            "Messages from agents refused as invalid (hello, window, bandwidth_result); the log says why",
            m.state.refused.clone(),
        );
        registry.register(
            "netaware_agent_sessions_refused",
            "Agent sessions refused before they started, by reason (no_token, invalid_token, wrong_audience, wrong_service_account, not_pod_bound, node_mismatch, foreign_address, ...); the log says more",
            m.auth.refused.clone(),
        );
        registry.register(
            "netaware_token_reviews",
            "TokenReviews sent to the API server for agent tokens (answers are cached until the token expires)",
            m.auth.reviews.clone(),
        );
        registry.register(
            "netaware_queries_refused",
            "Queries refused before they ran, by reason (no_token, invalid_token, forbidden, review_unavailable)",
            m.auth.queries_refused.clone(),
        );
        registry.register(
            "netaware_query_reviews",
            "TokenReview and SubjectAccessReview pairs sent for queries (answers are reused for 30 s)",
            m.auth.query_reviews.clone(),
        );
        registry.register(
            "netaware_leader",
            "1 while this replica writes Node labels",
            m.leader.clone(),
        );
        (m, registry)
    }
}

/// Bind the metrics endpoint (at start-up, so a port conflict is an error).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })?;
    info!(addr = %listener.local_addr().unwrap_or(addr), "metrics and health on /metrics, /healthz, /readyz");
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_appear_with_help_type_and_total() {
        let (m, registry) = Metrics::new();
        m.writer.writes.inc_by(3);
        m.writer.skipped.inc();
        m.state.bandwidth_test("ok");
        m.leader.set(1);
        let text = netaware_common::observe::encode(&registry);
        assert!(
            text.contains(r#"netaware_bandwidth_tests_total{outcome="ok"} 1"#),
            "{text}"
        );
        assert!(text.contains("netaware_leader 1"), "{text}");
        assert!(
            text.contains("# TYPE netaware_node_writes counter"),
            "{text}"
        );
        assert!(text.contains("netaware_node_writes_total 3"), "{text}");
        assert!(
            text.contains("netaware_node_writes_skipped_total 1"),
            "{text}"
        );
        assert!(
            text.contains("netaware_node_write_errors_total 0"),
            "{text}"
        );
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
    }

    #[test]
    fn every_closed_label_set_starts_at_zero() {
        let (_, registry) = Metrics::new();
        let text = netaware_common::observe::encode(&registry);
        for series in [
            r#"netaware_refused_total{kind="bandwidth_result"} 0"#,
            r#"netaware_bandwidth_tests_total{outcome="expired"} 0"#,
            r#"netaware_agent_sessions_refused_total{reason="foreign_address"} 0"#,
            r#"netaware_queries_refused_total{reason="forbidden"} 0"#,
        ] {
            assert!(text.contains(series), "{series} missing:\n{text}");
        }
        let reasons = crate::auth::Denied::reasons();
        let distinct: std::collections::BTreeSet<_> = reasons.iter().collect();
        assert_eq!(distinct.len(), reasons.len(), "{reasons:?}");
    }
}
