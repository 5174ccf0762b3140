//! A test-only double of the Kubernetes API server, kept as a **fault
//! injector**: it fails the next writes with a chosen status, which a real
//! API server does not do on demand (`tests/e2e/node_writer.rs`).
//! Kubernetes behaviour itself is tested against a real control plane
//! (`k8s.rs`). The lab also falls back to it (`--kubernetes double`) where
//! the real binaries are not built. Nodes and Leases, over plain HTTP on
//! loopback, following the real API's semantics for what netaware uses. It
//! is not part of the product.
//!
//! - `GET /api/v1/nodes`, `GET /api/v1/nodes/NAME` (404 Status when missing),
//!   `POST /api/v1/nodes` (create; 409 AlreadyExists).
//! - `PATCH /api/v1/nodes/NAME` with `application/apply-patch+yaml`
//!   (server-side apply): `fieldManager` is required; every label and
//!   annotation key is owned by the manager that last applied it; a key a
//!   manager applied before and omits now is removed; a key owned by another
//!   manager with a different value is a 409 Conflict unless `force=true`;
//!   applying to a missing Node creates it, as the real server does.
//! - `PATCH` with `application/merge-patch+json`: `null` removes a key.
//! - `GET /api/v1/nodes?watch=true&resourceVersion=N`: the events after N
//!   (ADDED, MODIFIED, DELETED), then new ones as they happen, one JSON
//!   object per line; `DELETE /api/v1/nodes/NAME`.
//! - Leases (`/apis/coordination.k8s.io/v1/namespaces/NS/leases[/NAME]`):
//!   GET, POST (409 AlreadyExists), PATCH as server-side apply (every
//!   `spec` field owned by the manager that set it; claiming a field another
//!   manager owns with a different value is a 409 Conflict unless
//!   `force=true`) and as strategic-merge/merge patch (`null` removes).
//! - Injectable failures: the next N writes answer a given status code.
//! - Every request is logged with the bearer token it carried, which is how
//!   the real server tells clients apart.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Field {
    Label,
    Annotation,
}

#[derive(Debug, Default, Clone)]
struct StoredNode {
    uid: String,
    resource_version: u64,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    /// Owner (field manager) of every key.
    owners: BTreeMap<(Field, String), String>,
}

#[derive(Debug, Default, Clone)]
struct StoredLease {
    resource_version: u64,
    spec: serde_json::Map<String, Value>,
    /// Owner (field manager) of every `spec` field.
    owners: BTreeMap<String, String>,
}

/// Response bodies: whole (most) or streamed (watch).
type Body = BoxBody<Bytes, Infallible>;

#[derive(Debug, Default)]
struct State {
    resource_version: u64,
    nodes: BTreeMap<String, StoredNode>,
    /// (namespace, name) -> lease.
    leases: BTreeMap<(String, String), StoredLease>,
    /// Every watch event so far: (resourceVersion, JSON line).
    events: Vec<(u64, Bytes)>,
    /// Open watches.
    watchers: Vec<tokio::sync::mpsc::UnboundedSender<Bytes>>,
    /// Status codes for the next writes (PATCH/POST), consumed in order.
    failures: VecDeque<u16>,
    /// "METHOD PATH?QUERY" of every request, for assertions.
    log: Vec<String>,
    /// (bearer token or "", "METHOD PATH?QUERY") of every request.
    log_by: Vec<(String, String)>,
}

