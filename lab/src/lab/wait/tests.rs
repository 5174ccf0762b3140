use super::*;
use netaware_proto::v1::{LinkState, NodeStatus};

fn topo(names: &[&str]) -> Topology {
    let nodes: Vec<String> = names
        .iter()
        .map(|n| format!("{{name: {n}, region: r}}"))
        .collect();
    Topology::parse(
        &format!("nodes: [{}]\ndefaults: {{delay_ms: 1}}\n", nodes.join(", ")),
        "t",
    )
    .unwrap()
}

fn node(name: &str, connected: bool) -> NodeStatus {
    NodeStatus {
        node_name: name.into(),
        connected,
        ..Default::default()
    }
}

fn link(src: &str, dst: &str, method: ProbeMethod, windows: u64) -> LinkState {
    LinkState {
        src: src.into(),
        dst: dst.into(),
        method: method as i32,
        windows_total: windows,
        ..Default::default()
    }
}

fn test(sender: &str, receiver: &str) -> BandwidthState {
    BandwidthState {
        sender: sender.into(),
        receiver: receiver.into(),
        ..Default::default()
    }
}

#[test]
fn an_agent_counts_only_once_connected() {
    let t = topo(&["a", "b", "c"]);
    let m = GetMatrixResponse {
        nodes: vec![node("a", true), node("b", false), node("x", true)],
        ..Default::default()
    };
    assert_eq!(missing_agents(&t, &m), ["b", "c"]);
}

#[test]
fn a_pair_counts_as_measured_after_two_udp_windows() {
    let m = GetMatrixResponse {
        links: vec![
            link("a", "b", ProbeMethod::StampUdp, 2),
            link("b", "a", ProbeMethod::StampUdp, 1),
            link("a", "c", ProbeMethod::IcmpEcho, 9),
            link("c", "a", ProbeMethod::StampUdp, 5),
        ],
        ..Default::default()
    };
    assert_eq!(udp_pairs_measured(&m), 2);
}

#[test]
fn a_pair_counts_as_clean_with_a_known_rtt_from_an_undisturbed_window() {
    use netaware_proto::v1::Smoothed;
    let with = |mut l: LinkState, disturbed: u64, known: bool| {
        l.disturbed_windows_total = disturbed;
        l.smoothed = Some(Smoothed {
            rtt_known: known,
            ..Default::default()
        });
        l
    };
    let m = GetMatrixResponse {
        links: vec![
            with(link("a", "b", ProbeMethod::StampUdp, 5), 4, true),
            // Every window disturbed: nothing smoothed yet.
            with(link("b", "a", ProbeMethod::StampUdp, 5), 5, false),
            with(link("a", "c", ProbeMethod::StampUdp, 5), 0, false),
            with(link("c", "a", ProbeMethod::IcmpEcho, 5), 0, true),
            link("b", "c", ProbeMethod::StampUdp, 5),
        ],
        ..Default::default()
    };
    assert_eq!(udp_pairs_clean(&m), 1);
    assert_eq!(udp_pairs_measured(&m), 4);
}

#[test]
fn either_direction_covers_a_pair_for_bandwidth() {
    let tests = [
        test("a", "b"),
        test("b", "a"),
        test("c", "a"),
        test("c", "a"),
    ];
    assert_eq!(bandwidth_pairs_tested(&tests), 2);
    assert_eq!(bandwidth_pairs_tested(&[]), 0);
}

#[test]
fn a_file_that_never_appears_is_an_error_naming_it() {
    let path = std::env::temp_dir().join(format!("nwa-wait-test-{}", std::process::id()));
    let e = for_file(&path, Duration::from_millis(120)).unwrap_err();
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    std::fs::write(&path, "7443\n").unwrap();
    assert_eq!(
        for_file(&path, Duration::from_millis(120)).unwrap(),
        "7443\n"
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn the_groups_left_to_test_concurrently_are_the_l1_groups_of_three_or_more() {
    let group = |level: u32, members: &[&str]| Group {
        level,
        members: members.iter().map(|m| m.to_string()).collect(),
        ..Default::default()
    };
    let groups = [
        group(1, &["c", "a", "b"]),
        group(1, &["d", "e"]),
        group(1, &["f", "g", "h"]),
        group(2, &["a", "b", "c", "d", "e"]),
    ];
    let tested = |members: &[&str]| ConcurrentTest {
        members: members.iter().map(|m| m.to_string()).collect(),
        ..Default::default()
    };
    assert_eq!(
        rings_untested(&groups, &[]),
        [vec!["a", "b", "c"], vec!["f", "g", "h"]]
    );
    // Tested in ring order, found whatever the order.
    assert_eq!(
        rings_untested(&groups, &[tested(&["b", "c", "a"])]),
        [vec!["f", "g", "h"]]
    );
    assert!(
        rings_untested(
            &groups,
            &[tested(&["b", "c", "a"]), tested(&["h", "g", "f"])]
        )
        .is_empty()
    );
    // Every member tested, in other groups: nothing new to wait for (the
    // scheduler starts no test for it); one untested member is enough.
    let moved = [tested(&["a", "b", "x"]), tested(&["c", "f", "g"])];
    assert_eq!(rings_untested(&groups, &moved), [vec!["f", "g", "h"]]);
}
