//! Aggregator settings: flags, each with an environment variable.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

use netaware_model::groups::Thresholds;
use netaware_model::quality::Weights;

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

pub const ENV_LEADER_ELECTION: &str = "NETAWARE_LEADER_ELECTION";
pub const ENV_LEASE_NAME: &str = "NETAWARE_LEASE_NAME";
pub const ENV_LEASE_DURATION: &str = "NETAWARE_LEASE_DURATION";
pub const ENV_LEASE_GRACE: &str = "NETAWARE_LEASE_GRACE";
/// Set by the chart from the downward API.
pub const ENV_POD_NAME: &str = "POD_NAME";
pub const ENV_POD_NAMESPACE: &str = "POD_NAMESPACE";
pub const ENV_POD_IP: &str = "POD_IP";

pub const DEFAULT_AGENT_LISTEN: &str = "0.0.0.0:7400";
pub const DEFAULT_QUERY_LISTEN: &str = "0.0.0.0:7401";
/// 5 probes per second per peer and method.
pub const DEFAULT_PROBE_INTERVAL: &str = "200ms";
pub const DEFAULT_REPORT_INTERVAL: &str = "10s";
pub const DEFAULT_LOSS_TIMEOUT: &str = "2s";
/// Three missed report windows.
pub const DEFAULT_STALE_AFTER: &str = "30s";
pub const DEFAULT_SMOOTHING: f64 = 0.3;
/// Same site, same metro/zone, same region.
pub const DEFAULT_GROUP_THRESHOLDS: &str = "500us,2ms,10ms";
pub const DEFAULT_GROUP_HYSTERESIS: u32 = 3;
pub const DEFAULT_RECOMPUTE_INTERVAL: &str = "10s";
pub const DEFAULT_WRITE_QPS: f64 = 10.0;
pub const DEFAULT_WRITE_BURST: u32 = 100;
pub const DEFAULT_RESYNC: &str = "1h";
pub const DEFAULT_METRICS_LISTEN: &str = "0.0.0.0:9464";
pub const DEFAULT_BANDWIDTH_STREAMS: u32 = 4;
/// TCP slow start is over well within a second on data-centre RTTs.
pub const DEFAULT_BANDWIDTH_OMIT: &str = "1s";
pub const DEFAULT_BANDWIDTH_DURATION: &str = "3s";
/// 3 s at 2.5 Gbit/s; faster links end early at the cap, which is fine.
pub const DEFAULT_BANDWIDTH_MAX_BYTES: &str = "1GiB";
/// 16 full tests per node per hour at most.
pub const DEFAULT_BANDWIDTH_BUDGET: &str = "16GiB";
pub const DEFAULT_BANDWIDTH_RETEST: &str = "30m";
pub const DEFAULT_BANDWIDTH_CONCURRENCY: usize = 4;
pub const DEFAULT_QUALITY_WEIGHTS: &str =
    "loss=0.35,rtt-p50=0.25,rtt-p99=0.15,jitter=0.10,bandwidth=0.15";

/// netaware-aggregator: collects agent measurements into a link-state
/// matrix and serves it over gRPC.
#[derive(Debug, Clone, Parser)]
#[command(name = "netaware-aggregator", version)]
pub struct Config {
    /// Address of the agent-facing gRPC service (AgentService).
    #[arg(long, env = ENV_AGENT_LISTEN, default_value = DEFAULT_AGENT_LISTEN)]
    pub agent_listen: SocketAddr,

    /// Address of the query gRPC service (QueryService, used by the CLI).
    #[arg(long, env = ENV_QUERY_LISTEN, default_value = DEFAULT_QUERY_LISTEN)]
    pub query_listen: SocketAddr,

    /// Interval between two probes from one node to one peer, per method.
    #[arg(long, env = ENV_PROBE_INTERVAL, default_value = DEFAULT_PROBE_INTERVAL, value_parser = parse_duration)]
    pub probe_interval: Duration,

    /// Length of one report window.
    #[arg(long, env = ENV_REPORT_INTERVAL, default_value = DEFAULT_REPORT_INTERVAL, value_parser = parse_duration)]
    pub report_interval: Duration,

    /// A probe not answered within this time is lost.
    #[arg(long, env = ENV_LOSS_TIMEOUT, default_value = DEFAULT_LOSS_TIMEOUT, value_parser = parse_duration)]
    pub loss_timeout: Duration,

    /// A link with no new window for this long is marked stale (never deleted).
    #[arg(long, env = ENV_STALE_AFTER, default_value = DEFAULT_STALE_AFTER, value_parser = parse_duration)]
    pub stale_after: Duration,

    /// Weight of the newest window in the smoothed figures, in (0, 1].
    #[arg(long, env = ENV_SMOOTHING, default_value_t = DEFAULT_SMOOTHING, value_parser = parse_smoothing)]
    pub smoothing: f64,

