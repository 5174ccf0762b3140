#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Both binaries serve `/metrics`, `/healthz` and `/readyz`; their metrics
//! pass `promtool check metrics` (CI installs Debian's `prometheus`).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netaware_e2e::{Killed, binary, free_port, http_get, sigterm, spawn_aggregator};

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
