//! The agent's Prometheus metrics: what it measures per peer (RTT
//! histograms, loss, jitter) and how its reporting goes (windows sent,
//! dropped, buffered; the aggregator session; bandwidth tests).
//!
//! Per-peer series are bounded: at most `max_peers` peers (the first by
//! name) get series, so a 5,000-node cluster does not make every agent
//! export 10,000 histograms; the cap is logged once. A peer's series are
//! removed when it leaves the probe plan.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram as Hdr;
use netaware_proto::ProbeMethod;
use netaware_proto::v1::LinkWindow;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use tracing::warn;

/// Default cap on peers with their own series.
pub const DEFAULT_MAX_PEERS: usize = 100;

/// Labels of a per-peer series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: String,
    pub method: String,
}

/// Labels of a bandwidth-test outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TestLabels {
    /// `sender` or `receiver`.
    pub role: String,
    /// `ok` or `failed`.
    pub outcome: String,
}

/// Labels of a packet the STAMP reflector received.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReflectorLabels {
    /// `answered`, or why not (`source_rate`, `from_reflector_port`, …).
    pub outcome: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

fn rtt_histogram() -> Histogram {
    // 50 µs to ~1.6 s, doubling: data-centre to intercontinental RTTs.
    Histogram::new(exponential_buckets(50e-6, 2.0, 16))
}

/// Session and reporting counters (cheap to clone: shared state).
#[derive(Debug, Clone, Default)]
pub struct SessionMetrics {
    /// Windows sent to the aggregator (including resends).
    pub windows_sent: Counter,
    /// Windows dropped because the buffer was full.
    pub windows_dropped: Counter,
    /// Windows given up: too large for a batch, or never acknowledged.
    pub windows_undeliverable: Counter,
    /// Windows held, waiting to be sent or acknowledged.
    pub windows_buffered: Gauge,
    /// Sessions opened to the aggregator.
    pub sessions: Counter,
    /// 1 while a session is open and has a plan.
    pub connected: Gauge,
}

/// Everything the agent exports.
#[derive(Debug, Clone)]
pub struct AgentMetrics {
    rtt: Family<PeerLabels, Histogram, fn() -> Histogram>,
    loss: Family<PeerLabels, FloatGauge>,
    jitter: Family<PeerLabels, FloatGauge>,
    pub session: SessionMetrics,
    pub bandwidth_tests: Family<TestLabels, Counter>,
    reflector: Family<ReflectorLabels, Counter>,
    max_peers: usize,
    peers: Arc<Mutex<PeerSet>>,
}

#[derive(Debug, Default)]
struct PeerSet {
    /// Peers with series, and the methods they have.
    tracked: BTreeSet<(String, String)>,
    warned: bool,
}

fn method_name(m: i32) -> String {
    ProbeMethod::try_from(m)
        .unwrap_or(ProbeMethod::Unspecified)
        .short_name()
        .to_string()
}

impl AgentMetrics {
    /// Metrics registered in a new registry.
    pub fn new(max_peers: usize) -> (Self, Registry) {
        let m = Self {
            rtt: Family::new_with_constructor(rtt_histogram),
            loss: Family::default(),
            jitter: Family::default(),
            session: SessionMetrics::default(),
            bandwidth_tests: Family::default(),
            reflector: Family::default(),
            max_peers,
            peers: Arc::new(Mutex::new(PeerSet::default())),
        };
        // Both roles and outcomes start at 0, so a dashboard's rate()
        // reads 0 before the first test, not "no data".
        for role in ["sender", "receiver"] {
            for outcome in ["ok", "failed"] {
                let _ = m.bandwidth_tests.get_or_create(&TestLabels {
                    role: role.into(),
                    outcome: outcome.into(),
                });
            }
        }
        let mut r = Registry::default();
        r.register(
            "netaware_probe_rtt_seconds",
            "Round-trip times of answered probes, per peer and method",
            m.rtt.clone(),
        );
        r.register(
            "netaware_probe_loss_ratio",
            "Share of probes lost in the latest report window, per peer and method",
            m.loss.clone(),
        );
        r.register(
            "netaware_probe_jitter_seconds",
            "RFC 3550 interarrival jitter (mean |D|) of the RTTs of the latest window",
            m.jitter.clone(),
        );
        r.register(
            "netaware_report_windows_sent",
            "Report windows sent to the aggregator, resends included",
            m.session.windows_sent.clone(),
        );
        r.register(
            "netaware_report_windows_dropped",
            "Report windows dropped because the buffer was full while the aggregator was unreachable",
            m.session.windows_dropped.clone(),
        );
        r.register(
            "netaware_report_windows_undeliverable",
            "Report windows given up: too large for one batch, or sent on 5 streams that each broke before an acknowledgement",
            m.session.windows_undeliverable.clone(),
        );
        r.register(
            "netaware_report_windows_buffered",
            "Report windows waiting to be sent or acknowledged",
            m.session.windows_buffered.clone(),
        );
        r.register(
            "netaware_aggregator_sessions",
            "Sessions opened to the aggregator",
            m.session.sessions.clone(),
        );
        r.register(
            "netaware_aggregator_connected",
            "1 while a session to the aggregator is open and has a plan",
            m.session.connected.clone(),
        );
        r.register(
            "netaware_bandwidth_tests",
            "Bandwidth tests taken part in, by role and outcome",
            m.bandwidth_tests.clone(),
        );
        r.register(
            "netaware_reflector_packets",
            "Packets the STAMP reflector received: answered, or the reason it did not answer",
            m.reflector.clone(),
        );
        (m, r)
    }

