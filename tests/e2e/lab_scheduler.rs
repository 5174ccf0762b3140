#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! The test the project exists for: the lab measures geo-12 (three regions,
//! one lossy node, dj-4), the aggregator writes labels to a real API
//! server, and the stock kube-scheduler places the examples' pods by them.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netaware_e2e::{Killed, binary, free_port, repo_root, require_root, run_lab, sigterm};
use netaware_lab::cluster::{self, objects};
use serde_json::{Value, json};

/// One lab at a time on a host (a second refuses to start): the two tests
/// of this file take turns.
static LAB: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Both tests: geo-12 on a real control plane, RTT only (fast and steady).
const REAL_LAB: [&str; 6] = [
    "--kubernetes",
    "real",
    "--icmp",
    "false",
    "--bandwidth",
    "false",
];

fn region(node: &str) -> &str {
    node.split('-').next().unwrap()
}

#[test]
#[ignore = "needs root (network namespaces): ./test.sh runs it as root"]
fn the_example_training_job_lands_in_one_measured_region_and_off_the_lossy_node() {
    require_root();
    let _turn = LAB.blocking_lock();
    if netaware_e2e::k8s::binaries().is_none() {
        return;
    }
    let job = repo_root().join("examples/training-job.yaml");
    let run = run_lab(
        "geo-12.yaml",
        "40s",
        &[&REAL_LAB[..], &["--apply", job.to_str().unwrap()]].concat(),
    );
    let r = &run.report;
    assert_eq!(r["kubernetes"]["mode"], "real");
    assert_eq!(r["kubernetes"]["version"], cluster::kubernetes_version());
    // The lab ran as a cluster should: its API server issued every agent a
    // pod-bound token, and both ports served TLS.
    assert_eq!(
        r["security"],
        json!({"agent_auth": "token", "query_auth": "token", "tls": true})
    );
    let pods = r["pods"].as_array().unwrap();
    let workers: Vec<&Value> = pods
        .iter()
        .filter(|p| p["owner"] == "Job/ddp-train")
        .collect();
    assert_eq!(workers.len(), 4, "{pods:?}");
    let nodes: Vec<&str> = workers
        .iter()
        .map(|p| p["node"].as_str().unwrap())
        .collect();
    assert!(nodes.iter().all(|n| !n.is_empty()), "unbound: {pods:?}");
    let regions: BTreeSet<&str> = nodes.iter().map(|n| region(n)).collect();
    assert_eq!(regions.len(), 1, "one region: {nodes:?}");
    assert!(!nodes.contains(&"dj-4"), "the lossy node: {nodes:?}");
    // The region is one measured group, as the labels say.
    let groups: BTreeSet<&str> = nodes
        .iter()
        .map(|n| r["labels"][n]["netaware.io/group-l2"].as_str().unwrap())
        .collect();
    assert_eq!(groups.len(), 1, "{groups:?}");
    topology_levels_are_a_tree(&r["labels"]);
}

/// What Kueue's Topology (examples/kueue-topology.yaml) and Volcano's
/// label-based HyperNode discovery need of the levels, checked on the
/// labels the real API server holds (neither controller runs here): every
/// node carries every level and the ResourceFlavor's `fresh=true`, values
/// are valid label values, and the levels form a tree (a domain at one
/// level lies in exactly one domain of the level above), which both
/// controllers assume when they build theirs.
fn topology_levels_are_a_tree(labels: &Value) {
    let labels = labels.as_object().unwrap();
    assert_eq!(labels.len(), 12, "{labels:?}");
    let levels = [
        "netaware.io/group-l1",
        "netaware.io/group-l2",
        "netaware.io/group-l3",
    ];
    let valid = |v: &str| {
        v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    for (node, l) in labels {
        assert_eq!(l["netaware.io/fresh"], "true", "{node}");
        for key in levels {
            let v = l[key]
                .as_str()
                .unwrap_or_else(|| panic!("{node} has no {key}"));
            assert!(valid(v), "{node} {key}={v:?} is not a label value");
        }
    }
    for pair in levels.windows(2) {
        let mut parent: std::collections::BTreeMap<(&str, &str), &str> = Default::default();
        for (node, l) in labels {
            // Group ids are per level: the domain is (level, id).
            let (child, up) = (l[pair[0]].as_str().unwrap(), l[pair[1]].as_str().unwrap());
            let seen = *parent.entry((pair[0], child)).or_insert(up);
            assert_eq!(
                seen, up,
                "{node}: {}={child} lies in two {} domains",
                pair[0], pair[1]
            );
        }
    }
}

/// With dj-1's genuine token (the lab's API server issued it for dj-1's
/// agent pod), a client says it is dj-2: refused, naming both nodes, and
/// dj-2's session and labels are what they were.
async fn an_impersonator_is_refused_and_changes_nothing(
    client: &kube::Client,
    dir: &std::path::Path,
) {
    use netaware_proto::v1::agent_message::Msg;
    use netaware_proto::v1::agent_service_client::AgentServiceClient;
    use netaware_proto::v1::{AgentMessage, Hello};
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    let before = nodes.get("dj-2").await.unwrap();
    let address = before
        .status
        .as_ref()
        .unwrap()
        .addresses
        .iter()
        .flatten()
        .find(|a| a.type_ == "InternalIP")
        .unwrap()
        .address
        .clone();
    let token = std::fs::read_to_string(dir.join("tokens/dj-1.token")).unwrap();
    let ca = dir.join("tls/ca.crt");
    let channel = netaware_proto::client::endpoint("https://10.78.0.254:7400", Some(&ca))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(AgentMessage {
        msg: Some(Msg::Hello(Hello {
            node_name: "dj-2".into(),
            probe_addresses: vec![address],
            stamp_port: 8620,
            software_version: "impostor".into(),
            capabilities: vec![netaware_proto::ProbeMethod::StampUdp as i32],
            protocol_version: netaware_proto::PROTOCOL_VERSION,
            instance_id: 7,
            bandwidth_port: 0,
        })),
    })
    .await
    .unwrap();
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token.trim()).parse().unwrap(),
    );
    let Err(refused) = AgentServiceClient::new(channel).session(request).await else {
        panic!("dj-1's token was accepted as dj-2");
    };
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("'dj-1'") && refused.message().contains("'dj-2'"),
        "{refused:?}"
    );
    let after = nodes.get("dj-2").await.unwrap();
    let group = |n: &k8s_openapi::api::core::v1::Node| {
        n.metadata.labels.as_ref().unwrap()["netaware.io/group-l2"].clone()
    };
    assert_eq!(group(&after), group(&before), "dj-2's groups unchanged");
}

