//! Aggregator settings: flags, each with an environment variable.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use netaware_common::{
    default_text, format_bytes, format_duration, parse_duration, parse_duration_or_zero,
    parse_positive,
};
use netaware_model::groups::Thresholds;
use netaware_model::quality::Weights;

use crate::publish::PublishConfig;
use crate::service::QueryLimits;
use crate::state::StateConfig;

pub const ENV_AGENT_LISTEN: &str = "NETAWARE_AGENT_LISTEN";
pub const ENV_QUERY_LISTEN: &str = "NETAWARE_QUERY_LISTEN";
pub const ENV_PROBE_INTERVAL: &str = "NETAWARE_PROBE_INTERVAL";
pub const ENV_REPORT_INTERVAL: &str = "NETAWARE_REPORT_INTERVAL";
pub const ENV_LOSS_TIMEOUT: &str = "NETAWARE_LOSS_TIMEOUT";
pub const ENV_STALE_AFTER: &str = "NETAWARE_STALE_AFTER";
pub const ENV_SMOOTHING: &str = "NETAWARE_SMOOTHING";
pub const ENV_GROUP_THRESHOLDS: &str = "NETAWARE_GROUP_THRESHOLDS";
pub const ENV_GROUP_HYSTERESIS: &str = "NETAWARE_GROUP_HYSTERESIS";
pub const ENV_RECOMPUTE_INTERVAL: &str = "NETAWARE_RECOMPUTE_INTERVAL";
pub const ENV_QUALITY_WEIGHTS: &str = "NETAWARE_QUALITY_WEIGHTS";
pub const ENV_LABEL_PREFIX: &str = "NETAWARE_LABEL_PREFIX";
pub const ENV_KUBERNETES: &str = "NETAWARE_KUBERNETES";
pub const ENV_KUBECONFIG: &str = "KUBECONFIG";
pub const ENV_DRY_RUN: &str = "NETAWARE_DRY_RUN";
pub const ENV_WRITE_QPS: &str = "NETAWARE_WRITE_QPS";
pub const ENV_WRITE_BURST: &str = "NETAWARE_WRITE_BURST";
pub const ENV_RESYNC: &str = "NETAWARE_RESYNC";
pub const ENV_METRICS_LISTEN: &str = "NETAWARE_METRICS_LISTEN";
pub const ENV_BANDWIDTH_TESTS: &str = "NETAWARE_BANDWIDTH_TESTS";
pub const ENV_BANDWIDTH_STREAMS: &str = "NETAWARE_BANDWIDTH_STREAMS";
pub const ENV_BANDWIDTH_OMIT: &str = "NETAWARE_BANDWIDTH_OMIT";
pub const ENV_BANDWIDTH_DURATION: &str = "NETAWARE_BANDWIDTH_DURATION";
pub const ENV_BANDWIDTH_MAX_BYTES: &str = "NETAWARE_BANDWIDTH_MAX_BYTES";
pub const ENV_BANDWIDTH_BUDGET: &str = "NETAWARE_BANDWIDTH_BUDGET";
pub const ENV_BANDWIDTH_RETEST: &str = "NETAWARE_BANDWIDTH_RETEST";
pub const ENV_BANDWIDTH_CONCURRENCY: &str = "NETAWARE_BANDWIDTH_CONCURRENCY";

pub const ENV_QUERY_TIMEOUT: &str = "NETAWARE_QUERY_TIMEOUT";
pub const ENV_FORGET_AFTER: &str = "NETAWARE_FORGET_AFTER";
pub const ENV_MAX_PROBE_TARGETS: &str = "NETAWARE_MAX_PROBE_TARGETS";
pub const ENV_PLAN_ROTATION: &str = "NETAWARE_PLAN_ROTATION";
pub const ENV_MAX_WATCHERS: &str = "NETAWARE_MAX_WATCHERS";

pub const ENV_AGENT_AUTH: &str = "NETAWARE_AGENT_AUTH";
pub const ENV_QUERY_AUTH: &str = "NETAWARE_QUERY_AUTH";
pub const ENV_TLS: &str = "NETAWARE_TLS";
pub const ENV_TLS_CERT: &str = "NETAWARE_TLS_CERT";
pub const ENV_TLS_KEY: &str = "NETAWARE_TLS_KEY";
pub const ENV_AGENT_SERVICE_ACCOUNT: &str = "NETAWARE_AGENT_SERVICE_ACCOUNT";

