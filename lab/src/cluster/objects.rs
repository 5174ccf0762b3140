//! What the lab and the tests put into a real control plane (Ready Nodes
//! for a topology, ServiceAccount tokens, any manifests) and where the
//! scheduler put the pods.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// What every Node offers the scheduler: enough for a few training pods
/// each (the examples ask for 4 CPUs and 16 GiB).
const NODE_CPU: &str = "16";
const NODE_MEMORY: &str = "64Gi";
const NODE_PODS: &str = "110";

fn kube_error(what: &str) -> impl Fn(kube::Error) -> Error + '_ {
    move |e| Error::Run(format!("{what}: {e}"))
}

/// A Node to create.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    /// Its `InternalIP` in `status.addresses`.
    pub internal_ip: Option<IpAddr>,
}

/// Create `nodes` as a kubelet would leave them: labelled with their
/// hostname, Ready, with allocatable resources, and without the not-ready
/// taint admission puts on new Nodes (nothing else would remove it here).
/// A Node that exists already is made Ready the same way.
pub async fn add_nodes(client: &kube::Client, nodes: &[NodeSpec]) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    for n in nodes {
        let node: Node = serde_json::from_value(json!({
            "metadata": {
                "name": n.name,
                "labels": {"kubernetes.io/hostname": n.name, "kubernetes.io/os": "linux"},
            },
        }))?;
        match api.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(kube_error(&format!("creating Node {}", n.name))(e)),
        }
        let now = k8s_openapi::jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let resources = json!({"cpu": NODE_CPU, "memory": NODE_MEMORY, "pods": NODE_PODS});
        let addresses: Vec<Value> = [json!({"type": "Hostname", "address": n.name})]
            .into_iter()
            .chain(
                n.internal_ip
                    .map(|ip| json!({"type": "InternalIP", "address": ip.to_string()})),
            )
            .collect();
        let status = json!({"status": {
            "capacity": resources,
            "allocatable": resources,
            "addresses": addresses,
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "netaware-lab: no kubelet; made Ready for the scheduler",
                "lastHeartbeatTime": now, "lastTransitionTime": now,
            }],
        }});
        api.patch_status(&n.name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .map_err(kube_error(&format!("making Node {} Ready", n.name)))?;
        api.patch(
            &n.name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"taints": null}})),
        )
        .await
        .map_err(kube_error(&format!("removing Node {}'s taints", n.name)))?;
    }
    Ok(())
}

/// A token of ServiceAccount `namespace/name` for `audiences`, valid for
/// `expiry` (TokenRequest; the API server enforces a 10-minute minimum).
/// Bound to `pod` (its name), when given, as the kubelet binds a pod's
/// projected token: the token names the pod (and its node, once bound), and
/// dies with it.
pub async fn service_account_token(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    audiences: &[&str],
    expiry: Duration,
    pod: Option<&str>,
) -> Result<String> {
    let what = format!("a token for ServiceAccount {namespace}/{name}");
    let bound = match pod {
        None => Value::Null,
        Some(pod) => {
            let p = Api::<Pod>::namespaced(client.clone(), namespace)
                .get(pod)
                .await
                .map_err(kube_error(&what))?;
            json!({"kind": "Pod", "apiVersion": "v1", "name": pod, "uid": p.metadata.uid})
        }
    };
    let request: TokenRequest = serde_json::from_value(json!({"spec": {
        "audiences": audiences,
        "expirationSeconds": expiry.as_secs(),
        "boundObjectRef": bound,
    }}))?;
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let answer = api
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .map_err(kube_error(&what))?;
    answer
        .status
        .and_then(|s| s.token)
        .ok_or_else(|| Error::Run(format!("{what}: no token in the answer")))
}

/// Every object in a YAML stream (`---`-separated documents; `kind: List`
/// unpacked); empty documents are skipped.
pub fn parse_manifests(text: &str, what: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let v = Value::deserialize(doc).map_err(|e| {
            Error::Run(format!("{what}: document {} is not valid YAML: {e}", i + 1))
        })?;
        match v {
            Value::Null => {}
            Value::Object(ref m) if m.get("kind").and_then(Value::as_str) == Some("List") => {
                out.extend(
                    m.get("items")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .cloned(),
                );
            }
            Value::Object(_) => out.push(v),
            _ => {
                return Err(Error::Run(format!(
                    "{what}: document {} is not a Kubernetes object (a mapping with apiVersion, kind and metadata)",
                    i + 1
                )));
            }
        }
    }
    Ok(out)
}

