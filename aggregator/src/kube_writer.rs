//! Writing labels and the summary annotation to Node objects with
//! server-side apply.
//!
//! Every write is an apply patch from field manager `netaware` that names
//! *only our keys*. The API server records which fields each manager owns
//! (`metadata.managedFields`), so:
//! - labels and annotations of other managers are never touched;
//! - a key we applied before and leave out now is removed, and only that key
//!   (which is how a key we stop producing disappears);
//! - `force` takes over a key under our prefix that someone else set by hand.
//!
//! A node whose desired keys did not change since the last successful write
//! is skipped: every Node write reaches every Node watcher in the cluster.
//!
//! An apply to a Node that does not exist would *create* one, so the writer
//! reads a node once before its first write and refuses (404) to write to a
//! name the cluster does not know. What it confirmed is forgotten after an
//! error and at every resync.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use tracing::{debug, warn};

use netaware_model::labels::Desired;

use crate::metrics::WriterMetrics;

/// Our field manager name.
pub const FIELD_MANAGER: &str = "netaware";

/// The apply patch for one node.
pub fn apply_body(node: &str, d: &Desired) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node,
            "labels": d.labels,
            "annotations": d.annotations,
        }
    })
}

/// What one call to [`NodeWriter::write`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Written,
    /// Same keys as the last successful write: nothing sent.
    Unchanged,
}

/// A snapshot of the writer's counters (exported on `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteCounters {
    pub writes: u64,
    pub errors: u64,
    pub skipped: u64,
}

/// Applies desired keys to Nodes, remembering what it last wrote.
#[derive(Clone)]
pub struct NodeWriter {
    api: Api<Node>,
    written: HashMap<String, Desired>,
    /// Nodes confirmed to exist.
    known: HashSet<String>,
    metrics: WriterMetrics,
}

impl std::fmt::Debug for NodeWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeWriter")
            .field("written", &self.written.len())
            .field("counters", &self.counters())
            .finish()
    }
}

impl NodeWriter {
    pub fn new(client: kube::Client) -> Self {
        Self::with_metrics(client, WriterMetrics::default())
    }

    /// A writer that counts into shared (exported) counters.
    pub fn with_metrics(client: kube::Client, metrics: WriterMetrics) -> Self {
        Self {
            api: Api::all(client),
            written: HashMap::new(),
            known: HashSet::new(),
            metrics,
        }
    }

    pub fn counters(&self) -> WriteCounters {
        WriteCounters {
            writes: self.metrics.writes.get(),
            errors: self.metrics.errors.get(),
            skipped: self.metrics.skipped.get(),
        }
    }

    /// Whether `desired` is what we last wrote to `node`.
    pub fn is_current(&self, node: &str, desired: &Desired) -> bool {
        self.written.get(node) == Some(desired)
    }

    /// Forget what was written to one node: the next write is sent even if
    /// unchanged (the live Node drifted from it).
    pub fn forget_node(&mut self, node: &str) {
        self.written.remove(node);
    }

    /// Forget what was written (the periodic resync writes everything again).
    pub fn forget(&mut self) {
        self.written.clear();
        self.known.clear();
    }

    /// Apply `desired` to `node` unless it is what we last wrote there.
    pub async fn write(&mut self, node: &str, desired: &Desired) -> Result<Outcome, kube::Error> {
        if self.is_current(node, desired) {
            self.metrics.skipped.inc();
            return Ok(Outcome::Unchanged);
        }
        if !self.known.contains(node) {
            // 404 here means "no such Node": never create one by applying.
            if let Err(e) = self.api.get(node).await {
                self.metrics.errors.inc();
                return Err(e);
            }
            self.known.insert(node.to_string());
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match self
            .api
            .patch(node, &params, &Patch::Apply(apply_body(node, desired)))
            .await
        {
            Ok(_) => {
                self.metrics.writes.inc();
                self.written.insert(node.to_string(), desired.clone());
                debug!(%node, labels = desired.labels.len(), "node labels applied");
                Ok(Outcome::Written)
            }
            Err(e) => {
                self.metrics.errors.inc();
                self.known.remove(node);
                warn!(%node, error = %e, "node label write failed");
                Err(e)
            }
        }
    }
}

/// Mock API server helpers shared by the writer's and publisher's tests.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use http::{Request, Response, StatusCode};
    use kube::client::Body;
    use std::collections::BTreeSet;
    use std::time::Duration;

    pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    pub fn writer() -> (NodeWriter, Handle) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (
            NodeWriter::new(kube::Client::new(service, "default")),
            handle,
        )
    }

    pub fn desired(quality: &str) -> Desired {
        let mut d = Desired::default();
        d.labels.insert("netaware.io/group-l2".into(), "g1".into());
        d.labels
            .insert("netaware.io/quality".into(), quality.into());
        d.annotations
            .insert("netaware.io/summary".into(), r#"{"nearest":[]}"#.into());
        d
    }

    fn node_json(name: &str) -> Body {
        Body::from(
            serde_json::to_vec(
                &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}),
            )
            .unwrap(),
        )
    }

    /// Answer the next request after checking it is a GET of `node`.
    pub async fn expect_get(handle: &mut Handle, node: &str, status: StatusCode) {
        let (request, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
            .await
            .expect("a request")
            .expect("the client is alive");
        assert_eq!(request.method(), http::Method::GET);
        assert_eq!(request.uri().path(), format!("/api/v1/nodes/{node}"));
        send.send_response(reply(node, status));
    }

    fn reply(node: &str, status: StatusCode) -> Response<Body> {
        if status.is_success() {
            Response::builder()
                .status(status)
                .body(node_json(node))
                .unwrap()
        } else {
            let err = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                             "message": "boom", "reason": "InternalError", "code": status.as_u16()});
            Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(&err).unwrap()))
                .unwrap()
        }
    }

    /// Answer the next request after checking it is exactly our apply patch.
    pub async fn expect_apply(handle: &mut Handle, node: &str, want: &Desired, status: StatusCode) {
        let (request, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
            .await
            .expect("a request")
            .expect("the client is alive");
        assert_eq!(request.method(), http::Method::PATCH);
        assert_eq!(request.uri().path(), format!("/api/v1/nodes/{node}"));
        let query: BTreeSet<&str> = request
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|q| !q.is_empty())
            .collect();
        assert_eq!(
            query,
            BTreeSet::from(["fieldManager=netaware", "force=true"])
        );
        assert_eq!(
            request.headers().get(http::header::CONTENT_TYPE).unwrap(),
            "application/apply-patch+yaml"
        );
        let body = request.into_body().collect_bytes().await.unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body, apply_body(node, want));
        // Only our keys: nothing but labels and annotations under metadata.
        let keys: Vec<&String> = body["metadata"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["annotations", "labels", "name"]);
        let response = reply(node, status);
        send.send_response(response);
    }
}

#[cfg(test)]
mod tests;
