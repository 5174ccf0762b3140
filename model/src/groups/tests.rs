use super::*;

/// Nodes on a line at the given positions; distance = |difference|.
fn line(points: &[f64]) -> Distances {
    let mut d = Distances::new(points.len());
    for i in 0..points.len() {
        for j in i + 1..points.len() {
            d.set(i, j, (points[i] - points[j]).abs());
        }
    }
    d
}

/// Brute-force check: every pair inside one cluster is within the threshold.
fn diameters_ok(d: &Distances, labels: &[usize], t: f64) -> bool {
    (0..d.len()).all(|i| (0..d.len()).all(|j| labels[i] != labels[j] || d.get(i, j) <= t))
}

#[test]
fn condensed_indexing_covers_every_pair_once() {
    let n = 7;
    let mut seen = vec![false; n * (n - 1) / 2];
    for i in 0..n {
        for j in i + 1..n {
            assert_eq!(tri(n, i, j), tri(n, j, i));
            assert!(!seen[tri(n, i, j)]);
            seen[tri(n, i, j)] = true;
        }
    }
    assert!(seen.iter().all(|s| *s));
}

#[test]
fn three_sites_in_two_regions_give_nested_groups() {
    // Region A: sites {0,1} and {2,3}; region B: {4,5}. RTTs in µs.
    let mut d = Distances::new(6);
    let site = |i: usize| i / 2;
    let region = |i: usize| usize::from(i >= 4);
    for i in 0..6 {
        for j in i + 1..6 {
            let v = if site(i) == site(j) {
                200.0
            } else if region(i) == region(j) {
                1_500.0
            } else {
                8_000.0
            };
            d.set(i, j, v);
        }
    }
    let m = complete_linkage(&d);
    assert_eq!(m.len(), 5);
    assert_eq!(cut(&m, 6, 500.0), vec![0, 0, 1, 1, 2, 2]);
    assert_eq!(cut(&m, 6, 2_000.0), vec![0, 0, 0, 0, 1, 1]);
    assert_eq!(cut(&m, 6, 10_000.0), vec![0; 6]);
    assert_eq!(m.last().unwrap().height, 8_000.0);
}

#[test]
fn complete_linkage_is_not_single_linkage() {
    // A chain 0-1-2-3 with steps of 100: single linkage would put all in
    // one group at 150; complete linkage keeps diameters <= 150.
    let d = line(&[0.0, 100.0, 200.0, 300.0]);
    let m = complete_linkage(&d);
    let c = cut(&m, 4, 150.0);
    assert!(diameters_ok(&d, &c, 150.0));
    assert_eq!(c.iter().max(), Some(&1), "two groups of two: {c:?}");
}

#[test]
fn random_matrices_respect_the_diameter_bound_and_nest() {
    let mut seed = 42u64;
    let mut rnd = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % 10_000) as f64
    };
    for n in [2usize, 3, 5, 9, 17, 40] {
        let mut d = Distances::new(n);
        for i in 0..n {
            for j in i + 1..n {
                d.set(i, j, rnd());
            }
        }
        let m = complete_linkage(&d);
        assert_eq!(m.len(), n - 1);
        assert!(m.windows(2).all(|w| w[0].height <= w[1].height));
        let ts = [1_000.0, 4_000.0, 8_000.0];
        let cuts: Vec<Vec<usize>> = ts.iter().map(|t| cut(&m, n, *t)).collect();
        for (c, t) in cuts.iter().zip(ts) {
            assert!(diameters_ok(&d, c, t), "n={n} t={t}");
        }
        // Nested: same l1 implies same l2 implies same l3.
        for i in 0..n {
            for j in 0..n {
                for l in 0..2 {
                    if cuts[l][i] == cuts[l][j] {
                        assert_eq!(cuts[l + 1][i], cuts[l + 1][j]);
                    }
                }
            }
        }
    }
}

/// Textbook O(n³) complete linkage: merge the two clusters whose largest
/// member distance is smallest, until one is left. Returns the heights.
fn naive_heights(d: &Distances) -> Vec<f64> {
    let mut clusters: Vec<Vec<usize>> = (0..d.len()).map(|i| vec![i]).collect();
    let mut heights = Vec::new();
    while clusters.len() > 1 {
        let mut best = (f64::INFINITY, 0, 1);
        for a in 0..clusters.len() {
            for b in a + 1..clusters.len() {
                let h = clusters[a]
                    .iter()
                    .flat_map(|i| clusters[b].iter().map(move |j| (*i, *j)))
                    .map(|(i, j)| d.get(i, j))
                    .fold(0.0, f64::max);
                if h < best.0 {
                    best = (h, a, b);
                }
            }
        }
        let (h, a, b) = best;
        let moved = clusters.remove(b);
        clusters[a].extend(moved);
        heights.push(h);
    }
    heights
}

#[test]
fn the_chain_algorithm_matches_textbook_complete_linkage() {
    let mut seed = 7u64;
    for n in [2usize, 4, 8, 15, 30] {
        let mut d = Distances::new(n);
        for i in 0..n {
            for j in i + 1..n {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                // Distinct values (the fraction is unique per pair, as
                // i*n+j < 1024) and exact in f32 (13 + 10 bits).
                d.set(
                    i,
                    j,
                    ((seed >> 40) % 8_000) as f64 + (i * n + j) as f64 / 1024.0,
                );
            }
        }
        let ours: Vec<f64> = complete_linkage(&d).iter().map(|m| m.height).collect();
        assert_eq!(ours, naive_heights(&d), "n={n}");
    }
}

