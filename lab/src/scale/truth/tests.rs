use std::collections::{BTreeMap, BTreeSet};

use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;

use super::*;

#[test]
fn one_seed_is_one_network_and_another_seed_another() {
    let (a, b, c) = (
        Truth::generate(700, 3),
        Truth::generate(700, 3),
        Truth::generate(700, 4),
    );
    assert_eq!(a.broken, b.broken);
    assert_eq!(a.nodes(), b.nodes());
    assert_eq!(a.rtt_us(5, 600), b.rtt_us(5, 600));
    assert_ne!(a.nodes(), c.nodes());
}

#[test]
fn racks_pods_and_regions_nest_and_have_the_sizes_asked_for() {
    let t = Truth::generate(5_000, 1);
    assert_eq!(t.len(), 5_000);
    let mut racks: BTreeMap<u32, (usize, u32, u32)> = BTreeMap::new();
    for n in t.nodes() {
        let e = racks
            .entry(n.levels[0])
            .or_insert((0, n.levels[1], n.levels[2]));
        e.0 += 1;
        // A rack lies in one pod and one region.
        assert_eq!((e.1, e.2), (n.levels[1], n.levels[2]), "{n:?}");
    }
    let full = racks.values().filter(|r| (16..=32).contains(&r.0)).count();
    // Only the last rack of a region may be cut short.
    let regions: BTreeSet<u32> = t.nodes().iter().map(|n| n.levels[2]).collect();
    assert!(racks.len() - full <= regions.len(), "{racks:?}");
    assert_eq!(regions.len(), 5);
}

#[test]
fn rtt_grows_with_each_level_two_nodes_do_not_share() {
    let t = Truth::generate(2_000, 2);
    let mut by_level: [Vec<f64>; 4] = Default::default();
    for a in (0..t.len()).step_by(37) {
        for b in (0..t.len()).step_by(41) {
            if a == b {
                continue;
            }
            let shared = (0..3)
                .find(|&l| t.level(a, l) == t.level(b, l))
                .unwrap_or(3);
            by_level[shared].push(t.rtt_us(a, b));
        }
    }
    let range = |v: &Vec<f64>| {
        (
            v.iter().copied().fold(f64::INFINITY, f64::min),
            v.iter().copied().fold(0.0, f64::max),
        )
    };
    for w in by_level.windows(2) {
        assert!(!w[0].is_empty() && !w[1].is_empty());
        assert!(range(&w[0]).1 < range(&w[1]).0, "levels overlap");
    }
    assert_eq!(t.rtt_us(3, 1_500), t.rtt_us(1_500, 3), "symmetric");
}

#[test]
fn degraded_nodes_one_per_pod_and_broken_links_lose_everything() {
    let t = Truth::generate(5_000, 9);
    let degraded: Vec<&Node> = t.nodes().iter().filter(|n| n.degraded).collect();
    assert_eq!(degraded.len(), 10);
    let pods: BTreeSet<u32> = degraded.iter().map(|n| n.levels[1]).collect();
    assert_eq!(pods.len(), 10);
    assert!(degraded.iter().all(|n| (0.02..0.05).contains(&n.loss)));
    let (a, b) = *t.broken.iter().next().expect("broken links");
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
    assert_eq!(t.window(a, b, 50, &mut rng).received, 0);
    assert_eq!(t.loss(b, a), 1.0);
}

#[test]
fn windows_are_ordered_as_the_aggregator_requires() {
    let t = Truth::generate(300, 5);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
    for a in 0..40 {
        for b in 100..140 {
            let w = t.window(a, b, 50, &mut rng);
            assert!(w.received <= w.sent);
            let order = [w.min_ns, w.p50_ns, w.p90_ns, w.p99_ns, w.max_ns];
            assert!(order.windows(2).all(|p| p[0] <= p[1]), "{w:?}");
            assert!((w.min_ns..=w.max_ns).contains(&w.mean_ns), "{w:?}");
            let base = t.rtt_us(a, b) * 1e3;
            assert!((w.p50_ns as f64 - base).abs() < base * 0.07, "{w:?}");
        }
    }
}

#[test]
fn a_fault_degrades_one_node_on_every_link_from_then_on() {
    let t = Truth::generate(400, 8);
    let i = (0..t.len()).find(|&i| !t.nodes()[i].degraded).unwrap();
    let peer = (0..t.len())
        .find(|&j| j != i && !t.is_degraded(j) && !t.is_broken(i, j))
        .unwrap();
    assert_eq!(t.loss(i, peer), 0.0);
    t.inject_fault(i);
    assert!(t.is_degraded(i));
    assert_eq!(t.loss(peer, i), FAULT_LOSS);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
    let lost: u64 = (0..200)
        .map(|_| {
            let w = t.window(i, peer, 50, &mut rng);
            w.sent - w.received
        })
        .sum();
    assert!((200..=700).contains(&lost), "4 % of 10,000 probes: {lost}");
}
