#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Helm chart, rendered by Helm's own engine (`charts/check.py`, using
//! helm-python-sdk): lint clean, the schema rejects wrong values, and every
//! rendered object is exactly a valid Kubernetes object: it parses into the
//! k8s-openapi type of its kind and serialises back to the same JSON (a
//! misspelt field would be dropped and show as a difference).

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use netaware_e2e::render_chart as render;
use serde_json::{Value, json};

/// The part of prometheus-operator's `monitoring.coreos.com/v1` monitors we
/// render (k8s-openapi has no types for CRDs); unknown fields are errors.
#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Monitor {
    api_version: String,
    kind: String,
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    spec: MonitorSpec,
}

#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MonitorSpec {
    selector: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoints: Option<Vec<Endpoint>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pod_metrics_endpoints: Option<Vec<Endpoint>>,
}

#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct Endpoint {
    port: String,
    path: String,
    interval: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    relabelings: Option<Vec<Relabeling>>,
}

#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Relabeling {
    source_labels: Vec<String>,
    target_label: String,
}

/// Drop nulls and empty objects, so only meaningful content is compared.
/// (resources, resourceNames, verbs) of an RBAC rule.
type RuleShape = (Vec<String>, Option<Vec<String>>, Vec<String>);

fn normalise(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| (k.clone(), normalise(x)))
                .filter(|(_, x)| !matches!(x, Value::Object(o) if o.is_empty()))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normalise).collect()),
        other => other.clone(),
    }
}

fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(obj: &Value, what: &str) -> T {
    let typed: T = serde_json::from_value(obj.clone())
        .unwrap_or_else(|e| panic!("{what} does not parse as its kind: {e}\n{obj:#}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        normalise(&back),
        normalise(obj),
        "{what} has fields Kubernetes does not know"
    );
    typed
}

#[test]
fn the_chart_renders_valid_objects_for_default_and_all_on_values() {
    let Some(dir) = render("objects") else {
        return;
    };
    for case in ["default", "all-on", "no-icmp", "no-auth", "plain"] {
        let icmp = case != "no-icmp";
        let auth = !matches!(case, "no-auth" | "plain");
        let tls = case != "plain";
        let query_auth = case != "plain";
        let pod_lookup = case == "all-on";
        let text = std::fs::read_to_string(dir.join(format!("{case}.jsonl"))).unwrap();
        let mut kinds = Vec::new();
        for line in text.lines() {
            let doc: Value = serde_json::from_str(line).unwrap();
            let obj = &doc["object"];
            let kind = obj["kind"].as_str().unwrap().to_string();
            let what = format!("{case}: {} ({kind})", doc["template"]);
            match kind.as_str() {
                "DaemonSet" => {
                    let ds: DaemonSet = round_trip(obj, &what);
                    let pod = ds.spec.template.spec.unwrap();
                    assert_eq!(pod.host_network, Some(true), "{what}");
                    assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
                    assert_eq!(pod.automount_service_account_token, Some(false));
                    assert_eq!(pod.service_account_name.as_deref(), Some("netaware-agent"));
                    let c = &pod.containers[0];
                    let env: Vec<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
                    assert!(
                        env.contains(&"NODE_NAME") && env.contains(&"NODE_IP"),
                        "{env:?}"
                    );
                    // The projected token (audience netaware) where the
                    // agent reads it, only with agent authentication.
                    let token = pod
                        .volumes
                        .iter()
                        .flatten()
                        .filter_map(|v| v.projected.as_ref())
                        .flat_map(|p| p.sources.iter().flatten())
                        .find_map(|s| s.service_account_token.as_ref());
                    assert_eq!(token.is_some(), auth, "{what}");
                    assert_eq!(env.contains(&"NETAWARE_TOKEN_FILE"), auth, "{what}");
                    // https with the CA to check it, or plain text.
                    let value = |name: &str| {
                        c.env
                            .iter()
                            .flatten()
                            .find(|e| e.name == name)
                            .and_then(|e| e.value.clone())
                    };
                    let url = value("NETAWARE_AGGREGATOR").unwrap();
                    assert_eq!(url.starts_with("https://"), tls, "{what}: {url}");
                    assert_eq!(
                        value("NETAWARE_CA_FILE").as_deref(),
                        tls.then_some("/etc/netaware/ca/ca.crt"),
                        "{what}"
                    );
                    if tls {
                        // The CA only, never the aggregator's key.
                        let ca = pod
                            .volumes
                            .iter()
                            .flatten()
                            .find_map(|v| v.secret.as_ref())
                            .unwrap();
                        let keys: Vec<&str> =
                            ca.items.iter().flatten().map(|i| i.key.as_str()).collect();
                        assert_eq!(keys, ["ca.crt"], "{what}");
                    }
                    if let Some(t) = token {
                        assert_eq!(t.audience.as_deref(), Some("netaware"));
                        let secs = if case == "all-on" { 7200 } else { 3600 };
                        assert_eq!(t.expiration_seconds, Some(secs));
                        let mount = &c.volume_mounts.as_ref().unwrap()[0];
                        let file = c
                            .env
                            .iter()
                            .flatten()
                            .find(|e| e.name == "NETAWARE_TOKEN_FILE")
                            .and_then(|e| e.value.clone())
                            .unwrap();
                        assert_eq!(file, format!("{}/{}", mount.mount_path, t.path));
                    }
                    let sc = c.security_context.as_ref().unwrap();
                    assert_eq!(sc.read_only_root_filesystem, Some(true));
                    let caps = sc.capabilities.as_ref().unwrap();
                    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
                    // NET_RAW, and escalation so that the binary's file
                    // capability applies, only with ICMP probing.
                    let net_raw = ["NET_RAW".to_string()];
                    assert_eq!(caps.add.as_deref(), icmp.then_some(&net_raw[..]), "{what}");
                    assert_eq!(sc.allow_privilege_escalation, Some(icmp), "{what}");
                    assert_eq!(
                        pod.security_context.as_ref().unwrap().run_as_non_root,
                        Some(true)
                    );
                    let res = c.resources.as_ref().unwrap();
                    assert!(
                        res.limits.as_ref().is_none_or(|l| !l.contains_key("cpu")),
                        "no CPU limit by default: throttling reads as latency"
                    );
                }
                "Deployment" => {
                    let d: Deployment = round_trip(obj, &what);
                    let spec = d.spec;
                    let replicas = if case == "all-on" { 2 } else { 1 };
                    assert_eq!(spec.replicas, Some(replicas));
                    let template = spec.template;
                    let ann = template.metadata.unwrap().annotations.unwrap();
                    assert!(ann.contains_key("checksum/config"), "{what}");
                    let pod = template.spec.unwrap();
                    let env: Vec<(&str, &str)> = pod.containers[0]
                        .env
                        .iter()
                        .flatten()
                        .map(|e| {
                            let field = e.value_from.as_ref().unwrap().field_ref.as_ref().unwrap();
                            (e.name.as_str(), field.field_path.as_str())
                        })
                        .collect();
                    assert_eq!(
                        env,
                        [
                            ("POD_NAME", "metadata.name"),
                            ("POD_NAMESPACE", "metadata.namespace"),
                            ("POD_IP", "status.podIP")
                        ],
                        "{what}"
                    );
                    // Replicas spread over nodes when there are several.
                    assert_eq!(pod.affinity.is_some(), replicas > 1, "{what}");
                    // The serving certificate and key, where the ConfigMap
                    // points, with TLS.
                    let secret = pod.volumes.iter().flatten().find_map(|v| v.secret.as_ref());
                    assert_eq!(secret.is_some(), tls, "{what}");
                    if let Some(secret) = secret {
                        assert_eq!(
                            secret.secret_name.as_deref(),
                            Some("netaware-aggregator-tls")
                        );
                        let mount = &pod.containers[0].volume_mounts.as_ref().unwrap()[0];
                        assert_eq!(mount.mount_path, "/etc/netaware/tls");
                    }
                }
                "Service" => {
                    let s: Service = round_trip(obj, &what);
                    let ports = s.spec.unwrap().ports.unwrap();
                    let names: Vec<&str> = ports.iter().filter_map(|p| p.name.as_deref()).collect();
                    assert_eq!(names, ["agents", "query", "metrics"]);
                }
                "ConfigMap" if obj["metadata"]["name"] == "netaware-dashboard" => {
                    // Grafana's sidecar loads it: its label, and the
                    // dashboard file as it is in the chart.
                    let cm: ConfigMap = round_trip(obj, &what);
                    assert_eq!(case, "all-on", "off by default: {what}");
                    let labels = cm.metadata.labels.unwrap();
                    assert_eq!(labels["grafana_dashboard"], "1", "{what}");
                    assert_eq!(
                        cm.metadata.annotations.unwrap()["grafana_folder"],
                        "Network"
                    );
                    let data = cm.data.unwrap();
                    let file =
                        netaware_e2e::repo_root().join("charts/netaware/dashboards/netaware.json");
                    let want: Value =
                        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
                    let got: Value = serde_json::from_str(&data["netaware.json"])
                        .unwrap_or_else(|e| panic!("{what}: the dashboard is not JSON: {e}"));
                    assert_eq!(got, want, "{what}");
                }
                "ConfigMap" => {
                    let cm: ConfigMap = round_trip(obj, &what);
                    let data = cm.data.unwrap();
                    assert_eq!(data["NETAWARE_TLS"], tls.to_string(), "{what}");
                    let mode = |on: bool| if on { "token" } else { "none" };
                    assert_eq!(data["NETAWARE_AGENT_AUTH"], mode(auth), "{what}");
                    assert_eq!(data["NETAWARE_QUERY_AUTH"], mode(query_auth), "{what}");
                    assert_eq!(data.contains_key("NETAWARE_TLS_CERT"), tls, "{what}");
                }
                "Secret" => {
                    // Generated at install: a CA and a certificate it signed.
                    let s: Secret = round_trip(obj, &what);
                    assert_eq!(s.type_.as_deref(), Some("kubernetes.io/tls"));
                    let data = s.data.unwrap();
                    let keys: Vec<&String> = data.keys().collect();
                    assert_eq!(keys, ["ca.crt", "tls.crt", "tls.key"], "{what}");
                    for (k, v) in &data {
                        let text = String::from_utf8_lossy(&v.0);
                        assert!(text.starts_with("-----BEGIN "), "{what}: {k}");
                    }
                }
                "Certificate" => {
                    // cert-manager's, for the Service's names.
                    assert_eq!(obj["apiVersion"], "cert-manager.io/v1");
                    let spec = &obj["spec"];
                    assert_eq!(spec["secretName"], "netaware-aggregator-tls");
                    assert_eq!(spec["issuerRef"]["kind"], "ClusterIssuer");
                    let names = spec["dnsNames"].as_array().unwrap();
                    assert!(
                        names.contains(&json!("netaware-aggregator.netaware.svc.cluster.example")),
                        "{names:?}"
                    );
                }
                "ServiceAccount" => {
                    let _: ServiceAccount = round_trip(obj, &what);
                }
                "ClusterRole" if obj["metadata"]["name"] == "netaware-viewer" => {
                    // What a CLI user needs: get nodes, create /netaware/place.
                    let r: ClusterRole = round_trip(obj, &what);
                    let rules = r.rules.unwrap();
                    assert_eq!(
                        rules[0].resources.as_deref(),
                        Some(&["nodes".to_string()][..])
                    );
                    assert_eq!(rules[0].verbs, ["get"]);
                    assert_eq!(
                        rules[1].non_resource_urls.as_deref(),
                        Some(&["/netaware/place".to_string()][..])
                    );
                    assert_eq!(rules[1].verbs, ["create"]);
                }
                "ClusterRole" => {
                    // Nodes; token reviews with agent or query
                    // authentication; access reviews with the latter.
                    let r: ClusterRole = round_trip(obj, &what);
                    let got: Vec<(Vec<String>, Vec<String>)> = r
                        .rules
                        .unwrap()
                        .into_iter()
                        .map(|r| (r.resources.unwrap(), r.verbs))
                        .collect();
                    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
                    let mut want = vec![(s(&["nodes"]), s(&["get", "list", "watch", "patch"]))];
                    if auth || query_auth {
                        want.push((s(&["tokenreviews"]), s(&["create"])));
                    }
                    if query_auth {
                        want.push((s(&["subjectaccessreviews"]), s(&["create"])));
                    }
                    assert_eq!(got, want, "{what}");
                }
                "ClusterRoleBinding" => {
                    let _: ClusterRoleBinding = round_trip(obj, &what);
                }
                "Role" if obj["metadata"]["name"] == "netaware-aggregator-pods" => {
                    // Reading pods, only for clusters without node names
                    // in tokens.
                    let r: Role = round_trip(obj, &what);
                    assert!(pod_lookup, "{what}");
                    let rule = &r.rules.unwrap()[0];
                    assert_eq!(rule.resources.as_deref(), Some(&["pods".to_string()][..]));
                    assert_eq!(rule.verbs, ["get"]);
                }
                "Role" => {
                    // Leases only: create (RBAC cannot limit it by name),
                    // get and patch of our one lease.
                    let r: Role = round_trip(obj, &what);
                    assert_eq!(r.metadata.namespace.as_deref(), Some("netaware"));
                    let rules = r.rules.unwrap();
                    let lease = if case == "all-on" {
                        "netaware-leader"
                    } else {
                        "netaware-aggregator"
                    };
                    let got: Vec<RuleShape> = rules
                        .into_iter()
                        .map(|r| (r.resources.unwrap(), r.resource_names, r.verbs))
                        .collect();
                    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
                    assert_eq!(
                        got,
                        [
                            (s(&["leases"]), None, s(&["create"])),
                            (s(&["leases"]), Some(s(&[lease])), s(&["get", "patch"])),
                            // Where followers may forward (S19).
                            (s(&["endpointslices"]), None, s(&["list", "watch"])),
                        ],
                        "{what}"
                    );
                }
                "RoleBinding" => {
                    let b: RoleBinding = round_trip(obj, &what);
                    assert_eq!(b.role_ref.kind, "Role");
                    assert_eq!(b.subjects.unwrap()[0].name, "netaware-aggregator");
                }
                "NetworkPolicy" => {
                    let np: NetworkPolicy = round_trip(obj, &what);
                    let rules = np.spec.unwrap().ingress.unwrap();
                    assert_eq!(
                        rules.len(),
                        3,
                        "agents+metrics from anywhere, query from the other replicas and the list"
                    );
                }
                "PodDisruptionBudget" => {
                    let _: PodDisruptionBudget = round_trip(obj, &what);
                }
                "ServiceMonitor" | "PodMonitor" => {
                    let m: Monitor = round_trip(obj, &what);
                    assert_eq!(m.api_version, "monitoring.coreos.com/v1");
                    let component = if kind == "PodMonitor" {
                        "agent"
                    } else {
                        "aggregator"
                    };
                    let sel = m.spec.selector.match_labels.unwrap();
                    assert_eq!(sel["app.kubernetes.io/component"], component, "{what}");
                    let eps = m.spec.endpoints.or(m.spec.pod_metrics_endpoints).unwrap();
                    assert_eq!(
                        (eps[0].port.as_str(), eps[0].path.as_str()),
                        ("metrics", "/metrics")
                    );
                    assert_eq!(m.metadata.labels.unwrap()["release"], "prometheus");
                    // The agents' series carry their node (the dashboard's
                    // `node`).
                    let node_label = eps[0].relabelings.iter().flatten().any(|r| {
                        r.source_labels == ["__meta_kubernetes_pod_node_name"]
                            && r.target_label == "node"
                    });
                    assert_eq!(node_label, kind == "PodMonitor", "{what}");
                }
                "ValidatingAdmissionPolicy" => {
                    let p: ValidatingAdmissionPolicy = round_trip(obj, &what);
                    let spec = p.spec.unwrap();
                    // Fail closed by default; all-on values choose Ignore.
                    let want = if case == "all-on" { "Ignore" } else { "Fail" };
                    assert_eq!(spec.failure_policy.as_deref(), Some(want), "{what}");
                    assert_eq!(
                        spec.validations.unwrap().len(),
                        3,
                        "labels, annotations, the aggregator's own writes"
                    );
                }
                "ValidatingAdmissionPolicyBinding" => {
                    let b: ValidatingAdmissionPolicyBinding = round_trip(obj, &what);
                    let spec = b.spec;
                    assert_eq!(spec.policy_name, "netaware-node-keys");
                    assert_eq!(spec.validation_actions, vec!["Deny".to_string()]);
                }
                other => panic!("{what}: no check for kind {other}"),
            }
            kinds.push(kind);
        }
        kinds.sort();
        let mut want = vec![
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet",
            "Deployment",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ServiceAccount",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ];
        if case == "all-on" {
            want.extend([
                "ConfigMap",
                "NetworkPolicy",
                "PodDisruptionBudget",
                "PodMonitor",
                "ServiceMonitor",
                "Role",
                "RoleBinding",
                "Certificate",
            ]);
        } else if tls {
            want.push("Secret");
        }
        want.sort();
        assert_eq!(kinds, want, "{case}");
        let notes = std::fs::read_to_string(dir.join(format!("{case}.notes.txt"))).unwrap();
        assert!(notes.contains("kubectl get nodes -L"), "{notes}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The rendered admission policy's CEL, evaluated as the API server does:
/// variables in order (each sees the earlier ones), then every validation;
/// a false one denies with its message.
struct Policy {
    variables: Vec<(String, cel::Program)>,
    validations: Vec<(cel::Program, cel::Program)>,
}

impl Policy {
    fn from_rendered(obj: &Value) -> Self {
        let compile = |e: &Value| {
            cel::Program::compile(e.as_str().unwrap())
                .unwrap_or_else(|err| panic!("CEL does not compile: {e}: {err:?}"))
        };
        let spec = &obj["spec"];
        Self {
            variables: spec["variables"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| {
                    (
                        v["name"].as_str().unwrap().to_string(),
                        compile(&v["expression"]),
                    )
                })
                .collect(),
            validations: spec["validations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| (compile(&v["expression"]), compile(&v["messageExpression"])))
                .collect(),
        }
    }

    /// `Err(message)` when the request is denied.
    fn admit(&self, user: &str, old: Option<&Value>, new: &Value) -> Result<(), String> {
        let operation = if old.is_some() { "UPDATE" } else { "CREATE" };
        let mut ctx = cel::Context::default();
        ctx.add_variable(
            "request",
            serde_json::json!({"operation": operation, "userInfo": {"username": user}}),
        )
        .unwrap();
        ctx.add_variable("object", new).unwrap();
        ctx.add_variable("oldObject", old.cloned().unwrap_or(Value::Null))
            .unwrap();
        let mut vars = serde_json::Map::new();
        for (name, program) in &self.variables {
            let mut scope = ctx.new_inner_scope();
            scope.add_variable("variables", &vars).unwrap();
            let v = program
                .execute(&scope)
                .unwrap_or_else(|e| panic!("variable {name}: {e:?}"));
            vars.insert(name.clone(), v.json().unwrap());
        }
        ctx.add_variable("variables", &vars).unwrap();
        for (check, message) in &self.validations {
            match check.execute(&ctx) {
                Ok(cel::Value::Bool(true)) => {}
                Ok(cel::Value::Bool(false)) => {
                    return Err(match message.execute(&ctx) {
                        Ok(cel::Value::String(s)) => s.to_string(),
                        other => panic!("message: {other:?}"),
                    });
                }
                other => panic!("a validation must give a bool: {other:?}"),
            }
        }
        Ok(())
    }
}

fn node(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Value {
    let map = |kv: &[(&str, &str)]| -> serde_json::Map<String, Value> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect()
    };
    serde_json::json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "dj-1", "labels": map(labels), "annotations": map(annotations)}})
}

#[test]
fn the_admission_policy_lets_only_the_aggregator_touch_our_keys() {
    let Some(dir) = render("policy") else { return };
    let text = std::fs::read_to_string(dir.join("all-on.jsonl")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let rendered = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["object"].clone())
        .find(|o| o["kind"] == "ValidatingAdmissionPolicy")
        .expect("all-on values render the policy");
    let policy = Policy::from_rendered(&rendered);
    let aggregator = "system:serviceaccount:netaware:netaware-aggregator";
    let kubectl = "kubernetes-admin";
    let kubelet = "system:node:dj-1";
    let before = node(
        &[
            ("kubernetes.io/hostname", "dj-1"),
            ("netaware.io/group-l2", "g1"),
        ],
        &[("netaware.io/summary", "{}")],
    );

    // The aggregator may add, change and remove our keys.
    let changed = node(
        &[
            ("kubernetes.io/hostname", "dj-1"),
            ("netaware.io/group-l2", "g2"),
            ("netaware.io/quality", "80"),
        ],
        &[],
    );
    assert_eq!(policy.admit(aggregator, Some(&before), &changed), Ok(()));
    // Anyone may change other keys and leave ours as they are.
    let others = node(
        &[
            ("kubernetes.io/hostname", "dj-1"),
            ("netaware.io/group-l2", "g1"),
            ("team", "ml"),
        ],
        &[("netaware.io/summary", "{}"), ("note", "x")],
    );
    assert_eq!(policy.admit(kubectl, Some(&before), &others), Ok(()));
    assert_eq!(policy.admit(kubelet, Some(&before), &before), Ok(()));
    // A node registering without our keys is fine.
    assert_eq!(
        policy.admit(
            kubelet,
            None,
            &node(&[("kubernetes.io/hostname", "dj-9")], &[])
        ),
        Ok(())
    );

    // Nobody else may set, change or remove them.
    for (what, user, old, new) in [
        (
            "change a label",
            kubectl,
            Some(&before),
            node(
                &[
                    ("kubernetes.io/hostname", "dj-1"),
                    ("netaware.io/group-l2", "fake"),
                ],
                &[("netaware.io/summary", "{}")],
            ),
        ),
        (
            "add a label",
            kubectl,
            Some(&before),
            node(
                &[
                    ("kubernetes.io/hostname", "dj-1"),
                    ("netaware.io/group-l2", "g1"),
                    ("netaware.io/quality", "100"),
                ],
                &[("netaware.io/summary", "{}")],
            ),
        ),
        (
            "remove a label",
            kubectl,
            Some(&before),
            node(
                &[("kubernetes.io/hostname", "dj-1")],
                &[("netaware.io/summary", "{}")],
            ),
        ),
        (
            "register with a label",
            kubelet,
            None,
            node(&[("netaware.io/quality", "100")], &[]),
        ),
    ] {
        let denied = policy.admit(user, old, &new);
        let Err(message) = denied else {
            panic!("{what} by {user} was allowed")
        };
        assert!(
            message.contains(aggregator) && message.contains("labels under netaware.io/"),
            "{what}: {message}"
        );
    }
    let forged = node(
        &[
            ("kubernetes.io/hostname", "dj-1"),
            ("netaware.io/group-l2", "g1"),
        ],
        &[("netaware.io/summary", "{\"nearest\":[]}")],
    );
    let message = policy.admit(kubectl, Some(&before), &forged).unwrap_err();
    assert!(
        message.contains("annotations under netaware.io/"),
        "{message}"
    );

    // The review's S9: labels change through nodes/status too (a kubelet's
    // credentials can), so the policy must match that subresource.
    let rules = &rendered["spec"]["matchConstraints"]["resourceRules"][0]["resources"];
    assert_eq!(rules, &serde_json::json!(["nodes", "nodes/status"]));

    // The aggregator may touch nothing but our keys, and creates no Node.
    let mut tainted = before.clone();
    tainted["spec"] = serde_json::json!({"unschedulable": true});
    for (what, old, new) in [
        (
            "change another label",
            Some(&before),
            node(
                &[
                    ("kubernetes.io/hostname", "evil"),
                    ("netaware.io/group-l2", "g1"),
                ],
                &[("netaware.io/summary", "{}")],
            ),
        ),
        (
            "add another annotation",
            Some(&before),
            node(
                &[
                    ("kubernetes.io/hostname", "dj-1"),
                    ("netaware.io/group-l2", "g1"),
                ],
                &[("netaware.io/summary", "{}"), ("note", "x")],
            ),
        ),
        ("change the spec", Some(&before), tainted),
        ("create a Node", None, before.clone()),
    ] {
        let message = policy
            .admit(aggregator, old, &new)
            .err()
            .unwrap_or_else(|| panic!("the aggregator could {what}"));
        assert!(
            message.contains("only, on Nodes that exist"),
            "{what}: {message}"
        );
    }
}
