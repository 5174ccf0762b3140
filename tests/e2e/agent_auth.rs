#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! Agent identity against a real API server (the review's S1, S5): the
//! aggregator runs as its own ServiceAccount with the chart's RBAC, agents
//! present tokens the API server minted for pods bound to Nodes, and every
//! refusal goes through the real gRPC stack. At 8ba8183 every one of these
//! sessions was accepted, the impersonating one included.

mod fake;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use fake::{Aggregator, connect_with_token, hello, start_tls_with_kubeconfig};
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use netaware_e2e::k8s::{self, AGENT_SA, AGENT_SA_FLAG, AGGREGATOR_SA, Cluster};
use netaware_e2e::{Killed, binary, free_port};
use netaware_lab::cluster::objects::NodeSpec;
use netaware_proto::v1::Hello;
use netaware_proto::v1::aggregator_message::Msg as AggMsg;
use tonic::Code;

/// Nodes and the InternalIP the API server has for each.
const NODES: [(&str, &str); 2] = [("n1", "127.0.1.1"), ("n2", "127.0.1.2")];

fn hello_from(node: &str, addresses: &[&str]) -> Hello {
    Hello {
        probe_addresses: addresses.iter().map(|a| a.to_string()).collect(),
        ..hello(node)
    }
}

/// The refusal of a session, as the agent sees it.
async fn refused(agg: &Aggregator, h: Hello, token: Option<&str>) -> tonic::Status {
    match connect_with_token(agg, h, token).await {
        Ok(_) => panic!("the session was accepted"),
        Err(s) => s,
    }
}

async fn labels(c: &Cluster, node: &str) -> BTreeMap<String, String> {
    Api::<Node>::all(c.admin.clone())
        .get(node)
        .await
        .unwrap()
        .metadata
        .labels
        .unwrap_or_default()
}

