#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! The `netaware` binary against a real aggregator query service on loopback.

use std::process::Command as Process;

mod common;
use common::run;

use netaware_aggregator::state::{self, StateConfig};

const BIN: &str = env!("CARGO_BIN_EXE_netaware");

/// Start an aggregator holding one measured link a -> b; returns its URL.
async fn aggregator_with_one_link() -> String {
    let state = state::spawn(StateConfig::default());
    let mut sessions = Vec::new();
    for node in ["a", "b"] {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        std::mem::forget(rx); // keep the session's outbound queue open
        sessions.push(state.connect(common::hello(node), tx).await.unwrap());
    }
    // a's window once b is known (windows towards unknown nodes are refused).
    let w = common::window("b", 5_100_000, 5_100_000, 50, 49);
    common::report(&state, sessions[0], vec![w]).await;
    state.recompute().await.unwrap();
    common::serve(state).await
}

#[tokio::test(flavor = "multi_thread")]
async fn matrix_prints_an_aligned_table_by_default() {
    let url = aggregator_with_one_link().await;
    let out = run(&["matrix", "--aggregator", &url]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let a_row = text
        .lines()
        .find(|l| l.starts_with("a "))
        .expect("row for a");
    assert!(a_row.contains("5.100ms / 2.0%"), "{text}");
    assert!(text.contains("cells: rtt-p50 / loss"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn matrix_json_is_machine_readable_and_metric_is_selectable() {
    let url = aggregator_with_one_link().await;
    let out = run(&["matrix", "--aggregator", &url, "-o", "json"]).await;
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["links"][0]["src"], "a");
    assert_eq!(v["links"][0]["latest"]["received"], 49);

    let out = run(&["matrix", "--aggregator", &url, "--metric", "samples"]).await;
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("a ") && l.trim_end().ends_with(" 49")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_aggregator_is_a_clear_error_with_exit_69() {
    // Bind then drop a listener: nothing listens on that port now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = run(&["matrix", "--aggregator", &url]).await;
    assert_eq!(out.status.code(), Some(69));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("cannot reach the aggregator"), "{err}");
    assert!(err.contains(&url), "{err}");
    assert!(err.contains("NETAWARE_QUERY"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_flag_value_exits_64() {
    let out = run(&["matrix", "--metric", "bogus"]).await;
    assert_eq!(out.status.code(), Some(64));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_stdout_ends_quietly_without_a_panic() {
    let url = aggregator_with_one_link().await;
    let out = tokio::task::spawn_blocking(move || {
        let mut child = Process::new(BIN)
            .args(["matrix", "--aggregator", &url])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Like `netaware matrix | head -0`: the reader goes away at once.
        drop(child.stdout.take());
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.status.success(), "{:?} {err}", out.status);
}

#[tokio::test(flavor = "multi_thread")]
async fn groups_and_nodes_show_what_the_labels_will_carry() {
    let url = aggregator_with_one_link().await;
    // a -> b at 5.1 ms: apart at l1 (0.5 ms) and l2 (2 ms), together at l3 (10 ms).
    let out = run(&["groups", "--aggregator", &url]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let l3: Vec<&str> = text.lines().filter(|l| l.starts_with("l3")).collect();
    assert_eq!(l3.len(), 1, "{text}");
    assert!(l3[0].contains(" a,b ") && l3[0].ends_with("5100"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("l2")).count(),
        2,
        "{text}"
    );

    let out = run(&["nodes", "--aggregator", &url, "-o", "json"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let a = v
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "a")
        .unwrap();
    assert_eq!(a["rtt_p50_us"], 5100.0);
    assert_eq!(a["loss_ppm"], 20_000.0);
    let q = a["quality"].as_u64().unwrap();
    assert!(q > 0 && q < 100, "{q}");
    assert_eq!(a["fresh"], true);
}