pub const ENV_LEADER_ELECTION: &str = "NETAWARE_LEADER_ELECTION";
pub const ENV_LEASE_NAME: &str = "NETAWARE_LEASE_NAME";
pub const ENV_SERVICE_NAME: &str = "NETAWARE_SERVICE_NAME";
pub const ENV_LEASE_DURATION: &str = "NETAWARE_LEASE_DURATION";
pub const ENV_LEASE_GRACE: &str = "NETAWARE_LEASE_GRACE";
/// Set by the chart from the downward API.
pub const ENV_POD_NAME: &str = "POD_NAME";
pub const ENV_POD_NAMESPACE: &str = "POD_NAMESPACE";
pub const ENV_POD_IP: &str = "POD_IP";

/// Address of `/metrics`: a port of its own beside the agent's 9465 (both
/// may run on one host network).
pub const DEFAULT_METRICS_LISTEN: &str = "0.0.0.0:9464";

// Every other default is typed, in the settings it fills (the model's
// `PlanTiming`, `InferConfig`, `BandwidthConfig`, and `StateConfig`,
// `PublishConfig` here), and shown on the flags through `default_text!`: one
// definition each. `docs/configuration.md` and the chart repeat some; a test
// (tests/e2e/settings.rs) keeps them equal.

/// `0.0.0.0:port`: every interface.
fn any_addr(port: u16) -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], port))
}

fn state() -> StateConfig {
    StateConfig::default()
}

fn publish() -> PublishConfig {
    PublishConfig::default()
}

fn queries() -> QueryLimits {
    QueryLimits::default()
}

/// netaware-aggregator: collects agent measurements into a link-state
/// matrix and serves it over gRPC.
#[derive(Debug, Clone, Parser)]
#[command(name = "netaware-aggregator", version)]
pub struct Config {
    /// Address of the agent-facing gRPC service (AgentService).
    #[arg(long, env = ENV_AGENT_LISTEN, default_value = default_text!(any_addr(netaware_proto::AGENT_PORT)))]
    pub agent_listen: SocketAddr,

    /// Address of the query gRPC service (QueryService, used by the CLI).
    #[arg(long, env = ENV_QUERY_LISTEN, default_value = default_text!(any_addr(netaware_proto::QUERY_PORT)))]
    pub query_listen: SocketAddr,

    /// Interval between two probes from one node to one peer, per method.
    #[arg(long, env = ENV_PROBE_INTERVAL, default_value = default_text!(format_duration(state().timing.probe_interval)), value_parser = parse_duration)]
    pub probe_interval: Duration,

    /// Length of one report window.
    #[arg(long, env = ENV_REPORT_INTERVAL, default_value = default_text!(format_duration(state().timing.report_interval)), value_parser = parse_duration)]
    pub report_interval: Duration,

    /// A probe not answered within this time is lost.
    #[arg(long, env = ENV_LOSS_TIMEOUT, default_value = default_text!(format_duration(state().timing.loss_timeout)), value_parser = parse_duration)]
    pub loss_timeout: Duration,

    /// A link with no new window for this long is marked stale (kept until
    /// a node at either end is forgotten, --forget-after).
    #[arg(long, env = ENV_STALE_AFTER, default_value = default_text!(format_duration(state().stale_after)), value_parser = parse_duration)]
    pub stale_after: Duration,

    /// Weight of the newest window in the smoothed figures, in (0, 1].
    #[arg(long, env = ENV_SMOOTHING, default_value = default_text!(state().smoothing), value_parser = parse_smoothing)]
    pub smoothing: f64,

    /// RTT thresholds of the nested groups l1, l2, l3 (increasing), or
    /// `auto` to cut at the largest gaps of the clustering.
    #[arg(long, env = ENV_GROUP_THRESHOLDS, default_value = default_text!(state().infer.thresholds), value_parser = parse_thresholds)]
    pub group_thresholds: Thresholds,

    /// Recomputations a node's new groups must hold before it moves.
    #[arg(long, env = ENV_GROUP_HYSTERESIS, default_value = default_text!(state().infer.hysteresis), value_parser = clap::value_parser!(u32).range(1..))]
    pub group_hysteresis: u32,

