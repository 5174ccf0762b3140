#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! In-memory gRPC tests of the agent ↔ aggregator Session: the real agent
//! session loop against the real aggregator services, over `tokio::io::duplex`
//! pipes (no ports). A small in-memory "network" can be cut to simulate an
//! aggregator outage.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use netaware_agent::bandwidth::Order;
use netaware_agent::session::{SessionConfig, SessionIo, run_session};
use netaware_aggregator::service::Services;
use netaware_aggregator::state::{self, StateConfig, StateHandle};
use netaware_proto::ProbeMethod;
use netaware_proto::v1::AggregatorMessage;
use netaware_proto::v1::agent_message::Msg as AgentMsg;
use netaware_proto::v1::agent_service_client::AgentServiceClient;
use netaware_proto::v1::agent_service_server::{AgentService, AgentServiceServer};
use netaware_proto::v1::{
    AgentMessage, GetMatrixResponse, Hello, LinkWindow, ProbePlan, ReportBatch,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::DuplexStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status, Streaming};

/// An in-memory network between agents and one aggregator that can be cut.
#[derive(Clone)]
struct MemNet {
    server: Arc<Mutex<Option<mpsc::UnboundedSender<DuplexStream>>>>,
    cut: Arc<watch::Sender<u64>>,
}

impl MemNet {
    fn new() -> Self {
        Self {
            server: Arc::new(Mutex::new(None)),
            cut: Arc::new(watch::channel(0).0),
        }
    }

    /// Start serving `services` (again).
    fn up(&self, services: Services) {
        self.up_with(AgentServiceServer::new(services));
    }

    /// Start serving any agent-facing service implementation.
    fn up_with<S: AgentService>(&self, service: AgentServiceServer<S>) {
        let (tx, rx) = mpsc::unbounded_channel::<DuplexStream>();
        *self.server.lock().unwrap() = Some(tx);
        let incoming = UnboundedReceiverStream::new(rx).map(Ok::<_, std::io::Error>);
        tokio::spawn(
            Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming),
        );
    }

    /// Refuse new connections and break every open one.
    fn down(&self) {
        *self.server.lock().unwrap() = None;
        self.cut.send_modify(|g| *g += 1);
    }

    async fn connect(&self) -> Result<Channel, tonic::transport::Error> {
        let net = self.clone();
        Endpoint::from_static("http://aggregator.test")
            .connect_with_connector(tower::service_fn(move |_| {
                let net = net.clone();
                async move {
                    let Some(server) = net.server.lock().unwrap().clone() else {
                        return Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
                    };
                    // agent <-> pump <-> server, so that `down` can break the pipe.
                    let (agent_end, mut pump_a) = tokio::io::duplex(1 << 16);
                    let (mut pump_b, server_end) = tokio::io::duplex(1 << 16);
                    let mut cut = net.cut.subscribe();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut pump_a, &mut pump_b) => {}
                            _ = cut.changed() => {}
                        }
                    });
                    server
                        .send(server_end)
                        .map_err(|_| std::io::Error::from(std::io::ErrorKind::ConnectionRefused))?;
                    Ok(TokioIo::new(agent_end))
                }
            }))
            .await
    }
}

fn state() -> StateHandle {
    state::spawn(StateConfig::default())
}

fn hello(node: &str) -> Hello {
    Hello {
        node_name: node.into(),
        probe_addresses: vec!["192.0.2.1".into()],
        stamp_port: 8620,
        software_version: "test".into(),
        capabilities: vec![ProbeMethod::StampUdp as i32],
        protocol_version: netaware_proto::PROTOCOL_VERSION,
        instance_id: 1,
        bandwidth_port: 0,
    }
}

/// An hour ago (µs since the epoch), fixed for the whole test process: the
/// aggregator refuses windows from 1970 or from the future.
fn hour_ago_us() -> u64 {
    static BASE: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        u64::try_from(now.as_micros()).unwrap() - 3_600_000_000
    });
    *BASE
}

