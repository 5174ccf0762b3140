#!/usr/bin/env python3
"""Render and lint the netaware chart with Helm's own engine (helm-python-sdk,
which bundles Helm v4's library), for the default values,
ci/all-on-values.yaml and single changes (no ICMP, no agent
authentication, no TLS), and write every rendered object as JSON lines to
OUT_DIR/<case>.jsonl for the Rust test that parses them into k8s-openapi
types. Also checks that the schema rejects wrong values.

Usage: check.py OUT_DIR        (pip install helm-python-sdk==0.2.2)
Exit 0: all good; 1: a check failed (the message says which); 3: the SDK is
not installed.
"""
import json
import os
import sys

try:
    import helm_python as helm
except ImportError:
    print("helm-python-sdk is not installed: pip install helm-python-sdk==0.2.2", file=sys.stderr)
    sys.exit(3)

HERE = os.path.dirname(os.path.abspath(__file__))
CHART = os.path.join(HERE, "netaware")


def fail(msg):
    print(f"chart check failed: {msg}", file=sys.stderr)
    sys.exit(1)


def docs(manifests):
    """Every object in the rendered manifests, NOTES.txt excluded."""
    out = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in text.split("\n---"):
            obj = helm.values_from_yaml(doc) if doc.strip() else {}
            if obj:
                out.append({"template": path, "object": obj})
    return out


def main():
    if len(sys.argv) != 2:
        fail("usage: check.py OUT_DIR")
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    chart = helm.Chart.load(CHART)
    with open(os.path.join(CHART, "ci", "all-on-values.yaml")) as f:
        all_on = helm.values_from_yaml(f.read())
    cases = [
        ("default", {}),
        ("all-on", all_on),
        ("no-icmp", {"agent": {"icmp": False}}),
        ("no-auth", {"security": {"agentAuth": "none"}}),
        ("plain", {"security": {"agentAuth": "none", "queryAuth": "none", "tls": {"enabled": False}}}),
    ]
    for case, values in cases:
        report = helm.lint(CHART, values, strict=True, namespace="netaware")
        problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
        if problems or report.get("errors"):
            fail(f"lint ({case}): {problems} {report.get('errors')}")
        chart.validate_schema(values)
        manifests = chart.render(values, name="netaware", namespace="netaware", is_install=True)
        objects = docs(manifests)
        with open(os.path.join(out_dir, f"{case}.jsonl"), "w") as f:
            for o in objects:
                f.write(json.dumps(o) + "\n")
        with open(os.path.join(out_dir, f"{case}.notes.txt"), "w") as f:
            f.write(manifests.get("netaware/templates/NOTES.txt", ""))
        print(f"{case}: {len(objects)} objects rendered, lint clean")
    # Values that would send tokens in clear text must not render.
    for bad in [
        {"security": {"tls": {"enabled": False}}},
        {"security": {"agentAuth": "none", "tls": {"enabled": False}}},
    ]:
        try:
            chart.render(bad, name="netaware", namespace="netaware", is_install=True)
        except helm.HelmError as e:
            if "clear text" not in str(e):
                fail(f"{json.dumps(bad)} failed for another reason: {e}")
            print(f"refused as it should be: {json.dumps(bad)}")
            continue
        fail(f"the chart rendered {json.dumps(bad)}")
    # Wrong types and unknown keys must be rejected by values.schema.json.
    for bad in [
        {"agent": {"icmp": "yes"}},
        {"agent": {"stampPort": "8620"}},
        {"aggregator": {"replicas": 2, "leaderElection": {"enabled": False}}},
        {"aggregator": {"leaderElection": {"duration": 15}}},
        {"aggregator": {"leaderElection": {"grace": "500ms"}}},
        {"aggregator": {"replicas": 0}},
        {"aggregator": {"config": {"labelPrefix": "Bad Prefix"}}},
        {"agnet": {}},
        {"agent": {"resources": {"limit": {}}}},
        {"security": {"agentAuth": "off"}},
        {"security": {"agentTokenExpirationSeconds": 60}},
        {"security": {"podLookup": "yes"}},
        {"security": {"queryAuth": "rbac"}},
    ]:
        try:
            chart.validate_schema(bad)
        except helm.HelmError as e:
            print(f"rejected as it should be: {json.dumps(bad)}: {str(e).splitlines()[0][:120]}")
            continue
        fail(f"the schema accepted {json.dumps(bad)}")


if __name__ == "__main__":
    main()
