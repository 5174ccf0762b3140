//! Placement of a job with shape (docs/placement.md, "Jobs with shape"):
//! which nodes, and which node gets which rank.
//!
//! Every candidate set (the shape-blind search's, and sets built bottom-up
//! from the shape: [`crate::shape::candidates`]) gets its rank order
//! ([`rank_order`]) and a predicted step: for every level, each of its
//! rings all-reduces that level's bytes ([`cost::ring`] over the ring's
//! members), the level takes as long as its slowest ring, and the step is
//! the levels one after the other. The set with the lowest prediction
//! wins, ties (5 % steps) as in the shape-blind choice.

use super::{
    Estimator, Key, MAX_STARTS, Prediction, Query, RingLink, View, bottleneck, cost,
    meets_min_bandwidth, prediction_key, tie_break,
};
use crate::Result;
use crate::shape::{Shape, candidates, rank_order};

/// Up to this many eligible nodes the bottom-up candidates are built
/// (their first level compares every pair of eligible nodes, and forming
/// its groups is cubic in them); past it, only the shape-blind search's
/// candidates are ordered.
pub(super) const BUILD_MAX_NODES: usize = 256;

/// One level's share of a shaped prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelPrediction {
    pub name: String,
    /// Members of each of its rings.
    pub size: usize,
    /// Bytes each ring all-reduces per step (0: none asked for).
    pub bytes: u64,
    /// The slowest of the level's rings; `None` when no bytes were asked
    /// for or a ring pair's bandwidth is not measured.
    pub prediction: Option<Prediction>,
}

/// A candidate set with its rank order and prediction.
#[derive(Debug, Clone)]
pub(super) struct Shaped {
    /// Sorted node indices.
    pub(super) set: Vec<usize>,
    /// Node index of each rank.
    pub(super) ranks: Vec<usize>,
    /// The levels' predictions added up; `None` unless every level with
    /// bytes has one.
    pub(super) prediction: Option<Prediction>,
    pub(super) levels: Vec<LevelPrediction>,
    key: Key,
}

/// The largest bytes any level of `shape` all-reduces (0: no prediction
/// asked for).
pub(super) fn max_bytes(q: &Query, shape: &Shape) -> u64 {
    shape
        .levels()
        .iter()
        .map(|l| l.bytes.unwrap_or(q.allreduce_bytes))
        .max()
        .unwrap_or(0)
}

/// Bottom-up candidate sets among `eligible` (node indices), each sorted,
/// holding the included nodes and meeting the minimum bandwidth: grouped
/// by RTT, and with bytes to move also by each pair's predicted
/// all-reduce of them (loss and bandwidth count).
pub(super) fn built(
    q: &Query,
    v: &View,
    est: &Estimator,
    shape: &Shape,
    eligible: &[usize],
    include: &[usize],
) -> Vec<Vec<usize>> {
    if eligible.len() > BUILD_MAX_NODES {
        return Vec::new();
    }
    let near = |x: usize, y: usize| {
        let (a, b) = (eligible[x], eligible[y]);
        if meets_min_bandwidth(q, v, a, b) {
            est.rtt(v, a, b).0
        } else {
            f64::INFINITY
        }
    };
    let mut sets = candidates(shape, eligible.len(), near, MAX_STARTS);
    // With bytes to move, also by what a pair would take to all-reduce
    // them: RTT alone calls a lossy or thin pair near (a lossy node next
    // to the tightest site's others), and every set built around it
    // would hold it.
    let bytes = max_bytes(q, shape);
    if bytes > 0 {
        let fast = |x: usize, y: usize| {
            let (a, b) = (eligible[x], eligible[y]);
            let loss = [RingLink {
                loss: (v.loss)(a, b),
            }; 2];
            (v.bandwidth)(a, b)
                .filter(|_| meets_min_bandwidth(q, v, a, b))
                .and_then(|bw| cost::ring(2, bytes, est.rtt(v, a, b).0, bw, &loss))
                .map_or(f64::INFINITY, |p| p.total_ms)
        };
        sets.extend(candidates(shape, eligible.len(), fast, MAX_STARTS));
    }
    sets.into_iter()
        .map(|set| set.into_iter().map(|x| eligible[x]).collect::<Vec<_>>())
        .filter(|set| include.iter().all(|i| set.binary_search(i).is_ok()))
        .collect()
}

/// A pair's figures, by node: RTT (µs), bandwidth (Mbit/s; `None`: not
/// measured) and round-trip loss (0–1).
#[allow(missing_debug_implementations)] // closures
pub struct PairFigures<'a> {
    pub rtt_us: &'a dyn Fn(usize, usize) -> f64,
    pub bandwidth_mbps: &'a dyn Fn(usize, usize) -> Option<f64>,
    pub loss: &'a dyn Fn(usize, usize) -> f64,
}

