#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! The files in examples/ parse as what they claim to be, and use only label
//! keys the aggregator actually writes.

use std::path::PathBuf;

use k8s_openapi::api::batch::v1::Job;
use netaware_model::labels::{self, NodeFacts};
use netaware_model::quality::Figures;

fn example(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every key the aggregator can write with the default prefix.
fn written_keys() -> Vec<String> {
    let facts = NodeFacts {
        groups: ["g1".into(), "g2".into(), "g3".into()],
        quality: Some(90),
        figures: Some(Figures {
            rtt_p50_us: 1.0,
            rtt_p99_us: 1.0,
            jitter_us: 1.0,
            loss_ppm: 0.0,
            bandwidth_mbps: Some(1.0),
            peers: 1,
        }),
        fresh: true,
        nearest: vec![],
        summary_since_unix_us: 0,
    };
    labels::node_labels(labels::DEFAULT_PREFIX, &facts)
        .unwrap()
        .into_keys()
        .collect()
}

fn netaware_keys_in(text: &str) -> Vec<String> {
    // Keys appear as `key:` (maps), bare values (topologyKey) or quoted.
    text.split(|c: char| c.is_whitespace() || c == '"')
        .map(|w| w.trim_end_matches(':'))
        .filter(|w| w.starts_with("netaware.io/"))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_training_job_is_a_valid_job_using_our_labels() {
    let text = example("training-job.yaml");
    let job: Job = serde_norway::from_str(&text).unwrap();
    let spec = job.spec.unwrap().template.spec.unwrap();
    let affinity = spec.affinity.unwrap();
    let pod = affinity.pod_affinity.unwrap();
    let required = pod
        .required_during_scheduling_ignored_during_execution
        .unwrap();
    assert_eq!(required[0].topology_key, "netaware.io/group-l2");
    let node = affinity.node_affinity.unwrap();
    let preferred = node
        .preferred_during_scheduling_ignored_during_execution
        .unwrap();
    let quality = &preferred[0].preference.match_expressions.as_ref().unwrap()[0];
    assert_eq!(
        (quality.key.as_str(), quality.operator.as_str()),
        ("netaware.io/quality", "Gt")
    );
    // Gt compares integers: the value must parse as one.
    quality.values.as_ref().unwrap()[0].parse::<u64>().unwrap();
}

#[test]
fn every_example_uses_only_keys_we_write() {
    let ours = written_keys();
    let mut seen = 0;
    for file in [
        "training-job.yaml",
        "kueue-topology.yaml",
        "volcano-label-discovery.yaml",
    ] {
        let text = example(file);
        // Each document must be YAML.
        for doc in serde_norway::Deserializer::from_str(&text) {
            let _: serde_norway::Value = serde::Deserialize::deserialize(doc).unwrap();
        }
        for key in netaware_keys_in(&text) {
            assert!(
                ours.contains(&key),
                "{file} uses {key}, which the aggregator never writes"
            );
            seen += 1;
        }
    }
    assert!(
        seen >= 8,
        "expected the examples to use our keys, found {seen}"
    );
}
