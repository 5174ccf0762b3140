//! The Place query: from a request (k, constraints, message size) and the
//! aggregator's view of the cluster (measured RTTs, latency groups,
//! bandwidth, quality, freshness, Node labels) to the chosen nodes, their
//! figures, and why every other node was left out.
//!
//! Steps, in order (docs/placement.md):
//! 1. Candidates: every known node, minus those excluded by the request, by
//!    the label selector, stale nodes (unless `allow_stale`), nodes the
//!    Kubernetes Node list does not have (when it is known), and nodes with
//!    no RTT measured.
//! 2. Distances: measured RTTs, and for pairs nobody probes (sparse plans
//!    past the full mesh) estimates from the groups ([`estimate`]).
//! 3. Up to [`DENSE_MAX_NODES`] candidates, the node-level search: with a
//!    minimum bandwidth, a pair below it (or not measured) counts as
//!    infinitely far; minimise the largest pairwise RTT
//!    ([`diameter::choose`]); then zone first, then quality: sets whose
//!    largest RTT lies in the same latency level as the best one (under the
//!    same group threshold), or within [`TIE_TOLERANCE`] of it, count as
//!    equally good for latency; among them prefer the larger bottleneck
//!    bandwidth, then the higher mean quality ([`diameter::refine`]). The
//!    widening is capped at twice a lower bound of the optimum, so the
//!    answer is never worse than twice the best possible largest RTT.
//! 4. Past it, the same rule over groups instead of nodes ([`zones`]): a
//!    ball of the nearest l1 groups that holds k, the narrowest within the
//!    tie limit by bandwidth and quality, then k nodes inside by quality.
//! 5. When an all-reduce size is given, predict each candidate set's ring
//!    all-reduce time ([`cost::ring`]: latency, bandwidth and loss parts)
//!    and choose by it first (in 5 % steps), then by the tie-break above.
//!    The candidates are the refined sets within the tie limit and, since a
//!    loss-free set across sites can beat a lossy one inside a site, the
//!    wider balls too; the best other candidate is the runner-up, with why
//!    it lost.
//! 6. With a shape ([`shaped`]): the candidates above and sets built
//!    bottom-up from the shape, each with its rank order, compared by the
//!    predicted step of all the shape's levels.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use std::fmt;
use std::sync::Arc;

use crate::groups::Distances;
use crate::infer::Inferred;
use crate::shape::Shape;
use crate::{Error, Result};

pub mod cost;
pub mod diameter;
mod estimate;
mod shaped;
mod zones;

pub use shaped::{LevelPrediction, PairFigures, predict_ranks};

use cost::{Prediction, RingLink};
use diameter::{Candidates, Stop, stopped};
use estimate::Estimator;

/// Most names a request may include or exclude: more than any cluster
/// netaware is built for, few enough that checking them costs nothing.
pub const MAX_NAMES: usize = 10_000;
/// Largest k a request may ask for, refused before any work for the same
/// reason.
pub const MAX_K: usize = MAX_NAMES;

/// Sets whose largest RTT is within this fraction of the best one count as
/// tied: RTTs inside a zone differ by measurement noise of this order.
pub const TIE_TOLERANCE: f64 = 0.10;
/// ... and within at least this many microseconds.
pub const TIE_FLOOR_US: f64 = 20.0;
/// Starting sets the tie-break searches from (distinct balls, best first).
const MAX_STARTS: usize = 32;
/// Up to this many eligible nodes the node-level search runs (steps 3–4);
/// past it, the search by groups ([`zones`]). It is the full-mesh size
/// of the default probe plans (64 targets), so a cluster whose pairs are
/// all measured is searched exactly, and the node-level search's
/// O(k²·n) rounds stay well under a second.
pub const DENSE_MAX_NODES: usize = 65;

/// A Place request, checked and parsed.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub k: usize,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// Which nodes' labels qualify; `None` selects every node.
    pub selector: Option<LabelFilter>,
    /// 0 = no minimum.
    pub min_bandwidth_mbps: f64,
    /// Consider nodes whose data is stale too.
    pub allow_stale: bool,
    /// 0 = do not predict.
    pub allreduce_bytes: u64,
    pub explain: bool,
    /// The job's shape; then `k` is its ranks and the answer gives each
    /// rank a node.
    pub shape: Option<Shape>,
}

/// Node labels, key to value.
pub type Labels = BTreeMap<String, String>;
type LabelTest = dyn Fn(&Labels) -> bool + Send + Sync;

