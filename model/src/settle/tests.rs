use super::*;

/// `settle` with the previous recomputation's figures equal to the new
/// ones: a change that holds for two recomputations.
fn settled(prev: Option<&NodeFacts>, new: NodeFacts, now: u64, levels: &[f64]) -> NodeFacts {
    let raw = raw(&new);
    settle(prev, Some(&raw), new, now, levels).0
}

/// The raw figures of `f` as the previous recomputation's.
fn raw(f: &NodeFacts) -> Raw {
    Raw {
        quality: f.quality,
        figures: f.figures,
        nearest: f.nearest.clone(),
    }
}

/// The default group thresholds (µs).
const LEVELS: [f64; 3] = [500.0, 2_000.0, 10_000.0];

fn facts(quality: u32, rtt: f64, loss: f64, nearest: &[(&str, u64)]) -> NodeFacts {
    NodeFacts {
        groups: ["g1", "g1", "g1"].map(String::from),
        quality: Some(quality),
        figures: Some(Figures {
            rtt_p50_us: rtt,
            rtt_p99_us: rtt * 2.0,
            jitter_us: 3.0,
            loss_ppm: loss,
            loss_probes: LOSS_LABEL_PROBES,
            bandwidth_mbps: None,
            peers: 5,
        }),
        fresh: true,
        nearest: nearest
            .iter()
            .map(|(n, r)| Peer {
                node: n.to_string(),
                rtt_p50_us: *r,
                loss_ppm: 0,
            })
            .collect(),
        summary_since_unix_us: 0,
    }
}

#[test]
fn two_significant_digits() {
    assert_eq!(two_digits(0.0), 0.0);
    assert_eq!(two_digits(7.0), 7.0);
    assert_eq!(two_digits(304.0), 300.0);
    assert_eq!(two_digits(1_551.0), 1_600.0);
    assert_eq!(two_digits(98_765.0), 99_000.0);
    assert!(two_digits(f64::INFINITY).is_infinite());
}

#[test]
fn quality_moves_in_steps_of_five_and_only_past_five() {
    assert_eq!(settle_quality(None, Some(67)), Some(65));
    assert_eq!(settle_quality(None, Some(98)), Some(100));
    // The ±1–2 drift seen in the lab (66→65→67→68) writes nothing.
    let mut published = settle_quality(None, Some(66));
    for raw in [65, 67, 68, 64, 66, 69] {
        assert_eq!(settle_quality(published, Some(raw)), published, "{raw}");
    }
    // A real change does.
    published = settle_quality(published, Some(52));
    assert_eq!(published, Some(50));
    assert_eq!(settle_quality(published, None), None);
}

#[test]
fn figures_stay_within_their_band_and_follow_a_real_change() {
    let p = settle_value(None, 304.0, RTT_BAND);
    assert_eq!(p, 300.0);
    for raw in [290.0, 318.0, 329.0, 271.0] {
        assert_eq!(settle_value(Some(p), raw, RTT_BAND), p, "{raw}");
    }
    assert_eq!(settle_value(Some(p), 340.0, RTT_BAND), p);
    assert_eq!(settle_value(Some(p), 360.0, RTT_BAND), 360.0);
    // Small values: the absolute floor.
    assert_eq!(settle_value(Some(45.0), 51.0, RTT_BAND), 45.0);
    assert_eq!(settle_value(Some(330.0), 290.0, RTT_BAND), 330.0);
    assert_eq!(settle_value(Some(50.0), 99.0, RTT_BAND), 50.0);
    assert_eq!(settle_value(Some(50.0), 101.0, RTT_BAND), 100.0);
    // Loss: 0 stays 0 under a few lost probes, a degraded node shows, and
    // its noise (a third of itself) stays within one step.
    assert_eq!(settle_loss(Some(0.0), 800.0), 0.0);
    assert_eq!(settle_loss(None, 35_000.0), 50_000.0);
    assert_eq!(settle_loss(Some(0.0), 35_000.0), 50_000.0);
    for raw in [24_000.0, 46_000.0, 60_000.0, 95_000.0] {
        assert_eq!(settle_loss(Some(50_000.0), raw), 50_000.0, "{raw}");
    }
    assert_eq!(settle_loss(Some(50_000.0), 15_000.0), 20_000.0);
    assert_eq!(settle_loss(Some(50_000.0), 0.0), 0.0);
    assert_eq!(settle_loss(None, 1e6), 1e6);
    // Unreachable and back.
    assert!(settle_value(Some(300.0), f64::INFINITY, RTT_BAND).is_infinite());
    assert_eq!(settle_value(Some(f64::INFINITY), 300.0, RTT_BAND), 300.0);
}

