#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! What the aggregator does with Nodes over their life, against the real
//! binary, a real API server (the chart's ServiceAccount and RBAC) and fake
//! agents: a restarted aggregator keeps the group ids and figures on the
//! Nodes (the review's S12), and a Node deleted from the cluster leaves
//! Place at once and the matrix once its agent is gone (S10). At 8ba8183 the ids were renumbered,
//! `bandwidth-mbps` removed, and deleted nodes kept for ever.

mod fake;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fake::{mesh, node, start_with_kubeconfig};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use netaware_e2e::k8s::{self, Cluster};
use netaware_proto::v1::PlaceRequest;

/// Wait up to `secs` seconds for `check`.
async fn eventually(what: &str, secs: u64, mut check: impl AsyncFnMut() -> bool) {
    k8s::eventually(
        what,
        Duration::from_secs(secs),
        async || check().await.then_some(()),
        String::new,
    )
    .await;
}

fn label(labels: &Option<BTreeMap<String, String>>, key: &str) -> Option<String> {
    labels.as_ref()?.get(key).cloned()
}

async fn labels_of(c: &Cluster, node: &str) -> Option<BTreeMap<String, String>> {
    Api::<Node>::all(c.admin.clone())
        .get_opt(node)
        .await
        .unwrap()?
        .metadata
        .labels
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_what_the_nodes_carry_and_deleted_nodes_leave() {
    let names: Vec<String> = (0..4).map(node).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let Some(c) = k8s::start("lifecycle", &refs).await else {
        return;
    };
    if c.install_chart("default", Some).await.is_none() {
        return;
    }
    // What the last leader published (as the aggregator's identity, with
    // its field manager): zone 0 is g5, zone 1 is g3 at every level, and a
    // bandwidth measured long ago.
    let previous: Api<Node> = Api::all(c.aggregator_client().await);
    for (i, n) in names.iter().enumerate() {
        let id = if i < 2 { "g5" } else { "g3" };
        let labels = serde_json::json!({
            "netaware.io/group-l1": id, "netaware.io/group-l2": id, "netaware.io/group-l3": id,
            "netaware.io/bandwidth-mbps": "9400",
        });
        previous
            .patch(
                n,
                &PatchParams::apply("netaware").force(),
                &Patch::Apply(serde_json::json!({"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": n, "labels": labels}})),
            )
            .await
            .unwrap();
    }
    let kubeconfig = c.aggregator_kubeconfig(None).await;
    let agg = start_with_kubeconfig(
        &kubeconfig,
        &["--recompute-interval", "1s", "--forget-after", "2s"],
    );
    let mut fakes = mesh(&agg, &[2, 2]).await;

    // Written from measurements: quality appears...
    eventually("labels written from measurements", 30, async || {
        for n in &names {
            if label(&labels_of(&c, n).await, "netaware.io/quality").is_none() {
                return false;
            }
        }
        true
    })
    .await;
    // ...under the ids the Nodes carried, and the bandwidth kept.
    for (i, n) in names.iter().enumerate() {
        let labels = labels_of(&c, n).await;
        let id = if i < 2 { "g5" } else { "g3" };
        for l in 1..=3 {
            let key = format!("netaware.io/group-l{l}");
            assert_eq!(label(&labels, &key).as_deref(), Some(id), "{n} {key}");
        }
        assert_eq!(
            label(&labels, "netaware.io/bandwidth-mbps").as_deref(),
            Some("9400"),
            "{n}"
        );
    }

    // n-003 is deleted from the cluster while its agent still reports: no
    // longer a candidate for Place.
    Api::<Node>::all(c.admin.clone())
        .delete(&names[3], &Default::default())
        .await
        .unwrap();
    let place = |k: u32| async move {
        fake::query_client(agg.query)
            .await
            .place(PlaceRequest {
                k,
                explain: true,
                ..Default::default()
            })
            .await
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let e = place(4).await;
        if let Err(e) = e {
            assert!(
                e.message().contains("not a Node of the cluster"),
                "{}",
                e.message()
            );
            break;
        }
        assert!(Instant::now() < deadline, "a deleted Node was still placed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Its agent goes too: after --forget-after it leaves the matrix.
    drop(fakes.pop());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = agg.matrix().await;
        if m.nodes.iter().all(|n| n.node_name != names[3]) {
            assert!(
                m.links
                    .iter()
                    .all(|l| l.src != names[3] && l.dst != names[3])
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the deleted node was never forgotten"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(place(3).await.unwrap().into_inner().nodes.len(), 3);
}
