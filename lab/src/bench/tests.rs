use super::*;
use std::collections::BTreeSet;

fn geo12() -> Topology {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/topologies/geo-12.yaml");
    Topology::load(Path::new(path)).unwrap()
}

/// Bench options for the tests: ring, seed 1, one random set, no shape.
fn options(k: usize, bytes: u64, iters: u32, rounds: u32) -> BenchOptions {
    BenchOptions {
        k,
        bytes,
        iters,
        rounds,
        seed: 1,
        random_sets: 1,
        algorithm: Algorithm::Ring,
        python: DEFAULT_PYTHON.into(),
        settle: std::time::Duration::from_secs(1),
        shape: None,
    }
}

fn names(t: &Topology, s: &[usize]) -> Vec<String> {
    s.iter().map(|&i| t.nodes[i].name.clone()).collect()
}

#[test]
fn spread_takes_regions_in_turn() {
    let t = geo12();
    assert_eq!(names(&t, &spread(&t, 4)), ["dj-1", "se-1", "gj-1", "dj-2"]);
    assert_eq!(spread(&t, 12).len(), 12);
    assert_eq!(spread(&t, 20).len(), 12);
}

#[test]
fn random_is_seeded_and_distinct() {
    let a = random(12, 4, 7);
    assert_eq!(a, random(12, 4, 7));
    assert_eq!(a.len(), 4);
    assert_eq!(a.iter().collect::<BTreeSet<_>>().len(), 4);
    assert!((0..20).any(|s| random(12, 4, s) != a), "seed matters");
}

#[test]
fn the_optimum_avoids_the_lossy_node_and_crosses_the_cheapest_gap() {
    let t = geo12();
    let four = optimal(&t, 4).unwrap();
    let c = configured(&t, &four);
    assert_eq!(
        (c.max_rtt_ms, c.max_loss),
        (0.2, 0.0),
        "{:?}",
        names(&t, &four)
    );
    // Eight: Daejeon + Seoul is the nearest pair of regions (5 ms), but
    // holds the lossy dj-4; without it, eight nodes span Seoul and
    // Gwangju (10 ms).
    let eight = optimal(&t, 8).unwrap();
    let c = configured(&t, &eight);
    assert_eq!(
        (c.max_rtt_ms, c.max_loss),
        (10.0, 0.0),
        "{:?}",
        names(&t, &eight)
    );
    assert!(!names(&t, &eight).contains(&"dj-4".to_string()));
    assert_eq!(binomial(12, 4), 495);
    assert_eq!(binomial(40, 20), 137_846_528_820);
    assert!(optimal(&t, 13).is_none());
}

#[test]
fn percentiles_are_nearest_rank() {
    let t: Vec<f64> = (1..=10).map(f64::from).collect();
    assert_eq!(percentiles(&t), (5.0, 9.0));
    assert_eq!(percentiles(&[3.0]), (3.0, 3.0));
}

/// The report of a two-node bench on geo-12 whose placements took
/// `runs`: (name, predicted ms, iteration times).
fn report_of(iters: u32, runs: &[(&str, Option<f64>, &[f64])]) -> BenchReport {
    let t = geo12();
    let b = options(2, 1 << 20, iters, 1);
    let cfg = configured(&t, &[0, 1]);
    let placements = runs
        .iter()
        .map(|(name, predicted, times)| {
            placement_result(
                name,
                vec![name.to_string()],
                cfg,
                None,
                predicted.map(|total_ms| Prediction {
                    total_ms,
                    bandwidth_ms: total_ms,
                    ..Default::default()
                }),
                times.to_vec(),
            )
        })
        .collect();
    report(&t, &b, placements)
}

#[test]
fn the_report_compares_every_placement_with_netaware() {
    let r = report_of(
        3,
        &[
            ("netaware", Some(9.0), &[10.0, 12.0, 11.0]),
            ("spread", None, &[30.0, 44.0, 33.0]),
        ],
    );
    assert_eq!((r.topology.as_str(), r.k, r.iters), ("geo-12", 2, 3));
    let [ours, spread] = &r.placements[..] else {
        panic!("{r:?}")
    };
    assert_eq!((ours.iter_ms_p50, ours.iter_ms_p90), (11.0, 12.0));
    assert_eq!(ours.ratio_to_netaware, Some(1.0));
    assert_eq!(spread.ratio_to_netaware, Some(3.0));
    assert_eq!(ours.predicted_ms, Some(9.0));
    // Iteration times are kept as measured, not sorted.
    assert_eq!(spread.iter_ms, [30.0, 44.0, 33.0]);
}

