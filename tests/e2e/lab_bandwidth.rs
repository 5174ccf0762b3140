#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Bandwidth tests in the lab: the aggregator schedules them, agents run
//! them over the emulated links, the results reach the report and the
//! `bandwidth-mbps` labels, and iperf3 on the same pairs agrees. Accuracy
//! figures live in docs/benchmarks.md; the bounds here only catch breakage.

use netaware_e2e::{require_root, run_lab};

#[test]
#[ignore = "needs root (network namespaces): ./test.sh runs it as root"]
fn every_pair_is_tested_and_agrees_with_iperf3() {
    require_root();
    let run = run_lab(
        "e2e-bw.yaml",
        // Tests disturb every window of their ends (and 2 s after): a node
        // gets figures, groups and labels only after the last one.
        "20s",
        &["--iperf3", "--icmp", "false", "--bandwidth-duration", "2s"],
    );
    println!("{}", run.stdout);
    let r = &run.report;
    let bw = r["bandwidth"].as_array().expect("a bandwidth section");
    let mut pairs: Vec<(String, String)> = bw
        .iter()
        .map(|b| {
            let (s, t) = (
                b["sender"].as_str().unwrap(),
                b["receiver"].as_str().unwrap(),
            );
            if s < t {
                (s.into(), t.into())
            } else {
                (t.into(), s.into())
            }
        })
        .collect();
    pairs.sort();
    assert_eq!(
        pairs,
        [("a", "b"), ("a", "c"), ("b", "c")].map(|(x, y)| (x.to_string(), y.to_string())),
        "each pair once: {bw:#?}"
    );
    for b in bw {
        let cap = b["configured_mbps"].as_f64().unwrap();
        let ours = b["measured_mbps"].as_f64().unwrap();
        let iperf = b["iperf3_mbps"].as_f64().unwrap();
        assert!(ours <= cap * 1.02, "above the cap: {b}");
        assert!(ours >= cap * 0.8, "far below the cap: {b}");
        let ratio = b["to_iperf3"].as_f64().unwrap();
        assert!((0.85..=1.15).contains(&ratio), "ours vs iperf3: {b}");
        assert!((ratio - ours / iperf).abs() < 1e-9);
        assert_eq!(b["stream_mbps"].as_array().unwrap().len(), 4);
    }
    assert!(
        r["disturbed_windows"].as_u64().unwrap() > 0,
        "windows during the tests are flagged"
    );
    // Every node carries the bandwidth label: the median over its two group
    // peers of the measured pair bandwidth (docs/labels.md).
    let measured = |x: &str, y: &str| {
        bw.iter()
            .find(|b| {
                (b["sender"] == x && b["receiver"] == y) || (b["sender"] == y && b["receiver"] == x)
            })
            .unwrap()["measured_mbps"]
            .as_f64()
            .unwrap()
    };
    let labels = r["labels"].as_object().unwrap();
    assert_eq!(labels.len(), 3);
    for (node, others) in [("a", ["b", "c"]), ("b", ["a", "c"]), ("c", ["a", "b"])] {
        let l = &labels[node];
        let v: f64 = l["netaware.io/bandwidth-mbps"]
            .as_str()
            .unwrap_or_else(|| panic!("{node} has no bandwidth label: {l}"))
            .parse()
            .unwrap();
        let median = (measured(node, others[0]) + measured(node, others[1])) / 2.0;
        assert!(
            (v - median).abs() <= 1.0,
            "{node}: label {v}, median {median}"
        );
    }
}
