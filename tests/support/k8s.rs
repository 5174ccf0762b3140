//! A real Kubernetes control plane for one test: netaware-lab's
//! [`netaware_lab::cluster`] (etcd, kube-apiserver, kube-scheduler,
//! kube-controller-manager built from upstream by `scripts/k8s.sh`), with
//! Ready Nodes and the Helm chart's ServiceAccounts, RBAC and admission
//! policy applied as Helm renders them. Everything netaware does is then
//! done with its own ServiceAccount's token, never the admin's.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use netaware_lab::cluster::objects::{self, NodeSpec};
use netaware_lab::cluster::{Binaries, ControlPlane, Credential};
use serde_json::{Value, json};

/// The chart's release namespace and aggregator ServiceAccount, as
/// `charts/check.py` renders them (release `netaware` in `netaware`).
pub const NAMESPACE: &str = "netaware";
pub const AGGREGATOR_SA: &str = "netaware-aggregator";
/// The user the API server sees for the aggregator's tokens.
pub const AGGREGATOR_USER: &str = "system:serviceaccount:netaware:netaware-aggregator";
/// The agents' ServiceAccount, and the aggregator's flag naming it.
pub const AGENT_SA: &str = "netaware-agent";
pub const AGENT_SA_FLAG: &str = "netaware/netaware-agent";

/// The chart objects a control plane without kubelets can use: who the
/// aggregator is, what it may do, and the admission policy. (The workloads
/// would only make pods nothing runs; the monitors need CRDs.)
const CHART_KINDS: [&str; 7] = [
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
];

/// A running control plane and an admin client (for setting up and
/// reading back only).
pub struct Cluster {
    pub plane: ControlPlane,
    pub admin: kube::Client,
    /// The plane's directory; declared last so that it is removed only after
    /// the plane's processes have stopped.
    _dir: crate::Scratch,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("plane", &self.plane)
            .finish_non_exhaustive()
    }
}

/// The control plane's binaries. Without them: in CI a failure, elsewhere
/// `None` after a loud `SKIPPED` saying how to get them.
pub fn binaries() -> Option<Binaries> {
    match Binaries::find() {
        Ok(b) => Some(b),
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: {e}");
            None
        }
        Err(e) => panic!("{e} (./test.sh builds it)"),
    }
}

/// Start a control plane in a directory of its own (`tag`: tests run in
/// parallel) with Ready Nodes `nodes`; `None` as [`binaries`] says.
pub async fn start(tag: &str, nodes: &[&str]) -> Option<Cluster> {
    let specs: Vec<NodeSpec> = nodes
        .iter()
        .map(|n| NodeSpec {
            name: (*n).to_string(),
            internal_ip: None,
        })
        .collect();
    start_nodes(tag, &specs).await
}

/// [`start`] with Nodes as given (their InternalIP, for the probe-address
/// check).
pub async fn start_nodes(tag: &str, specs: &[NodeSpec]) -> Option<Cluster> {
    let bins = binaries()?;
    let dir = crate::Scratch::new(&format!("k8s-{tag}"));
    let plane = ControlPlane::start(&bins, dir.path())
        .await
        .unwrap_or_else(|e| panic!("the control plane did not start: {e}"));
    let admin = plane
        .client(&plane.admin())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    objects::add_nodes(&admin, specs)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    Some(Cluster {
        plane,
        admin,
        _dir: dir,
    })
}

