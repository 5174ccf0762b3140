use super::*;
use netaware_proto::histogram::encode_histogram;

fn topo() -> Topology {
    Topology::parse(
            "nodes: [{name: a, region: r}, {name: b, region: s}]\n\
             defaults: {delay_ms: 0.1}\n\
             regions: [{a: r, b: s, delay_ms: 2.5, jitter_ms: 0.2, loss: 0.01, bandwidth_mbps: 400}]\n\
             links: [{from: a, to: b, delay_ms: 3.0, jitter_ms: 0.0}]\n",
            "t",
        )
        .unwrap()
}

fn window(start: u64, rtts_us: &[u64], sent: u64) -> LinkWindow {
    let mut h = new_histogram().unwrap();
    for r in rtts_us {
        h.record(r * 1000).unwrap();
    }
    LinkWindow {
        peer: "b".into(),
        method: ProbeMethod::StampUdp as i32,
        window_start_unix_us: start,
        sent,
        received: rtts_us.len() as u64,
        jitter_ns: 100_000,
        rtt_histogram: encode_histogram(&h).unwrap(),
        ..Default::default()
    }
}

#[test]
fn configured_round_trip_sums_delays_and_combines_loss_and_jitter() {
    let c = configured(&topo(), 0, 1);
    assert!((c.rtt_ms - 5.5).abs() < 1e-12);
    assert!((c.jitter_ms - 0.2).abs() < 1e-12);
    assert!((c.loss - (1.0 - 0.99 * 0.99)).abs() < 1e-12);
    assert_eq!(c.bandwidth_mbps, Some(400.0));
    assert!((c.rfc3550_jitter_ms - 0.2 * RFC3550_PER_SD).abs() < 1e-12);
}

#[test]
fn windows_merge_into_run_percentiles_and_out_of_span_windows_are_ignored() {
    let mut c = Collector::new(100, 1_000);
    assert!(!c.add("a", &window(99, &[9_999], 1)).unwrap());
    assert!(c.add("a", &window(100, &[1_000, 2_000], 2)).unwrap());
    assert!(c.add("a", &window(500, &[3_000, 4_000], 4)).unwrap());
    assert!(!c.add("a", &window(1_000, &[9_999], 1)).unwrap());
    let r = c.report(&topo(), 30.0, &[ProbeMethod::StampUdp]);
    assert_eq!(r.links.len(), 2);
    let m = r.links[0].measured.unwrap();
    assert_eq!((m.samples, m.sent, m.windows), (4, 6, 2));
    assert!((m.loss - 2.0 / 6.0).abs() < 1e-12);
    assert!((m.rtt_max_ms - 4.0).abs() < 0.01, "{}", m.rtt_max_ms);
    assert!((m.rtt_min_ms - 1.0).abs() < 0.01);
    assert!((m.jitter_ms - 0.1).abs() < 1e-9);
    assert!(r.links[1].measured.is_none(), "b -> a has no data");
    let t = render_table(&r);
    assert!(t.contains("no data"), "{t}");
}

/// Windows left out for the emulator's lateness are counted per pair and
/// method (with their probes) and in total, and never reach the figures.
#[test]
fn windows_left_out_for_emulator_lateness_are_counted_per_pair() {
    let mut c = Collector::new(100, 1_000);
    assert!(c.add("a", &window(100, &[1_000], 20)).unwrap());
    c.skip_emulator_late("a", &window(300, &[50_000], 20));
    c.skip_emulator_late("a", &window(500, &[50_000], 19));
    c.skip_emulator_late("a", &window(5_000, &[50_000], 20)); // outside the span
    c.skip_emulator_late(
        "b",
        &LinkWindow {
            peer: "a".into(),
            ..window(300, &[], 20)
        },
    );
    c.skip_disturbed(&window(700, &[], 20));
    let r = c.report(&topo(), 30.0, &[ProbeMethod::StampUdp]);
    assert_eq!((r.emulator_late_windows, r.disturbed_windows), (3, 1));
    let ab = &r.links[0];
    assert_eq!(
        ab.emulator_late,
        Some(LeftOut {
            windows: 2,
            sent: 39
        })
    );
    let m = ab.measured.unwrap();
    assert_eq!((m.sent, m.windows), (20, 1));
    assert!(
        (m.rtt_max_ms - 1.0).abs() < 0.01,
        "a late window's RTT is not in"
    );
    assert_eq!(
        r.links[1].emulator_late,
        Some(LeftOut {
            windows: 1,
            sent: 20
        })
    );
    assert!(render_table(&r).contains("3 windows had packets the emulator delivered"));
}

#[test]
fn label_changes_are_every_added_removed_or_changed_key() {
    let m = |pairs: &[(&str, &str, &str)]| {
        let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (n, k, v) in pairs {
            out.entry(n.to_string())
                .or_default()
                .insert(k.to_string(), v.to_string());
        }
        out
    };
    let before = m(&[("a", "q", "90"), ("a", "g", "g1"), ("b", "q", "80")]);
    let after = m(&[
        ("a", "q", "70"),
        ("a", "g", "g1"),
        ("b", "q", "80"),
        ("b", "x", "1"),
    ]);
    let c = label_changes(&before, &after, 7);
    assert_eq!(c.len(), 2);
    assert_eq!((c[0].node.as_str(), c[0].key.as_str()), ("a", "q"));
    assert_eq!(
        (c[0].old.as_deref(), c[0].new.as_deref()),
        (Some("90"), Some("70"))
    );
    assert_eq!(
        (c[1].old.as_deref(), c[1].new.as_deref()),
        (None, Some("1"))
    );
    assert!(label_changes(&after, &after, 8).is_empty());
}

#[test]
fn json_follows_the_contract() {
    let mut c = Collector::new(0, u64::MAX);
    c.add("a", &window(1, &[5_000], 1)).unwrap();
    let v = serde_json::to_value(c.report(&topo(), 30.0, &[ProbeMethod::StampUdp])).unwrap();
    assert_eq!(v["topology"], "t");
    assert_eq!(v["duration_s"], 30.0);
    let l = &v["links"][0];
    assert_eq!(
        (l["src"].as_str(), l["dst"].as_str(), l["method"].as_str()),
        (Some("a"), Some("b"), Some("udp"))
    );
    for k in ["rtt_ms", "jitter_ms", "loss", "bandwidth_mbps"] {
        assert!(l["configured"][k].is_number(), "configured.{k}");
    }
    for k in ["rtt_p50_ms", "rtt_p99_ms", "jitter_ms", "loss", "samples"] {
        assert!(l["measured"][k].is_number(), "measured.{k}");
    }
}
