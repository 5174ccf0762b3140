use super::*;
use cost::RingLink;

/// 12 nodes `{r}-{1..4}` in regions dj, se, gj: 250 µs inside a region
/// (dj-4 a little closer: 240 µs), 5-10 ms between; 1 Gbit/s inside,
/// 100 Mbit/s across, dj-4's links 50 Mbit/s.
struct Lab {
    names: Vec<String>,
    dist: Distances,
    bw: Vec<Vec<Option<f64>>>,
    /// Round-trip loss by pair (0 for the stock lab).
    loss: Vec<Vec<f64>>,
    quality: Vec<Option<u32>>,
    fresh: Vec<bool>,
    labels: BTreeMap<String, BTreeMap<String, String>>,
}

fn region(n: &str) -> &str {
    n.split('-').next().unwrap()
}

fn lab() -> Lab {
    let names: Vec<String> = ["dj", "gj", "se"]
        .iter()
        .flat_map(|r| (1..=4).map(move |k| format!("{r}-{k}")))
        .collect();
    let n = names.len();
    let mut dist = Distances::new(n);
    let mut bw = vec![vec![None; n]; n];
    for i in 0..n {
        for j in i + 1..n {
            let (a, b) = (&names[i], &names[j]);
            let same = region(a) == region(b);
            let degraded = a == "dj-4" || b == "dj-4";
            let rtt = match (same, region(a), region(b)) {
                (true, _, _) if degraded => 240.0,
                (true, _, _) => 250.0,
                (false, "dj", "gj") => 5_000.0,
                (false, "dj", "se") => 6_000.0,
                _ => 10_000.0,
            };
            dist.set(i, j, rtt);
            let mbps = if degraded {
                50.0
            } else if same {
                1_000.0
            } else {
                100.0
            };
            bw[i][j] = Some(mbps);
            bw[j][i] = Some(mbps);
        }
    }
    let quality = names
        .iter()
        .map(|x| Some(if x == "dj-4" { 40 } else { 90 }))
        .collect();
    let labels = names
        .iter()
        .map(|x| {
            let l = BTreeMap::from([
                (
                    "topology.kubernetes.io/region".to_string(),
                    region(x).to_string(),
                ),
                ("kubernetes.io/hostname".to_string(), x.clone()),
            ]);
            (x.clone(), l)
        })
        .collect();
    Lab {
        loss: vec![vec![0.0; n]; n],
        names,
        dist,
        bw,
        quality,
        fresh: vec![true; n],
        labels,
    }
}

/// The measured pairs of a dense matrix as [`View::rtt`] wants them.
pub(super) fn rtts(d: &Distances) -> Vec<Vec<(usize, f64)>> {
    let n = d.len();
    (0..n)
        .map(|i| {
            (0..n)
                .filter(|&j| j != i && d.get(i, j).is_finite())
                .map(|j| (j, d.get(i, j)))
                .collect()
        })
        .collect()
}

fn run(l: &Lab, q: &Query) -> Result<Placement> {
    run_with(l, q, true, &[])
}

/// `run` with or without the Node labels, and with latency levels.
fn run_with(l: &Lab, q: &Query, labels: bool, levels: &[f64]) -> Result<Placement> {
    let bw = |i: usize, j: usize| l.bw[i][j];
    let loss = |i: usize, j: usize| l.loss[i][j];
    let rtt = rtts(&l.dist);
    let v = View {
        names: &l.names,
        rtt: &rtt,
        zones: &[],
        bandwidth: &bw,
        loss: &loss,
        quality: &l.quality,
        fresh: &l.fresh,
        labels: labels.then_some(&l.labels),
        levels,
    };
    place(q, &v, &diameter::tests::NEVER)
}

/// The filter the aggregator builds for `topology.kubernetes.io/region in (…)`.
fn region_in(text: &str, regions: &'static [&'static str]) -> LabelFilter {
    LabelFilter::new(text, move |l| {
        l.get("topology.kubernetes.io/region")
            .is_some_and(|r| regions.contains(&r.as_str()))
    })
}

fn k(k: usize) -> Query {
    Query {
        k,
        ..Default::default()
    }
}

