use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::*;

/// 3 regions × 4 pods × 5 racks × 20 nodes, with their groups published.
fn cluster() -> (Vec<String>, Assignment) {
    let names: Vec<String> = (0..1_200).map(|i| format!("n{i:04}")).collect();
    let assignment = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let g = [i / 20, i / 100, i / 400].map(|x| format!("g{x}"));
            (n.clone(), g)
        })
        .collect();
    (names, assignment)
}

fn groups_of<'a>(a: &'a Assignment, n: &str) -> &'a [String; 3] {
    &a[n]
}

#[test]
fn a_small_cluster_is_a_full_mesh() {
    let names: Vec<String> = (0..65).map(|i| format!("n{i}")).collect();
    let none = Assignment::new();
    let index = PlanIndex::new(&names, &none);
    for me in &names {
        let t = index.targets(me, 64, 0);
        assert_eq!(t.len(), 64);
        assert!(!t.contains(&me.as_str()));
    }
    assert!(index.targets("absent", 64, 0).is_empty());
}

#[test]
fn plans_stay_within_the_bound_with_the_own_rack_and_a_representative_of_every_other_group() {
    let (names, a) = cluster();
    let index = PlanIndex::new(&names, &a);
    for me in names.iter().step_by(7) {
        let t = index.targets(me, 64, 3);
        assert!(t.len() <= 64 && t.len() >= 60, "{me}: {}", t.len());
        let set: BTreeSet<&str> = t.iter().copied().collect();
        assert_eq!(set.len(), t.len(), "no repeats");
        assert!(!set.contains(me.as_str()));
        let g = groups_of(&a, me);
        // The whole own rack.
        let rack = names
            .iter()
            .filter(|n| *n != me && a[*n][0] == g[0])
            .count();
        assert_eq!(t.iter().filter(|n| a[**n][0] == g[0]).count(), rack, "{me}");
        // Other racks of the pod, other pods of the region, other regions:
        // each has at least one member in the plan.
        for (level, want) in [(0usize, 4usize), (1, 3), (2, 2)] {
            let seen: BTreeSet<&str> = t
                .iter()
                .filter(|n| {
                    let h = &a[**n];
                    h[level] != g[level] && (level == 2 || h[level + 1] == g[level + 1])
                })
                .map(|n| a[*n][level].as_str())
                .collect();
            assert_eq!(seen.len(), want, "{me}: level {level}: {seen:?}");
        }
    }
}

#[test]
fn one_epoch_keeps_its_plans_and_the_next_rotates_the_samples_but_not_the_rack() {
    let (names, a) = cluster();
    let index = PlanIndex::new(&names, &a);
    let me = "n0421";
    assert_eq!(index.targets(me, 64, 5), index.targets(me, 64, 5));
    let (x, y) = (index.targets(me, 64, 5), index.targets(me, 64, 6));
    let (x, y): (BTreeSet<&str>, BTreeSet<&str>) =
        (x.into_iter().collect(), y.into_iter().collect());
    let rack: BTreeSet<&str> = x.iter().copied().filter(|n| a[*n][0] == a[me][0]).collect();
    assert!(rack.iter().all(|n| y.contains(n)));
    let moved = x.difference(&y).count();
    assert!(moved >= 10, "only {moved} of {} targets rotated", x.len());
}

#[test]
fn over_epochs_every_pair_of_racks_in_a_pod_is_sampled_and_nobody_is_a_hot_spot() {
    let (names, a) = cluster();
    let index = PlanIndex::new(&names, &a);
    let mut rack_pairs: BTreeSet<(String, String)> = BTreeSet::new();
    let mut targeted: HashMap<&str, usize> = HashMap::new();
    for epoch in 0..4 {
        for me in &names {
            for t in index.targets(me, 64, epoch) {
                let (x, y) = (&a[me][0], &a[t][0]);
                if x != y && a[me][1] == a[t][1] {
                    rack_pairs.insert((x.min(y).clone(), x.max(y).clone()));
                }
                if epoch == 0 {
                    *targeted.entry(t).or_default() += 1;
                }
            }
        }
    }
    // 12 pods × C(5, 2) rack pairs.
    assert_eq!(rack_pairs.len(), 12 * 10);
    let max = targeted.values().max().copied().unwrap_or(0);
    let mean = targeted.values().sum::<usize>() as f64 / targeted.len() as f64;
    assert!((max as f64) < 3.0 * mean, "max {max} vs mean {mean:.1}");
}

#[test]
fn a_node_without_groups_probes_a_landmark_in_every_pod() {
    let (names, mut a) = cluster();
    a.remove("n0777");
    let index = PlanIndex::new(&names, &a);
    let t = index.targets("n0777", 64, 0);
    let pods: BTreeSet<&str> = t
        .iter()
        .filter_map(|n| a.get(*n))
        .map(|g| g[1].as_str())
        .collect();
    assert_eq!(pods.len(), 12);
    assert_eq!(t.len(), 64);
}

#[test]
fn at_a_cold_start_every_plan_is_ring_and_samples_within_the_bound() {
    let names: Vec<String> = (0..3_000).map(|i| format!("node-{i}")).collect();
    let empty = Assignment::new();
    let index = PlanIndex::new(&names, &empty);
    let mut indegree: BTreeMap<&str, usize> = BTreeMap::new();
    for me in &names {
        let t = index.targets(me, 64, 0);
        assert_eq!(t.len(), 64);
        for x in t {
            *indegree.entry(x).or_default() += 1;
        }
    }
    assert_eq!(indegree.len(), names.len(), "everyone is probed by someone");
}
