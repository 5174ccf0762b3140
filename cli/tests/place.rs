#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! `netaware place` against a real aggregator whose agents are played by
//! this test: they report RTT windows and answer the bandwidth tests the
//! aggregator schedules, through the same commands the gRPC handlers send.

use std::time::Duration;

mod common;
use common::run;

use netaware_aggregator::state::{self, Command, StateConfig, StateHandle};
use netaware_proto::ProbeMethod;
use netaware_proto::v1::aggregator_message::Msg as AggMsg;
use netaware_proto::v1::{BandwidthResult, BandwidthServed, GetMatrixRequest, Hello, LinkWindow};

const NODES: [&str; 6] = ["east-1", "east-2", "east-3", "west-1", "west-2", "west-3"];

fn region(n: &str) -> &str {
    n.split('-').next().unwrap()
}

/// RTT (µs): 300 inside a region, 8 ms across; east-3 is a little closer
/// to its neighbours (290 µs) but its links carry only 100 Mbit/s.
fn rtt_us(a: &str, b: &str) -> u64 {
    match (region(a) == region(b), a == "east-3" || b == "east-3") {
        (true, true) => 290,
        (true, false) => 300,
        (false, _) => 8_000,
    }
}

fn mbps(a: &str, b: &str) -> f64 {
    if a == "east-3" || b == "east-3" {
        100.0
    } else if region(a) == region(b) {
        1_000.0
    } else {
        200.0
    }
}

