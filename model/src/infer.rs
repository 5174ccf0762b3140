//! From the link-state matrix to what is published about each node: the
//! distance matrix, nested groups with stable ids, figures and quality.
//!
//! Distances and figures use the *smoothed* STAMP/UDP figures (ICMP when a
//! pair has no UDP data), so one window does not reshuffle groups on its own;
//! the group tracker's hysteresis does the rest.

use std::collections::BTreeMap;
use std::time::Instant;

use netaware_proto::ProbeMethod;
use netaware_proto::v1::Smoothed;

use crate::groups::{self, Distances, GroupTracker, Thresholds};
use crate::labels::{NodeFacts, Peer};

/// Peers listed in a node's summary annotation, nearest first.
const MAX_NEAREST: usize = 32;
use crate::matrix::Matrix;
use crate::quality::{self, Figures, PeerLink, Scales, Weights};
use crate::settle::settle;

/// Recomputations a node's new groups must hold before it moves: one noisy
/// window moves nobody.
pub const DEFAULT_HYSTERESIS: u32 = 3;

/// Settings of the inference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InferConfig {
    pub thresholds: Thresholds,
    /// Recomputations a new group must hold before a node moves.
    pub hysteresis: u32,
    pub weights: Weights,
    pub scales: Scales,
}

impl Default for InferConfig {
    fn default() -> Self {
        Self {
            thresholds: Thresholds::default(),
            hysteresis: DEFAULT_HYSTERESIS,
            weights: Weights::default(),
            scales: Scales::default(),
        }
    }
}

/// One group as served by ListGroups.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// 1, 2 or 3.
    pub level: u32,
    pub id: String,
    pub members: Vec<String>,
    /// Largest distance between two members (µs); 0 for a single member.
    pub max_rtt_us: f64,
}

/// Result of one recomputation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inferred {
    pub facts: BTreeMap<String, NodeFacts>,
    pub groups: Vec<Group>,
    /// Thresholds used (µs), after `auto` resolution.
    pub thresholds: [f64; 3],
    /// Nodes whose groups changed in this recomputation.
    pub moved: Vec<String>,
    /// Wall-clock time of the recomputation (µs since the Unix epoch).
    pub computed_unix_us: u64,
}

/// Keeps the group tracker, and what was published for each node, between
/// recomputations.
#[derive(Debug, Clone)]
pub struct Inference {
    config: InferConfig,
    tracker: GroupTracker,
    /// The facts of the latest recomputation, as published (settled).
    published: BTreeMap<String, NodeFacts>,
}

/// The link figures towards a peer: the method that got answers (STAMP
/// first), else whichever has figures at all (then with an unknown RTT).
fn link(m: &Matrix, a: &str, b: &str, now: Instant) -> Option<(Smoothed, bool)> {
    let udp = m.smoothed(a, b, ProbeMethod::StampUdp, now);
    let icmp = m.smoothed(a, b, ProbeMethod::IcmpEcho, now);
    let answered = |l: &Option<(Smoothed, bool)>| l.as_ref().is_some_and(|(s, _)| s.rtt_known);
    if answered(&udp) || (!answered(&icmp) && udp.is_some()) {
        udp
    } else {
        icmp
    }
}

/// A pair losing more than this share of its probes is unreachable for
/// grouping and placement: its RTT describes the few packets that got
/// through, not a link a job can use.
pub const UNREACHABLE_LOSS_PPM: f64 = 500_000.0;

/// Worse of the two directions of a pair, or the one that exists, with
/// the pair's bandwidth (for the quality figures).
fn pair(m: &Matrix, a: &str, b: &str, now: Instant) -> Option<PeerLink> {
    pair_probed(m, a, b, now).map(|p| PeerLink {
        bandwidth_mbps: m.bandwidth(a, b),
        ..p
    })
}

