use super::*;
use crate::lab::secure::Security;
use std::path::PathBuf;

/// Every `(flag, value)` is on the command line.
fn assert_values(c: &CommandLine, want: &[(&str, &str)]) {
    for (flag, value) in want {
        assert_eq!(c.value_of(flag), Some(*value), "{flag} in {c:?}");
    }
}

/// TLS files in the lab's directory; agent tokens only with `tokens`.
fn security(tokens: bool) -> Security {
    Security {
        pki: Some(crate::cluster::ServingCertificate {
            ca: PathBuf::from("/tmp/lab/tls/ca.crt"),
            cert: PathBuf::from("/tmp/lab/tls/tls.crt"),
            key: PathBuf::from("/tmp/lab/tls/tls.key"),
        }),
        tokens: tokens.then(|| PathBuf::from("/tmp/lab/tokens")),
    }
}

fn options() -> Options {
    Options {
        probe_interval: Duration::from_millis(100),
        report_interval: Duration::from_secs(2),
        loss_timeout: Duration::from_secs(1),
        query_port: 7401,
        icmp: false,
        insecure: false,
        agent_bin: PathBuf::from("/bin/netaware-agent"),
        aggregator_bin: PathBuf::from("/bin/netaware-aggregator"),
        log_dir: PathBuf::from("/tmp/lab"),
        seed: 1,
        ping: false,
        kubernetes: crate::lab::Kubernetes::Off,
        apply: Vec::new(),
        bandwidth: None,
        iperf3: false,
        max_probe_targets: None,
    }
}

#[test]
fn the_aggregator_gets_the_lab_timing_and_a_stale_window_of_three_reports() {
    let c = aggregator(&options(), None, &security(false));
    assert_eq!(c.program, "/bin/netaware-aggregator");
    assert_values(
        &c,
        &[
            ("--agent-listen", "10.78.0.254:7400"),
            ("--query-listen", "127.0.0.1:7401"),
            ("--probe-interval", "100000us"),
            ("--report-interval", "2000ms"),
            ("--loss-timeout", "1000ms"),
            // 3 × 2 s + 1 s.
            ("--stale-after", "7000ms"),
            ("--recompute-interval", "2000ms"),
            // A scraper port of its own would collide between runs.
            ("--metrics-listen", "127.0.0.1:0"),
        ],
    );
}

#[test]
fn the_probe_target_bound_is_the_aggregators_own_unless_given() {
    let default = aggregator(&options(), None, &security(false));
    assert_eq!(default.value_of("--max-probe-targets"), None);
    let mut o = options();
    o.max_probe_targets = Some(4);
    let low = aggregator(&o, None, &security(false));
    assert_eq!(low.value_of("--max-probe-targets"), Some("4"));
}

#[test]
fn labels_go_to_the_double_only_with_a_kubeconfig() {
    let off = aggregator(&options(), None, &security(false));
    assert_eq!(off.value_of("--kubernetes"), Some("off"));
    assert_eq!(off.value_of("--kubeconfig"), None);
    let on = aggregator(
        &options(),
        Some(Path::new("/tmp/lab/kubeconfig")),
        &security(false),
    );
    assert_eq!(on.value_of("--kubernetes"), None);
    assert_eq!(on.value_of("--kubeconfig"), Some("/tmp/lab/kubeconfig"));
    assert_eq!(on.value_of("--resync"), Some("5m"));
}

#[test]
fn bandwidth_settings_pass_through_or_tests_are_off() {
    let c = aggregator(&options(), None, &security(false));
    assert_eq!(c.value_of("--bandwidth-tests"), Some("false"));
    assert_eq!(c.value_of("--bandwidth-streams"), None);
    let mut o = options();
    o.bandwidth = Some(BandwidthOptions {
        streams: 2,
        omit: Duration::from_secs(1),
        duration: Duration::from_millis(2500),
        concurrency: 1,
    });
    let c = aggregator(&o, None, &security(false));
    assert_values(
        &c,
        &[
            ("--bandwidth-tests", "true"),
            ("--bandwidth-streams", "2"),
            ("--bandwidth-omit", "1000ms"),
            ("--bandwidth-duration", "2500ms"),
            ("--bandwidth-concurrency", "1"),
        ],
    );
}

