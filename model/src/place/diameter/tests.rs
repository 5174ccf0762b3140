use super::*;

/// A stop flag nobody sets.
pub(crate) static NEVER: Stop = Stop::new(false);

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
                let got = choose(&d, k, &all(n), &NEVER).unwrap();
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
        let got = choose(&d, k, &all(12), &NEVER).unwrap();
        assert_eq!(got.diameter, brute_force(&d, k, &all(12)), "k={k}");
    }
    // k = 4 fits in one region.
    let four = choose(&d, 4, &all(12), &NEVER).unwrap();
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
    let got = choose(&d, 3, &c, &NEVER).unwrap();
    assert!(got.nodes.contains(&9));
    assert!(got.nodes.iter().all(|n| (8..12).contains(n)), "{got:?}");
    assert_eq!(got.diameter, brute_force(&d, 3, &c));

    assert_eq!(choose(&d, 0, &all(12), &NEVER), Err(Error::ZeroK));
    assert_eq!(
        choose(&d, 13, &all(12), &NEVER),
        Err(Error::TooFewEligible {
            k: 13,
            eligible: 12
        })
    );
    let c = Candidates {
        eligible: vec![0, 1, 2],
        include: vec![0, 1, 2],
    };
    assert_eq!(
        choose(&d, 2, &c, &NEVER),
        Err(Error::TooManyIncluded { k: 2, include: 3 })
    );
    let c = Candidates {
        eligible: vec![0, 1],
        include: vec![5],
    };
    assert_eq!(choose(&d, 1, &c, &NEVER), Err(Error::IncludeNotEligible(5)));
}

#[test]
fn unmeasured_pairs_are_avoided() {
    // 0-1 and 2-3 measured and close; every pair across is unknown.
    let mut d = Distances::new(4);
    d.set(0, 1, 100.0);
    d.set(2, 3, 50.0);
    let got = choose(&d, 2, &all(4), &NEVER).unwrap();
    assert_eq!(got.nodes, vec![2, 3]);
    let three = choose(&d, 3, &all(4), &NEVER).unwrap();
    assert!(
        three.diameter.is_infinite(),
        "no measured set of three exists"
    );
}

#[test]
fn refine_prefers_the_better_key_within_the_limit_only() {
    let d = clustered();
    let first = choose(&d, 3, &all(12), &NEVER).unwrap();
    // Prefer sets holding node 3 (in region 0, like the first choice).
    let with_3 = |s: &[usize]| u8::from(s.contains(&3));
    let better = refine(
        &d,
        first.clone(),
        &all(12),
        first.diameter * 1.1,
        with_3,
        &NEVER,
    )
    .unwrap();
    assert!(better.nodes.contains(&3), "{better:?}");
    assert!(better.diameter <= first.diameter * 1.1);
    // Node 11 is in another region: out of reach within the limit.
    let with_11 = |s: &[usize]| u8::from(s.contains(&11));
    let same = refine(
        &d,
        first.clone(),
        &all(12),
        first.diameter * 1.1,
        with_11,
        &NEVER,
    )
    .unwrap();
    assert!(!same.nodes.contains(&11));
    assert_eq!(same.diameter, diameter(&d, &same.nodes));
    // Required nodes are never swapped out.
    let c = Candidates {
        eligible: (0..12).collect(),
        include: vec![0],
    };
    let got = refine(
        &d,
        choose(&d, 2, &c, &NEVER).unwrap(),
        &c,
        1e9,
        |s: &[usize]| u8::from(!s.contains(&0)),
        &NEVER,
    )
    .unwrap();
    assert!(got.nodes.contains(&0));
}

/// The O(k) trial of `shrink` walks exactly as the generic search with the
/// diameter as value: same swaps, same answer, on every random instance
/// (with and without a required node).
#[test]
fn shrink_takes_the_same_swaps_as_the_generic_search() {
    let mut seed = 5u64;
    for n in 3..=30 {
        let d = random_metric(n, &mut seed);
        for k in 2..n {
            for include in [vec![], vec![n / 2]] {
                let c = Candidates {
                    eligible: (0..n).collect(),
                    include,
                };
                let start = balls(&d, k, &c).unwrap().remove(0);
                let generic = swap_search(
                    start.nodes.clone(),
                    &c,
                    -start.diameter,
                    |s| Some(-diameter(&d, s)),
                    &NEVER,
                )
                .unwrap();
                let fast = shrink(&d, start.nodes, &c, &NEVER).unwrap();
                assert_eq!(fast, generic, "n={n} k={k} include={:?}", c.include);
            }
        }
    }
}

/// A set stop flag ends both searches at their next round.
#[test]
fn a_set_stop_flag_ends_the_search() {
    let mut seed = 9u64;
    let d = random_metric(20, &mut seed);
    let stop = Stop::new(true);
    assert_eq!(choose(&d, 5, &all(20), &stop), Err(Error::Stopped));
    let first = choose(&d, 5, &all(20), &NEVER).unwrap();
    assert_eq!(
        refine(
            &d,
            first,
            &all(20),
            f64::INFINITY,
            |s: &[usize]| s[0],
            &stop
        ),
        Err(Error::Stopped)
    );
}