    /// RTT thresholds of the nested groups l1, l2, l3 (increasing), or
    /// `auto` to cut at the largest gaps of the clustering.
    #[arg(long, env = ENV_GROUP_THRESHOLDS, default_value = DEFAULT_GROUP_THRESHOLDS, value_parser = parse_thresholds)]
    pub group_thresholds: Thresholds,

    /// Recomputations a node's new groups must hold before it moves.
    #[arg(long, env = ENV_GROUP_HYSTERESIS, default_value_t = DEFAULT_GROUP_HYSTERESIS, value_parser = clap::value_parser!(u32).range(1..))]
    pub group_hysteresis: u32,

    /// How often groups and quality are recomputed.
    #[arg(long, env = ENV_RECOMPUTE_INTERVAL, default_value = DEFAULT_RECOMPUTE_INTERVAL, value_parser = parse_duration)]
    pub recompute_interval: Duration,

    /// Weights of the quality score's terms (docs/labels.md); names not
    /// given keep their default.
    #[arg(long, env = ENV_QUALITY_WEIGHTS, default_value = DEFAULT_QUALITY_WEIGHTS, value_parser = parse_weights)]
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
    #[arg(long, env = ENV_WRITE_QPS, default_value_t = DEFAULT_WRITE_QPS, value_parser = parse_positive)]
    pub write_qps: f64,

    /// Node writes allowed in a burst.
    #[arg(long, env = ENV_WRITE_BURST, default_value_t = DEFAULT_WRITE_BURST, value_parser = clap::value_parser!(u32).range(1..))]
    pub write_burst: u32,

    /// Write every node again this often, changed or not.
    #[arg(long, env = ENV_RESYNC, default_value = DEFAULT_RESYNC, value_parser = parse_duration)]
    pub resync: Duration,

    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(long, env = ENV_METRICS_LISTEN, default_value = DEFAULT_METRICS_LISTEN)]
    pub metrics_listen: SocketAddr,

    /// Schedule TCP bandwidth tests between agents (docs/bandwidth.md).
    #[arg(long, env = ENV_BANDWIDTH_TESTS, default_value_t = true, action = clap::ArgAction::Set)]
    pub bandwidth_tests: bool,

    /// Parallel TCP streams per bandwidth test.
    #[arg(long, env = ENV_BANDWIDTH_STREAMS, default_value_t = DEFAULT_BANDWIDTH_STREAMS, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub bandwidth_streams: u32,

    /// Leading part of a test left out of the result (TCP slow start).
    #[arg(long, env = ENV_BANDWIDTH_OMIT, default_value = DEFAULT_BANDWIDTH_OMIT, value_parser = parse_duration_or_zero)]
    pub bandwidth_omit: Duration,

    /// Measured part of a test.
    #[arg(long, env = ENV_BANDWIDTH_DURATION, default_value = DEFAULT_BANDWIDTH_DURATION, value_parser = parse_duration)]
    pub bandwidth_duration: Duration,

    /// Payload bytes one test may send at most (e.g. 1GiB, 500MB).
    #[arg(long, env = ENV_BANDWIDTH_MAX_BYTES, default_value = DEFAULT_BANDWIDTH_MAX_BYTES, value_parser = parse_nonzero_bytes)]
    pub bandwidth_max_bytes: u64,

    /// Test bytes a node may send or receive per sliding hour; never exceeded.
    #[arg(long, env = ENV_BANDWIDTH_BUDGET, default_value = DEFAULT_BANDWIDTH_BUDGET, value_parser = parse_nonzero_bytes)]
    pub bandwidth_budget: u64,

    /// A pair is tested again once its latest test is this old.
    #[arg(long, env = ENV_BANDWIDTH_RETEST, default_value = DEFAULT_BANDWIDTH_RETEST, value_parser = parse_duration)]
    pub bandwidth_retest: Duration,

    /// Bandwidth tests running at once in the whole cluster.
    #[arg(long, env = ENV_BANDWIDTH_CONCURRENCY, default_value_t = DEFAULT_BANDWIDTH_CONCURRENCY, value_parser = netaware_common::parse_nonzero_usize)]
    pub bandwidth_concurrency: usize,

    /// Elect one leader among replicas through a Lease (needs Kubernetes).
    /// Followers forward agent and query connections to the leader.
    #[arg(long, env = ENV_LEADER_ELECTION, default_value_t = false, action = clap::ArgAction::Set)]
    pub leader_election: bool,

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

fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("'{s}' is not a duration like 500ms or 1s: {e}"))
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

fn parse_positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("'{s}' must be a positive number")),
    }
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

fn parse_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(format!("'{s}' must be longer than zero")),
        Err(e) => Err(format!("'{s}' is not a duration like 200ms or 10s: {e}")),
    }
}

fn parse_smoothing(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(format!("'{s}' must be a number in (0, 1]")),
    }
}

#[cfg(test)]
mod tests;
