#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! The security review's experiments against the real aggregator binary on
//! loopback, with a fake agent speaking the wire protocol (any client that
//! reaches the agent port can): each asserts the safe outcome. At 8ba8183
//! every one of them showed the unsafe one (docs/security.md).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use netaware_e2e::{Killed, free_port, http_get, spawn_aggregator};
use netaware_proto::ProbeMethod;
use netaware_proto::v1::agent_message::Msg as AgentMsg;
use netaware_proto::v1::agent_service_client::AgentServiceClient;
use netaware_proto::v1::aggregator_message::Msg as AggMsg;
use netaware_proto::v1::query_service_client::QueryServiceClient;
use netaware_proto::v1::{
    AgentMessage, AggregatorMessage, BandwidthResult, GetMatrixRequest, GetMatrixResponse, Hello,
    LinkWindow, ReportBatch,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// A real aggregator on loopback ports of its own.
struct Aggregator {
    _child: Killed,
    agent: u16,
    query: u16,
    metrics: u16,
}

fn start() -> Aggregator {
    let (agent, query, metrics) = (free_port(), free_port(), free_port());
    let child = spawn_aggregator(
        agent,
        query,
        metrics,
        &["--bandwidth-omit", "0s", "--bandwidth-duration", "1s"],
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while http_get("127.0.0.1", metrics, "/readyz").is_none_or(|(s, _)| s != 200) {
        assert!(
            Instant::now() < deadline,
            "the aggregator did not become ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Aggregator {
        _child: child,
        agent,
        query,
        metrics,
    }
}

impl Aggregator {
    /// `netaware_refused_total{kind="…"}` from /metrics.
    fn refused(&self, kind: &str) -> u64 {
        let (_, body) = http_get("127.0.0.1", self.metrics, "/metrics").unwrap();
        let line = format!("netaware_refused_total{{kind=\"{kind}\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&line))
            .map_or(0, |v| v.trim().parse().unwrap())
    }

    async fn matrix(&self) -> GetMatrixResponse {
        let mut q = QueryServiceClient::connect(format!("http://127.0.0.1:{}", self.query))
            .await
            .unwrap();
        q.get_matrix(GetMatrixRequest {
            method: ProbeMethod::Unspecified as i32,
        })
        .await
        .unwrap()
        .into_inner()
    }
}

/// A fake agent: what it sends, and what the aggregator sends it.
struct Fake {
    tx: mpsc::Sender<AgentMessage>,
    rx: Streaming<AggregatorMessage>,
}

fn hello(name: &str) -> Hello {
    Hello {
        node_name: name.into(),
        probe_addresses: vec!["127.0.0.9".into()],
        stamp_port: 9999,
        software_version: "fake".into(),
        capabilities: vec![ProbeMethod::StampUdp as i32],
        protocol_version: netaware_proto::PROTOCOL_VERSION,
        instance_id: 1,
        bandwidth_port: 0,
    }
}

async fn connect(agg: &Aggregator, h: Hello) -> Result<Fake, tonic::Status> {
    let mut client = AgentServiceClient::connect(format!("http://127.0.0.1:{}", agg.agent))
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(16);
    tx.send(AgentMessage {
        msg: Some(AgentMsg::Hello(h)),
    })
    .await
    .unwrap();
    let rx = client.session(ReceiverStream::new(rx)).await?.into_inner();
    Ok(Fake { tx, rx })
}

fn now_us() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros(),
    )
    .unwrap()
}

/// A plausible window towards `peer` that ended `ago_s` seconds ago.
fn window(peer: &str, ago_s: u64) -> LinkWindow {
    let end = now_us() - ago_s * 1_000_000;
    LinkWindow {
        peer: peer.into(),
        method: ProbeMethod::StampUdp as i32,
        window_start_unix_us: end - 1_000_000,
        window_end_unix_us: end,
        sent: 10,
        received: 10,
        rtt_min_ns: 100_000,
        rtt_mean_ns: 120_000,
        rtt_p50_ns: 120_000,
        rtt_p90_ns: 150_000,
        rtt_p99_ns: 160_000,
        rtt_max_ns: 170_000,
        ..Default::default()
    }
}

impl Fake {
    async fn report(&self, seq: u64, windows: Vec<LinkWindow>) {
        self.tx
            .send(AgentMessage {
                msg: Some(AgentMsg::Reports(ReportBatch {
                    batch_seq: seq,
                    windows,
                    dropped_windows_total: 0,
                })),
            })
            .await
            .unwrap();
    }

    /// The next message the aggregator sends that `pick` wants.
    async fn expect<T>(&mut self, what: &str, mut pick: impl FnMut(AggMsg) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let m = tokio::time::timeout_at(deadline, self.rx.message())
                .await
                .unwrap_or_else(|_| panic!("no {what} within 15 s"))
                .unwrap()
                .unwrap_or_else(|| panic!("the session ended before {what}"));
            if let Some(t) = m.msg.and_then(&mut pick) {
                return t;
            }
        }
    }

    async fn acked(&mut self, seq: u64) {
        self.expect("an acknowledgement", |m| match m {
            AggMsg::Ack(a) if a.batch_seq == seq => Some(()),
            _ => None,
        })
        .await;
    }
}

fn windows_total(m: &GetMatrixResponse, src: &str, dst: &str) -> u64 {
    m.link(src, dst).map_or(0, |l| l.windows_total)
}

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
    assert_eq!(windows_total(&agg.matrix().await, "real-1", "real-2"), 1);
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
    assert_eq!(windows_total(&agg.matrix().await, "real-1", "real-2"), 3);
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
    assert!(agg.matrix().await.bandwidth.is_empty());
}
