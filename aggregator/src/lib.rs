//! netaware aggregator: the I/O shell around `netaware-model`. It collects
//! agent report windows into the model's link-state matrix, serves queries,
//! and writes the model's labels to Kubernetes Nodes.
//!
//! ```text
//! agents ──Session──▶ service::Services ──Command──▶ state (one task, owns the model's Matrix)
//! CLI ────Query─────▶ service::Services ──Command──▶      "
//!                                     state ──Inferred──▶ publish ──▶ kube_writer ──▶ Nodes
//! ```
//!
//! With `--leader-election`, `leader` decides which replica does all of
//! the above; the others forward their connections to it (`forward`).
//!
//! Public for the binaries and the cross-crate tests: [`run`], [`Config`],
//! [`service`], [`state`], [`publish`], [`kube_writer`] and [`selector`]
//! (the fuzz target parses selectors); the rest is internal.

pub mod auth;
mod config;
mod error;
mod forward;
pub mod kube_writer;
mod leader;
mod metrics;
pub mod publish;
mod refusals;
pub mod selector;
pub mod service;
pub mod state;
mod tls;

use std::future::Future;

use netaware_model::{bandwidth, infer, matrix, quality};
use netaware_proto::limits;
use netaware_proto::v1::agent_service_server::AgentServiceServer;
use netaware_proto::v1::query_service_server::QueryServiceServer;
use tokio::net::TcpListener;
use tracing::{info, warn};

pub use config::{AuthMode, Config};
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
        forget_after: c.forget_after,
        plan: netaware_model::plan::PlanConfig {
            max_targets: c.max_probe_targets,
            rotate_every: c.plan_rotation,
        },
        ..state::StateConfig::default()
    }
}

/// Limits of the query service from the command line.
pub fn query_limits(c: &Config) -> service::QueryLimits {
    service::QueryLimits {
        timeout: c.query_timeout,
        max_watchers: c.max_watchers,
    }
}

/// HTTP/2 settings both gRPC servers share: a bound on streams per
/// connection, and keepalive pings so a peer that vanished without closing
/// does not hold its connection (and what it holds) for ever.
fn server_builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .tcp_keepalive(Some(KEEPALIVE_INTERVAL))
}

/// Streams one connection may have open at once (an agent needs one, the
/// CLI a few).
const MAX_STREAMS_PER_CONNECTION: u32 = 32;
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

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

/// The Kubernetes configuration, if labels are to be written: the given
/// kubeconfig, else the in-cluster configuration when running in a pod, else
/// none.
async fn kube_config(c: &Config) -> Result<Option<kube::Config>> {
    if c.kubernetes == config::KubeMode::Off {
        return Ok(None);
    }
    if let Some(path) = &c.kubeconfig {
        let kc = kube::config::Kubeconfig::read_from(path)
            .map_err(|e| Error::Kube(format!("cannot read kubeconfig {}: {e}", path.display())))?;
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map(Some)
            .map_err(|e| Error::Kube(format!("kubeconfig {}: {e}", path.display())))
    } else if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        kube::Config::incluster()
            .map(Some)
            .map_err(|e| Error::Kube(format!("in-cluster configuration: {e}")))
    } else {
        Ok(None)
    }
}

/// The API server client and ServiceAccount that agent tokens are checked
/// against, with `--agent-auth token`; `None` with `none`, said loudly.
fn agent_identity(
    c: &Config,
    client: Option<&kube::Client>,
) -> Result<Option<(kube::Client, auth::ServiceAccount)>> {
    if c.agent_auth == AuthMode::None {
        warn!(
            "AGENT AUTHENTICATION IS OFF (--agent-auth none): anyone who reaches the agent port can speak for any node and change what the scheduler sees; for labs and tests only"
        );
        return Ok(None);
    }
    let client = client.ok_or_else(|| Error::Config {
        name: config::ENV_AGENT_AUTH,
        message: "`token` needs a Kubernetes API server to review agent tokens: run in a pod or give --kubeconfig (and not --kubernetes off); only a lab or test without one may set --agent-auth none".into(),
    })?;
    let sa = c.agent_service_account.clone().ok_or_else(|| Error::Config {
        name: config::ENV_AGENT_SERVICE_ACCOUNT,
        message: "is required with --agent-auth token: the agents' ServiceAccount as NAMESPACE/NAME (the chart sets it)".into(),
    })?;
    info!(agents = %sa, "agent sessions need a token of this ServiceAccount bound to their node");
    Ok(Some((client.clone(), sa)))
}