#[test]
fn near_ties_go_to_the_faster_healthier_nodes() {
    let l = lab();
    let got = run(&l, &k(3)).unwrap();
    // A latency-only rule takes dj-4 (240 µs); the tie-break does not.
    let only_latency = diameter::choose(
        &l.dist,
        3,
        &Candidates {
            eligible: (0..12).collect(),
            include: vec![],
        },
        &diameter::tests::NEVER,
    )
    .unwrap();
    assert!(only_latency.nodes.contains(&3), "{only_latency:?}");
    assert_eq!(region(&got.nodes[0]), "dj");
    assert!(!got.nodes.contains(&"dj-4".to_string()), "{got:?}");
    assert_eq!(got.max_rtt_us, 250.0);
    assert_eq!(got.bottleneck_mbps, Some(1_000.0));
    assert_eq!((got.pairs, got.bandwidth_pairs_measured), (3, 3));
    assert_eq!(got.predicted_allreduce_ms, None, "not asked");
}

#[test]
fn zone_first_a_faster_lossier_pair_loses_to_a_healthy_pair_in_the_same_level() {
    // dj-4 is 150 µs from its neighbours, everyone else 250 µs apart:
    // beyond the 10 % tolerance, but all under the 500 µs l1 threshold.
    let mut l = lab();
    for j in 0..4 {
        if j != 3 {
            l.dist.set(3, j, 150.0);
        }
    }
    let by_latency = run_with(&l, &k(2), false, &[]).unwrap();
    assert!(
        by_latency.nodes.contains(&"dj-4".to_string()),
        "{by_latency:?}"
    );
    let levels = [500.0, 2_000.0, 10_000.0];
    let zone_first = run_with(&l, &k(2), false, &levels).unwrap();
    assert!(
        !zone_first.nodes.contains(&"dj-4".to_string()),
        "{zone_first:?}"
    );
    assert_eq!(zone_first.max_rtt_us, 250.0);
    assert_eq!(zone_first.bottleneck_mbps, Some(1_000.0));
}

#[test]
fn bandwidths_that_differ_by_noise_leave_the_choice_to_quality() {
    assert_eq!(bandwidth_step(962.0), bandwidth_step(965.0));
    assert!(bandwidth_step(500.0) < bandwidth_step(965.0));
    assert_eq!(bandwidth_step(0.0), f64::NEG_INFINITY);
    // dj-4's links at 970 Mbit/s, the rest 965: about equal, so dj-4's
    // quality (40) keeps it out (an exact comparison would take it).
    let mut l = lab();
    for row in &mut l.bw {
        for b in row.iter_mut().flatten() {
            if *b == 1_000.0 {
                *b = 965.0;
            }
        }
    }
    for j in 0..12 {
        if j != 3 && l.bw[3][j].is_some() && j < 4 {
            l.bw[3][j] = Some(970.0);
            l.bw[j][3] = Some(970.0);
        }
    }
    let got = run(&l, &k(2)).unwrap();
    assert!(!got.nodes.contains(&"dj-4".to_string()), "{got:?}");
}

#[test]
fn the_tie_limit_widens_to_the_level_but_never_past_twice_the_bound() {
    let levels = [500.0, 2_000.0, 10_000.0];
    assert_eq!(
        tie_limit(150.0, &levels, 150.0),
        300.0,
        "capped at 2x the bound"
    );
    assert_eq!(tie_limit(250.0, &levels, 250.0), 500.0, "the l1 threshold");
    assert_eq!(tie_limit(3_000.0, &levels, 2_000.0), 4_000.0);
    assert_eq!(
        tie_limit(3_000.0, &[], 3_000.0),
        3_300.0,
        "10 % without levels"
    );
    assert_eq!(tie_limit(50.0, &[], 50.0), 70.0, "20 µs floor");
    assert_eq!(
        tie_limit(100.0, &levels, 10.0),
        100.0,
        "never below the best"
    );
}

#[test]
fn the_prediction_is_the_cost_model_of_the_chosen_ring() {
    let l = lab();
    let mut q = k(4);
    q.allreduce_bytes = 8 << 20;
    q.explain = true;
    let got = run(&l, &q).unwrap();
    // Four in one region includes dj-4 or another region's four: gj/se hold 1 Gbit/s.
    assert_ne!(region(&got.nodes[0]), "dj", "{got:?}");
    let want = cost::ring(4, 8 << 20, 250.0, 1_000.0, &[RingLink { loss: 0.0 }; 4]).unwrap();
    assert_eq!(got.prediction, Some(want));
    assert_eq!(got.predicted_allreduce_ms, Some(want.total_ms));
    // gj and se tie (same figures): the runner-up is the other one, and
    // the reason says they tie on the prediction.
    let r = got.runner_up.expect("a runner-up with explain");
    assert_ne!(r.nodes, got.nodes);
    assert!(r.why.contains("about the chosen set's"), "{}", r.why);
    // Not asked to explain: no runner-up; not asked for a size: no prediction.
    q.explain = false;
    assert_eq!(run(&l, &q).unwrap().runner_up, None);
    let plain = run(&l, &k(4)).unwrap();
    assert_eq!(
        (plain.prediction, plain.predicted_allreduce_ms),
        (None, None)
    );
}

