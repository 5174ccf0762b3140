//! Time to cluster and score a synthetic matrix (docs/benchmarks.md).
//!
//! ```sh
//! cargo run --release -p netaware-model --example cluster_bench -- 1000 5000
//! ```
//!
//! Nodes sit in sites of 8, sites in metros of 4, metros in regions of 4;
//! RTTs are 0.2 / 1 / 5 / 30 ms between those levels with ±10 % noise, and
//! 1 % of pairs are missing. For each size it times the clustering, the three
//! cuts, and the per-node quality (medians over each node's l2 group).

use std::time::Instant;

use netaware_model::groups::{self, Distances};
use netaware_model::quality::{self, PeerLink, Scales, Weights};

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1000, 5000]
    } else {
        sizes
    };
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    println!("nodes  build_ms  cluster_ms  cut_ms  quality_ms  total_ms  groups(l1/l2/l3)");
    for n in sizes {
        let t0 = Instant::now();
        let mut d = Distances::new(n);
        for i in 0..n {
            for j in i + 1..n {
                if rnd() < 0.01 {
                    continue; // missing pair
                }
                let base = if i / 8 == j / 8 {
                    200.0
                } else if i / 32 == j / 32 {
                    1_000.0
                } else if i / 128 == j / 128 {
                    5_000.0
                } else {
                    30_000.0
                };
                d.set(i, j, base * (0.9 + 0.2 * rnd()));
            }
        }
        let t1 = Instant::now();
        let merges = groups::complete_linkage(&d);
        let t2 = Instant::now();
        let levels = groups::DEFAULT_THRESHOLDS_US.map(|t| groups::cut(&merges, n, t));
        let t3 = Instant::now();
        let mut by_group: std::collections::HashMap<usize, Vec<usize>> = Default::default();
        for (i, g) in levels[1].iter().enumerate() {
            by_group.entry(*g).or_default().push(i);
        }
        let mut scored = 0usize;
        for i in 0..n {
            let peers: Vec<PeerLink> = by_group[&levels[1][i]]
                .iter()
                .filter(|j| **j != i)
                .map(|j| PeerLink {
                    rtt_p50_us: d.get(i, *j),
                    rtt_p99_us: d.get(i, *j) * 2.0,
                    jitter_us: 20.0,
                    loss_ppm: 0.0,
                    placement_loss_ppm: 0.0,
                    loss_probes: 1_000,
                    bandwidth_mbps: None,
                })
                .collect();
            if let Some(f) = quality::figures(&peers) {
                scored +=
                    usize::from(quality::score(&f, &Weights::default(), &Scales::default()) <= 100);
            }
        }
        let t4 = Instant::now();
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1000.0;
        let count = |l: &Vec<usize>| l.iter().max().map_or(0, |m| m + 1);
        println!(
            "{n:>5}  {:>8.0}  {:>10.0}  {:>6.1}  {:>10.1}  {:>8.0}  {}/{}/{} ({scored} scored)",
            ms(t0, t1),
            ms(t1, t2),
            ms(t2, t3),
            ms(t3, t4),
            ms(t1, t4),
            count(&levels[0]),
            count(&levels[1]),
            count(&levels[2]),
        );
    }
}