    /// How often groups and quality are recomputed.
    #[arg(long, env = ENV_RECOMPUTE_INTERVAL, default_value = default_text!(format_duration(state().recompute_interval)), value_parser = parse_duration)]
    pub recompute_interval: Duration,

    /// Weights of the quality score's terms (docs/labels.md); names not
    /// given keep their default.
    #[arg(long, env = ENV_QUALITY_WEIGHTS, default_value = default_text!(state().infer.weights), value_parser = parse_weights)]
    pub quality_weights: Weights,

    /// Prefix of every label and annotation key we write (a DNS subdomain
    /// and '/'; never kubernetes.io or k8s.io).
    #[arg(long, env = ENV_LABEL_PREFIX, default_value = netaware_model::labels::DEFAULT_PREFIX, value_parser = parse_prefix)]
    pub label_prefix: String,

    /// Write Node labels: `auto` (in a cluster, or with a kubeconfig) or `off`.
    #[arg(long, env = ENV_KUBERNETES, value_enum, default_value_t = KubeMode::Auto)]
    pub kubernetes: KubeMode,

    /// Kubeconfig to use instead of the in-cluster configuration.
    #[arg(long, env = ENV_KUBECONFIG)]
    pub kubeconfig: Option<std::path::PathBuf>,

    /// Print the patches that would be sent, as YAML on stdout, and send nothing.
    #[arg(long, env = ENV_DRY_RUN)]
    pub dry_run: bool,

    /// Node writes per second (sustained).
    #[arg(long, env = ENV_WRITE_QPS, default_value = default_text!(publish().qps), value_parser = parse_positive)]
    pub write_qps: f64,

    /// Node writes allowed in a burst.
    #[arg(long, env = ENV_WRITE_BURST, default_value = default_text!(publish().burst), value_parser = clap::value_parser!(u32).range(1..))]
    pub write_burst: u32,

