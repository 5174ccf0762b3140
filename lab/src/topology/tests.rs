use super::*;

const EXAMPLE: &str = r#"
nodes:
  - {name: dj-1, region: daejeon}
  - {name: dj-4, region: daejeon}
  - {name: se-1, region: seoul}
defaults:
  delay_ms: 0.1
  jitter_ms: 0.02
  loss: 0.0
  bandwidth_mbps: 1000
regions:
  - {a: daejeon, b: seoul, delay_ms: 2.5, jitter_ms: 0.2, loss: 0.0, bandwidth_mbps: 400}
links:
  - {a: dj-4, b: "*", loss: 0.02, jitter_ms: 1.0}
"#;

fn parse(t: &str) -> std::result::Result<Topology, String> {
    Topology::parse(t, "t")
}

#[test]
fn the_issue_example_resolves_as_documented() {
    let t = parse(EXAMPLE).unwrap();
    let (dj1, dj4, se1) = (0, 1, 2);
    // Intra-region from defaults.
    assert_eq!(
        t.link(dj1, dj4),
        LinkParams {
            delay_ms: 0.1,
            jitter_ms: 1.0, // dj-4 override, both directions
            loss: 0.02,
            bandwidth_mbps: Some(1000.0)
        }
    );
    // Inter-region from the region entry; dj-4 keeps delay and bandwidth.
    assert_eq!(t.link(se1, dj4).delay_ms, 2.5);
    assert_eq!(t.link(se1, dj4).bandwidth_mbps, Some(400.0));
    assert_eq!(t.link(se1, dj4).loss, 0.02);
    // Untouched pair.
    assert_eq!(t.link(dj1, se1).jitter_ms, 0.2);
    assert_eq!(t.link(dj1, se1).loss, 0.0);
    assert_eq!(t.name, "t");
}

#[test]
fn from_to_entries_change_one_direction_only() {
    let t = parse(&format!(
        "{EXAMPLE}  - {{from: dj-1, to: se-1, delay_ms: 9}}\n"
    ))
    .unwrap();
    assert_eq!(t.link(0, 2).delay_ms, 9.0);
    assert_eq!(t.link(2, 0).delay_ms, 2.5);
}

#[test]
fn unknown_keys_are_named_and_extension_keys_are_allowed() {
    let bad = EXAMPLE.replace("loss: 0.0\n", "los: 0.0\n");
    let e = parse(&bad).unwrap_err();
    assert!(e.contains("defaults") && e.contains("'los'"), "{e}");
    let e = parse(&EXAMPLE.replace("region: seoul}", "region: seoul, rack: 3}")).unwrap_err();
    assert!(e.contains("nodes[2]") && e.contains("'rack'"), "{e}");
    let e = parse(&format!("{EXAMPLE}flavour: x\n")).unwrap_err();
    assert!(e.contains("top level") && e.contains("'flavour'"), "{e}");
    assert!(parse(&format!("{EXAMPLE}x-owner: me\n")).is_ok());
    assert!(parse(&EXAMPLE.replace("region: seoul}", "region: seoul, x-rack: 3}")).is_ok());
}

#[test]
fn the_mtu_defaults_to_ethernet_and_is_range_checked() {
    assert_eq!(parse(EXAMPLE).unwrap().mtu, DEFAULT_MTU);
    assert_eq!(parse(&format!("{EXAMPLE}mtu: 9000\n")).unwrap().mtu, 9000);
    for bad in ["mtu: 1000", "mtu: 70000"] {
        let e = parse(&format!("{EXAMPLE}{bad}\n")).unwrap_err();
        assert!(e.contains("out of range"), "{e}");
    }
}

#[test]
fn a_missing_region_pair_is_an_error_not_a_lan_link() {
    let t = EXAMPLE.replace(
        "  - {name: se-1, region: seoul}\n",
        "  - {name: se-1, region: seoul}\n  - {name: bs-1, region: busan}\n",
    );
    let e = parse(&t).unwrap_err();
    assert!(e.contains("'busan'") && e.contains("'daejeon'"), "{e}");
}