/// The lab with dj the tightest site (200 µs) at 1 Gbit/s and every node
/// of equal quality, but dj-4 losing `rt` of the round trips to everyone.
fn lossy_dj(rt: f64) -> Lab {
    let mut l = lab();
    let n = l.names.len();
    for i in 0..n {
        l.quality[i] = Some(90);
        for j in 0..n {
            let (a, b) = (&l.names[i], &l.names[j]);
            if i != j && region(a) == "dj" && region(b) == "dj" {
                l.dist.set(i, j, 200.0);
                l.bw[i][j] = Some(1_000.0);
            }
            if i != j && (a == "dj-4" || b == "dj-4") {
                l.loss[i][j] = rt;
            }
        }
    }
    l
}

#[test]
fn a_lossy_node_costs_its_site_the_job_when_the_prediction_says_so() {
    let mut q = k(4);
    q.explain = true;
    // Without a size nothing is predicted: the tightest site wins, loss and all.
    let l = lossy_dj(0.04);
    let blind = run(&l, &q).unwrap();
    assert_eq!(blind.nodes, ["dj-1", "dj-2", "dj-3", "dj-4"]);
    // With one, dj's 2 % each way costs 6 steps × 7 % × 200 ms = 85 ms of
    // expected timeouts (2 MiB chunks, 1.8 exposed packets each, on two
    // links: 1 − 0.96^1.8 of the steps stall), more than the 50 µs of RTT
    // it saves.
    q.allreduce_bytes = 8 << 20;
    let got = run(&l, &q).unwrap();
    assert_ne!(region(&got.nodes[0]), "dj", "{got:?}");
    let p = got.prediction.unwrap();
    assert_eq!(p.loss_ms, 0.0);
    // dj's own prediction: its ring's links to and from dj-4 lose.
    let mut ring = [RingLink { loss: 0.0 }; 4];
    ring[2].loss = 0.04;
    ring[3].loss = 0.04;
    let dj = cost::ring(4, 8 << 20, 200.0, 1_000.0, &ring).unwrap();
    let stalled = 1.0 - 0.96_f64.powf(1.8);
    assert!((dj.loss_ms - 6.0 * stalled * 200.0).abs() < 1e-9, "{dj:?}");
    assert!(p.total_ms < dj.total_ms / 1.05, "{p:?} vs dj {dj:?}");
    // A loss too small to matter leaves dj its job: the others tie with it
    // on the prediction and it came first (the tightest).
    let slight = run(&lossy_dj(0.0001), &q).unwrap();
    assert_eq!(slight.nodes, ["dj-1", "dj-2", "dj-3", "dj-4"]);
    let r = slight.runner_up.unwrap();
    assert!(r.why.contains("about the chosen set's"), "{}", r.why);
}

/// A prediction from its parts (the total is their sum).
fn pred(latency_ms: f64, bandwidth_ms: f64, loss_ms: f64) -> Prediction {
    Prediction {
        total_ms: latency_ms + bandwidth_ms + loss_ms,
        latency_ms,
        bandwidth_ms,
        loss_ms,
    }
}

#[test]
fn the_runner_up_is_told_which_part_lost_it() {
    let c = pred(2.0, 108.0, 0.0);
    let o = pred(2.0, 108.0, 50.0);
    let why = why_lost(Some(&c), Some(&o));
    assert!(
        why.contains("mostly its loss part, 50.0 ms against 0.0 ms"),
        "{why}"
    );
    let far = pred(90.0, 510.0, 0.0);
    let why = why_lost(Some(&c), Some(&far));
    assert!(why.contains("mostly its bandwidth part"), "{why}");
    assert!(why_lost(None, Some(&o)).starts_with("no all-reduce time predicted"));
}

