#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! Sparse probe plans on the 12-node lab: with the aggregator's bound
//! forced down to 4 targets a node (a large cluster's plans, on a small
//! one), every node still gets labels and group-l2 still finds the three
//! regions, though no agent probes more than a third of the others.

use std::collections::{BTreeMap, BTreeSet};

use netaware_e2e::{require_root, run_lab};

#[test]
#[ignore = "needs root (network namespaces): ./test.sh runs it as root"]
fn four_probe_targets_a_node_still_find_the_regions() {
    require_root();
    let run = run_lab(
        "geo-12.yaml",
        "40s",
        &[
            "--icmp",
            "false",
            "--bandwidth",
            "false",
            "--max-probe-targets",
            "4",
        ],
    );
    println!("{}", run.stdout);
    let labels: BTreeMap<String, BTreeMap<String, String>> =
        serde_json::from_value(run.report["labels"].clone()).unwrap();
    assert_eq!(labels.len(), 12, "every node got labels: {labels:?}");
    let mut by_group: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (node, l) in &labels {
        let g = l
            .get("netaware.io/group-l2")
            .unwrap_or_else(|| panic!("{node}: {l:?}"));
        by_group
            .entry(g)
            .or_default()
            .insert(node.split('-').next().unwrap());
    }
    assert_eq!(by_group.len(), 3, "three l2 groups: {by_group:?}");
    assert!(by_group.values().all(|r| r.len() == 1), "{by_group:?}");
    // The plans were sparse: the report lists every configured pair, and
    // no node measured every other (a full mesh gives 11 peers each).
    let mut peers: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for l in run.report["links"].as_array().unwrap() {
        if l["measured"].is_null() {
            continue;
        }
        peers
            .entry(l["src"].as_str().unwrap())
            .or_default()
            .insert(l["dst"].as_str().unwrap());
    }
    assert_eq!(peers.len(), 12, "every node measured some: {peers:?}");
    assert!(peers.values().all(|p| p.len() < 11), "{peers:?}");
}