#[test]
fn bad_values_are_rejected_with_their_place() {
    for (from, to, want) in [
        ("loss: 0.02", "loss: 1.5", "links[0]: loss"),
        ("delay_ms: 2.5", "delay_ms: -1", "regions[0]: delay_ms"),
        (
            "bandwidth_mbps: 1000",
            "bandwidth_mbps: 0",
            "defaults: bandwidth_mbps",
        ),
        ("b: \"*\"", "b: nowhere", "unknown node 'nowhere'"),
        ("b: seoul", "b: mars", "region 'mars'"),
        ("name: se-1", "name: dj-1", "used twice"),
        ("name: se-1", "name: Se_1", "nodes[2]: name"),
        (
            "{a: dj-4, b: \"*\"",
            "{a: dj-4, to: \"*\"",
            "links[0]: name both ends",
        ),
    ] {
        let e = parse(&EXAMPLE.replacen(from, to, 1)).unwrap_err();
        assert!(e.contains(want), "{from} -> {to}: {e}");
    }
    assert!(
        parse("nodes: [{name: a, region: r}]")
            .unwrap_err()
            .contains("at least 2")
    );
    assert!(parse("nodes: [").is_err());
}

#[test]
fn events_resolve_to_full_parameters_in_time_order() {
    let t = parse(&format!(
            "{EXAMPLE}events:\n  - {{at_s: 20, a: dj-1, b: \"*\", loss: 0.05, delay_ms: 3}}\n  - {{at_s: 5, from: se-1, to: dj-1, jitter_ms: 0.5}}\n"
        ))
        .unwrap();
    assert_eq!(t.events.len(), 2);
    assert_eq!(t.events[0].at_s, 5.0, "sorted by time");
    assert_eq!(t.events[0].changes.len(), 1);
    let (src, dst, p) = t.events[0].changes[0];
    assert_eq!((src, dst), (2, 0));
    assert_eq!(
        (p.delay_ms, p.jitter_ms),
        (2.5, 0.5),
        "keeps the delay, changes jitter"
    );
    // The second event covers dj-1 <-> everyone (4 directed pairs) and
    // builds on the first: se-1 -> dj-1 keeps its new jitter.
    let later = &t.events[1];
    assert_eq!(later.changes.len(), 4);
    let se1_dj1 = later
        .changes
        .iter()
        .find(|c| (c.0, c.1) == (2, 0))
        .unwrap()
        .2;
    assert_eq!(
        (se1_dj1.delay_ms, se1_dj1.jitter_ms, se1_dj1.loss),
        (3.0, 0.5, 0.05)
    );
    // The static links are unchanged by events.
    assert_eq!(t.link(2, 0).delay_ms, 2.5);
}

#[test]
fn bad_events_are_named() {
    let e = parse(&format!(
        "{EXAMPLE}events:\n  - {{at_s: -1, a: dj-1, b: se-1, loss: 0.1}}\n"
    ))
    .unwrap_err();
    assert!(e.contains("events[0]") && e.contains("at_s"), "{e}");
    let e = parse(&format!(
        "{EXAMPLE}events:\n  - {{at_s: 1, a: dj-1, b: se-1, speed: 1}}\n"
    ))
    .unwrap_err();
    assert!(e.contains("events[0]") && e.contains("'speed'"), "{e}");
    let e = parse(&format!(
        "{EXAMPLE}events:\n  - {{at_s: 1, a: dj-1, b: nowhere, loss: 0.1}}\n"
    ))
    .unwrap_err();
    assert!(e.contains("unknown node 'nowhere'"), "{e}");
    let uncapped = EXAMPLE
        .replace("  bandwidth_mbps: 1000\n", "")
        .replace(", bandwidth_mbps: 400", "");
    let e = parse(&format!(
        "{uncapped}events:\n  - {{at_s: 1, a: dj-1, b: se-1, bandwidth_mbps: 10}}\n"
    ))
    .unwrap_err();
    assert!(e.contains("only on links that already have a cap"), "{e}");
}

#[test]
fn shipped_topologies_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            Topology::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            count += 1;
        }
    }
    assert!(count >= 3, "expected the shipped topologies, found {count}");
}
