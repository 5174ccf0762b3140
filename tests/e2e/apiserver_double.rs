#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! The aggregator's real Node writer, through a real kube client, against the
//! API-server double: the writes have the effects the real API gives them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use netaware_aggregator::kube_writer::NodeWriter;
use netaware_e2e::apiserver::ApiServerDouble;
use netaware_model::labels::Desired;
use serde_json::json;

fn client(double: &ApiServerDouble) -> kube::Client {
    let config = kube::Config::new(double.url().parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

fn desired(pairs: &[(&str, &str)]) -> Desired {
    let mut d = Desired::default();
    for (k, v) in pairs {
        d.labels.insert(format!("netaware.io/{k}"), v.to_string());
    }
    d.annotations
        .insert("netaware.io/summary".into(), r#"{"nearest":[]}"#.into());
    d
}

#[tokio::test]
async fn our_keys_are_applied_others_left_alone_and_dropped_keys_removed() {
    let double = ApiServerDouble::start(&["dj-1"]).await.unwrap();
    double.set_label_as("dj-1", "team", "ml", "kubectl");
    let mut w = NodeWriter::new(client(&double));

    w.write("dj-1", &desired(&[("group-l2", "g1"), ("quality", "87")]))
        .await
        .unwrap();
    let labels = double.labels("dj-1").unwrap();
    assert_eq!(
        labels.get("netaware.io/group-l2").map(String::as_str),
        Some("g1")
    );
    assert_eq!(
        labels.get("netaware.io/quality").map(String::as_str),
        Some("87")
    );
    assert_eq!(labels.get("team").map(String::as_str), Some("ml"));
    assert!(
        double
            .annotations("dj-1")
            .unwrap()
            .contains_key("netaware.io/summary")
    );

    // We stop producing `quality`: only that key goes.
    w.write("dj-1", &desired(&[("group-l2", "g1")]))
        .await
        .unwrap();
    let labels = double.labels("dj-1").unwrap();
    assert!(!labels.contains_key("netaware.io/quality"), "{labels:?}");
    assert_eq!(
        labels.get("netaware.io/group-l2").map(String::as_str),
        Some("g1")
    );
    assert_eq!(labels.get("team").map(String::as_str), Some("ml"));
}

#[tokio::test]
async fn a_node_the_cluster_does_not_have_is_not_created() {
    let double = ApiServerDouble::start(&["dj-1"]).await.unwrap();
    let mut w = NodeWriter::new(client(&double));
    let err = w
        .write("ghost", &desired(&[("group-l2", "g1")]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 404),
        "{err}"
    );
    assert_eq!(double.node_names(), vec!["dj-1".to_string()]);
    assert!(double.requests().iter().all(|r| !r.starts_with("PATCH")));
}

#[tokio::test]
async fn conflicts_need_force_and_we_force_under_our_prefix() {
    let double = ApiServerDouble::start(&["dj-1"]).await.unwrap();
    double.set_label_as("dj-1", "netaware.io/quality", "100", "kubectl");
    // Another manager without force: 409, nothing changes.
    let api: Api<Node> = Api::all(client(&double));
    let patch = json!({"apiVersion": "v1", "kind": "Node",
                       "metadata": {"name": "dj-1", "labels": {"netaware.io/quality": "1"}}});
    let err = api
        .patch("dj-1", &PatchParams::apply("other"), &Patch::Apply(&patch))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409),
        "{err}"
    );
    assert_eq!(double.labels("dj-1").unwrap()["netaware.io/quality"], "100");
    // Our writer forces: the key under our prefix becomes ours.
    let mut w = NodeWriter::new(client(&double));
    w.write("dj-1", &desired(&[("quality", "50")]))
        .await
        .unwrap();
    assert_eq!(double.labels("dj-1").unwrap()["netaware.io/quality"], "50");
    let log = double.requests();
    let ours = log.iter().rev().find(|r| r.starts_with("PATCH")).unwrap();
    assert!(
        ours.contains("fieldManager=netaware") && ours.contains("force=true"),
        "{ours}"
    );
}

#[tokio::test]
async fn merge_patch_null_removes_a_key_and_failures_are_retried_or_reported() {
    let double = ApiServerDouble::start(&["dj-1"]).await.unwrap();
    double.set_label_as("dj-1", "team", "ml", "kubectl");
    let api: Api<Node> = Api::all(client(&double));
    api.patch(
        "dj-1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": null}}})),
    )
    .await
    .unwrap();
    assert_eq!(double.labels("dj-1").unwrap(), BTreeMap::new());

    // 503 (like 429 and 504) is retried inside the kube client: the write
    // succeeds, after two PATCH requests.
    double.fail_next_writes(503, 1);
    let mut w = NodeWriter::new(client(&double));
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

