#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! Label writes only where the network changed: the 12-node lab
//! (`churn-12`: geo-12, and at 100 s dj-2 degrades towards everyone) with
//! 10 s windows. Once the figures have settled, no group or loss label is
//! rewritten while nothing changes; after the event dj-2's labels change
//! and its group peers, one of them the lossy dj-4, leave it out of their
//! figures (docs/labels.md, "A bad peer does not make its neighbours look
//! bad"). Delay figures (RTT p50, p99, jitter) and quality also follow the
//! emulator's own late packets on a 2-core machine: those are printed.

use std::collections::BTreeMap;

use netaware_e2e::{require_root, run_lab};

/// The degraded node and its region (its l2 group before the event).
const FAULT: &str = "dj-2";
const PEERS: [&str; 3] = ["dj-1", "dj-3", "dj-4"];
/// The steady stretch checked before the event (µs).
const STEADY_US: u64 = 30_000_000;

#[test]
#[ignore = "needs root (network namespaces): ./test.sh runs it as root"]
fn labels_change_only_where_the_network_did() {
    require_root();
    let run = run_lab(
        "churn-12.yaml",
        "190s",
        &[
            "--icmp",
            "false",
            "--bandwidth",
            "false",
            "--probe-interval",
            "200ms",
            "--report-interval",
            "10s",
            "--loss-timeout",
            "2s",
        ],
    );
    let r = &run.report;
    let event_us = r["events"][0]["applied_unix_us"].as_u64().unwrap();
    let changes = r["label_changes"].as_array().unwrap();
    let at = |c: &serde_json::Value| c["seen_unix_us"].as_u64().unwrap();
    let name = |c: &serde_json::Value| {
        format!(
            "{} {}: {} -> {}",
            c["node"].as_str().unwrap(),
            c["key"]
                .as_str()
                .unwrap()
                .trim_start_matches("netaware.io/"),
            c["old"].as_str().unwrap_or("-"),
            c["new"].as_str().unwrap_or("-")
        )
    };
    // Labelled well before the event.
    let last_first_write = changes
        .iter()
        .filter(|c| c["old"].is_null())
        .map(at)
        .max()
        .unwrap();
    assert!(
        last_first_write + STEADY_US < event_us,
        "labels came too late to see a steady state before the event"
    );

    // Steady: in the 30 s before the event no group or loss label is
    // rewritten. The delay figures (RTT p50 and p99, jitter, and quality
    // through them) follow the emulator's own late packets on this 2-core
    // machine (a window's p99 of 50 probes is its slowest one; under CI's
    // load p99s read 20 ms on 0.2 ms links; issue 15 makes the emulator
    // keep up): listed, not failed.
    let tail = [
        "netaware.io/rtt-p50-us",
        "netaware.io/rtt-p99-us",
        "netaware.io/jitter-us",
        "netaware.io/quality",
    ];
    let steady: Vec<&serde_json::Value> = changes
        .iter()
        .filter(|c| at(c) > event_us - STEADY_US && at(c) < event_us)
        .collect();
    let (tail_writes, steady_writes): (Vec<&serde_json::Value>, Vec<_>) = steady
        .into_iter()
        .partition(|c| tail.iter().any(|k| c["key"] == *k));
    eprintln!(
        "steady tail rewrites (emulator late packets: {}): {:?}",
        r["emulator"]["over_1ms"],
        tail_writes.iter().map(|c| name(c)).collect::<Vec<_>>()
    );
    assert!(
        steady_writes.is_empty(),
        "steady-state rewrites: {:?}",
        steady_writes.iter().map(|c| name(c)).collect::<Vec<_>>()
    );

    // After the event: dj-2's labels move (quality within 40 s: a window,
    // and a change confirmed by two recomputations) ...
    let after: Vec<&serde_json::Value> = changes.iter().filter(|c| at(c) >= event_us).collect();
    assert!(
        after.iter().any(|c| c["node"] == FAULT
            && c["key"] == "netaware.io/quality"
            && at(c) < event_us + 40_000_000),
        "dj-2's quality did not follow: {:?}",
        after.iter().map(|c| name(c)).collect::<Vec<_>>()
    );
    // ... its group peers (one of them the lossy dj-4) keep their loss and
    // groups (before peers clearly worse were left out, dj-1's loss became
    // half of dj-4's), and nobody else's group changes. Their delay figures
    // are as exposed to the emulator's late packets as everyone's above
    // (more so: left with one healthy peer, dj-1 and dj-3 read a single
    // pair), so they are listed like the steady ones.
    let (peer_tail, others): (Vec<&serde_json::Value>, Vec<_>) = after
        .iter()
        .copied()
        .filter(|c| {
            let node = c["node"].as_str().unwrap();
            PEERS.contains(&node)
                || (node != FAULT && c["key"].as_str().unwrap().contains("group-l"))
        })
        .partition(|c| {
            PEERS.contains(&c["node"].as_str().unwrap()) && tail.iter().any(|k| c["key"] == *k)
        });
    eprintln!(
        "group peers' tail rewrites after the event: {:?}",
        peer_tail.iter().map(|c| name(c)).collect::<Vec<_>>()
    );
    let others: Vec<String> = others.iter().map(|c| name(c)).collect();
    assert!(others.is_empty(), "relabelled besides dj-2: {others:?}");

    // The final labels agree: dj-2 left Daejeon's l2 group, nobody else moved.
    let labels: BTreeMap<String, BTreeMap<String, String>> =
        serde_json::from_value(r["labels"].clone()).unwrap();
    let l2 = |n: &str| labels[n]["netaware.io/group-l2"].clone();
    assert_ne!(l2(FAULT), l2("dj-1"));
    assert!(PEERS.iter().all(|p| l2(p) == l2("dj-1")));
}