fn refusals(agg: &Aggregator, reason: &str) -> u64 {
    agg.metric(&format!(
        "netaware_agent_sessions_refused_total{{reason=\"{reason}\"}}"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_speaks_only_for_the_node_its_token_is_bound_to() {
    let specs: Vec<NodeSpec> = NODES
        .iter()
        .map(|(n, ip)| NodeSpec {
            name: (*n).into(),
            internal_ip: Some(ip.parse().unwrap()),
        })
        .collect();
    let Some(c) = k8s::start_nodes("agent-auth", &specs).await else {
        return;
    };
    if c.install_chart("default", Some).await.is_none() {
        return;
    }
    c.pod_on("agent-n1", AGENT_SA, "n1").await;
    c.pod_on("agent-n2", AGENT_SA, "n2").await;
    c.pod_on("intruder-n1", AGGREGATOR_SA, "n1").await;
    let t1 = c.token(AGENT_SA, "netaware", Some("agent-n1")).await;
    let t2 = c.token(AGENT_SA, "netaware", Some("agent-n2")).await;

    c.aggregator_pod("aggregator-0").await;
    let kubeconfig = c.aggregator_kubeconfig(Some("aggregator-0")).await;
    // Tokens travel only over TLS, as the chart sets it up.
    let agg = start_tls_with_kubeconfig(
        &kubeconfig,
        &c.plane.dir().join("aggregator-tls"),
        &[
            "--agent-auth",
            "token",
            "--agent-service-account",
            AGENT_SA_FLAG,
            // Queries: tests/e2e/query_auth.rs.
            "--query-auth",
            "none",
        ],
    );
    let ca = agg.ca.clone().unwrap();

    // The genuine agent of n2: the real binary, its token from a file.
    let token_file = c.plane.dir().join("agent-n2.token");
    std::fs::write(&token_file, &t2).unwrap();
    let _n2 = Killed(
        Command::new(binary("netaware-agent"))
            .args(["--node-name", "n2", "--node-ip", NODES[1].1])
            .args(["--stamp-bind", NODES[1].1])
            .args(["--stamp-port", &free_port().to_string()])
            .args(["--bandwidth-port", "0", "--icmp", "false"])
            .args(["--metrics-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--aggregator", &agg.url(agg.agent)])
            .args(["--ca-file", ca.to_str().unwrap()])
            .args(["--token-file", token_file.to_str().unwrap()])
            .args(["--backoff-max", "1s"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let connected = |m: &netaware_proto::v1::GetMatrixResponse, node: &str| {
        m.nodes.iter().any(|n| n.node_name == node && n.connected)
    };
    let m = agg.matrix_when(|m| connected(m, "n2")).await;
    assert!(connected(&m, "n2"), "the agent with its token: {m:?}");
    let n2_labels = labels(&c, "n2").await;

    // Every way of not being n1's agent is refused, saying why.
    let n1 = || hello_from("n1", &[NODES[0].1]);
    let s = refused(&agg, n1(), None).await;
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    assert!(s.message().contains("no bearer token"), "{s:?}");

    let other_audience = c.token(AGENT_SA, "someone-else", Some("agent-n1")).await;
    let s = refused(&agg, n1(), Some(&other_audience)).await;
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    assert!(s.message().contains("audience 'netaware'"), "{s:?}");

    let intruder = c
        .token(AGGREGATOR_SA, "netaware", Some("intruder-n1"))
        .await;
    let s = refused(&agg, n1(), Some(&intruder)).await;
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(
        s.message()
            .contains("not to the agent ServiceAccount netaware/netaware-agent"),
        "{s:?}"
    );

    let unbound = c.token(AGENT_SA, "netaware", None).await;
    let s = refused(&agg, n1(), Some(&unbound)).await;
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(s.message().contains("not bound to a pod"), "{s:?}");

    let s = refused(&agg, n1(), Some("not-a-token")).await;
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");

    // n1's token, speaking for n2 (and aiming its probes elsewhere).
    let s = refused(&agg, hello_from("n2", &["127.0.0.9"]), Some(&t1)).await;
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(
        s.message().contains("node 'n1'") && s.message().contains("'n2'"),
        "{s:?}"
    );

    // n1's own token, but probes aimed at an address not n1's (S5).
    let s = refused(&agg, hello_from("n1", &["127.0.0.9"]), Some(&t1)).await;
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(s.message().contains("127.0.1.1"), "names n1's own: {s:?}");

    // Accepted, with the foreign address dropped.
    let mut first = connect_with_token(
        &agg,
        hello_from("n1", &[NODES[0].1, "127.0.0.9"]),
        Some(&t1),
    )
    .await
    .unwrap();
    first
        .expect("a plan", |m| matches!(m, AggMsg::Plan(_)).then_some(()))
        .await;
    let m = agg
        .matrix_when(|m| connected(m, "n1") && connected(m, "n2"))
        .await;
    let addresses = |node: &str| {
        m.nodes
            .iter()
            .find(|n| n.node_name == node)
            .map(|n| n.probe_addresses.clone())
            .unwrap_or_default()
    };
    assert_eq!(addresses("n1"), [NODES[0].1], "{m:?}");
    assert_eq!(
        addresses("n2"),
        [NODES[1].1],
        "the impostor changed nothing"
    );
    assert_eq!(labels(&c, "n2").await, n2_labels, "n2's labels unchanged");

    // A newer authenticated session of n1 replaces the older one.
    let _second = connect_with_token(&agg, n1(), Some(&t1)).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match first.rx.message().await {
                Ok(Some(_)) => {}
                other => return other,
            }
        }
    })
    .await
    .expect("the older session is closed");
    let status = ended.unwrap_err();
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert!(status.message().contains("replaced"), "{status:?}");

    for (reason, n) in [
        ("no_token", 1),
        ("wrong_audience", 1),
        ("wrong_service_account", 1),
        ("not_pod_bound", 1),
        ("invalid_token", 1),
        ("node_mismatch", 1),
        ("foreign_address", 1),
    ] {
        assert_eq!(refusals(&agg, reason), n, "{reason}");
    }
    // One review per token: t1 was used four times, t2 once or more (the
    // agent may have reconnected); the six distinct tokens cost six.
    assert_eq!(agg.metric("netaware_token_reviews_total"), 6);
    // The aggregator did all this with its own, narrow rights.
    assert_eq!(c.refusals_of(k8s::AGGREGATOR_USER), Vec::<String>::new());
}

/// `token` is the default and fails closed: without an API server, or
/// without the agents' ServiceAccount, the aggregator does not start, and
/// says what to set.
#[test]
fn token_auth_without_an_api_server_or_account_does_not_start() {
    let run = |args: &[&str]| {
        let out = Command::new(binary("netaware-aggregator"))
            .args([
                "--agent-listen",
                "127.0.0.1:0",
                "--query-listen",
                "127.0.0.1:0",
            ])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBECONFIG")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&["--kubernetes", "off"]);
    assert!(
        err.contains("NETAWARE_AGENT_AUTH") && err.contains("--agent-auth none"),
        "{err}"
    );
    let scratch = netaware_e2e::Scratch::new("auth");
    let kubeconfig = scratch.path().join("kubeconfig");
    netaware_e2e::unreachable_kubeconfig(&kubeconfig);
    let err = run(&["--kubeconfig", kubeconfig.to_str().unwrap()]);
    assert!(
        err.contains("NETAWARE_AGENT_SERVICE_ACCOUNT") && err.contains("NAMESPACE/NAME"),
        "{err}"
    );
}
