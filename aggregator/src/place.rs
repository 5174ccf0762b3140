//! Choosing k nodes whose largest pairwise RTT (the set's *diameter*) is as
//! small as possible: one slow link paces a whole all-reduce ring.
//!
//! The problem is NP-hard and no algorithm does better than a factor 2 unless
//! P = NP. For distances that obey the triangle inequality, the ball around
//! the best centre (a node and its k − 1 nearest) is within a factor 2 of the
//! optimum: every member is within r of the centre, so any two are within 2r,
//! and the optimum's diameter is at least r for the best centre. Local search
//! then swaps a member for an outsider while that shrinks the diameter.
//! Unmeasured pairs are infinitely far, so a set is never chosen across them
//! when any measured set exists.

use crate::groups::Distances;

/// Nodes that must or may be chosen (indices into the distance matrix).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Candidates {
    /// Nodes allowed in the answer.
    pub eligible: Vec<usize>,
    /// Nodes that must be in the answer (a subset of `eligible`).
    pub include: Vec<usize>,
}

/// The chosen set and its diameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// Chosen node indices, sorted.
    pub nodes: Vec<usize>,
    /// Largest distance between two chosen nodes (0 for one node).
    pub diameter: f64,
}

/// Why no set can be chosen.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlaceError {
    #[error("k must be at least 1")]
    ZeroK,
    #[error("k = {k} but only {eligible} nodes are eligible")]
    TooFewEligible { k: usize, eligible: usize },
    #[error("{include} nodes must be included but k is only {k}")]
    TooManyIncluded { k: usize, include: usize },
    #[error("node {0} must be included but is not eligible")]
    IncludeNotEligible(usize),
    #[error(
        "k = {k} but only {eligible} of {known} known nodes are eligible ({why}); ask for fewer nodes or relax the constraints"
    )]
    TooFewEligibleBecause {
        k: usize,
        eligible: usize,
        known: usize,
        why: String,
    },
    #[error("{role} names unknown node '{name}' (no agent with that node name ever connected)")]
    UnknownNode { role: &'static str, name: String },
    #[error("node '{0}' is both included and excluded")]
    IncludedAndExcluded(String),
    #[error("node '{name}' must be included but is not eligible: {reason}")]
    IncludeIneligible { name: String, reason: String },
    #[error(
        "a label selector needs the Node labels, but this aggregator has no Kubernetes connection (dry run or no kubeconfig)"
    )]
    NoLabels,
    #[error("min_bandwidth_mbps must be a finite number >= 0, got {0}")]
    BadMinBandwidth(f64),
    #[error(
        "no {k} nodes whose every pair has a measured bandwidth of at least {min_bandwidth_mbps} Mbit/s and a measured RTT; lower the minimum, ask for fewer nodes, or wait for more measurements"
    )]
    NoMeasuredSet { k: usize, min_bandwidth_mbps: f64 },
}

/// Largest pairwise distance of a set.
pub fn diameter(d: &Distances, set: &[usize]) -> f64 {
    let mut m: f64 = 0.0;
    for (x, &a) in set.iter().enumerate() {
        for &b in &set[x + 1..] {
            m = m.max(d.get(a, b));
        }
    }
    m
}

fn check(k: usize, c: &Candidates) -> Result<(), PlaceError> {
    if k == 0 {
        return Err(PlaceError::ZeroK);
    }
    if let Some(&bad) = c.include.iter().find(|i| !c.eligible.contains(i)) {
        return Err(PlaceError::IncludeNotEligible(bad));
    }
    if c.include.len() > k {
        return Err(PlaceError::TooManyIncluded {
            k,
            include: c.include.len(),
        });
    }
    if c.eligible.len() < k {
        return Err(PlaceError::TooFewEligible {
            k,
            eligible: c.eligible.len(),
        });
    }
    Ok(())
}

