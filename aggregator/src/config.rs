//! Aggregator settings: flags, each with an environment variable.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

pub const ENV_AGENT_LISTEN: &str = "NETAWARE_AGENT_LISTEN";
pub const ENV_QUERY_LISTEN: &str = "NETAWARE_QUERY_LISTEN";
pub const ENV_PROBE_INTERVAL: &str = "NETAWARE_PROBE_INTERVAL";
pub const ENV_REPORT_INTERVAL: &str = "NETAWARE_REPORT_INTERVAL";
pub const ENV_LOSS_TIMEOUT: &str = "NETAWARE_LOSS_TIMEOUT";
pub const ENV_STALE_AFTER: &str = "NETAWARE_STALE_AFTER";
pub const ENV_SMOOTHING: &str = "NETAWARE_SMOOTHING";

pub const DEFAULT_AGENT_LISTEN: &str = "0.0.0.0:7400";
pub const DEFAULT_QUERY_LISTEN: &str = "0.0.0.0:7401";
/// 5 probes per second per peer and method.
pub const DEFAULT_PROBE_INTERVAL: &str = "200ms";
pub const DEFAULT_REPORT_INTERVAL: &str = "10s";
pub const DEFAULT_LOSS_TIMEOUT: &str = "2s";
/// Three missed report windows.
pub const DEFAULT_STALE_AFTER: &str = "30s";
pub const DEFAULT_SMOOTHING: f64 = 0.3;

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
mod tests {
    use super::*;
    use netaware_common::{ArgsError, parse_args_from};

    #[test]
    fn defaults_parse() {
        let Ok(c) = parse_args_from::<Config, _, _>(["x"]) else {
            panic!("defaults must parse")
        };
        assert_eq!(c.probe_interval, Duration::from_millis(200));
        assert_eq!(c.agent_listen.port(), 7400);
    }

    #[test]
    fn the_state_default_matches_the_flag_defaults() {
        let Ok(c) = parse_args_from::<Config, _, _>(["x"]) else {
            panic!("defaults must parse")
        };
        assert_eq!(
            crate::state_config(&c),
            crate::state::StateConfig::default()
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (flag, env) in [
            ("--smoothing=0", ENV_SMOOTHING),
            ("--report-interval=0s", ENV_REPORT_INTERVAL),
            ("--agent-listen=nowhere", ENV_AGENT_LISTEN),
        ] {
            let Err(ArgsError::Usage(msg)) = parse_args_from::<Config, _, _>(["x", flag]) else {
                panic!("{flag} must be rejected")
            };
            assert!(msg.contains(env), "{msg}");
        }
    }
}
