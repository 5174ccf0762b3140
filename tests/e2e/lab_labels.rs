#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! Labels end to end: the 12-node, 3-region lab with the aggregator writing
//! Node labels (through a real Kubernetes client) to the API server double.

use std::collections::{BTreeMap, BTreeSet};

use netaware_e2e::{require_root, run_lab};

#[test]
#[ignore = "needs root (network namespaces): ./test.sh runs it as root"]
fn group_l2_labels_are_the_regions_and_the_degraded_node_scores_lowest() {
    require_root();
    let run = run_lab(
        "geo-12.yaml",
        "30s",
        &["--icmp", "false", "--bandwidth", "false"],
    );
    println!("{}", run.stdout);
    let report = &run.report;
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
}
