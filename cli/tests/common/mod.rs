//! What the CLI's integration tests share: a real aggregator query service
//! on loopback, and running the `netaware` binary.

use std::process::Command as Process;

use netaware_aggregator::service::Services;
use netaware_aggregator::state::StateHandle;
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