#[test]
fn an_agent_runs_in_its_namespace_under_its_own_hostname() {
    let mut o = options();
    o.icmp = true;
    let c = agent(
        &o,
        "nwa-dj-1",
        "dj-1",
        Ipv4Addr::new(10, 77, 0, 1),
        &security(false),
    );
    assert_eq!(c.program, "ip");
    let head: Vec<&str> = c.args[..7].iter().filter_map(|a| a.to_str()).collect();
    assert_eq!(
        head,
        ["netns", "exec", "nwa-dj-1", "unshare", "--uts", "sh", "-c"]
    );
    // `sh -c SCRIPT $0 BIN ARGS…`: the script sets the hostname to $0 and
    // execs the agent, so the node name must come right after the script.
    assert_eq!(c.args[8], "dj-1");
    assert_eq!(c.args[9], "/bin/netaware-agent");
    assert_values(
        &c,
        &[
            ("--node-name", "dj-1"),
            ("--node-ip", "10.77.0.1"),
            ("--stamp-bind", "10.77.0.1"),
            ("--aggregator", "https://10.78.0.254:7400"),
            ("--ca-file", "/tmp/lab/tls/ca.crt"),
            ("--icmp", "true"),
        ],
    );
    assert_eq!(c.value_of("--token-file"), None);
}

/// TLS always; with a real API server's tokens, every agent presents its
/// own and the aggregator requires them.
#[test]
fn the_lab_is_secure_by_default() {
    let plain = aggregator(&options(), None, &security(false));
    assert_values(
        &plain,
        &[
            ("--tls-cert", "/tmp/lab/tls/tls.crt"),
            ("--tls-key", "/tmp/lab/tls/tls.key"),
            ("--agent-auth", "none"),
            ("--query-auth", "none"),
        ],
    );
    assert_eq!(plain.value_of("--tls"), None, "TLS is on by default");
    let with_tokens = security(true);
    let agg = aggregator(
        &options(),
        Some(Path::new("/tmp/lab/kubeconfig")),
        &with_tokens,
    );
    assert_values(
        &agg,
        &[
            ("--agent-auth", "token"),
            ("--agent-service-account", "kube-system/netaware-agent"),
            ("--query-auth", "token"),
        ],
    );
    let a = agent(
        &options(),
        "nwa-dj-1",
        "dj-1",
        Ipv4Addr::new(10, 77, 0, 1),
        &with_tokens,
    );
    assert_eq!(
        a.value_of("--token-file"),
        Some("/tmp/lab/tokens/dj-1.token")
    );
    assert_eq!(with_tokens.report().agent_auth, "token");
    assert_eq!(security(false).report().agent_auth, "none");
}

/// `--insecure` (to measure what security costs): plain text, no tokens,
/// and the report says so.
#[test]
fn insecure_means_plain_text_and_no_authentication() {
    let none = Security::insecure();
    let agg = aggregator(&options(), None, &none);
    assert_values(
        &agg,
        &[
            ("--tls", "false"),
            ("--agent-auth", "none"),
            ("--query-auth", "none"),
        ],
    );
    let a = agent(
        &options(),
        "nwa-dj-1",
        "dj-1",
        Ipv4Addr::new(10, 77, 0, 1),
        &none,
    );
    assert_eq!(a.value_of("--aggregator"), Some("http://10.78.0.254:7400"));
    assert_eq!(a.value_of("--ca-file"), None);
    assert!(!none.report().tls);
}

#[test]
fn the_api_double_serves_every_node_and_says_where_it_listens() {
    let c = apiserver(
        Path::new("/bin/double"),
        &["dj-1", "se-1"],
        Path::new("/tmp/lab/apiserver.port"),
        Path::new("/tmp/lab/kubeconfig"),
    );
    assert_eq!(c.program, "/bin/double");
    assert_values(
        &c,
        &[
            ("--nodes", "dj-1,se-1"),
            ("--port-file", "/tmp/lab/apiserver.port"),
            ("--kubeconfig-out", "/tmp/lab/kubeconfig"),
        ],
    );
}