#[test]
fn no_ratio_against_a_zero_median() {
    let r = report_of(1, &[("netaware", None, &[]), ("random", None, &[5.0])]);
    assert!(
        r.placements.iter().all(|p| p.ratio_to_netaware.is_none()),
        "{r:?}"
    );
}

#[test]
fn placements_that_chose_the_same_nodes_share_one_set() {
    let sets: Vec<Vec<String>> = [&["b", "a"][..], &["c", "d"], &["a", "b"], &["a", "b", "a"]]
        .iter()
        .map(|s| s.iter().map(|n| n.to_string()).collect())
        .collect();
    let (distinct, which) = distinct_sets(&sets, false);
    assert_eq!(distinct, [vec!["a", "b"], vec!["c", "d"]]);
    assert_eq!(which, [0, 1, 0, 0]);
    // A shaped job's rank orders: the same nodes in another order differ.
    let (distinct, which) = distinct_sets(&sets, true);
    assert_eq!(distinct.len(), 4);
    assert_eq!(which, [0, 1, 2, 3]);
}

#[test]
fn rounds_split_the_iterations_and_never_run_empty() {
    assert_eq!(iters_per_round(20, 5), 4);
    assert_eq!(
        iters_per_round(21, 5),
        5,
        "at least the iterations asked for"
    );
    assert_eq!(iters_per_round(3, 5), 1);
    assert_eq!(iters_per_round(7, 0), 7);
}

#[test]
fn intervals_hold_the_estimate_and_narrow_with_more_samples() {
    // A skewed spread of iteration times, as an all-reduce's are.
    let times = |n: usize| -> Vec<f64> {
        (0..n)
            .map(|i| 100.0 + ((i * 37) % n) as f64 * 40.0 / n as f64)
            .collect()
    };
    let few = placement_result("a", vec![], cfg0(), None, None, times(10));
    let many = placement_result("a", vec![], cfg0(), None, None, times(200));
    for r in [&few, &many] {
        let [lo, hi] = r.iter_ms_p50_ci95;
        assert!(lo <= r.iter_ms_p50 && r.iter_ms_p50 <= hi, "{r:?}");
        let [lo, hi] = r.iter_ms_p90_ci95;
        assert!(lo <= r.iter_ms_p90 && r.iter_ms_p90 <= hi, "{r:?}");
    }
    let width = |r: &PlacementResult| r.iter_ms_p50_ci95[1] - r.iter_ms_p50_ci95[0];
    assert!(width(&many) < width(&few) / 2.0, "{few:?} {many:?}");
    // Seeded: the same times give the same interval.
    let again = placement_result("b", vec![], cfg0(), None, None, times(10));
    assert_eq!(again.iter_ms_p50_ci95, few.iter_ms_p50_ci95);
}

#[test]
fn a_shared_measurement_has_an_exact_ratio_and_a_different_one_an_interval() {
    let t = geo12();
    let b = options(2, 1 << 20, 4, 2);
    let ab = || vec!["a".to_string(), "b".to_string()];
    let ours = [10.0, 11.0, 12.0, 10.5];
    let r = report(
        &t,
        &b,
        vec![
            placement_result("netaware", ab(), cfg0(), None, None, ours.to_vec()),
            placement_result("optimal", ab(), cfg0(), None, None, ours.to_vec()),
            placement_result(
                "spread",
                vec!["c".into(), "d".into()],
                cfg0(),
                None,
                None,
                vec![20.0, 22.0, 24.0, 21.0],
            ),
        ],
    );
    let [n, o, s] = &r.placements[..] else {
        panic!("{r:?}")
    };
    assert_eq!(
        (n.same_set_as.as_deref(), o.same_set_as.as_deref()),
        (None, Some("netaware"))
    );
    assert_eq!(s.same_set_as, None);
    assert_eq!(o.ratio_to_netaware_ci95, Some([1.0, 1.0]));
    assert_eq!(o.mean_ratio_to_netaware_ci95, Some([1.0, 1.0]));
    let [lo, hi] = s.ratio_to_netaware_ci95.unwrap();
    assert!(lo < 2.0 && 2.0 < hi && lo > 1.5, "{s:?}");
    let mean_ratio = s.mean_ratio_to_netaware.unwrap();
    let [lo, hi] = s.mean_ratio_to_netaware_ci95.unwrap();
    assert!(lo < mean_ratio && mean_ratio < hi && lo > 1.5, "{s:?}");
    let text = render(&r);
    assert!(
        text.contains("optimal chose the same nodes as netaware"),
        "{text}"
    );
    assert!(text.contains("2 interleaved rounds"), "{text}");
}