/// A test on a node's labels, with the text it was parsed from (for
/// messages). The model does not parse selectors: the aggregator turns a
/// Kubernetes label selector into a filter, so Kubernetes' types stay out of
/// the maths.
#[derive(Clone)]
pub struct LabelFilter {
    text: String,
    test: Arc<LabelTest>,
}

impl LabelFilter {
    /// A filter named `text` that keeps the label sets `test` accepts.
    pub fn new(
        text: impl Into<String>,
        test: impl Fn(&Labels) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self {
            text: text.into(),
            test: Arc::new(test),
        }
    }

    /// The selector as the user wrote it.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether a node with these labels qualifies.
    pub fn matches(&self, labels: &Labels) -> bool {
        (self.test)(labels)
    }
}

impl fmt::Debug for LabelFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LabelFilter").field(&self.text).finish()
    }
}

/// What the aggregator knows, by node index (`names` is sorted).
#[derive(Clone, Copy)]
#[allow(missing_debug_implementations)] // holds a closure
pub struct View<'a> {
    pub names: &'a [String],
    /// Measured RTT p50 (µs) by node: each node's measured peers, sorted
    /// by index, with the pair's RTT (worse direction); both directions
    /// listed; infinite = measured but unreachable. A pair absent was not
    /// measured.
    pub rtt: &'a [Vec<(usize, f64)>],
    /// The latency groups, by node index: estimates for pairs nobody
    /// measured come from them ([`estimate`]); empty = no estimates.
    pub zones: &'a [Zone],
    /// Measured bandwidth (Mbit/s) of a pair, worse direction.
    pub bandwidth: &'a dyn Fn(usize, usize) -> Option<f64>,
    /// Measured round-trip loss (0–1) of a pair, worse direction; 0 when
    /// none was seen or the pair was not measured.
    pub loss: &'a dyn Fn(usize, usize) -> f64,
    /// Quality score from the latest recomputation.
    pub quality: &'a [Option<u32>],
    /// The node's own agent reported within the stale window.
    pub fresh: &'a [bool],
    /// Node labels, `None` when the aggregator has no Kubernetes connection.
    pub labels: Option<&'a BTreeMap<String, BTreeMap<String, String>>>,
    /// The latency levels' thresholds (µs, increasing; the group
    /// thresholds in use); empty: near-ties by [`TIE_TOLERANCE`] only.
    pub levels: &'a [f64],
}

/// A latency group by node index (see [`crate::infer::Group`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    /// 1, 2 or 3.
    pub level: u32,
    pub members: Vec<usize>,
    /// Largest RTT measured between two members (µs).
    pub max_rtt_us: f64,
}

/// The answer to a Place request.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// Chosen nodes, sorted by name.
    pub nodes: Vec<String>,
    /// Largest RTT p50 between two chosen nodes (µs), estimated for pairs
    /// not measured.
    pub max_rtt_us: f64,
    /// Chosen pairs whose RTT was measured (of `pairs`); the others'
    /// figures are estimates from their groups.
    pub rtt_pairs_measured: u32,
    /// Smallest measured bandwidth between chosen nodes (`None`: none measured).
    pub bottleneck_mbps: Option<f64>,
    /// Pairs among the chosen nodes, and how many have a bandwidth measurement.
    pub pairs: u32,
    pub bandwidth_pairs_measured: u32,
    /// `None` when not asked for, or when a chosen pair's bandwidth is
    /// unknown; its parts in `prediction`.
    pub predicted_allreduce_ms: Option<f64>,
    /// The predicted ring all-reduce and its parts ([`cost::ring`]).
    pub prediction: Option<Prediction>,
    /// The best other candidate set and why it lost (when asked for
    /// `explain` and there was another candidate).
    pub runner_up: Option<RunnerUp>,
    /// Every other known node and why it is not in the answer (when asked).
    pub exclusions: Vec<(String, String)>,
    /// With a shape: the node of each rank (rank 0 first); else empty.
    pub ranks: Vec<String>,
    /// With a shape: each level's predicted all-reduce (innermost first);
    /// `prediction` is their sum.
    pub levels: Vec<LevelPrediction>,
}

/// The best candidate set that was not chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerUp {
    /// Sorted by name.
    pub nodes: Vec<String>,
    pub prediction: Option<Prediction>,
    /// Why it lost, in a sentence.
    pub why: String,
}