/// A running double; dropping it stops serving.
#[derive(Debug)]
pub struct ApiServerDouble {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ApiServerDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(s: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

impl ApiServerDouble {
    /// Serve on an ephemeral loopback port with the given Nodes.
    pub async fn start(nodes: &[&str]) -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0".parse().map_err(std::io::Error::other)?, nodes).await
    }

    /// Serve on `addr` with the given Nodes.
    pub async fn start_on(addr: SocketAddr, nodes: &[&str]) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        {
            let mut s = lock(&state);
            for n in nodes {
                create(&mut s, n);
            }
        }
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, state, task })
    }

    /// A kubeconfig that points a client at this double (no credentials).
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: double\n  cluster:\n    server: {}\n\
             contexts:\n- name: double\n  context:\n    cluster: double\n    user: nobody\n\
             current-context: double\nusers:\n- name: nobody\n  user: {{}}\n",
            self.url()
        )
    }

    /// Base URL, e.g. `http://127.0.0.1:34567`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A node's labels, if the node exists.
    pub fn labels(&self, node: &str) -> Option<BTreeMap<String, String>> {
        lock(&self.state).nodes.get(node).map(|n| n.labels.clone())
    }

    /// A node's annotations, if the node exists.
    pub fn annotations(&self, node: &str) -> Option<BTreeMap<String, String>> {
        lock(&self.state)
            .nodes
            .get(node)
            .map(|n| n.annotations.clone())
    }

    /// Names of all nodes.
    pub fn node_names(&self) -> Vec<String> {
        lock(&self.state).nodes.keys().cloned().collect()
    }

    /// Set a label as another field manager would (e.g. a human, a kubelet).
    pub fn set_label_as(&self, node: &str, key: &str, value: &str, manager: &str) {
        let mut s = lock(&self.state);
        s.resource_version += 1;
        let rv = s.resource_version;
        if let Some(n) = s.nodes.get_mut(node) {
            n.labels.insert(key.into(), value.into());
            n.owners.insert((Field::Label, key.into()), manager.into());
            n.resource_version = rv;
        }
        emit(&mut s, "MODIFIED", node);
    }

    /// Create a Node (as a kubelet registering would).
    pub fn add_node(&self, node: &str) {
        create(&mut lock(&self.state), node);
    }

    /// Delete a Node.
    pub fn delete_node(&self, node: &str) {
        delete(&mut lock(&self.state), node);
    }

    /// The next `count` writes answer `status` (e.g. 500, 429, 409).
    pub fn fail_next_writes(&self, status: u16, count: usize) {
        let mut s = lock(&self.state);
        s.failures.extend(std::iter::repeat_n(status, count));
    }

    /// Every request so far, as "METHOD PATH?QUERY".
    pub fn requests(&self) -> Vec<String> {
        lock(&self.state).log.clone()
    }

    /// Every request so far with the bearer token that sent it ("" if none).
    pub fn requests_by(&self) -> Vec<(String, String)> {
        lock(&self.state).log_by.clone()
    }

    /// A kubeconfig like [`Self::kubeconfig`] that authenticates with `token`.
    pub fn kubeconfig_with_token(&self, token: &str) -> String {
        self.kubeconfig()
            .replace("user: {}", &format!("user:\n    token: {token}"))
    }

    /// The `spec` of a lease, if it exists.
    pub fn lease_spec(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<serde_json::Map<String, Value>> {
        lock(&self.state)
            .leases
            .get(&(namespace.to_string(), name.to_string()))
            .map(|l| l.spec.clone())
    }
}

fn create(s: &mut State, name: &str) -> bool {
    if s.nodes.contains_key(name) {
        return false;
    }
    s.resource_version += 1;
    let n = StoredNode {
        uid: format!("00000000-0000-4000-8000-{:012}", s.resource_version),
        resource_version: s.resource_version,
        ..Default::default()
    };
    s.nodes.insert(name.to_string(), n);
    emit(s, "ADDED", name);
    true
}

/// Record a watch event for `name` as it is now and send it to every watch.
fn emit(s: &mut State, kind: &str, name: &str) {
    let object = match s.nodes.get(name) {
        Some(n) => node_json(name, n),
        None => return,
    };
    let rv = s.resource_version;
    let line = Bytes::from(format!("{}\n", json!({"type": kind, "object": object})));
    s.events.push((rv, line.clone()));
    s.watchers.retain(|w| w.send(line.clone()).is_ok());
}

/// The `f:key` entries of one map in a managedFields entry.
type FieldSet = serde_json::Map<String, Value>;

fn delete(s: &mut State, name: &str) -> bool {
    if !s.nodes.contains_key(name) {
        return false;
    }
    s.resource_version += 1;
    let rv = s.resource_version;
    // The DELETED event carries the object as it was, at the new version.
    if let Some(n) = s.nodes.get_mut(name) {
        n.resource_version = rv;
    }
    emit(s, "DELETED", name);
    s.nodes.remove(name);
    true
}

