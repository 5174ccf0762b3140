use super::*;

fn facts() -> NodeFacts {
    NodeFacts {
        groups: ["g1".into(), "g2".into(), "g3".into()],
        quality: Some(87),
        figures: Some(Figures {
            rtt_p50_us: 251.4,
            rtt_p99_us: 612.6,
            jitter_us: 40.0,
            loss_ppm: 0.2,
            loss_probes: LOSS_LABEL_PROBES,
            bandwidth_mbps: None,
            peers: 3,
        }),
        fresh: true,
        nearest: vec![Peer {
            node: "dj-2".into(),
            rtt_p50_us: 250,
            loss_ppm: 0,
        }],
        summary_since_unix_us: 0,
    }
}

#[test]
fn labels_are_integers_and_group_ids() {
    let l = node_labels(DEFAULT_PREFIX, &facts()).unwrap();
    let get = |k: &str| l.get(&format!("netaware.io/{k}")).cloned();
    assert_eq!(get("group-l2").as_deref(), Some("g2"));
    assert_eq!(get("quality").as_deref(), Some("87"));
    assert_eq!(get("rtt-p50-us").as_deref(), Some("251"));
    assert_eq!(get("rtt-p99-us").as_deref(), Some("613"));
    assert_eq!(get("loss-ppm").as_deref(), Some("0"));
    assert_eq!(get("fresh").as_deref(), Some("true"));
    assert_eq!(get("bandwidth-mbps"), None, "absent until measured");
    assert_eq!(l.len(), 9);
    for (k, v) in &l {
        let (p, n) = k.split_once('/').unwrap();
        assert!(check_prefix(&format!("{p}/")).is_ok());
        assert!(check_name(n).is_ok() && check_value(v).is_ok());
    }
}

#[test]
fn the_loss_label_waits_for_enough_probes() {
    let with = |loss_probes: u64| {
        let mut f = facts();
        f.figures = f.figures.map(|x| Figures { loss_probes, ..x });
        node_labels(DEFAULT_PREFIX, &f).unwrap()
    };
    let early = with(LOSS_LABEL_PROBES - 1);
    assert_eq!(early.get("netaware.io/loss-ppm"), None, "{early:?}");
    // Everything else is written as soon as it is measured.
    assert_eq!(early.len(), 8, "{early:?}");
    let ready = with(LOSS_LABEL_PROBES);
    assert_eq!(
        ready.get("netaware.io/loss-ppm").map(String::as_str),
        Some("0")
    );
}

#[test]
fn kubernetes_rules_for_names_values_and_prefixes() {
    assert!(check_value("").is_ok());
    assert!(check_value("g1").is_ok());
    assert!(check_value("A.b_c-9").is_ok());
    for bad in ["-a", "a-", "a b", "ä", &"x".repeat(64)] {
        assert!(check_value(bad).is_err(), "{bad}");
    }
    assert!(check_name("").is_err());
    assert!(check_prefix("netaware.io/").is_ok());
    assert!(check_prefix("lab.example.com/").is_ok());
    for bad in ["netaware.io", "Netaware.io/", "/", "a..b/", "-a.io/"] {
        assert_eq!(
            check_prefix(bad),
            Err(Error::LabelPrefix(bad.into())),
            "{bad}"
        );
    }
    for reserved in [
        "kubernetes.io/",
        "node.kubernetes.io/",
        "k8s.io/",
        "x.k8s.io/",
    ] {
        assert!(matches!(
            check_prefix(reserved),
            Err(Error::ReservedLabelPrefix(_))
        ));
    }
}

#[test]
fn desired_keys_are_the_labels_plus_the_summary() {
    let d = desired("lab.example.com/", &facts(), "2026-11-23T20:00:00Z").unwrap();
    assert!(d.labels.keys().all(|k| k.starts_with("lab.example.com/")));
    assert_eq!(d.annotations.len(), 1);
    let s: serde_json::Value =
        serde_json::from_str(&d.annotations["lab.example.com/summary"]).unwrap();
    assert_eq!(s["nearest"][0]["node"], "dj-2");
    assert_eq!(s["measured_at"], "2026-11-23T20:00:00Z");
}

