//! The command lines of the processes a lab starts: the API server double,
//! the aggregator and one agent per node. Each is a pure function of the
//! lab's options, so what the lab asks of the binaries can be read (and
//! tested) in one place; `Lab::start` only spawns them.

use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use super::secure::Security;
use super::{AGENT_PORT, BandwidthOptions, Options};
use crate::netns::BRIDGE_IP;

/// A program and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CommandLine {
    pub program: OsString,
    pub args: Vec<OsString>,
}

impl CommandLine {
    fn new(program: impl Into<OsString>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
        }
    }

    fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, a: I) -> Self {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }

    /// The value that follows `flag`, if the flag is given.
    #[cfg(test)]
    pub fn value_of(&self, flag: &str) -> Option<&str> {
        let i = self.args.iter().position(|a| a == flag)?;
        self.args.get(i + 1).and_then(|v| v.to_str())
    }
}

/// Milliseconds, as every duration flag accepts.
fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// The API server double, serving `nodes`; it writes its port and a
/// kubeconfig for the aggregator into the given files.
pub(super) fn apiserver(
    bin: &Path,
    nodes: &[&str],
    port_file: &Path,
    kubeconfig: &Path,
) -> CommandLine {
    CommandLine::new(bin)
        .arg("--nodes")
        .arg(nodes.join(","))
        .arg("--port-file")
        .arg(port_file)
        .arg("--kubeconfig-out")
        .arg(kubeconfig)
}

/// The aggregator on the control bridge, with the lab's timing. With a
/// kubeconfig it writes labels to the API server double; without, it runs
/// with Kubernetes off.
pub(super) fn aggregator(
    opts: &Options,
    kubeconfig: Option<&Path>,
    security: &Security,
) -> CommandLine {
    // A link is stale after three missed windows and a loss timeout, as in
    // a cluster; the lab recomputes groups every window so labels follow
    // a short run.
    let stale = opts.report_interval * 3 + opts.loss_timeout;
    let cmd = CommandLine::new(&opts.aggregator_bin).args([
        "--agent-listen".to_string(),
        format!("{BRIDGE_IP}:{AGENT_PORT}"),
        "--query-listen".into(),
        format!("127.0.0.1:{}", opts.query_port),
        "--probe-interval".into(),
        format!("{}us", opts.probe_interval.as_micros()),
        "--report-interval".into(),
        ms(opts.report_interval),
        "--loss-timeout".into(),
        ms(opts.loss_timeout),
        "--stale-after".into(),
        ms(stale),
        "--recompute-interval".into(),
        ms(opts.report_interval),
        "--metrics-listen".into(),
        "127.0.0.1:0".into(),
    ]);
    let cmd = match &security.pki {
        Some(pki) => cmd
            .arg("--tls-cert")
            .arg(&pki.cert)
            .arg("--tls-key")
            .arg(&pki.key),
        // --insecure, to measure what TLS costs.
        None => cmd.args(["--tls", "false"]),
    };
    let cmd = match security.agent_service_account() {
        Some(sa) => cmd.args([
            "--agent-auth",
            "token",
            "--agent-service-account",
            &sa,
            "--query-auth",
            "token",
        ]),
        // The API double cannot review tokens.
        None => cmd.args(["--agent-auth", "none", "--query-auth", "none"]),
    };
    let cmd = match kubeconfig {
        // A short resync keeps the demo honest if the double restarts.
        Some(k) => cmd.arg("--kubeconfig").arg(k).args(["--resync", "5m"]),
        None => cmd.args(["--kubernetes", "off"]),
    };
    let cmd = match opts.max_probe_targets {
        Some(n) => cmd.args(["--max-probe-targets".to_string(), n.to_string()]),
        None => cmd,
    };
    cmd.args(bandwidth(opts.bandwidth))
}

fn bandwidth(b: Option<BandwidthOptions>) -> Vec<String> {
    match b {
        None => vec!["--bandwidth-tests".into(), "false".into()],
        Some(b) => vec![
            "--bandwidth-tests".into(),
            "true".into(),
            "--bandwidth-streams".into(),
            b.streams.to_string(),
            "--bandwidth-omit".into(),
            ms(b.omit),
            "--bandwidth-duration".into(),
            ms(b.duration),
            "--bandwidth-concurrency".into(),
            b.concurrency.to_string(),
        ],
    }
}

/// The agent of `node`, run inside the node's namespace `ns` with its own
/// UTS namespace, so `hostname` says the node's name (what MPI and the
/// agent's logs show).
pub(super) fn agent(
    opts: &Options,
    ns: &str,
    node: &str,
    ip: Ipv4Addr,
    security: &Security,
) -> CommandLine {
    let ip = ip.to_string();
    let cmd = CommandLine::new("ip")
        .args(["netns", "exec", ns, "unshare", "--uts", "sh", "-c"])
        .arg("hostname \"$0\" && exec \"$@\"")
        .arg(node)
        .arg(&opts.agent_bin)
        .args([
            "--node-name",
            node,
            "--node-ip",
            &ip,
            "--stamp-bind",
            &ip,
            "--aggregator",
            &format!("{}://{BRIDGE_IP}:{AGENT_PORT}", security.scheme()),
            "--icmp",
            if opts.icmp { "true" } else { "false" },
            "--backoff-max",
            "2s",
        ]);
    let cmd = match security.ca() {
        Some(ca) => cmd.arg("--ca-file").arg(ca),
        None => cmd,
    };
    match security.token_file(node) {
        Some(token) => cmd.arg("--token-file").arg(token),
        None => cmd,
    }
}

#[cfg(test)]
mod tests;