fn node_json(name: &str, n: &StoredNode) -> Value {
    // managedFields as the real server reports them: one entry per manager.
    let mut by_manager: BTreeMap<&str, (FieldSet, FieldSet)> = BTreeMap::new();
    for ((field, key), manager) in &n.owners {
        let e = by_manager.entry(manager.as_str()).or_default();
        let map = if *field == Field::Label {
            &mut e.0
        } else {
            &mut e.1
        };
        map.insert(format!("f:{key}"), json!({}));
    }
    let managed: Vec<Value> = by_manager
        .into_iter()
        .map(|(manager, (labels, annotations))| {
            let mut meta = serde_json::Map::new();
            if !labels.is_empty() {
                meta.insert("f:labels".into(), Value::Object(labels));
            }
            if !annotations.is_empty() {
                meta.insert("f:annotations".into(), Value::Object(annotations));
            }
            json!({"apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": meta},
                   "manager": manager, "operation": "Apply", "time": "2026-01-01T00:00:00Z"})
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": n.uid,
            "resourceVersion": n.resource_version.to_string(),
            "labels": n.labels,
            "annotations": n.annotations,
            "managedFields": managed,
        }
    })
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code.as_u16()});
    respond(code, &body)
}

/// An apply without `fieldManager`, as the real server words it.
fn field_manager_required() -> Response<Body> {
    status(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
    )
}

/// An apply that claims fields other managers own (without `force`).
fn apply_conflict(conflicts: &[String]) -> Response<Body> {
    status(
        StatusCode::CONFLICT,
        "Conflict",
        &format!(
            "Apply failed with {} conflict(s): {}",
            conflicts.len(),
            conflicts.join(", ")
        ),
    )
}

fn unsupported_media_type(content_type: &str) -> Response<Body> {
    status(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UnsupportedMediaType",
        &format!("the body of the request was in an unknown format ({content_type})"),
    )
}

/// A patch body that is neither YAML nor JSON (YAML is a superset of JSON,
/// so patches are parsed as YAML).
fn not_yaml() -> Response<Body> {
    status(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        "body is not YAML or JSON",
    )
}

fn respond(code: StatusCode, body: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *r.status_mut() = code;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn query(req: &Request<Incoming>) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect()
}

/// (field, key) -> value for every label and annotation in a patch body.
/// `None` values are JSON nulls (merge patch removal).
fn keys_of(body: &Value) -> Vec<(Field, String, Option<String>)> {
    let mut out = Vec::new();
    for (field, name) in [(Field::Label, "labels"), (Field::Annotation, "annotations")] {
        if let Some(map) = body["metadata"][name].as_object() {
            for (k, v) in map {
                let v = match v {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                };
                out.push((field, k.clone(), v));
            }
        }
    }
    out
}

fn map_of(n: &mut StoredNode, f: Field) -> &mut BTreeMap<String, String> {
    match f {
        Field::Label => &mut n.labels,
        Field::Annotation => &mut n.annotations,
    }
}

/// A watch: past events after `rv`, then live ones.
fn watch(s: &mut State, rv: u64) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    for (v, line) in &s.events {
        if *v > rv {
            let _ = tx.send(line.clone());
        }
    }
    s.watchers.push(tx);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(hyper::body::Frame::data(b)), rx))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

