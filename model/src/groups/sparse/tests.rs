use super::*;
use crate::groups::{Distances, complete_linkage, cut};

/// A small deterministic generator (the model crate has no rand).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn all_pairs(d: &Distances) -> Vec<(usize, usize, f64)> {
    let n = d.len();
    (0..n)
        .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
        .map(|(i, j)| (i, j, d.get(i, j)))
        .collect()
}

#[test]
fn on_every_pair_it_is_textbook_complete_linkage() {
    let mut rng = Lcg(7);
    for n in [2, 3, 9, 40] {
        let mut d = Distances::new(n);
        for i in 0..n {
            for j in i + 1..n {
                d.set(i, j, 10.0 + 1_000.0 * rng.next());
            }
        }
        let dense = complete_linkage(&d);
        let sparse = complete_linkage_sparse(n, all_pairs(&d), f64::INFINITY);
        let heights = |m: &[Merge]| m.iter().map(|x| x.height).collect::<Vec<_>>();
        assert_eq!(heights(&dense), heights(&sparse), "n = {n}");
        for t in [50.0, 200.0, 500.0, 800.0, 2_000.0] {
            assert_eq!(cut(&dense, n, t), cut(&sparse, n, t), "n = {n}, t = {t}");
        }
    }
}

/// Racks of 10 in pods of 4 racks in 3 regions (50 µs / 300 µs / 2 ms /
/// 30 ms); each node measures its rack-mates and `extra` other nodes.
/// Measured pairs (i, j, µs).
type Pairs = Vec<(usize, usize, f64)>;

fn hierarchy(extra: usize, seed: u64) -> (usize, Pairs, Vec<[usize; 3]>) {
    let n = 3 * 4 * 4 * 10;
    let level = |i: usize| [i / 10, i / 40, i / 160];
    let dist = |i: usize, j: usize| {
        let (a, b) = (level(i), level(j));
        if a[0] == b[0] {
            50.0
        } else if a[1] == b[1] {
            300.0
        } else if a[2] == b[2] {
            2_000.0
        } else {
            30_000.0
        }
    };
    let mut rng = Lcg(seed);
    let mut pairs = Vec::new();
    for i in 0..n {
        for j in (i / 10) * 10..(i / 10) * 10 + 10 {
            if j != i {
                pairs.push((i, j, dist(i, j)));
            }
        }
        for _ in 0..extra {
            let j = (rng.next() * n as f64) as usize % n;
            pairs.push((i, j, dist(i, j) * (0.95 + 0.1 * rng.next())));
        }
    }
    (n, pairs, (0..n).map(level).collect())
}

#[test]
fn a_few_measured_pairs_a_node_recover_every_level() {
    let (n, pairs, truth) = hierarchy(12, 3);
    assert!(
        pairs.len() < n * (n - 1) / 4,
        "sparse: {} pairs",
        pairs.len()
    );
    let merges = complete_linkage_sparse(n, pairs, f64::INFINITY);
    for (l, t) in [120.0, 800.0, 8_000.0].into_iter().enumerate() {
        let got = cut(&merges, n, t);
        for i in 0..n {
            for j in 0..n {
                assert_eq!(
                    got[i] == got[j],
                    truth[i][l] == truth[j][l],
                    "level {l}: nodes {i} and {j}"
                );
            }
        }
    }
}

#[test]
fn every_measured_pair_inside_a_cluster_is_within_the_threshold() {
    let (n, pairs, _) = hierarchy(6, 11);
    let merges = complete_linkage_sparse(n, pairs.clone(), f64::INFINITY);
    for t in [100.0, 500.0, 5_000.0] {
        let c = cut(&merges, n, t);
        for &(i, j, d) in &pairs {
            assert!(
                c[i] != c[j] || d <= t,
                "{i}–{j} at {d} inside a {t} cluster"
            );
        }
    }
}

#[test]
fn an_unreachable_pair_never_shares_a_group_and_unknown_pairs_join_through_others() {
    // a–b close, b–c close, a–c unknown: one group. d is near b but
    // unreachable from a: it may join neither.
    let pairs = [
        (0, 1, 40.0),
        (1, 2, 45.0),
        (3, 0, f64::INFINITY),
        (3, 1, 60.0),
        (3, 2, f64::NAN),
    ];
    let merges = complete_linkage_sparse(4, pairs, f64::INFINITY);
    let c = cut(&merges, 4, 1e9);
    assert_eq!(c[0], c[1]);
    assert_eq!(c[1], c[2]);
    assert_ne!(c[3], c[0], "{c:?}");
    assert!(merges.iter().all(|m| m.height.is_finite()));
}

#[test]
fn a_node_with_no_pairs_stays_alone_and_a_repeated_pair_keeps_its_worse_figure() {
    let merges =
        complete_linkage_sparse(3, [(0, 1, 10.0), (1, 0, 90.0), (5, 1, 1.0)], f64::INFINITY);
    assert_eq!(merges.len(), 1);
    assert_eq!(merges[0].height, 90.0);
    assert_eq!(cut(&merges, 3, 100.0), vec![0, 0, 1]);
}

/// Two racks of ten, 50 µs inside and 300 µs across, every pair measured
/// except as `lost` says (those pairs lose every probe).
fn two_racks(lost: impl Fn(usize, usize) -> bool) -> Vec<Merge> {
    let mut pairs = Vec::new();
    for i in 0..20 {
        for j in i + 1..20 {
            let d = if i / 10 == j / 10 { 50.0 } else { 300.0 };
            pairs.push((i, j, if lost(i, j) { f64::INFINITY } else { d }));
        }
    }
    complete_linkage_sparse(20, pairs, f64::INFINITY)
}

#[test]
fn one_broken_pair_does_not_split_its_pod_but_a_firewall_between_racks_does() {
    // A broken pair across the racks, and one inside rack 0 (there, 1 of
    // the 9 pairs between node 2 and the others of its rack is lost: within
    // the tolerated share).
    let one = two_racks(|i, j| (i, j) == (3, 14) || (i, j) == (1, 2));
    assert_eq!(cut(&one, 20, 100.0), [[0; 10], [1; 10]].concat());
    assert_eq!(cut(&one, 20, 500.0), vec![0; 20], "the pod holds");
    // Every pair between the racks lost: two groups at every level.
    let wall = two_racks(|i, j| i / 10 != j / 10);
    assert_eq!(cut(&wall, 20, 1e9), [[0; 10], [1; 10]].concat());
    // A third of the pairs across lost: more than the tolerated share.
    let many = two_racks(|i, j| i / 10 != j / 10 && (i + j) % 3 == 0);
    assert_eq!(cut(&many, 20, 1e9), [[0; 10], [1; 10]].concat());
}

#[test]
fn a_firewalled_pair_among_four_never_shares_a_group() {
    // The lab's e2e-firewall topology: f-1 and f-2 lose everything.
    let mut pairs = Vec::new();
    let mut rng = Lcg(5);
    for i in 0..4 {
        for j in i + 1..4 {
            let d = if (i, j) == (0, 1) {
                f64::INFINITY
            } else {
                200.0 + 10.0 * rng.next()
            };
            pairs.push((i, j, d));
        }
    }
    let merges = complete_linkage_sparse(4, pairs, f64::INFINITY);
    for t in [500.0, 1e9] {
        let c = cut(&merges, 4, t);
        assert_ne!(c[0], c[1], "{c:?}");
    }
}
