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
fn the_publisher_default_matches_the_flag_defaults() {
    let Ok(c) = parse_args_from::<Config, _, _>(["x"]) else {
        panic!("defaults must parse")
    };
    let (got, want) = (crate::publish_config(&c), PublishConfig::default());
    assert_eq!(
        (got.prefix.as_str(), got.qps, got.burst, got.resync),
        (want.prefix.as_str(), want.qps, want.burst, want.resync)
    );
}

#[test]
fn typed_defaults_print_as_the_flags_take_them() {
    let s = StateConfig::default();
    assert_eq!(s.infer.thresholds.to_string(), "500us,2ms,10ms");
    assert_eq!(
        parse_thresholds(&s.infer.thresholds.to_string()),
        Ok(s.infer.thresholds)
    );
    assert_eq!(
        parse_thresholds(&Thresholds::Auto.to_string()),
        Ok(Thresholds::Auto)
    );
    let odd = Thresholds::Fixed([250.0, 1_500.0, 60_000.0]);
    assert_eq!(parse_thresholds(&odd.to_string()), Ok(odd));
    assert_eq!(
        parse_weights(&s.infer.weights.to_string()),
        Ok(s.infer.weights)
    );
}

#[test]
fn thresholds_and_weights_parse() {
    assert_eq!(parse_thresholds("auto"), Ok(Thresholds::Auto));
    assert_eq!(
        parse_thresholds("500us, 2ms,10ms"),
        Ok(Thresholds::Fixed([500.0, 2_000.0, 10_000.0]))
    );
    assert!(parse_thresholds("2ms,1ms,10ms").is_err());
    assert!(parse_thresholds("1ms,2ms").is_err());
    let w = parse_weights("loss=1,jitter=0").unwrap();
    assert_eq!(
        (w.loss, w.jitter, w.rtt_p50),
        (1.0, 0.0, Weights::default().rtt_p50)
    );
    assert!(
        parse_weights("speed=1")
            .unwrap_err()
            .contains("unknown weight 'speed'")
    );
    assert!(parse_weights("loss=0,rtt-p50=0,rtt-p99=0,jitter=0,bandwidth=0").is_err());
}

#[test]
fn leader_election_needs_the_pod_facts_and_sane_timing() {
    let parse = |args: &[&str]| {
        let mut all = vec!["x", "--leader-election=true"];
        all.extend_from_slice(args);
        let Ok(c) = parse_args_from::<Config, _, _>(all) else {
            panic!("must parse: {args:?}")
        };
        crate::election_config(&c)
    };
    let full = [
        "--pod-name=agg-0",
        "--pod-namespace=netaware",
        "--pod-ip=10.0.0.5",
        "--service-name=netaware-aggregator",
    ];
    let Ok(Some(cfg)) = parse(&full) else {
        panic!("a complete election setting is accepted")
    };
    assert_eq!(cfg.lease_name, "netaware-aggregator");
    assert_eq!(cfg.namespace, "netaware");
    assert_eq!(cfg.identity.pod, "agg-0");
    assert_eq!(cfg.duration, Duration::from_secs(15));
    for (drop, env) in [(0, ENV_POD_NAME), (1, ENV_POD_NAMESPACE), (2, ENV_POD_IP)] {
        let mut args = full.to_vec();
        args.remove(drop);
        let e = parse(&args).unwrap_err().to_string();
        assert!(e.contains(env) && e.contains("downward API"), "{e}");
    }
    let e = parse(&full[..3]).unwrap_err().to_string();
    assert!(
        e.contains(ENV_SERVICE_NAME) && e.contains("ready endpoint"),
        "{e}"
    );
    let mut args = full.to_vec();
    args.push("--lease-grace=20s");
    let e = parse(&args).unwrap_err().to_string();
    assert!(e.contains(ENV_LEASE_GRACE), "{e}");
    // Off by default: nothing is required.
    let Ok(c) = parse_args_from::<Config, _, _>(["x"]) else {
        panic!("defaults must parse")
    };
    assert!(matches!(crate::election_config(&c), Ok(None)));
}

#[test]
fn bad_values_name_their_variable() {
    for (flag, env) in [
        ("--smoothing=0", ENV_SMOOTHING),
        ("--report-interval=0s", ENV_REPORT_INTERVAL),
        ("--agent-listen=nowhere", ENV_AGENT_LISTEN),
        ("--group-thresholds=1ms", ENV_GROUP_THRESHOLDS),
        ("--quality-weights=x=1", ENV_QUALITY_WEIGHTS),
        ("--label-prefix=kubernetes.io/", ENV_LABEL_PREFIX),
        ("--label-prefix=netaware", ENV_LABEL_PREFIX),
        ("--write-qps=0", ENV_WRITE_QPS),
        ("--bandwidth-max-bytes=0", ENV_BANDWIDTH_MAX_BYTES),
        ("--bandwidth-budget=lots", ENV_BANDWIDTH_BUDGET),
        ("--bandwidth-streams=0", ENV_BANDWIDTH_STREAMS),
        ("--bandwidth-concurrency=0", ENV_BANDWIDTH_CONCURRENCY),
    ] {
        let Err(ArgsError::Usage(msg)) = parse_args_from::<Config, _, _>(["x", flag]) else {
            panic!("{flag} must be rejected")
        };
        assert!(msg.contains(env), "{msg}");
    }
}
