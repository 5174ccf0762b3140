//! Agent settings: flags, each with an environment variable (the DaemonSet
//! sets `NODE_NAME` and `NODE_IP` from the downward API).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::Parser;
use netaware_common::{default_text, format_duration, parse_duration, parse_positive};

pub const ENV_NODE_NAME: &str = "NODE_NAME";
pub const ENV_NODE_IP: &str = "NODE_IP";
pub const ENV_AGGREGATOR: &str = "NETAWARE_AGGREGATOR";
pub const ENV_TOKEN_FILE: &str = "NETAWARE_TOKEN_FILE";
pub const ENV_CA_FILE: &str = "NETAWARE_CA_FILE";
pub const ENV_STAMP_PORT: &str = "NETAWARE_STAMP_PORT";
pub const ENV_STAMP_BIND: &str = "NETAWARE_STAMP_BIND";
pub const ENV_ICMP: &str = "NETAWARE_ICMP";
pub const ENV_BANDWIDTH_PORT: &str = "NETAWARE_BANDWIDTH_PORT";
pub const ENV_METRICS_LISTEN: &str = "NETAWARE_METRICS_LISTEN";
pub const ENV_METRICS_MAX_PEERS: &str = "NETAWARE_METRICS_MAX_PEERS";
pub const ENV_MAX_PROBE_RATE: &str = "NETAWARE_MAX_PROBE_RATE";
pub const ENV_MAX_BUFFERED_WINDOWS: &str = "NETAWARE_MAX_BUFFERED_WINDOWS";
pub const ENV_BACKOFF_INITIAL: &str = "NETAWARE_BACKOFF_INITIAL";
pub const ENV_BACKOFF_MAX: &str = "NETAWARE_BACKOFF_MAX";
pub const ENV_REFLECTOR_MAX_PPS: &str = "NETAWARE_REFLECTOR_MAX_PPS";
pub const ENV_REFLECTOR_MAX_PPS_PER_SOURCE: &str = "NETAWARE_REFLECTOR_MAX_PPS_PER_SOURCE";

/// STAMP's registered port is 862, which needs CAP_NET_BIND_SERVICE; the
/// agent runs with NET_RAW only, so it defaults to an unprivileged port.
pub const DEFAULT_STAMP_PORT: u16 = 8620;
pub const DEFAULT_BANDWIDTH_PORT: u16 = 8621;
/// Host network: a port of its own beside the aggregator's 9464.
pub const DEFAULT_METRICS_LISTEN: &str = "0.0.0.0:9465";
pub const DEFAULT_MAX_PROBE_RATE: f64 = 1000.0;
pub const DEFAULT_MAX_BUFFERED_WINDOWS: usize = 4096;
/// Test packets a second the reflector answers from all sources: twice
/// what the agent itself may send (`DEFAULT_MAX_PROBE_RATE`), since in a
/// full mesh every peer probes it as often as it probes them.
pub const DEFAULT_REFLECTOR_MAX_PPS: f64 = 2.0 * DEFAULT_MAX_PROBE_RATE;
/// Test packets a second from one source address: a peer sends 5 a second
/// per method with the default plan, 10 in the lab.
pub const DEFAULT_REFLECTOR_MAX_PPS_PER_SOURCE: f64 = 100.0;

/// First reconnect delay; it doubles per failure.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(500);
/// Largest reconnect delay: a restarted aggregator has every agent back
/// within half a minute.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The aggregator's agent port through the chart's Service name.
fn default_aggregator() -> String {
    format!("http://netaware-aggregator:{}", netaware_proto::AGENT_PORT)
}

/// netaware-agent: measures RTT, jitter and loss to peer nodes and streams
/// the results to the aggregator.
#[derive(Debug, Clone, Parser)]
#[command(name = "netaware-agent", version)]
pub struct Config {
    /// Kubernetes Node name this agent runs on (a DNS subdomain).
    #[arg(long, env = ENV_NODE_NAME, value_parser = parse_node_name)]
    pub node_name: String,

    /// Address peers probe this node on (the node IP).
    #[arg(long, env = ENV_NODE_IP)]
    pub node_ip: IpAddr,

