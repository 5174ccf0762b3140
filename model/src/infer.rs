//! From the link-state matrix to what is published about each node: the
//! distance matrix, nested groups with stable ids, figures and quality.
//!
//! Distances and figures use the *smoothed* STAMP/UDP figures (ICMP when a
//! pair has no UDP data), so one window does not reshuffle groups on its own;
//! the group tracker's hysteresis does the rest.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use netaware_proto::ProbeMethod;
use netaware_proto::v1::Smoothed;

use crate::groups::{self, GroupTracker, Thresholds};
use crate::labels::{NodeFacts, Peer};

use crate::matrix::Matrix;
use crate::quality::{self, Figures, PeerLink, Scales, Weights};
use crate::settle::{Raw, settle};

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

/// What Place reads, taken by the recomputation from the pairs it reads
/// anyway: a Place then costs neither a copy of the matrix nor a pass over
/// it (at 5,000 nodes those were 0.2 s and 0.9 s).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Links {
    /// Every node of the matrix, sorted; indices below are into this.
    pub names: Vec<String>,
    /// Each node's measured peers and the pair's RTT p50 (µs, worse
    /// direction, infinite = unreachable), sorted by peer
    /// ([`crate::place::View::rtt`]).
    pub rtt: Vec<Vec<(usize, f64)>>,
    /// Measured bandwidth (Mbit/s) of a pair, the lower direction, keyed
    /// (lower index, higher index).
    bandwidth: HashMap<(usize, usize), f64>,
    /// Round-trip loss (0–1, the worse direction's long-horizon figure,
    /// `placement_loss_ppm`) of the pairs that lose any, keyed (lower
    /// index, higher index); absent = none.
    loss: HashMap<(usize, usize), f64>,
    /// Per pair of members of a concurrently tested group: the share one
    /// flow got while the whole group sent at once (Mbit/s, the smallest
    /// when several tests hold the pair), keyed (lower index, higher
    /// index).
    shared: HashMap<(usize, usize), f64>,
}

impl Links {
    /// Pairs measured (either direction).
    pub fn pairs(&self) -> usize {
        self.rtt.iter().map(Vec::len).sum::<usize>() / 2
    }

    /// The measured bandwidth between nodes `i` and `j`.
    pub fn bandwidth(&self, i: usize, j: usize) -> Option<f64> {
        self.bandwidth.get(&(i.min(j), i.max(j))).copied()
    }

    /// The round-trip loss (0–1) measured between nodes `i` and `j`.
    pub fn loss(&self, i: usize, j: usize) -> f64 {
        self.loss.get(&(i.min(j), i.max(j))).copied().unwrap_or(0.0)
    }

    /// The bandwidth a job's flow between `i` and `j` can count on: the
    /// pair's measured bandwidth, capped by the share a flow got when their
    /// group was tested concurrently (a bottleneck the pair test, one flow
    /// alone, does not see). `None` while the pair is not measured.
    pub fn job_bandwidth(&self, i: usize, j: usize) -> Option<f64> {
        let pair = self.bandwidth(i, j)?;
        Some(
            self.shared
                .get(&(i.min(j), i.max(j)))
                .map_or(pair, |s| pair.min(*s)),
        )
    }
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
    /// The measured pairs it read, for Place.
    pub links: Links,
}

/// Keeps the group tracker, and what was published for each node, between
/// recomputations.
#[derive(Debug, Clone)]
pub struct Inference {
    config: InferConfig,
    tracker: GroupTracker,
    /// The facts of the latest recomputation, as published (settled).
    published: BTreeMap<String, NodeFacts>,
    /// Its raw figures, which a change must confirm ([`settle`]).
    raw: BTreeMap<String, Raw>,
}

/// The link figures towards a peer, chosen as [`choose`] does.
#[cfg(test)]
fn link(m: &Matrix, a: &str, b: &str, now: Instant) -> Option<Smoothed> {
    let mut best = None;
    for method in [ProbeMethod::StampUdp, ProbeMethod::IcmpEcho] {
        if let Some((s, _)) = m.smoothed(a, b, method, now) {
            best = Some(choose(best, method as i32, s));
        }
    }
    best.map(|(_, s)| s)
}

/// A pair losing more than this share of its probes is unreachable for
/// grouping and placement: its RTT describes the few packets that got
/// through, not a link a job can use.
pub const UNREACHABLE_LOSS_PPM: f64 = 500_000.0;

/// Worse of the two directions of a pair, or the one that exists, with
/// the pair's bandwidth (the quality figures of one pair). The
/// recomputation reads the same figures for every pair in one pass
/// ([`measured_pairs`]).
#[cfg(test)]
fn pair(m: &Matrix, a: &str, b: &str, now: Instant) -> Option<PeerLink> {
    combine(link(m, a, b, now), link(m, b, a, now)).map(|p| PeerLink {
        bandwidth_mbps: m.bandwidth(a, b),
        ..p
    })
}

