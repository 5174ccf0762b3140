//! `netaware place`: ask the aggregator for k nodes (or a shaped job's
//! ranks) and print the answer as a table, JSON, a nodeAffinity block to
//! paste into a pod template, or an MPI hostfile in rank order.

use netaware_proto::v1::{PlaceRequest, PlaceResponse, Prediction, ShapeLevel};
use serde_json::{Value, json};

use crate::{Error, PlaceArgs};

/// The request for `netaware place`.
pub fn place_request(a: &PlaceArgs) -> PlaceRequest {
    PlaceRequest {
        // With a shape and no -k the aggregator takes the shape's ranks.
        k: a.k.unwrap_or(0),
        shape: a
            .shape
            .iter()
            .flat_map(|s| s.levels())
            .map(|l| ShapeLevel {
                name: l.name.clone(),
                size: u32::try_from(l.size).unwrap_or(u32::MAX),
                bytes: l.bytes.unwrap_or(0),
            })
            .collect(),
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

/// The variable holding the nodes in rank order (space separated).
pub const RANK_NODES_ENV: &str = "NETAWARE_RANK_NODES";

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
        "ranks": p.ranks,
        "levels": p.levels.iter().map(|l| json!({
            "name": l.name,
            "size": l.size,
            "bytes": l.bytes,
            "prediction": l.prediction.as_ref().map(prediction_json),
        })).collect::<Vec<_>>(),
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
    // A shaped answer's prediction is the step of all its levels.
    let predicted = match bytes {
        _ if !p.levels.is_empty() => Some("predicted step (all levels)".to_string()),
        Some(b) => Some(format!("predicted all-reduce ({b} bytes)")),
        None => None,
    };
    if let Some(title) = predicted {
        rows.push(vec![
            title,
            match (&p.prediction, known(p.predicted_allreduce_ms)) {
                (Some(parts), Some(_)) => prediction_text(parts),
                (None, Some(t)) => format!("{t:.1} ms"),
                (_, None) if p.nodes.len() < 2 => "0 ms (one node)".into(),
                (_, None) => "unknown until every chosen pair's bandwidth is measured".into(),
            },
        ]);
    }
    if !p.ranks.is_empty() {
        rows.push(vec![
            "ranks".into(),
            p.ranks
                .iter()
                .enumerate()
                .map(|(r, n)| format!("{r}:{n}"))
                .collect::<Vec<_>>()
                .join(" "),
        ]);
        for l in &p.levels {
            rows.push(vec![
                format!(
                    "  level {} ({} per ring, {} bytes)",
                    l.name, l.size, l.bytes
                ),
                match &l.prediction {
                    Some(parts) => prediction_text(parts),
                    None if l.bytes == 0 => "not predicted (no bytes given)".into(),
                    None => "unknown until every ring pair's bandwidth is measured".into(),
                },
            ]);
        }
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

/// An MPI hostfile: one line per rank, in rank order (a shape-blind
/// answer: the nodes by name, the order a launcher gives ranks in). With
/// one slot per node, Open MPI's default mapping gives rank r the r-th line.
pub fn place_hostfile(p: &PlaceResponse) -> String {
    let order = if p.ranks.is_empty() {
        &p.nodes
    } else {
        &p.ranks
    };
    order.iter().map(|n| format!("{n} slots=1\n")).collect()
}

/// A nodeAffinity block pinning a pod template to the chosen nodes, by the
/// `kubernetes.io/hostname` label (which the kubelet sets to the node name
/// unless overridden with --hostname-override). With a shape, also the
/// environment each pod finds its rank in: the nodes in rank order, and
/// its own node from the downward API (examples/shaped-torchrun.yaml).
pub fn place_yaml(p: &PlaceResponse) -> Result<String, Error> {
    let mut affinity = json!({
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
    let shaped = !p.ranks.is_empty();
    if shaped {
        affinity["env"] = json!([
            {"name": RANK_NODES_ENV, "value": p.ranks.join(" ")},
            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        ]);
    }
    let body = serde_norway::to_string(&affinity).map_err(|e| Error::Yaml(e.to_string()))?;
    let bw = known(p.bottleneck_bandwidth_mbps)
        .map_or("not measured".to_string(), |b| format!("{b:.0} Mbit/s"));
    let env_note = if shaped {
        format!(
            "# `env` goes under the training container: a pod's rank is the\n\
             # position of $NODE_NAME in ${RANK_NODES_ENV} (0 first).\n"
        )
    } else {
        String::new()
    };
    Ok(format!(
        "# netaware place -k {}: largest RTT {:.3} ms, bottleneck bandwidth {bw}.\n\
         # Paste `affinity` under the Job's spec.template.spec; with k pods, add a\n\
         # podAntiAffinity on kubernetes.io/hostname to get one pod per node.\n{env_note}{body}",
        p.nodes.len(),
        p.max_rtt_us / 1000.0
    ))
}
