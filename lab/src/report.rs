//! Configured versus measured, per directed pair and method.
//!
//! Measured figures merge every window of the run: the windows' HdrHistograms
//! are added, so percentiles are over all probes, not averages of window
//! percentiles.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use netaware_proto::ProbeMethod;
use netaware_proto::histogram::{decode_histogram, new_histogram};
use netaware_proto::v1::LinkWindow;
use serde::Serialize;

use crate::emulator::LatenessSummary;
use crate::error::{Error, Result};
use crate::sidecar::{AgentUsage, PingSummary};
use crate::topology::Topology;

/// E|D| of RFC 3550 for normally distributed RTTs is 2/√π times their
/// standard deviation (D is the difference of two independent RTTs).
pub const RFC3550_PER_SD: f64 = std::f64::consts::FRAC_2_SQRT_PI;

/// The JSON report (`--json`). Fields may be added; none are renamed.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub topology: String,
    pub duration_s: f64,
    pub links: Vec<LinkReport>,
    /// CPU and memory of each agent over the measuring period.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<AgentUsage>,
    /// How late the emulator delivered packets (its own error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emulator: Option<LatenessSummary>,
    /// Timed link events applied during the run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<AppliedEvent>,
    /// What the aggregator wrote to each Node (keys under its prefix), read
    /// back from the API server at the end of the run.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, BTreeMap<String, String>>,
    /// Every label change seen while sampling the API server once a second.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub label_changes: Vec<LabelChange>,
    /// Bandwidth of every pair the aggregator tested (and iperf3's figure
    /// on the same pair and direction, with `--iperf3`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bandwidth: Vec<BandwidthReport>,
    /// Windows left out of the figures above because they overlapped a
    /// bandwidth test of either end (the aggregator flags them).
    pub disturbed_windows: u64,
    /// Windows left out because the emulator delivered some of their pair's
    /// packets more than 1 ms late (they would read the emulator).
    pub emulator_late_windows: u64,
    /// The API server the labels went to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesReport>,
    /// What the run authenticated and encrypted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security: Option<crate::lab::SecurityReport>,
    /// Where the scheduler put every pod of the `--apply` manifests.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<crate::cluster::objects::PodPlacement>,
}

/// Which API server a run wrote labels to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KubernetesReport {
    /// `real` or `double`.
    pub mode: String,
    /// The real server's version (e.g. `v1.37.2`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// One directed pair's bandwidth.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BandwidthReport {
    pub sender: String,
    pub receiver: String,
    /// The emulator's cap from sender to receiver (absent when uncapped).
    pub configured_mbps: Option<f64>,
    /// netaware's latest test, all streams.
    pub measured_mbps: f64,
    pub stream_mbps: Vec<f64>,
    /// `measured / configured`.
    pub to_configured: Option<f64>,
    /// iperf3 on the same pair and direction, same streams, omit and duration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iperf3_mbps: Option<f64>,
    /// `measured / iperf3`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_iperf3: Option<f64>,
}

/// The bandwidth part of the report from the aggregator's latest tests.
pub fn bandwidth_report(
    topo: &Topology,
    states: &[netaware_proto::v1::BandwidthState],
) -> Vec<BandwidthReport> {
    states
        .iter()
        .map(|b| {
            let configured_mbps = match (topo.index_of(&b.sender), topo.index_of(&b.receiver)) {
                (Some(i), Some(j)) => topo.link(i, j).bandwidth_mbps,
                _ => None,
            };
            BandwidthReport {
                sender: b.sender.clone(),
                receiver: b.receiver.clone(),
                configured_mbps,
                measured_mbps: b.mbps,
                stream_mbps: b.stream_mbps.clone(),
                to_configured: configured_mbps.map(|c| b.mbps / c),
                iperf3_mbps: None,
                to_iperf3: None,
            }
        })
        .collect()
}

/// One label value changing on one node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelChange {
    /// When the change was seen (µs since the Unix epoch; sampled every second).
    pub seen_unix_us: u64,
    pub node: String,
    pub key: String,
    /// `None` when the key was absent.
    pub old: Option<String>,
    pub new: Option<String>,
}

/// The changes between two samples of every node's labels.
pub fn label_changes(
    before: &BTreeMap<String, BTreeMap<String, String>>,
    after: &BTreeMap<String, BTreeMap<String, String>>,
    seen_unix_us: u64,
) -> Vec<LabelChange> {
    let empty = BTreeMap::new();
    let mut out = Vec::new();
    let nodes: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for node in nodes {
        let (b, a) = (
            before.get(node).unwrap_or(&empty),
            after.get(node).unwrap_or(&empty),
        );
        let keys: std::collections::BTreeSet<&String> = b.keys().chain(a.keys()).collect();
        for key in keys {
            if b.get(key) != a.get(key) {
                out.push(LabelChange {
                    seen_unix_us,
                    node: node.clone(),
                    key: key.clone(),
                    old: b.get(key).cloned(),
                    new: a.get(key).cloned(),
                });
            }
        }
    }
    out
}