/// The predicted step of `shape` with rank `r` on node `ranks[r]`: each
/// level's slowest ring, and their sum (`None` when no level has bytes,
/// or unless every level with bytes has a prediction). A level without
/// bytes of its own all-reduces `default_bytes`. The bench predicts its
/// placements' rank orders with this, as `Place` does its candidates.
pub fn predict_ranks(
    shape: &Shape,
    default_bytes: u64,
    ranks: &[usize],
    f: &PairFigures,
) -> (Option<Prediction>, Vec<LevelPrediction>) {
    let levels: Vec<LevelPrediction> = shape
        .levels()
        .iter()
        .zip(shape.rings())
        .map(|(level, rings)| {
            let bytes = level.bytes.unwrap_or(default_bytes);
            let prediction = if bytes == 0 || ranks.len() != shape.ranks() {
                None
            } else {
                slowest(f, bytes, ranks, &rings)
            };
            LevelPrediction {
                name: level.name.clone(),
                size: level.size,
                bytes,
                prediction,
            }
        })
        .collect();
    let asked = levels.iter().any(|l| l.bytes > 0);
    let complete = levels
        .iter()
        .all(|l| l.bytes == 0 || l.prediction.is_some());
    let prediction = (asked && complete).then(|| {
        levels
            .iter()
            .filter_map(|l| l.prediction)
            .fold(Prediction::default(), |s, p| Prediction {
                total_ms: s.total_ms + p.total_ms,
                latency_ms: s.latency_ms + p.latency_ms,
                bandwidth_ms: s.bandwidth_ms + p.bandwidth_ms,
                loss_ms: s.loss_ms + p.loss_ms,
            })
    });
    (prediction, levels)
}

/// `set` (sorted node indices) ordered and predicted for `shape`.
fn shaped(q: &Query, v: &View, est: &Estimator, shape: &Shape, set: Vec<usize>) -> Result<Shaped> {
    let local = rank_order(shape, set.len(), |a, b| est.rtt(v, set[a], set[b]).0)?;
    let ranks: Vec<usize> = local.iter().map(|&x| set[x]).collect();
    let rtt = |a: usize, b: usize| est.rtt(v, a, b).0;
    let figures = PairFigures {
        rtt_us: &rtt,
        bandwidth_mbps: v.bandwidth,
        loss: v.loss,
    };
    let (prediction, levels) = predict_ranks(shape, q.allreduce_bytes, &ranks, &figures);
    let asked = levels.iter().any(|l| l.bytes > 0);
    let time = prediction_key(prediction.as_ref(), asked);
    let (bw, quality) = tie_break(v, &set, bottleneck(v, &set));
    Ok(Shaped {
        set,
        ranks,
        prediction,
        levels,
        key: (time, bw, quality),
    })
}

/// The slowest of a level's rings (rank lists) over `ranks`' nodes: each
/// ring an all-reduce of `bytes` among its members (largest RTT and
/// bottleneck bandwidth over all their pairs, loss on the ring's links in
/// rank order). `None` when a ring pair's bandwidth is not measured.
fn slowest(
    f: &PairFigures,
    bytes: u64,
    ranks: &[usize],
    rings: &[Vec<usize>],
) -> Option<Prediction> {
    let mut worst: Option<Prediction> = None;
    for ring in rings {
        let nodes: Vec<usize> = ring.iter().map(|&r| ranks[r]).collect();
        let p = if nodes.len() < 2 {
            Prediction::default()
        } else {
            let (mut bw, mut max_rtt_us) = (f64::INFINITY, 0.0_f64);
            for (x, &a) in nodes.iter().enumerate() {
                for &b in &nodes[x + 1..] {
                    bw = bw.min((f.bandwidth_mbps)(a, b)?);
                    max_rtt_us = max_rtt_us.max((f.rtt_us)(a, b));
                }
            }
            let links: Vec<RingLink> = (0..nodes.len())
                .map(|x| RingLink {
                    loss: (f.loss)(nodes[x], nodes[(x + 1) % nodes.len()]),
                })
                .collect();
            cost::ring(nodes.len(), bytes, max_rtt_us, bw, &links)?
        };
        if worst.is_none_or(|w| p.total_ms > w.total_ms) {
            worst = Some(p);
        }
    }
    worst
}

/// The best of `candidates` for `shape` (the first of equals: candidates
/// come best first) and the best other set, if any.
pub(super) fn choose(
    q: &Query,
    v: &View,
    est: &Estimator,
    shape: &Shape,
    candidates: Vec<Vec<usize>>,
) -> Result<Option<(Shaped, Option<Shaped>)>> {
    let mut ranked: Vec<Shaped> = Vec::new();
    for set in candidates {
        if ranked.iter().all(|s| s.set != set) {
            ranked.push(shaped(q, v, est, shape, set)?);
        }
    }
    // Stable: equal keys keep the candidates' order.
    ranked.sort_by(|a, b| {
        b.key
            .partial_cmp(&a.key)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut it = ranked.into_iter();
    Ok(it.next().map(|best| (best, it.next())))
}
