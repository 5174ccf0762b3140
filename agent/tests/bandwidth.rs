#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Bandwidth tests between two agents' bandwidth parts over real TCP on
//! loopback: the token check, the byte cap, the time budget and the reports
//! of both ends.

use std::time::{Duration, Instant};

use netaware_agent::bandwidth::{self, Grants, Order};
use netaware_agent::clock::Clock;
use netaware_proto::v1::agent_message::Msg as AgentMsg;
use netaware_proto::v1::{BandwidthGrant, BandwidthResult, BandwidthServed, BandwidthTest};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const MIB: u64 = 1 << 20;

/// One sender (server + order loop) and one receiver (order loop).
struct Pair {
    sender_orders: mpsc::Sender<Order>,
    receiver_orders: mpsc::Sender<Order>,
    reports: mpsc::Receiver<AgentMsg>,
    port: u16,
}

async fn pair() -> Pair {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let grants = Grants::default();
    tokio::spawn(bandwidth::run_server(listener, grants.clone()));
    let (report_tx, reports) = mpsc::channel(16);
    let (sender_orders, rx) = mpsc::channel(16);
    tokio::spawn(bandwidth::run(
        grants,
        Clock::new(),
        rx,
        report_tx.clone(),
        None,
    ));
    let (receiver_orders, rx) = mpsc::channel(16);
    tokio::spawn(bandwidth::run(
        Grants::default(),
        Clock::new(),
        rx,
        report_tx,
        None,
    ));
    Pair {
        sender_orders,
        receiver_orders,
        reports,
        port,
    }
}

fn grant(token: u64, max_bytes: u64, budget_ms: u64) -> BandwidthGrant {
    BandwidthGrant {
        token,
        peer: "receiver".into(),
        streams: 4,
        max_bytes,
        budget_ms,
    }
}

fn test(token: u64, port: u16, omit_ms: u64, duration_ms: u64) -> BandwidthTest {
    BandwidthTest {
        token,
        peer: "sender".into(),
        address: "127.0.0.1".into(),
        port: u32::from(port),
        streams: 4,
        omit_ms,
        duration_ms,
        max_bytes: 0,
    }
}

/// The receiver's result and the sender's served report, in either order.
async fn both(p: &mut Pair) -> (BandwidthResult, BandwidthServed) {
    let (mut result, mut served) = (None, None);
    while result.is_none() || served.is_none() {
        match tokio::time::timeout(Duration::from_secs(10), p.reports.recv())
            .await
            .expect("both ends report within 10 s")
            .unwrap()
        {
            AgentMsg::BandwidthResult(r) => result = Some(r),
            AgentMsg::BandwidthServed(s) => served = Some(s),
            other => panic!("unexpected report {other:?}"),
        }
    }
    (result.unwrap(), served.unwrap())
}

