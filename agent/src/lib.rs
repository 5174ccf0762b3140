//! netaware agent: runs on every node (host network), measures RTT, jitter and
//! loss to the peers the aggregator names, and streams report windows to it.
//!
//! Data flow inside the agent:
//! ```text
//! session ──plan──▶ ProbeManager ──spawns──▶ one task per (peer, method)
//!    ▲                                              │ finished windows
//!    └──────────────── mpsc ◀───────────────────────┘
//! ```

pub mod bandwidth;
pub mod clock;
pub mod config;
pub mod error;
pub mod icmp;
pub mod metrics;
pub mod probe;
pub mod reflector;
pub mod rxts;
pub mod session;
pub mod stamp;
pub mod stats;

use netaware_proto::v1::Hello;
use tokio::sync::{mpsc, watch};
use tracing::info;

pub use config::Config;
pub use error::{Error, Result};

/// Agent software version sent in the Hello.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Finished windows queued between the probe tasks and the session.
const WINDOW_QUEUE: usize = 1024;
/// Bandwidth orders and results queued between the session and the tests.
const BANDWIDTH_QUEUE: usize = 64;

/// Run the agent until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    config.check()?;
    let clock = clock::Clock::new();
    let reflector = reflector::bind(config.stamp_addr()).await?;
    info!(addr = %config.stamp_addr(), "STAMP reflector listening");

    let icmp = if config.icmp {
        probe::open_icmp(clock)
    } else {
        None
    };
    let (agent_metrics, registry) = metrics::AgentMetrics::new(config.metrics_max_peers);
    let guard = reflector::Guard::new(
        config.stamp_addr(),
        config.stamp_port,
        reflector::Limits {
            per_source_pps: config.reflector_max_pps_per_source,
            total_pps: config.reflector_max_pps,
        },
        tokio::time::Instant::now(),
    );
    let reflector_task = tokio::spawn(reflector::run(
        reflector,
        clock,
        guard,
        Some(agent_metrics.clone()),
    ));
    let ready = netaware_common::observe::Readiness::new("no plan from the aggregator yet");
    let metrics_listener = tokio::net::TcpListener::bind(config.metrics_listen)
        .await
        .map_err(|source| Error::Bind {
            addr: config.metrics_listen,
            source,
        })?;
    info!(addr = %config.metrics_listen, "metrics and health on /metrics, /healthz, /readyz");
    let metrics_task = tokio::spawn(netaware_common::observe::serve(
        metrics_listener,
        std::sync::Arc::new(registry),
        ready.clone(),
    ));
    // Probe tasks -> (metrics tap) -> session.
    let (win_tx, mut tap_rx) = mpsc::channel::<netaware_proto::v1::LinkWindow>(WINDOW_QUEUE);
    let (tap_tx, win_rx) = mpsc::channel(WINDOW_QUEUE);
    let manager = probe::ProbeManager::new(clock, icmp, config.max_probe_rate, win_tx);
    let hello = Hello {
        node_name: config.node_name.clone(),
        probe_addresses: vec![config.node_ip.to_string()],
        stamp_port: u32::from(config.stamp_port),
        software_version: VERSION.to_string(),
        capabilities: manager
            .capabilities()
            .into_iter()
            .map(|m| m as i32)
            .collect(),
        protocol_version: netaware_proto::PROTOCOL_VERSION,
        instance_id: rand::random(),
        bandwidth_port: u32::from(config.bandwidth_port),
    };
    let (order_tx, order_rx) = mpsc::channel(BANDWIDTH_QUEUE);
    let (result_tx, result_rx) = mpsc::channel(BANDWIDTH_QUEUE);
    let mut bandwidth_tasks = Vec::new();
    if config.bandwidth_port != 0 {
        let addr = std::net::SocketAddr::new(config.bind_ip(), config.bandwidth_port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        info!(%addr, "bandwidth-test server listening");
        let grants = bandwidth::Grants::default();
        bandwidth_tasks.push(tokio::spawn(bandwidth::run_server(
            listener,
            grants.clone(),
        )));
        bandwidth_tasks.push(tokio::spawn(bandwidth::run(
            grants,
            clock,
            order_rx,
            result_tx,
            Some(agent_metrics.clone()),
        )));
    }
    let (plan_tx, plan_rx) = watch::channel(None);
    let mut plan_watch = plan_rx.clone();
    let manager_task = tokio::spawn(manager.run(plan_rx));
    let tap_metrics = agent_metrics.clone();
    let tap_task = tokio::spawn(async move {
        loop {
            tokio::select! {
                w = tap_rx.recv() => match w {
                    Some(w) => {
                        tap_metrics.observe(&w);
                        if tap_tx.send(w).await.is_err() {
                            break;
                        }
                    }
                    None => break,
                },
                changed = plan_watch.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    // Peers that left the plan lose their series.
                    let peers: std::collections::BTreeSet<String> = plan_watch
                        .borrow()
                        .as_ref()
                        .map(|p| p.peers.iter().map(|x| x.node_name.clone()).collect())
                        .unwrap_or_default();
                    tap_metrics.retain_peers(&peers);
                }
            }
        }
    });

    // Made anew for every connection, so a renewed CA bundle is read.
    let endpoint = || {
        netaware_proto::client::endpoint(&config.aggregator, config.ca_file.as_deref()).map(|e| {
            e.connect_timeout(std::time::Duration::from_secs(5))
                .tcp_nodelay(true)
        })
    };
    endpoint().map_err(|message| Error::Config {
        name: config::ENV_AGGREGATOR,
        message,
    })?;
    let cfg = session::SessionConfig {
        hello,
        max_buffered_windows: config.max_buffered_windows,
        backoff_initial: config.backoff_initial,
        backoff_max: config.backoff_max,
        metrics: agent_metrics.session.clone(),
        ready,
        token_file: config.token_file.clone(),
    };
    info!(node = %config.node_name, aggregator = %config.aggregator, "agent started");
    let io = session::SessionIo {
        windows: win_rx,
        plans: plan_tx,
        orders: order_tx,
        results: result_rx,
    };
    let connect = || async {
        match endpoint() {
            Ok(e) => e.connect().await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        }
    };
    let buffer = session::run_session(cfg, connect, io, shutdown).await;
    info!(
        unsent_windows = buffer.len(),
        dropped_total = buffer.dropped_total(),
        "agent stopping"
    );
    manager_task.abort();
    tap_task.abort();
    metrics_task.abort();
    for t in bandwidth_tasks {
        t.abort();
    }
    reflector_task.abort();
    Ok(())
}