#[test]
fn an_unchanged_summary_keeps_its_time_and_a_changed_one_takes_the_new() {
    let first = settled(
        None,
        facts(70, 300.0, 0.0, &[("b", 50), ("c", 300)]),
        1_000,
        &LEVELS,
    );
    assert_eq!(first.summary_since_unix_us, 1_000);
    let noisy = settled(
        Some(&first),
        facts(71, 310.0, 500.0, &[("b", 52), ("c", 290)]),
        2_000,
        &LEVELS,
    );
    assert_eq!(noisy, first, "noise changes nothing at all");
    let moved = settled(
        Some(&first),
        facts(70, 300.0, 0.0, &[("b", 900), ("c", 300)]),
        3_000,
        &LEVELS,
    );
    assert_eq!(moved.summary_since_unix_us, 3_000);
    assert_eq!(
        moved
            .nearest
            .iter()
            .map(|p| p.node.as_str())
            .collect::<Vec<_>>(),
        ["c", "b"],
        "re-sorted by the published values"
    );
}

#[test]
fn among_many_peers_at_one_distance_the_listed_ones_stay() {
    // 40 peers at 300 µs ± noise: 32 are listed, and noise does not swap
    // them for the 8 others.
    let peers = |shift: u64| -> Vec<(String, u64)> {
        (0..40u64)
            .map(|i| (format!("p{i:02}"), 290 + (i * 7 + shift * 13) % 21))
            .collect()
    };
    let as_facts = |v: &[(String, u64)]| {
        let named: Vec<(&str, u64)> = v.iter().map(|(n, r)| (n.as_str(), *r)).collect();
        facts(70, 300.0, 0.0, &named)
    };
    let first = settled(None, as_facts(&peers(0)), 1, &LEVELS);
    assert_eq!(first.nearest.len(), MAX_NEAREST);
    let mut now = first.clone();
    for shift in 1..10 {
        now = settled(Some(&now), as_facts(&peers(shift)), 1 + shift, &LEVELS);
        assert_eq!(now.nearest, first.nearest, "shift {shift}");
    }
    // A peer clearly nearer gets in.
    let mut closer = peers(3);
    closer[39].1 = 50;
    let moved = settled(Some(&now), as_facts(&closer), 99, &LEVELS);
    assert_eq!(moved.nearest[0].node, "p39");
    assert_eq!(moved.summary_since_unix_us, 99);
}

#[test]
fn past_the_rack_the_list_changes_only_for_a_nearer_level_or_half_the_distance() {
    // The scale run's thresholds: a rack under 120 µs, a pod under 800.
    let levels = [120.0, 800.0, 8_000.0];
    // A full list: 3 rack mates and 29 pod peers at 300-330 µs.
    let mut listed: Vec<(String, u64)> = (0..3).map(|i| (format!("r{i}"), 50)).collect();
    listed.extend((0..29).map(|i| (format!("p{i:02}"), 300 + i % 4 * 10)));
    let as_facts = |v: &[(String, u64)]| {
        let named: Vec<(&str, u64)> = v.iter().map(|(n, r)| (n.as_str(), *r)).collect();
        facts(70, 300.0, 0.0, &named)
    };
    let first = settled(None, as_facts(&listed), 1, &levels);
    assert_eq!(first.nearest.len(), MAX_NEAREST);
    // A newly measured pod peer at 270 µs: 18 % nearer than the farthest
    // listed, more than the RTT band, but the same level: no change.
    let mut more = listed.clone();
    more.push(("p-new".into(), 270));
    let same = settled(Some(&first), as_facts(&more), 2, &levels);
    assert_eq!(same, first);
    // A peer less than half as far (140 µs), or in the rack's level, gets in.
    for (rtt, case) in [(140, "half as far"), (60, "nearer level")] {
        let mut more = listed.clone();
        more.push(("x".into(), rtt));
        let moved = settled(Some(&first), as_facts(&more), 3, &levels);
        assert!(moved.nearest.iter().any(|p| p.node == "x"), "{case}");
        assert_eq!(moved.nearest.len(), MAX_NEAREST);
    }
}