/// The ball around `centre`: the required nodes, then the nearest others.
fn ball(d: &Distances, c: &Candidates, centre: usize, k: usize) -> Vec<usize> {
    let mut set: Vec<usize> = c.include.clone();
    if !set.contains(&centre) {
        set.push(centre);
    }
    let mut others: Vec<usize> = c
        .eligible
        .iter()
        .copied()
        .filter(|x| !set.contains(x))
        .collect();
    // Nearest first; ties by index, so the answer is deterministic.
    others.sort_by(|&a, &b| {
        d.get(centre, a)
            .total_cmp(&d.get(centre, b))
            .then(a.cmp(&b))
    });
    set.extend(others.into_iter().take(k.saturating_sub(set.len())));
    set.truncate(k.max(c.include.len()));
    set
}

/// Whether a ball of k can grow around `centre`: with required nodes the
/// centre is one more member, so a centre outside them must leave room.
fn may_centre(c: &Candidates, centre: usize, k: usize) -> bool {
    c.include.contains(&centre) || c.include.len() < k
}

/// The distinct centre balls of size k, smallest diameter first.
pub fn balls(d: &Distances, k: usize, c: &Candidates) -> Result<Vec<Choice>, PlaceError> {
    check(k, c)?;
    let mut out: Vec<Choice> = Vec::new();
    for &centre in &c.eligible {
        if !may_centre(c, centre, k) {
            continue;
        }
        let mut set = ball(d, c, centre, k);
        if set.len() != k {
            continue;
        }
        set.sort_unstable();
        if out.iter().any(|o| o.nodes == set) {
            continue;
        }
        let diameter = diameter(d, &set);
        out.push(Choice {
            nodes: set,
            diameter,
        });
    }
    // Stable: equal diameters keep the centre order, so answers are repeatable.
    out.sort_by(|a, b| a.diameter.total_cmp(&b.diameter));
    Ok(out)
}

/// A lower bound on the optimum's diameter: the smallest ball radius. For
/// any member c of an optimal set, the ball around c reaches its k − 1
/// nearest within the optimum's diameter, so the smallest radius over all
/// centres is at most the optimum.
pub fn lower_bound(d: &Distances, k: usize, c: &Candidates) -> f64 {
    c.eligible
        .iter()
        .filter(|&&centre| may_centre(c, centre, k))
        .map(|&centre| {
            ball(d, c, centre, k)
                .iter()
                .map(|&x| d.get(centre, x))
                .fold(0.0, f64::max)
        })
        .fold(f64::INFINITY, f64::min)
}

/// Centre-ball 2-approximation followed by swap local search.
pub fn choose(d: &Distances, k: usize, c: &Candidates) -> Result<Choice, PlaceError> {
    let Some(start) = balls(d, k, c)?.into_iter().next() else {
        return Err(PlaceError::TooFewEligible {
            k,
            eligible: c.eligible.len(),
        });
    };
    // Larger is better: the negated diameter.
    let nodes = swap_search(start.nodes, c, -start.diameter, |s| Some(-diameter(d, s)));
    Ok(Choice {
        diameter: diameter(d, &nodes),
        nodes,
    })
}

/// Among sets whose diameter stays within `limit`, move to a better one by
/// `key` (larger is better), one swap at a time, while a swap improves it.
///
/// Used to break near-ties: measured RTTs of nodes in one zone differ by
/// noise, and between sets that are equally good for latency the one with
/// the faster links and healthier nodes is better for the job.
pub fn refine<K: PartialOrd>(
    d: &Distances,
    choice: Choice,
    c: &Candidates,
    limit: f64,
    key: impl Fn(&[usize]) -> K,
) -> Choice {
    let start = key(&choice.nodes);
    let nodes = swap_search(choice.nodes, c, start, |s| {
        (diameter(d, s) <= limit).then(|| key(s))
    });
    Choice {
        diameter: diameter(d, &nodes),
        nodes,
    }
}