#[test]
fn constraints_exclude_and_explain() {
    let l = lab();
    let q = Query {
        k: 2,
        exclude: vec!["dj-1".into()],
        selector: Some(region_in(
            "topology.kubernetes.io/region in (dj,se)",
            &["dj", "se"],
        )),
        min_bandwidth_mbps: 500.0,
        explain: true,
        ..Default::default()
    };
    let got = run(&l, &q).unwrap();
    assert_eq!(got.nodes.len(), 2);
    assert!(got.nodes.iter().all(|x| x != "dj-1" && x != "dj-4"));
    assert_eq!(got.bottleneck_mbps, Some(1_000.0));
    let why: BTreeMap<&str, &str> = got
        .exclusions
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(why.len(), 10);
    assert_eq!(why["dj-1"], "excluded by request");
    assert!(why["gj-1"].contains("do not match selector"), "{why:?}");
    assert!(why["dj-4"].starts_with("eligible, not chosen"), "{why:?}");

    // Include pulls the set to its region.
    let q = Query {
        k: 2,
        include: vec!["se-3".into()],
        ..Default::default()
    };
    let got = run(&l, &q).unwrap();
    assert!(got.nodes.contains(&"se-3".into()));
    assert!(got.nodes.iter().all(|x| region(x) == "se"));

    // Stale nodes are left out unless asked for.
    let mut stale = lab();
    for i in 0..8 {
        stale.fresh[i] = false;
    }
    let got = run(&stale, &k(4)).unwrap();
    assert!(got.nodes.iter().all(|x| region(x) == "se"), "{got:?}");
    let q = Query {
        k: 9,
        allow_stale: true,
        ..Default::default()
    };
    assert_eq!(run(&stale, &q).unwrap().nodes.len(), 9);
    let e = run(&stale, &k(9)).unwrap_err().to_string();
    assert!(e.contains("8: stale"), "{e}");
}

#[test]
fn impossible_requests_name_the_failed_constraint() {
    let l = lab();
    let err = |q: Query| run(&l, &q).unwrap_err().to_string();
    assert_eq!(err(k(0)), "k must be at least 1");
    let e = err(k(13));
    assert!(
        e.contains("k = 13 but only 12 of 12 known nodes are eligible"),
        "{e}"
    );
    let e = err(Query {
        k: 11,
        exclude: vec!["dj-1".into(), "dj-2".into()],
        ..Default::default()
    });
    assert!(
        e.contains("only 10 of 12") && e.contains("2: excluded by request"),
        "{e}"
    );
    let e = err(Query {
        k: 2,
        include: vec!["nope".into()],
        ..Default::default()
    });
    assert!(e.contains("include names unknown node 'nope'"), "{e}");
    let e = err(Query {
        k: 2,
        exclude: vec!["nope".into()],
        ..Default::default()
    });
    assert!(e.contains("exclude names unknown node 'nope'"), "{e}");
    let e = err(Query {
        k: 2,
        include: vec!["se-1".into()],
        exclude: vec!["se-1".into()],
        ..Default::default()
    });
    assert!(e.contains("'se-1' is both included and excluded"), "{e}");
    let e = err(Query {
        k: 2,
        include: vec!["gj-1".into()],
        selector: Some(region_in("topology.kubernetes.io/region=dj", &["dj"])),
        ..Default::default()
    });
    assert!(
        e.contains("'gj-1' must be included but is not eligible: labels do not match"),
        "{e}"
    );
    // No set of 5 has every pair at >= 500 Mbit/s (regions hold 4, dj only 3).
    let e = err(Query {
        k: 5,
        min_bandwidth_mbps: 500.0,
        ..Default::default()
    });
    assert!(
        e.contains("no 5 nodes whose every pair has a measured bandwidth of at least 500 Mbit/s"),
        "{e}"
    );
    let e = err(Query {
        k: 2,
        min_bandwidth_mbps: -1.0,
        ..Default::default()
    });
    assert!(e.contains("min_bandwidth_mbps"), "{e}");
    // Selector without labels.
    let q = Query {
        k: 2,
        selector: Some(LabelFilter::new("a=b", |l| {
            l.get("a").is_some_and(|v| v == "b")
        })),
        ..Default::default()
    };
    let e = run_with(&l, &q, false, &[]).unwrap_err();
    assert!(matches!(e, Error::NoLabels), "{e}");
}