/// A Job of `k` workers pinned by `netaware place -o yaml`'s affinity, one
/// per node.
fn pinned_job(affinity: &Value, k: usize) -> Value {
    let mut aff = affinity["affinity"].clone();
    aff["podAntiAffinity"] = json!({"requiredDuringSchedulingIgnoredDuringExecution": [{
        "labelSelector": {"matchLabels": {"batch.kubernetes.io/job-name": "placed"}},
        "topologyKey": "kubernetes.io/hostname",
    }]});
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "placed", "namespace": "default"},
        "spec": {"completions": k, "parallelism": k, "template": {"spec": {
            "restartPolicy": "Never",
            "affinity": aff,
            "containers": [{"name": "worker", "image": "registry.invalid/train:1"}],
        }}},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (network namespaces): ./test.sh runs it as root"]
async fn a_job_pinned_by_netaware_place_lands_on_the_placed_nodes() {
    require_root();
    let _turn = LAB.lock().await;
    if netaware_e2e::k8s::binaries().is_none() {
        return;
    }
    let port = free_port();
    let scratch = netaware_e2e::Scratch::new("e2e-place");
    let dir = scratch.path();
    let mut lab = Killed(
        Command::new(binary("netaware-lab"))
            .arg("up")
            .arg(repo_root().join("lab/topologies/geo-12.yaml"))
            .args(REAL_LAB)
            .args(["--query-port", &port.to_string()])
            .arg("--log-dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The lab's control plane writes its admin kubeconfig; the groups
    // follow once the agents have measured.
    let kubeconfig = dir.join("kubernetes/admin.kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(120);
    let client = loop {
        assert!(
            Instant::now() < deadline,
            "the lab's control plane did not start (logs in {})",
            dir.display()
        );
        assert!(
            lab.0.try_wait().unwrap().is_none(),
            "the lab exited (logs in {})",
            dir.display()
        );
        if kubeconfig.is_file()
            && let Ok(c) = cluster::client_from_kubeconfig(&kubeconfig).await
        {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // Every node in its groups, then a while longer: loss needs samples
    // before the lossy node shows.
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    loop {
        assert!(
            Instant::now() < deadline,
            "no group labels within 2 minutes (logs in {})",
            dir.display()
        );
        // The lab writes the admin kubeconfig before its API server
        // answers: until then a list fails, and that is "not yet".
        let Ok(list) = nodes.list(&Default::default()).await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let grouped = list.items.iter().filter(|n| {
            n.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key("netaware.io/group-l2"))
        });
        if list.items.len() == 12 && grouped.count() == 12 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(15)).await;
    an_impersonator_is_refused_and_changes_nothing(&client, dir).await;
    let ca = dir.join("tls/ca.crt");
    let out = Command::new(binary("netaware"))
        .args(["--aggregator", &format!("https://127.0.0.1:{port}")])
        .args(["--ca-file", ca.to_str().unwrap()])
        .env(
            "NETAWARE_TOKEN",
            std::fs::read_to_string(dir.join("tokens/viewer.token"))
                .unwrap()
                .trim(),
        )
        .args(["place", "-k", "4", "-o", "yaml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml: Value = serde_norway::from_slice(&out.stdout).unwrap();
    let placed: Vec<String> = yaml["affinity"]["nodeAffinity"]
        ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
        ["matchExpressions"][0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    objects::apply(&client, &[pinned_job(&yaml, 4)], "e2e", "default")
        .await
        .unwrap();
    let pods = objects::wait_bound(&client, 4, Duration::from_secs(60))
        .await
        .unwrap();
    let bound: BTreeSet<String> = pods.iter().map(|p| p.node.clone()).collect();
    let want: BTreeSet<String> = placed.iter().cloned().collect();
    assert_eq!(bound, want, "pods: {pods:?}");
    let regions: BTreeSet<&str> = placed.iter().map(|n| region(n)).collect();
    assert_eq!(
        regions.len(),
        1,
        "netaware placed across regions: {placed:?}"
    );
    assert!(!placed.iter().any(|n| n == "dj-4"), "{placed:?}");

    sigterm(&lab.0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while lab.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the lab did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