/// Swap local search: replace one member (never a required one) by an
/// outsider, taking the best swap by `value` (larger is better; `None`: the
/// set is not allowed), until no swap beats the current set's value
/// (`start` for the set given). Returns the set sorted.
fn swap_search<K: PartialOrd>(
    mut set: Vec<usize>,
    c: &Candidates,
    start: K,
    value: impl Fn(&[usize]) -> Option<K>,
) -> Vec<usize> {
    let mut best = start;
    loop {
        let mut improved: Option<(K, usize, usize)> = None;
        for pos in 0..set.len() {
            if c.include.contains(&set[pos]) {
                continue;
            }
            for &out in &c.eligible {
                if set.contains(&out) {
                    continue;
                }
                let mut trial = set.clone();
                trial[pos] = out;
                let Some(v) = value(&trial) else {
                    continue;
                };
                if v > *improved.as_ref().map_or(&best, |(b, _, _)| b) {
                    improved = Some((v, pos, out));
                }
            }
        }
        match improved {
            Some((v, pos, out)) => {
                set[pos] = out;
                best = v;
            }
            None => break,
        }
    }
    set.sort_unstable();
    set
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn all(n: usize) -> Candidates {
        Candidates {
            eligible: (0..n).collect(),
            include: vec![],
        }
    }

    /// The exact optimum by trying every k-subset (small n only).
    pub(crate) fn brute_force(d: &Distances, k: usize, c: &Candidates) -> f64 {
        fn rec(
            d: &Distances,
            k: usize,
            c: &Candidates,
            from: usize,
            set: &mut Vec<usize>,
            best: &mut f64,
        ) {
            if set.len() == k {
                if c.include.iter().all(|i| set.contains(i)) {
                    *best = best.min(diameter(d, set));
                }
                return;
            }
            for x in from..c.eligible.len() {
                set.push(c.eligible[x]);
                rec(d, k, c, x + 1, set, best);
                set.pop();
            }
        }
        let mut best = f64::INFINITY;
        rec(d, k, c, 0, &mut Vec::new(), &mut best);
        best
    }

    /// Random points in a square: Euclidean distances obey the triangle inequality.
    pub(crate) fn random_metric(n: usize, seed: &mut u64) -> Distances {
        let mut next = || {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (*seed >> 33) as f64 / (1u64 << 31) as f64 * 10_000.0
        };
        let pts: Vec<(f64, f64)> = (0..n).map(|_| (next(), next())).collect();
        let mut d = Distances::new(n);
        for i in 0..n {
            for j in i + 1..n {
                let (dx, dy) = (pts[i].0 - pts[j].0, pts[i].1 - pts[j].1);
                // Round to f32-exact values so comparisons are exact.
                d.set(i, j, (dx * dx + dy * dy).sqrt().round());
            }
        }
        d
    }

    #[test]
    fn never_worse_than_twice_the_optimum_on_random_metric_matrices() {
        let mut seed = 11u64;
        let mut worst_ratio: f64 = 1.0;
        for n in 2..=14 {
            for _ in 0..6 {
                let d = random_metric(n, &mut seed);
                for k in 1..=n {
                    let got = choose(&d, k, &all(n)).unwrap();
                    assert_eq!(got.nodes.len(), k);
                    assert_eq!(got.diameter, diameter(&d, &got.nodes));
                    let opt = brute_force(&d, k, &all(n));
                    assert!(
                        got.diameter <= 2.0 * opt + 1e-9,
                        "n={n} k={k}: {} vs optimum {opt}",
                        got.diameter
                    );
                    if opt > 0.0 {
                        worst_ratio = worst_ratio.max(got.diameter / opt);
                    }
                }
            }
        }
        eprintln!("worst ratio to the optimum over the random matrices: {worst_ratio:.3}");
    }

    /// A lab-like matrix: regions of 4 at 0.25 ms inside, 5-10 ms between.
    fn clustered() -> Distances {
        let region = |i: usize| i / 4;
        let between = [
            [0.0, 5_000.0, 6_000.0],
            [5_000.0, 0.0, 10_000.0],
            [6_000.0, 10_000.0, 0.0],
        ];
        let mut d = Distances::new(12);
        for i in 0..12 {
            for j in i + 1..12 {
                let v = if region(i) == region(j) {
                    250.0 + (i + j) as f64 // small, distinct
                } else {
                    between[region(i)][region(j)]
                };
                d.set(i, j, v);
            }
        }
        d
    }

    #[test]
    fn equal_to_the_optimum_on_clustered_topologies() {
        let d = clustered();
        for k in 1..=12 {
            let got = choose(&d, k, &all(12)).unwrap();
            assert_eq!(got.diameter, brute_force(&d, k, &all(12)), "k={k}");
        }
        // k = 4 fits in one region.
        let four = choose(&d, 4, &all(12)).unwrap();
        assert!(
            four.nodes.iter().all(|n| n / 4 == four.nodes[0] / 4),
            "{four:?}"
        );
    }

    #[test]
    fn constraints_are_honoured_and_impossible_requests_say_why() {
        let d = clustered();
        // Exclude region 0 entirely; include node 9 (region 2).
        let c = Candidates {
            eligible: (4..12).collect(),
            include: vec![9],
        };
        let got = choose(&d, 3, &c).unwrap();
        assert!(got.nodes.contains(&9));
        assert!(got.nodes.iter().all(|n| (8..12).contains(n)), "{got:?}");
        assert_eq!(got.diameter, brute_force(&d, 3, &c));

        assert_eq!(choose(&d, 0, &all(12)), Err(PlaceError::ZeroK));
        assert_eq!(
            choose(&d, 13, &all(12)),
            Err(PlaceError::TooFewEligible {
                k: 13,
                eligible: 12
            })
        );
        let c = Candidates {
            eligible: vec![0, 1, 2],
            include: vec![0, 1, 2],
        };
        assert_eq!(
            choose(&d, 2, &c),
            Err(PlaceError::TooManyIncluded { k: 2, include: 3 })
        );
        let c = Candidates {
            eligible: vec![0, 1],
            include: vec![5],
        };
        assert_eq!(choose(&d, 1, &c), Err(PlaceError::IncludeNotEligible(5)));
    }

    #[test]
    fn unmeasured_pairs_are_avoided() {
        // 0-1 and 2-3 measured and close; every pair across is unknown.
        let mut d = Distances::new(4);
        d.set(0, 1, 100.0);
        d.set(2, 3, 50.0);
        let got = choose(&d, 2, &all(4)).unwrap();
        assert_eq!(got.nodes, vec![2, 3]);
        let three = choose(&d, 3, &all(4)).unwrap();
        assert!(
            three.diameter.is_infinite(),
            "no measured set of three exists"
        );
    }

    #[test]
    fn refine_prefers_the_better_key_within_the_limit_only() {
        let d = clustered();
        let first = choose(&d, 3, &all(12)).unwrap();
        // Prefer sets holding node 3 (in region 0, like the first choice).
        let with_3 = |s: &[usize]| u8::from(s.contains(&3));
        let better = refine(&d, first.clone(), &all(12), first.diameter * 1.1, with_3);
        assert!(better.nodes.contains(&3), "{better:?}");
        assert!(better.diameter <= first.diameter * 1.1);
        // Node 11 is in another region: out of reach within the limit.
        let with_11 = |s: &[usize]| u8::from(s.contains(&11));
        let same = refine(&d, first.clone(), &all(12), first.diameter * 1.1, with_11);
        assert!(!same.nodes.contains(&11));
        assert_eq!(same.diameter, diameter(&d, &same.nodes));
        // Required nodes are never swapped out.
        let c = Candidates {
            eligible: (0..12).collect(),
            include: vec![0],
        };
        let got = refine(&d, choose(&d, 2, &c).unwrap(), &c, 1e9, |s: &[usize]| {
            u8::from(!s.contains(&0))
        });
        assert!(got.nodes.contains(&0));
    }
}
