use crate::Error;
use crate::place::diameter::tests::{NEVER, all, brute_force, random_metric};
use crate::place::estimate::MAX_UNITS;
use crate::place::tests::rtts;
use crate::place::{DENSE_MAX_NODES, Placement, Query, View, Zone, place};

/// A cluster of `regions` × 3 pods × 4 racks × 8 nodes: 50 µs inside a
/// rack, 300 µs inside a pod, 2 ms inside a region, 30 ms + 5 ms per region
/// apart between regions. Racks are measured in full; other pairs one in
/// `sample` (as sparse probe plans do). Zones are the true groups.
struct Cluster {
    names: Vec<String>,
    rtt: Vec<Vec<(usize, f64)>>,
    zones: Vec<Zone>,
    quality: Vec<Option<u32>>,
    fresh: Vec<bool>,
}

const RACK: usize = 8;
const POD: usize = 4 * RACK;
const REGION: usize = 3 * POD;

fn truth(i: usize, j: usize) -> f64 {
    let (ri, rj) = (i / REGION, j / REGION);
    if ri != rj {
        30_000.0 + 5_000.0 * ri.abs_diff(rj) as f64
    } else if i / POD != j / POD {
        2_000.0
    } else if i / RACK != j / RACK {
        300.0
    } else {
        // A little noise inside a rack.
        50.0 + ((i * 7 + j * 13) % 5) as f64
    }
}

fn cluster(regions: usize, sample: usize) -> Cluster {
    let n = regions * REGION;
    let names: Vec<String> = (0..n).map(|i| format!("n{i:04}")).collect();
    let mut rtt = vec![Vec::new(); n];
    for i in 0..n {
        for j in i + 1..n {
            if i / RACK == j / RACK || (i * 31 + j * 17) % sample == 0 {
                rtt[i].push((j, truth(i, j)));
                rtt[j].push((i, truth(i, j)));
            }
        }
    }
    for row in &mut rtt {
        row.sort_by_key(|(j, _)| *j);
    }
    let mut zones = Vec::new();
    for (level, size) in [(1, RACK), (2, POD), (3, REGION)] {
        for start in (0..n).step_by(size) {
            let members: Vec<usize> = (start..start + size).collect();
            let max_rtt_us = members
                .iter()
                .flat_map(|&i| rtt[i].iter().filter(|(j, _)| members.contains(j)))
                .map(|(_, d)| *d)
                .fold(0.0, f64::max);
            zones.push(Zone {
                level,
                members,
                max_rtt_us,
            });
        }
    }
    Cluster {
        names,
        rtt,
        zones,
        quality: vec![Some(90); n],
        fresh: vec![true; n],
    }
}

/// `n` nodes with the given measured pairs and no groups.
fn ungrouped(rtt: Vec<Vec<(usize, f64)>>) -> Cluster {
    let n = rtt.len();
    Cluster {
        names: (0..n).map(|i| format!("n{i:04}")).collect(),
        rtt,
        zones: Vec::new(),
        quality: vec![Some(90); n],
        fresh: vec![true; n],
    }
}

fn no_bandwidth(_: usize, _: usize) -> Option<f64> {
    None
}

/// What Place sees of `c`: no bandwidth measured, no Node labels.
fn view<'a>(c: &'a Cluster, levels: &'a [f64]) -> View<'a> {
    View {
        names: &c.names,
        rtt: &c.rtt,
        zones: &c.zones,
        bandwidth: &no_bandwidth,
        loss: &|_, _| 0.0,
        quality: &c.quality,
        fresh: &c.fresh,
        labels: None,
        levels,
    }
}

fn run(c: &Cluster, q: &Query) -> crate::Result<Placement> {
    place(q, &view(c, &[120.0, 800.0, 8_000.0]), &NEVER)
}

fn k(k: usize) -> Query {
    Query {
        k,
        ..Query::default()
    }
}

fn index(p: &Placement) -> Vec<usize> {
    p.nodes.iter().map(|n| n[1..].parse().unwrap()).collect()
}

#[test]
fn a_job_goes_to_the_smallest_group_that_holds_it() {
    let c = cluster(3, 10);
    assert!(c.names.len() > DENSE_MAX_NODES);
    // (k, nodes per group the answer must stay in, its largest RTT)
    for (k, within, rtt) in [
        (4, RACK, 54.0),
        (8, RACK, 54.0),
        (20, POD, 300.0),
        (60, REGION, 2_000.0),
        (150, 2 * REGION, 35_000.0),
    ] {
        let p = run(&c, &self::k(k)).unwrap();
        let nodes = index(&p);
        assert_eq!(nodes.len(), k);
        let first = nodes[0] / within;
        assert!(
            nodes.iter().all(|&i| i / within == first),
            "k={k}: {nodes:?} leaves one group of {within}"
        );
        assert!(p.max_rtt_us <= rtt, "k={k}: {} µs", p.max_rtt_us);
        // The figures say which pairs were measured.
        assert_eq!(p.pairs as usize, k * (k - 1) / 2);
        if k > RACK {
            assert!(p.rtt_pairs_measured < p.pairs, "k={k}");
        } else {
            assert_eq!(p.rtt_pairs_measured, p.pairs);
        }
    }
}