/// The probe figures of [`pair`] alone: distances and nearest peers need no
/// bandwidth, and looking it up for every pair would cost as much again.
fn pair_probed(m: &Matrix, a: &str, b: &str, now: Instant) -> Option<PeerLink> {
    // An RTT never answered is infinite: the worst case in quality and
    // placement, and never close in grouping.
    let known = |s: &Smoothed, v: f64| if s.rtt_known { v } else { f64::INFINITY };
    let to = |s: Smoothed| PeerLink {
        rtt_p50_us: known(&s, s.rtt_p50_us),
        rtt_p99_us: known(&s, s.rtt_p99_us),
        jitter_us: known(&s, s.jitter_us),
        loss_ppm: s.loss_ppm,
        bandwidth_mbps: None,
    };
    match (link(m, a, b, now), link(m, b, a, now)) {
        (Some((x, _)), Some((y, _))) => {
            let (x, y) = (to(x), to(y));
            Some(PeerLink {
                rtt_p50_us: x.rtt_p50_us.max(y.rtt_p50_us),
                rtt_p99_us: x.rtt_p99_us.max(y.rtt_p99_us),
                jitter_us: x.jitter_us.max(y.jitter_us),
                loss_ppm: x.loss_ppm.max(y.loss_ppm),
                bandwidth_mbps: None,
            })
        }
        (Some((x, _)), None) | (None, Some((x, _))) => Some(to(x)),
        (None, None) => None,
    }
}

/// RTT p50 (µs) of every pair of `names`, the worse direction; pairs not
/// measured, never answered, or losing more than [`UNREACHABLE_LOSS_PPM`]
/// are infinitely far.
pub fn distances(m: &Matrix, names: &[String], now: Instant) -> Distances {
    let n = names.len();
    let mut dist = Distances::new(n);
    for i in 0..n {
        for j in i + 1..n {
            if let Some(p) = pair_probed(m, &names[i], &names[j], now)
                && p.loss_ppm <= UNREACHABLE_LOSS_PPM
            {
                dist.set(i, j, p.rtt_p50_us);
            }
        }
    }
    dist
}

/// The node's own agent delivered a window recently (towards any peer).
pub fn is_fresh(m: &Matrix, node: &str, now: Instant) -> bool {
    m.reports_fresh(node, now)
}

/// The measured pairs of `names` as adjacency lists (by index, both
/// directions): the distance is the pair's RTT p50 (the worse direction),
/// infinite when never answered or losing more than
/// [`UNREACHABLE_LOSS_PPM`]. Pairs nobody measured are absent: the
/// clustering, group diameters and nearest peers read only these, so a
/// recomputation costs the measured pairs, not every possible one.
fn measured_pairs(m: &Matrix, names: &[String], now: Instant) -> Vec<Vec<(usize, f64)>> {
    let index: BTreeMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    let mut adj: Vec<Vec<(usize, f64)>> = vec![Vec::new(); names.len()];
    for (a, b) in m.measured_pairs() {
        let (Some(&i), Some(&j)) = (index.get(a), index.get(b)) else {
            continue;
        };
        if let Some(p) = pair_probed(m, a, b, now) {
            let d = if p.loss_ppm <= UNREACHABLE_LOSS_PPM {
                p.rtt_p50_us
            } else {
                f64::INFINITY
            };
            adj[i].push((j, d));
            adj[j].push((i, d));
        }
    }
    adj
}

impl Inference {
    pub fn new(config: InferConfig) -> Self {
        Self {
            config,
            tracker: GroupTracker::new(config.hysteresis),
            published: BTreeMap::new(),
        }
    }

    /// Start from group ids published before (see [`GroupTracker::seed`]).
    pub fn seed(&mut self, assignment: &groups::Assignment) {
        self.tracker.seed(assignment);
    }

    /// The published groups (what probe plans are built from).
    pub fn assignment(&self) -> &groups::Assignment {
        self.tracker.assignment()
    }

    /// Forget a node that left the cluster: it keeps no group.
    pub fn forget(&mut self, node: &str) {
        self.tracker.forget(node);
        self.published.remove(node);
    }