/// The API server that reviews query tokens with `--query-auth token`;
/// `None` with `none`, said loudly.
fn query_identity(c: &Config, client: Option<&kube::Client>) -> Result<Option<kube::Client>> {
    if c.query_auth == AuthMode::None {
        warn!(
            "QUERY AUTHENTICATION IS OFF (--query-auth none): anyone who reaches the query port can read the matrix and ask placements; for labs and tests only"
        );
        return Ok(None);
    }
    let client = client.ok_or_else(|| Error::Config {
        name: config::ENV_QUERY_AUTH,
        message: "`token` needs a Kubernetes API server to review query tokens: run in a pod or give --kubeconfig; only a lab or test without one may set --query-auth none".into(),
    })?;
    info!(
        "queries need a Kubernetes bearer token allowed by RBAC (get nodes; create /netaware/place)"
    );
    Ok(Some(client.clone()))
}

/// The TLS acceptor of both gRPC ports; `None` with `--tls false`, which
/// only `--agent-auth none` allows (tokens must not travel in clear text).
fn tls_acceptor(c: &Config) -> Result<Option<tokio_rustls::TlsAcceptor>> {
    if !c.tls {
        if c.agent_auth != AuthMode::None || c.query_auth != AuthMode::None {
            return Err(Error::Config {
                name: config::ENV_TLS,
                message: "`false` would send tokens in clear text: give --tls-cert and --tls-key, or (labs and tests only) --agent-auth none and --query-auth none".into(),
            });
        }
        warn!(
            "TLS IS OFF (--tls false): plans, grants and measurements cross the network in clear text; for labs and tests only"
        );
        return Ok(None);
    }
    match (&c.tls_cert, &c.tls_key) {
        (Some(cert), Some(key)) => tls::acceptor(cert, key).map(Some),
        _ => Err(Error::Config {
            name: config::ENV_TLS_CERT,
            message: format!(
                "TLS is on (the default): give the serving certificate and key ({} and {}; the chart mounts them), or set --tls false for a lab without agent authentication",
                config::ENV_TLS_CERT,
                config::ENV_TLS_KEY
            ),
        }),
    }
}

/// The election settings when `--leader-election` is on, checked.
pub fn election_config(c: &Config) -> Result<Option<leader::ElectionConfig>> {
    if !c.leader_election {
        return Ok(None);
    }
    let missing = |name: &'static str| Error::Config {
        name,
        message: "is required with leader election (the Helm chart sets it from the downward API)"
            .into(),
    };
    let pod = c
        .pod_name
        .clone()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| missing(config::ENV_POD_NAME))?;
    if c.service_name.as_deref().is_none_or(str::is_empty) {
        return Err(Error::Config {
            name: config::ENV_SERVICE_NAME,
            message: "is required with leader election: followers forward only to a ready endpoint of the aggregator's Service (the Helm chart sets it)".into(),
        });
    }
    let namespace = c
        .pod_namespace
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| missing(config::ENV_POD_NAMESPACE))?;
    let ip = c.pod_ip.ok_or_else(|| missing(config::ENV_POD_IP))?;
    leader::ElectionConfig::new(
        c.lease_name.clone(),
        namespace,
        leader::Identity::new(&pod, ip),
        c.lease_duration,
        c.lease_grace,
        (config::ENV_LEASE_DURATION, config::ENV_LEASE_GRACE),
    )
    .map(Some)
}

/// How long the servers may take to finish after a stop before we leave
/// anyway (agent sessions are long-lived streams): short enough that a
/// SIGTERM ends the process within 5 s, whatever is running.
const SERVER_DRAIN: std::time::Duration = std::time::Duration::from_secs(3);