async fn handle(state: &Mutex<State>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let q = query(&req);
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let line = format!(
        "{method} {path}{}",
        req.uri()
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default()
    );
    let token = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    {
        let mut s = lock(state);
        s.log.push(line.clone());
        s.log_by.push((token, line));
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
    };
    let name = path.strip_prefix("/api/v1/nodes/").map(str::to_string);
    let mut s = lock(state);
    let is_write = method == Method::PATCH || method == Method::POST;
    if is_write && let Some(code) = s.failures.pop_front() {
        let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return status(code, "InternalError", "injected failure");
    }
    if let Some(rest) = path.strip_prefix("/apis/coordination.k8s.io/v1/namespaces/") {
        return lease(&mut s, &method, rest, &q, &content_type, &body);
    }
    let watching = q.get("watch").is_some_and(|v| v == "true" || v == "1");
    match (method, path.as_str(), name) {
        (Method::GET, "/api/v1/nodes", _) if watching => {
            let rv = q
                .get("resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            watch(&mut s, rv)
        }
        (Method::DELETE, _, Some(n)) => {
            if delete(&mut s, &n) {
                respond(
                    StatusCode::OK,
                    &json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                )
            } else {
                status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("nodes \"{n}\" not found"),
                )
            }
        }
        (Method::GET, "/api/v1/nodes", _) => {
            let items: Vec<Value> = s.nodes.iter().map(|(k, n)| node_json(k, n)).collect();
            respond(
                StatusCode::OK,
                &json!({"apiVersion": "v1", "kind": "NodeList",
                        "metadata": {"resourceVersion": s.resource_version.to_string()}, "items": items}),
            )
        }
        (Method::POST, "/api/v1/nodes", _) => {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let Some(n) = v["metadata"]["name"].as_str() else {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "metadata.name is required",
                );
            };
            if !create(&mut s, n) {
                return status(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    &format!("nodes \"{n}\" already exists"),
                );
            }
            respond(StatusCode::CREATED, &node_json(n, &s.nodes[n]))
        }
        (Method::GET, _, Some(n)) => match s.nodes.get(&n) {
            Some(node) => respond(StatusCode::OK, &node_json(&n, node)),
            None => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("nodes \"{n}\" not found"),
            ),
        },
        (Method::PATCH, _, Some(n)) if content_type.starts_with("application/apply-patch+yaml") => {
            let Some(manager) = q.get("fieldManager").filter(|m| !m.is_empty()).cloned() else {
                return field_manager_required();
            };
            let force = q.get("force").is_some_and(|v| v == "true");
            let Ok(patch) = serde_norway::from_slice::<Value>(&body) else {
                return not_yaml();
            };
            create(&mut s, &n);
            s.resource_version += 1;
            let rv = s.resource_version;
            let Some(node) = s.nodes.get_mut(&n) else {
                return status(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "node vanished",
                );
            };
            let applied = keys_of(&patch);
            let conflicts: Vec<String> = applied
                .iter()
                .filter(|(f, k, v)| {
                    let owner = node.owners.get(&(*f, k.clone()));
                    let current = match f {
                        Field::Label => node.labels.get(k),
                        Field::Annotation => node.annotations.get(k),
                    };
                    owner.is_some_and(|o| *o != manager) && current != v.as_ref()
                })
                .map(|(f, k, _)| {
                    let owner = node.owners[&(*f, k.clone())].clone();
                    let field = if *f == Field::Label {
                        "labels"
                    } else {
                        "annotations"
                    };
                    format!("conflict with \"{owner}\": .metadata.{field}.{k}")
                })
                .collect();
            if !conflicts.is_empty() && !force {
                return apply_conflict(&conflicts);
            }
            // Keys this manager owned and no longer applies are removed.
            let kept: Vec<(Field, String)> =
                applied.iter().map(|(f, k, _)| (*f, k.clone())).collect();
            let dropped: Vec<(Field, String)> = node
                .owners
                .iter()
                .filter(|(fk, m)| **m == manager && !kept.contains(fk))
                .map(|(fk, _)| fk.clone())
                .collect();
            for (f, k) in dropped {
                node.owners.remove(&(f, k.clone()));
                map_of(node, f).remove(&k);
            }
            for (f, k, v) in applied {
                if let Some(v) = v {
                    map_of(node, f).insert(k.clone(), v);
                    node.owners.insert((f, k), manager.clone());
                }
            }
            node.resource_version = rv;
            let out = node_json(&n, node);
            emit(&mut s, "MODIFIED", &n);
            respond(StatusCode::OK, &out)
        }
        (Method::PATCH, _, Some(n)) if content_type.starts_with("application/merge-patch+json") => {
            let manager = q
                .get("fieldManager")
                .cloned()
                .unwrap_or_else(|| "unknown".into());
            let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
                return status(StatusCode::BAD_REQUEST, "BadRequest", "body is not JSON");
            };
            s.resource_version += 1;
            let rv = s.resource_version;
            let Some(node) = s.nodes.get_mut(&n) else {
                return status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("nodes \"{n}\" not found"),
                );
            };
            for (f, k, v) in keys_of(&patch) {
                match v {
                    Some(v) => {
                        map_of(node, f).insert(k.clone(), v);
                        node.owners.insert((f, k), manager.clone());
                    }
                    None => {
                        map_of(node, f).remove(&k);
                        node.owners.remove(&(f, k));
                    }
                }
            }
            node.resource_version = rv;
            let out = node_json(&n, node);
            emit(&mut s, "MODIFIED", &n);
            respond(StatusCode::OK, &out)
        }
        (Method::PATCH, _, Some(_)) => unsupported_media_type(&content_type),
        _ => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        ),
    }
}

