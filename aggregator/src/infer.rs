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
            thresholds: Thresholds::Fixed(groups::DEFAULT_THRESHOLDS_US),
            hysteresis: 3,
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

/// Keeps the group tracker between recomputations.
#[derive(Debug, Clone)]
pub struct Inference {
    config: InferConfig,
    tracker: GroupTracker,
}

/// The link figures towards a peer, from whichever method has data.
fn link(m: &Matrix, a: &str, b: &str, now: Instant) -> Option<(Smoothed, bool)> {
    m.smoothed(a, b, ProbeMethod::StampUdp, now)
        .or_else(|| m.smoothed(a, b, ProbeMethod::IcmpEcho, now))
}

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
    let to = |s: Smoothed| PeerLink {
        rtt_p50_us: s.rtt_p50_us,
        rtt_p99_us: s.rtt_p99_us,
        jitter_us: s.jitter_us,
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
/// measured are infinitely far.
pub fn distances(m: &Matrix, names: &[String], now: Instant) -> Distances {
    let n = names.len();
    let mut dist = Distances::new(n);
    for i in 0..n {
        for j in i + 1..n {
            if let Some(p) = pair_probed(m, &names[i], &names[j], now) {
                dist.set(i, j, p.rtt_p50_us);
            }
        }
    }
    dist
}

/// The node's own agent delivered a window recently (towards any peer).
pub fn is_fresh(m: &Matrix, node: &str, names: &[String], now: Instant) -> bool {
    names
        .iter()
        .filter(|p| p.as_str() != node)
        .any(|p| link(m, node, p, now).is_some_and(|(_, stale)| !stale))
}

impl Inference {
    pub fn new(config: InferConfig) -> Self {
        Self {
            config,
            tracker: GroupTracker::new(config.hysteresis),
        }
    }

    /// Recompute groups and facts from the matrix as of `now`.
    pub fn recompute(&mut self, m: &Matrix, now: Instant) -> Inferred {
        let names = m.node_names();
        let n = names.len();
        let dist = distances(m, &names, now);
        let merges = groups::complete_linkage(&dist);
        let thresholds = groups::thresholds_for(self.config.thresholds, &merges);
        let levels = thresholds.map(|t| groups::cut(&merges, n, t));
        // A node with no measured pair yet is not placed: it would land in a
        // group of its own, be labelled so, and move again a few
        // recomputations later. It is placed once it has data.
        let measured: Vec<usize> = (0..n)
            .filter(|&i| (0..n).any(|j| j != i && dist.get(i, j).is_finite()))
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
        let index: BTreeMap<&str, usize> = names
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i))
            .collect();
        let diameter = |ms: &[String]| -> f64 {
            let mut d: f64 = 0.0;
            for a in ms {
                for b in ms {
                    if let (Some(&i), Some(&j)) = (index.get(a.as_str()), index.get(b.as_str())) {
                        d = d.max(dist.get(i, j));
                    }
                }
            }
            d
        };
        let groups: Vec<Group> = members
            .iter()
            .enumerate()
            .flat_map(|(l, by_id)| by_id.iter().map(move |(id, ms)| (l, id, ms)))
            .map(|(l, id, ms)| Group {
                level: l as u32 + 1,
                id: id.clone(),
                members: ms.clone(),
                max_rtt_us: diameter(ms),
            })
            .collect();

        let mut facts = BTreeMap::new();
        for (node, ids) in &assignment {
            let peers_in = |level: usize| -> Vec<PeerLink> {
                members[level]
                    .get(&ids[level])
                    .map(|ms| {
                        ms.iter()
                            .filter(|p| *p != node)
                            .filter_map(|p| pair(m, node, p, now))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let mut peers = peers_in(1);
            if peers.is_empty() {
                peers = peers_in(2);
            }
            let figures: Option<Figures> = quality::figures(&peers);
            let quality =
                figures.map(|f| quality::score(&f, &self.config.weights, &self.config.scales));
            let fresh = is_fresh(m, node, &names, now);
            // Rank by the distances already computed; read the full pair
            // figures (for loss) only for the peers kept.
            let me = index.get(node.as_str()).copied();
            let mut ranked: Vec<(u64, &String)> = names
                .iter()
                .enumerate()
                .filter(|(_, p)| *p != node)
                .filter_map(|(j, p)| {
                    let d = dist.get(me?, j);
                    d.is_finite().then(|| (d.max(0.0).round() as u64, p))
                })
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
            facts.insert(
                node.clone(),
                NodeFacts {
                    groups: ids.clone(),
                    quality,
                    figures,
                    fresh,
                    nearest,
                },
            );
        }
        Inferred {
            facts,
            groups,
            thresholds,
            moved,
            computed_unix_us: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netaware_proto::v1::{Hello, LinkWindow};
    use std::time::Duration;

    fn hello(name: &str) -> Hello {
        Hello {
            node_name: name.into(),
            probe_addresses: vec!["192.0.2.1".into()],
            capabilities: vec![ProbeMethod::StampUdp as i32],
            ..Default::default()
        }
    }

    /// A matrix of nodes `{region}-{k}` with RTT 250 µs inside a region and
    /// 5 ms across; `lossy` loses 2 % towards everyone.
    fn lab(regions: &[&str], per_region: usize, lossy: Option<&str>, now: Instant) -> Matrix {
        let mut m = Matrix::new(1.0, Duration::from_secs(30));
        let names: Vec<String> = regions
            .iter()
            .flat_map(|r| (1..=per_region).map(move |k| format!("{r}-{k}")))
            .collect();
        for n in &names {
            m.connect(hello(n));
        }
        for a in &names {
            for b in &names {
                if a == b {
                    continue;
                }
                let same = a.split('-').next() == b.split('-').next();
                let rtt_us = if same { 250 } else { 5_000 };
                let bad = lossy == Some(a.as_str()) || lossy == Some(b.as_str());
                let w = LinkWindow {
                    peer: b.clone(),
                    method: ProbeMethod::StampUdp as i32,
                    window_start_unix_us: 1,
                    sent: 100,
                    received: if bad { 98 } else { 100 },
                    rtt_p50_ns: rtt_us * 1000,
                    rtt_p99_ns: rtt_us * 2000,
                    jitter_ns: 20_000,
                    ..Default::default()
                };
                m.apply(a, w, false, now);
            }
        }
        m
    }

    #[test]
    fn l2_groups_are_the_regions_and_the_lossy_node_scores_lowest() {
        let now = Instant::now();
        let m = lab(&["dj", "se", "gj"], 4, Some("dj-4"), now);
        let mut inf = Inference::new(InferConfig::default());
        let out = inf.recompute(&m, now);
        let l2 = |n: &str| out.facts[n].groups[1].clone();
        for r in ["dj", "se", "gj"] {
            let g = l2(&format!("{r}-1"));
            for k in 2..=4 {
                assert_eq!(l2(&format!("{r}-{k}")), g);
            }
        }
        assert_ne!(l2("dj-1"), l2("se-1"));
        assert_ne!(l2("se-1"), l2("gj-1"));
        // l3 (10 ms) holds everyone: 5 ms across regions.
        assert!(
            out.facts
                .values()
                .all(|f| f.groups[2] == out.facts["dj-1"].groups[2])
        );
        let q = |n: &str| out.facts[n].quality.unwrap();
        for k in 1..=3 {
            assert!(
                q("dj-4") < q(&format!("dj-{k}")),
                "{} vs {}",
                q("dj-4"),
                q(&format!("dj-{k}"))
            );
        }
        // Its neighbours are not dragged down: same score as another region's nodes.
        assert_eq!(q("dj-1"), q("se-1"));
        assert!(out.facts.values().all(|f| f.fresh));
        // Nearest peers: the three of its own region first.
        let near: Vec<&str> = out.facts["se-2"]
            .nearest
            .iter()
            .map(|p| p.node.as_str())
            .collect();
        assert_eq!(&near[..3], ["se-1", "se-3", "se-4"]);
        assert_eq!(near.len(), 11);
        let l2_groups: Vec<&Group> = out.groups.iter().filter(|g| g.level == 2).collect();
        assert_eq!(l2_groups.len(), 3);
        assert!(
            l2_groups
                .iter()
                .all(|g| g.members.len() == 4 && g.max_rtt_us == 250.0)
        );
    }

    #[test]
    fn a_node_without_measurements_is_not_placed_yet() {
        let now = Instant::now();
        let mut m = lab(&["a", "b"], 2, None, now);
        m.connect(hello("new-1"));
        let mut inf = Inference::new(InferConfig::default());
        let out = inf.recompute(&m, now);
        assert_eq!(out.facts.len(), 4);
        assert!(!out.facts.contains_key("new-1"));
    }

    #[test]
    fn stale_data_keeps_groups_and_turns_fresh_false() {
        let now = Instant::now();
        let m = lab(&["a", "b"], 2, None, now);
        let mut inf = Inference::new(InferConfig::default());
        let first = inf.recompute(&m, now);
        let later = inf.recompute(&m, now + Duration::from_secs(60));
        for (node, f) in &later.facts {
            assert!(!f.fresh, "{node}");
            assert_eq!(f.groups, first.facts[node].groups);
            assert_eq!(f.quality, first.facts[node].quality);
        }
    }
}