    /// Write every node again this often, changed or not.
    #[arg(long, env = ENV_RESYNC, default_value = default_text!(format_duration(publish().resync)), value_parser = parse_duration)]
    pub resync: Duration,

    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(long, env = ENV_METRICS_LISTEN, default_value = DEFAULT_METRICS_LISTEN)]
    pub metrics_listen: SocketAddr,

    /// Schedule TCP bandwidth tests between agents (docs/bandwidth.md).
    #[arg(long, env = ENV_BANDWIDTH_TESTS, default_value = default_text!(state().bandwidth.enabled), action = clap::ArgAction::Set)]
    pub bandwidth_tests: bool,

    /// Parallel TCP streams per bandwidth test.
    #[arg(long, env = ENV_BANDWIDTH_STREAMS, default_value = default_text!(state().bandwidth.streams), value_parser = clap::value_parser!(u32).range(1..=64))]
    pub bandwidth_streams: u32,

    /// Leading part of a test left out of the result (TCP slow start).
    #[arg(long, env = ENV_BANDWIDTH_OMIT, default_value = default_text!(format_duration(state().bandwidth.omit)), value_parser = parse_duration_or_zero)]
    pub bandwidth_omit: Duration,

    /// Measured part of a test.
    #[arg(long, env = ENV_BANDWIDTH_DURATION, default_value = default_text!(format_duration(state().bandwidth.duration)), value_parser = parse_duration)]
    pub bandwidth_duration: Duration,

    /// Payload bytes one test may send at most (e.g. 1GiB, 500MB).
    #[arg(long, env = ENV_BANDWIDTH_MAX_BYTES, default_value = default_text!(format_bytes(state().bandwidth.max_bytes_per_test)), value_parser = parse_nonzero_bytes)]
    pub bandwidth_max_bytes: u64,

    /// Test bytes a node may send or receive per sliding hour; never exceeded.
    #[arg(long, env = ENV_BANDWIDTH_BUDGET, default_value = default_text!(format_bytes(state().bandwidth.budget_bytes_per_hour)), value_parser = parse_nonzero_bytes)]
    pub bandwidth_budget: u64,

    /// A pair is tested again once its latest test is this old.
    #[arg(long, env = ENV_BANDWIDTH_RETEST, default_value = default_text!(format_duration(state().bandwidth.retest_after)), value_parser = parse_duration)]
    pub bandwidth_retest: Duration,

    /// Bandwidth tests running at once in the whole cluster.
    #[arg(long, env = ENV_BANDWIDTH_CONCURRENCY, default_value = default_text!(state().bandwidth.max_concurrent), value_parser = netaware_common::parse_nonzero_usize)]
    pub bandwidth_concurrency: usize,

    /// A node whose agent has been away this long is forgotten (matrix,
    /// plans, groups, Place) once the Kubernetes Node list no longer has
    /// it; without Kubernetes, once away this long.
    #[arg(long, env = ENV_FORGET_AFTER, default_value = default_text!(format_duration(state().forget_after)), value_parser = parse_duration)]
    pub forget_after: Duration,

    /// Probe targets per agent at most; a cluster of at most this many
    /// nodes plus one is probed as a full mesh, a larger one by tiered,
    /// rotating plans (docs/architecture.md).
    #[arg(long, env = ENV_MAX_PROBE_TARGETS, default_value = default_text!(state().plan.max_targets), value_parser = netaware_common::parse_nonzero_usize)]
    pub max_probe_targets: usize,

    /// How often the sparse plans' representatives and samples rotate
    /// (links no plan has refreshed for three rotations are dropped).
    #[arg(long, env = ENV_PLAN_ROTATION, default_value = default_text!(format_duration(state().plan.rotate_every)), value_parser = parse_duration)]
    pub plan_rotation: Duration,

    /// Longest a query may take (waiting for a free slot included); a
    /// placement search still running then is stopped.
    #[arg(long, env = ENV_QUERY_TIMEOUT, default_value = default_text!(format_duration(queries().timeout)), value_parser = parse_duration)]
    pub query_timeout: Duration,

    /// WatchLinks streams open at once; more are refused.
    #[arg(long, env = ENV_MAX_WATCHERS, default_value = default_text!(queries().max_watchers), value_parser = netaware_common::parse_nonzero_usize)]
    pub max_watchers: usize,

    /// Serve both gRPC ports over TLS (needs --tls-cert and --tls-key).
    /// `false` sends tokens, plans and grants in clear text, so it is
    /// allowed only with --agent-auth none, and logged loudly.
    #[arg(long, env = ENV_TLS, default_value_t = true, action = clap::ArgAction::Set)]
    pub tls: bool,

    /// PEM certificate chain of both gRPC ports (the chart mounts it from
    /// a Secret); read again every 10 s, a change applies to new
    /// connections.
    #[arg(long, env = ENV_TLS_CERT)]
    pub tls_cert: Option<std::path::PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = ENV_TLS_KEY)]
    pub tls_key: Option<std::path::PathBuf>,

    /// How agent sessions prove which node they speak for: `token` (a
    /// projected ServiceAccount token, reviewed by the API server) or
    /// `none` (anyone who reaches the agent port may claim any node: labs
    /// and tests without an API server only; logged loudly).
    #[arg(long, env = ENV_AGENT_AUTH, value_enum, default_value_t = AuthMode::Token)]
    pub agent_auth: AuthMode,

    /// How queries are authenticated and authorized: `token` (a
    /// Kubernetes bearer token, reviewed with the API server, then a
    /// SubjectAccessReview: `get nodes` to read, `create` on
    /// /netaware/place to place) or `none` (anyone who reaches the query
    /// port may ask anything; logged loudly).
    #[arg(long, env = ENV_QUERY_AUTH, value_enum, default_value_t = AuthMode::Token)]
    pub query_auth: AuthMode,

    /// The agents' ServiceAccount, NAMESPACE/NAME: only its tokens are
    /// accepted (required with --agent-auth token; the chart sets it).
    #[arg(long, env = ENV_AGENT_SERVICE_ACCOUNT)]
    pub agent_service_account: Option<crate::auth::ServiceAccount>,

    /// Elect one leader among replicas through a Lease (needs Kubernetes).
    /// Followers forward agent and query connections to the leader.
    #[arg(long, env = ENV_LEADER_ELECTION, default_value_t = false, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// The aggregator's Service: followers forward only to a ready endpoint
    /// of it (required with leader election; the chart sets it).
    #[arg(long, env = ENV_SERVICE_NAME)]
    pub service_name: Option<String>,

    /// Name of the Lease the replicas compete for.
    #[arg(long, env = ENV_LEASE_NAME, default_value = crate::leader::DEFAULT_LEASE_NAME)]
    pub lease_name: String,

    /// A leader that has not renewed its lease for this long is replaced
    /// (whole seconds).
    #[arg(long, env = ENV_LEASE_DURATION, default_value = crate::leader::DEFAULT_LEASE_DURATION, value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// The leader renews this long before its lease would expire (whole
    /// seconds, shorter than the lease duration).
    #[arg(long, env = ENV_LEASE_GRACE, default_value = crate::leader::DEFAULT_LEASE_GRACE, value_parser = parse_duration)]
    pub lease_grace: Duration,

    /// This pod's name (leader election).
    #[arg(long, env = ENV_POD_NAME)]
    pub pod_name: Option<String>,

    /// Namespace of the Lease: this pod's namespace (leader election).
    #[arg(long, env = ENV_POD_NAMESPACE)]
    pub pod_namespace: Option<String>,

    /// This pod's IP: followers forward connections to the leader's IP on
    /// the same ports (leader election).
    #[arg(long, env = ENV_POD_IP)]
    pub pod_ip: Option<std::net::IpAddr>,
}

