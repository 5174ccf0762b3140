//! The scale run's report: the JSON contract of issue 14 (fields may be
//! added, none renamed) and its table for people.

use std::collections::BTreeMap;

use serde::Serialize;

/// CPU and memory of one process over the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Usage {
    pub cpu_cores_mean: f64,
    pub rss_max_mib: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Targets {
    pub max: usize,
    pub mean: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Groups {
    pub ari_l1: f64,
    pub ari_l2: f64,
    pub ari_l3: f64,
    /// Groups per level: as labelled, and in the ground truth.
    pub measured: [usize; 3],
    pub truth: [usize; 3],
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Degraded {
    pub found: usize,
    pub of: usize,
    /// Healthy nodes that stand out the same way.
    #[serde(rename = "false")]
    pub false_: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Queries {
    pub get_node_ms_p99: Option<f64>,
    pub get_node_calls: usize,
    pub get_matrix_ms: Option<f64>,
    pub get_matrix_bytes: Option<usize>,
    /// Pages the whole matrix took (of 20,000 links).
    pub get_matrix_pages: Option<usize>,
    /// p99 (nearest rank) of the Place calls per k.
    pub place_ms_p99: BTreeMap<String, f64>,
    /// The first failure of each query kind, if any.
    pub errors: BTreeMap<String, String>,
}

/// One healthy node degraded halfway through the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Fault {
    pub node: String,
    pub at_s: f64,
    /// Whether that node's labels changed before the join.
    pub relabelled: bool,
    /// Seconds from the fault to its first label change (any time in the
    /// run).
    pub labels_followed_s: Option<f64>,
    /// Its quality is then the lowest of its labelled l2 group.
    pub found: bool,
    /// Its own label changes after the fault: label, from, to, second of
    /// the run (at most 20), to see which figure followed when.
    pub own_changes: Vec<(String, String, String, f64)>,
    /// Other nodes with a label value change between the fault and the
    /// join, and how many changes each key saw among them.
    pub others_relabelled: usize,
    pub others_keys: BTreeMap<String, usize>,
    /// Those changes: node, label, from, to, second of the run (at most
    /// 20), and whether the node shares the faulty node's l1 group.
    pub others_sample: Vec<(String, String, String, String, f64, bool)>,
    /// Of `others_relabelled`, those in the faulty node's l2 group (the
    /// nodes whose figures include its links); the rest are elsewhere.
    pub others_in_group: usize,
    /// From the fault to the join (s): the span `others_*` count over.
    pub window_s: f64,
    /// Nodes with a label value change expected in that span anyway, at
    /// the steady rate (`label_changes_per_hour_steady`).
    pub others_expected: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Join {
    pub plan_s: Option<f64>,
    pub labels_s: Option<f64>,
    /// `labels_s` in recomputations.
    pub recomputations: Option<f64>,
}

/// One sample of the labels during the run.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub t_s: f64,
    /// Nodes (of those started at the beginning) with every group label and
    /// a quality.
    pub labelled: usize,
    pub ari: [f64; 3],
    pub writes_total: usize,
    pub aggregator_rss_mib: f64,
    /// Aggregator CPU (cores) since the previous sample.
    pub aggregator_cpu_cores: f64,
}

/// The report; fields may be added, none renamed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScaleReport {
    pub nodes: usize,
    pub duration_s: f64,
    pub seed: u64,
    pub aggregator: Usage,
    /// The simulator shares the machine's cores with the aggregator.
    pub simulator: Usage,
    pub probe_targets_per_agent: Targets,
    pub plan_bytes_max: usize,
    pub labels_converged_s: Option<f64>,
    pub groups: Groups,
    pub degraded_detected: Degraded,
    pub queries: Queries,
    pub join: Join,
    pub fault: Fault,
    /// Other nodes relabelled by the fault (`fault.others_relabelled`).
    pub nodes_relabelled_on_single_fault: Option<usize>,
    /// Node writes per hour in the steady state (from `steady_from_s` to
    /// the fault), extrapolated from that span, and as a share of the
    /// nodes (percent).
    pub label_writes_per_hour_steady: Option<f64>,
    pub label_writes_per_hour_steady_pct: Option<f64>,
    /// Writes that changed a label value, per hour, in the same span.
    pub label_changes_per_hour_steady: Option<f64>,
    /// The steady span's length (s), and the 95 % upper bound of the
    /// steady Node writes per hour it allows (Poisson: with no write in
    /// 300 s, up to 36 an hour), also as a share of the nodes (percent).
    pub steady_span_s: Option<f64>,
    pub label_writes_per_hour_steady_upper95: Option<f64>,
    pub label_writes_per_hour_steady_upper95_pct: Option<f64>,
    /// The steady writes by what changed in their summary annotation
    /// (`none`: a label changed, the summary did not), per hour.
    pub summary_changes_per_hour_steady: BTreeMap<String, f64>,
    /// The steady label changes by label (without the prefix), per hour.
    pub label_changes_by_key_per_hour_steady: BTreeMap<String, f64>,
    /// The first steady label changes: node, label, from, to, when (s).
    pub steady_changes_sample: Vec<(String, String, String, String, f64)>,
    /// Where that span starts (it ends at the fault).
    pub steady_from_s: Option<f64>,
    pub windows_sent: u64,
    pub sessions_reopened: u64,
    pub agent_errors: BTreeMap<String, usize>,
    pub unreadable_patches: u64,
    pub timeline: Vec<Sample>,
}

/// The one-sided 95 % upper confidence bound of a Poisson rate's mean
/// when `k` events were counted (for k = 0, −ln 0.05 ≈ 3.0): the λ whose
/// P(X ≤ k) is 5 %, found by bisection.
pub fn poisson_upper95(k: usize) -> f64 {
    let below = |lambda: f64| -> f64 {
        // P(X ≤ k) as a sum of terms computed in logarithms (no overflow
        // of λ^i or i!, no underflow of e^−λ for large λ).
        let (mut ln_fact, mut sum) = (0.0, 0.0);
        for i in 0..=k {
            if i > 0 {
                ln_fact += (i as f64).ln();
            }
            sum += (-lambda + i as f64 * lambda.ln() - ln_fact).exp();
        }
        sum
    };
    let (mut lo, mut hi) = (0.0, k as f64 + 10.0 * (k as f64 + 1.0).sqrt() + 10.0);
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if below(mid) > 0.05 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// The report as a table for people.
pub fn render(r: &ScaleReport) -> String {
    let opt = |v: Option<f64>, unit: &str| v.map_or("—".to_string(), |v| format!("{v:.1}{unit}"));
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<34} {v}\n"));
    line(
        "nodes",
        format!("{} for {:.0} s (seed {})", r.nodes, r.duration_s, r.seed),
    );
    line(
        "aggregator",
        format!(
            "{:.2} cores mean, {:.0} MiB RSS max",
            r.aggregator.cpu_cores_mean, r.aggregator.rss_max_mib
        ),
    );
    line(
        "simulator (same cores)",
        format!(
            "{:.2} cores mean, {:.0} MiB RSS max",
            r.simulator.cpu_cores_mean, r.simulator.rss_max_mib
        ),
    );
    line(
        "probe targets per agent",
        format!(
            "max {}, mean {:.1}; largest plan {} B",
            r.probe_targets_per_agent.max, r.probe_targets_per_agent.mean, r.plan_bytes_max
        ),
    );
    line("labels converged", opt(r.labels_converged_s, " s"));
    line(
        "groups ARI l1 / l2 / l3",
        format!(
            "{:.4} / {:.4} / {:.4} ({:?} groups; truth {:?})",
            r.groups.ari_l1, r.groups.ari_l2, r.groups.ari_l3, r.groups.measured, r.groups.truth
        ),
    );
    line(
        "degraded nodes found",
        format!(
            "{} of {}, {} false",
            r.degraded_detected.found, r.degraded_detected.of, r.degraded_detected.false_
        ),
    );
    line(
        "GetNode p99 under load",
        opt(r.queries.get_node_ms_p99, " ms"),
    );
    for (k, ms) in &r.queries.place_ms_p99 {
        line(&format!("Place k={k} p99"), format!("{ms:.1} ms"));
    }
    line(
        "GetMatrix",
        match (r.queries.get_matrix_ms, r.queries.get_matrix_bytes) {
            (Some(ms), Some(b)) => format!(
                "{ms:.0} ms, {:.1} MB in {} pages",
                b as f64 / 1e6,
                r.queries.get_matrix_pages.unwrap_or(1)
            ),
            _ => "—".into(),
        },
    );
    for (kind, e) in &r.queries.errors {
        line(&format!("error: {kind}"), e.clone());
    }
    line(
        "single fault",
        format!(
            "{}: relabelled {} (after {}), found {}; {} other nodes relabelled {:?}",
            r.fault.node,
            r.fault.relabelled,
            opt(r.fault.labels_followed_s, " s"),
            r.fault.found,
            r.fault.others_relabelled,
            r.fault.others_keys
        ),
    );
    line(
        "  in its l2 group / elsewhere",
        format!(
            "{} / {} in {:.0} s (expected at the steady rate: {})",
            r.fault.others_in_group,
            r.fault.others_relabelled - r.fault.others_in_group,
            r.fault.window_s,
            opt(r.fault.others_expected, "")
        ),
    );
    line(
        "join: plan / labels",
        format!(
            "{} / {}",
            opt(r.join.plan_s, " s"),
            opt(r.join.labels_s, " s")
        ),
    );
    line(
        "steady Node writes per hour",
        format!(
            "{} ({} of the nodes); label changes {}",
            opt(r.label_writes_per_hour_steady, ""),
            opt(r.label_writes_per_hour_steady_pct, " %"),
            opt(r.label_changes_per_hour_steady, "")
        ),
    );
    line(
        "  95 % upper bound",
        format!(
            "{} ({} of the nodes) over {}",
            opt(r.label_writes_per_hour_steady_upper95, ""),
            opt(r.label_writes_per_hour_steady_upper95_pct, " %"),
            opt(r.steady_span_s, " s")
        ),
    );
    // "peers 1702, loss 655": a rate per kind.
    let rates = |m: &BTreeMap<String, f64>| {
        m.iter()
            .map(|(k, v)| format!("{k} {v:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    line(
        "  by summary change",
        rates(&r.summary_changes_per_hour_steady),
    );
    line(
        "  label changes by label",
        rates(&r.label_changes_by_key_per_hour_steady),
    );
    line(
        "windows sent / sessions reopened",
        format!("{} / {}", r.windows_sent, r.sessions_reopened),
    );
    for (e, count) in &r.agent_errors {
        line("agent error", format!("{count} × {e}"));
    }
    out
}

#[cfg(test)]
mod tests;
