use super::*;

fn topo(delay: f64, jitter: f64, loss: f64) -> Topology {
    Topology::parse(
        &format!(
            "nodes: [{{name: a, region: r}}, {{name: b, region: r}}]\n\
                 defaults: {{delay_ms: {delay}, jitter_ms: {jitter}, loss: {loss}}}\n"
        ),
        "t",
    )
    .unwrap()
}

#[test]
fn constant_delay_without_jitter_or_loss() {
    let mut s = Shaper::new(&topo(2.5, 0.0, 0.0), 1);
    let t0 = Instant::now();
    for k in 0..100u64 {
        let now = t0 + Duration::from_millis(k);
        assert_eq!(
            s.schedule(0, 1, now),
            Some(now + Duration::from_micros(2500))
        );
    }
}

#[test]
fn loss_rate_matches_the_probability() {
    let mut s = Shaper::new(&topo(0.0, 0.0, 0.1), 7);
    let t0 = Instant::now();
    let lost = (0..100_000)
        .filter(|k| s.schedule(0, 1, t0 + Duration::from_micros(*k)).is_none())
        .count();
    // 10 % of 100k: sd = 95, so ±500 is > 5 sd.
    assert!((9_500..=10_500).contains(&lost), "{lost}");
}

#[test]
fn jitter_is_normal_around_the_delay_and_never_reorders() {
    let mut s = Shaper::new(&topo(5.0, 0.5, 0.0), 3);
    let t0 = Instant::now();
    let spacing = Duration::from_millis(10);
    let mut delays = Vec::new();
    let mut last = t0;
    for k in 0..20_000u32 {
        let now = t0 + spacing * k;
        let at = s.schedule(0, 1, now).unwrap();
        assert!(at >= last, "reordered");
        last = at;
        delays.push((at - now).as_secs_f64() * 1000.0);
    }
    let n = delays.len() as f64;
    let mean = delays.iter().sum::<f64>() / n;
    let sd = (delays.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / n).sqrt();
    assert!((mean - 5.0).abs() < 0.02, "mean {mean}");
    assert!((sd - 0.5).abs() < 0.02, "sd {sd}");
}

#[test]
fn a_links_draws_do_not_depend_on_other_links_traffic() {
    let t = Topology::parse(
        "nodes: [{name: a, region: r}, {name: b, region: r}, {name: c, region: r}]\n\
             defaults: {delay_ms: 1.0, jitter_ms: 0.3, loss: 0.2}\n",
        "t",
    )
    .unwrap();
    let t0 = Instant::now();
    let run = |interleave: bool| {
        let mut s = Shaper::new(&t, 42);
        (0..500u32)
            .map(|k| {
                let now = t0 + Duration::from_millis(u64::from(k) * 10);
                if interleave && k % 3 == 0 {
                    s.schedule(2, 1, now); // other traffic: c -> b
                }
                s.schedule(0, 1, now).map(|at| at - now)
            })
            .collect::<Vec<_>>()
    };
    // Same seed: a -> b sees the same losses and delays, whatever else flows.
    assert_eq!(run(false), run(true));
}

#[test]
fn directions_are_independent_and_live_changes_apply() {
    let mut s = Shaper::new(&topo(1.0, 0.0, 0.0), 3);
    let t0 = Instant::now();
    s.set(
        0,
        1,
        LinkParams {
            delay_ms: 7.0,
            jitter_ms: 0.0,
            loss: 0.0,
            bandwidth_mbps: None,
        },
    );
    assert_eq!(s.schedule(0, 1, t0), Some(t0 + Duration::from_millis(7)));
    assert_eq!(s.schedule(1, 0, t0), Some(t0 + Duration::from_millis(1)));
}

#[test]
fn destinations_are_lab_addresses_only() {
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    p[16..20].copy_from_slice(&[10, 77, 0, 3]);
    assert_eq!(destination(&p, 4), Some(2));
    assert_eq!(destination(&p, 2), None, "beyond the node count");
    p[16..20].copy_from_slice(&[10, 78, 0, 3]);
    assert_eq!(destination(&p, 4), None);
    p[0] = 0x60; // IPv6
    assert_eq!(destination(&p, 4), None);
    assert_eq!(destination(&p[..10], 4), None);
    assert_eq!(data_ip(0), Ipv4Addr::new(10, 77, 0, 1));
}

/// What `lateness_since` does: the packets after a mark, and nothing else.
#[test]
fn lateness_after_a_mark_counts_only_the_later_packets() {
    let mut h = Lateness::new_with_bounds(1, 10_000_000_000, 2).unwrap();
    for _ in 0..1000 {
        h.record(5_000).unwrap(); // 5 µs: on time
    }
    let mark = h.clone();
    for _ in 0..90 {
        h.record(10_000).unwrap();
    }
    for _ in 0..10 {
        h.record(20_000_000).unwrap(); // 20 ms late
    }
    h.subtract(&mark).unwrap();
    let s = summarize(&h).unwrap();
    assert_eq!((s.packets, s.over_1ms), (100, 10));
    assert!((s.late_fraction() - 0.1).abs() < 1e-12);
    assert!(s.p99_us > 19_000.0, "{s:?}");
    assert!(summarize(&Lateness::new_with_bounds(1, 10_000_000_000, 2).unwrap()).is_none());
}
