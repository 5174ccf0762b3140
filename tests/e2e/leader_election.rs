#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! Two real aggregator replicas elect a leader through a Lease on a real
//! API server (`tests/support/k8s.rs`), each with its own pod-bound token
//! of the chart's ServiceAccount and the chart's Role. Agents and the CLI
//! talk to the follower; their data reaches the one leader, which alone
//! writes Nodes. When the leader dies, the follower takes over; when it
//! stops cleanly, it releases the lease. Who wrote what, and when, is read
//! from the API server's audit log (the pod each token is bound to) and
//! the Lease's managedFields: never two writers.
//!
//! The replicas listen on 10.253.0.2 and 10.253.0.3 (added to `lo` for the
//! test: an EndpointSlice may not name loopback addresses) with the same
//! ports, as pods of one Deployment do on their own IPs. Their Service's
//! EndpointSlice lists both as ready: a follower forwards only to a ready
//! endpoint (the review's S19), so without it nothing below would reach the
//! leader.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use netaware_e2e::k8s::{self, AGGREGATOR_USER, Cluster, eventually};
use netaware_e2e::{Killed, binary, free_port, http_get, sigterm};

const NS: &str = k8s::NAMESPACE;
/// The lease name the chart's all-on values choose.
const LEASE: &str = "netaware-leader";

/// The two replicas' addresses.
const IPS: [&str; 2] = ["10.253.0.2", "10.253.0.3"];

/// The replicas' addresses on `lo` while the test runs (needs root).
struct Addresses;

impl Addresses {
    fn add() -> Option<Self> {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("SKIPPED: needs root to add the replicas' addresses to lo");
            return None;
        }
        for ip in IPS {
            let _ = Command::new("ip")
                .args(["addr", "add", &format!("{ip}/32"), "dev", "lo"])
                .status();
        }
        Some(Self)
    }
}

impl Drop for Addresses {
    fn drop(&mut self) {
        for ip in IPS {
            let _ = Command::new("ip")
                .args(["addr", "del", &format!("{ip}/32"), "dev", "lo"])
                .status();
        }
    }
}

/// The aggregator Service's EndpointSlice, both replicas ready, as the
/// EndpointSlice controller writes it for Ready pods.
async fn endpoints(c: &Cluster) {
    let slice = serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "netaware-aggregator-1", "namespace": NS,
                     "labels": {"kubernetes.io/service-name": "netaware-aggregator"}},
        "addressType": "IPv4",
        "endpoints": IPS.iter().map(|ip| serde_json::json!({
            "addresses": [ip], "conditions": {"ready": true},
        })).collect::<Vec<_>>(),
    });
    netaware_lab::cluster::objects::apply(&c.admin, &[slice], "test", NS)
        .await
        .unwrap();
}

/// One aggregator replica: its IP doubles as its pod IP; `pod` is the pod
/// its token is bound to.
struct Replica {
    ip: &'static str,
    pod: &'static str,
    proc: Option<Killed>,
}

struct Ports {
    agent: u16,
    query: u16,
    metrics: u16,
}

async fn start_replica(c: &Cluster, ip: &'static str, pod: &'static str, p: &Ports) -> Replica {
    c.aggregator_pod(pod).await;
    let kubeconfig = c.aggregator_kubeconfig(Some(pod)).await;
    let child = Command::new(binary("netaware-aggregator"))
        .args(["--agent-listen", &format!("{ip}:{}", p.agent)])
        .args(["--query-listen", &format!("{ip}:{}", p.query)])
        .args(["--metrics-listen", &format!("{ip}:{}", p.metrics)])
        .args(["--kubeconfig", kubeconfig.to_str().unwrap()])
        .args([
            "--leader-election",
            "true",
            "--pod-ip",
            ip,
            "--lease-name",
            LEASE,
        ])
        .args(["--pod-name", pod, "--pod-namespace", NS])
        .args(["--service-name", "netaware-aggregator"])
        .args(["--lease-duration", "3s", "--lease-grace", "1s"])
        .args(["--report-interval", "1s", "--recompute-interval", "1s"])
        .args(["--bandwidth-tests", "false"])
        // The agents here carry no tokens: tests/e2e/agent_auth.rs covers them.
        .args(netaware_e2e::UNAUTHENTICATED)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Replica {
        ip,
        pod,
        proc: Some(Killed(child)),
    }
}

