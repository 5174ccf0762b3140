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

/// The windows of nodes `{region}-{k}` towards each other (reported by
/// the first name): RTT 250 µs inside a region and 5 ms across; each of
/// `lossy` loses 2 % towards everyone.
fn lab_windows(regions: &[&str], per_region: usize, lossy: &[&str]) -> Vec<(String, LinkWindow)> {
    let names: Vec<String> = regions
        .iter()
        .flat_map(|r| (1..=per_region).map(move |k| format!("{r}-{k}")))
        .collect();
    let mut out = Vec::new();
    for a in &names {
        for b in &names {
            if a == b {
                continue;
            }
            let same = a.split('-').next() == b.split('-').next();
            let rtt_us = if same { 250 } else { 5_000 };
            let bad = lossy.contains(&a.as_str()) || lossy.contains(&b.as_str());
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
            out.push((a.clone(), w));
        }
    }
    out
}

/// A matrix of `windows`, every reporter connected.
fn matrix_of(windows: Vec<(String, LinkWindow)>, now: Instant) -> Matrix {
    let mut m = Matrix::new(1.0, Duration::from_secs(30));
    for (a, w) in windows {
        m.connect(hello(&a));
        m.apply(&a, w, false, now);
    }
    m
}

/// [`lab_windows`] as a matrix.
fn lab(regions: &[&str], per_region: usize, lossy: &[&str], now: Instant) -> Matrix {
    matrix_of(lab_windows(regions, per_region, lossy), now)
}

