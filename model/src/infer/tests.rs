use super::*;
use netaware_proto::v1::{Hello, LinkWindow};
use std::time::Duration;

fn hello(name: &str) -> Hello {
    Hello {
        node_name: name.into(),
        probe_addresses: vec!["192.0.2.1".into()],
        capabilities: vec![ProbeMethod::StampUdp as i32],
        ..Default::default()
    }
}

/// A matrix of nodes `{region}-{k}` with RTT 250 µs inside a region and
/// 5 ms across; `lossy` loses 2 % towards everyone.
fn lab(regions: &[&str], per_region: usize, lossy: Option<&str>, now: Instant) -> Matrix {
    let mut m = Matrix::new(1.0, Duration::from_secs(30));
    let names: Vec<String> = regions
        .iter()
        .flat_map(|r| (1..=per_region).map(move |k| format!("{r}-{k}")))
        .collect();
    for n in &names {
        m.connect(hello(n));
    }
    for a in &names {
        for b in &names {
            if a == b {
                continue;
            }
            let same = a.split('-').next() == b.split('-').next();
            let rtt_us = if same { 250 } else { 5_000 };
            let bad = lossy == Some(a.as_str()) || lossy == Some(b.as_str());
            let w = LinkWindow {
                peer: b.clone(),
                method: ProbeMethod::StampUdp as i32,
                window_start_unix_us: 1,
                sent: 100,
                received: if bad { 98 } else { 100 },
                rtt_p50_ns: rtt_us * 1000,
                rtt_p99_ns: rtt_us * 2000,
                jitter_ns: 20_000,
                ..Default::default()
            };
            m.apply(a, w, false, now);
        }
    }
    m
}

#[test]
fn l2_groups_are_the_regions_and_the_lossy_node_scores_lowest() {
    let now = Instant::now();
    let m = lab(&["dj", "se", "gj"], 4, Some("dj-4"), now);
    let mut inf = Inference::new(InferConfig::default());
    let out = inf.recompute(&m, now);
    let l2 = |n: &str| out.facts[n].groups[1].clone();
    for r in ["dj", "se", "gj"] {
        let g = l2(&format!("{r}-1"));
        for k in 2..=4 {
            assert_eq!(l2(&format!("{r}-{k}")), g);
        }
    }
    assert_ne!(l2("dj-1"), l2("se-1"));
    assert_ne!(l2("se-1"), l2("gj-1"));
    // l3 (10 ms) holds everyone: 5 ms across regions.
    assert!(
        out.facts
            .values()
            .all(|f| f.groups[2] == out.facts["dj-1"].groups[2])
    );
    let q = |n: &str| out.facts[n].quality.unwrap();
    for k in 1..=3 {
        assert!(
            q("dj-4") < q(&format!("dj-{k}")),
            "{} vs {}",
            q("dj-4"),
            q(&format!("dj-{k}"))
        );
    }
    // Its neighbours are not dragged down: same score as another region's nodes.
    assert_eq!(q("dj-1"), q("se-1"));
    assert!(out.facts.values().all(|f| f.fresh));
    // Nearest peers: the three of its own region first.
    let near: Vec<&str> = out.facts["se-2"]
        .nearest
        .iter()
        .map(|p| p.node.as_str())
        .collect();
    assert_eq!(&near[..3], ["se-1", "se-3", "se-4"]);
    assert_eq!(near.len(), 11);
    let l2_groups: Vec<&Group> = out.groups.iter().filter(|g| g.level == 2).collect();
    assert_eq!(l2_groups.len(), 3);
    assert!(
        l2_groups
            .iter()
            .all(|g| g.members.len() == 4 && g.max_rtt_us == 250.0)
    );
}

#[test]
fn a_node_without_measurements_is_not_placed_yet() {
    let now = Instant::now();
    let mut m = lab(&["a", "b"], 2, None, now);
    m.connect(hello("new-1"));
    let mut inf = Inference::new(InferConfig::default());
    let out = inf.recompute(&m, now);
    assert_eq!(out.facts.len(), 4);
    assert!(!out.facts.contains_key("new-1"));
}

#[test]
fn stale_data_keeps_groups_and_turns_fresh_false() {
    let now = Instant::now();
    let m = lab(&["a", "b"], 2, None, now);
    let mut inf = Inference::new(InferConfig::default());
    let first = inf.recompute(&m, now);
    let later = inf.recompute(&m, now + Duration::from_secs(60));
    for (node, f) in &later.facts {
        assert!(!f.fresh, "{node}");
        assert_eq!(f.groups, first.facts[node].groups);
        assert_eq!(f.quality, first.facts[node].quality);
    }
}
