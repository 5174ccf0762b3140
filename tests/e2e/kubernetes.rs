#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! netaware against a real Kubernetes API server (`tests/support/k8s.rs`):
//! the chart's RBAC and admission policy as Helm renders them, the
//! aggregator with its own ServiceAccount's token, labels by server-side
//! apply, kubelets kept off our keys, and the Lease election. What the API
//! server did is read back from its own objects (`managedFields`) and its
//! audit log, not from anything netaware says.

#[path = "fake/mod.rs"]
mod fake;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams};
use netaware_e2e::k8s::{self, AGGREGATOR_USER, eventually};
use serde_json::{Value, json};

const OURS: &str = "netaware.io/";

/// The labels of Node `name`.
async fn labels(client: &kube::Client, name: &str) -> std::collections::BTreeMap<String, String> {
    Api::<Node>::all(client.clone())
        .get(name)
        .await
        .unwrap()
        .metadata
        .labels
        .unwrap_or_default()
}

/// Managers (with operation) that own label `key` on Node `name`,
/// according to the API server's `managedFields`.
async fn owners_of(client: &kube::Client, name: &str, key: &str) -> Vec<String> {
    let node = Api::<Node>::all(client.clone()).get(name).await.unwrap();
    let field = format!("f:{key}");
    node.metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .and_then(|f| f.0.pointer("/f:metadata/f:labels"))
                .and_then(Value::as_object)
                .is_some_and(|l| l.contains_key(&field))
        })
        .map(|m| {
            format!(
                "{}/{}",
                m.manager.unwrap_or_default(),
                m.operation.unwrap_or_default()
            )
        })
        .collect()
}

/// An API error's HTTP code, or 0 when the call succeeded or failed
/// otherwise.
fn code<T>(r: &Result<T, kube::Error>) -> u16 {
    match r {
        Err(kube::Error::Api(s)) => s.code,
        _ => 0,
    }
}