#[tokio::test]
async fn a_granted_test_measures_every_stream_and_both_ends_report() {
    let mut p = pair().await;
    p.sender_orders
        .send(Order::Grant(grant(42, 1 << 40, 1_500)))
        .await
        .unwrap();
    let started = Instant::now();
    // Loopback carries tens of Gbit/s: a 1 TiB cap cannot end this test.
    p.receiver_orders
        .send(Order::Test(test(42, p.port, 200, 500)))
        .await
        .unwrap();
    let (r, s) = both(&mut p).await;
    assert_eq!(r.error, "", "{r:?}");
    assert_eq!((r.token, s.token), (42, 42));
    assert_eq!(r.stream_mbps.len(), 4);
    assert!(r.stream_mbps.iter().all(|&m| m > 0.0), "{r:?}");
    let sum: f64 = r.stream_mbps.iter().sum();
    assert!(
        (sum - r.mbps).abs() < 1e-6 * r.mbps.max(1.0),
        "{sum} vs {}",
        r.mbps
    );
    // The measured part is the duration, not the omitted part too.
    let measured = Duration::from_nanos(r.measured_ns);
    assert!(!r.byte_capped, "the streams ended early: {r:?} {s:?}");
    assert!(
        measured >= Duration::from_millis(495) && measured < Duration::from_millis(800),
        "{measured:?}: {r:?} {s:?}"
    );
    assert!(
        r.total_bytes > r.measured_bytes,
        "the omitted part was received too"
    );
    let expect = r.measured_bytes as f64 * 8.0 / measured.as_secs_f64() / 1e6;
    assert!((r.mbps - expect).abs() < 1e-6 * expect);
    // The sender sent at least what arrived and never more than its cap.
    assert!(
        s.bytes_sent >= r.total_bytes && s.bytes_sent <= 1 << 40,
        "{s:?} {r:?}"
    );
    // The sender reports as soon as the receiver has closed every stream,
    // not at the end of its 1.5 s budget.
    assert!(
        started.elapsed() < Duration::from_millis(1_300),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_test_without_a_valid_grant_is_refused_and_nothing_is_sent() {
    let mut p = pair().await;
    p.sender_orders
        .send(Order::Grant(grant(1, 64 * MIB, 1_500)))
        .await
        .unwrap();
    p.receiver_orders
        .send(Order::Test(test(2, p.port, 0, 300)))
        .await
        .unwrap();
    let (r, s) = both(&mut p).await;
    assert!(r.error.contains("refused"), "{r:?}");
    assert_eq!(r.total_bytes, 0);
    assert_eq!(
        (s.token, s.bytes_sent),
        (1, 0),
        "the real grant sent nothing"
    );
}

#[tokio::test]
async fn the_byte_cap_ends_the_test_early_and_is_never_exceeded() {
    let mut p = pair().await;
    p.sender_orders
        .send(Order::Grant(grant(7, 8 * MIB, 3_000)))
        .await
        .unwrap();
    let started = Instant::now();
    p.receiver_orders
        .send(Order::Test(test(7, p.port, 0, 2_500)))
        .await
        .unwrap();
    let (r, s) = both(&mut p).await;
    assert_eq!(r.error, "", "{r:?}");
    assert!(r.byte_capped, "{r:?}");
    assert_eq!(s.bytes_sent, 8 * MIB);
    assert_eq!(r.total_bytes, 8 * MIB, "loopback loses nothing");
    assert!(
        Duration::from_nanos(r.measured_ns) < Duration::from_millis(2_000),
        "{r:?}"
    );
    // Every stream ended, so the grant ends well before its 3 s budget.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_sender_stops_at_its_time_budget() {
    let mut p = pair().await;
    p.sender_orders
        .send(Order::Grant(grant(9, 1 << 40, 300)))
        .await
        .unwrap();
    p.receiver_orders
        .send(Order::Test(test(9, p.port, 0, 3_000)))
        .await
        .unwrap();
    let (r, s) = both(&mut p).await;
    assert!(
        r.byte_capped,
        "the streams ended before the duration: {r:?}"
    );
    let measured = Duration::from_nanos(r.measured_ns);
    assert!(measured < Duration::from_millis(600), "{measured:?}");
    assert!(s.bytes_sent >= r.total_bytes);
}

#[tokio::test]
async fn a_second_test_while_one_runs_is_refused() {
    let mut p = pair().await;
    p.sender_orders
        .send(Order::Grant(grant(11, 1 << 40, 1_000)))
        .await
        .unwrap();
    p.receiver_orders
        .send(Order::Test(test(11, p.port, 0, 500)))
        .await
        .unwrap();
    p.receiver_orders
        .send(Order::Test(test(12, p.port, 0, 500)))
        .await
        .unwrap();
    let first = match p.reports.recv().await.unwrap() {
        AgentMsg::BandwidthResult(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(first.token, 12);
    assert!(first.error.contains("another test is running"), "{first:?}");
}

/// The review's E2: 1000 idle connections were all accepted and held. Now
/// the server holds at most MAX_CONNECTIONS; the ones past it are closed
/// at once, and an idle one is closed after the request timeout.
#[tokio::test]
async fn idle_connections_past_the_cap_are_closed_at_once() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(bandwidth::run_server(listener, Grants::default()));
    let mut held = Vec::new();
    for _ in 0..bandwidth::MAX_CONNECTIONS {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // Give the server time to accept them all and take their slots.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_millis(500), extra.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a connection past the cap must be closed at once: {closed:?}"
    );
    // The held ones are closed by the 2 s request timeout, freeing the slots.
    let first = &mut held[0];
    let idle = tokio::time::timeout(Duration::from_secs(5), first.read(&mut buf)).await;
    assert!(matches!(idle, Ok(Ok(0)) | Ok(Err(_))), "{idle:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Accepted and held this time: nothing arrives within 500 ms.
    let waited = tokio::time::timeout(Duration::from_millis(500), again.read(&mut buf)).await;
    assert!(
        waited.is_err(),
        "a connection under the cap must be served: {waited:?}"
    );
}
