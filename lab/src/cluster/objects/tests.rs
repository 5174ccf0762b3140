#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn manifests_are_split_into_objects_and_lists_unpacked() {
    let text = "\
apiVersion: v1
kind: Pod
metadata: {name: a}
---
# only a comment
---
apiVersion: v1
kind: List
items:
  - {apiVersion: v1, kind: Pod, metadata: {name: b}}
  - {apiVersion: batch/v1, kind: Job, metadata: {name: c}, spec: {parallelism: 3}}
";
    let objs = parse_manifests(text, "f.yaml").unwrap();
    let names: Vec<&str> = objs
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(expected_pods(&objs), 1 + 1 + 3);
}

#[test]
fn a_document_that_is_not_an_object_is_named_in_the_error() {
    let err = parse_manifests("kind: Pod\n---\n- a\n- b\n", "f.yaml").unwrap_err();
    assert!(err.to_string().contains("f.yaml: document 2"), "{err}");
    let err = parse_manifests("a: [\n", "g.yaml").unwrap_err();
    assert!(
        err.to_string()
            .contains("g.yaml: document 1 is not valid YAML"),
        "{err}"
    );
}

#[test]
fn workloads_count_their_replicas_with_kubernetes_defaults() {
    let objs: Vec<Value> = vec![
        json!({"kind": "Job", "spec": {}}),
        json!({"kind": "Deployment", "spec": {"replicas": 2}}),
        json!({"kind": "StatefulSet"}),
        json!({"kind": "ConfigMap"}),
    ];
    assert_eq!(expected_pods(&objs), 1 + 2 + 1);
}

#[test]
fn a_placement_names_the_controller_and_why_a_pod_is_unbound() {
    let bound: Pod = serde_json::from_value(json!({
        "metadata": {"name": "train-0-x", "namespace": "default", "ownerReferences": [
            {"apiVersion": "batch/v1", "kind": "Job", "name": "train", "uid": "u", "controller": true}]},
        "spec": {"nodeName": "se-2", "containers": []},
    }))
    .unwrap();
    assert_eq!(
        placement(&bound),
        PodPlacement {
            namespace: "default".into(),
            name: "train-0-x".into(),
            node: "se-2".into(),
            owner: "Job/train".into(),
            reason: String::new(),
        }
    );
    let pending: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "ml"},
        "spec": {"containers": []},
        "status": {"conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/12 nodes are available"}]},
    }))
    .unwrap();
    let p = placement(&pending);
    assert_eq!((p.node.as_str(), p.owner.as_str()), ("", ""));
    assert_eq!(p.reason, "0/12 nodes are available");
}