/// A topology event as applied.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct AppliedEvent {
    /// As written in the topology (seconds after measuring started).
    pub at_s: f64,
    /// When it took effect (µs since the Unix epoch).
    pub applied_unix_us: u64,
    /// Directed links it changed.
    pub links: usize,
}

impl Report {
    /// Attach side-by-side `ping` results (`--ping`) to every link of their pair.
    pub fn attach_ping(&mut self, pings: &BTreeMap<(String, String), PingSummary>) {
        for l in &mut self.links {
            if let Some(p) = pings.get(&(l.src.clone(), l.dst.clone())) {
                l.ping = Some(*p);
                l.mean_to_ping = l
                    .measured
                    .filter(|m| p.avg_ms > 0.0 && m.samples > 0)
                    .map(|m| m.rtt_mean_ms / p.avg_ms);
            }
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LinkReport {
    pub src: String,
    pub dst: String,
    pub method: String,
    pub configured: Configured,
    /// `None` when no window arrived for this pair.
    pub measured: Option<Measured>,
    /// `ping` run side by side on the same pair (with `--ping`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ping: Option<PingSummary>,
    /// Our mean RTT divided by ping's average (with `--ping`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_to_ping: Option<f64>,
    /// Windows of this pair and method left out because the emulator was
    /// late on the pair while they were measured (absent when none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emulator_late: Option<LeftOut>,
}

/// Windows left out of a pair's figures, and the probes they held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LeftOut {
    pub windows: u64,
    /// Probes sent in those windows.
    pub sent: u64,
}

/// What the topology asks the emulator for, as a round trip.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Configured {
    /// Sum of both one-way delays.
    pub rtt_ms: f64,
    /// Standard deviation of the RTT: √(σ_ab² + σ_ba²).
    pub jitter_ms: f64,
    /// The RFC 3550 jitter that `jitter_ms` should read as (2/√π · σ).
    pub rfc3550_jitter_ms: f64,
    /// Round-trip loss: 1 − (1 − l_ab)(1 − l_ba).
    pub loss: f64,
    /// Rate cap from src to dst; absent when uncapped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bandwidth_mbps: Option<f64>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Measured {
    pub rtt_p50_ms: f64,
    pub rtt_p99_ms: f64,
    pub rtt_min_ms: f64,
    pub rtt_mean_ms: f64,
    pub rtt_p90_ms: f64,
    pub rtt_max_ms: f64,
    /// Mean of the windows' RFC 3550 jitter.
    pub jitter_ms: f64,
    pub loss: f64,
    /// Answered probes.
    pub samples: u64,
    pub sent: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub windows: u64,
}

#[derive(Debug)]
struct Acc {
    hist: Histogram<u64>,
    sent: u64,
    received: u64,
    duplicates: u64,
    reordered: u64,
    jitter_sum_ns: f64,
    windows: u64,
}

/// Collects windows whose start lies in `[from_unix_us, to_unix_us)`.
#[derive(Debug)]
pub struct Collector {
    from_unix_us: u64,
    to_unix_us: u64,
    acc: BTreeMap<(String, String, i32), Acc>,
    disturbed: u64,
    late: BTreeMap<(String, String, i32), LeftOut>,
}

impl Collector {
    pub fn new(from_unix_us: u64, to_unix_us: u64) -> Self {
        Self {
            from_unix_us,
            to_unix_us,
            acc: BTreeMap::new(),
            disturbed: 0,
            late: BTreeMap::new(),
        }
    }

    /// Add one window reported by `src`; returns whether it was inside the span.
    pub fn add(&mut self, src: &str, w: &LinkWindow) -> Result<bool> {
        if !self.spans(w) {
            return Ok(false);
        }
        let key = (src.to_string(), w.peer.clone(), w.method);
        let a = match self.acc.get_mut(&key) {
            Some(a) => a,
            None => self.acc.entry(key).or_insert(Acc {
                hist: Histogram::new_from(&new_histogram()?),
                sent: 0,
                received: 0,
                duplicates: 0,
                reordered: 0,
                jitter_sum_ns: 0.0,
                windows: 0,
            }),
        };
        if !w.rtt_histogram.is_empty() {
            let h = decode_histogram(&w.rtt_histogram)?;
            a.hist.add(&h).map_err(Error::HistogramMerge)?;
        }
        a.sent += w.sent;
        a.received += w.received;
        a.duplicates += w.duplicates;
        a.reordered += w.reordered;
        a.jitter_sum_ns += w.jitter_ns as f64;
        a.windows += 1;
        Ok(true)
    }