/// The figures of one direction of a pair: the method that got answers
/// (STAMP first), else whichever has figures at all (then with an unknown
/// RTT, which reads as infinite: the worst case in quality and placement,
/// never close in grouping). `current` is the choice so far.
fn choose(current: Option<(i32, Smoothed)>, method: i32, s: Smoothed) -> (i32, Smoothed) {
    let udp = ProbeMethod::StampUdp as i32;
    match current {
        None => (method, s),
        Some((m, c)) => {
            let better = match (c.rtt_known, s.rtt_known) {
                (false, true) => true,
                (true, false) => false,
                // Both answered or neither: STAMP first.
                _ => method == udp && m != udp,
            };
            if better { (method, s) } else { (m, c) }
        }
    }
}

/// Worse of the two directions (`None`: not measured that way).
fn combine(x: Option<Smoothed>, y: Option<Smoothed>) -> Option<PeerLink> {
    let known = |s: &Smoothed, v: f64| if s.rtt_known { v } else { f64::INFINITY };
    let to = |s: Smoothed| PeerLink {
        rtt_p50_us: known(&s, s.rtt_p50_us),
        rtt_p99_us: known(&s, s.rtt_p99_us),
        jitter_us: known(&s, s.jitter_us),
        loss_ppm: s.loss_ppm,
        placement_loss_ppm: s.placement_loss_ppm,
        loss_probes: s.loss_probes,
        bandwidth_mbps: None,
    };
    match (x.map(to), y.map(to)) {
        (Some(x), Some(y)) => Some(PeerLink {
            rtt_p50_us: x.rtt_p50_us.max(y.rtt_p50_us),
            rtt_p99_us: x.rtt_p99_us.max(y.rtt_p99_us),
            jitter_us: x.jitter_us.max(y.jitter_us),
            loss_ppm: x.loss_ppm.max(y.loss_ppm),
            placement_loss_ppm: x.placement_loss_ppm.max(y.placement_loss_ppm),
            loss_probes: x.loss_probes.min(y.loss_probes),
            bandwidth_mbps: None,
        }),
        (Some(x), None) | (None, Some(x)) => Some(x),
        (None, None) => None,
    }
}

/// The measured pairs of `names` as adjacency lists (by index, both
/// directions) with the pair's figures ([`pair`]'s, without
/// bandwidth), read in one pass over the matrix. Pairs nobody measured are
/// absent: the clustering, group diameters, quality and nearest peers read
/// only these, so a recomputation costs the measured pairs, not every
/// possible one.
fn measured_pairs(m: &Matrix, names: &[String]) -> Vec<Vec<(usize, PeerLink)>> {
    let index: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    let mut directed: HashMap<(usize, usize), (i32, Smoothed)> = HashMap::new();
    for (a, b, method, s) in m.figures() {
        if let (Some(&i), Some(&j)) = (index.get(a), index.get(b)) {
            directed
                .entry((i, j))
                .and_modify(|e| *e = choose(Some(*e), method, *s))
                .or_insert((method, *s));
        }
    }
    let mut adj: Vec<Vec<(usize, PeerLink)>> = vec![Vec::new(); names.len()];
    for (&(i, j), &(_, s)) in &directed {
        let back = directed.get(&(j, i)).map(|(_, s)| *s);
        // Each pair once: from the lower index, or from the only direction.
        if back.is_some() && j < i {
            continue;
        }
        if let Some(p) = combine(Some(s), back) {
            adj[i].push((j, p));
            adj[j].push((i, p));
        }
    }
    for row in &mut adj {
        row.sort_by_key(|(j, _)| *j);
    }
    adj
}

/// The distance clustering reads: the RTT p50, infinite when unreachable.
fn distance(p: &PeerLink) -> f64 {
    if p.loss_ppm <= UNREACHABLE_LOSS_PPM {
        p.rtt_p50_us
    } else {
        f64::INFINITY
    }
}

/// What a recomputation reads of the matrix, in one pass (a fraction of
/// the recomputation's time): the clustering and scoring then run on it
/// alone, so the matrix (or the clone of it that was read) can be dropped
/// or changed meanwhile.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    /// Every node of the matrix, sorted.
    names: Vec<String>,
    /// Measured pairs ([`measured_pairs`]).
    adj: Vec<Vec<(usize, PeerLink)>>,
    /// Bandwidth of a pair, the lower direction, keyed (lower index,
    /// higher index).
    bandwidth: HashMap<(usize, usize), f64>,
    /// Concurrent-test shares ([`Links`]).
    shared: HashMap<(usize, usize), f64>,
    /// Whether each node's reports are fresh.
    fresh: Vec<bool>,
}