#[test]
fn l2_groups_are_the_regions_and_the_lossy_node_scores_lowest() {
    let now = Instant::now();
    let m = lab(&["dj", "se", "gj"], 4, &["dj-4"], now);
    let mut inf = Inference::new(InferConfig::default());
    let out = inf.recompute(&m, now, 1);
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
fn lossy_peers_do_not_make_a_small_groups_healthy_nodes_look_lossy() {
    // Three per region (a median over two peers is their mean), and in
    // "gj" two of four lossy: without leaving them out, dj-1 would read
    // 1 % loss and gj-1 2 %.
    let now = Instant::now();
    let mut windows = lab_windows(&["dj", "se"], 3, &["dj-3"]);
    windows.extend(lab_windows(&["gj"], 4, &["gj-3", "gj-4"]));
    let m = matrix_of(windows, now);
    let out = Inference::new(InferConfig::default()).recompute(&m, now, 1);
    let f = |n: &str| out.facts[n].figures.unwrap();
    // The same figures as a region without a lossy node (over fewer peers).
    let figures = |n: &str| Figures { peers: 0, ..f(n) };
    for healthy in ["dj-1", "dj-2", "gj-1", "gj-2"] {
        assert_eq!(figures(healthy), figures("se-1"), "{healthy}");
    }
    // The lossy nodes read their own loss (2 % each way: a pair's worse
    // direction), and lead nobody else astray: gj-3 and gj-4 are as bad
    // as each other, so each keeps the other among its peers.
    for lossy in ["dj-3", "gj-3", "gj-4"] {
        assert_eq!(f(lossy).loss_ppm, 20_000.0, "{lossy}");
    }
    assert_eq!(f("gj-3").peers, 3);
    assert!(out.facts["dj-3"].quality < out.facts["dj-1"].quality);
}

#[test]
fn a_node_without_measurements_is_not_placed_yet() {
    let now = Instant::now();
    let mut m = lab(&["a", "b"], 2, &[], now);
    m.connect(hello("new-1"));
    let mut inf = Inference::new(InferConfig::default());
    let out = inf.recompute(&m, now, 1);
    assert_eq!(out.facts.len(), 4);
    assert!(!out.facts.contains_key("new-1"));
}

#[test]
fn stale_data_keeps_groups_and_turns_fresh_false() {
    let now = Instant::now();
    let m = lab(&["a", "b"], 2, &[], now);
    let mut inf = Inference::new(InferConfig::default());
    let first = inf.recompute(&m, now, 1);
    let later = inf.recompute(&m, now + Duration::from_secs(60), 1);
    for (node, f) in &later.facts {
        assert!(!f.fresh, "{node}");
        assert_eq!(f.groups, first.facts[node].groups);
        assert_eq!(f.quality, first.facts[node].quality);
    }
}

/// Three nodes 200 µs apart, except that `a` and `b` never answer each
/// other (a firewall between them), or lose `loss_ppm` of their probes.
fn triangle(ab_received: u64, now: Instant) -> Matrix {
    let mut m = Matrix::new(1.0, Duration::from_secs(30));
    for n in ["a", "b", "c"] {
        m.connect(hello(n));
    }
    for (src, dst) in [
        ("a", "b"),
        ("b", "a"),
        ("a", "c"),
        ("c", "a"),
        ("b", "c"),
        ("c", "b"),
    ] {
        let blocked = matches!((src, dst), ("a", "b") | ("b", "a"));
        let received = if blocked { ab_received } else { 100 };
        let w = LinkWindow {
            peer: dst.into(),
            method: ProbeMethod::StampUdp as i32,
            window_start_unix_us: 1,
            sent: 100,
            received,
            rtt_p50_ns: if received > 0 { 200_000 } else { 0 },
            rtt_p99_ns: if received > 0 { 300_000 } else { 0 },
            ..Default::default()
        };
        m.apply(src, w, false, now);
    }
    m
}

#[test]
fn a_pair_that_never_answers_is_never_grouped_and_never_nearest() {
    let now = Instant::now();
    let m = triangle(0, now);
    let d = measured(&m);
    assert!(
        rtt(&d, 0, 1).is_infinite(),
        "a–b must be unreachable, not 0 µs"
    );
    let mut inf = Inference::new(InferConfig {
        hysteresis: 1,
        ..InferConfig::default()
    });
    let out = inf.recompute(&m, now, 1);
    for level in 0..3 {
        assert_ne!(
            out.facts["a"].groups[level],
            out.facts["b"].groups[level],
            "a and b share level {}",
            level + 1
        );
    }
    assert!(out.facts["a"].nearest.iter().all(|p| p.node != "b"));
    assert!(out.facts["b"].nearest.iter().all(|p| p.node != "a"));
    // Their own figures come from c, the peer they do reach.
    let f = out.facts["a"].figures.unwrap();
    assert_eq!(f.rtt_p50_us, 200.0);
}

#[test]
fn a_pair_losing_most_of_its_probes_is_unreachable_too() {
    let now = Instant::now();
    // 40 of 100 answered: 60 % loss, above the threshold.
    let d = measured(&triangle(40, now));
    assert!(rtt(&d, 0, 1).is_infinite());
    // 60 of 100 answered: 40 % loss is a bad link, but a link.
    let d = measured(&triangle(60, now));
    assert_eq!(rtt(&d, 0, 1), 200.0);
}

/// The RTTs a recomputation hands Place ([`Links::rtt`]).
fn measured(m: &Matrix) -> Vec<Vec<(usize, f64)>> {
    Inference::new(InferConfig::default())
        .recompute(m, Instant::now(), 1)
        .links
        .rtt
}

/// A pair's figure in [`Links::rtt`]; `NaN` when it is absent.
fn rtt(d: &[Vec<(usize, f64)>], i: usize, j: usize) -> f64 {
    let from_i = d[i].iter().find(|(p, _)| *p == j).map(|(_, x)| *x);
    let from_j = d[j].iter().find(|(p, _)| *p == i).map(|(_, x)| *x);
    assert_eq!(from_i, from_j, "both directions list the pair");
    from_i.unwrap_or(f64::NAN)
}

#[test]
fn an_unreachable_peer_is_the_worst_case_for_quality() {
    let now = Instant::now();
    let unreachable = pair(&triangle(0, now), "a", "b", now).unwrap();
    assert!(unreachable.rtt_p50_us.is_infinite() && unreachable.loss_ppm == 1e6);
    let reachable = pair(&triangle(100, now), "a", "b", now).unwrap();
    let score = |p: PeerLink| {
        let f = quality::figures(&[p]).unwrap();
        quality::score(&f, &Weights::default(), &Scales::default())
    };
    assert_eq!(score(unreachable), 0, "every term at its worst");
    assert!(score(reachable) > 90);
}

/// The review's S12: a restarted aggregator numbered groups afresh and, by
/// leaving out what it had not measured yet, had labels removed. Seeded
/// with the ids on the Nodes, it keeps them; a node known only from its
/// labels gets no facts (nothing is written for it) until it is measured.
#[test]
fn a_restarted_inference_keeps_the_group_ids_it_is_seeded_with() {
    let now = Instant::now();
    let m = lab(&["a", "b"], 2, &[], now);
    let before = Inference::new(InferConfig::default()).recompute(&m, now, 1);
    // What the labels say: the ids swapped (as another leader numbered
    // them), and a node that has not reconnected yet.
    let mut seeded: groups::Assignment = before
        .facts
        .iter()
        .map(|(n, f)| {
            let swap = |id: &str| if id == "g1" { "g2" } else { "g1" }.to_string();
            (n.clone(), f.groups.clone().map(|g| swap(&g)))
        })
        .collect();
    seeded.insert("c-1".into(), ["g7".into(), "g7".into(), "g7".into()]);
    let mut restarted = Inference::new(InferConfig::default());
    restarted.seed(&seeded);
    let after = restarted.recompute(&m, now, 1);
    for (node, f) in &after.facts {
        assert_eq!(f.groups, seeded[node], "{node}");
    }
    assert!(
        !after.facts.contains_key("c-1"),
        "not measured: not written"
    );
    assert!(
        after
            .groups
            .iter()
            .any(|g| g.members == ["c-1"] && g.id == "g7")
    );
    // A new site gets an id past every seeded one.
    let mut m2 = lab(&["a", "b", "d"], 2, &[], now);
    m2.connect(hello("d-1"));
    let grown = restarted.recompute(&m2, now, 1);
    assert_eq!(grown.facts["d-1"].groups[0], "g8");
    restarted.forget("c-1");
    let forgotten = restarted.recompute(&m2, now, 1);
    assert!(
        forgotten
            .groups
            .iter()
            .all(|g| !g.members.contains(&"c-1".to_string()))
    );
}

/// Racks of 20 in pods of 5 racks (50 µs / 300 µs / 2 ms); each node
/// measures its rack and 20 other nodes (sparse plans). Window `round`
/// adds ±2 % noise per pair and window, as real windows do. The node
/// `degraded` (an index) loses 4 % of the probes on every link and
/// adds 400 µs of jitter.
fn sparse_round(
    m: &mut Matrix,
    names: &[String],
    round: u64,
    degraded: Option<usize>,
    now: Instant,
) {
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    let n = names.len();
    let level = |i: usize| [i / 20, i / 100];
    for i in 0..n {
        let rack = (i / 20) * 20;
        // The same samples every round (one plan), the noise differs.
        let mut peers: Vec<usize> = (rack..rack + 20).collect();
        peers.extend((0..20).map(|k| (i * 7 + k * 13) % n));
        for j in peers.into_iter().filter(|&j| j != i) {
            let (x, y) = (level(i), level(j));
            let base = if x[0] == y[0] {
                50.0
            } else if x[1] == y[1] {
                300.0
            } else {
                2_000.0
            };
            let noise = 1.0 + 0.04 * (rnd() - 0.5) + 0.0 * round as f64;
            let ns = (base * noise * 1e3) as u64;
            let bad = degraded == Some(i) || degraded == Some(j);
            let jitter_ns = if bad { 400_000 } else { ns / 50 };
            let w = LinkWindow {
                peer: names[j].clone(),
                method: ProbeMethod::StampUdp as i32,
                window_start_unix_us: 1 + round * 10_000_000,
                sent: 50,
                received: if bad { 48 } else { 50 },
                rtt_min_ns: ns,
                rtt_mean_ns: ns,
                rtt_p50_ns: ns,
                rtt_p90_ns: ns,
                rtt_p99_ns: ns * 12 / 10 + 3 * jitter_ns,
                rtt_max_ns: ns * 12 / 10 + 3 * jitter_ns,
                jitter_ns,
                ..Default::default()
            };
            m.apply(&names[i], w, false, now);
        }
    }
}

/// The 300 connected nodes of [`sparse_round`], no window yet, and an
/// inference with thresholds between its levels.
fn sparse_cluster() -> (Vec<String>, Matrix, Inference) {
    let names: Vec<String> = (0..300).map(|i| format!("n{i:03}")).collect();
    let mut m = Matrix::new(0.3, Duration::from_secs(30));
    for n in &names {
        m.connect(hello(n));
    }
    let inf = Inference::new(InferConfig {
        thresholds: groups::Thresholds::Fixed([120.0, 800.0, 8_000.0]),
        ..InferConfig::default()
    });
    (names, m, inf)
}

#[test]
fn once_settled_noise_changes_no_published_fact() {
    let now = Instant::now();
    let (names, mut m, mut inf) = sparse_cluster();
    let mut last = None;
    for round in 0..12u64 {
        sparse_round(&mut m, &names, round, None, now);
        let out = inf.recompute(&m, now, round + 1);
        if round >= 4 {
            let before: &Inferred = last.as_ref().unwrap();
            let changed: Vec<&String> = out
                .facts
                .iter()
                .filter(|(k, f)| before.facts.get(*k) != Some(*f))
                .map(|(k, _)| k)
                .collect();
            assert!(
                changed.is_empty(),
                "round {round}: {} nodes changed, e.g. {:?} → {:?}",
                changed.len(),
                before.facts.get(changed[0]),
                out.facts.get(changed[0])
            );
        }
        last = Some(out);
    }
}

#[test]
fn one_degraded_node_changes_its_own_facts_and_nobody_elses() {
    // Sparse plans over racks and pods (`sparse_round`); once settled,
    // n042 starts losing probes with a lot of jitter. Its rack mates and
    // its pod's other members measure it, yet only its facts change
    // (docs/labels.md, "A bad peer does not make its neighbours look bad").
    let now = Instant::now();
    let (names, mut m, mut inf) = sparse_cluster();
    const FAULT: usize = 42;
    // What becomes labels (the summary annotations that list n042 do show
    // its loss: a fact about that pair).
    let labels = |f: &NodeFacts| {
        let figures = f.figures.map(|x| Figures { peers: 0, ..x });
        (f.groups.clone(), f.quality, figures, f.fresh)
    };
    let mut settled = None;
    for round in 0..20u64 {
        let degraded = (round >= 8).then_some(FAULT);
        sparse_round(&mut m, &names, round, degraded, now);
        let out = inf.recompute(&m, now, round + 1);
        if round == 7 {
            settled = Some(out);
        } else if let Some(before) = &settled {
            let changed: Vec<&String> = out
                .facts
                .iter()
                .filter(|(k, f)| {
                    *k != &names[FAULT] && before.facts.get(*k).map(labels) != Some(labels(f))
                })
                .map(|(k, _)| k)
                .collect();
            assert!(
                changed.is_empty(),
                "round {round}: {} others changed, e.g. {}: {:?} → {:?}",
                changed.len(),
                changed[0],
                before.facts.get(changed[0]).map(labels),
                out.facts.get(changed[0]).map(labels)
            );
            if round == 19 {
                let q = |o: &Inferred| o.facts[&names[FAULT]].quality.unwrap();
                assert!(q(&out) + 20 < q(before), "{} → {}", q(before), q(&out));
            }
        }
    }
}
