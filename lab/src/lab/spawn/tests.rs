use super::*;
use std::path::PathBuf;

fn options() -> Options {
    Options {
        probe_interval: Duration::from_millis(100),
        report_interval: Duration::from_secs(2),
        loss_timeout: Duration::from_secs(1),
        query_port: 7401,
        icmp: false,
        agent_bin: PathBuf::from("/bin/netaware-agent"),
        aggregator_bin: PathBuf::from("/bin/netaware-aggregator"),
        log_dir: PathBuf::from("/tmp/lab"),
        seed: 1,
        ping: false,
        apiserver_bin: None,
        bandwidth: None,
        iperf3: false,
    }
}

#[test]
fn the_aggregator_gets_the_lab_timing_and_a_stale_window_of_three_reports() {
    let c = aggregator(&options(), None);
    assert_eq!(c.program, "/bin/netaware-aggregator");
    assert_eq!(c.value_of("--agent-listen"), Some("10.78.0.254:7400"));
    assert_eq!(c.value_of("--query-listen"), Some("127.0.0.1:7401"));
    assert_eq!(c.value_of("--probe-interval"), Some("100000us"));
    assert_eq!(c.value_of("--report-interval"), Some("2000ms"));
    assert_eq!(c.value_of("--loss-timeout"), Some("1000ms"));
    // 3 × 2 s + 1 s.
    assert_eq!(c.value_of("--stale-after"), Some("7000ms"));
    assert_eq!(c.value_of("--recompute-interval"), Some("2000ms"));
    // A scraper port of its own would collide between runs.
    assert_eq!(c.value_of("--metrics-listen"), Some("127.0.0.1:0"));
}

#[test]
fn labels_go_to_the_double_only_with_a_kubeconfig() {
    let off = aggregator(&options(), None);
    assert_eq!(off.value_of("--kubernetes"), Some("off"));
    assert_eq!(off.value_of("--kubeconfig"), None);
    let on = aggregator(&options(), Some(Path::new("/tmp/lab/kubeconfig")));
    assert_eq!(on.value_of("--kubernetes"), None);
    assert_eq!(on.value_of("--kubeconfig"), Some("/tmp/lab/kubeconfig"));
    assert_eq!(on.value_of("--resync"), Some("5m"));
}

#[test]
fn bandwidth_settings_pass_through_or_tests_are_off() {
    let c = aggregator(&options(), None);
    assert_eq!(c.value_of("--bandwidth-tests"), Some("false"));
    assert_eq!(c.value_of("--bandwidth-streams"), None);
    let mut o = options();
    o.bandwidth = Some(BandwidthOptions {
        streams: 2,
        omit: Duration::from_secs(1),
        duration: Duration::from_millis(2500),
        concurrency: 1,
    });
    let c = aggregator(&o, None);
    assert_eq!(c.value_of("--bandwidth-tests"), Some("true"));
    assert_eq!(c.value_of("--bandwidth-streams"), Some("2"));
    assert_eq!(c.value_of("--bandwidth-omit"), Some("1000ms"));
    assert_eq!(c.value_of("--bandwidth-duration"), Some("2500ms"));
    assert_eq!(c.value_of("--bandwidth-concurrency"), Some("1"));
}

#[test]
fn an_agent_runs_in_its_namespace_under_its_own_hostname() {
    let mut o = options();
    o.icmp = true;
    let c = agent(&o, "nwa-dj-1", "dj-1", Ipv4Addr::new(10, 77, 0, 1));
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
    assert_eq!(c.value_of("--node-name"), Some("dj-1"));
    assert_eq!(c.value_of("--node-ip"), Some("10.77.0.1"));
    assert_eq!(c.value_of("--stamp-bind"), Some("10.77.0.1"));
    assert_eq!(c.value_of("--aggregator"), Some("http://10.78.0.254:7400"));
    assert_eq!(c.value_of("--icmp"), Some("true"));
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
    assert_eq!(c.value_of("--nodes"), Some("dj-1,se-1"));
    assert_eq!(c.value_of("--port-file"), Some("/tmp/lab/apiserver.port"));
    assert_eq!(c.value_of("--kubeconfig-out"), Some("/tmp/lab/kubeconfig"));
}
