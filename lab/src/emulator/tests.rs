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

fn deliver(at: Instant) -> Fate {
    Fate::Deliver {
        at,
        lost: Vec::new(),
    }
}

#[test]
fn constant_delay_without_jitter_or_loss() {
    let mut s = Shaper::new(&topo(2.5, 0.0, 0.0), 1);
    let t0 = Instant::now();
    for k in 0..100u64 {
        let now = t0 + Duration::from_millis(k);
        assert_eq!(
            s.schedule(0, 1, now, 1),
            deliver(now + Duration::from_micros(2500))
        );
    }
}

#[test]
fn loss_rate_matches_the_probability() {
    let mut s = Shaper::new(&topo(0.0, 0.0, 0.1), 7);
    let t0 = Instant::now();
    let lost = (0..100_000)
        .filter(|k| s.schedule(0, 1, t0 + Duration::from_micros(*k), 1) == Fate::Lost)
        .count();
    // 10 % of 100k: sd = 95, so ±500 is > 5 sd.
    assert!((9_500..=10_500).contains(&lost), "{lost}");
}

/// A GSO frame's segments are lost one by one, each with the link's
/// probability: a 2 % link loses 2 % of wire packets, not 2 % of frames.
#[test]
fn loss_is_drawn_per_segment_of_a_frame() {
    let mut s = Shaper::new(&topo(0.0, 0.0, 0.02), 11);
    let t0 = Instant::now();
    let (mut lost, mut partly, mut whole) = (0usize, 0usize, 0usize);
    for k in 0..10_000u64 {
        match s.schedule(0, 1, t0 + Duration::from_micros(k), 40) {
            Fate::Lost => whole += 1,
            Fate::Deliver { lost: l, .. } => {
                assert!(l.windows(2).all(|w| w[0] < w[1]) && l.iter().all(|i| *i < 40));
                partly += usize::from(!l.is_empty());
                lost += l.len();
            }
        }
    }
    // 400,000 segments at 2 %: 8,000, sd 89; ±500 is > 5 sd.
    assert!((7_500..=8_500).contains(&lost), "{lost}");
    // P(some of 40 lost) = 1 - 0.98^40 = 55 %; all 40 lost: never.
    assert!((5_200..=5_900).contains(&partly), "{partly}");
    assert_eq!(whole, 0);
    let mut all = Shaper::new(&topo(0.0, 0.0, 1.0), 1);
    assert_eq!(all.schedule(0, 1, t0, 40), Fate::Lost);
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
        let Fate::Deliver { at, .. } = s.schedule(0, 1, now, 1) else {
            panic!("lost without loss")
        };
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
                    s.schedule(2, 1, now, 3); // other traffic: c -> b
                }
                match s.schedule(0, 1, now, 2) {
                    Fate::Lost => None,
                    Fate::Deliver { at, lost } => Some((at - now, lost)),
                }
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
    assert_eq!(
        s.schedule(0, 1, t0, 1),
        deliver(t0 + Duration::from_millis(7))
    );
    assert_eq!(
        s.schedule(1, 0, t0, 1),
        deliver(t0 + Duration::from_millis(1))
    );
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

/// The lab leaves out a window when its pair had a late packet while it
/// was measured: either direction, any slot the window touches, no other pair.
#[test]
fn the_late_log_finds_late_packets_by_pair_and_time() {
    let t0 = Instant::now();
    // t0 is 1,000.05 s after the Unix epoch: slot 100,005 (10 ms slots).
    let mut log = LateLog::new(t0, 1_000_050_000, 10);
    log.record(0, 1, t0 + Duration::from_millis(120)); // 1,000.17 s: slot 100,017
    let s = |sec: f64| (sec * 1e6).round() as u64;
    assert!(log.late_during(0, 1, s(1000.0), s(1000.2)));
    assert!(
        log.late_during(1, 0, s(1000.175), s(1000.175)),
        "the other direction"
    );
    assert!(!log.late_during(0, 2, s(1000.0), s(1000.2)), "another pair");
    assert!(!log.late_during(0, 1, s(1000.18), s(1002.0)), "after");
    assert!(!log.late_during(0, 1, s(990.0), s(1000.169)), "before");
    assert!(
        log.late_during(0, 1, s(1000.179), s(1001.0)),
        "the slot's last ms"
    );
}

/// A full log cannot say which later spans were clean: it says late.
#[test]
fn a_full_late_log_fails_closed() {
    let t0 = Instant::now();
    let mut log = LateLog::new(t0, 0, 2);
    log.record(0, 1, t0);
    log.record(0, 1, t0); // the same entry again: no room taken
    log.record(2, 3, t0);
    log.record(4, 5, t0 + Duration::from_secs(5)); // no room: slot 500
    assert!(log.late_during(4, 5, 5_000_000, 5_100_000));
    assert!(
        log.late_during(6, 7, 9_000_000, 9_000_000),
        "any pair after it"
    );
    assert!(
        !log.late_during(6, 7, 0, 4_999_999),
        "before it, the log still knows"
    );
    assert!(log.late_during(2, 3, 0, 0));
}
