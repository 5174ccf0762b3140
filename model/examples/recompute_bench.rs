//! Time of one recomputation (groups, quality, nearest peers) from a matrix
//! shaped as sparse probe plans leave it; of the copy of the matrix a
//! GetMatrix snapshot takes; and of a Place for k = 4, 64, 256 on what the
//! recomputation read (docs/benchmarks.md).
//!
//! ```sh
//! cargo run --release -p netaware-model --example recompute_bench -- 1000 5000
//! ```
//!
//! Racks of 24 nodes, pods of 6 racks, regions of 1,000 nodes (50 µs,
//! 300 µs, 2 ms, 30 ms); every node has windows towards its rack and 40
//! other peers (a 64-target plan), two windows each.

use std::time::{Duration, Instant};

use netaware_model::infer::{InferConfig, Inference};
use netaware_model::matrix::Matrix;
use netaware_model::place::diameter::Stop;
use netaware_model::place::{Query, place_on};
use netaware_proto::ProbeMethod;
use netaware_proto::v1::{Hello, LinkWindow};

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
    println!(
        "nodes  links  fill_ms  recompute_ms  again_ms  clone_ms  place_k4_ms  place_k64_ms  place_k256_ms"
    );
    for n in sizes {
        let name = |i: usize| format!("node-{i:05}");
        let level = |i: usize| [i / 24, i / 144, i / 1000];
        let rtt = |a: usize, b: usize| {
            let (x, y) = (level(a), level(b));
            if x[0] == y[0] {
                50.0
            } else if x[1] == y[1] {
                300.0
            } else if x[2] == y[2] {
                2_000.0
            } else {
                30_000.0
            }
        };
        let t0 = Instant::now();
        let now = Instant::now();
        let mut m = Matrix::new(0.3, Duration::from_secs(30));
        for i in 0..n {
            m.connect(Hello {
                node_name: name(i),
                probe_addresses: vec!["10.0.0.1".into()],
                stamp_port: 8620,
                capabilities: vec![ProbeMethod::StampUdp as i32],
                instance_id: 1,
                ..Default::default()
            });
        }
        let base = 1_000_000_000u64;
        for round in 0..2u64 {
            for i in 0..n {
                let rack = (i / 24) * 24;
                let sampled: Vec<usize> =
                    (0..40).map(|_| (rnd() * n as f64) as usize % n).collect();
                let peers: Vec<usize> = (rack..(rack + 24).min(n))
                    .chain(sampled)
                    .filter(|&j| j != i)
                    .collect();
                for j in peers {
                    let ns = (rtt(i, j) * (0.95 + 0.1 * rnd()) * 1e3) as u64;
                    let w = LinkWindow {
                        peer: name(j),
                        method: ProbeMethod::StampUdp as i32,
                        window_start_unix_us: base + round * 10_000_000,
                        window_end_unix_us: base + (round + 1) * 10_000_000,
                        sent: 50,
                        received: 50,
                        rtt_min_ns: ns,
                        rtt_mean_ns: ns,
                        rtt_p50_ns: ns,
                        rtt_p90_ns: ns,
                        rtt_p99_ns: ns,
                        rtt_max_ns: ns,
                        ..Default::default()
                    };
                    m.apply(&name(i), w, false, now);
                }
            }
        }
        let fill = t0.elapsed();
        let links = m.links(ProbeMethod::Unspecified, now).len();
        let mut inf = Inference::new(InferConfig::default());
        let t1 = Instant::now();
        let first = inf.recompute(&m, now, 1);
        let recompute = t1.elapsed();
        let t2 = Instant::now();
        let _ = inf.recompute(&m, now, 2);
        let again = t2.elapsed();
        assert_eq!(first.facts.len(), n);
        // The clone a query snapshot takes (links shared: it costs the nodes).
        let t3 = Instant::now();
        let copy = m.clone();
        let clone = t3.elapsed();
        drop(copy);
        // A Place reads the recomputation alone.
        let place_ms = |k: usize| {
            let t = Instant::now();
            let q = Query {
                k,
                ..Query::default()
            };
            let p = place_on(&first, &q, None, &Stop::new(false)).map(|p| p.nodes.len());
            assert_eq!(p, Ok(k));
            t.elapsed().as_secs_f64() * 1e3
        };
        println!(
            "{n:>5}  {links:>6}  {:>7.0}  {:>12.0}  {:>8.0}  {:>8.0}  {:>11.0}  {:>12.0}  {:>13.0}",
            fill.as_secs_f64() * 1e3,
            recompute.as_secs_f64() * 1e3,
            again.as_secs_f64() * 1e3,
            clone.as_secs_f64() * 1e3,
            place_ms(4),
            place_ms(64),
            place_ms(256),
        );
    }
}
