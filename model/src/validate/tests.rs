use super::*;

const NOW: u64 = 1_795_000_000_000_000;

fn good_hello() -> Hello {
    Hello {
        node_name: "dj-1.zone-a".into(),
        probe_addresses: vec!["10.0.0.1".into(), "fd00::1".into()],
        stamp_port: 8620,
        software_version: "0.1.0".into(),
        capabilities: vec![ProbeMethod::StampUdp as i32, ProbeMethod::IcmpEcho as i32],
        protocol_version: 1,
        instance_id: 7,
        bandwidth_port: 8621,
    }
}

fn good_window() -> LinkWindow {
    LinkWindow {
        peer: "se-1".into(),
        method: ProbeMethod::StampUdp as i32,
        window_start_unix_us: NOW - 20_000_000,
        window_end_unix_us: NOW - 10_000_000,
        sent: 50,
        received: 49,
        rtt_min_ns: 200_000,
        rtt_mean_ns: 260_000,
        rtt_p50_ns: 250_000,
        rtt_p90_ns: 300_000,
        rtt_p99_ns: 400_000,
        rtt_max_ns: 450_000,
        ..Default::default()
    }
}

/// `window` as the aggregator calls it for a window from dj-1, in a
/// cluster of dj-1 and se-1.
fn checked(w: &LinkWindow) -> Result<(), Refusal> {
    window(w, "dj-1", |p| ["dj-1", "se-1"].contains(&p), NOW)
}

fn good_result() -> BandwidthResult {
    BandwidthResult {
        token: 1,
        peer: "se-1".into(),
        mbps: 800.0,
        stream_mbps: vec![200.0; 4],
        measured_bytes: 300_000_000,
        measured_ns: 3_000_000_000,
        total_bytes: 400_000_000,
        ..Default::default()
    }
}

/// A change to a good value, and the field it must be refused for.
type Case<T> = (Box<dyn FnOnce(&mut T)>, &'static str);

/// Apply `change` to a good value and return the refused field.
fn refused<T: Clone>(
    good: &T,
    check: fn(&T) -> Result<(), Refusal>,
    change: impl FnOnce(&mut T),
) -> &'static str {
    let mut v = good.clone();
    change(&mut v);
    check(&v).map(|()| "accepted").unwrap_or_else(|r| r.field)
}

#[test]
fn a_good_hello_window_and_result_pass() {
    assert_eq!(hello(&good_hello()), Ok(()));
    assert_eq!(checked(&good_window()), Ok(()));
    assert_eq!(bandwidth_result(&good_result()), Ok(()));
}

#[test]
fn a_hello_is_refused_naming_the_field() {
    let h = good_hello();
    let check: fn(&Hello) -> Result<(), Refusal> = hello;
    let cases: Vec<Case<Hello>> = vec![
        // The review's names (E3a): path, escapes, too long, upper case.
        (
            Box::new(|h| h.node_name = "../../etc/passwd".into()),
            "Hello.node_name",
        ),
        (
            Box::new(|h| h.node_name = "Evil\x1b[2J".into()),
            "Hello.node_name",
        ),
        (
            Box::new(|h| h.node_name = "x".repeat(254)),
            "Hello.node_name",
        ),
        (
            Box::new(|h| h.node_name = "x".repeat(2_200_000)),
            "Hello.node_name",
        ),
        (
            Box::new(|h| h.node_name = "UPPER_case name".into()),
            "Hello.node_name",
        ),
        (Box::new(|h| h.node_name = String::new()), "Hello.node_name"),
        (
            Box::new(|h| h.probe_addresses = vec![]),
            "Hello.probe_addresses",
        ),
        (
            Box::new(|h| h.probe_addresses = vec!["10.0.0.1".into(); 5]),
            "Hello.probe_addresses",
        ),
        (
            Box::new(|h| h.probe_addresses = vec!["node.example".into()]),
            "Hello.probe_addresses",
        ),
        (
            Box::new(|h| h.probe_addresses = vec!["0.0.0.0".into()]),
            "Hello.probe_addresses",
        ),
        (
            Box::new(|h| h.probe_addresses = vec!["224.0.0.1".into()]),
            "Hello.probe_addresses",
        ),
        (
            Box::new(|h| h.probe_addresses = vec!["255.255.255.255".into()]),
            "Hello.probe_addresses",
        ),
        (Box::new(|h| h.stamp_port = 0), "Hello.stamp_port"),
        (Box::new(|h| h.stamp_port = 70_000), "Hello.stamp_port"),
        (
            Box::new(|h| h.bandwidth_port = 70_000),
            "Hello.bandwidth_port",
        ),
        (
            Box::new(|h| h.software_version = "v".repeat(65)),
            "Hello.software_version",
        ),
        (
            Box::new(|h| h.software_version = "1.0\n".into()),
            "Hello.software_version",
        ),
        (
            Box::new(|h| h.capabilities = vec![99]),
            "Hello.capabilities",
        ),
        (
            Box::new(|h| h.capabilities = vec![ProbeMethod::TcpThroughput as i32]),
            "Hello.capabilities",
        ),
    ];
    for (change, field) in cases {
        assert_eq!(refused(&h, check, change), field);
    }
}