impl Reading {
    /// Read `m` as of `now`.
    pub fn of(m: &Matrix, now: Instant) -> Self {
        let names = m.node_names();
        let adj = measured_pairs(m, &names);
        let index: HashMap<&str, usize> = names
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i))
            .collect();
        let mut bandwidth: HashMap<(usize, usize), f64> = HashMap::new();
        for (a, b, mbps) in m.bandwidths() {
            if let (Some(&i), Some(&j)) = (index.get(a), index.get(b)) {
                bandwidth
                    .entry((i.min(j), i.max(j)))
                    .and_modify(|x| *x = x.min(mbps))
                    .or_insert(mbps);
            }
        }
        let mut shared: HashMap<(usize, usize), f64> = HashMap::new();
        for c in m.concurrent() {
            let members: Vec<usize> = c
                .members
                .iter()
                .filter_map(|n| index.get(n.as_str()).copied())
                .collect();
            for (x, &i) in members.iter().enumerate() {
                for &j in &members[x + 1..] {
                    shared
                        .entry((i.min(j), i.max(j)))
                        .and_modify(|v| *v = v.min(c.share_mbps))
                        .or_insert(c.share_mbps);
                }
            }
        }
        let fresh = names.iter().map(|x| m.reports_fresh(x, now)).collect();
        Self {
            names,
            adj,
            bandwidth,
            shared,
            fresh,
        }
    }
}

