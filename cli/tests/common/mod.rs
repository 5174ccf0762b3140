//! What the CLI's integration tests share: a real aggregator query service
//! on loopback, and running the `netaware` binary.

use std::process::Command as Process;

use netaware_aggregator::service::Services;
use netaware_aggregator::state::{self, Command, SessionId, StateConfig, StateHandle};
use netaware_proto::ProbeMethod;
use netaware_proto::v1::query_service_server::QueryServiceServer;
use netaware_proto::v1::{Hello, LinkWindow, ReportBatch};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

const BIN: &str = env!("CARGO_BIN_EXE_netaware");

/// Serve `state`'s query API on a free loopback port; returns its URL.
pub async fn serve(state: StateHandle) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(QueryServiceServer::new(Services::new(state)))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

/// Run `netaware ARGS` without blocking the runtime.
pub async fn run(args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || Process::new(BIN).args(&args).output().unwrap())
        .await
        .unwrap()
}

/// A UDP window towards `peer` that ended an hour ago (the aggregator
/// refuses windows far from its clock), with consistent RTT figures:
/// min = mean = p50, p90 = max = p99.
pub fn window(peer: &str, p50_ns: u64, p99_ns: u64, sent: u64, received: u64) -> LinkWindow {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let end = u64::try_from(now.as_micros()).unwrap() - 3_600_000_000;
    LinkWindow {
        peer: peer.into(),
        method: ProbeMethod::StampUdp as i32,
        window_start_unix_us: end - 10_000_000,
        window_end_unix_us: end,
        sent,
        received,
        rtt_min_ns: p50_ns,
        rtt_mean_ns: p50_ns,
        rtt_p50_ns: p50_ns,
        rtt_p90_ns: p99_ns,
        rtt_p99_ns: p99_ns,
        rtt_max_ns: p99_ns,
        ..Default::default()
    }
}

/// The Hello of an agent on `node` that probes by STAMP over UDP.
pub fn hello(node: &str) -> Hello {
    Hello {
        node_name: node.into(),
        probe_addresses: vec!["192.0.2.1".into()],
        capabilities: vec![ProbeMethod::StampUdp as i32],
        protocol_version: netaware_proto::PROTOCOL_VERSION,
        ..Default::default()
    }
}

/// Deliver `windows` as `session`'s first report batch.
pub async fn report(state: &StateHandle, session: SessionId, windows: Vec<LinkWindow>) {
    state
        .send(Command::Reports {
            session,
            batch: ReportBatch {
                batch_seq: 1,
                windows,
                dropped_windows_total: 0,
            },
        })
        .await
        .unwrap();
}

/// An aggregator whose `nodes` measured each other at `rtt_us(a, b)`
/// (p99 10 % above, no loss), regrouped; returns its query URL.
#[allow(dead_code)] // not every test binary that shares this module uses it
pub async fn measured(nodes: &[&str], rtt_us: impl Fn(&str, &str) -> u64) -> String {
    let state = state::spawn(StateConfig::default());
    let mut sessions = Vec::new();
    for node in nodes {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        std::mem::forget(rx); // keep the session's outbound queue open
        sessions.push((*node, state.connect(hello(node), tx).await.unwrap()));
    }
    // Windows only once every node is known: the aggregator refuses
    // windows towards nodes it has never seen.
    for (node, session) in sessions {
        let windows = nodes
            .iter()
            .filter(|p| **p != node)
            .map(|p| window(p, rtt_us(node, p) * 1000, rtt_us(node, p) * 1100, 100, 100))
            .collect();
        report(&state, session, windows).await;
    }
    state.recompute().await.unwrap();
    serve(state).await
}