fn lease_json(namespace: &str, name: &str, l: &StoredLease) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": namespace,
                     "resourceVersion": l.resource_version.to_string()},
        "spec": l.spec,
    })
}

/// Requests under `/apis/coordination.k8s.io/v1/namespaces/` (`rest` is
/// what follows): `NS/leases` and `NS/leases/NAME`.
fn lease(
    s: &mut State,
    method: &Method,
    rest: &str,
    q: &BTreeMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> Response<Body> {
    let parts: Vec<&str> = rest.split('/').collect();
    let not_found = |name: &str| {
        status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("leases.coordination.k8s.io \"{name}\" not found"),
        )
    };
    match (method, parts.as_slice()) {
        (&Method::POST, [ns, "leases"]) => {
            let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let Some(name) = v["metadata"]["name"].as_str() else {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "metadata.name is required",
                );
            };
            let key = (ns.to_string(), name.to_string());
            if s.leases.contains_key(&key) {
                return status(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    &format!("leases.coordination.k8s.io \"{name}\" already exists"),
                );
            }
            s.resource_version += 1;
            let l = StoredLease {
                resource_version: s.resource_version,
                spec: v["spec"].as_object().cloned().unwrap_or_default(),
                ..Default::default()
            };
            let out = lease_json(ns, name, &l);
            s.leases.insert(key, l);
            respond(StatusCode::CREATED, &out)
        }
        (&Method::GET, [ns, "leases", name]) => {
            match s.leases.get(&(ns.to_string(), name.to_string())) {
                Some(l) => respond(StatusCode::OK, &lease_json(ns, name, l)),
                None => not_found(name),
            }
        }
        (&Method::PATCH, [ns, "leases", name]) => {
            let apply = content_type.starts_with("application/apply-patch+yaml");
            let merge = content_type.starts_with("application/strategic-merge-patch+json")
                || content_type.starts_with("application/merge-patch+json");
            if !apply && !merge {
                return unsupported_media_type(content_type);
            }
            let manager = q.get("fieldManager").filter(|m| !m.is_empty()).cloned();
            if apply && manager.is_none() {
                return field_manager_required();
            }
            let manager = manager.unwrap_or_else(|| "unknown".into());
            let Ok(patch) = serde_norway::from_slice::<Value>(body) else {
                return not_yaml();
            };
            let fields = patch["spec"].as_object().cloned().unwrap_or_default();
            let key = (ns.to_string(), name.to_string());
            if !s.leases.contains_key(&key) {
                if !apply {
                    return not_found(name);
                }
                // Apply creates, as the real server does.
                s.leases.insert(key.clone(), StoredLease::default());
            }
            s.resource_version += 1;
            let rv = s.resource_version;
            let Some(l) = s.leases.get_mut(&key) else {
                return not_found(name);
            };
            if apply {
                let force = q.get("force").is_some_and(|v| v == "true");
                let conflicts: Vec<String> = fields
                    .iter()
                    .filter(|(k, v)| {
                        l.owners.get(*k).is_some_and(|o| *o != manager)
                            && l.spec.get(*k) != Some(*v)
                    })
                    .map(|(k, _)| format!("conflict with \"{}\": .spec.{k}", l.owners[k]))
                    .collect();
                if !conflicts.is_empty() && !force {
                    return apply_conflict(&conflicts);
                }
                // Fields this manager applied before and omits now go.
                let dropped: Vec<String> = l
                    .owners
                    .iter()
                    .filter(|(k, m)| **m == manager && !fields.contains_key(*k))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in dropped {
                    l.owners.remove(&k);
                    l.spec.remove(&k);
                }
            }
            for (k, v) in fields {
                if v.is_null() {
                    l.spec.remove(&k);
                    l.owners.remove(&k);
                } else {
                    l.spec.insert(k.clone(), v);
                    l.owners.insert(k, manager.clone());
                }
            }
            l.resource_version = rv;
            respond(StatusCode::OK, &lease_json(ns, name, l))
        }
        _ => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        ),
    }
}