#[test]
fn ties_are_resolved_deterministically() {
    // Four nodes all 100 apart.
    let mut d = Distances::new(4);
    for i in 0..4 {
        for j in i + 1..4 {
            d.set(i, j, 100.0);
        }
    }
    let a = complete_linkage(&d);
    let b = complete_linkage(&d.clone());
    assert_eq!(a, b);
    assert_eq!(cut(&a, 4, 100.0), vec![0; 4]);
    assert_eq!(cut(&a, 4, 99.0), vec![0, 1, 2, 3]);
}

#[test]
fn a_missing_pair_never_shares_a_group() {
    // 0 and 2 were never measured; both are 100 from 1.
    let mut d = Distances::new(3);
    d.set(0, 1, 100.0);
    d.set(1, 2, 100.0);
    let m = complete_linkage(&d);
    for t in [150.0, 1e9] {
        let c = cut(&m, 3, t);
        assert_ne!(c[0], c[2], "t={t}: {c:?}");
    }
    assert!(m.last().unwrap().height.is_infinite());
    // Auto thresholds ignore the infinite merge.
    assert!(auto_thresholds(&m).iter().all(|t| t.is_finite()));
}

#[test]
fn auto_cuts_at_the_largest_gaps() {
    // Sites of 2 at 200 µs, site pairs at 1.5 ms, regions at 8 ms, and a
    // far region at 40 ms: three clear gaps.
    let pts = [
        0.0, 200.0, 1_500.0, 1_700.0, 8_000.0, 8_200.0, 40_000.0, 40_200.0,
    ];
    let d = line(&pts);
    let m = complete_linkage(&d);
    let t = auto_thresholds(&m);
    assert!(t[0] > 200.0 && t[0] < 1_700.0, "{t:?}");
    assert!(t[1] > 1_700.0 && t[1] < 8_200.0, "{t:?}");
    assert!(t[2] > 8_200.0 && t[2] < 38_000.0, "{t:?}");
    // One group of equal points: no gaps, one group.
    let flat = complete_linkage(&line(&[0.0, 0.0, 0.0]));
    let t = auto_thresholds(&flat);
    assert_eq!(cut(&flat, 3, t[0]), vec![0, 0, 0]);
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("n{i}")).collect()
}

fn same(c: Vec<usize>) -> [Vec<usize>; 3] {
    [c.clone(), c.clone(), c]
}

#[test]
fn ids_stay_stable_when_cluster_numbering_changes() {
    let mut t = GroupTracker::new(1);
    t.update(&names(4), &same(vec![0, 0, 1, 1]));
    let before = t.assignment().clone();
    // Same groups, numbered the other way round.
    let changed = t.update(&names(4), &same(vec![1, 1, 0, 0]));
    assert!(changed.is_empty());
    assert_eq!(t.assignment(), &before);
    assert_eq!(before["n0"][1], "g1");
    assert_eq!(before["n2"][1], "g2");
}

#[test]
fn a_single_noisy_recomputation_moves_nobody() {
    let mut t = GroupTracker::new(3);
    t.update(&names(4), &same(vec![0, 0, 1, 1]));
    let stable = t.assignment().clone();
    // One recomputation says n1 belongs with n2 and n3; then it is back.
    assert!(t.update(&names(4), &same(vec![0, 1, 1, 1])).is_empty());
    assert!(t.update(&names(4), &same(vec![0, 0, 1, 1])).is_empty());
    assert_eq!(t.assignment(), &stable);
    // A move that holds for 3 recomputations happens on the third.
    assert!(t.update(&names(4), &same(vec![0, 1, 1, 1])).is_empty());
    assert!(t.update(&names(4), &same(vec![0, 1, 1, 1])).is_empty());
    assert_eq!(
        t.update(&names(4), &same(vec![0, 1, 1, 1])),
        vec!["n1".to_string()]
    );
    assert_eq!(t.assignment()["n1"], t.assignment()["n2"]);
}

#[test]
fn a_move_into_a_new_group_completes_after_the_hysteresis() {
    let mut t = GroupTracker::new(3);
    t.update(&names(4), &same(vec![0, 0, 0, 0]));
    // n3 leaves into a group of its own, recomputation after recomputation.
    assert!(t.update(&names(4), &same(vec![0, 0, 0, 1])).is_empty());
    assert!(t.update(&names(4), &same(vec![0, 0, 0, 1])).is_empty());
    assert_eq!(
        t.update(&names(4), &same(vec![0, 0, 0, 1])),
        vec!["n3".to_string()]
    );
    let a = t.assignment();
    assert_ne!(a["n3"], a["n0"]);
    // And it stays put.
    assert!(t.update(&names(4), &same(vec![0, 0, 0, 1])).is_empty());
}

#[test]
fn a_split_keeps_the_old_id_for_the_larger_part() {
    let mut t = GroupTracker::new(1);
    t.update(&names(5), &same(vec![0, 0, 0, 0, 0]));
    t.update(&names(5), &same(vec![0, 0, 0, 1, 1]));
    let a = t.assignment();
    assert_eq!(a["n0"][0], "g1");
    assert_eq!(a["n3"][0], "g2");
    assert_eq!(a["n3"], a["n4"]);
}

#[test]
fn absent_nodes_keep_their_groups() {
    let mut t = GroupTracker::new(1);
    t.update(&names(3), &same(vec![0, 0, 1]));
    let n2 = t.assignment()["n2"].clone();
    t.update(&names(2), &same(vec![0, 0]));
    assert_eq!(t.assignment()["n2"], n2);
}