    /// Aggregator's agent-facing gRPC endpoint.
    #[arg(long, env = ENV_AGGREGATOR, default_value = default_text!(default_aggregator()), value_parser = parse_endpoint)]
    pub aggregator: String,

    /// PEM CA bundle that signed the aggregator's certificate, for an
    /// `https://` --aggregator; read again at every reconnect.
    #[arg(long, env = ENV_CA_FILE)]
    pub ca_file: Option<std::path::PathBuf>,

    /// File of the projected ServiceAccount token (audience `netaware`) to
    /// present to the aggregator; read again at every reconnect, as the
    /// kubelet rotates it. Without it no token is sent, which only an
    /// aggregator with --agent-auth none accepts.
    #[arg(long, env = ENV_TOKEN_FILE)]
    pub token_file: Option<std::path::PathBuf>,

    /// UDP port of this agent's STAMP reflector.
    #[arg(long, env = ENV_STAMP_PORT, default_value_t = DEFAULT_STAMP_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    pub stamp_port: u16,

    /// Address the STAMP reflector (and the bandwidth-test server) binds
    /// to; default: the node IP, so neither answers on other interfaces.
    #[arg(long, env = ENV_STAMP_BIND)]
    pub stamp_bind: Option<IpAddr>,

    /// TCP port of the bandwidth-test server (bound on the STAMP bind
    /// address); 0 turns bandwidth tests off for this node.
    #[arg(long, env = ENV_BANDWIDTH_PORT, default_value_t = DEFAULT_BANDWIDTH_PORT)]
    pub bandwidth_port: u16,

    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = ENV_METRICS_LISTEN, default_value = DEFAULT_METRICS_LISTEN)]
    pub metrics_listen: SocketAddr,

    /// Peers that get their own metric series (the first by name); bounds
    /// the series one agent exports in a large cluster.
    #[arg(long, env = ENV_METRICS_MAX_PEERS, default_value_t = crate::metrics::DEFAULT_MAX_PEERS, value_parser = netaware_common::parse_nonzero_usize)]
    pub metrics_max_peers: usize,

    /// Probe with ICMP echo as well as STAMP (needs CAP_NET_RAW or a
    /// ping_group_range that covers the agent's group).
    #[arg(long, env = ENV_ICMP, default_value_t = true, action = clap::ArgAction::Set)]
    pub icmp: bool,

    /// Upper bound on probes per second to all peers together; a plan asking
    /// for more is slowed down to this rate.
    #[arg(long, env = ENV_MAX_PROBE_RATE, default_value_t = DEFAULT_MAX_PROBE_RATE, value_parser = parse_positive)]
    pub max_probe_rate: f64,

    /// Report windows kept while the aggregator is unreachable; beyond this
    /// the oldest are dropped (and counted).
    #[arg(long, env = ENV_MAX_BUFFERED_WINDOWS, default_value_t = DEFAULT_MAX_BUFFERED_WINDOWS, value_parser = netaware_common::parse_nonzero_usize)]
    pub max_buffered_windows: usize,

    /// Test packets a second the STAMP reflector answers in all (more are
    /// dropped and counted).
    #[arg(long, env = ENV_REFLECTOR_MAX_PPS, default_value_t = DEFAULT_REFLECTOR_MAX_PPS, value_parser = parse_positive)]
    pub reflector_max_pps: f64,

    /// Test packets a second the STAMP reflector answers from one address.
    #[arg(long, env = ENV_REFLECTOR_MAX_PPS_PER_SOURCE, default_value_t = DEFAULT_REFLECTOR_MAX_PPS_PER_SOURCE, value_parser = parse_positive)]
    pub reflector_max_pps_per_source: f64,

    /// First reconnect delay; doubles per failure up to --backoff-max.
    #[arg(long, env = ENV_BACKOFF_INITIAL, default_value = default_text!(format_duration(DEFAULT_BACKOFF_INITIAL)), value_parser = parse_duration)]
    pub backoff_initial: Duration,

    /// Largest reconnect delay.
    #[arg(long, env = ENV_BACKOFF_MAX, default_value = default_text!(format_duration(DEFAULT_BACKOFF_MAX)), value_parser = parse_duration)]
    pub backoff_max: Duration,
}