fn is_leader(r: &Replica, p: &Ports) -> Option<bool> {
    let (_, body) = http_get(r.ip, p.metrics, "/metrics")?;
    // The sample line, not the HELP text (which mentions "netaware_leader 1").
    match body
        .lines()
        .find_map(|l| l.strip_prefix("netaware_leader "))?
    {
        "1" => Some(true),
        "0" => Some(false),
        _ => None,
    }
}

fn ready(r: &Replica, p: &Ports) -> bool {
    http_get(r.ip, p.metrics, "/readyz").is_some_and(|(s, _)| s == 200)
}

fn start_agent(name: &str, ip: &str, aggregator: &str) -> Killed {
    Killed(
        Command::new(binary("netaware-agent"))
            .args(["--node-name", name, "--node-ip", ip])
            .args(["--stamp-bind", ip, "--stamp-port", &free_port().to_string()])
            .args(["--bandwidth-port", "0", "--icmp", "false"])
            .args(["--metrics-listen", &format!("{ip}:{}", free_port())])
            .args(["--aggregator", aggregator])
            .args(["--backoff-max", "1s"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn cli_nodes(endpoint: &str) -> Output {
    Command::new(binary("netaware"))
        .args(["--aggregator", endpoint, "nodes"])
        .output()
        .unwrap()
}

/// A successful write by the aggregator's ServiceAccount, as the audit log
/// has it.
struct Write {
    /// The pod the token is bound to.
    pod: String,
    /// `nodes` or `leases`.
    resource: String,
    /// When the API server received it (RFC 3339 with microseconds, so
    /// strings compare in time order).
    at: String,
}

fn writes(c: &Cluster) -> Vec<Write> {
    c.audit_of(AGGREGATOR_USER)
        .into_iter()
        .filter(|e| {
            matches!(e["verb"].as_str(), Some("create" | "update" | "patch"))
                && e["responseStatus"]["code"]
                    .as_u64()
                    .is_some_and(|c| c < 300)
        })
        .map(|e| Write {
            pod: e["user"]["extra"]["authentication.kubernetes.io/pod-name"][0]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            resource: e["objectRef"]["resource"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            at: e["requestReceivedTimestamp"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        })
        .collect()
}

fn count(w: &[Write], pod: &str, resource: &str) -> usize {
    w.iter()
        .filter(|w| w.pod == pod && w.resource == resource)
        .count()
}

async fn holder(c: &Cluster) -> Option<String> {
    Api::<Lease>::namespaced(c.admin.clone(), NS)
        .get_opt(LEASE)
        .await
        .unwrap()?
        .spec?
        .holder_identity
}

async fn labelled(c: &Cluster, nodes: &[&str]) -> bool {
    let api: Api<Node> = Api::all(c.admin.clone());
    for n in nodes {
        let labels = api
            .get(n)
            .await
            .unwrap()
            .metadata
            .labels
            .unwrap_or_default();
        if !labels.keys().any(|k| k.starts_with("netaware.io/")) {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_writes_followers_forward_and_a_follower_takes_over() {
    let Some(c) = k8s::start("lease", &["n1", "n2"]).await else {
        return;
    };
    if c.install_chart("all-on", Some).await.is_none() {
        return;
    }
    let Some(_addresses) = Addresses::add() else {
        return;
    };
    endpoints(&c).await;
    let ports = Ports {
        agent: free_port(),
        query: free_port(),
        metrics: free_port(),
    };
    let mut a = start_replica(&c, IPS[0], "agg-a", &ports).await;
    let mut b = start_replica(&c, IPS[1], "agg-b", &ports).await;

    // Exactly one leader; both ready (the follower knows where to forward).
    let leader_is_a = eventually(
        "one leader, both ready",
        Duration::from_secs(30),
        async || match (is_leader(&a, &ports), is_leader(&b, &ports)) {
            (Some(la), Some(lb)) if la != lb && ready(&a, &ports) && ready(&b, &ports) => Some(la),
            _ => None,
        },
        || format!("refused: {:?}", c.refusals_of(AGGREGATOR_USER)),
    )
    .await;
    let (leader, follower) = if leader_is_a {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let held = holder(&c).await.expect("the lease has a holder");
    assert!(held.ends_with(&format!("@{}", leader.ip)), "{held}");
    // Both replicas may have tried to create and claim the lease at start
    // (one lost); from now on the follower must only read it.
    let follower_lease_writes = count(&writes(&c), follower.pod, "leases");

    // Agents connect to the follower only; their data reaches the leader.
    let via_follower = |port: u16| format!("http://{}:{port}", follower.ip);
    let _n1 = start_agent("n1", "127.0.0.11", &via_follower(ports.agent));
    let _n2 = start_agent("n2", "127.0.0.12", &via_follower(ports.agent));
    eventually(
        "labels on both nodes",
        Duration::from_secs(60),
        async || labelled(&c, &["n1", "n2"]).await.then_some(()),
        || format!("refused: {:?}", c.refusals_of(AGGREGATOR_USER)),
    )
    .await;
    let w = writes(&c);
    assert!(
        count(&w, leader.pod, "nodes") > 0,
        "the leader wrote no Node"
    );
    assert_eq!(
        count(&w, follower.pod, "nodes"),
        0,
        "a follower must never write Nodes"
    );
    assert_eq!(
        count(&w, follower.pod, "leases"),
        follower_lease_writes,
        "a follower must not write a held lease"
    );
    // A query through the follower is answered by the leader's matrix.
    let out = cli_nodes(&via_follower(ports.query));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("n1") && text.contains("n2"), "{text}");

    // The leader dies without releasing the lease: the follower takes
    // over once it expires, the agents reconnect, and it writes.
    let old = leader.pod;
    drop(leader.proc.take());
    eventually(
        "the follower to lead",
        Duration::from_secs(30),
        async || (is_leader(follower, &ports) == Some(true)).then_some(()),
        || "the lease did not pass to it".into(),
    )
    .await;
    let held = holder(&c).await.unwrap();
    assert!(held.ends_with(&format!("@{}", follower.ip)), "{held}");
    eventually(
        "the new leader to write Nodes",
        Duration::from_secs(60),
        async || (count(&writes(&c), follower.pod, "nodes") > 0).then_some(()),
        || format!("refused: {:?}", c.refusals_of(AGGREGATOR_USER)),
    )
    .await;
    // Never two writers: every Node write of the old leader came before
    // the new leader's first, in the API server's own clock.
    let w = writes(&c);
    let last_old = w
        .iter()
        .filter(|w| w.pod == old && w.resource == "nodes")
        .map(|w| w.at.as_str())
        .max()
        .unwrap();
    let first_new = w
        .iter()
        .filter(|w| w.pod == follower.pod && w.resource == "nodes")
        .map(|w| w.at.as_str())
        .min()
        .unwrap();
    assert!(last_old < first_new, "{last_old} vs {first_new}");
    // The Lease's managedFields: the new holder's field manager owns the
    // holder field, and the dead leader's owns nothing any more (server-side
    // apply moved its fields to the claimant).
    let lease = Api::<Lease>::namespaced(c.admin.clone(), NS)
        .get(LEASE)
        .await
        .unwrap();
    let managers: Vec<(String, bool)> = lease
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            let holds = m
                .fields_v1
                .as_ref()
                .and_then(|f| f.0.pointer("/f:spec/f:holderIdentity"))
                .is_some();
            (m.manager.unwrap_or_default(), holds)
        })
        .collect();
    let of = |pod: &str| {
        let prefix = format!("netaware/{pod}_");
        managers
            .iter()
            .filter(|(m, _)| m.starts_with(&prefix))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(of(old).is_empty(), "{managers:?}");
    assert!(
        of(follower.pod).iter().any(|(_, holds)| *holds),
        "{managers:?}"
    );
    let out = cli_nodes(&via_follower(ports.query));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("n1") && text.contains("n2"), "{text}");

    // A clean stop releases the lease at once.
    let mut p = follower.proc.take().unwrap();
    sigterm(&p.0);
    let status = eventually(
        "the replica to exit",
        Duration::from_secs(20),
        async || p.0.try_wait().unwrap(),
        || "it kept running after SIGTERM".into(),
    )
    .await;
    assert!(status.success(), "{status:?}");
    assert_eq!(holder(&c).await, None, "the lease was not released");
}
