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
            loss_probes: labels::LOSS_LABEL_PROBES,
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
        "shaped-torchrun.yaml",
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

/// The shaped Job: its affinity allows exactly the nodes of the rank list,
/// one pod per node, and its script gives each pod the rank of the node it
/// landed on (run here with a stand-in torchrun that prints its flags).
#[test]
fn the_shaped_job_gives_each_pod_the_rank_of_its_node() {
    let job: Job = serde_norway::from_str(&example("shaped-torchrun.yaml")).unwrap();
    let spec = job.spec.unwrap();
    let pod = spec.template.spec.unwrap();
    let affinity = pod.affinity.unwrap();
    let term = &affinity
        .node_affinity
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .unwrap()
        .node_selector_terms[0]
        .match_expressions
        .clone()
        .unwrap()[0];
    assert_eq!(term.key, "kubernetes.io/hostname");
    let mut allowed = term.values.clone().unwrap();
    allowed.sort();
    let anti = affinity
        .pod_anti_affinity
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .unwrap();
    assert_eq!(anti[0].topology_key, "kubernetes.io/hostname");
    let c = &pod.containers[0];
    let env = c.env.as_ref().unwrap();
    let ranks: Vec<String> = env[0]
        .value
        .as_ref()
        .unwrap()
        .split(' ')
        .map(str::to_string)
        .collect();
    assert_eq!(env[0].name, "NETAWARE_RANK_NODES");
    let mut sorted = ranks.clone();
    sorted.sort();
    assert_eq!(sorted, allowed, "the rank list and the affinity agree");
    assert_eq!(spec.completions, Some(ranks.len() as i32));
    let node_name = env[1]
        .value_from
        .as_ref()
        .unwrap()
        .field_ref
        .as_ref()
        .unwrap();
    assert_eq!(node_name.field_path, "spec.nodeName");

    let command = c.command.as_ref().unwrap();
    assert_eq!(command[..2], ["/bin/sh", "-c"]);
    let dir = std::env::temp_dir().join(format!("netaware-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("torchrun");
    std::fs::write(&fake, "#!/bin/sh\necho \"$@\"\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
    let run = |node: &str| {
        std::process::Command::new("/bin/sh")
            .args(["-c", &command[2]])
            .env("PATH", &path)
            .env("NETAWARE_RANK_NODES", ranks.join(" "))
            .env("NODE_NAME", node)
            .env_remove("MASTER_ADDR")
            .output()
            .unwrap()
    };
    for (rank, node) in ranks.iter().enumerate() {
        let out = run(node);
        let args = String::from_utf8(out.stdout).unwrap();
        assert!(out.status.success(), "{node}: {args}");
        assert!(
            args.contains(&format!("--node-rank={rank} ")),
            "{node}: {args}"
        );
        assert!(
            args.contains(&format!("--master-addr={} ", ranks[0])),
            "{args}"
        );
    }
    // A pod on a node not in the list refuses to start, saying why.
    let out = run("elsewhere");
    assert!(!out.status.success());
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("not in NETAWARE_RANK_NODES")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