mod watched {
    use super::*;
    use netaware_aggregator::publish::{self, PublishConfig, Sink};
    use netaware_model::infer::Inferred;
    use std::sync::Arc;
    use std::time::Duration;

    fn inferred(nodes: &[(&str, u32)]) -> Arc<Inferred> {
        Arc::new(netaware_model::testing::inferred(nodes))
    }

    async fn eventually(what: &str, check: impl Fn() -> bool) {
        for _ in 0..100 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for: {what}");
    }

    #[tokio::test]
    async fn labels_follow_the_nodes_the_watch_knows_and_never_create_one() {
        let double = ApiServerDouble::start(&["a"]).await.unwrap();
        let client = client(&double);
        let nodes = publish::watch_nodes(client.clone());
        let (tx, rx) = tokio::sync::watch::channel(None);
        let task = tokio::spawn(publish::run(
            PublishConfig::default(),
            Sink::Kube(Box::new(NodeWriter::new(client))),
            rx,
            Some(nodes.store().clone()),
        ));
        tx.send_replace(Some(inferred(&[("a", 90), ("late", 80)])));
        eventually("labels on a", || {
            double
                .labels("a")
                .is_some_and(|l| l.contains_key("netaware.io/group-l1"))
        })
        .await;
        assert_eq!(
            double.node_names(),
            vec!["a".to_string()],
            "late is not created"
        );

        // A kubelet registers `late`: the watch sees it and it gets its labels.
        double.add_node("late");
        eventually("labels on late", || {
            double
                .labels("late")
                .is_some_and(|l| l.get("netaware.io/quality").map(String::as_str) == Some("80"))
        })
        .await;

        // `a` is deleted; a new recomputation still has facts for it: it must
        // not come back.
        double.delete_node("a");
        tokio::time::sleep(Duration::from_millis(300)).await;
        tx.send_replace(Some(inferred(&[("a", 70), ("late", 75)])));
        eventually("late updated", || {
            double
                .labels("late")
                .is_some_and(|l| l.get("netaware.io/quality").map(String::as_str) == Some("75"))
        })
        .await;
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(
            double.node_names(),
            vec!["late".to_string()],
            "a deleted Node is not recreated"
        );
        task.abort();
    }
}

/// Two tasks waiting for the Node list at once are both told when it
/// arrives. kube's `Store::wait_until_ready` woke only the last one to poll
/// it, which left the new leader's seeding waiting for ever beside the
/// Node-list feed (labels never written in a 20 s lab run).
#[tokio::test]
async fn every_task_waiting_for_the_node_list_is_told() {
    let double = ApiServerDouble::start(&["a", "b"]).await.unwrap();
    let nodes = netaware_aggregator::publish::watch_nodes(client(&double));
    let other = nodes.clone();
    let within = std::time::Duration::from_secs(10);
    let (first, second) = tokio::join!(
        tokio::time::timeout(within, nodes.ready()),
        tokio::time::timeout(within, other.ready())
    );
    assert_eq!((first, second), (Ok(true), Ok(true)));
    assert!(nodes.is_ready());
    assert_eq!(nodes.store().state().len(), 2);
}