/// `Kind/namespace/name` (or `Kind/name`) of an object, for messages.
fn describe(obj: &Value) -> String {
    let s = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or("?");
    match obj.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) => format!("{}/{ns}/{}", s("/kind"), s("/metadata/name")),
        None => format!("{}/{}", s("/kind"), s("/metadata/name")),
    }
}

/// Server-side apply every object, in order, as field manager `manager`
/// (forcing: the file is the truth). Namespaced objects without a namespace
/// go to `namespace`, as `kubectl -n` and `helm -n` put them. Returns how
/// each was applied, `Kind/namespace/name`.
pub async fn apply(
    client: &kube::Client,
    objects: &[Value],
    manager: &str,
    namespace: &str,
) -> Result<Vec<String>> {
    let mut applied = Vec::new();
    for obj in objects {
        let what = describe(obj);
        let (Some(api_version), Some(kind), Some(name)) = (
            obj.get("apiVersion").and_then(Value::as_str),
            obj.get("kind").and_then(Value::as_str),
            obj.pointer("/metadata/name").and_then(Value::as_str),
        ) else {
            return Err(Error::Run(format!(
                "{what}: every object needs apiVersion, kind and metadata.name"
            )));
        };
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (resource, caps) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .map_err(|e| {
                Error::Run(format!(
                    "{what}: kind {kind} of {api_version} is not served by this API server ({e})"
                ))
            })?;
        let (api, what): (Api<DynamicObject>, String) = match caps.scope {
            Scope::Namespaced => {
                let ns = obj
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or(namespace);
                (
                    Api::namespaced_with(client.clone(), ns, &resource),
                    format!("{kind}/{ns}/{name}"),
                )
            }
            Scope::Cluster => (
                Api::all_with(client.clone(), &resource),
                format!("{kind}/{name}"),
            ),
        };
        api.patch(
            name,
            &PatchParams::apply(manager).force(),
            &Patch::Apply(obj),
        )
        .await
        .map_err(kube_error(&format!("applying {what}")))?;
        applied.push(what);
    }
    Ok(applied)
}

/// How many pods the applied objects should make: a Job's parallelism, a
/// workload's replicas, a Pod itself (1 when unset, as Kubernetes defaults
/// them); other kinds none.
pub fn expected_pods(objects: &[Value]) -> usize {
    objects
        .iter()
        .map(|o| {
            let count = |p: &str| {
                o.pointer(p)
                    .and_then(Value::as_u64)
                    .map_or(1, |n| usize::try_from(n).unwrap_or(usize::MAX))
            };
            match o.get("kind").and_then(Value::as_str) {
                Some("Pod") => 1,
                Some("Job") => count("/spec/parallelism"),
                Some("Deployment" | "ReplicaSet" | "StatefulSet") => count("/spec/replicas"),
                _ => 0,
            }
        })
        .sum()
}

/// Where one pod went.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodPlacement {
    pub namespace: String,
    pub name: String,
    /// The Node it is bound to; empty while it is not.
    pub node: String,
    /// `Kind/name` of its controller (e.g. `Job/train`); empty for a bare pod.
    pub owner: String,
    /// Why the scheduler did not bind it, when it did not.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

fn placement(p: &Pod) -> PodPlacement {
    let meta = &p.metadata;
    let owner = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| format!("{}/{}", o.kind, o.name))
        .unwrap_or_default();
    let node = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    let reason = if node.is_empty() {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
            .and_then(|c| c.message.clone().or_else(|| c.reason.clone()))
            .unwrap_or_else(|| "not scheduled yet".into())
    } else {
        String::new()
    };
    PodPlacement {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        node,
        owner,
        reason,
    }
}

/// Every pod outside `kube-system`, sorted by namespace and name.
pub async fn pods(client: &kube::Client) -> Result<Vec<PodPlacement>> {
    let api: Api<Pod> = Api::all(client.clone());
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(kube_error("listing pods"))?;
    let mut out: Vec<PodPlacement> = list
        .items
        .iter()
        .map(placement)
        .filter(|p| p.namespace != "kube-system")
        .collect();
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(out)
}

/// Wait until at least `expected` pods exist and all are bound, or
/// `timeout` passes; then where every pod went (unbound ones with the
/// scheduler's reason).
pub async fn wait_bound(
    client: &kube::Client,
    expected: usize,
    timeout: Duration,
) -> Result<Vec<PodPlacement>> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = pods(client).await?;
        let bound = now.iter().filter(|p| !p.node.is_empty()).count();
        if (now.len() >= expected && bound == now.len()) || Instant::now() >= deadline {
            return Ok(now);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests;