#[test]
fn a_peers_loss_in_the_summary_moves_by_decades() {
    let with_loss = |loss: u64| {
        let mut f = facts(70, 300.0, 0.0, &[("b", 50)]);
        f.nearest[0].loss_ppm = loss;
        f
    };
    let first = settled(None, with_loss(12_000), 1, &LEVELS);
    assert_eq!(first.nearest[0].loss_ppm, 10_000);
    // A lossy peer wandering from 1.2 % to 2 % and 5 %: no rewrite.
    for loss in [20_000, 50_000, 3_000] {
        let now = settled(Some(&first), with_loss(loss), 2, &LEVELS);
        assert_eq!(now, first, "{loss} ppm");
    }
    let worse = settled(Some(&first), with_loss(150_000), 3, &LEVELS);
    assert_eq!(worse.nearest[0].loss_ppm, 100_000);
}

/// A lossy peer's loss, counted from a few dozen probes a window, dips
/// past the next step now and then (at 5,000 simulated nodes twice in
/// four minutes): one such recomputation rewrites no summary, two in a
/// row do. The same holds for a listed peer's RTT.
#[test]
fn a_listed_peers_value_changes_only_when_two_recomputations_want_it() {
    let with = |rtt: u64, loss: u64| {
        let mut f = facts(70, 300.0, 0.0, &[("b", rtt)]);
        f.nearest[0].loss_ppm = loss;
        f
    };
    let first = settled(None, with(50, 20_000), 1, &LEVELS);
    assert_eq!(first.nearest[0].loss_ppm, 10_000);
    let calm = raw(&with(50, 20_000));
    for (dip, what) in [(with(50, 500), "loss"), (with(400, 20_000), "rtt")] {
        let (once, raw_once) = settle(Some(&first), Some(&calm), dip.clone(), 2, &LEVELS);
        assert_eq!(once, first, "one dip of the {what}");
        assert_eq!(raw_once.nearest, dip.nearest, "the raw values are kept");
        let (twice, _) = settle(Some(&once), Some(&raw_once), dip, 3, &LEVELS);
        assert_ne!(twice.nearest, first.nearest, "two dips of the {what}");
    }
}

#[test]
fn one_late_window_writes_nothing_and_a_change_that_holds_does() {
    let first = settled(None, facts(90, 300.0, 0.0, &[]), 1, &LEVELS);
    let calm = facts(90, 300.0, 0.0, &[]);
    // One recomputation with a burst: p99 × 10, RTT × 2, quality 60.
    let burst = facts(60, 600.0, 0.0, &[]);
    let during = settle(Some(&first), Some(&raw(&calm)), burst.clone(), 2, &LEVELS).0;
    assert_eq!(during, first, "unconfirmed: nothing changes");
    let after = settle(Some(&during), Some(&raw(&burst)), calm.clone(), 3, &LEVELS).0;
    assert_eq!(after, first, "the burst is over: still nothing");
    // The same change twice in a row is published.
    let held = settle(Some(&first), Some(&raw(&burst)), burst, 4, &LEVELS).0;
    assert_eq!(held.quality, Some(60));
    assert_eq!(held.figures.unwrap().rtt_p50_us, 600.0);
}