impl Cluster {
    /// Apply the chart's identity, RBAC and admission objects for values
    /// `case` (`default` or `all-on`, see `charts/check.py`), rendered by
    /// Helm's engine, after transforming each with `edit` (return `None` to
    /// leave one out). `None` after `SKIPPED` when helm-python-sdk is
    /// missing outside CI.
    pub async fn install_chart(
        &self,
        case: &str,
        edit: impl Fn(Value) -> Option<Value>,
    ) -> Option<Vec<String>> {
        let tag = self
            .plane
            .dir()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = crate::render_chart(&format!("{tag}-{case}"))?;
        let text = std::fs::read_to_string(dir.join(format!("{case}.jsonl")))
            .unwrap_or_else(|e| panic!("the rendered chart: {e}"));
        let _ = std::fs::remove_dir_all(&dir);
        let mut chosen = vec![json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE},
        })];
        for line in text.lines() {
            let doc: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}"));
            let obj = doc["object"].clone();
            let kind = obj["kind"].as_str().unwrap_or_default();
            if CHART_KINDS.contains(&kind)
                && let Some(obj) = edit(obj)
            {
                chosen.push(obj);
            }
        }
        let applied = objects::apply(&self.admin, &chosen, "helm", NAMESPACE)
            .await
            .unwrap_or_else(|e| panic!("installing the chart: {e}"));
        Some(applied)
    }

    /// A kubeconfig with a fresh token of the aggregator's ServiceAccount
    /// (bound to `pod` when given, as a pod's projected token is).
    pub async fn aggregator_kubeconfig(&self, pod: Option<&str>) -> PathBuf {
        let token = objects::service_account_token(
            &self.admin,
            NAMESPACE,
            AGGREGATOR_SA,
            &[],
            Duration::from_secs(3600),
            pod,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let name = format!("aggregator-{}", pod.unwrap_or("sa"));
        let file = self.plane.dir().join(format!("{name}.token"));
        std::fs::write(&file, token).unwrap_or_else(|e| panic!("{e}"));
        self.plane
            .write_kubeconfig(&name, &Credential::TokenFile(file))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A client as the aggregator's ServiceAccount.
    pub async fn aggregator_client(&self) -> kube::Client {
        let path = self.aggregator_kubeconfig(None).await;
        netaware_lab::cluster::client_from_kubeconfig(&path)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A client as the kubelet of `node`.
    pub async fn kubelet_client(&self, node: &str) -> kube::Client {
        let cred = self.plane.kubelet(node).unwrap_or_else(|e| panic!("{e}"));
        self.plane
            .client(&cred)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A pod of the aggregator's ServiceAccount in the chart's namespace
    /// (the scheduler binds it; nothing runs it).
    pub async fn aggregator_pod(&self, name: &str) {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "serviceAccountName": AGGREGATOR_SA,
                "containers": [{"name": "aggregator", "image": "registry.invalid/netaware:test"}],
            },
        });
        objects::apply(&self.admin, &[pod], "test", NAMESPACE)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// A pod of ServiceAccount `sa` put on Node `node` directly (as the
    /// DaemonSet controller and the scheduler would; nothing runs it).
    pub async fn pod_on(&self, name: &str, sa: &str, node: &str) {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "serviceAccountName": sa,
                "nodeName": node,
                "automountServiceAccountToken": false,
                "containers": [{"name": "agent", "image": "registry.invalid/netaware:test"}],
            },
        });
        objects::apply(&self.admin, &[pod], "test", NAMESPACE)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// A token of ServiceAccount `sa` for `audience`, bound to `pod` when
    /// given: what the kubelet mounts as a projected token.
    pub async fn token(&self, sa: &str, audience: &str, pod: Option<&str>) -> String {
        objects::service_account_token(
            &self.admin,
            NAMESPACE,
            sa,
            &[audience],
            Duration::from_secs(3600),
            pod,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The audit events of `user` so far (see `ControlPlane::audit_log`).
    pub fn audit_of(&self, user: &str) -> Vec<Value> {
        self.plane
            .audit_events()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["user"]["username"] == user)
            .collect()
    }

    /// `verb resource/name: code message` of every refused request of
    /// `user`, for failure messages.
    pub fn refusals_of(&self, user: &str) -> Vec<String> {
        self.audit_of(user)
            .iter()
            .filter(|e| matches!(e["responseStatus"]["code"].as_u64(), Some(401 | 403)))
            .map(|e| {
                format!(
                    "{} {}/{}: {} {}",
                    e["verb"].as_str().unwrap_or("?"),
                    e["objectRef"]["resource"].as_str().unwrap_or("?"),
                    e["objectRef"]["name"].as_str().unwrap_or(""),
                    e["responseStatus"]["code"],
                    e["responseStatus"]["message"].as_str().unwrap_or(""),
                )
            })
            .collect()
    }
}

/// Poll `check` every 200 ms until it gives a value; after `within`, panic
/// with `what` and whatever `explain` says then.
pub async fn eventually<T>(
    what: &str,
    within: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
    explain: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}; {}",
            explain()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