/// The largest RTT a set may have and still count as tied with the best
/// one found (`best`): the top of `best`'s latency level or the tolerance,
/// whichever is larger, capped at twice `lower` (a lower bound of the
/// optimum) so the factor-2 guarantee of the centre-ball step holds for RTTs
/// that obey the triangle inequality.
pub fn tie_limit(best: f64, levels: &[f64], lower: f64) -> f64 {
    let near = best + (best * TIE_TOLERANCE).max(TIE_FLOOR_US);
    let level = levels.iter().copied().find(|&t| best <= t).unwrap_or(0.0);
    near.max(level).min(2.0 * lower).max(best)
}

/// Bandwidths compared in the tie-break: steps of 10 % (a step is
/// `floor(log₁.₁ Mbit/s)`), so links that differ by noise compare equal.
pub fn bandwidth_step(mbps: f64) -> f64 {
    if mbps > 0.0 {
        (mbps.ln() / BANDWIDTH_STEP.ln()).floor()
    } else {
        f64::NEG_INFINITY
    }
}

/// Ratio between two bandwidth steps.
const BANDWIDTH_STEP: f64 = 1.1;

/// Whether the pair `a`, `b` meets the request's minimum bandwidth (any
/// pair does without one; with one, an unmeasured pair does not).
fn meets_min_bandwidth(q: &Query, v: &View, a: usize, b: usize) -> bool {
    q.min_bandwidth_mbps <= 0.0 || (v.bandwidth)(a, b).is_some_and(|bw| bw >= q.min_bandwidth_mbps)
}

/// Why node `i` cannot be chosen, or `None` when it can.
fn ineligible(q: &Query, v: &View, excluded: &BTreeSet<&str>, i: usize) -> Option<String> {
    let name = &v.names[i];
    if excluded.contains(name.as_str()) {
        return Some("excluded by request".into());
    }
    if let Some(labels) = v.labels {
        match (labels.get(name), &q.selector) {
            (None, _) => {
                return Some("not a Node of the cluster (not in the Kubernetes Node list)".into());
            }
            (Some(l), Some(filter)) if !filter.matches(l) => {
                return Some(format!("labels do not match selector '{}'", filter.text()));
            }
            _ => {}
        }
    }
    if !q.allow_stale && !v.fresh[i] {
        return Some(
            "stale: its agent has not reported recently (ask with allow_stale to consider it)"
                .into(),
        );
    }
    if !v.rtt[i].iter().any(|&(j, d)| j != i && d.is_finite()) {
        return Some("not measured yet: no RTT to any other node".into());
    }
    None
}