fn window(peer: &str, start_s: u64) -> LinkWindow {
    LinkWindow {
        peer: peer.into(),
        method: ProbeMethod::StampUdp as i32,
        window_start_unix_us: hour_ago_us() + start_s * 1_000_000,
        window_end_unix_us: hour_ago_us() + (start_s + 1) * 1_000_000,
        sent: 5,
        received: 5,
        // Every figure the same: the aggregator refuses figures out of order.
        rtt_min_ns: 1_000_000 + start_s,
        rtt_mean_ns: 1_000_000 + start_s,
        rtt_p50_ns: 1_000_000 + start_s,
        rtt_p90_ns: 1_000_000 + start_s,
        rtt_p99_ns: 1_000_000 + start_s,
        rtt_max_ns: 1_000_000 + start_s,
        ..Default::default()
    }
}

struct Agent {
    windows: mpsc::Sender<LinkWindow>,
    plans: watch::Receiver<Option<ProbePlan>>,
    orders: mpsc::Receiver<Order>,
    results: mpsc::Sender<AgentMsg>,
    stop: Option<oneshot::Sender<()>>,
}

fn start_agent(net: &MemNet, node: &str, max_buffered: usize) -> Agent {
    start_agent_with(net, hello(node), max_buffered)
}

fn start_agent_with(net: &MemNet, hello: Hello, max_buffered: usize) -> Agent {
    let (wtx, wrx) = mpsc::channel(64);
    let (ptx, prx) = watch::channel(None);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (otx, orx) = mpsc::channel(16);
    let (rtx, rrx) = mpsc::channel(16);
    let cfg = SessionConfig {
        hello,
        max_buffered_windows: max_buffered,
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        metrics: Default::default(),
        ready: Default::default(),
        token_file: None,
    };
    let net = net.clone();
    tokio::spawn(async move {
        run_session(
            cfg,
            move || {
                let net = net.clone();
                async move { net.connect().await }
            },
            SessionIo {
                windows: wrx,
                plans: ptx,
                orders: otx,
                results: rrx,
            },
            async move {
                let _ = stop_rx.await;
            },
        )
        .await
    });
    Agent {
        windows: wtx,
        plans: prx,
        orders: orx,
        results: rtx,
        stop: Some(stop_tx),
    }
}

async fn matrix(state: &StateHandle) -> GetMatrixResponse {
    state.matrix(ProbeMethod::Unspecified).await.unwrap()
}

/// Make `node` a node the aggregator knows, with no agent behind it: the
/// aggregator accepts windows towards known nodes only, and an agent of
/// its own would race the windows under test to say Hello first. Keep the
/// returned queue alive for the test.
async fn known_node(
    state: &StateHandle,
    node: &str,
) -> mpsc::Receiver<Result<AggregatorMessage, Status>> {
    let (tx, rx) = mpsc::channel(64);
    state.connect(hello(node), tx).await.unwrap();
    rx
}