/// An aggregator with six measured nodes; returns its URL once every pair's
/// bandwidth has been measured.
async fn cluster() -> String {
    let state = state::spawn(StateConfig::default());
    let mut sessions = Vec::new();
    for node in NODES {
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let hello = Hello {
            bandwidth_port: 8621,
            ..common::hello(node)
        };
        let session = state.connect(hello, tx).await.unwrap();
        sessions.push((node, session));
        // Play this node's agent for bandwidth tests.
        let st: StateHandle = state.clone();
        tokio::spawn(async move {
            while let Some(Ok(m)) = rx.recv().await {
                let cmd = match m.msg {
                    Some(AggMsg::BandwidthTest(t)) => Command::BandwidthResult {
                        session,
                        result: BandwidthResult {
                            token: t.token,
                            mbps: mbps(node, &t.peer),
                            stream_mbps: vec![mbps(node, &t.peer)],
                            peer: t.peer,
                            ..Default::default()
                        },
                    },
                    Some(AggMsg::BandwidthGrant(g)) => Command::BandwidthServed {
                        session,
                        served: BandwidthServed {
                            token: g.token,
                            peer: g.peer,
                            bytes_sent: 1 << 20,
                        },
                    },
                    _ => continue,
                };
                if st.send(cmd).await.is_err() {
                    break;
                }
            }
        });
    }
    // Windows only once every node is known: the aggregator refuses
    // windows towards nodes it has never seen.
    for (node, session) in sessions {
        let windows: Vec<LinkWindow> = NODES
            .iter()
            .filter(|p| **p != node)
            .map(|p| common::window(p, rtt_us(node, p) * 1000, rtt_us(node, p) * 1100, 100, 100))
            .collect();
        common::report(&state, session, windows).await;
    }
    // Every pair measured (the scheduler starts tests every second).
    for _ in 0..200 {
        let m = state.matrix(ProbeMethod::Unspecified).await.unwrap();
        if m.bandwidth.len() == 15 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    state.recompute().await.unwrap();
    let url = common::serve(state).await;
    let mut client = netaware_cli::connect(&url.as_str().into()).await.unwrap();
    let m = client
        .get_matrix(GetMatrixRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        m.bandwidth.len(),
        15,
        "every pair tested once: {:?}",
        m.bandwidth
    );
    url
}

fn stdout(o: &std::process::Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn place_picks_the_fast_nodes_and_prints_json_table_and_yaml() {
    let url = cluster().await;
    let out = run(&[
        "place",
        "-k",
        "2",
        "--bytes",
        "8MiB",
        "--explain",
        "-o",
        "json",
        "--aggregator",
        &url,
    ])
    .await;
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let nodes: Vec<&str> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    // A latency-only rule would take east-3 (290 µs); its 100 Mbit/s loses.
    assert_eq!(nodes.len(), 2);
    assert_eq!(region(nodes[0]), region(nodes[1]));
    assert!(!nodes.contains(&"east-3"), "{v}");
    assert_eq!(v["max_rtt_us"], 300.0);
    assert_eq!(v["bottleneck_bandwidth_mbps"], 1_000.0);
    assert_eq!(v["allreduce_bytes"], 8 << 20);
    let predicted = v["predicted_allreduce_ms"].as_f64().unwrap();
    // 2 steps of (1.5 RTTs of 300 µs, a rendezvous, + 4 MiB at 1 Gbit/s).
    let expect = 2.0 * (0.45 + (4u64 << 20) as f64 * 8.0 / 1e9 * 1e3);
    assert!((predicted - expect).abs() < 1e-6, "{predicted} vs {expect}");
    let parts = &v["prediction"];
    assert_eq!(parts["total_ms"].as_f64(), Some(predicted), "{v}");
    assert!(
        (parts["latency_ms"].as_f64().unwrap() - 0.9).abs() < 1e-6,
        "{v}"
    );
    assert_eq!(parts["loss_ms"], 0.0);
    // --explain names the best other set and why it lost.
    let r = &v["runner_up"];
    assert_eq!(r["nodes"].as_array().unwrap().len(), 2, "{v}");
    assert!(!r["why"].as_str().unwrap().is_empty(), "{v}");
    assert_eq!(v["exclusions"].as_array().unwrap().len(), 4);

    // The matrix shows the tested bandwidth per directed pair: each pair was
    // tested once, in one direction; the other direction shows '-'.
    let j: serde_json::Value = serde_json::from_str(&stdout(
        &run(&["matrix", "-o", "json", "--aggregator", &url]).await,
    ))
    .unwrap();
    let tests = j["bandwidth"].as_array().unwrap();
    assert_eq!(tests.len(), 15);
    let m = stdout(&run(&["matrix", "--metric", "bandwidth", "--aggregator", &url]).await);
    let rows: Vec<Vec<&str>> = m
        .lines()
        .take(NODES.len() + 1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let cell = |src: &str, dst: &str| {
        // The header is "src \\ dst" (three words) then the node names.
        let col = rows[0].iter().position(|h| *h == dst).unwrap() - 3;
        let row = rows.iter().find(|r| r[0] == src).unwrap();
        row[col + 1].to_string()
    };
    for t in tests {
        let (s, r) = (
            t["sender"].as_str().unwrap(),
            t["receiver"].as_str().unwrap(),
        );
        let want = format!("{:.0}Mb/s", t["mbps"].as_f64().unwrap());
        assert_eq!(cell(s, r), want, "{s} -> {r} in\n{m}");
        assert_eq!(cell(r, s), "-", "{r} -> {s} was not tested:\n{m}");
    }

    let table = stdout(&run(&["place", "-k", "3", "--aggregator", &url]).await);
    assert!(table.contains("largest RTT"), "{table}");
    assert!(
        table.contains("1000 Mbit/s (3 of 3 pairs measured)"),
        "{table}"
    );
    assert!(table.contains("west-1 west-2 west-3"), "{table}");

    let yaml = stdout(&run(&["place", "-k", "3", "-o", "yaml", "--aggregator", &url]).await);
    assert!(yaml.starts_with("# netaware place -k 3"), "{yaml}");
    let doc: serde_json::Value = serde_norway::from_str(&yaml).unwrap();
    let term = &doc["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        [0]["matchExpressions"][0];
    assert_eq!(term["key"], "kubernetes.io/hostname");
    assert_eq!(term["operator"], "In");
    assert_eq!(
        term["values"],
        serde_json::json!(["west-1", "west-2", "west-3"])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn impossible_placements_fail_with_the_reason() {
    let url = cluster().await;
    let out = run(&["place", "-k", "7", "--aggregator", &url]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("k = 7 but only 6 of 6 known nodes are eligible"),
        "{err}"
    );

    let out = run(&[
        "place",
        "-k",
        "2",
        "--include",
        "north-1",
        "--aggregator",
        &url,
    ])
    .await;
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("unknown node 'north-1'"), "{err}");

    let out = run(&[
        "place",
        "-k",
        "4",
        "--min-bandwidth",
        "500",
        "--aggregator",
        &url,
    ])
    .await;
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("at least 500 Mbit/s"), "{err}");

    // A selector needs Node labels, which this aggregator has none of.
    let out = run(&["place", "-k", "2", "-l", "zone=a", "--aggregator", &url]).await;
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("no Kubernetes connection"), "{err}");
    let out = run(&["place", "-k", "2", "-l", "zone in (a", "--aggregator", &url]).await;
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("'(' without ')'"), "{err}");

    let out = run(&["place", "-k", "0", "--aggregator", &url]).await;
    assert_eq!(out.status.code(), Some(64), "rejected before asking");
}

fn level(name: &str, size: u32, bytes: u64) -> netaware_proto::v1::ShapeLevel {
    netaware_proto::v1::ShapeLevel {
        name: name.into(),
        size,
        bytes,
    }
}

/// Three-node tensor-parallel groups, two of them: each group is one
/// region (the heavy 64 MiB stays on 1 Gbit/s links), the light 8 MiB
/// data-parallel rings cross.
#[tokio::test(flavor = "multi_thread")]
async fn a_shaped_job_gets_ranks_a_hostfile_and_the_env_to_find_them() {
    let url = cluster().await;
    let shape = ["--shape", "tp=3:64MiB,dp=2:8MiB", "--aggregator", &url];
    let json_out = run(&[&["place", "--explain", "-o", "json"][..], &shape[..]].concat()).await;
    let v: serde_json::Value = serde_json::from_str(&stdout(&json_out)).unwrap();
    let ranks: Vec<&str> = v["ranks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(ranks.len(), 6, "{v}");
    for group in ranks.chunks(3) {
        assert!(group.iter().all(|n| region(n) == region(group[0])), "{v}");
    }
    assert_ne!(region(ranks[0]), region(ranks[3]), "{v}");
    let levels = v["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 2);
    assert_eq!(
        (&levels[0]["name"], &levels[0]["bytes"]),
        (&"tp".into(), &(64u64 << 20).into())
    );
    let sum: f64 = levels
        .iter()
        .map(|l| l["prediction"]["total_ms"].as_f64().unwrap())
        .sum();
    assert!(
        (v["prediction"]["total_ms"].as_f64().unwrap() - sum).abs() < 1e-6,
        "{v}"
    );

    let hostfile = stdout(&run(&[&["place", "-o", "hostfile"][..], &shape[..]].concat()).await);
    let lines: Vec<String> = ranks.iter().map(|n| format!("{n} slots=1")).collect();
    assert_eq!(hostfile, lines.join("\n") + "\n");

    let yaml = stdout(&run(&[&["place", "-o", "yaml"][..], &shape[..]].concat()).await);
    let doc: serde_json::Value = serde_norway::from_str(&yaml).unwrap();
    assert_eq!(doc["env"][0]["name"], "NETAWARE_RANK_NODES", "{yaml}");
    assert_eq!(doc["env"][0]["value"], ranks.join(" "), "{yaml}");
    assert_eq!(
        doc["env"][1]["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );

    let table = stdout(&run(&[&["place"][..], &shape[..]].concat()).await);
    assert!(table.contains(&format!("0:{}", ranks[0])), "{table}");
    assert!(table.contains("level tp (3 per ring"), "{table}");

    // Refused before asking: a shape the grammar does not accept.
    let out = run(&["place", "--shape", "tp=2,tp=2", "--aggregator", &url]).await;
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("named twice"), "{err}");
    // Asked, and refused: more ranks than nodes, k not the ranks.
    let out = run(&["place", "--shape", "tp=2,dp=4", "--aggregator", &url]).await;
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("k = 8 but only 6"), "{err}");
    let out = run(&[
        "place",
        "-k",
        "4",
        "--shape",
        "tp=3,dp=2",
        "--aggregator",
        &url,
    ])
    .await;
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("6 ranks but 4 nodes were asked for"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_requests_are_invalid_argument_and_a_selector_without_labels_a_failed_precondition()
{
    use netaware_proto::v1::PlaceRequest;
    use tonic::Code;
    let url = cluster().await;
    let mut client = netaware_cli::connect(&url.as_str().into()).await.unwrap();
    let code = |r: Result<tonic::Response<netaware_proto::v1::PlaceResponse>, tonic::Status>| {
        r.expect_err("must fail").code()
    };
    for req in [
        PlaceRequest::default(), // k = 0
        PlaceRequest {
            k: 7,
            ..Default::default()
        },
        PlaceRequest {
            k: 2,
            exclude: vec!["nowhere".into()],
            ..Default::default()
        },
        PlaceRequest {
            k: 2,
            include: vec!["east-1".into()],
            exclude: vec!["east-1".into()],
            ..Default::default()
        },
        PlaceRequest {
            k: 2,
            min_bandwidth_mbps: f64::NAN,
            ..Default::default()
        },
        PlaceRequest {
            k: 2,
            label_selector: "a in (b".into(),
            ..Default::default()
        },
        // Shapes: one node per rank, named levels of at least one.
        PlaceRequest {
            k: 4,
            shape: vec![level("tp", 3, 0), level("dp", 2, 0)],
            ..Default::default()
        },
        PlaceRequest {
            shape: vec![level("tp", 0, 0)],
            ..Default::default()
        },
        PlaceRequest {
            shape: vec![level("TP", 2, 0)],
            ..Default::default()
        },
        PlaceRequest {
            shape: (0..100_000)
                .map(|i| level(&format!("l{i}"), 1, 0))
                .collect(),
            ..Default::default()
        },
        PlaceRequest {
            shape: vec![level("tp", u32::MAX, 0), level("dp", u32::MAX, 0)],
            ..Default::default()
        },
    ] {
        let what = format!("{req:?}");
        assert_eq!(
            code(client.place(req).await),
            Code::InvalidArgument,
            "{what}"
        );
    }
    let with_selector = PlaceRequest {
        k: 2,
        label_selector: "zone=a".into(),
        ..Default::default()
    };
    assert_eq!(
        code(client.place(with_selector).await),
        Code::FailedPrecondition
    );
    let ok = client
        .place(PlaceRequest {
            k: 6,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.nodes.len(), 6);
    assert_eq!((ok.pairs, ok.bandwidth_pairs_measured), (15, 15));
    assert_eq!(ok.bottleneck_bandwidth_mbps, 100.0);
}