/// Choose nodes for `q`; errors say which constraint could not be met.
/// The search ends early with [`Error::Stopped`] once `stop` is set.
pub fn place<'a>(q: &'a Query, v: &View, stop: &Stop) -> Result<Placement> {
    let n = v.names.len();
    let index: BTreeMap<&str, usize> = v
        .names
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    if q.k == 0 {
        return Err(Error::ZeroK);
    }
    if q.k > MAX_K {
        return Err(Error::TooLargeK { k: q.k, max: MAX_K });
    }
    if !(q.min_bandwidth_mbps >= 0.0 && q.min_bandwidth_mbps.is_finite()) {
        return Err(Error::BadMinBandwidth(q.min_bandwidth_mbps));
    }
    if q.selector.is_some() && v.labels.is_none() {
        return Err(Error::NoLabels);
    }
    if let Some(shape) = &q.shape
        && shape.ranks() != q.k
    {
        return Err(Error::ShapeK {
            ranks: shape.ranks(),
            k: q.k,
        });
    }
    // Sets, not nested scans: the request's lists are as long as the
    // caller makes them (the review's E3d: 40k + 40k names held the
    // aggregator for 8.6 s).
    let names = |role: &'static str, list: &'a [String]| -> Result<BTreeSet<&'a str>> {
        if list.len() > MAX_NAMES {
            return Err(Error::TooManyNames {
                role,
                count: list.len(),
                max: MAX_NAMES,
            });
        }
        let mut set = BTreeSet::new();
        for name in list {
            if !index.contains_key(name.as_str()) {
                return Err(Error::UnknownNode {
                    role,
                    name: name.clone(),
                });
            }
            if !set.insert(name.as_str()) {
                return Err(Error::DuplicateNode {
                    role,
                    name: name.clone(),
                });
            }
        }
        Ok(set)
    };
    let included = names("include", &q.include)?;
    let excluded = names("exclude", &q.exclude)?;
    if let Some(both) = included.intersection(&excluded).next() {
        return Err(Error::IncludedAndExcluded((*both).to_string()));
    }

    let reasons: Vec<Option<String>> = (0..n).map(|i| ineligible(q, v, &excluded, i)).collect();
    for name in &q.include {
        let i = index[name.as_str()];
        if let Some(r) = &reasons[i] {
            return Err(Error::IncludeIneligible {
                name: name.clone(),
                reason: r.clone(),
            });
        }
    }
    let eligible: Vec<usize> = (0..n).filter(|&i| reasons[i].is_none()).collect();
    if eligible.len() < q.k {
        return Err(Error::TooFewEligibleBecause {
            k: q.k,
            eligible: eligible.len(),
            known: n,
            why: tally(&reasons),
        });
    }
    let include: Vec<usize> = q.include.iter().map(|x| index[x.as_str()]).collect();
    let est = Estimator::new(v, &eligible)?;
    // A shaped job searches as a shape-blind one with its largest level's
    // bytes (so the wider balls are candidates too), then adds its own.
    let search = match &q.shape {
        Some(shape) => &Query {
            allreduce_bytes: shaped::max_bytes(q, shape),
            ..q.clone()
        },
        None => q,
    };
    let mut candidates = if eligible.len() <= DENSE_MAX_NODES {
        exact(search, v, &est, &eligible, &include, stop)?
    } else {
        by_zones(search, v, &est, &include, stop)?
    };
    let no_set = || Error::NoMeasuredSet {
        k: q.k,
        min_bandwidth_mbps: q.min_bandwidth_mbps,
    };
    // The chosen set, its prediction, its ranks and levels (shaped), and
    // the runner-up with its prediction (computed only when explained).
    let (nodes, prediction, ranks, levels, runner) = match &q.shape {
        Some(shape) => {
            candidates.extend(shaped::built(q, v, &est, shape, &eligible, &include));
            let (best, runner) =
                shaped::choose(q, v, &est, shape, candidates)?.ok_or_else(no_set)?;
            let ranks = best.ranks.iter().map(|&i| v.names[i].clone()).collect();
            let runner = runner.map(|r| (r.set, r.prediction));
            (best.set, best.prediction, ranks, best.levels, runner)
        }
        None => {
            let (best, runner) = choose(q, v, &est, candidates).ok_or_else(no_set)?;
            let prediction = predict(q, v, &est, &best);
            let runner = runner.filter(|_| q.explain).map(|set| {
                let p = predict(q, v, &est, &set);
                (set, p)
            });
            (best, prediction, Vec::new(), Vec::new(), runner)
        }
    };

    // The chosen set's figures: measured where measured, else estimated.
    let (mut max_rtt_us, mut rtt_measured) = (0.0_f64, 0u32);
    for (x, &a) in nodes.iter().enumerate() {
        for &b in &nodes[x + 1..] {
            let (d, m) = est.rtt(v, a, b);
            max_rtt_us = max_rtt_us.max(d);
            rtt_measured += u32::from(m);
        }
    }
    let (bottleneck_mbps, pairs, measured) = bottleneck(v, &nodes);
    let runner_up = runner
        .filter(|_| q.explain)
        .map(|(other, theirs)| RunnerUp {
            nodes: other.iter().map(|&i| v.names[i].clone()).collect(),
            prediction: theirs,
            why: why_lost(prediction.as_ref(), theirs.as_ref()),
        });
    let exclusions = if q.explain {
        (0..n)
            .filter(|i| nodes.binary_search(i).is_err())
            .map(|i| {
                let why = reasons[i].clone().unwrap_or_else(|| {
                    let far = nodes
                        .iter()
                        .map(|&j| est.rtt(v, i, j).0)
                        .fold(0.0, f64::max);
                    format!(
                        "eligible, not chosen: its largest RTT to the chosen nodes is {} µs, the set's is {} µs",
                        far.round(),
                        max_rtt_us.round()
                    )
                });
                (v.names[i].clone(), why)
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(Placement {
        nodes: nodes.iter().map(|&i| v.names[i].clone()).collect(),
        max_rtt_us,
        rtt_pairs_measured: rtt_measured,
        bottleneck_mbps,
        pairs,
        bandwidth_pairs_measured: measured,
        predicted_allreduce_ms: prediction.map(|p| p.total_ms),
        prediction,
        runner_up,
        exclusions,
        ranks,
        levels,
    })
}

/// Predicted ring all-reduce of `q.allreduce_bytes` over `set` (sorted
/// indices, so the ring runs in name order, as the answer lists the nodes
/// and launchers give out ranks): `None` when not asked for or when a
/// pair's bandwidth is unknown.
fn predict(q: &Query, v: &View, est: &Estimator, set: &[usize]) -> Option<Prediction> {
    predict_with(q, v, est, set, bottleneck(v, set))
}

/// [`predict`] with the set's [`bottleneck`] already read.
fn predict_with(
    q: &Query,
    v: &View,
    est: &Estimator,
    set: &[usize],
    (bw, pairs, measured): (Option<f64>, u32, u32),
) -> Option<Prediction> {
    if q.allreduce_bytes == 0 {
        return None;
    }
    if set.len() < 2 {
        return Some(Prediction::default());
    }
    let bw = bw.filter(|_| measured == pairs)?;
    let mut max_rtt_us = 0.0_f64;
    for (x, &a) in set.iter().enumerate() {
        for &b in &set[x + 1..] {
            max_rtt_us = max_rtt_us.max(est.rtt(v, a, b).0);
        }
    }
    let ring: Vec<RingLink> = (0..set.len())
        .map(|x| RingLink {
            loss: (v.loss)(set[x], set[(x + 1) % set.len()]),
        })
        .collect();
    cost::ring(set.len(), q.allreduce_bytes, max_rtt_us, bw, &ring)
}

/// The best of `candidates` by [`key`] (the first of equals: candidates
/// come best first) and the best other set, if any.
fn choose(
    q: &Query,
    v: &View,
    est: &Estimator,
    candidates: Vec<Vec<usize>>,
) -> Option<(Vec<usize>, Option<Vec<usize>>)> {
    let mut ranked: Vec<(Vec<usize>, Key)> = Vec::new();
    for set in candidates {
        if ranked.iter().all(|(s, _)| *s != set) {
            let k = key(q, v, est, &set);
            ranked.push((set, k));
        }
    }
    // Stable: equal keys keep the candidates' order.
    ranked.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
    let mut it = ranked.into_iter().map(|(s, _)| s);
    let best = it.next()?;
    Some((best, it.next()))
}

/// Why the runner-up lost to the chosen set, from their predictions.
fn why_lost(chosen: Option<&Prediction>, other: Option<&Prediction>) -> String {
    let (Some(c), Some(o)) = (chosen, other) else {
        return "no all-reduce time predicted (not asked for, or a bandwidth not measured): \
                it lost on bottleneck bandwidth, then mean quality, among sets of about the \
                same largest RTT"
            .into();
    };
    if prediction_step(o.total_ms) == prediction_step(c.total_ms) {
        return format!(
            "predicted {:.1} ms, about the chosen set's {:.1} ms (within {:.0} %): it lost on \
             bottleneck bandwidth, then mean quality",
            o.total_ms,
            c.total_ms,
            (PREDICTION_STEP - 1.0) * 100.0
        );
    }
    let parts = [
        (
            "latency",
            o.latency_ms - c.latency_ms,
            o.latency_ms,
            c.latency_ms,
        ),
        (
            "bandwidth",
            o.bandwidth_ms - c.bandwidth_ms,
            o.bandwidth_ms,
            c.bandwidth_ms,
        ),
        ("loss", o.loss_ms - c.loss_ms, o.loss_ms, c.loss_ms),
    ];
    let (part, _, theirs, ours) = parts
        .iter()
        .copied()
        .fold(parts[0], |m, p| if p.1 > m.1 { p } else { m });
    format!(
        "predicted {:.1} ms against {:.1} ms: mostly its {part} part, {theirs:.1} ms against {ours:.1} ms",
        o.total_ms, c.total_ms
    )
}

/// Smallest measured bandwidth among `set`'s pairs, how many pairs, and how
/// many of them have a bandwidth measured.
fn bottleneck(v: &View, set: &[usize]) -> (Option<f64>, u32, u32) {
    let (mut min, mut pairs, mut measured) = (None::<f64>, 0u32, 0u32);
    for (x, &a) in set.iter().enumerate() {
        for &b in &set[x + 1..] {
            pairs += 1;
            if let Some(bw) = (v.bandwidth)(a, b) {
                measured += 1;
                min = Some(min.map_or(bw, |m: f64| m.min(bw)));
            }
        }
    }
    (min, pairs, measured)
}

/// Predictions compared in steps of 5 % (`floor(log₁.₀₅ ms)`): sets whose
/// predictions differ by less than the model's error do not decide on it.
/// Public so that a benchmark judging the model's order ties what `Place`
/// ties.
pub const PREDICTION_STEP: f64 = 1.05;

fn prediction_step(ms: f64) -> f64 {
    if ms > 0.0 {
        (ms.ln() / PREDICTION_STEP.ln()).floor()
    } else {
        f64::NEG_INFINITY
    }
}

/// A set's rank among candidates, larger is better: see [`key`].
type Key = (f64, f64, f64);

/// How candidate sets compare: first the predicted all-reduce time (when
/// asked for), in steps of 5 %, a set without a prediction last; then
/// bottleneck bandwidth with an unknown pair counting as 0 (unknown is
/// never preferred over measured), in steps of about 10 % so that
/// measurement noise between equal links does not decide; then mean
/// quality.
fn key(q: &Query, v: &View, est: &Estimator, set: &[usize]) -> Key {
    // Read once: the prediction and the tie-break both need it, and refine
    // asks for this key for every swap it tries.
    let figures = bottleneck(v, set);
    let asked = q.allreduce_bytes > 0;
    let prediction = if asked {
        predict_with(q, v, est, set, figures)
    } else {
        None
    };
    let (bw, quality) = tie_break(v, set, figures);
    (prediction_key(prediction.as_ref(), asked), bw, quality)
}

/// The first part of [`Key`]: a prediction in 5 % steps (larger is
/// better); none asked for is neutral, asked for but missing is last.
fn prediction_key(prediction: Option<&Prediction>, asked: bool) -> f64 {
    match prediction {
        Some(p) if p.total_ms > 0.0 => -prediction_step(p.total_ms),
        Some(_) => 0.0,
        None if asked => f64::NEG_INFINITY,
        None => 0.0,
    }
}

/// The tie-break parts of [`Key`] from `set`'s [`bottleneck`] figures:
/// the bottleneck's bandwidth step (an unmeasured pair counts as none),
/// and the mean quality.
fn tie_break(
    v: &View,
    set: &[usize],
    (min, pairs, measured): (Option<f64>, u32, u32),
) -> (f64, f64) {
    let bw = if measured == pairs {
        bandwidth_step(min.unwrap_or(0.0))
    } else {
        f64::NEG_INFINITY
    };
    let quality: f64 = set
        .iter()
        .map(|&i| f64::from(v.quality[i].unwrap_or(0)))
        .sum::<f64>()
        / set.len().max(1) as f64;
    (bw, quality)
}

/// Steps 2–4 on a small candidate set: the node-level search of
/// [`diameter`] over a dense matrix of the eligible nodes (measured RTTs,
/// estimates where a pair was not measured). Returns candidate sets of
/// node indices (each sorted), best first by largest RTT: those within the
/// tie limit, and, when a prediction is asked for, the wider balls too (a
/// loss-free set across sites may beat a lossy one inside a site).
fn exact(
    q: &Query,
    v: &View,
    est: &Estimator,
    eligible: &[usize],
    include: &[usize],
    stop: &Stop,
) -> Result<Vec<Vec<usize>>> {
    // Local indices: position in `eligible` (ascending, so sorted local
    // sets map to sorted node sets).
    let m = eligible.len();
    let mut dist = Distances::new(m);
    for x in 0..m {
        for y in x + 1..m {
            let (a, b) = (eligible[x], eligible[y]);
            let usable = meets_min_bandwidth(q, v, a, b);
            // A minimum bandwidth makes pairs below it (or unknown) unusable.
            dist.set(
                x,
                y,
                if usable {
                    est.rtt(v, a, b).0
                } else {
                    f64::INFINITY
                },
            );
        }
    }
    let local = |i: usize| eligible.binary_search(&i).unwrap_or_default();
    let c = Candidates {
        eligible: (0..m).collect(),
        include: include.iter().map(|&i| local(i)).collect(),
    };
    let first = diameter::choose(&dist, q.k, &c, stop)?;
    if first.diameter.is_infinite() {
        return Err(Error::NoMeasuredSet {
            k: q.k,
            min_bandwidth_mbps: q.min_bandwidth_mbps,
        });
    }
    let limit = tie_limit(
        first.diameter,
        v.levels,
        diameter::lower_bound(&dist, q.k, &c),
    );
    let global = |set: &[usize]| -> Vec<usize> { set.iter().map(|&x| eligible[x]).collect() };
    // Local search from one start cannot leave a zone (every single swap
    // crosses a slow link), so refine from each distinct ball within the
    // limit, best first, and keep the best key.
    let balls = diameter::balls(&dist, q.k, &c)?;
    let mut starts: Vec<(diameter::Choice, f64)> = balls
        .iter()
        .filter(|b| b.diameter <= limit)
        .take(MAX_STARTS)
        .map(|b| (b.clone(), limit))
        .collect();
    starts.insert(0, (first, limit));
    if q.allreduce_bytes > 0 {
        // Each wider ball refined within its own width.
        starts.extend(
            balls
                .into_iter()
                .filter(|b| b.diameter > limit && b.diameter.is_finite())
                .take(MAX_STARTS)
                .map(|b| {
                    let width = b.diameter;
                    (b, width)
                }),
        );
    }
    let mut out = Vec::with_capacity(starts.len());
    for (start, width) in starts {
        let r = diameter::refine(
            &dist,
            start,
            &c,
            width,
            |s| key(q, v, est, &global(s)),
            stop,
        )?;
        out.push(global(&r.nodes));
    }
    if q.allreduce_bytes > 0 {
        // Balls hold the nearest nodes; a set wider but on a fatter or
        // loss-free path is not one of them: add, around every node, the
        // k − 1 others it would exchange the bytes with fastest, then
        // improve the best few by swaps.
        out.extend(cost_balls(q, v, est, eligible, include));
        let mut ranked: Vec<(Key, Vec<usize>)> =
            out.iter().map(|s| (key(q, v, est, s), s.clone())).collect();
        ranked.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
        for (_, set) in ranked.into_iter().take(IMPROVED_STARTS) {
            out.push(improve(q, v, est, eligible, include, set, stop)?);
        }
    }
    Ok(out)
}

/// Around each eligible node (with the included ones), the others it
/// would all-reduce `q.allreduce_bytes` with fastest as a pair: RTT,
/// bandwidth and loss in one figure ([`cost::ring`] of two nodes).
fn cost_balls(
    q: &Query,
    v: &View,
    est: &Estimator,
    eligible: &[usize],
    include: &[usize],
) -> Vec<Vec<usize>> {
    let pair = |a: usize, b: usize| -> f64 {
        let bw = (v.bandwidth)(a, b).filter(|&bw| bw >= q.min_bandwidth_mbps);
        let loss = RingLink {
            loss: (v.loss)(a, b),
        };
        bw.and_then(|bw| cost::ring(2, q.allreduce_bytes, est.rtt(v, a, b).0, bw, &[loss; 2]))
            .map_or(f64::INFINITY, |p| p.total_ms)
    };
    let mut out = Vec::new();
    for &centre in eligible {
        let mut set: Vec<usize> = include.to_vec();
        if !set.contains(&centre) {
            set.push(centre);
        }
        if set.len() > q.k {
            continue;
        }
        let mut others: Vec<(f64, usize)> = eligible
            .iter()
            .filter(|j| !set.contains(j))
            .map(|&j| (pair(centre, j), j))
            .filter(|(c, _)| c.is_finite())
            .collect();
        others.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        set.extend(others.iter().take(q.k - set.len()).map(|&(_, j)| j));
        // Near the centre is not near each other: every pair must still
        // meet the minimum bandwidth.
        let usable = set.iter().enumerate().all(|(x, &a)| {
            set[x + 1..]
                .iter()
                .all(|&b| meets_min_bandwidth(q, v, a, b))
        });
        if set.len() == q.k && usable {
            set.sort_unstable();
            out.push(set);
        }
    }
    out
}

/// Candidates [`improve`] starts from.
const IMPROVED_STARTS: usize = 4;
/// Rounds of swaps one improvement makes at most (each lowers the
/// prediction, so it ends sooner in practice).
const IMPROVE_ROUNDS: usize = 16;

/// Lower `set`'s predicted time by swapping one member for one eligible
/// non-member at a time (the best swap of each round), keeping the
/// included nodes and the minimum bandwidth. Returns the set, sorted.
fn improve(
    q: &Query,
    v: &View,
    est: &Estimator,
    eligible: &[usize],
    include: &[usize],
    mut set: Vec<usize>,
    stop: &Stop,
) -> Result<Vec<usize>> {
    let time = |s: &[usize]| predict(q, v, est, s).map_or(f64::INFINITY, |p| p.total_ms);
    let fits = |s: &[usize], new: usize| {
        s.iter()
            .all(|&m| m == new || meets_min_bandwidth(q, v, m, new))
    };
    let mut now = time(&set);
    for _ in 0..IMPROVE_ROUNDS {
        stopped(stop)?;
        let mut best: Option<(f64, Vec<usize>)> = None;
        for x in 0..set.len() {
            if include.contains(&set[x]) {
                continue;
            }
            for &new in eligible {
                if set.binary_search(&new).is_ok() {
                    continue;
                }
                let mut s = set.clone();
                s.remove(x);
                let at = s.binary_search(&new).unwrap_or_else(|e| e);
                s.insert(at, new);
                if !fits(&s, new) {
                    continue;
                }
                let t = time(&s);
                if t < best.as_ref().map_or(now, |b| b.0) {
                    best = Some((t, s));
                }
            }
        }
        match best {
            // Less than 0.1 % better is noise, not a reason to move.
            Some((t, s)) if t < now * 0.999 => {
                now = t;
                set = s;
            }
            _ => break,
        }
    }
    Ok(set)
}

/// Steps 2–4 on a large candidate set: balls of groups ([`zones`]).
/// Returns candidate sets of node indices (each sorted), best first: the
/// tied balls' picks, and the wider balls' when a prediction is asked for.
fn by_zones(
    q: &Query,
    v: &View,
    est: &Estimator,
    include: &[usize],
    stop: &Stop,
) -> Result<Vec<Vec<usize>>> {
    if q.min_bandwidth_mbps > 0.0 {
        return Err(Error::MinBandwidthSparse {
            max: DENSE_MAX_NODES,
        });
    }
    let balls = zones::balls(est, q.k, include, stop)?;
    let Some(best) = balls.iter().find(|b| b.diameter.is_finite()) else {
        return Err(Error::NoMeasuredSet {
            k: q.k,
            min_bandwidth_mbps: q.min_bandwidth_mbps,
        });
    };
    let lower = balls.iter().map(|b| b.radius).fold(f64::INFINITY, f64::min);
    let limit = tie_limit(best.diameter, v.levels, lower);
    let mut out = Vec::new();
    for ball in zones::tied(&balls, limit) {
        stopped(stop)?;
        if let Some(nodes) = zones::pick(est, ball, q.k, include, v.quality) {
            out.push(nodes);
        }
    }
    if !out.is_empty() {
        if q.allreduce_bytes > 0 {
            for ball in balls
                .iter()
                .filter(|b| b.diameter > limit && b.diameter.is_finite())
                .take(MAX_STARTS)
            {
                stopped(stop)?;
                out.extend(zones::pick(est, ball, q.k, include, v.quality));
            }
        }
        return Ok(out);
    }
    // Every tied ball holds a pair measured unreachable too often to fill
    // k: take the narrowest ball that can.
    balls
        .iter()
        .filter(|b| b.diameter.is_finite())
        .find_map(|b| zones::pick(est, b, q.k, include, v.quality))
        .map(|nodes| vec![nodes])
        .ok_or(Error::NoMeasuredSet {
            k: q.k,
            min_bandwidth_mbps: q.min_bandwidth_mbps,
        })
}

/// Place on what the latest recomputation read ([`Inferred`]): its
/// measured pairs and bandwidths, groups, quality and freshness, so a Place
/// needs no copy of the matrix. `labels` are the Node labels when the
/// aggregator watches Nodes.
pub fn place_on(
    inferred: &Inferred,
    q: &Query,
    labels: Option<&BTreeMap<String, Labels>>,
    stop: &Stop,
) -> Result<Placement> {
    let links = &inferred.links;
    let index: HashMap<&str, usize> = links
        .names
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    let zones = estimate::zones(&inferred.groups, &index);
    let facts = |n: &String| inferred.facts.get(n);
    let quality: Vec<Option<u32>> = links
        .names
        .iter()
        .map(|n| facts(n).and_then(|f| f.quality))
        .collect();
    // A node without facts has no measured pair: it is left out as "not
    // measured yet", not as stale.
    let fresh: Vec<bool> = links
        .names
        .iter()
        .map(|n| facts(n).is_none_or(|f| f.fresh))
        .collect();
    // What a job's flows can count on: a shared bottleneck a concurrent
    // test found counts like a slow pair.
    let bandwidth = |i: usize, j: usize| links.job_bandwidth(i, j);
    let loss = |i: usize, j: usize| links.loss(i, j);
    let view = View {
        names: &links.names,
        rtt: &links.rtt,
        zones: &zones,
        bandwidth: &bandwidth,
        loss: &loss,
        quality: &quality,
        fresh: &fresh,
        labels,
        levels: &inferred.thresholds,
    };
    place(q, &view, stop)
}

/// "4 excluded by request, 2 stale" from the per-node reasons.
fn tally(reasons: &[Option<String>]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in reasons.iter().flatten() {
        *counts.entry(r.as_str()).or_default() += 1;
    }
    if counts.is_empty() {
        return "none excluded".into();
    }
    counts
        .into_iter()
        .map(|(r, c)| format!("{c}: {r}"))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
pub(crate) mod tests;
