#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! Labels end to end: the 12-node, 3-region lab with the aggregator writing
//! Node labels (through a real Kubernetes client) to the API server double.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use netaware_e2e::{binary, free_port, is_root, repo_root};
use serde_json::Value;

#[test]
fn group_l2_labels_are_the_regions_and_the_degraded_node_scores_lowest() {
    if !is_root() {
        eprintln!("SKIPPED: the lab needs root (CI runs as root)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("netaware-e2e-labels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let topology = repo_root().join("lab/topologies/geo-12.yaml");
    let out = Command::new(binary("netaware-lab"))
        .args([
            "run",
            topology.to_str().unwrap(),
            "--for",
            "20s",
            "--icmp",
            "false",
        ])
        .args(["--json", json.to_str().unwrap()])
        .args(["--query-port", &free_port().to_string()])
        .args(["--log-dir", dir.join("logs").to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "lab failed (logs kept in {}):\n{}\n{stdout}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let labels: BTreeMap<String, BTreeMap<String, String>> =
        serde_json::from_value(report["labels"].clone()).unwrap();
    assert_eq!(labels.len(), 12, "every node got labels: {labels:?}");
    let get = |node: &str, key: &str| -> String {
        labels[node]
            .get(&format!("netaware.io/{key}"))
            .cloned()
            .unwrap_or_else(|| panic!("{node} has no {key}: {:?}", labels[node]))
    };
    let region = |node: &str| node.split('-').next().unwrap().to_string();

    // group-l2 partitions the nodes exactly as the regions do.
    let mut by_group: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for node in labels.keys() {
        by_group
            .entry(get(node, "group-l2"))
            .or_default()
            .insert(region(node));
    }
    assert_eq!(by_group.len(), 3, "three l2 groups: {by_group:?}");
    assert!(
        by_group.values().all(|regions| regions.len() == 1),
        "{by_group:?}"
    );

    // dj-4 (2 % loss each way, 1 ms jitter) has the lowest quality of daejeon.
    let q = |node: &str| get(node, "quality").parse::<u32>().unwrap();
    for other in ["dj-1", "dj-2", "dj-3"] {
        assert!(
            q("dj-4") < q(other),
            "dj-4 {} vs {other} {}",
            q("dj-4"),
            q(other)
        );
    }
    // Numeric labels are plain integers (usable with Gt/Lt) and data is fresh.
    for node in labels.keys() {
        for key in ["rtt-p50-us", "rtt-p99-us", "jitter-us", "loss-ppm"] {
            get(node, key).parse::<u64>().unwrap();
        }
        assert_eq!(get(node, "fresh"), "true");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