#[test]
fn never_worse_than_twice_the_optimum_with_the_tie_break() {
    use crate::place::diameter::tests::{all, brute_force, random_metric};
    let mut seed = 5u64;
    for n in 2..=14 {
        for _ in 0..4 {
            let d = random_metric(n, &mut seed);
            let names: Vec<String> = (0..n).map(|i| format!("n{i:02}")).collect();
            // Bandwidth and quality that pull towards different sets.
            let bw = |i: usize, j: usize| Some(((i * 7 + j * 3) % 11) as f64 * 100.0);
            let quality: Vec<Option<u32>> = (0..n).map(|i| Some((i as u32 * 37) % 100)).collect();
            let fresh = vec![true; n];
            let rtt = rtts(&d);
            let v = View {
                names: &names,
                rtt: &rtt,
                zones: &[],
                bandwidth: &bw,
                loss: &|_, _| 0.0,
                quality: &quality,
                fresh: &fresh,
                labels: None,
                levels: &[500.0, 2_000.0, 10_000.0],
            };
            for k in 1..=n {
                let got = place(&super::tests::k(k), &v, &diameter::tests::NEVER).unwrap();
                let opt = brute_force(&d, k, &all(n));
                assert!(
                    got.max_rtt_us <= 2.0 * opt + 1e-6,
                    "n={n} k={k}: {} vs optimum {opt}",
                    got.max_rtt_us
                );
            }
        }
    }
}

#[test]
fn unmeasured_nodes_are_never_chosen() {
    let mut l = lab();
    l.names.push("zz-new".into());
    // A Node of the cluster, so only its missing figures count.
    l.labels.insert("zz-new".into(), Labels::new());
    let mut d = Distances::new(13);
    for i in 0..12 {
        for j in i + 1..12 {
            d.set(i, j, l.dist.get(i, j));
        }
    }
    l.dist = d;
    for row in &mut l.bw {
        row.push(None);
    }
    l.bw.push(vec![None; 13]);
    l.quality.push(None);
    l.fresh.push(true);
    let mut q = k(12);
    q.explain = true;
    let got = run(&l, &q).unwrap();
    assert!(!got.nodes.contains(&"zz-new".into()));
    assert_eq!(
        got.exclusions,
        vec![(
            "zz-new".into(),
            "not measured yet: no RTT to any other node".into()
        )]
    );
    assert!(run(&l, &k(13)).is_err());
}

#[test]
fn repeated_or_too_many_names_are_refused_before_any_work() {
    let l = lab();
    let err = |q: Query| run(&l, &q).unwrap_err();
    // The review's E3d: the same known names again and again.
    let e = err(Query {
        k: 1,
        include: vec!["dj-1".into(); 40_000],
        exclude: vec!["dj-2".into(); 40_000],
        ..Default::default()
    });
    assert!(
        matches!(
            e,
            Error::TooManyNames {
                role: "include",
                count: 40_000,
                max: MAX_NAMES
            }
        ),
        "{e}"
    );
    let e = err(Query {
        k: 1,
        exclude: vec!["dj-2".into(), "se-1".into(), "dj-2".into()],
        ..Default::default()
    });
    assert_eq!(
        e.to_string(),
        "exclude names node 'dj-2' twice; name each node once"
    );
    // At the limit, a list of distinct names is checked (every name is
    // unknown here but the first): the first unknown one is named.
    let mut many: Vec<String> = (0..MAX_NAMES).map(|i| format!("n-{i}")).collect();
    many[0] = "dj-1".into();
    let e = err(Query {
        k: 1,
        exclude: many,
        ..Default::default()
    });
    assert!(e.to_string().contains("unknown node 'n-1'"), "{e}");
    // A k past any cluster is refused as such, not searched for.
    assert_eq!(
        err(k(MAX_K + 1)),
        Error::TooLargeK {
            k: MAX_K + 1,
            max: MAX_K
        }
    );
}

/// The review's S10: a node the Kubernetes Node list no longer has (the
/// autoscaler deleted it) was still chosen. Now it is never a candidate
/// when the list is known, selector or not.
#[test]
fn a_node_missing_from_the_node_list_is_never_chosen() {
    let mut l = lab();
    l.labels.remove("se-1");
    let mut q = k(12);
    q.explain = true;
    let e = run(&l, &q).unwrap_err().to_string();
    assert!(e.contains("1: not a Node of the cluster"), "{e}");
    let got = run(&l, &k(11)).unwrap();
    assert!(!got.nodes.contains(&"se-1".to_string()));
    // Without the Node list (no Kubernetes), every known node counts.
    assert_eq!(run_with(&l, &k(12), false, &[]).unwrap().nodes.len(), 12);
}