impl Inference {
    pub fn new(config: InferConfig) -> Self {
        Self {
            config,
            tracker: GroupTracker::new(config.hysteresis),
            published: BTreeMap::new(),
            raw: BTreeMap::new(),
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
        self.raw.remove(node);
    }

    /// Recompute groups and facts from the matrix as of `now` (wall clock
    /// `now_unix_us`). Facts (what gets published) only for nodes measured
    /// since start: a node known only from its labels keeps them untouched
    /// until its figures come. Figures are settled against what was
    /// published before ([`settle`]), so noise writes nothing.
    pub fn recompute(&mut self, m: &Matrix, now: Instant, now_unix_us: u64) -> Inferred {
        self.recompute_from(Reading::of(m, now), now_unix_us)
    }

    /// [`recompute`](Self::recompute) from what it reads of the matrix,
    /// taken before (elsewhere, by whoever owns the matrix).
    pub fn recompute_from(&mut self, reading: Reading, now_unix_us: u64) -> Inferred {
        let Reading {
            names,
            adj,
            bandwidth,
            shared,
            fresh,
        } = reading;
        let n = names.len();
        // With fixed thresholds nothing above the highest matters.
        let ceiling = match self.config.thresholds {
            groups::Thresholds::Fixed(t) => t[2],
            groups::Thresholds::Auto => f64::INFINITY,
        };
        let merges = groups::complete_linkage_sparse(
            n,
            adj.iter().enumerate().flat_map(|(i, row)| {
                row.iter()
                    .filter(move |(j, _)| *j > i)
                    .map(move |(j, p)| (i, *j, distance(p)))
            }),
            ceiling,
        );
        let thresholds = groups::thresholds_for(self.config.thresholds, &merges);
        let levels = thresholds.map(|t| groups::cut(&merges, n, t));
        // A node with no measured pair yet is not placed: it would land in a
        // group of its own, be labelled so, and move again a few
        // recomputations later. It is placed once it has data.
        let measured: Vec<usize> = (0..n)
            .filter(|&i| adj[i].iter().any(|(_, p)| distance(p).is_finite()))
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
        // Each node's group at each level as a number (comparing numbers,
        // not strings, in the passes over every measured pair below).
        let mut numbers: [HashMap<&str, usize>; 3] = Default::default();
        let group_of: Vec<Option<[usize; 3]>> = names
            .iter()
            .map(|x| {
                assignment.get(x).map(|ids| {
                    [0, 1, 2].map(|l| {
                        let next = numbers[l].len();
                        *numbers[l].entry(ids[l].as_str()).or_insert(next)
                    })
                })
            })
            .collect();
        // Each group's largest measured distance between two members.
        let mut diameter_of: [Vec<f64>; 3] = [0, 1, 2].map(|l| vec![0.0; numbers[l].len()]);
        for (i, row) in adj.iter().enumerate() {
            let Some(gi) = group_of[i] else { continue };
            for (j, p) in row {
                if let Some(gj) = group_of[*j] {
                    for l in 0..3 {
                        if gi[l] == gj[l] {
                            let e = &mut diameter_of[l][gi[l]];
                            *e = e.max(distance(p));
                        }
                    }
                }
            }
        }
        let diameters: [BTreeMap<&str, f64>; 3] = [0, 1, 2].map(|l| {
            numbers[l]
                .iter()
                .map(|(id, &k)| (*id, diameter_of[l][k]))
                .collect()
        });
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

        // Each node's measured peers in its own l1 group (l2, then l3, if
        // it has none there) and what it shows with all of them. Only one
        // level: past a rack, sparse plans measure a sample of the other
        // racks, and figures over a mix of rack mates (50 µs) and samples
        // (300 µs) would follow the share of each in the sample, not the
        // node.
        let group_peers: Vec<Vec<(usize, PeerLink)>> = (0..n)
            .map(|i| {
                let Some(mine) = group_of[i] else {
                    return Vec::new();
                };
                let peers_in = |level: usize| -> Vec<(usize, PeerLink)> {
                    adj[i]
                        .iter()
                        .filter(|(j, _)| group_of[*j].is_some_and(|g| g[level] == mine[level]))
                        .map(|(j, p)| {
                            let bandwidth_mbps = bandwidth.get(&(i.min(*j), i.max(*j))).copied();
                            (
                                *j,
                                PeerLink {
                                    bandwidth_mbps,
                                    ..*p
                                },
                            )
                        })
                        .collect()
                };
                // The nearest level with a measured peer.
                (0..3)
                    .map(peers_in)
                    .find(|peers| !peers.is_empty())
                    .unwrap_or_default()
            })
            .collect();
        let own: Vec<Option<quality::Own>> = group_peers
            .iter()
            .map(|peers| quality::own(peers.iter().map(|(_, p)| p)))
            .collect();

        let mut facts = BTreeMap::new();
        let mut raws = BTreeMap::new();
        for (i, node) in names.iter().enumerate() {
            let (Some(ids), Some(_)) = (assignment.get(node), group_of[i]) else {
                continue;
            };
            // Measured since start (a node known only from its labels
            // keeps them untouched until its figures come).
            if adj[i].is_empty() {
                continue;
            }
            // The figures leave out peers clearly worse with everyone than
            // this node (all peers if that leaves none).
            let kept = |(j, _): &&(usize, PeerLink)| match (&own[*j], &own[i]) {
                (Some(peer), Some(me)) => !quality::clearly_worse(peer, me),
                _ => true,
            };
            let mut peers: Vec<PeerLink> = group_peers[i]
                .iter()
                .filter(kept)
                .map(|(_, p)| *p)
                .collect();
            if peers.is_empty() {
                peers = group_peers[i].iter().map(|(_, p)| *p).collect();
            }
            let figures: Option<Figures> = quality::figures(&peers);
            let quality =
                figures.map(|f| quality::score(&f, &self.config.weights, &self.config.scales));
            let fresh = fresh[i];
            // Rank by the distances already computed; read the full pair
            // figures (for loss) only for the peers kept.
            let mut ranked: Vec<(u64, &String, &PeerLink)> = adj[i]
                .iter()
                .filter(|(_, p)| distance(p).is_finite())
                .map(|(j, p)| (distance(p).max(0.0).round() as u64, &names[*j], p))
                .collect();
            // Every measured peer is a candidate: settling keeps the listed
            // ones unless a newcomer is clearly nearer, and a listed peer
            // cut off here by noise would change the list after all.
            ranked.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
            let mut nearest: Vec<Peer> = ranked
                .into_iter()
                .map(|(_, p, l)| Peer {
                    node: p.clone(),
                    rtt_p50_us: l.rtt_p50_us.max(0.0).round() as u64,
                    loss_ppm: l.loss_ppm.max(0.0).round() as u64,
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
            let (settled, raw) = settle(
                self.published.get(node),
                self.raw.get(node),
                raw,
                now_unix_us,
                &thresholds,
            );
            facts.insert(node.clone(), settled);
            raws.insert(node.clone(), raw);
        }
        self.published = facts.clone();
        self.raw = raws;
        let rtt = adj
            .iter()
            .map(|row| row.iter().map(|(j, p)| (*j, distance(p))).collect())
            .collect();
        let loss = adj
            .iter()
            .enumerate()
            .flat_map(|(i, row)| {
                row.iter()
                    .filter(move |(j, p)| *j > i && p.placement_loss_ppm > 0.0)
                    .map(move |(j, p)| ((i, *j), p.placement_loss_ppm / 1e6))
            })
            .collect();
        Inferred {
            facts,
            groups,
            thresholds,
            moved,
            computed_unix_us: now_unix_us,
            links: Links {
                names,
                rtt,
                bandwidth,
                loss,
                shared,
            },
        }
    }
}

#[cfg(test)]
mod tests;
