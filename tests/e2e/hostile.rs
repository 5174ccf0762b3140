#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! The security review's experiments on what an agent sends, against the
//! real aggregator binary on loopback, with a fake agent speaking the wire
//! protocol (any client that reaches the agent port can): each asserts the
//! safe outcome. At 8ba8183 every one of them showed the unsafe one
//! (docs/security.md). The query-side experiments are in
//! hostile_queries.rs.

mod fake;

use std::time::{Duration, Instant};

use fake::{connect, hello, start, window, windows_total};
use netaware_proto::v1::agent_message::Msg as AgentMsg;
use netaware_proto::v1::aggregator_message::Msg as AggMsg;
use netaware_proto::v1::{AgentMessage, BandwidthResult, Hello};

/// E3a (names) and E3c (a 2.2 MB name): refused at the Hello, naming the
/// field; nothing of them reaches the matrix; honest agents are measured
/// as before. At 8ba8183 every name was accepted, and the 2.2 MB one made
/// every plan undecodable and stopped measurement for good.
#[tokio::test]
async fn names_no_node_can_have_are_refused_and_measurement_goes_on() {
    let agg = start();
    let big = "x".repeat(2_200_000);
    let names = [
        "../../etc/passwd",
        "Evil\x1b[2J\x1b[31mRED\x1b[0m",
        &"x".repeat(400),
        "UPPER_case name",
        big.as_str(),
    ];
    for name in names {
        let e = connect(&agg, hello(name)).await.err().expect("refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{name:.40}");
        assert!(
            e.message().starts_with("Hello.node_name"),
            "{}",
            e.message()
        );
    }
    assert_eq!(agg.refused("hello"), names.len() as u64);
    assert!(agg.matrix().await.nodes.is_empty());

    let mut a = connect(&agg, hello("real-1")).await.unwrap();
    let _b = connect(&agg, hello("real-2")).await.unwrap();
    a.report(1, vec![window("real-2", 2)]).await;
    a.acked(1).await;
    let m = agg
        .matrix_when(|m| windows_total(m, "real-1", "real-2") > 0)
        .await;
    assert_eq!(windows_total(&m, "real-1", "real-2"), 1);
}

/// E3: one forged window starting at 2^62 made the aggregator drop every
/// genuine window of that link until it restarted. Now it is refused and
/// the genuine ones are stored.
#[tokio::test]
async fn a_window_from_the_future_does_not_pin_a_link() {
    let agg = start();
    let mut a = connect(&agg, hello("real-1")).await.unwrap();
    let _b = connect(&agg, hello("real-2")).await.unwrap();
    let mut forged = window("real-2", 0);
    forged.window_start_unix_us = 1 << 62;
    forged.window_end_unix_us = (1 << 62) + 1_000_000;
    a.report(1, vec![forged]).await;
    a.acked(1).await;
    for (seq, ago) in [(2, 6), (3, 4), (4, 2)] {
        a.report(seq, vec![window("real-2", ago)]).await;
        a.acked(seq).await;
    }
    let m = agg
        .matrix_when(|m| windows_total(m, "real-1", "real-2") >= 3)
        .await;
    assert_eq!(windows_total(&m, "real-1", "real-2"), 3);
    assert_eq!(agg.refused("window"), 1);
}

/// E3h: a receiver reported mbps = 1e300 and streams [NaN, −5], and
/// GetMatrix showed exactly that. Now the result is refused, the test
/// counts as failed, and nothing reaches the matrix.
#[tokio::test]
async fn impossible_bandwidth_figures_never_reach_the_matrix() {
    let agg = start();
    let with_port = |n: &str| Hello {
        bandwidth_port: 18621,
        ..hello(n)
    };
    let mut a = connect(&agg, with_port("real-1")).await.unwrap();
    let mut b = connect(&agg, with_port("real-2")).await.unwrap();
    // One of them is told to receive a test from the other.
    let (receiver, test) = tokio::select! {
        t = a.expect("a bandwidth test", |m| match m { AggMsg::BandwidthTest(t) => Some(t), _ => None }) => (a, t),
        t = b.expect("a bandwidth test", |m| match m { AggMsg::BandwidthTest(t) => Some(t), _ => None }) => (b, t),
    };
    receiver
        .tx
        .send(AgentMessage {
            msg: Some(AgentMsg::BandwidthResult(BandwidthResult {
                token: test.token,
                peer: test.peer.clone(),
                mbps: 1e300,
                stream_mbps: vec![f64::NAN, -5.0],
                ..Default::default()
            })),
        })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while agg.refused("bandwidth_result") == 0 {
        assert!(Instant::now() < deadline, "the result was never refused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Past the snapshot age, so an accepted figure would show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(agg.matrix().await.bandwidth.is_empty());
}
