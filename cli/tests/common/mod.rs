//! What the CLI's integration tests share: a real aggregator query service
//! on loopback, and running the `netaware` binary.

use std::process::Command as Process;

use netaware_aggregator::service::Services;
use netaware_aggregator::state::StateHandle;
use netaware_proto::ProbeMethod;
use netaware_proto::v1::LinkWindow;
use netaware_proto::v1::query_service_server::QueryServiceServer;
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