fn labels_patch(labels: Value) -> Patch<Value> {
    Patch::Merge(json!({"metadata": {"labels": labels}}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aggregator_writes_labels_by_server_side_apply_with_the_charts_rbac_only() {
    let names: Vec<String> = (0..4).map(fake::node).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let Some(c) = k8s::start("labels", &refs).await else {
        return;
    };
    if c.install_chart("default", Some).await.is_none() {
        return;
    }
    let nodes: Api<Node> = Api::all(c.admin.clone());
    // Another writer's label, and a key of ours an older aggregator wrote
    // (with the aggregator's field manager, as the aggregator's own
    // identity: the admission policy lets nobody else).
    nodes
        .patch(
            &names[0],
            &PatchParams::apply("ops"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Node", "metadata": {
                "name": names[0], "labels": {"example.com/rack": "r1"}}})),
        )
        .await
        .unwrap();
    let as_aggregator = c.aggregator_client().await;
    Api::<Node>::all(as_aggregator.clone())
        .patch(
            &names[0],
            &PatchParams::apply("netaware").force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Node", "metadata": {
                "name": names[0], "labels": {"netaware.io/obsolete": "1"}}})),
        )
        .await
        .unwrap();

    let kubeconfig = c.aggregator_kubeconfig(None).await;
    let agg = fake::start_with_kubeconfig(
        &kubeconfig,
        &["--recompute-interval", "1s", "--bandwidth-tests", "false"],
    );
    let _agents = fake::mesh(&agg, &[2, 2]).await;

    let group = format!("{OURS}group-l1");
    eventually(
        "the aggregator's group labels on every Node",
        Duration::from_secs(60),
        async || {
            for n in &names {
                if !labels(&c.admin, n).await.contains_key(&group) {
                    return None;
                }
            }
            Some(())
        },
        || {
            format!(
                "the API server refused the aggregator: {:?}",
                c.refusals_of(AGGREGATOR_USER)
            )
        },
    )
    .await;

    // Server-side apply: the other manager's label survives, the key we no
    // longer write is gone, and ours are owned by our field manager.
    let l = labels(&c.admin, &names[0]).await;
    assert_eq!(
        l.get("example.com/rack").map(String::as_str),
        Some("r1"),
        "{l:?}"
    );
    assert!(!l.contains_key("netaware.io/obsolete"), "{l:?}");
    assert_eq!(
        owners_of(&c.admin, &names[0], "example.com/rack").await,
        ["ops/Apply"]
    );
    assert_eq!(
        owners_of(&c.admin, &names[0], &group).await,
        ["netaware/Apply"]
    );
    // Two groups of two: the zones were found.
    let g: Vec<String> = {
        let mut g = Vec::new();
        for n in &names {
            g.push(labels(&c.admin, n).await[&group].clone());
        }
        g
    };
    assert!(g[0] == g[1] && g[2] == g[3] && g[0] != g[2], "{g:?}");

    // Every call the aggregator made was allowed...
    let events = c.audit_of(AGGREGATOR_USER);
    assert!(
        events
            .iter()
            .any(|e| e["verb"] == "patch" && e["objectRef"]["resource"] == "nodes"),
        "no Node patch by the aggregator in the audit log"
    );
    assert_eq!(c.refusals_of(AGGREGATOR_USER), Vec::<String>::new());
    // ...and what is outside its role is refused by the real server: RBAC
    // (Pods, creating Nodes) and the admission policy (a Node's spec).
    let pods: Api<Pod> = Api::namespaced(as_aggregator.clone(), "default");
    let r = pods
        .patch(
            "any",
            &PatchParams::default(),
            &labels_patch(json!({"x": "y"})),
        )
        .await;
    assert_eq!(code(&r), 403, "patching a Pod: {r:?}");
    let mine: Api<Node> = Api::all(as_aggregator.clone());
    let r = mine
        .create(
            &Default::default(),
            &serde_json::from_value(json!({"metadata": {"name": "forged"}})).unwrap(),
        )
        .await;
    assert_eq!(code(&r), 403, "creating a Node: {r:?}");
    let r = mine
        .patch(
            &names[1],
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": true}})),
        )
        .await;
    assert_eq!(code(&r), 403, "cordoning a Node: {r:?}");
    let spec = nodes.get(&names[1]).await.unwrap().spec.unwrap_or_default();
    assert_ne!(spec.unschedulable, Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubelet_cannot_set_change_or_remove_our_labels_through_nodes_or_status() {
    let Some(c) = k8s::start("kubelet", &["n1", "n2"]).await else {
        return;
    };
    if c.install_chart("default", Some).await.is_none() {
        return;
    }
    // The aggregator sets a label (as it would).
    let as_aggregator = c.aggregator_client().await;
    Api::<Node>::all(as_aggregator)
        .patch(
            "n1",
            &PatchParams::apply("netaware").force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Node", "metadata": {
                "name": "n1", "labels": {"netaware.io/quality": "90"}}})),
        )
        .await
        .unwrap();

    let kubelet: Api<Node> = Api::all(c.kubelet_client("n1").await);
    // A new policy takes a moment to load: wait until a dry run is refused
    // (admission runs on dry runs; nothing is written).
    let dry = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    eventually(
        "the admission policy to refuse a kubelet",
        Duration::from_secs(30),
        async || {
            let r = kubelet
                .patch(
                    "n1",
                    &dry,
                    &labels_patch(json!({"netaware.io/quality": "100"})),
                )
                .await;
            (code(&r) == 403).then_some(())
        },
        || "the kubelet's write was still allowed".into(),
    )
    .await;

    let refused = [
        ("change", json!({"netaware.io/quality": "100"})),
        ("remove", json!({"netaware.io/quality": null})),
        ("add", json!({"netaware.io/group-l1": "g9"})),
    ];
    for (what, patch) in &refused {
        let r = kubelet
            .patch("n1", &PatchParams::default(), &labels_patch(patch.clone()))
            .await;
        assert_eq!(code(&r), 403, "{what} through nodes: {r:?}");
        let text = format!("{r:?}");
        assert!(
            text.contains(&format!("only {AGGREGATOR_USER} may")),
            "{text}"
        );
        let r = kubelet
            .patch_status("n1", &PatchParams::default(), &labels_patch(patch.clone()))
            .await;
        assert_eq!(code(&r), 403, "{what} through nodes/status: {r:?}");
    }
    let l = labels(&c.admin, "n1").await;
    assert_eq!(l.get("netaware.io/quality").map(String::as_str), Some("90"));
    assert!(!l.contains_key("netaware.io/group-l1"));
    // Labels that are not ours stay the kubelet's to set, on its own Node
    // only (the Node authorizer).
    let r = kubelet
        .patch(
            "n1",
            &PatchParams::default(),
            &labels_patch(json!({"example.com/gpu": "a100"})),
        )
        .await;
    assert!(r.is_ok(), "{r:?}");
    let r = kubelet
        .patch(
            "n2",
            &PatchParams::default(),
            &labels_patch(json!({"example.com/gpu": "a100"})),
        )
        .await;
    assert_eq!(code(&r), 403, "another Node: {r:?}");

    // Without the policy's binding the same write goes through: it was the
    // policy, not the cluster's own rules, that kept the kubelet out.
    let bindings: Api<
        k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding,
    > = Api::all(c.admin.clone());
    bindings
        .delete("netaware-node-keys", &Default::default())
        .await
        .unwrap();
    eventually(
        "the kubelet's write to pass without the policy",
        Duration::from_secs(30),
        async || {
            let r = kubelet
                .patch(
                    "n1",
                    &PatchParams::default(),
                    &labels_patch(json!({"netaware.io/quality": "100"})),
                )
                .await;
            r.is_ok().then_some(())
        },
        || "still refused after the binding was deleted".into(),
    )
    .await;
}

