//! netaware aggregator: collects agent report windows into a link-state
//! matrix and serves it.
//!
//! ```text
//! agents ──Session──▶ service::Services ──Command──▶ state (one task, owns matrix::Matrix)
//! CLI ────Query─────▶ service::Services ──Command──▶      "
//! ```

pub mod bandwidth;
pub mod config;
pub mod error;
pub mod groups;
pub mod infer;
pub mod kube_writer;
pub mod labels;
pub mod matrix;
pub mod metrics;
pub mod place;
pub mod placement;
pub mod publish;
pub mod quality;
pub mod selector;
pub mod service;
pub mod state;

use std::future::Future;

use netaware_proto::v1::agent_service_server::AgentServiceServer;
use netaware_proto::v1::query_service_server::QueryServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::info;

pub use config::Config;
pub use error::{Error, Result};

/// State-owner settings from the command line.
pub fn state_config(c: &Config) -> state::StateConfig {
    state::StateConfig {
        timing: matrix::PlanTiming {
            probe_interval: c.probe_interval,
            report_interval: c.report_interval,
            loss_timeout: c.loss_timeout,
        },
        smoothing: c.smoothing,
        stale_after: c.stale_after,
        infer: infer::InferConfig {
            thresholds: c.group_thresholds,
            hysteresis: c.group_hysteresis,
            weights: c.quality_weights,
            scales: quality::Scales::default(),
        },
        recompute_interval: c.recompute_interval,
        bandwidth: bandwidth::BandwidthConfig {
            enabled: c.bandwidth_tests,
            streams: c.bandwidth_streams,
            omit: c.bandwidth_omit,
            duration: c.bandwidth_duration,
            max_bytes_per_test: c.bandwidth_max_bytes,
            budget_bytes_per_hour: c.bandwidth_budget,
            retest_after: c.bandwidth_retest,
            max_concurrent: c.bandwidth_concurrency,
        },
    }
}

async fn listen(addr: std::net::SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })
}

/// Settings of the label publisher.
pub fn publish_config(c: &Config) -> publish::PublishConfig {
    publish::PublishConfig {
        prefix: c.label_prefix.clone(),
        qps: c.write_qps,
        burst: c.write_burst,
        resync: c.resync,
        ..publish::PublishConfig::default()
    }
}

/// The Kubernetes client, if labels are to be written: the given kubeconfig,
/// else the in-cluster configuration when running in a pod, else none.
async fn kube_client(c: &Config) -> Result<Option<kube::Client>> {
    if c.kubernetes == config::KubeMode::Off {
        return Ok(None);
    }
    let cfg = if let Some(path) = &c.kubeconfig {
        let kc = kube::config::Kubeconfig::read_from(path)
            .map_err(|e| Error::Kube(format!("cannot read kubeconfig {}: {e}", path.display())))?;
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| Error::Kube(format!("kubeconfig {}: {e}", path.display())))?
    } else if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        kube::Config::incluster()
            .map_err(|e| Error::Kube(format!("in-cluster configuration: {e}")))?
    } else {
        return Ok(None);
    };
    kube::Client::try_from(cfg)
        .map(Some)
        .map_err(|e| Error::Kube(e.to_string()))
}

/// Run both gRPC services until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    if config.bandwidth_tests && config.bandwidth_max_bytes > config.bandwidth_budget {
        return Err(Error::Config {
            name: config::ENV_BANDWIDTH_MAX_BYTES,
            message: format!(
                "one test may send {} bytes but a node's hourly budget ({}) is {} bytes, so no test could ever run; lower the first or raise the second",
                config.bandwidth_max_bytes,
                config::ENV_BANDWIDTH_BUDGET,
                config.bandwidth_budget
            ),
        });
    }
    let agent_listener = listen(config.agent_listen).await?;
    let query_listener = listen(config.query_listen).await?;
    let (metrics, registry) = metrics::Metrics::new();
    let state = state::spawn_with_metrics(state_config(&config), metrics.state.clone());
    // Bound now, so a port conflict stops start-up with a clear error.
    let metrics_listener = metrics::bind(config.metrics_listen).await?;
    let mut nodes = None;
    let sink = if config.dry_run {
        info!("dry run: Node patches are printed, not sent");
        Some(publish::Sink::DryRun(Box::new(std::io::stdout())))
    } else {
        match kube_client(&config).await? {
            Some(client) => {
                nodes = Some(publish::watch_nodes(client.clone()));
                Some(publish::Sink::Kube(Box::new(
                    kube_writer::NodeWriter::with_metrics(client, metrics.writer.clone()),
                )))
            }
            None => {
                info!(
                    "no Kubernetes configuration (not in a pod, no --kubeconfig): Node labels are not written"
                );
                None
            }
        }
    };
    if let Some(sink) = sink {
        tokio::spawn(publish::run(
            publish_config(&config),
            sink,
            state.subscribe_inferred(),
            nodes.clone(),
        ));
    }
    let services = service::Services::new(state).with_nodes(nodes);
    // One replica (leader election comes with high availability): it writes.
    metrics.leader.set(1);
    let ready = netaware_common::observe::Readiness::new("starting");
    ready.set_ready();
    tokio::spawn(netaware_common::observe::serve(
        metrics_listener,
        std::sync::Arc::new(registry),
        ready,
    ));
    info!(agent = %config.agent_listen, query = %config.query_listen, "aggregator listening");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let agent_server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(AgentServiceServer::new(services.clone()))
        .serve_with_incoming_shutdown(
            TcpListenerStream::new(agent_listener),
            stopped(stop_rx.clone()),
        );
    let query_server = tonic::transport::Server::builder()
        .add_service(QueryServiceServer::new(services))
        .serve_with_incoming_shutdown(TcpListenerStream::new(query_listener), stopped(stop_rx));
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let (a, q) = tokio::join!(agent_server, query_server);
    a?;
    q?;
    info!("aggregator stopped");
    Ok(())
}