/// Every k-subset's prediction (small n only), the smallest.
fn best_prediction(v: &View, k: usize, bytes: u64) -> f64 {
    let n = v.names.len();
    let mut best = f64::INFINITY;
    for mask in 0u32..(1 << n) {
        if mask.count_ones() as usize != k {
            continue;
        }
        let set: Vec<usize> = (0..n).filter(|i| mask & (1 << i) != 0).collect();
        let mut max_rtt = 0.0_f64;
        let mut bw = f64::INFINITY;
        for (x, &a) in set.iter().enumerate() {
            for &b in &set[x + 1..] {
                let d = v.rtt[a].iter().find(|(j, _)| *j == b).unwrap().1;
                max_rtt = max_rtt.max(d);
                bw = bw.min((v.bandwidth)(a, b).unwrap());
            }
        }
        let ring: Vec<RingLink> = (0..k)
            .map(|x| RingLink {
                loss: (v.loss)(set[x], set[(x + 1) % k]),
            })
            .collect();
        best = best.min(cost::ring(k, bytes, max_rtt, bw, &ring).unwrap().total_ms);
    }
    best
}

#[test]
fn the_chosen_set_is_predicted_near_the_best_of_every_subset() {
    // Random sites (2–4 of 2–4 nodes), random RTTs inside them, random
    // paths (RTT, bandwidth) between each two, and random lossy nodes: Place's candidates (balls
    // refined, cost balls, swaps) must find a set whose prediction is
    // within one 5 % step of the best over all k-subsets.
    let mut seed = 11u64;
    let mut next = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as f64 / (1u64 << 31) as f64
    };
    let (mut runs, mut worst, mut misses) = (0usize, 1.0_f64, Vec::new());
    for case in 0..300 {
        let sites = 2 + (next() * 3.0) as usize;
        let site: Vec<usize> = (0..sites)
            .flat_map(|s| std::iter::repeat_n(s, 2 + (next() * 3.0) as usize))
            .collect();
        let n = site.len();
        let names: Vec<String> = (0..n).map(|i| format!("n{i:02}")).collect();
        let inside: Vec<f64> = (0..sites).map(|_| 100.0 + next() * 400.0).collect();
        // Between sites, per site pair (a WAN path and its uplinks).
        let mut paths = std::collections::HashMap::new();
        for a in 0..sites {
            for b in a + 1..sites {
                paths.insert(
                    (a, b),
                    (2_000.0 + next() * 20_000.0, 100.0 + next() * 900.0),
                );
            }
        }
        let lossy: Vec<bool> = (0..n).map(|_| next() < 0.2).collect();
        let mut d = Distances::new(n);
        let mut bw = vec![vec![None; n]; n];
        let mut loss = vec![vec![0.0; n]; n];
        for i in 0..n {
            for j in i + 1..n {
                let same = site[i] == site[j];
                let (rtt, mbps) = if same {
                    (inside[site[i]], 1_000.0)
                } else {
                    let (a, b) = (site[i].min(site[j]), site[i].max(site[j]));
                    let (rtt, mbps) = paths[&(a, b)];
                    // Measurement noise.
                    (rtt * (1.0 + next() * 0.02), mbps * (1.0 - next() * 0.02))
                };
                d.set(i, j, rtt);
                bw[i][j] = Some(mbps);
                bw[j][i] = Some(mbps);
                if lossy[i] || lossy[j] {
                    loss[i][j] = 0.01 + next() * 0.1;
                    loss[j][i] = loss[i][j];
                }
            }
        }
        let rtt = rtts(&d);
        let bwf = |i: usize, j: usize| bw[i][j];
        let lossf = |i: usize, j: usize| loss[i][j];
        let quality = vec![Some(90); n];
        let fresh = vec![true; n];
        let v = View {
            names: &names,
            rtt: &rtt,
            zones: &[],
            bandwidth: &bwf,
            loss: &lossf,
            quality: &quality,
            fresh: &fresh,
            labels: None,
            levels: &[],
        };
        for k in 2..=n.min(6) {
            let mut q = super::tests::k(k);
            q.allreduce_bytes = 8 << 20;
            let got = place(&q, &v, &diameter::tests::NEVER).unwrap();
            let total = got.prediction.unwrap().total_ms;
            let best = best_prediction(&v, k, q.allreduce_bytes);
            runs += 1;
            worst = worst.max(total / best);
            if total > best * PREDICTION_STEP + 1e-9 {
                misses.push(format!(
                    "case {case} k={k}: chose {:?} at {total:.1} ms, best subset {best:.1} ms",
                    got.nodes
                ));
            }
        }
    }
    // The candidates are a heuristic (an exact search is exponential):
    // rare misses, none far.
    eprintln!(
        "{} of {runs} placements more than one step above the best subset; worst ratio {worst:.3}",
        misses.len()
    );
    assert!(misses.len() * 100 <= runs, "{}", misses.join("\n"));
    assert!(worst < 1.3, "{}", misses.join("\n"));
}