    /// The report for `topo`: every directed pair, for each of `methods`.
    pub fn report(&self, topo: &Topology, duration_s: f64, methods: &[ProbeMethod]) -> Report {
        let mut links = Vec::new();
        for (i, a) in topo.nodes.iter().enumerate() {
            for (j, b) in topo.nodes.iter().enumerate() {
                if i == j {
                    continue;
                }
                let configured = configured(topo, i, j);
                for m in methods {
                    let key = (a.name.clone(), b.name.clone(), *m as i32);
                    links.push(LinkReport {
                        src: a.name.clone(),
                        dst: b.name.clone(),
                        method: m.short_name().to_string(),
                        configured,
                        measured: self.acc.get(&key).map(measured),
                        ping: None,
                        mean_to_ping: None,
                        emulator_late: self.late.get(&key).copied(),
                    });
                }
            }
        }
        Report {
            topology: topo.name.clone(),
            duration_s,
            links,
            agents: Vec::new(),
            emulator: None,
            events: Vec::new(),
            labels: BTreeMap::new(),
            label_changes: Vec::new(),
            bandwidth: Vec::new(),
            disturbed_windows: self.disturbed,
            emulator_late_windows: self.late.values().map(|l| l.windows).sum(),
            kubernetes: None,
            security: None,
            pods: Vec::new(),
        }
    }

    /// Count a window left out because it overlapped a bandwidth test.
    pub fn skip_disturbed(&mut self, w: &LinkWindow) {
        if self.spans(w) {
            self.disturbed += 1;
        }
    }

    /// Count a window of `src` left out because the emulator was late on
    /// its pair.
    pub fn skip_emulator_late(&mut self, src: &str, w: &LinkWindow) {
        if self.spans(w) {
            let l = self
                .late
                .entry((src.to_string(), w.peer.clone(), w.method))
                .or_default();
            l.windows += 1;
            l.sent += w.sent;
        }
    }