    /// Recompute groups and facts from the matrix as of `now` (wall clock
    /// `now_unix_us`). Facts (what gets published) only for nodes measured
    /// since start: a node known only from its labels keeps them untouched
    /// until its figures come. Figures are settled against what was
    /// published before ([`settle`]), so noise writes nothing.
    pub fn recompute(&mut self, m: &Matrix, now: Instant, now_unix_us: u64) -> Inferred {
        let names = m.node_names();
        let n = names.len();
        let adj = measured_pairs(m, &names, now);
        let merges = groups::complete_linkage_sparse(
            n,
            adj.iter().enumerate().flat_map(|(i, row)| {
                row.iter()
                    .filter(move |(j, _)| *j > i)
                    .map(move |&(j, d)| (i, j, d))
            }),
        );
        let thresholds = groups::thresholds_for(self.config.thresholds, &merges);
        let levels = thresholds.map(|t| groups::cut(&merges, n, t));
        // A node with no measured pair yet is not placed: it would land in a
        // group of its own, be labelled so, and move again a few
        // recomputations later. It is placed once it has data.
        let measured: Vec<usize> = (0..n)
            .filter(|&i| adj[i].iter().any(|(_, d)| d.is_finite()))
            .collect();
        let placed_names: Vec<String> = measured.iter().map(|&i| names[i].clone()).collect();
        let placed_levels: [Vec<usize>; 3] =
            [0, 1, 2].map(|l| measured.iter().map(|&i| levels[l][i]).collect());
        let moved = self.tracker.update(&placed_names, &placed_levels);
        let assignment = self.tracker.assignment().clone();

        // Members of every published group, per level.
        let mut members: [BTreeMap<String, Vec<String>>; 3] = Default::default();
        for (node, ids) in &assignment {
            for (l, id) in ids.iter().enumerate() {
                members[l].entry(id.clone()).or_default().push(node.clone());
            }
        }
        // Each group's largest measured distance between two members.
        let ids: Vec<Option<&[String; 3]>> = names.iter().map(|x| assignment.get(x)).collect();
        let mut diameters: [BTreeMap<&str, f64>; 3] = Default::default();
        for (i, row) in adj.iter().enumerate() {
            let Some(gi) = ids[i] else { continue };
            for &(j, d) in row {
                if let Some(gj) = ids[j] {
                    for l in 0..3 {
                        if gi[l] == gj[l] {
                            let e = diameters[l].entry(gi[l].as_str()).or_insert(0.0);
                            *e = e.max(d);
                        }
                    }
                }
            }
        }
        let groups: Vec<Group> = members
            .iter()
            .enumerate()
            .flat_map(|(l, by_id)| by_id.iter().map(move |(id, ms)| (l, id, ms)))
            .map(|(l, id, ms)| Group {
                level: l as u32 + 1,
                id: id.clone(),
                members: ms.clone(),
                max_rtt_us: diameters[l].get(id.as_str()).copied().unwrap_or(0.0),
            })
            .collect();

        let measured_nodes = m.measured_nodes();
        let mut facts = BTreeMap::new();
        for (i, node) in names.iter().enumerate() {
            let Some(ids) = assignment.get(node) else {
                continue;
            };
            if !measured_nodes.contains(node.as_str()) {
                continue;
            }
            // Measured peers in the node's own group at `level`.
            let peers_in = |level: usize| -> Vec<PeerLink> {
                adj[i]
                    .iter()
                    .filter(|(j, _)| ids_at(&assignment, &names[*j], level) == Some(&ids[level]))
                    .filter_map(|(j, _)| pair(m, node, &names[*j], now))
                    .collect()
            };
            let mut peers = peers_in(1);
            if peers.is_empty() {
                peers = peers_in(2);
            }
            let figures: Option<Figures> = quality::figures(&peers);
            let quality =
                figures.map(|f| quality::score(&f, &self.config.weights, &self.config.scales));
            let fresh = is_fresh(m, node, now);
            // Rank by the distances already computed; read the full pair
            // figures (for loss) only for the peers kept.
            let mut ranked: Vec<(u64, &String)> = adj[i]
                .iter()
                .filter(|(_, d)| d.is_finite())
                .map(|&(j, d)| (d.max(0.0).round() as u64, &names[j]))
                .collect();
            ranked.sort();
            ranked.truncate(MAX_NEAREST);
            let mut nearest: Vec<Peer> = ranked
                .into_iter()
                .filter_map(|(_, p)| {
                    pair_probed(m, node, p, now).map(|l| Peer {
                        node: p.clone(),
                        rtt_p50_us: l.rtt_p50_us.max(0.0).round() as u64,
                        loss_ppm: l.loss_ppm.max(0.0).round() as u64,
                    })
                })
                .collect();
            nearest.sort_by(|a, b| (a.rtt_p50_us, &a.node).cmp(&(b.rtt_p50_us, &b.node)));
            let raw = NodeFacts {
                groups: ids.clone(),
                quality,
                figures,
                fresh,
                nearest,
                summary_since_unix_us: now_unix_us,
            };
            facts.insert(
                node.clone(),
                settle(self.published.get(node), raw, now_unix_us),
            );
        }
        self.published = facts.clone();
        Inferred {
            facts,
            groups,
            thresholds,
            moved,
            computed_unix_us: now_unix_us,
        }
    }
}

/// The published group id of `node` at `level`.
fn ids_at<'a>(a: &'a groups::Assignment, node: &str, level: usize) -> Option<&'a String> {
    a.get(node).map(|ids| &ids[level])
}

#[cfg(test)]
mod tests;