#[test]
fn choosing_by_prediction_keeps_the_minimum_bandwidth() {
    // A hub with 1 Gbit/s to four leaves that share only 450 Mbit/s among
    // themselves (200 µs apart), and a triangle 20 ms apart at 510 Mbit/s.
    // With 500 required only the triangle qualifies, though hub + two
    // leaves would be predicted faster (and are the hub's fastest pairs).
    let names: Vec<String> = ["h", "l1", "l2", "l3", "l4", "t1", "t2", "t3"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let n = names.len();
    let tri = |i: usize| i >= 5;
    let link = |i: usize, j: usize| match (tri(i), tri(j)) {
        (true, true) => (20_000.0, 510.0),
        (false, false) if i.min(j) == 0 => (200.0, 1_000.0),
        (false, false) => (200.0, 450.0),
        _ => (30_000.0, 100.0),
    };
    let mut d = Distances::new(n);
    for i in 0..n {
        for j in i + 1..n {
            d.set(i, j, link(i, j).0);
        }
    }
    let rtt = rtts(&d);
    let bwf = |i: usize, j: usize| (i != j).then(|| link(i, j).1);
    let quality = vec![Some(90); n];
    let fresh = vec![true; n];
    let v = View {
        names: &names,
        rtt: &rtt,
        zones: &[],
        bandwidth: &bwf,
        loss: &|_, _| 0.0,
        quality: &quality,
        fresh: &fresh,
        labels: None,
        levels: &[],
    };
    let mut q = k(3);
    q.allreduce_bytes = 8 << 20;
    let free = place(&q, &v, &diameter::tests::NEVER).unwrap();
    assert_eq!(
        free.nodes[0], "h",
        "unconstrained, the hub's set is faster: {free:?}"
    );
    q.min_bandwidth_mbps = 500.0;
    let got = place(&q, &v, &diameter::tests::NEVER).unwrap();
    assert_eq!(got.nodes, ["t1", "t2", "t3"], "{got:?}");
}

/// Nine nodes `n1`..`n9` in three sites, their names interleaved (n1, n4,
/// n7 in site a; n2, n5, n8 in b; n3, n6, n9 in c), as cloud node names
/// are: 250 µs and 1 Gbit/s inside a site, 5 ms and 100 Mbit/s across.
fn interleaved_sites() -> Lab {
    let names: Vec<String> = (1..=9).map(|i| format!("n{i}")).collect();
    let n = names.len();
    let same = |i: usize, j: usize| i % 3 == j % 3;
    let mut dist = Distances::new(n);
    for i in 0..n {
        for j in i + 1..n {
            dist.set(i, j, if same(i, j) { 250.0 } else { 5_000.0 });
        }
    }
    let bw = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| (i != j).then_some(if same(i, j) { 1_000.0 } else { 100.0 }))
                .collect()
        })
        .collect();
    let labels = names
        .iter()
        .map(|x| {
            (
                x.clone(),
                BTreeMap::from([("kubernetes.io/hostname".to_string(), x.clone())]),
            )
        })
        .collect();
    Lab {
        loss: vec![vec![0.0; n]; n],
        quality: vec![Some(90); n],
        fresh: vec![true; n],
        names,
        dist,
        bw,
        labels,
    }
}

fn shaped(text: &str) -> Query {
    let shape = Shape::parse(text, crate::shape::tests::mib).unwrap();
    Query {
        k: shape.ranks(),
        shape: Some(shape),
        explain: true,
        ..Default::default()
    }
}

fn site_of(l: &Lab, name: &str) -> usize {
    l.names.iter().position(|n| n == name).unwrap() % 3
}