    /// Record a finished window towards `w.peer`.
    pub fn observe(&self, w: &LinkWindow) {
        let labels = PeerLabels {
            peer: w.peer.clone(),
            method: method_name(w.method),
        };
        {
            let Ok(mut set) = self.peers.lock() else {
                return;
            };
            let key = (labels.peer.clone(), labels.method.clone());
            if !set.tracked.contains(&key) {
                let peers: BTreeSet<&String> = set.tracked.iter().map(|(p, _)| p).collect();
                if !peers.contains(&labels.peer) && peers.len() >= self.max_peers {
                    if !set.warned {
                        set.warned = true;
                        warn!(
                            max_peers = self.max_peers,
                            "more peers than --metrics-max-peers: the others get no per-peer metrics"
                        );
                    }
                    return;
                }
                set.tracked.insert(key);
            }
        }
        if w.sent > 0 {
            let lost = w.sent.saturating_sub(w.received) as f64 / w.sent as f64;
            self.loss.get_or_create(&labels).set(lost);
        }
        self.jitter
            .get_or_create(&labels)
            .set(w.jitter_ns as f64 / 1e9);
        if !w.rtt_histogram.is_empty()
            && let Ok(h) = netaware_proto::histogram::decode_histogram(&w.rtt_histogram)
        {
            let h: Hdr<u64> = h;
            let hist = self.rtt.get_or_create(&labels);
            for v in h.iter_recorded() {
                let secs = h.median_equivalent(v.value_iterated_to()) as f64 / 1e9;
                for _ in 0..v.count_at_value() {
                    hist.observe(secs);
                }
            }
        }
    }

    /// Keep series only for `peers` (the current plan): the others left.
    pub fn retain_peers(&self, peers: &BTreeSet<String>) {
        let Ok(mut set) = self.peers.lock() else {
            return;
        };
        let gone: Vec<(String, String)> = set
            .tracked
            .iter()
            .filter(|(p, _)| !peers.contains(p))
            .cloned()
            .collect();
        for (peer, method) in gone {
            let labels = PeerLabels {
                peer: peer.clone(),
                method: method.clone(),
            };
            self.rtt.remove(&labels);
            self.loss.remove(&labels);
            self.jitter.remove(&labels);
            set.tracked.remove(&(peer, method));
        }
    }

    /// Count a bandwidth test this agent took part in.
    /// Count one packet the reflector received, by `outcome`.
    pub fn reflector_packet(&self, outcome: &str) {
        self.reflector
            .get_or_create(&ReflectorLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn bandwidth_test(&self, role: &str, ok: bool) {
        self.bandwidth_tests
            .get_or_create(&TestLabels {
                role: role.into(),
                outcome: if ok { "ok" } else { "failed" }.into(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(peer: &str, rtts_us: &[u64]) -> LinkWindow {
        let mut h = netaware_proto::histogram::new_histogram().unwrap();
        for r in rtts_us {
            h.record(r * 1000).unwrap();
        }
        LinkWindow {
            peer: peer.into(),
            method: ProbeMethod::StampUdp as i32,
            sent: rtts_us.len() as u64 + 1,
            received: rtts_us.len() as u64,
            jitter_ns: 20_000,
            rtt_histogram: netaware_proto::histogram::encode_histogram(&h).unwrap(),
            ..Default::default()
        }
    }

    #[test]
    fn windows_become_histograms_and_gauges_and_leave_with_their_peer() {
        let (m, reg) = AgentMetrics::new(10);
        m.observe(&window("b", &[100, 200, 300]));
        m.observe(&window("c", &[5_000]));
        let text = netaware_common::observe::encode(&reg);
        assert!(
            text.contains(r#"netaware_probe_rtt_seconds_count{peer="b",method="udp"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"netaware_probe_loss_ratio{peer="b",method="udp"} 0.25"#),
            "{text}"
        );
        assert!(
            text.contains(r#"netaware_probe_jitter_seconds{peer="c",method="udp"} 0.00002"#),
            "{text}"
        );
        m.retain_peers(&BTreeSet::from(["c".to_string()]));
        let text = netaware_common::observe::encode(&reg);
        assert!(!text.contains(r#"peer="b""#), "{text}");
        assert!(text.contains(r#"peer="c""#), "{text}");
    }

    #[test]
    fn per_peer_series_are_capped() {
        let (m, reg) = AgentMetrics::new(2);
        for p in ["a", "b", "c", "d"] {
            m.observe(&window(p, &[100]));
        }
        let text = netaware_common::observe::encode(&reg);
        let peers: BTreeSet<&str> = text
            .lines()
            .filter(|l| l.starts_with("netaware_probe_loss_ratio{"))
            .filter_map(|l| l.split('"').nth(1))
            .collect();
        assert_eq!(peers, BTreeSet::from(["a", "b"]));
    }
}