fn cfg0() -> ConfiguredSet {
    configured(&geo12(), &[0, 1])
}

/// A matrix of three nodes: a–b 200 µs (b→a reads 260), a–c and b–c 5 ms,
/// c's links lose 2 %; bandwidths a–b 1,000 (b→a 900), a–c 400, b–c not
/// tested.
fn matrix3() -> GetMatrixResponse {
    use netaware_proto::v1::{BandwidthState, LinkState, Smoothed};
    let link = |src: &str, dst: &str, rtt_us: f64, loss_ppm: f64| LinkState {
        src: src.into(),
        dst: dst.into(),
        method: ProbeMethod::StampUdp as i32,
        smoothed: Some(Smoothed {
            rtt_p50_us: rtt_us,
            loss_ppm,
            placement_loss_ppm: loss_ppm,
            rtt_known: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    let bw = |s: &str, r: &str, mbps: f64| BandwidthState {
        sender: s.into(),
        receiver: r.into(),
        mbps,
        ..Default::default()
    };
    GetMatrixResponse {
        links: vec![
            link("a", "b", 200.0, 0.0),
            link("b", "a", 260.0, 0.0),
            link("a", "c", 5_000.0, 20_000.0),
            link("c", "a", 5_000.0, 20_000.0),
            link("b", "c", 5_000.0, 20_000.0),
            // ICMP figures are not what Place reads.
            LinkState {
                method: ProbeMethod::IcmpEcho as i32,
                ..link("a", "b", 9_999.0, 0.0)
            },
        ],
        bandwidth: vec![
            bw("a", "b", 1_000.0),
            bw("b", "a", 900.0),
            bw("a", "c", 400.0),
        ],
        ..Default::default()
    }
}

#[test]
fn a_set_is_read_as_place_reads_it_worse_direction_and_lower_bandwidth() {
    let m = matrix3();
    let ab = measured(&m, &["a".into(), "b".into()]);
    assert_eq!(ab.max_rtt_us, 260.0);
    assert_eq!(ab.bottleneck_mbps, Some(900.0));
    assert_eq!(ab.max_loss_ppm, 0.0);
    assert!(ab.complete);
    assert_eq!(ab.ring_loss_ppm, [0.0, 0.0]);
    // p = 2, 500 kB chunks (past the eager limit): 2 steps of 1.5 RTTs and
    // 4 Mbit at 900 Mbit/s: 0.78 ms + 8.889 ms, nothing lost.
    let p = predict(&ab, 2, 1_000_000, Algorithm::Ring).unwrap();
    assert!((p.latency_ms - 0.78).abs() < 1e-9, "{p:?}");
    assert!((p.bandwidth_ms - 8.0 / 0.9).abs() < 1e-9, "{p:?}");
    assert_eq!(p.loss_ms, 0.0);
    let abc = measured(&m, &["a".into(), "b".into(), "c".into()]);
    assert_eq!((abc.max_rtt_us, abc.max_loss_ppm), (5_000.0, 20_000.0));
    // The ring a → b → c → a: the two links to c lose.
    assert_eq!(abc.ring_loss_ppm, [0.0, 20_000.0, 20_000.0]);
    assert!(!abc.complete, "b–c has no bandwidth test");
    assert_eq!(predict(&abc, 3, 1_000_000, Algorithm::Ring), None);
    // Every pair's loss by rank, for recursive doubling's exchanges.
    assert_eq!(
        abc.pair_loss_ppm,
        [
            [0.0, 0.0, 20_000.0],
            [0.0, 0.0, 20_000.0],
            [20_000.0, 20_000.0, 0.0]
        ]
    );
    // Recursive doubling on a–b: one exchange of the whole 1 MB (past the
    // eager limit): 1.5 RTTs and 8 Mbit at 900 Mbit/s.
    let rd = predict(&ab, 2, 1_000_000, Algorithm::RecursiveDoubling).unwrap();
    assert!((rd.latency_ms - 0.39).abs() < 1e-9, "{rd:?}");
    assert!((rd.bandwidth_ms - 8.0 / 0.9).abs() < 1e-9, "{rd:?}");
}

/// A concurrent test's share caps the pairs of its members, as Place
/// reads it, and only theirs.
#[test]
fn a_group_share_caps_the_pairs_of_its_members_only() {
    let mut m = matrix3();
    m.concurrent.push(netaware_proto::v1::ConcurrentTest {
        members: vec!["b".into(), "a".into(), "x".into()],
        flow_mbps: vec![500.0, 600.0, 700.0],
        share_mbps: 600.0,
        started_unix_us: 1,
    });
    let ab = measured(&m, &["a".into(), "b".into()]);
    assert_eq!(ab.bottleneck_mbps, Some(600.0), "pair 900, share 600");
    assert_eq!(ab.shared_mbps, Some(600.0));
    let ac = measured(&m, &["a".into(), "c".into()]);
    assert_eq!(ac.bottleneck_mbps, Some(400.0), "c was not in the test");
    assert_eq!(ac.shared_mbps, None);
}

#[test]
fn spearman_is_one_for_the_same_order_and_minus_one_reversed() {
    let measured = [118.0, 580.0, 121.0, 300.0];
    assert_eq!(spearman(&[1.0, 4.0, 2.0, 3.0], &measured), Some(1.0));
    assert_eq!(spearman(&[4.0, 1.0, 3.0, 2.0], &measured), Some(-1.0));
    // Ties share their mean rank; a constant side has no order.
    let rho = spearman(&[1.0, 3.0, 1.0, 2.0], &measured).unwrap();
    assert!(rho > 0.9 && rho < 1.0, "{rho}");
    assert_eq!(spearman(&[1.0, 1.0], &[2.0, 3.0]), None);
    assert_eq!(spearman(&[1.0], &[2.0]), None);
}

#[test]
fn a_far_prediction_is_called_out_with_the_likely_cause() {
    let m = matrix3();
    let t = geo12();
    let b = options(2, 1_000_000, 2, 1);
    let with = |names: &[&str], times: Vec<f64>| {
        let nodes: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let f = measured(&m, &nodes);
        let name = names.concat();
        placement_result(
            &name,
            nodes,
            cfg0(),
            Some(f.clone()),
            predict(&f, 2, b.bytes, Algorithm::Ring),
            times,
        )
    };
    let r = report(
        &t,
        &b,
        vec![
            // Predicted 9.67 ms: 10 is within the band.
            with(&["a", "b"], vec![10.0, 10.0]),
            // 2 % loss, predicted 44.5 ms (10 of them timeouts: 500 kB
            // transfers expose 1.19 packets each), measured 200.
            with(&["a", "c"], vec![200.0, 200.0]),
        ],
    );
    let text = render(&r);
    assert!(!text.contains("ab: predicted"), "{text}");
    assert!(
        text.contains("ac: predicted")
            && text.contains("expects 10 ms of retransmission timeouts per iteration"),
        "{text}"
    );
    assert_eq!(r.spearman_predicted_measured, Some(1.0));
    assert_eq!(r.spearman_predicted_mean, Some(1.0));
    let ac = &r.placements[1];
    assert!(ac.predicted_over_measured.unwrap() < 0.25, "{ac:?}");

    // The same slow set while the emulator fell behind: both are named,
    // and the table shows the share of late packets.
    let mut slow = with(&["a", "c"], vec![200.0, 200.0]);
    slow.emulator = Some(LatenessSummary {
        p50_us: 10.0,
        p99_us: 20_500.0,
        max_us: 50_000.0,
        packets: 10_000,
        over_1ms: 900,
    });
    let mut fine = with(&["a", "b"], vec![10.0, 10.0]);
    fine.emulator = Some(LatenessSummary {
        packets: 10_000,
        over_1ms: 5,
        ..slow.emulator.unwrap()
    });
    let text = render(&report(&t, &b, vec![fine, slow]));
    assert!(
        text.contains("ac: predicted")
            && text.contains("retransmission timeouts per iteration: more of them stalled in this run (they come whole, 200 ms each); and the lab's emulator fell behind while it ran (9.0 % of packets more than 1 ms late, p99 20.5 ms)"),
        "{text}"
    );
    assert!(text.contains("9.00%") && text.contains("0.05%"), "{text}");
}

/// A loss-free set slower than predicted while the machine's CPUs were
/// saturated is called out as CPU-bound; the same set on an idle machine
/// is not, and the table shows the busy share either way.
#[test]
fn a_slow_set_on_saturated_cpus_is_called_cpu_bound() {
    let m = matrix3();
    let t = geo12();
    let b = options(2, 1_000_000, 2, 1);
    let nodes: Vec<String> = ["a", "b"].iter().map(|n| n.to_string()).collect();
    let f = measured(&m, &nodes);
    // Predicted 9.67 ms, measured 20: 0.48.
    let slow = |busy: f64| {
        let mut p = placement_result(
            "ab",
            nodes.clone(),
            cfg0(),
            Some(f.clone()),
            predict(&f, 2, b.bytes, Algorithm::Ring),
            vec![20.0, 20.0],
        );
        p.cpu_busy = Some(busy);
        p
    };
    let text = render(&report(&t, &b, vec![slow(0.99)]));
    assert!(
        text.contains("ab: predicted")
            && text.contains("the machine's CPUs were 99 % busy while it ran")
            && !text.contains("even with the"),
        "{text}"
    );
    assert!(text.contains("99%"), "{text}");
    let text = render(&report(&t, &b, vec![slow(0.40)]));
    assert!(
        text.contains("ab: predicted") && !text.contains("CPUs were") && text.contains("40%"),
        "{text}"
    );
}

#[test]
fn cpu_time_comes_from_the_rank_programs_answer_and_adds_up() {
    let v = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
    let a = cpu_ticks(&v(r#"{"iter_ms": [1.0], "cpu_ticks": [160, 200]}"#)).unwrap();
    assert_eq!(
        a,
        CpuTimes {
            busy: 160,
            total: 200
        }
    );
    let mut sum = CpuTimes::default();
    assert_eq!(sum.busy_share(), None, "no time, no share");
    sum.add(a);
    sum.add(CpuTimes {
        busy: 40,
        total: 100,
    });
    assert!((sum.busy_share().unwrap() - 2.0 / 3.0).abs() < 1e-12);
    for bad in [
        r#"{"cpu_ticks": null}"#,
        r#"{"cpu_ticks": [1]}"#,
        r#"{"cpu_ticks": [5, 4]}"#,
        r#"{"cpu_ticks": [-1, 4]}"#,
        r#"{}"#,
    ] {
        assert_eq!(cpu_ticks(&v(bad)), None, "{bad}");
    }
}

#[test]
fn latency_only_takes_no_unanswered_pair_for_a_near_one() {
    let mut m = matrix3();
    // a and b stop answering each other: their figures keep a 0 µs RTT
    // with rtt_known = false (lost, not near).
    for l in &mut m.links {
        if (l.src.as_str(), l.dst.as_str()) == ("a", "b")
            || (l.src.as_str(), l.dst.as_str()) == ("b", "a")
        {
            let s = l.smoothed.as_mut().unwrap();
            (s.rtt_p50_us, s.rtt_known, s.loss_ppm) = (0.0, false, 1e6);
        }
    }
    let names: Vec<String> = ["a", "b", "c"].iter().map(|n| n.to_string()).collect();
    let chosen = latency_only(&m, &names, 2).unwrap();
    assert!(chosen.contains(&"c".to_string()), "{chosen:?}");
    assert!(!measured(&m, &["a".into(), "b".into()]).complete);
}

fn shape(text: &str) -> Shape {
    Shape::parse(text, netaware_common::parse_bytes).unwrap()
}

/// Four nodes, two sites: a-b and c-d 200 µs at 1 Gbit/s, across 5 ms at
/// 100 Mbit/s, no loss.
fn two_sites() -> GetMatrixResponse {
    use netaware_proto::v1::{BandwidthState, LinkState, Smoothed};
    let site = |n: &str| matches!(n, "a" | "b");
    let names = ["a", "b", "c", "d"];
    let mut m = GetMatrixResponse::default();
    for s in names {
        for d in names.iter().filter(|d| **d != s) {
            let near = site(s) == site(d);
            m.links.push(LinkState {
                src: s.into(),
                dst: (*d).into(),
                method: ProbeMethod::StampUdp as i32,
                smoothed: Some(Smoothed {
                    rtt_p50_us: if near { 200.0 } else { 5_000.0 },
                    rtt_known: true,
                    ..Default::default()
                }),
                ..Default::default()
            });
            if s < *d {
                m.bandwidth.push(BandwidthState {
                    sender: s.into(),
                    receiver: (*d).into(),
                    mbps: if near { 1_000.0 } else { 100.0 },
                    ..Default::default()
                });
            }
        }
    }
    m
}

/// By hand: tp pairs inside the sites cost a 1 Gbit/s pair all-reduce of
/// 8 MiB, the dp rings (a-c, b-d) one of 1 MiB across; with ranks in the
/// order a c b d the 8 MiB pairs cross instead.
#[test]
fn a_rank_order_is_predicted_level_by_level() {
    let m = two_sites();
    let s = shape("tp=2:8MiB,dp=2:1MiB");
    let order = |o: &[&str]| o.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let clean = [RingLink { loss: 0.0 }; 2];
    let tp_near = cost::ring(2, 8 << 20, 200.0, 1_000.0, &clean).unwrap();
    let tp_far = cost::ring(2, 8 << 20, 5_000.0, 100.0, &clean).unwrap();
    let dp_far = cost::ring(2, 1 << 20, 5_000.0, 100.0, &clean).unwrap();
    let dp_near = cost::ring(2, 1 << 20, 200.0, 1_000.0, &clean).unwrap();
    let good = predict_shaped(&m, &order(&["a", "b", "c", "d"]), &s, 0).unwrap();
    assert!((good.total_ms - (tp_near.total_ms + dp_far.total_ms)).abs() < 1e-9);
    let bad = predict_shaped(&m, &order(&["a", "c", "b", "d"]), &s, 0).unwrap();
    assert!((bad.total_ms - (tp_far.total_ms + dp_near.total_ms)).abs() < 1e-9);
    assert!(bad.total_ms > 3.0 * good.total_ms, "{bad:?} vs {good:?}");
    // A pair without a bandwidth test: no prediction.
    let mut partial = m.clone();
    partial
        .bandwidth
        .retain(|b| (b.sender.as_str(), b.receiver.as_str()) != ("a", "b"));
    assert_eq!(
        predict_shaped(&partial, &order(&["a", "b", "c", "d"]), &s, 0),
        None
    );
}

#[test]
fn the_rank_program_gets_each_level_with_its_bytes() {
    let mut b = options(8, 4096, 1, 1);
    assert_eq!(b.levels(), ["8:4096"]);
    b.shape = Some(shape("tp=2:1MiB,dp=4"));
    assert_eq!(b.levels(), ["2:1048576", "4:4096"]);
    let r = report(&geo12(), &b, Vec::new());
    assert_eq!(r.shape.as_deref(), Some("tp=2:1048576,dp=4"));
    assert!(render(&r).starts_with("shaped job tp=2:1048576,dp=4 (levels in turn)"));
}

/// A lossy set's iterations are on time or a timeout late: its median is
/// whichever kind is the majority in this run, its mean is what the model
/// predicts. A prediction that matches the mean is not called out, however
/// far the median is.
#[test]
fn a_lossy_set_is_judged_by_its_mean() {
    let t = geo12();
    let b = options(2, 1_000_000, 2, 1);
    let prediction = Prediction {
        total_ms: 100.0,
        latency_ms: 10.0,
        bandwidth_ms: 40.0,
        loss_ms: 50.0,
    };
    // Three in four on time (50 ms), one in four a 200 ms timeout late.
    let times: Vec<f64> = (0..20)
        .map(|i| if i % 4 == 3 { 250.0 } else { 50.0 })
        .collect();
    let p = placement_result("lossy", vec![], cfg0(), None, Some(prediction), times);
    assert_eq!(p.iter_ms_p50, 50.0);
    assert!((p.iter_ms_mean - 100.0).abs() < 1e-9, "{p:?}");
    let [lo, hi] = p.iter_ms_mean_ci95;
    assert!(lo < 100.0 && 100.0 < hi && hi - lo < 150.0, "{p:?}");
    assert!((p.predicted_over_measured.unwrap() - 2.0).abs() < 1e-9);
    assert!((p.predicted_over_mean.unwrap() - 1.0).abs() < 1e-9);
    let text = render(&report(&t, &b, vec![p.clone()]));
    assert!(!text.contains("lossy: predicted"), "{text}");
    assert!(
        text.contains("mean ms (95 % CI)") && text.contains("100.0 ["),
        "{text}"
    );

    // Next to a loss-free set predicted (and measured) at 80 ms, the
    // medians order the two against the prediction, the means with it.
    let clean = Prediction {
        total_ms: 80.0,
        latency_ms: 10.0,
        bandwidth_ms: 70.0,
        loss_ms: 0.0,
    };
    let steady = placement_result(
        "steady",
        vec!["c".into()],
        cfg0(),
        None,
        Some(clean),
        vec![80.0; 20],
    );
    let r = report(&t, &b, vec![p, steady]);
    assert_eq!(r.spearman_predicted_measured, Some(-1.0));
    assert_eq!(r.spearman_predicted_mean, Some(1.0));
    assert!(
        render(&r).contains("-1.00 by the median, 1.00 by the mean"),
        "{}",
        render(&r)
    );

    // Twice the timeouts the model expects: called out, by the mean.
    let stalled: Vec<f64> = (0..20)
        .map(|i| if i % 2 == 1 { 250.0 } else { 50.0 })
        .collect();
    let p = placement_result("lossy", vec![], cfg0(), None, Some(prediction), stalled);
    let text = render(&report(&t, &b, vec![p]));
    assert!(
        text.contains("lossy: predicted 100.0 ms is 0.67× the measured mean")
            && text.contains("more of them stalled in this run"),
        "{text}"
    );
}

/// What the job needs of the machine's cores (the ranks' own work plus
/// forwarding its bytes) bounds every prediction's on-time part below: a
/// set predicted faster is judged against it, a slower one keeps its own,
/// a lossy one adds its loss part; a set without a prediction stays
/// without; Spearman keeps Place's order.
#[test]
fn the_machines_cores_bound_every_prediction_below() {
    let r = report_of(
        4,
        &[
            ("netaware", Some(100.0), &[140.0, 140.0, 150.0, 130.0]),
            ("spread", Some(500.0), &[520.0, 520.0, 520.0, 520.0]),
            ("random", None, &[300.0, 300.0, 300.0, 300.0]),
        ],
    );
    let before = (r.spearman_predicted_measured, r.spearman_predicted_mean);
    let text = render(&r);
    // 100 ÷ 140 is out of the band: called out before the host part.
    assert!(
        text.contains("netaware: predicted 100.0 ms is 0.71×"),
        "{text}"
    );
    // 12.5 MB at 1,000 Mbit/s: 100 ms of forwarding, plus 32 ms of work.
    let r = r.with_host(HostPart::new(vec![30.0, 32.0, 34.0], 12.5e6, Some(1000.0)));
    let host = r.host.as_ref().unwrap();
    assert_eq!((host.iter_ms_mean, host.iter_ms_p50), (32.0, 32.0));
    assert!((host.cpu_ms - 132.0).abs() < 1e-9, "{host:?}");
    let ours = &r.placements[0];
    assert_eq!(ours.predicted_ms, Some(100.0));
    assert_eq!(ours.predicted_with_host_ms, Some(host.cpu_ms));
    assert_eq!(ours.predicted_over_mean, Some(host.cpu_ms / 140.0));
    assert_eq!(r.placements[1].predicted_with_host_ms, Some(500.0));
    assert_eq!(r.placements[1].predicted_over_mean, Some(500.0 / 520.0));
    assert_eq!(r.placements[2].predicted_with_host_ms, None);
    assert_eq!(r.placements[2].predicted_over_mean, None);
    assert_eq!(
        (r.spearman_predicted_measured, r.spearman_predicted_mean),
        before
    );
    let text = render(&r);
    assert!(
        text.contains("the same job with all 2 ranks over loopback, no network, mean 32.0 ms")
            && text.contains("forwarding its 11.9 MiB on the wire at 1000 Mbit/s")
            && text.contains("together 132.0 ms")
            && text.contains("lab ms")
            && !text.contains("netaware: predicted"),
        "{text}"
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["host"]["iter_ms_mean"], 32.0);
    assert_eq!(json["host"]["forward_mbps"], 1000.0);
    // A lossy set's timeouts are idle waiting: the bound is on the rest.
    let mut lossy = placement_result(
        "lossy",
        vec![],
        cfg0(),
        None,
        Some(Prediction {
            total_ms: 200.0,
            bandwidth_ms: 100.0,
            loss_ms: 100.0,
            ..Default::default()
        }),
        vec![250.0, 250.0],
    );
    lossy.add_host(host.cpu_ms);
    assert!((lossy.predicted_with_host_ms.unwrap() - 232.0).abs() < 1e-9);
    lossy.add_host(50.0);
    assert_eq!(lossy.predicted_with_host_ms, Some(200.0));
    // Without a concurrent test only the ranks' own work counts.
    assert_eq!(HostPart::new(vec![30.0, 34.0], 12.5e6, None).cpu_ms, 32.0);
}

/// Bytes on the wire, by hand: a ring of s ranks moves 2(s − 1)·b; a
/// shaped job each level's rings; recursive doubling p′·log₂ p′·b plus
/// b each way for each rank beyond p′.
#[test]
fn wire_bytes_by_hand() {
    const MIB: f64 = 1048576.0;
    let ring = options(4, 8 << 20, 1, 1);
    assert_eq!(wire_bytes(&ring), 48.0 * MIB);
    let shaped = BenchOptions {
        k: 8,
        bytes: 4 << 20,
        shape: Some(shape("tp=2:4MiB,dp=4:1MiB")),
        ..ring.clone()
    };
    // Four pairs of 2·1·4 MiB, then two rings of 2·3·1 MiB.
    assert_eq!(wire_bytes(&shaped), (32.0 + 12.0) * MIB);
    let rd = BenchOptions {
        k: 6,
        bytes: 64 << 10,
        algorithm: Algorithm::RecursiveDoubling,
        ..ring.clone()
    };
    // Four ranks in two steps of 64 KiB each, two more handing over and back.
    assert_eq!(wire_bytes(&rd), (4.0 * 2.0 + 2.0 * 2.0) * 65536.0);
    assert_eq!(wire_bytes(&options(1, 8 << 20, 1, 1)), 0.0);
}

/// The most forwarded at once is the largest total of one concurrent
/// test's flows; none tested, none known.
#[test]
fn forwarded_at_once_is_the_largest_concurrent_total() {
    use netaware_proto::v1::ConcurrentTest;
    let test = |flows: &[f64]| ConcurrentTest {
        members: (0..flows.len()).map(|i| format!("n{i}")).collect(),
        flow_mbps: flows.to_vec(),
        share_mbps: flows[0],
        started_unix_us: 1,
    };
    let mut m = matrix3();
    m.concurrent = vec![
        test(&[976.0, 970.0, 980.0, 978.0]),
        test(&[390.0, 400.0, 395.0]),
    ];
    assert_eq!(forwarded_at_once(&m), Some(3904.0));
    m.concurrent.clear();
    assert_eq!(forwarded_at_once(&m), None);
}

/// Predictions that chain within 5 % tie at their chain's smallest value,
/// across any bin edge; values further apart keep their own.
#[test]
fn close_predictions_tie() {
    let v = [597.6, 105.8, 420.6, 597.1, 107.3, 620.0, 700.0];
    assert_eq!(
        tie_close(&v, 1.05),
        [597.1, 105.8, 420.6, 597.1, 105.8, 597.1, 700.0]
    );
    assert_eq!(tie_close(&[], 1.05), Vec::<f64>::new());
    // A tied Spearman: the model's two groups in the right order, the
    // order inside each a coin toss (here the wrong way round).
    let x = tie_close(&[100.0, 101.0, 600.0, 601.0], 1.05);
    let y = [141.0, 138.0, 581.0, 579.0];
    let rho = spearman(&x, &y).unwrap();
    assert!((rho - 0.894).abs() < 0.001, "{rho}");
    assert!(spearman(&[100.0, 101.0, 600.0, 601.0], &y).unwrap() < 0.61);
}

/// Only pairs predicted more than 5 % apart count, each judged by the
/// mean and by the median.
#[test]
fn ordered_pairs_count_what_the_model_tells_apart() {
    let r = report_of(
        3,
        &[
            // Predicted alike (1 % apart): their order is not claimed.
            ("netaware", Some(100.0), &[140.0, 141.0, 142.0]),
            ("optimal", Some(101.0), &[138.0, 139.0, 140.0]),
            // Apart from both, and measured slower: two pairs in order.
            ("spread", Some(600.0), &[580.0, 581.0, 582.0]),
            // Predicted faster than spread but measured slower by the
            // mean (a stalled iteration), faster by the median.
            ("random", Some(400.0), &[300.0, 310.0, 1_200.0]),
        ],
    );
    // Pairs apart: netaware–spread, netaware–random, optimal–spread,
    // optimal–random, random–spread (5). random–spread is out of order
    // by the mean (603 vs 581), in order by the median (310 vs 581).
    assert_eq!(
        r.ordered_pairs,
        Some(OrderedPairs {
            apart: 5,
            by_mean: 4,
            by_median: 5
        })
    );
    let text = render(&r);
    assert!(
        text.contains(
            "predicted more than 5 % apart: 5; ran in that order: 4 by the mean, 5 by the median"
        ),
        "{text}"
    );
    // One set with a prediction: nothing to order.
    let one = report_of(
        1,
        &[("netaware", Some(9.0), &[10.0]), ("spread", None, &[30.0])],
    );
    assert_eq!(one.ordered_pairs, None);
}

/// `--settle`'s help and docs/lab.md say the default is 100 s in the lab.
#[test]
fn the_default_settle_counts_the_placement_loss_horizon_at_the_labs_pace() {
    let settle = default_settle(crate::lab::LAB_TIMING.probe_interval);
    assert_eq!(settle, std::time::Duration::from_secs(100));
}