/// Every site has three free nodes, the job six ranks in pairs: the job
/// spans sites, but each heavy tensor-parallel pair fits inside one. The
/// shape-blind answer's rank order (by name) would put every pair across.
#[test]
fn a_shaped_job_keeps_every_heavy_group_inside_a_site() {
    let l = interleaved_sites();
    let got = run(&l, &shaped("tp=2:256MiB,dp=3:16MiB")).unwrap();
    assert_eq!(got.ranks.len(), 6);
    let mut by_rank = got.ranks.clone();
    by_rank.sort();
    assert_eq!(by_rank, got.nodes, "each chosen node has one rank");
    for pair in got.ranks.chunks(2) {
        assert_eq!(
            site_of(&l, &pair[0]),
            site_of(&l, &pair[1]),
            "{:?}",
            got.ranks
        );
    }
    // The levels' predictions, by hand: each pair all-reduces 256 MiB in
    // a site; each data-parallel ring (one rank of each pair) 16 MiB over
    // three nodes, across sites.
    let clean = |p| vec![RingLink { loss: 0.0 }; p];
    let tp = cost::ring(2, 256 << 20, 250.0, 1_000.0, &clean(2)).unwrap();
    let dp = cost::ring(3, 16 << 20, 5_000.0, 100.0, &clean(3)).unwrap();
    assert_eq!(got.levels.len(), 2);
    assert_eq!((got.levels[0].name.as_str(), got.levels[0].size), ("tp", 2));
    assert_eq!(got.levels[0].prediction, Some(tp));
    assert_eq!(got.levels[1].prediction, Some(dp));
    let total = got.prediction.unwrap().total_ms;
    assert!((total - (tp.total_ms + dp.total_ms)).abs() < 1e-9);
    // A single pair across sites costs more than the whole chosen step.
    let across = cost::ring(2, 256 << 20, 5_000.0, 100.0, &clean(2)).unwrap();
    assert!(across.total_ms > total, "{across:?} vs {total}");
    let r = got.runner_up.expect("another candidate");
    assert!(r.prediction.unwrap().total_ms >= total, "{r:?}");
}

/// Without a shape nothing changes: no ranks, no levels.
#[test]
fn a_shape_blind_answer_has_no_ranks() {
    let l = interleaved_sites();
    let got = run(
        &l,
        &Query {
            allreduce_bytes: 8 << 20,
            ..k(4)
        },
    )
    .unwrap();
    assert!(got.ranks.is_empty() && got.levels.is_empty());
}

#[test]
fn shaped_requests_that_cannot_be_met_say_why() {
    let l = interleaved_sites();
    let err = |q: Query| run(&l, &q).unwrap_err().to_string();
    // k must be the shape's ranks.
    let e = err(Query {
        k: 5,
        ..shaped("tp=2,dp=3")
    });
    assert!(e.contains("6 ranks but 5 nodes"), "{e}");
    // A shape larger than the cluster.
    let e = err(shaped("tp=2,dp=6"));
    assert!(e.contains("12"), "{e}");
    // Groups that cannot fit: every pair of the job must carry 500 Mbit/s,
    // which only a site's own three nodes can.
    let q = Query {
        min_bandwidth_mbps: 500.0,
        ..shaped("tp=2,dp=2")
    };
    let e = err(q);
    assert!(e.contains("500"), "{e}");
}

/// The near-lossy lab's miss (2026-12-04): by RTT alone dj-4 pairs
/// tightly with a Daejeon node, so the sets built from the shape held it,
/// while a set across three regions without it was predicted faster, and
/// ran faster. The built candidates must weigh a pair's loss and
/// bandwidth too.
#[test]
fn a_shaped_job_leaves_out_a_lossy_node_that_only_rtt_calls_near() {
    let l = lossy_dj(0.06);
    let q = shaped("tp=2:4MiB,dp=4:1MiB");
    let got = run(&l, &q).unwrap();
    assert!(!got.nodes.iter().any(|n| n == "dj-4"), "{:?}", got.ranks);
    // No set is predicted faster than the chosen one: not the one the
    // bench measured faster, nor every set of eight without dj-4's site
    // partner.
    let chosen = got.prediction.unwrap().total_ms;
    let other = [
        "dj-1", "dj-2", "gj-2", "gj-3", "se-1", "se-2", "se-3", "se-4",
    ];
    let forced = run(
        &l,
        &Query {
            include: other.iter().map(|s| s.to_string()).collect(),
            ..q.clone()
        },
    )
    .unwrap();
    let theirs = forced.prediction.unwrap().total_ms;
    assert!(
        chosen <= theirs * 1.05,
        "chose {chosen:.1} ms, {other:?} {theirs:.1}"
    );
}
