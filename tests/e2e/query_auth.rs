#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! Who may query (the review's S4, part 2), against a real API server: a
//! query carries a Kubernetes bearer token, the aggregator reviews it
//! (TokenReview) and asks RBAC (SubjectAccessReview): `get nodes` to read,
//! `create` on /netaware/place to place; the chart's ClusterRole
//! netaware-viewer grants both. At 8ba8183 the query port answered anyone.

mod fake;

use std::process::Command;
use std::time::Duration;

use fake::start_tls_with_kubeconfig;
use netaware_e2e::binary;
use netaware_e2e::k8s::{self, NAMESPACE};
use netaware_lab::cluster::objects;
use netaware_proto::v1::query_service_client::QueryServiceClient;
use netaware_proto::v1::{GetMatrixRequest, PlaceRequest};
use serde_json::json;
use tonic::Code;

/// A ServiceAccount of the release namespace, its Kubernetes token (the
/// API server's own audience, as `kubectl create token` gives).
async fn user(c: &k8s::Cluster, name: &str) -> String {
    objects::apply(
        &c.admin,
        &[json!({"apiVersion": "v1", "kind": "ServiceAccount",
                 "metadata": {"name": name, "namespace": NAMESPACE}})],
        "test",
        NAMESPACE,
    )
    .await
    .unwrap();
    objects::service_account_token(
        &c.admin,
        NAMESPACE,
        name,
        &[],
        Duration::from_secs(3600),
        None,
    )
    .await
    .unwrap()
}

async fn bind(c: &k8s::Cluster, who: &str, role: &str) {
    objects::apply(
        &c.admin,
        &[json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": format!("{who}-{role}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": who, "namespace": NAMESPACE}],
        })],
        "test",
        NAMESPACE,
    )
    .await
    .unwrap();
}

/// GetMatrix and Place as `token`, as the answers' codes.
async fn ask(agg: &fake::Aggregator, token: Option<&str>) -> (tonic::Status, tonic::Status) {
    let channel = agg.channel(agg.query).await;
    let bearer = token.map(|t| format!("Bearer {t}"));
    let with = |bearer: &Option<String>, mut r: tonic::Request<()>| {
        if let Some(b) = bearer {
            r.metadata_mut().insert("authorization", b.parse().unwrap());
        }
        Ok(r)
    };
    let b = bearer.clone();
    let mut client = QueryServiceClient::with_interceptor(channel, move |r| with(&b, r));
    let matrix = client
        .get_matrix(GetMatrixRequest::default())
        .await
        .err()
        .unwrap_or_else(|| tonic::Status::ok(""));
    let place = client
        .place(PlaceRequest {
            k: 1,
            ..Default::default()
        })
        .await
        .err()
        .unwrap_or_else(|| tonic::Status::ok(""));
    (matrix, place)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_need_a_token_that_rbac_allows() {
    let Some(c) = k8s::start("query-auth", &["n1"]).await else {
        return;
    };
    if c.install_chart("default", Some).await.is_none() {
        return;
    }
    let viewer = user(&c, "alice").await;
    bind(&c, "alice", "netaware-viewer").await;
    let reader = user(&c, "bob").await;
    objects::apply(
        &c.admin,
        &[json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "node-reader"},
            "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}],
        })],
        "test",
        NAMESPACE,
    )
    .await
    .unwrap();
    bind(&c, "bob", "node-reader").await;
    let nobody = user(&c, "mallory").await;

    c.aggregator_pod("aggregator-0").await;
    let kubeconfig = c.aggregator_kubeconfig(Some("aggregator-0")).await;
    let agg = start_tls_with_kubeconfig(
        &kubeconfig,
        &c.plane.dir().join("aggregator-tls"),
        &["--agent-auth", "none", "--query-auth", "token"],
    );
    let ca = agg.ca.clone().unwrap();

    let (m, p) = ask(&agg, None).await;
    assert_eq!(m.code(), Code::Unauthenticated, "{m:?}");
    assert!(m.message().contains("--token"), "{m:?}");
    assert_eq!(p.code(), Code::Unauthenticated, "{p:?}");

    let (m, _) = ask(&agg, Some("not-a-token")).await;
    assert_eq!(m.code(), Code::Unauthenticated, "{m:?}");

    let (m, p) = ask(&agg, Some(&nobody)).await;
    assert_eq!(m.code(), Code::PermissionDenied, "{m:?}");
    assert!(
        m.message()
            .contains("system:serviceaccount:netaware:mallory")
            && m.message().contains("netaware-viewer"),
        "{m:?}"
    );
    assert_eq!(p.code(), Code::PermissionDenied, "{p:?}");

    // Reading nodes is reading the matrix; placing needs more.
    let (m, p) = ask(&agg, Some(&reader)).await;
    assert_eq!(m.code(), Code::Ok, "{m:?}");
    assert_eq!(p.code(), Code::PermissionDenied, "{p:?}");
    assert!(p.message().contains("/netaware/place"), "{p:?}");

    // The viewer may do both (Place then fails for want of data, not rights).
    let (m, p) = ask(&agg, Some(&viewer)).await;
    assert_eq!(m.code(), Code::Ok, "{m:?}");
    assert_ne!(p.code(), Code::PermissionDenied, "{p:?}");
    assert_ne!(p.code(), Code::Unauthenticated, "{p:?}");

    // The CLI sends the kubeconfig user's token, as kubectl does, or --token.
    let home = c.plane.dir().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let cli = |args: &[&str], kubeconfig: Option<&std::path::Path>| {
        let mut cmd = Command::new(binary("netaware"));
        cmd.args(["--aggregator", &agg.url(agg.query)])
            .args(["--ca-file", ca.to_str().unwrap()])
            .args(args)
            .args(["matrix", "-o", "json"])
            .env("HOME", &home)
            .env_remove("NETAWARE_TOKEN");
        match kubeconfig {
            Some(k) => cmd.env("KUBECONFIG", k),
            None => cmd.env_remove("KUBECONFIG"),
        };
        cmd.output().unwrap()
    };
    let out = cli(&["--token", &viewer], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let alice = c.plane.dir().join("alice.kubeconfig");
    std::fs::write(
        &alice,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: a\n\
             clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:1'}}}}]\n\
             contexts: [{{name: a, context: {{cluster: c, user: alice}}}}]\n\
             users: [{{name: alice, user: {{token: '{viewer}'}}}}]\n"
        ),
    )
    .unwrap();
    let out = cli(&[], Some(&alice));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&[], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no bearer token"), "{err}");

    let refused = |reason: &str| {
        agg.metric(&format!(
            "netaware_queries_refused_total{{reason=\"{reason}\"}}"
        ))
    };
    assert_eq!(refused("no_token"), 3, "two calls above, one CLI run");
    assert_eq!(refused("invalid_token"), 2, "the garbage's read and place");
    assert_eq!(refused("forbidden"), 3, "mallory twice, bob's Place");
    // One review per token and kind of access: alice's three reads (one
    // call, two CLI runs) cost one.
    let reviews = agg.metric("netaware_query_reviews_total");
    assert_eq!(
        reviews, 8,
        "read and place of the garbage, mallory, bob, alice"
    );
    assert_eq!(c.refusals_of(k8s::AGGREGATOR_USER), Vec::<String>::new());
}
