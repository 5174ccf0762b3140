#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! The aggregator's Node writer and label publisher, through a real kube
//! client, against a real API server (`tests/support/k8s.rs`), writing as
//! the chart's ServiceAccount with the chart's RBAC (the admission policy
//! is left out here: these tests set our keys as other managers on purpose,
//! which the policy forbids; `kubernetes.rs` tests the policy). What a real
//! server does not do on demand, failing the next writes, comes from the
//! API double, kept as a fault injector (`tests/support/apiserver.rs`).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use netaware_aggregator::kube_writer::NodeWriter;
use netaware_aggregator::publish::{self, PublishConfig, Sink};
use netaware_e2e::apiserver::ApiServerDouble;
use netaware_e2e::k8s::{self, AGGREGATOR_USER, Cluster};
use netaware_model::infer::Inferred;
use netaware_model::labels::Desired;
use serde_json::{Value, json};

fn desired(pairs: &[(&str, &str)]) -> Desired {
    let mut d = Desired::default();
    for (k, v) in pairs {
        d.labels.insert(format!("netaware.io/{k}"), v.to_string());
    }
    d.annotations
        .insert("netaware.io/summary".into(), r#"{"nearest":[]}"#.into());
    d
}

/// A cluster with Nodes `nodes` and the chart's identity and RBAC, but not
/// its admission policy; `None` when it cannot run here (SKIPPED said).
async fn cluster(tag: &str, nodes: &[&str]) -> Option<Cluster> {
    let c = k8s::start(tag, nodes).await?;
    let no_policy = |o: Value| {
        let kind = o["kind"].as_str().unwrap_or_default();
        (!kind.starts_with("ValidatingAdmissionPolicy")).then_some(o)
    };
    c.install_chart("default", no_policy).await?;
    Some(c)
}

async fn labels(c: &Cluster, node: &str) -> Option<std::collections::BTreeMap<String, String>> {
    Api::<Node>::all(c.admin.clone())
        .get_opt(node)
        .await
        .unwrap()
        .map(|n| n.metadata.labels.unwrap_or_default())
}

async fn node_names(c: &Cluster) -> Vec<String> {
    let list = Api::<Node>::all(c.admin.clone())
        .list(&Default::default())
        .await
        .unwrap();
    list.items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect()
}

fn set_label_as(key: &str, value: &str) -> Patch<Value> {
    Patch::Apply(json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "dj-1", "labels": {key: value}}}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_keys_are_applied_forced_and_dropped_others_left_alone_and_no_node_created() {
    let Some(c) = cluster("writer", &["dj-1"]).await else {
        return;
    };
    let nodes: Api<Node> = Api::all(c.admin.clone());
    nodes
        .patch(
            "dj-1",
            &PatchParams::apply("kubectl"),
            &set_label_as("team", "ml"),
        )
        .await
        .unwrap();
    let mut w = NodeWriter::new(c.aggregator_client().await);

    w.write("dj-1", &desired(&[("group-l2", "g1"), ("quality", "87")]))
        .await
        .unwrap();
    let l = labels(&c, "dj-1").await.unwrap();
    assert_eq!(
        l.get("netaware.io/group-l2").map(String::as_str),
        Some("g1")
    );
    assert_eq!(l.get("netaware.io/quality").map(String::as_str), Some("87"));
    assert_eq!(l.get("team").map(String::as_str), Some("ml"));
    let annotations = nodes
        .get("dj-1")
        .await
        .unwrap()
        .metadata
        .annotations
        .unwrap();
    assert!(annotations.contains_key("netaware.io/summary"));

    // We stop producing `quality`: only that key goes.
    w.write("dj-1", &desired(&[("group-l2", "g1")]))
        .await
        .unwrap();
    let l = labels(&c, "dj-1").await.unwrap();
    assert!(!l.contains_key("netaware.io/quality"), "{l:?}");
    assert_eq!(
        l.get("netaware.io/group-l2").map(String::as_str),
        Some("g1")
    );
    assert_eq!(l.get("team").map(String::as_str), Some("ml"));

    // Another manager takes one of our keys; a third without force gets a
    // conflict; our writer forces, and the key is ours again.
    nodes
        .patch(
            "dj-1",
            &PatchParams::apply("kubectl").force(),
            &set_label_as("netaware.io/group-l2", "x"),
        )
        .await
        .unwrap();
    let err = nodes
        .patch(
            "dj-1",
            &PatchParams::apply("other"),
            &set_label_as("netaware.io/group-l2", "y"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409),
        "{err}"
    );
    let mut w = NodeWriter::new(c.aggregator_client().await);
    w.write("dj-1", &desired(&[("group-l2", "g2")]))
        .await
        .unwrap();
    assert_eq!(
        labels(&c, "dj-1").await.unwrap()["netaware.io/group-l2"],
        "g2"
    );
    let patch = c
        .audit_of(AGGREGATOR_USER)
        .into_iter()
        .rev()
        .find(|e| e["verb"] == "patch")
        .unwrap();
    let uri = patch["requestURI"].as_str().unwrap();
    assert!(
        uri.contains("fieldManager=netaware") && uri.contains("force=true"),
        "{uri}"
    );

    // A Node the cluster does not have is not created.
    let err = w
        .write("ghost", &desired(&[("group-l2", "g1")]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 404),
        "{err}"
    );
    assert_eq!(node_names(&c).await, ["dj-1"]);
}

fn inferred(nodes: &[(&str, u32)]) -> Arc<Inferred> {
    Arc::new(netaware_model::testing::inferred(nodes))
}

/// Wait up to 10 s for `check`.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    k8s::eventually(
        what,
        Duration::from_secs(10),
        async || check().await.then_some(()),
        String::new,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_follow_the_nodes_the_watch_knows_and_never_create_one() {
    let Some(c) = cluster("publish", &["a", "b"]).await else {
        return;
    };
    let client = c.aggregator_client().await;
    // Two tasks waiting for the Node list at once are both told when it
    // arrives (kube's Store::wait_until_ready woke only one).
    let nodes = publish::watch_nodes(client.clone());
    let other = nodes.clone();
    let within = Duration::from_secs(10);
    let (first, second) = tokio::join!(
        tokio::time::timeout(within, nodes.ready()),
        tokio::time::timeout(within, other.ready())
    );
    assert_eq!((first, second), (Ok(true), Ok(true)));
    assert_eq!(nodes.store().state().len(), 2);

    let (tx, rx) = tokio::sync::watch::channel(None);
    let task = tokio::spawn(publish::run(
        PublishConfig::default(),
        Sink::Kube(Box::new(NodeWriter::new(client))),
        rx,
        Some(nodes.store().clone()),
    ));
    tx.send_replace(Some(inferred(&[("a", 90), ("late", 80)])));
    eventually("labels on a", async || {
        labels(&c, "a")
            .await
            .is_some_and(|l| l.contains_key("netaware.io/group-l1"))
    })
    .await;
    assert_eq!(node_names(&c).await, ["a", "b"], "late is not created");

    // A kubelet registers `late`: the watch sees it and it gets its labels.
    netaware_lab::cluster::objects::add_nodes(
        &c.admin,
        &[netaware_lab::cluster::objects::NodeSpec {
            name: "late".into(),
            internal_ip: None,
        }],
    )
    .await
    .unwrap();
    eventually("labels on late", async || {
        labels(&c, "late")
            .await
            .is_some_and(|l| l.get("netaware.io/quality").map(String::as_str) == Some("80"))
    })
    .await;

    // `a` is deleted; a new recomputation still has facts for it: it must
    // not come back.
    Api::<Node>::all(c.admin.clone())
        .delete("a", &Default::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.send_replace(Some(inferred(&[("a", 70), ("late", 75)])));
    eventually("late updated", async || {
        labels(&c, "late")
            .await
            .is_some_and(|l| l.get("netaware.io/quality").map(String::as_str) == Some("75"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        node_names(&c).await,
        ["b", "late"],
        "a deleted Node is not recreated"
    );
    task.abort();
}

/// A client of the API double (plain HTTP on loopback).
fn double_client(double: &ApiServerDouble) -> kube::Client {
    let config = kube::Config::new(double.url().parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

/// The kube client retries 429, 503 and 504 itself; anything else is
/// reported to the publisher, whose per-node backoff tries again later.
#[tokio::test]
async fn failures_are_retried_or_reported() {
    let double = ApiServerDouble::start(&["dj-1"]).await.unwrap();
    // 503 (like 429 and 504) is retried inside the kube client: the write
    // succeeds, after two PATCH requests.
    double.fail_next_writes(503, 1);
    let mut w = NodeWriter::new(double_client(&double));
    w.write("dj-1", &desired(&[("group-l2", "g1")]))
        .await
        .unwrap();
    assert_eq!(double.labels("dj-1").unwrap()["netaware.io/group-l2"], "g1");
    let patches = double
        .requests()
        .iter()
        .filter(|r| {
            r.starts_with("PATCH /api/v1/nodes/dj-1?") && r.contains("fieldManager=netaware")
        })
        .count();
    assert_eq!(patches, 2);
    // 500 is reported; the publisher's per-node backoff retries it later.
    double.fail_next_writes(500, 1);
    assert!(
        w.write("dj-1", &desired(&[("group-l2", "g2")]))
            .await
            .is_err()
    );
    w.write("dj-1", &desired(&[("group-l2", "g2")]))
        .await
        .unwrap();
    assert_eq!(double.labels("dj-1").unwrap()["netaware.io/group-l2"], "g2");
}