impl Config {
    /// Settings that only make sense together: a token never goes out in
    /// clear text, and `https://` needs the CA to check the aggregator.
    pub fn check(&self) -> Result<(), crate::Error> {
        let tls = self.aggregator.starts_with("https://");
        if self.token_file.is_some() && !tls {
            return Err(crate::Error::Config {
                name: ENV_AGGREGATOR,
                message: format!(
                    "'{}' is plain text, and a token ({ENV_TOKEN_FILE}) must not be sent in clear: use https:// with {ENV_CA_FILE}, or no token for an aggregator with --agent-auth none",
                    self.aggregator
                ),
            });
        }
        if tls && self.ca_file.is_none() {
            return Err(crate::Error::Config {
                name: ENV_CA_FILE,
                message: format!(
                    "is required with an https:// aggregator ('{}'): the CA bundle that signed its certificate",
                    self.aggregator
                ),
            });
        }
        Ok(())
    }

    /// Where the reflector listens.
    pub fn stamp_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind_ip(), self.stamp_port)
    }

    /// Where the reflector and the bandwidth-test server bind.
    pub fn bind_ip(&self) -> IpAddr {
        self.stamp_bind.unwrap_or(self.node_ip)
    }
}

/// A Kubernetes Node name: DNS subdomain (RFC 1123), at most 253 characters.
pub fn parse_node_name(s: &str) -> Result<String, String> {
    if !netaware_model::labels::is_dns_subdomain(s) {
        return Err(format!(
            "'{s}' is not a valid node name (lower-case letters, digits, '-' and '.', at most 253 characters)"
        ));
    }
    Ok(s.to_string())
}

fn parse_endpoint(s: &str) -> Result<String, String> {
    if !(s.starts_with("http://") || s.starts_with("https://")) {
        return Err(format!("'{s}' must start with http:// or https://"));
    }
    tonic::transport::Endpoint::from_shared(s.to_string())
        .map(|_| s.to_string())
        .map_err(|e| format!("'{s}' is not a valid URI: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use netaware_common::{ArgsError, parse_args_from};

    #[test]
    fn node_names_follow_kubernetes_rules() {
        assert!(parse_node_name("dj-1").is_ok());
        assert!(parse_node_name("ip-10-0-0-1.ec2.internal").is_ok());
        for bad in ["", "Dj-1", "-a", "a-", "a..b", "a_b", &"x".repeat(254)] {
            assert!(parse_node_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bad_node_ip_names_the_variable() {
        let r = parse_args_from::<Config, _, _>(["a", "--node-name", "n1", "--node-ip", "nope"]);
        let Err(ArgsError::Usage(msg)) = r else {
            panic!("expected usage error")
        };
        assert!(msg.contains(ENV_NODE_IP), "{msg}");
    }

    #[test]
    fn defaults_are_documented_values() {
        let Ok(c) =
            parse_args_from::<Config, _, _>(["a", "--node-name", "n1", "--node-ip", "10.0.0.1"])
        else {
            panic!("expected success")
        };
        assert_eq!(c.stamp_port, DEFAULT_STAMP_PORT);
        assert_eq!(c.aggregator, "http://netaware-aggregator:7400");
        assert!(c.icmp);
        assert_eq!(c.backoff_max, Duration::from_secs(30));
    }

    #[test]
    fn zero_buffer_and_bad_durations_are_rejected() {
        for args in [
            [
                "a",
                "--node-name",
                "n1",
                "--node-ip",
                "10.0.0.1",
                "--max-buffered-windows",
                "0",
            ],
            [
                "a",
                "--node-name",
                "n1",
                "--node-ip",
                "10.0.0.1",
                "--backoff-max",
                "soon",
            ],
            [
                "a",
                "--node-name",
                "n1",
                "--node-ip",
                "10.0.0.1",
                "--aggregator",
                "grpc://x",
            ],
        ] {
            assert!(matches!(
                parse_args_from::<Config, _, _>(args),
                Err(ArgsError::Usage(_))
            ));
        }
    }
}
