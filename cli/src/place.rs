//! `netaware place`: ask the aggregator for k nodes and print the answer
//! as a table, JSON, or a nodeAffinity block to paste into a pod template.

use netaware_proto::v1::{PlaceRequest, PlaceResponse, Prediction};
use serde_json::{Value, json};

use crate::{Error, PlaceArgs};

/// The request for `netaware place`.
pub fn place_request(a: &PlaceArgs) -> PlaceRequest {
    PlaceRequest {
        k: a.k,
        include: a.include.clone(),
        exclude: a.exclude.clone(),
        label_selector: a.selector.clone().unwrap_or_default(),
        min_bandwidth_mbps: a.min_bandwidth.unwrap_or(0.0),
        fresh_only: false,
        allow_stale: a.allow_stale,
        allreduce_bytes: a.bytes.unwrap_or(0),
        explain: a.explain,
    }
}

/// `None` for the proto's "0 = unknown".
fn known(v: f64) -> Option<f64> {
    (v > 0.0).then_some(v)
}

fn prediction_json(p: &Prediction) -> Value {
    json!({
        "total_ms": p.total_ms,
        "latency_ms": p.latency_ms,
        "bandwidth_ms": p.bandwidth_ms,
        "loss_ms": p.loss_ms,
    })
}

/// "110.2 ms (latency 2.1, bandwidth 108.1, loss 0.0)".
fn prediction_text(p: &Prediction) -> String {
    format!(
        "{:.1} ms (latency {:.1}, bandwidth {:.1}, loss {:.1})",
        p.total_ms, p.latency_ms, p.bandwidth_ms, p.loss_ms
    )
}

/// The placement as JSON.
pub fn place_json(p: &PlaceResponse, bytes: Option<u64>) -> Value {
    json!({
        "nodes": p.nodes,
        "max_rtt_us": p.max_rtt_us,
        "bottleneck_bandwidth_mbps": known(p.bottleneck_bandwidth_mbps),
        "pairs": p.pairs,
        "rtt_pairs_measured": p.rtt_pairs_measured,
        "bandwidth_pairs_measured": p.bandwidth_pairs_measured,
        "allreduce_bytes": bytes,
        "predicted_allreduce_ms": known(p.predicted_allreduce_ms),
        "prediction": p.prediction.as_ref().map(prediction_json),
        "runner_up": p.runner_up.as_ref().map(|r| json!({
            "nodes": r.nodes,
            "prediction": r.prediction.as_ref().map(prediction_json),
            "why": r.why,
        })),
        "exclusions": p.exclusions.iter()
            .map(|e| json!({"node": e.node_name, "reason": e.reason}))
            .collect::<Vec<_>>(),
    })
}

/// The placement as a table, exclusions below it.
pub fn render_place(p: &PlaceResponse, bytes: Option<u64>) -> String {
    let mut rows = vec![
        vec!["nodes".to_string(), p.nodes.join(" ")],
        vec![
            "largest RTT".into(),
            if p.rtt_pairs_measured < p.pairs {
                format!(
                    "{:.3} ms (estimated: {} of {} pairs measured, the rest from their groups)",
                    p.max_rtt_us / 1000.0,
                    p.rtt_pairs_measured,
                    p.pairs
                )
            } else {
                format!("{:.3} ms", p.max_rtt_us / 1000.0)
            },
        ],
        vec![
            "bottleneck bandwidth".into(),
            match known(p.bottleneck_bandwidth_mbps) {
                Some(b) => format!(
                    "{b:.0} Mbit/s ({} of {} pairs measured)",
                    p.bandwidth_pairs_measured, p.pairs
                ),
                None => format!("not measured yet (0 of {} pairs)", p.pairs),
            },
        ],
    ];
    if let Some(b) = bytes {
        rows.push(vec![
            format!("predicted all-reduce ({b} bytes)"),
            match (&p.prediction, known(p.predicted_allreduce_ms)) {
                (Some(parts), Some(_)) => prediction_text(parts),
                (None, Some(t)) => format!("{t:.1} ms"),
                (_, None) if p.nodes.len() < 2 => "0 ms (one node)".into(),
                (_, None) => "unknown until every chosen pair's bandwidth is measured".into(),
            },
        ]);
    }
    if let Some(r) = &p.runner_up {
        rows.push(vec!["runner-up".into(), r.nodes.join(" ")]);
        if let Some(parts) = &r.prediction {
            rows.push(vec!["  predicted".into(), prediction_text(parts)]);
        }
        rows.push(vec!["  lost because".into(), r.why.clone()]);
    }
    let mut out = netaware_common::aligned_table(&rows, 2);
    if !p.exclusions.is_empty() {
        let mut ex = vec![vec!["NODE".to_string(), "NOT CHOSEN BECAUSE".to_string()]];
        ex.extend(
            p.exclusions
                .iter()
                .map(|e| vec![e.node_name.clone(), e.reason.clone()]),
        );
        out.push('\n');
        out.push_str(&netaware_common::aligned_table(&ex, 2));
    }
    out
}

/// A nodeAffinity block pinning a pod template to the chosen nodes, by the
/// `kubernetes.io/hostname` label (which the kubelet sets to the node name
/// unless overridden with --hostname-override).
pub fn place_yaml(p: &PlaceResponse, k: u32) -> Result<String, Error> {
    let affinity = json!({
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{
                        "matchExpressions": [{
                            "key": "kubernetes.io/hostname",
                            "operator": "In",
                            "values": p.nodes,
                        }]
                    }]
                }
            }
        }
    });
    let body = serde_norway::to_string(&affinity).map_err(|e| Error::Yaml(e.to_string()))?;
    let bw = known(p.bottleneck_bandwidth_mbps)
        .map_or("not measured".to_string(), |b| format!("{b:.0} Mbit/s"));
    Ok(format!(
        "# netaware place -k {k}: largest RTT {:.3} ms, bottleneck bandwidth {bw}.\n\
         # Paste under the Job's spec.template.spec; with k pods, add a\n\
         # podAntiAffinity on kubernetes.io/hostname to get one pod per node.\n{body}",
        p.max_rtt_us / 1000.0
    ))
}