/// What agent identity (tests/e2e/agent_auth.rs) builds on: a token bound to a pod
/// that the scheduler has put on a Node reviews (TokenReview, our own
/// audience) as the pod's ServiceAccount, naming the pod and its Node in
/// `extra` (Kubernetes 1.32+ adds the node); another audience is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_bound_token_reviews_with_its_pod_and_node() {
    use k8s_openapi::api::authentication::v1::TokenReview;
    use netaware_lab::cluster::objects;
    let Some(c) = k8s::start("review", &["n1"]).await else {
        return;
    };
    if c.install_chart("default", Some).await.is_none() {
        return;
    }
    c.aggregator_pod("agent-x").await;
    let bound = objects::wait_bound(&c.admin, 1, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(bound[0].node, "n1", "{bound:?}");
    let token = objects::service_account_token(
        &c.admin,
        k8s::NAMESPACE,
        k8s::AGGREGATOR_SA,
        &["netaware"],
        Duration::from_secs(600),
        Some("agent-x"),
    )
    .await
    .unwrap();
    let review = |audience: &str| {
        serde_json::from_value::<TokenReview>(json!({
            "spec": {"token": token, "audiences": [audience]},
        }))
        .unwrap()
    };
    let reviews: Api<TokenReview> = Api::all(c.admin.clone());
    let ok = reviews
        .create(&Default::default(), &review("netaware"))
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(ok.authenticated, Some(true), "{ok:?}");
    let user = ok.user.unwrap();
    assert_eq!(user.username.as_deref(), Some(AGGREGATOR_USER));
    let extra = user.extra.unwrap();
    assert_eq!(extra["authentication.kubernetes.io/pod-name"], ["agent-x"]);
    assert_eq!(extra["authentication.kubernetes.io/node-name"], ["n1"]);
    let wrong = reviews
        .create(&Default::default(), &review("someone-else"))
        .await
        .unwrap()
        .status
        .unwrap();
    assert_ne!(wrong.authenticated, Some(true), "{wrong:?}");
}
