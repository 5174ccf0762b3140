#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Both binaries serve `/metrics`, `/healthz` and `/readyz`; their metrics
//! pass `promtool check metrics` (CI installs Debian's `prometheus`), and
//! the chart's Grafana dashboard queries only metrics they export.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::collections::BTreeSet;

use netaware_e2e::{Killed, binary, free_port, http_get, sigterm, spawn_aggregator};
use serde_json::Value;

/// `GET path` on 127.0.0.1:port: (status, body).
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get("127.0.0.1", port, path)
}

fn wait_for(port: u16, path: &str, status: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some((s, body)) = get(port, path)
            && s == status
        {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} on {port} never answered {status}: {:?}",
            get(port, path)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Run `promtool check metrics` on `text`; skipped outside CI when promtool
/// is not installed.
fn promtool(text: &str, what: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(_) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED promtool for {what}: install Debian's prometheus (CI does)");
            return;
        }
        Err(e) => panic!("promtool is missing in CI: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool rejects the {what} metrics:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn both_binaries_serve_valid_metrics_and_health() {
    let (agent_port, query, metrics_a) = (free_port(), free_port(), free_port());
    let _aggregator = spawn_aggregator(agent_port, query, metrics_a, &[]);
    wait_for(metrics_a, "/readyz", 200);
    assert_eq!(get(metrics_a, "/healthz").unwrap().0, 200);

    let (stamp, bw, metrics_n) = (free_port(), free_port(), free_port());
    let start_agent = |aggregator: u16| {
        Killed(
            Command::new(binary("netaware-agent"))
                .args(["--node-name", "n1", "--node-ip", "127.0.0.1"])
                .args([
                    "--stamp-bind",
                    "127.0.0.1",
                    "--stamp-port",
                    &stamp.to_string(),
                ])
                .args(["--bandwidth-port", &bw.to_string(), "--icmp", "false"])
                .args(["--metrics-listen", &format!("127.0.0.1:{metrics_n}")])
                .args(["--aggregator", &format!("http://127.0.0.1:{aggregator}")])
                .args(["--backoff-max", "1s"])
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    // An agent without an aggregator is alive but not ready.
    {
        let _lonely = start_agent(free_port());
        wait_for(metrics_n, "/healthz", 200);
        let body = wait_for(metrics_n, "/readyz", 503);
        assert!(body.contains("not ready"), "{body}");
    }
    let _agent = start_agent(agent_port);
    wait_for(metrics_n, "/readyz", 200);
    // A second node, so n1 has a peer and per-peer histograms.
    let _peer = Killed(
        Command::new(binary("netaware-agent"))
            .args(["--node-name", "n2", "--node-ip", "127.0.0.1"])
            .args([
                "--stamp-bind",
                "127.0.0.1",
                "--stamp-port",
                &free_port().to_string(),
            ])
            .args(["--bandwidth-port", "0", "--icmp", "false"])
            .args(["--metrics-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--aggregator", &format!("http://127.0.0.1:{agent_port}")])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let n = loop {
        let (_, body) = get(metrics_n, "/metrics").unwrap();
        if body.contains(r#"netaware_probe_rtt_seconds_count{peer="n2",method="udp"}"#) {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no RTT histogram for n2:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };

    let a = wait_for(metrics_a, "/metrics", 200);
    assert!(a.contains("netaware_agents_connected 2"), "{a}");
    assert!(a.lines().any(|l| l == "netaware_leader 1"), "{a}");
    promtool(&a, "aggregator");
    assert!(n.contains("netaware_aggregator_connected 1"), "{n}");
    assert!(n.contains("netaware_probe_rtt_seconds_bucket{"), "{n}");
    assert!(n.contains("netaware_aggregator_sessions_total 1"), "{n}");
    promtool(&n, "agent");
    dashboard_queries_exported(&[&a, &n]);
}

/// The sample names a `/metrics` text can have, from its `# TYPE` lines
/// (a family with no series yet still declares itself).
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                names.insert(format!("{}_total", name.trim_end_matches("_total")));
            }
            "histogram" => {
                for suffix in ["bucket", "count", "sum"] {
                    names.insert(format!("{name}_{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_string());
            }
        }
    }
    names
}

/// Every PromQL text of a Grafana dashboard: panel targets and variable
/// queries.
fn queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "definition", Value::String(q)) => out.push(q.clone()),
                    _ => queries(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| queries(x, out)),
        _ => {}
    }
}

/// The `netaware_*` metric names a query reads.
fn metric_names(query: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = query;
    while let Some(at) = rest.find("netaware_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The chart's Grafana dashboard queries only metrics the binaries export:
/// a renamed metric fails here, not as an empty panel in someone's Grafana.
fn dashboard_queries_exported(metrics: &[&str]) {
    let exported: BTreeSet<String> = metrics.iter().flat_map(|t| exported_names(t)).collect();
    let file = netaware_e2e::repo_root().join("charts/netaware/dashboards/netaware.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap())
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", file.display()));
    let mut all = Vec::new();
    queries(&dashboard, &mut all);
    assert!(all.len() >= 10, "the dashboard's queries: {all:?}");
    let mut read = 0;
    for q in &all {
        let names = metric_names(q);
        assert!(
            !names.is_empty(),
            "a query that reads no netaware metric: {q}"
        );
        for name in names {
            assert!(
                exported.contains(&name),
                "the dashboard queries {name}, which neither binary exports ({q}); exported: {exported:?}"
            );
            read += 1;
        }
    }
    assert!(read >= all.len());
}

#[test]
fn log_format_json_gives_one_json_object_per_line() {
    let (agent, query, metrics) = (free_port(), free_port(), free_port());
    let child = netaware_e2e::aggregator_command(agent, query, metrics)
        .args(["--kubernetes", "off"])
        .args(netaware_e2e::UNAUTHENTICATED)
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(metrics, "/readyz", 200);
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 2, "{text}");
    let mut messages = Vec::new();
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
        messages.push(v["fields"]["message"].as_str().unwrap_or("").to_string());
    }
    assert!(
        messages.iter().any(|m| m == "aggregator listening"),
        "{messages:?}"
    );
}