fn parse_nonzero_bytes(s: &str) -> Result<u64, String> {
    match netaware_common::parse_bytes(s)? {
        0 => Err(format!("'{s}' must be more than zero bytes")),
        b => Ok(b),
    }
}

/// How agent sessions or queries are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// A bearer token the API server reviews (agents: a projected token
    /// bound to the agent's pod and node).
    Token,
    /// No authentication: anyone may speak for any node, or ask anything.
    /// Insecure.
    None,
}

/// Whether to write Node labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KubeMode {
    /// In-cluster configuration, or the kubeconfig if one is given; off otherwise.
    Auto,
    /// Never contact a Kubernetes API server.
    Off,
}

fn parse_prefix(s: &str) -> Result<String, String> {
    netaware_model::labels::check_prefix(s)
        .map(|()| s.to_string())
        .map_err(|e| e.to_string())
}

/// `auto` or three increasing durations such as `500us,2ms,10ms` (µs inside).
fn parse_thresholds(s: &str) -> Result<Thresholds, String> {
    if s.trim() == "auto" {
        return Ok(Thresholds::Auto);
    }
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let [a, b, c] = parts[..] else {
        return Err(format!(
            "'{s}' must be `auto` or three RTTs like 500us,2ms,10ms"
        ));
    };
    let mut v = [0.0; 3];
    for (k, p) in [a, b, c].iter().enumerate() {
        let d = humantime::parse_duration(p)
            .map_err(|e| format!("'{p}' in '{s}' is not a duration like 500us or 2ms: {e}"))?;
        v[k] = d.as_secs_f64() * 1e6;
    }
    if !(v[0] > 0.0 && v[0] < v[1] && v[1] < v[2]) {
        return Err(format!(
            "'{s}': the three thresholds must be positive and increasing"
        ));
    }
    Ok(Thresholds::Fixed(v))
}

/// `name=weight,...` over loss, rtt-p50, rtt-p99, jitter, bandwidth.
fn parse_weights(s: &str) -> Result<Weights, String> {
    let mut w = Weights::default();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = part
            .split_once('=')
            .ok_or_else(|| format!("'{part}' must look like loss=0.35"))?;
        let v: f64 = value
            .trim()
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| format!("weight '{value}' of {name} must be a number >= 0"))?;
        match name.trim() {
            "loss" => w.loss = v,
            "rtt-p50" => w.rtt_p50 = v,
            "rtt-p99" => w.rtt_p99 = v,
            "jitter" => w.jitter = v,
            "bandwidth" => w.bandwidth = v,
            other => {
                return Err(format!(
                    "unknown weight '{other}' (known: loss, rtt-p50, rtt-p99, jitter, bandwidth)"
                ));
            }
        }
    }
    if w.loss + w.rtt_p50 + w.rtt_p99 + w.jitter + w.bandwidth <= 0.0 {
        return Err("at least one quality weight must be greater than 0".into());
    }
    Ok(w)
}

fn parse_smoothing(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(format!("'{s}' must be a number in (0, 1]")),
    }
}

#[cfg(test)]
mod tests;