/// Run both gRPC services until `shutdown` resolves (or, with leader
/// election, until this replica loses the lease: `Err(LeadershipLost)`).
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
    let election = election_config(&config)?;
    let kube_cfg = kube_config(&config).await?;
    if election.is_some() && kube_cfg.is_none() {
        return Err(Error::Config {
            name: config::ENV_LEADER_ELECTION,
            message: "leader election needs a Kubernetes API server: run in a pod or give --kubeconfig (and not --kubernetes off)".into(),
        });
    }
    let client = kube_cfg
        .clone()
        .map(kube::Client::try_from)
        .transpose()
        .map_err(|e| Error::Kube(e.to_string()))?;
    let agents = agent_identity(&config, client.as_ref())?;
    let query_client = query_identity(&config, client.as_ref())?;
    let tls = tls_acceptor(&config)?;
    let agent_listener = listen(config.agent_listen).await?;
    let query_listener = listen(config.query_listen).await?;
    let (metrics, registry) = metrics::Metrics::new();
    let state = state::spawn_with_metrics(state_config(&config), metrics.state.clone());
    // Bound now, so a port conflict stops start-up with a clear error.
    let metrics_listener = metrics::bind(config.metrics_listen).await?;
    // Alone, this replica leads; with an election it starts as a follower.
    let (role_tx, role) = tokio::sync::watch::channel(if election.is_some() {
        leader::Role::Follower { leader: None }
    } else {
        leader::Role::Leader
    });
    // Watched whenever there is an API server: the label writer, the
    // probe-address check and forgetting departed nodes all read them.
    let nodes = client.clone().map(publish::watch_nodes);
    let sink = if config.dry_run {
        info!("dry run: Node patches are printed, not sent");
        Some(publish::Sink::DryRun(Box::new(std::io::stdout())))
    } else {
        match &client {
            Some(client) => Some(publish::Sink::Kube(Box::new(
                kube_writer::NodeWriter::with_metrics(client.clone(), metrics.writer.clone()),
            ))),
            None => {
                info!(
                    "no Kubernetes configuration (not in a pod, no --kubeconfig): Node labels are not written"
                );
                None
            }
        }
    };
    if let Some(list) = nodes.clone() {
        tokio::spawn(feed_node_list(
            list,
            state.clone(),
            config.recompute_interval,
        ));
    }
    if let Some(sink) = sink {
        // Only the leader writes, and it stops the moment it is not.
        let mut r = role.clone();
        let (cfg, state, list) = (publish_config(&config), state.clone(), nodes.clone());
        tokio::spawn(async move {
            if r.wait_for(|r| *r == leader::Role::Leader).await.is_err() {
                return;
            }
            let leading = async {
                // Everything recomputed before the seeding would carry
                // fresh group ids: the publisher starts after it.
                let mut inferred = state.subscribe_inferred();
                inferred.borrow_and_update();
                if let Some(list) = &list {
                    seed_groups(list, &state, &cfg.prefix).await;
                }
                let store = list.map(|l| l.store().clone());
                publish::run(cfg, sink, inferred, store).await;
            };
            tokio::select! {
                () = leading => {}
                _ = r.wait_for(|r| *r != leader::Role::Leader) => {}
            }
        });
    }
    let heartbeat = state.heartbeat();
    let reviewer = agents.map(|(client, sa)| {
        std::sync::Arc::new(auth::Reviewer::new(
            client,
            sa,
            metrics.auth.reviews.clone(),
        ))
    });
    let services = service::Services::with_limits(state, query_limits(&config))
        .with_nodes(nodes)
        .with_label_prefix(config.label_prefix.clone())
        .with_agent_auth(reviewer, metrics.auth.clone())
        .with_query_auth(query_client.map(|c| {
            std::sync::Arc::new(auth::Queriers::new(c, metrics.auth.query_reviews.clone()))
        }));
    let ready = netaware_common::observe::Readiness::new("starting").with_heartbeat(heartbeat);
    tokio::spawn(follow_role(
        role.clone(),
        ready.clone(),
        metrics.leader.clone(),
    ));
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
    let elected = match (election, kube_cfg) {
        (Some(cfg), Some(kube_cfg)) => {
            let log = leader::RenewalLog::new(&cfg.lease_path());
            let lease_client = kube::client::ClientBuilder::try_from(kube_cfg)
                .map_err(|e| Error::Kube(e.to_string()))?
                .with_layer(&log)
                .build();
            let stop = stop_tx.clone();
            let until = stopped(stop_rx.clone());
            tokio::spawn(async move {
                let r = leader::run(lease_client, cfg, log, role_tx, until).await;
                // Lost (or failed): stop serving at once.
                stop.send_replace(true);
                r
            })
        }
        _ => {
            let until = stopped(stop_rx.clone());
            tokio::spawn(async move {
                until.await;
                drop(role_tx);
                Ok(())
            })
        }
    };
    // Followers forward only to a ready endpoint of our own Service.
    let guard = match (
        &config.pod_ip,
        &config.pod_namespace,
        &config.service_name,
        &client,
    ) {
        (Some(own), Some(ns), Some(svc), Some(client)) if config.leader_election => {
            Some(forward::Guard {
                own: *own,
                ready: forward::watch_endpoints(client.clone(), ns, svc),
            })
        }
        _ => None,
    };
    let agent_server = server_builder()
        .add_service(
            AgentServiceServer::new(services.clone())
                .max_decoding_message_size(limits::MAX_AGENT_MESSAGE_BYTES)
                .max_encoding_message_size(limits::MAX_AGGREGATOR_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(
            tls::serve(
                forward::incoming(agent_listener, role.clone(), guard.clone()),
                tls.clone(),
            ),
            stopped(stop_rx.clone()),
        );
    let query_server = server_builder()
        .add_service(
            QueryServiceServer::new(services)
                .max_decoding_message_size(limits::MAX_QUERY_REQUEST_BYTES)
                .max_encoding_message_size(limits::MAX_QUERY_RESPONSE_BYTES),
        )
        .serve_with_incoming_shutdown(
            tls::serve(forward::incoming(query_listener, role, guard), tls),
            stopped(stop_rx.clone()),
        );
    tokio::spawn(async move {
        shutdown.await;
        stop_tx.send_replace(true);
    });
    let drained = async {
        stopped(stop_rx).await;
        tokio::time::sleep(SERVER_DRAIN).await;
    };
    let served = tokio::select! {
        (a, q) = async { tokio::join!(agent_server, query_server) } => a.and(q),
        () = drained => Ok(()),
    };
    let elected = elected
        .await
        .map_err(|e| Error::Election(format!("the election task failed: {e}")))?;
    elected?;
    served?;
    info!("aggregator stopped");
    Ok(())
}

/// How long a new leader waits for the Node list before it starts without
/// the group ids the Nodes carry.
const NODE_LIST_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Seed the state owner's group ids from the labels on the Nodes: a new
/// leader keeps the ids the last one published instead of numbering every
/// group afresh (the review's S12).
async fn seed_groups(list: &publish::NodeList, state: &state::StateHandle, prefix: &str) {
    if !tokio::time::timeout(NODE_LIST_WAIT, list.ready())
        .await
        .unwrap_or(false)
    {
        tracing::warn!("the Node list did not load in 30 s: group ids start afresh");
        return;
    }
    let assignment: netaware_model::groups::Assignment = list
        .store()
        .state()
        .iter()
        .filter_map(|n| {
            let labels = n.metadata.labels.as_ref()?;
            let ids = netaware_model::labels::groups_from_labels(prefix, labels)?;
            Some((n.metadata.name.clone()?, ids))
        })
        .collect();
    if let Err(e) = state.seed_groups(assignment).await {
        tracing::warn!(error = %e, "could not seed group ids; they start afresh");
    }
}

/// Tell the state owner the cluster's Node names every `every`, so nodes
/// deleted from the cluster are forgotten.
async fn feed_node_list(
    list: publish::NodeList,
    state: state::StateHandle,
    every: std::time::Duration,
) {
    if !list.ready().await {
        return;
    }
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let names = list
            .store()
            .state()
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        if state
            .send(state::Command::NodeList { names })
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Keep readiness and the leader gauge in step with the role.
async fn follow_role(
    mut role: tokio::sync::watch::Receiver<leader::Role>,
    ready: netaware_common::observe::Readiness,
    leader_gauge: prometheus_client::metrics::gauge::Gauge,
) {
    loop {
        let r = *role.borrow_and_update();
        leader_gauge.set(i64::from(r == leader::Role::Leader));
        match r.not_ready_reason() {
            None => ready.set_ready(),
            Some(why) => ready.set_not_ready(why),
        }
        if role.changed().await.is_err() {
            return;
        }
    }
}