#[test]
fn tail_figures_move_on_a_ladder() {
    // p99 is twice the p50 in `facts`: 1,400 µs publishes as 1,000.
    let first = settled(None, facts(90, 700.0, 0.0, &[]), 1, &LEVELS);
    let f = first.figures.unwrap();
    assert_eq!((f.rtt_p99_us, f.jitter_us), (1_000.0, 0.0));
    // 1,400 to 1,900 µs (a 35 % swing) stays 1,000; past 2,000 it moves.
    for p50 in [650.0, 900.0, 950.0] {
        let now = settled(Some(&first), facts(90, p50, 0.0, &[]), 2, &LEVELS);
        assert_eq!(
            now.figures.unwrap().rtt_p99_us,
            1_000.0,
            "p99 {}",
            p50 * 2.0
        );
    }
    let up = settled(Some(&first), facts(90, 2_000.0, 0.0, &[]), 3, &LEVELS);
    assert_eq!(up.figures.unwrap().rtt_p99_us, 5_000.0);
    assert_eq!(settle_tail(Some(1_000.0), f64::INFINITY), f64::INFINITY);
}

/// The lab's churn test: a lossy node (4 % configured) whose first few
/// windows read 8 % must not hold a 100,000 ppm step once enough probes
/// say 4 %, and a new peer's few probes do not unpublish a loss.
#[test]
fn a_loss_from_few_probes_anchors_nothing() {
    let with = |loss: f64, probes: u64| {
        let mut f = facts(80, 300.0, loss, &[]);
        f.figures = f.figures.map(|x| Figures {
            loss_probes: probes,
            ..x
        });
        f
    };
    let loss = |f: &NodeFacts| f.figures.unwrap().loss_ppm;
    let early = settled(None, with(80_000.0, 50), 1, &LEVELS);
    assert_eq!(loss(&early), 100_000.0);
    assert!(!early.figures.unwrap().loss_ready());
    // Enough probes: 4.2 % is published as 50,000 (settled against the
    // unpublished 100,000 it would have stayed there).
    let ready = settled(Some(&early), with(42_000.0, LOSS_LABEL_PROBES), 2, &LEVELS);
    assert_eq!(loss(&ready), 50_000.0);
    assert!(ready.figures.unwrap().loss_ready());
    // A new peer with ten probes moves the median to 7 % (100,000 from
    // scratch): the loss stays published and settled against what was.
    let new_peer = settled(Some(&ready), with(75_000.0, 10), 3, &LEVELS);
    assert_eq!(loss(&new_peer), 50_000.0);
    assert!(new_peer.figures.unwrap().loss_ready());
    assert!(
        crate::labels::node_labels("netaware.io/", &new_peer)
            .unwrap()
            .contains_key("netaware.io/loss-ppm")
    );
}

#[test]
fn a_jittery_nodes_rtt_moves_only_beyond_its_jitter() {
    let jittery = |rtt_p50_us: f64, jitter_us: f64| Figures {
        rtt_p50_us,
        rtt_p99_us: 5_000.0,
        jitter_us,
        loss_ppm: 20_000.0,
        loss_probes: LOSS_LABEL_PROBES,
        bandwidth_mbps: None,
        peers: 3,
    };
    let published = jittery(1_000.0, 1_000.0);
    // The lab's dj-4 (1 ms jitter): its median wanders by 14 %.
    let wandered = jittery(860.0, 1_000.0);
    let held = settle_figures(Some(&published), Some(&wandered), wandered);
    assert_eq!(held.rtt_p50_us, 1_000.0);
    // Beyond its jitter it moves, as a quiet node's does beyond 10 %.
    let slower = jittery(2_100.0, 1_000.0);
    let moved = settle_figures(Some(&published), Some(&slower), slower);
    assert_eq!(moved.rtt_p50_us, 2_100.0);
    let quiet = jittery(1_000.0, 20.0);
    let wandered = jittery(860.0, 20.0);
    assert_eq!(
        settle_figures(Some(&quiet), Some(&wandered), wandered).rtt_p50_us,
        860.0
    );
}

#[test]
fn the_ladders_are_one_two_five() {
    assert_eq!(
        LOSS_STEPS,
        [0.0, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6]
    );
    assert_eq!(
        &TAIL_STEPS[..7],
        [0.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0]
    );
    assert_eq!(TAIL_STEPS[18], 5_000_000.0);
}