    fn spans(&self, w: &LinkWindow) -> bool {
        w.window_start_unix_us >= self.from_unix_us && w.window_start_unix_us < self.to_unix_us
    }
}

/// Round-trip figures the emulator is configured for, from `i` to `j` and back.
pub fn configured(topo: &Topology, i: usize, j: usize) -> Configured {
    let (f, b) = (topo.link(i, j), topo.link(j, i));
    let sd = (f.jitter_ms.powi(2) + b.jitter_ms.powi(2)).sqrt();
    Configured {
        rtt_ms: f.delay_ms + b.delay_ms,
        jitter_ms: sd,
        rfc3550_jitter_ms: sd * RFC3550_PER_SD,
        loss: 1.0 - (1.0 - f.loss) * (1.0 - b.loss),
        bandwidth_mbps: f.bandwidth_mbps,
    }
}

fn measured(a: &Acc) -> Measured {
    let ms = |ns: u64| ns as f64 / 1e6;
    let has = !a.hist.is_empty();
    let q = |x: f64| {
        if has {
            ms(a.hist.value_at_quantile(x))
        } else {
            0.0
        }
    };
    Measured {
        rtt_p50_ms: q(0.5),
        rtt_p99_ms: q(0.99),
        rtt_min_ms: if has { ms(a.hist.min()) } else { 0.0 },
        rtt_mean_ms: if has { a.hist.mean() / 1e6 } else { 0.0 },
        rtt_p90_ms: q(0.9),
        rtt_max_ms: if has { ms(a.hist.max()) } else { 0.0 },
        jitter_ms: if a.windows > 0 {
            a.jitter_sum_ns / a.windows as f64 / 1e6
        } else {
            0.0
        },
        loss: if a.sent > 0 {
            a.sent.saturating_sub(a.received) as f64 / a.sent as f64
        } else {
            0.0
        },
        samples: a.received,
        sent: a.sent,
        duplicates: a.duplicates,
        reordered: a.reordered,
        windows: a.windows,
    }
}

fn pct_error(measured: f64, configured: f64) -> String {
    if configured <= 0.0 {
        return "-".into();
    }
    format!("{:+.1}%", (measured - configured) / configured * 100.0)
}

/// An aligned, human-readable table of the report.
pub fn render_table(r: &Report) -> String {
    let with_ping = r.links.iter().any(|l| l.ping.is_some());
    let mut header = vec![
        "src", "dst", "method", "rtt cfg", "p50", "p99", "p50 err", "jit cfg*", "jitter",
        "loss cfg", "loss", "samples",
    ];
    if with_ping {
        header.extend(["mean", "ping avg", "mean/ping"]);
    }
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for l in &r.links {
        let c = &l.configured;
        let mut row = vec![
            l.src.clone(),
            l.dst.clone(),
            l.method.clone(),
            format!("{:.3}", c.rtt_ms),
        ];
        match &l.measured {
            Some(m) => row.extend([
                format!("{:.3}", m.rtt_p50_ms),
                format!("{:.3}", m.rtt_p99_ms),
                pct_error(m.rtt_p50_ms, c.rtt_ms),
                format!("{:.3}", c.rfc3550_jitter_ms),
                format!("{:.3}", m.jitter_ms),
                format!("{:.2}%", c.loss * 100.0),
                format!("{:.2}%", m.loss * 100.0),
                m.samples.to_string(),
            ]),
            None => row.extend(
                ["no data", "", "", "", "", "", "", ""]
                    .iter()
                    .map(|s| s.to_string()),
            ),
        }
        if with_ping {
            row.push(
                l.measured
                    .map_or(String::new(), |m| format!("{:.3}", m.rtt_mean_ms)),
            );
            row.push(l.ping.map_or("-".into(), |p| format!("{:.3}", p.avg_ms)));
            row.push(l.mean_to_ping.map_or("-".into(), |x| format!("{x:.3}")));
        }
        rows.push(row);
    }
    let mut out = netaware_common::aligned_table(&rows, 3);
    if !r.agents.is_empty() {
        let n = r.agents.len() as f64;
        let mean_cpu = r.agents.iter().map(|a| a.cpu_percent).sum::<f64>() / n;
        let busiest = r
            .agents
            .iter()
            .max_by(|a, b| a.cpu_percent.total_cmp(&b.cpu_percent));
        let rss = r.agents.iter().map(|a| a.rss_max_mib).fold(0.0, f64::max);
        if let Some(b) = busiest {
            let _ = writeln!(
                out,
                "agents: CPU {mean_cpu:.2} % of a core on average (most: {:.2} % on {}), peak RSS {rss:.1} MiB",
                b.cpu_percent, b.node
            );
        }
    }
    if !r.labels.is_empty() {
        let _ = writeln!(
            out,
            "\nNode labels written by the aggregator (netaware.io/...):"
        );
        let cols = [
            "group-l1",
            "group-l2",
            "group-l3",
            "quality",
            "rtt-p50-us",
            "loss-ppm",
            "bandwidth-mbps",
            "fresh",
        ];
        let mut rows = vec![
            std::iter::once("node".to_string())
                .chain(cols.iter().map(|c| c.to_string()))
                .collect::<Vec<_>>(),
        ];
        for (node, labels) in &r.labels {
            let mut row = vec![node.clone()];
            for c in cols {
                row.push(
                    labels
                        .get(&format!("netaware.io/{c}"))
                        .cloned()
                        .unwrap_or_else(|| "-".into()),
                );
            }
            rows.push(row);
        }
        out.push_str(&netaware_common::aligned_table(&rows, 4));
    }
    if !r.bandwidth.is_empty() {
        let with_iperf = r.bandwidth.iter().any(|b| b.iperf3_mbps.is_some());
        let _ = writeln!(out, "\nBandwidth (Mbit/s, latest netaware test per pair):");
        let mut header = vec!["sender", "receiver", "cap", "netaware", "/cap"];
        if with_iperf {
            header.extend(["iperf3", "/iperf3"]);
        }
        let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
        let opt =
            |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |x| format!("{x:.digits$}"));
        for b in &r.bandwidth {
            let mut row = vec![
                b.sender.clone(),
                b.receiver.clone(),
                opt(b.configured_mbps, 0),
                format!("{:.1}", b.measured_mbps),
                opt(b.to_configured, 3),
            ];
            if with_iperf {
                row.push(opt(b.iperf3_mbps, 1));
                row.push(opt(b.to_iperf3, 3));
            }
            rows.push(row);
        }
        out.push_str(&netaware_common::aligned_table(&rows, 2));
    }
    if r.disturbed_windows > 0 {
        let _ = writeln!(
            out,
            "{} windows overlapped a bandwidth test of either end and are left out above",
            r.disturbed_windows
        );
    }
    if r.emulator_late_windows > 0 {
        let _ = writeln!(
            out,
            "{} windows had packets the emulator delivered more than 1 ms late and are left out above",
            r.emulator_late_windows
        );
    }
    if let Some(e) = &r.emulator {
        let _ = writeln!(
            out,
            "emulator: packets left {:.1} us late at the median, {:.1} us at p99; {} of {} more than 1 ms late",
            e.p50_us, e.p99_us, e.over_1ms, e.packets
        );
    }
    let _ = writeln!(
        out,
        "RTTs in ms. *jit cfg: the RFC 3550 jitter the configured delay spread should read as \
         (2/sqrt(pi) x RTT standard deviation)."
    );
    out
}

#[cfg(test)]
mod tests;