#[test]
fn an_impossible_window_is_refused_naming_the_field() {
    let w = good_window();
    let check: fn(&LinkWindow) -> Result<(), Refusal> = |w| checked(w);
    let cases: Vec<Case<LinkWindow>> = vec![
        (Box::new(|w| w.method = 0), "LinkWindow.method"),
        (Box::new(|w| w.method = 42), "LinkWindow.method"),
        (Box::new(|w| w.peer = "../x".into()), "LinkWindow.peer"),
        (Box::new(|w| w.peer = "dj-1".into()), "LinkWindow.peer"),
        (Box::new(|w| w.peer = "nobody".into()), "LinkWindow.peer"),
        // E3: a window starting at 2^62 would pin the link for ever.
        (
            Box::new(|w| {
                w.window_start_unix_us = 1 << 62;
                w.window_end_unix_us = (1 << 62) + 10_000_000;
            }),
            "LinkWindow.window_end_unix_us",
        ),
        (
            Box::new(|w| w.window_end_unix_us = w.window_start_unix_us),
            "LinkWindow.window_end_unix_us",
        ),
        (
            Box::new(|w| w.window_end_unix_us = w.window_start_unix_us + MAX_WINDOW_US + 1),
            "LinkWindow.window_end_unix_us",
        ),
        (
            Box::new(|w| {
                w.window_start_unix_us = NOW - MAX_WINDOW_AGE_US - 20_000_000;
                w.window_end_unix_us = w.window_start_unix_us + 10_000_000;
            }),
            "LinkWindow.window_start_unix_us",
        ),
        (Box::new(|w| w.received = 51), "LinkWindow.received"),
        (Box::new(|w| w.sent = u64::MAX), "LinkWindow.sent"),
        (Box::new(|w| w.rtt_min_ns = 500_000), "LinkWindow.rtt_*_ns"),
        (Box::new(|w| w.rtt_p99_ns = 100), "LinkWindow.rtt_*_ns"),
        (
            Box::new(|w| w.rtt_mean_ns = 1_000_000),
            "LinkWindow.rtt_*_ns",
        ),
        (
            Box::new(|w| w.rtt_histogram = vec![0; MAX_HISTOGRAM_BYTES + 1]),
            "LinkWindow.rtt_histogram",
        ),
    ];
    for (change, field) in cases {
        assert_eq!(refused(&w, check, change), field);
    }
    // Unanswered windows carry no RTT figures to order.
    let mut lost = good_window();
    (lost.received, lost.rtt_min_ns, lost.rtt_max_ns) = (0, 9, 1);
    assert_eq!(checked(&lost), Ok(()));
    // A clock a little ahead is fine.
    let mut ahead = good_window();
    ahead.window_start_unix_us = NOW + 60_000_000;
    ahead.window_end_unix_us = NOW + 70_000_000;
    assert_eq!(checked(&ahead), Ok(()));
}

#[test]
fn an_impossible_bandwidth_result_is_refused() {
    let r = good_result();
    let check: fn(&BandwidthResult) -> Result<(), Refusal> = bandwidth_result;
    let cases: Vec<Case<BandwidthResult>> = vec![
        // E3h: 1e300 and NaN/negative streams.
        (Box::new(|r| r.mbps = 1e300), "BandwidthResult.mbps"),
        (Box::new(|r| r.mbps = f64::NAN), "BandwidthResult.mbps"),
        (Box::new(|r| r.mbps = -1.0), "BandwidthResult.mbps"),
        (
            Box::new(|r| r.stream_mbps = vec![f64::NAN, -5.0]),
            "BandwidthResult.stream_mbps",
        ),
        (
            Box::new(|r| r.stream_mbps = vec![1.0; 65]),
            "BandwidthResult.stream_mbps",
        ),
        // 300 MB in 3 s is 800 Mbit/s, not 8000.
        (Box::new(|r| r.mbps = 8_000.0), "BandwidthResult.mbps"),
        (
            Box::new(|r| r.total_bytes = 1),
            "BandwidthResult.measured_bytes",
        ),
    ];
    for (change, field) in cases {
        assert_eq!(refused(&r, check, change), field);
    }
}

#[test]
fn text_from_the_network_is_shown_escaped_and_cut() {
    assert_eq!(shown("Evil\x1b[2J"), "Evil\\u{1b}[2J");
    let long = shown(&"x".repeat(1000));
    assert!(long.ends_with('…') && long.chars().count() == 65, "{long}");
}