#[test]
fn a_bad_group_id_is_refused_before_any_write() {
    let mut f = facts();
    f.groups[0] = "not ok".into();
    assert_eq!(
        node_labels(DEFAULT_PREFIX, &f),
        Err(Error::LabelValue("not ok".into()))
    );
}

#[test]
fn the_summary_fits_in_4_kib_nearest_first() {
    let peers: Vec<Peer> = (0..500)
        .map(|i| Peer {
            node: format!("node-with-a-long-name-{i:04}"),
            rtt_p50_us: 100 + i,
            loss_ppm: 0,
        })
        .collect();
    let s = summary("2026-11-23T20:00:00Z", &peers);
    assert!(s.len() <= MAX_SUMMARY_BYTES, "{}", s.len());
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    let kept = v["nearest"].as_array().unwrap();
    assert!(kept.len() > 10);
    assert_eq!(kept[0]["node"], "node-with-a-long-name-0000");
    assert_eq!(v["measured_at"], "2026-11-23T20:00:00Z");
    let small = summary("t", &peers[..2]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&small).unwrap()["nearest"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn dns_labels() {
    assert!(is_dns_label("dj-1"));
    for bad in ["", "Dj", "-a", "a-", "a_b", "a.b", &"x".repeat(64)] {
        assert!(!is_dns_label(bad), "{bad}");
    }
}

#[test]
fn dns_subdomains() {
    for good in [
        "dj-1",
        "node-1.zone-a.example",
        &format!("{}.b", "a".repeat(63)),
    ] {
        assert!(is_dns_subdomain(good), "{good}");
    }
    let long = vec!["abc"; 64].join(".");
    assert_eq!(long.len(), 255);
    for bad in ["", "a..b", ".a", "a.", "A.b", "a_b.c", long.as_str()] {
        assert!(!is_dns_subdomain(bad), "{bad}");
    }
}

#[test]
fn an_infinite_figure_is_the_largest_int64_not_a_value_kubernetes_rejects() {
    assert_eq!(us(f64::INFINITY), i64::MAX.to_string());
    assert_eq!(us(1e300), i64::MAX.to_string());
    assert_eq!(us(9.3e18), i64::MAX.to_string());
    assert_eq!(us(f64::NAN), "0");
    assert_eq!(us(-3.0), "0");
    assert_eq!(us(250.4), "250");
    // Every value written parses as an int64, as nodeAffinity Gt/Lt need.
    for x in [0.0, 1.5, 1e18, 1e19, f64::INFINITY] {
        us(x).parse::<i64>().unwrap();
    }
}

/// A figure not measured yet keeps the value the Node carries; a figure we
/// produce replaces it; keys not ours and invalid values are left alone.
#[test]
fn labels_not_produced_yet_keep_their_last_value() {
    let p = DEFAULT_PREFIX;
    let mut facts = facts();
    facts.figures.as_mut().unwrap().bandwidth_mbps = None;
    let mut d = desired(p, &facts, "2026-12-02T00:00:00Z").unwrap();
    let current: BTreeMap<String, String> = [
        ("netaware.io/bandwidth-mbps", "9400"),
        ("netaware.io/quality", "12"),
        ("netaware.io/other", "x"),
        ("netaware.io/loss-ppm", "not a value!"),
        ("example.com/bandwidth-mbps", "1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let quality = d.labels["netaware.io/quality"].clone();
    keep_last_known(p, &mut d, &current);
    assert_eq!(d.labels["netaware.io/bandwidth-mbps"], "9400");
    assert_eq!(d.labels["netaware.io/quality"], quality, "ours wins");
    assert!(!d.labels.contains_key("netaware.io/other"));
    assert!(!d.labels.contains_key("example.com/bandwidth-mbps"));
    assert_ne!(d.labels["netaware.io/loss-ppm"], "not a value!");
    assert_eq!(groups_from_labels(p, &d.labels), Some(facts.groups.clone()));
    let mut partial = d.labels.clone();
    partial.remove("netaware.io/group-l2");
    assert_eq!(groups_from_labels(p, &partial), None);
}
