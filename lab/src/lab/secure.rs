//! The lab runs netaware as a cluster should: TLS on both of the
//! aggregator's gRPC ports always, and, with a real API server, every agent
//! proving its node with a token that server issued for a pod bound to
//! that node. The API double cannot review tokens, so with it (or without
//! Kubernetes) agents are not authenticated, and the report says so.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::cluster::{self, ServingCertificate, objects};
use crate::error::{Error, Result};
use crate::netns::BRIDGE_IP;
use crate::topology::Topology;

/// Where the lab's stand-ins for the agent DaemonSet's pods live: not a
/// workload namespace, so the report's pods and the scheduler tests see
/// only what `--apply` created.
pub(super) const AGENT_NAMESPACE: &str = "kube-system";
pub(super) const AGENT_SA: &str = "netaware-agent";
/// Whom the lab's own query client (and the CLI, with its token) is: bound
/// to the same rules as the chart's netaware-viewer.
const VIEWER_SA: &str = "netaware-lab-viewer";
const VIEWER_FILE: &str = "viewer.token";
/// Lifetime of the lab's agent tokens. The aggregator trusts one for at
/// most an hour, then the agent reconnects with the same file and it is
/// reviewed again; a lab `up` longer than this needs a restart.
const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// What the run's report says about security.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecurityReport {
    /// `token` or `none`.
    pub agent_auth: &'static str,
    /// `token` or `none`.
    pub query_auth: &'static str,
    pub tls: bool,
}

/// The lab's certificates and tokens.
#[derive(Debug, Clone)]
pub(super) struct Security {
    /// `None` with `--insecure` only.
    pub pki: Option<ServingCertificate>,
    /// `<dir>/<node>.token`, with a real API server.
    pub tokens: Option<PathBuf>,
}

impl Security {
    /// A CA and the aggregator's certificate (for the bridge address the
    /// agents dial and 127.0.0.1 where the query port listens), in
    /// `<log dir>/tls`.
    pub fn new(log_dir: &Path) -> Result<Self> {
        let (pki, _) = cluster::serving_certificate(
            &log_dir.join("tls"),
            &[&BRIDGE_IP.to_string(), "127.0.0.1"],
        )?;
        Ok(Self {
            pki: Some(pki),
            tokens: None,
        })
    }

    /// Neither TLS nor tokens (`--insecure`).
    pub fn insecure() -> Self {
        Self {
            pki: None,
            tokens: None,
        }
    }

    /// `https` with TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.pki.is_some() { "https" } else { "http" }
    }

    /// The CA agents and clients check the aggregator against.
    pub fn ca(&self) -> Option<&Path> {
        self.pki.as_ref().map(|p| p.ca.as_path())
    }

    /// Issue every node's agent a token as the kubelet would mount it: the
    /// agents' ServiceAccount, one pod per node bound to it, a token of
    /// audience `netaware` bound to that pod, written to `<dir>/<node>.token`.
    /// And a token for queries (`<dir>/viewer.token`) of a ServiceAccount
    /// the chart's viewer rules allow.
    pub async fn issue_tokens(
        &mut self,
        client: &kube::Client,
        topo: &Topology,
        dir: &Path,
    ) -> Result<()> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Run(format!("cannot create {}: {e}", dir.display())))?;
        let mut objs = vec![
            json!({
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": AGENT_SA, "namespace": AGENT_NAMESPACE},
                "automountServiceAccountToken": false,
            }),
            json!({
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": VIEWER_SA, "namespace": AGENT_NAMESPACE},
            }),
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": VIEWER_SA},
                "rules": [
                    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]},
                    {"nonResourceURLs": ["/netaware/place"], "verbs": ["create"]},
                ],
            }),
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": VIEWER_SA},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": VIEWER_SA},
                "subjects": [{"kind": "ServiceAccount", "name": VIEWER_SA, "namespace": AGENT_NAMESPACE}],
            }),
        ];
        for n in &topo.nodes {
            objs.push(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod_name(&n.name), "namespace": AGENT_NAMESPACE},
                "spec": {
                    "serviceAccountName": AGENT_SA,
                    "nodeName": n.name,
                    "automountServiceAccountToken": false,
                    "containers": [{"name": "agent", "image": "netaware-agent:lab"}],
                },
            }));
        }
        objects::apply(client, &objs, "netaware-lab", AGENT_NAMESPACE).await?;
        for n in &topo.nodes {
            let token = objects::service_account_token(
                client,
                AGENT_NAMESPACE,
                AGENT_SA,
                &[netaware_proto::TOKEN_AUDIENCE],
                TOKEN_LIFETIME,
                Some(&pod_name(&n.name)),
            )
            .await?;
            let file = dir.join(format!("{}.token", n.name));
            std::fs::write(&file, token)
                .map_err(|e| Error::Run(format!("cannot write {}: {e}", file.display())))?;
        }
        let viewer = objects::service_account_token(
            client,
            AGENT_NAMESPACE,
            VIEWER_SA,
            &[],
            TOKEN_LIFETIME,
            None,
        )
        .await?;
        let file = dir.join(VIEWER_FILE);
        std::fs::write(&file, viewer)
            .map_err(|e| Error::Run(format!("cannot write {}: {e}", file.display())))?;
        self.tokens = Some(dir.to_path_buf());
        Ok(())
    }

    /// The query token, when queries are authenticated.
    pub fn query_token(&self) -> Result<Option<String>> {
        let Some(dir) = &self.tokens else {
            return Ok(None);
        };
        let file = dir.join(VIEWER_FILE);
        std::fs::read_to_string(&file)
            .map(|t| Some(t.trim().to_string()))
            .map_err(|e| Error::Run(format!("cannot read {}: {e}", file.display())))
    }

    /// Where the query token is, when queries are authenticated.
    pub fn query_token_file(&self) -> Option<PathBuf> {
        self.tokens.as_ref().map(|d| d.join(VIEWER_FILE))
    }

    /// The token file of `node`'s agent, when agents authenticate.
    pub fn token_file(&self, node: &str) -> Option<PathBuf> {
        self.tokens
            .as_ref()
            .map(|d| d.join(format!("{node}.token")))
    }

    /// The aggregator's `--agent-service-account` when agents authenticate.
    pub fn agent_service_account(&self) -> Option<String> {
        self.tokens
            .as_ref()
            .map(|_| format!("{AGENT_NAMESPACE}/{AGENT_SA}"))
    }

    pub fn report(&self) -> SecurityReport {
        let mode = if self.tokens.is_some() {
            "token"
        } else {
            "none"
        };
        SecurityReport {
            agent_auth: mode,
            query_auth: mode,
            tls: self.pki.is_some(),
        }
    }
}

/// The stand-in agent pod of `node`.
fn pod_name(node: &str) -> String {
    format!("netaware-agent-{node}")
}