#[test]
fn the_estimate_is_the_slowest_measured_figure_of_the_groups() {
    let c = cluster(2, 10);
    let p = run(&c, &k(20)).unwrap();
    // Three racks of one pod: every pair, measured or not, is 300 µs.
    assert_eq!(p.max_rtt_us, 300.0);
    let p = run(&c, &k(REGION + 1)).unwrap();
    // Two regions, 35 ms apart: some pair across them was measured.
    assert_eq!(p.max_rtt_us, 35_000.0);
}

#[test]
fn unhealthy_nodes_are_left_out_when_the_group_has_room() {
    let mut c = cluster(2, 10);
    // Rack 0 has 8 nodes; node 3 is degraded.
    c.quality[3] = Some(20);
    let mut q = k(7);
    q.include = vec!["n0000".into()];
    let p = run(&c, &q).unwrap();
    assert_eq!(index(&p), vec![0, 1, 2, 4, 5, 6, 7]);
}

#[test]
fn a_pair_measured_unreachable_is_never_chosen_together() {
    let mut c = cluster(2, 10);
    for (i, j) in [(0, 1), (1, 0)] {
        let x = c.rtt[i].iter().position(|(p, _)| *p == j).unwrap();
        c.rtt[i][x].1 = f64::INFINITY;
    }
    let mut q = k(7);
    q.include = vec!["n0000".into()];
    let p = run(&c, &q).unwrap();
    let nodes = index(&p);
    assert!(!nodes.contains(&1), "{nodes:?}");
    assert!(nodes.iter().all(|&i| i < RACK), "the rack stays usable");
    assert!(p.max_rtt_us.is_finite());
}

#[test]
fn required_nodes_pull_the_set_to_them() {
    let c = cluster(3, 10);
    let mut q = k(4);
    q.include = vec!["n0000".into(), format!("n{:04}", REGION)];
    let p = run(&c, &q).unwrap();
    let nodes = index(&p);
    assert!(nodes.contains(&0) && nodes.contains(&REGION));
    assert_eq!(p.max_rtt_us, 35_000.0);
}

#[test]
fn a_bandwidth_minimum_on_sparse_pairs_is_refused_with_what_to_do() {
    let c = cluster(1, 10);
    let mut q = k(4);
    q.min_bandwidth_mbps = 100.0;
    let err = run(&c, &q).unwrap_err();
    assert_eq!(
        err,
        Error::MinBandwidthSparse {
            max: DENSE_MAX_NODES
        }
    );
    assert!(err.to_string().contains("narrow the candidates"));
}

#[test]
fn nodes_without_groups_are_placed_by_their_measured_pairs() {
    // Every node its own unit: the ball step is the node-level one, so
    // it is within twice the optimum on metric distances.
    let mut seed = 7u64;
    for n in 3..=12 {
        let d = random_metric(n, &mut seed);
        let c = ungrouped(rtts(&d));
        let est = super::Estimator::new(&view(&c, &[]), &all(n).eligible).unwrap();
        for k in 1..=n {
            let balls = super::balls(&est, k, &[], &NEVER).unwrap();
            let lower = balls.iter().map(|b| b.radius).fold(f64::INFINITY, f64::min);
            let best = &balls[0];
            let nodes = super::pick(&est, best, k, &[], &c.quality).unwrap();
            let got = crate::place::diameter::diameter(&d, &nodes);
            let opt = brute_force(&d, k, &all(n));
            assert!(got <= 2.0 * opt + 1e-6, "n={n} k={k}: {got} vs {opt}");
            assert!(lower <= opt + 1e-6, "the radius bounds the optimum");
        }
    }
}

#[test]
fn too_many_ungrouped_nodes_are_refused_before_any_table_is_built() {
    let n = MAX_UNITS + 1;
    // A chain: every node measured, none grouped.
    let rtt: Vec<Vec<(usize, f64)>> = (0..n)
        .map(|i| {
            [i.checked_sub(1), (i + 1 < n).then_some(i + 1)]
                .into_iter()
                .flatten()
                .map(|j| (j, 100.0))
                .collect()
        })
        .collect();
    let err = place(&k(2), &view(&ungrouped(rtt), &[]), &NEVER).unwrap_err();
    assert_eq!(
        err,
        Error::TooManyUnits {
            units: n,
            max: MAX_UNITS
        }
    );
    assert!(err.to_string().contains("wait for the next recomputation"));
}