/// Poll the matrix until `check` holds (or fail after 10 s).
async fn eventually(
    state: &StateHandle,
    what: &str,
    check: impl Fn(&GetMatrixResponse) -> bool,
) -> GetMatrixResponse {
    for _ in 0..500 {
        let m = matrix(state).await;
        if check(&m) {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "timed out waiting for: {what}; matrix: {:?}",
        matrix(state).await
    );
}

fn windows_total(m: &GetMatrixResponse, src: &str, dst: &str) -> u64 {
    m.link(src, dst).map_or(0, |l| l.windows_total)
}

#[tokio::test]
async fn agents_get_a_full_mesh_plan_and_their_reports_reach_the_matrix() {
    let net = MemNet::new();
    let state = state();
    net.up(Services::new(state.clone()));
    let mut a = start_agent(&net, "a", 100);
    let _b = start_agent(&net, "b", 100);
    let plan = tokio::time::timeout(
        Duration::from_secs(10),
        a.plans
            .wait_for(|p| p.as_ref().is_some_and(|p| p.peers.len() == 1)),
    )
    .await
    .expect("a plan naming b")
    .unwrap()
    .clone()
    .unwrap();
    assert_eq!(plan.peers[0].node_name, "b");
    assert_eq!(plan.probe_interval_us, 200_000);
    assert_eq!(plan.report_interval_ms, 10_000);

    a.windows.send(window("b", 10)).await.unwrap();
    let m = eventually(&state, "a->b stored", |m| windows_total(m, "a", "b") == 1).await;
    let link = &m.links[0];
    assert_eq!(link.latest.as_ref().unwrap().rtt_p50_ns, 1_000_010);
    assert!(m.nodes.iter().all(|n| n.connected));

    // An agent that stops is shown as disconnected; its link is kept.
    a.stop.take().unwrap().send(()).unwrap();
    let m = eventually(&state, "a disconnected", |m| {
        m.nodes.iter().any(|n| n.node_name == "a" && !n.connected)
    })
    .await;
    assert_eq!(windows_total(&m, "a", "b"), 1);
}

#[tokio::test]
async fn windows_measured_during_an_outage_arrive_once_after_reconnecting() {
    let net = MemNet::new();
    let state = state();
    net.up(Services::new(state.clone()));
    let a = start_agent(&net, "a", 100);
    let _b = known_node(&state, "b").await;
    a.windows.send(window("b", 1)).await.unwrap();
    eventually(&state, "first window", |m| windows_total(m, "a", "b") == 1).await;

    net.down();
    for s in 2..=4 {
        a.windows.send(window("b", s)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        windows_total(&matrix(&state).await, "a", "b"),
        1,
        "nothing arrives while down"
    );

    net.up(Services::new(state.clone()));
    let m = eventually(&state, "all four windows", |m| {
        windows_total(m, "a", "b") == 4
    })
    .await;
    let latest = m.links[0].latest.as_ref().unwrap();
    assert_eq!(latest.window_start_unix_us, hour_ago_us() + 4_000_000);
    assert_eq!(m.nodes[0].dropped_windows_total, 0);
    // Nothing is counted twice, even though unacknowledged windows may be resent.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(windows_total(&matrix(&state).await, "a", "b"), 4);
}

#[tokio::test]
async fn a_full_buffer_drops_the_oldest_windows_and_reports_how_many() {
    let net = MemNet::new();
    let state = state();
    let a = start_agent(&net, "a", 2);
    let _b = known_node(&state, "b").await;
    for s in 1..=5 {
        a.windows.send(window("b", s)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    net.up(Services::new(state.clone()));
    let m = eventually(&state, "the two newest windows", |m| {
        windows_total(m, "a", "b") == 2
    })
    .await;
    assert_eq!(
        m.links[0].latest.as_ref().unwrap().window_start_unix_us,
        hour_ago_us() + 5_000_000
    );
    assert_eq!(m.nodes[0].dropped_windows_total, 3);
}

#[tokio::test]
async fn a_session_must_open_with_hello() {
    let net = MemNet::new();
    net.up(Services::new(state()));
    let mut client = AgentServiceClient::new(net.connect().await.unwrap());
    let first = AgentMessage {
        msg: Some(AgentMsg::Reports(ReportBatch::default())),
    };
    let err = client
        .session(tokio_stream::iter(vec![first]))
        .await
        .expect_err("must be refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("Hello"), "{}", err.message());
}

/// Open a session with `h` and return the aggregator's refusal.
async fn refused_hello(client: &mut AgentServiceClient<Channel>, h: Hello) -> Status {
    let first = AgentMessage {
        msg: Some(AgentMsg::Hello(h)),
    };
    client
        .session(tokio_stream::iter(vec![first]))
        .await
        .expect_err("must be refused")
}

#[tokio::test]
async fn a_hello_the_aggregator_cannot_trust_is_refused_naming_the_field() {
    let net = MemNet::new();
    let state = state();
    net.up(Services::new(state.clone()));
    let mut client = AgentServiceClient::new(net.connect().await.unwrap());
    // The review's names (E3a) and a 2.2 MB one (E3c).
    let big = "x".repeat(2_200_000);
    for (name, addresses, field) in [
        ("../../etc/passwd", vec!["192.0.2.1"], "Hello.node_name"),
        (
            "Evil\x1b[2J\x1b[31mRED",
            vec!["192.0.2.1"],
            "Hello.node_name",
        ),
        ("UPPER_case name", vec!["192.0.2.1"], "Hello.node_name"),
        (big.as_str(), vec!["192.0.2.1"], "Hello.node_name"),
        ("ok-name", vec!["not-an-ip"], "Hello.probe_addresses"),
    ] {
        let mut h = hello(name);
        h.probe_addresses = addresses.into_iter().map(String::from).collect();
        let err = refused_hello(&mut client, h).await;
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{name:.40}");
        assert!(err.message().starts_with(field), "{}", err.message());
        // What reaches messages and logs is escaped and cut.
        assert!(!err.message().contains('\x1b') && err.message().len() < 400);
    }
    // None of them became a node.
    assert!(matrix(&state).await.nodes.is_empty());
}

#[tokio::test]
async fn a_wrong_protocol_version_is_refused_with_a_clear_message() {
    let net = MemNet::new();
    net.up(Services::new(state()));
    let mut client = AgentServiceClient::new(net.connect().await.unwrap());
    let mut h = hello("a");
    h.protocol_version = 99;
    let err = refused_hello(&mut client, h).await;
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("99"), "{}", err.message());
}

/// An aggregator that takes report batches but never acknowledges them.
#[derive(Clone, Default)]
struct SilentAggregator {
    batches: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl AgentService for SilentAggregator {
    type SessionStream = tokio_stream::wrappers::ReceiverStream<Result<AggregatorMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = request.into_inner();
        let batches = self.batches.clone();
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let _keep_open = tx;
            while let Ok(Some(m)) = inbound.message().await {
                if matches!(m.msg, Some(AgentMsg::Reports(_))) {
                    batches.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }
}

#[tokio::test]
async fn windows_sent_but_never_acknowledged_are_sent_again_after_a_break() {
    let net = MemNet::new();
    let silent = SilentAggregator::default();
    net.up_with(AgentServiceServer::new(silent.clone()));
    let a = start_agent(&net, "a", 100);
    a.windows.send(window("b", 7)).await.unwrap();
    for _ in 0..500 {
        if silent.batches.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        silent.batches.load(Ordering::SeqCst),
        1,
        "the batch reached the silent aggregator"
    );

    net.down();
    let state = state();
    let _b = known_node(&state, "b").await;
    net.up(Services::new(state.clone()));
    let m = eventually(&state, "the unacknowledged window", |m| {
        windows_total(m, "a", "b") == 1
    })
    .await;
    assert_eq!(
        m.links[0].latest.as_ref().unwrap().window_start_unix_us,
        hour_ago_us() + 7_000_000
    );
}

#[tokio::test]
async fn a_scheduled_bandwidth_test_reaches_both_agents_and_its_result_the_matrix() {
    let net = MemNet::new();
    let state = state();
    net.up(Services::new(state.clone()));
    let with_port = |n: &str| Hello {
        bandwidth_port: 8621,
        ..hello(n)
    };
    let mut a = start_agent_with(&net, with_port("a"), 100);
    let mut b = start_agent_with(&net, with_port("b"), 100);
    async fn next(rx: &mut mpsc::Receiver<Order>) -> Order {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("an order within 10 s")
            .unwrap()
    }
    let (oa, ob) = (next(&mut a.orders).await, next(&mut b.orders).await);
    let (grant, test, sender, receiver) = match (oa, ob) {
        (Order::Grant(g), Order::Test(t)) => (g, t, &a, &b),
        (Order::Test(t), Order::Grant(g)) => (g, t, &b, &a),
        other => panic!("one grant and one test expected, got {other:?}"),
    };
    assert_eq!(grant.token, test.token);
    let defaults = netaware_model::bandwidth::BandwidthConfig::default();
    assert_eq!(test.streams, defaults.streams);
    assert_eq!(test.max_bytes, defaults.max_bytes_per_test);
    assert_eq!(grant.max_bytes, test.max_bytes);
    assert_eq!((test.address.as_str(), test.port), ("192.0.2.1", 8621));
    let (sender_name, receiver_name) = (test.peer.clone(), grant.peer.clone());
    assert_ne!(sender_name, receiver_name);

    // A result under another token, or from the sender, is ignored.
    let result = |token: u64, mbps: f64| {
        AgentMsg::BandwidthResult(netaware_proto::v1::BandwidthResult {
            token,
            peer: sender_name.clone(),
            mbps,
            stream_mbps: vec![mbps / 2.0; 2],
            ..Default::default()
        })
    };
    receiver
        .results
        .send(result(test.token ^ 1, 1.0))
        .await
        .unwrap();
    sender.results.send(result(test.token, 2.0)).await.unwrap();
    receiver
        .results
        .send(result(test.token, 940.0))
        .await
        .unwrap();
    let m = eventually(&state, "bandwidth stored", |m| !m.bandwidth.is_empty()).await;
    assert_eq!(m.bandwidth.len(), 1);
    let bw = &m.bandwidth[0];
    assert_eq!(
        (
            bw.sender.as_str(),
            bw.receiver.as_str(),
            bw.mbps,
            bw.tests_total
        ),
        (sender_name.as_str(), receiver_name.as_str(), 940.0, 1)
    );
    assert_eq!(bw.stream_mbps, vec![470.0, 470.0]);
}

/// An aggregator that breaks the stream whenever a batch holds a window
/// towards `poison`, and acknowledges every other batch.
#[derive(Clone, Default)]
struct PoisonedAggregator {
    poisoned: Arc<AtomicUsize>,
    acked_peers: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl AgentService for PoisonedAggregator {
    type SessionStream = tokio_stream::wrappers::ReceiverStream<Result<AggregatorMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        use netaware_proto::v1::aggregator_message::Msg as AggMsg;
        let mut inbound = request.into_inner();
        let (poisoned, acked) = (self.poisoned.clone(), self.acked_peers.clone());
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let plan = AggMsg::Plan(ProbePlan::default());
            let _ = tx.send(Ok(AggregatorMessage { msg: Some(plan) })).await;
            while let Ok(Some(m)) = inbound.message().await {
                let Some(AgentMsg::Reports(batch)) = m.msg else {
                    continue;
                };
                if batch.windows.iter().any(|w| w.peer == "poison") {
                    poisoned.fetch_add(1, Ordering::SeqCst);
                    let _ = tx
                        .send(Err(Status::invalid_argument("cannot take it")))
                        .await;
                    return;
                }
                acked
                    .lock()
                    .unwrap()
                    .extend(batch.windows.iter().map(|w| w.peer.clone()));
                let ack = AggMsg::Ack(netaware_proto::v1::ReportAck {
                    batch_seq: batch.batch_seq,
                });
                let _ = tx.send(Ok(AggregatorMessage { msg: Some(ack) })).await;
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }
}

/// The review's E3c from the agent's side: a batch the aggregator cannot
/// take was sent again on every reconnect, for ever. Now it is sent on
/// `MAX_ATTEMPTS` streams, then given up, and what follows is delivered.
#[tokio::test]
async fn a_batch_that_breaks_the_stream_is_given_up_after_its_attempts() {
    use netaware_agent::session::MAX_ATTEMPTS;
    let net = MemNet::new();
    let aggregator = PoisonedAggregator::default();
    net.up_with(AgentServiceServer::new(aggregator.clone()));
    let a = start_agent(&net, "a", 100);
    a.windows.send(window("poison", 1)).await.unwrap();
    let seen = || aggregator.poisoned.load(Ordering::SeqCst);
    for _ in 0..1000 {
        if seen() >= usize::from(MAX_ATTEMPTS) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen(), usize::from(MAX_ATTEMPTS));
    a.windows.send(window("b", 2)).await.unwrap();
    for _ in 0..500 {
        if !aggregator.acked_peers.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        *aggregator.acked_peers.lock().unwrap(),
        vec!["b".to_string()]
    );
    assert_eq!(seen(), usize::from(MAX_ATTEMPTS), "never sent again");
}
