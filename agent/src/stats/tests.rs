use super::*;
use netaware_proto::histogram::decode_histogram;

fn ms(x: u64) -> Duration {
    Duration::from_millis(x)
}
fn us(x: u64) -> Duration {
    Duration::from_micros(x)
}

fn tracker() -> ProbeTracker {
    ProbeTracker::new(ms(1000), ms(200)).unwrap()
}

#[test]
fn jitter_is_the_mean_absolute_difference_of_consecutive_rtts() {
    let mut j = Jitter::default();
    j.update(1000);
    assert_eq!(j.value_ns(), None, "one answer has no difference");
    j.update(1160); // |D| = 160
    assert_eq!(j.value_ns(), Some(160.0));
    j.update(1100); // |D| = 60
    assert_eq!(j.value_ns(), Some(110.0));
}

/// One window's answers, 10 ms apart, with the given RTTs (µs).
fn window_of(t: &mut ProbeTracker, start_ms: u64, rtts_us: &[u64]) {
    for (i, &r) in rtts_us.iter().enumerate() {
        let sent = ms(start_ms + 10 * i as u64);
        let seq = t.on_send(sent).unwrap();
        if r > 0 {
            assert_eq!(t.on_reply(seq, sent + us(r), us(r)), ReplyOutcome::Recorded);
        }
    }
}

#[test]
fn a_clean_window_after_a_disturbed_one_reads_only_its_own_jitter() {
    let mut t = tracker();
    // Probes queued behind a bandwidth test: RTTs swing by milliseconds.
    window_of(&mut t, 0, &[500, 9_000, 600, 12_000, 700, 8_000]);
    // The test is over: a steady link with 20 µs steps.
    window_of(&mut t, 1000, &[500, 520, 500, 520, 500, 520]);
    let w = t.poll(ms(2200)).unwrap();
    assert_eq!(w.len(), 2);
    assert!(w[0].jitter_ns > 5_000_000, "{}", w[0].jitter_ns);
    assert_eq!(w[1].jitter_ns, 20_000, "nothing of the disturbed window");
}

#[test]
fn a_window_with_fewer_than_two_answers_repeats_the_previous_jitter() {
    let mut t = tracker();
    window_of(&mut t, 0, &[500, 540, 500]);
    // One answer of three: no difference to take.
    window_of(&mut t, 1000, &[0, 700, 0]);
    let w = t.poll(ms(2200)).unwrap();
    assert_eq!(w[0].jitter_ns, 40_000);
    assert_eq!((w[1].received, w[1].jitter_ns), (1, 40_000));
}

#[test]
fn constant_rtt_has_zero_jitter_and_exact_percentiles() {
    let mut t = tracker();
    for i in 0..10 {
        let sent = ms(i * 100);
        let seq = t.on_send(sent).unwrap();
        assert_eq!(
            t.on_reply(seq, sent + us(500), us(500)),
            ReplyOutcome::Recorded
        );
    }
    assert!(
        t.poll(ms(1199)).unwrap().is_empty(),
        "not before end+timeout"
    );
    let w = t.poll(ms(1200)).unwrap();
    assert_eq!(w.len(), 1);
    let w = &w[0];
    assert_eq!((w.start, w.end), (ms(0), ms(1000)));
    assert_eq!((w.sent, w.received, w.lost()), (10, 10, 0));
    assert_eq!(w.jitter_ns, 0);
    // 3 significant digits: 500 µs is stored exactly enough to read back within 0.1 %.
    for v in [
        w.rtt_min_ns,
        w.rtt_p50_ns,
        w.rtt_p99_ns,
        w.rtt_max_ns,
        w.rtt_mean_ns,
    ] {
        assert!((499_500..=500_500).contains(&v), "{v}");
    }
}

#[test]
fn percentiles_of_a_known_distribution() {
    let mut t = ProbeTracker::new(ms(100_000), ms(200)).unwrap();
    // RTTs 1..=100 ms, one each.
    for i in 1..=100u64 {
        let sent = ms(i * 10);
        let seq = t.on_send(sent).unwrap();
        t.on_reply(seq, sent + ms(i), ms(i));
    }
    let w = &t.poll(ms(100_200)).unwrap()[0];
    let near = |got: u64, want_ms: u64| {
        let want = want_ms * 1_000_000;
        assert!(got.abs_diff(want) <= want / 500, "got {got}, want {want}");
    };
    near(w.rtt_min_ns, 1);
    near(w.rtt_p50_ns, 50);
    near(w.rtt_p90_ns, 90);
    near(w.rtt_p99_ns, 99);
    near(w.rtt_max_ns, 100);
    assert!((w.rtt_mean_ns as f64 - 50.5e6).abs() < 50.5e6 * 0.002);
    let h = decode_histogram(&w.histogram).unwrap();
    assert_eq!(h.len(), 100);
}

#[test]
fn unanswered_and_late_answers_count_as_lost() {
    let mut t = tracker();
    let a = t.on_send(ms(0)).unwrap();
    let b = t.on_send(ms(100)).unwrap();
    let c = t.on_send(ms(200)).unwrap();
    assert_eq!(t.on_reply(a, ms(1), ms(1)), ReplyOutcome::Recorded);
    // b answered after the 200 ms loss timeout: late, lost.
    assert_eq!(t.on_reply(b, ms(301), ms(201)), ReplyOutcome::Late);
    // c never answered.
    let _ = c;
    let w = &t.poll(ms(1200)).unwrap()[0];
    assert_eq!((w.sent, w.received, w.lost()), (3, 1, 2));
    // An answer to a reported window is late too.
    assert_eq!(t.on_reply(c, ms(1300), ms(1)), ReplyOutcome::Late);
    assert_eq!(t.on_reply(999, ms(1300), ms(1)), ReplyOutcome::Late);
}

#[test]
fn duplicates_are_counted_once_and_not_recorded_twice() {
    let mut t = tracker();
    let a = t.on_send(ms(0)).unwrap();
    assert_eq!(t.on_reply(a, ms(1), ms(1)), ReplyOutcome::Recorded);
    assert_eq!(t.on_reply(a, ms(2), ms(2)), ReplyOutcome::Duplicate);
    assert_eq!(t.on_reply(a, ms(3), ms(3)), ReplyOutcome::Duplicate);
    let w = &t.poll(ms(1200)).unwrap()[0];
    assert_eq!((w.received, w.duplicates), (1, 2));
    assert_eq!(decode_histogram(&w.histogram).unwrap().len(), 1);
}

#[test]
fn reordering_is_an_answer_older_than_one_already_seen() {
    let mut t = tracker();
    let s: Vec<u64> = (0..4).map(|i| t.on_send(ms(i * 10)).unwrap()).collect();
    // Arrival order: 0, 2, 1, 3 -> one reordered answer (1).
    t.on_reply(s[0], ms(5), ms(5));
    t.on_reply(s[2], ms(31), ms(11));
    t.on_reply(s[1], ms(32), ms(22));
    t.on_reply(s[3], ms(40), ms(10));
    let w = &t.poll(ms(1200)).unwrap()[0];
    assert_eq!((w.received, w.reordered), (4, 1));
}

#[test]
fn probes_fall_into_aligned_windows_and_finish_in_order() {
    let mut t = tracker();
    // Two probes in [0,1s), one in [1s,2s), none in [2s,3s), one in [3s,4s).
    let s0 = t.on_send(ms(900)).unwrap();
    let s1 = t.on_send(ms(950)).unwrap();
    let s2 = t.on_send(ms(1500)).unwrap();
    let s3 = t.on_send(ms(3100)).unwrap();
    // The answer to s1 arrives after the first window ended but within the timeout.
    assert_eq!(t.on_reply(s1, ms(1100), ms(150)), ReplyOutcome::Recorded);
    assert_eq!(t.on_reply(s2, ms(1510), ms(10)), ReplyOutcome::Recorded);
    let _ = (s0, s3);
    let first = t.poll(ms(2500)).unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!(
        (first[0].start, first[0].sent, first[0].received),
        (ms(0), 2, 1)
    );
    assert_eq!(
        (first[1].start, first[1].sent, first[1].received),
        (ms(1000), 1, 1)
    );
    let last = t.poll(ms(4200)).unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(
        (last[0].start, last[0].end, last[0].sent),
        (ms(3000), ms(4000), 1)
    );
}

#[test]
fn jitter_of_alternating_rtts_is_their_difference() {
    let mut t = ProbeTracker::new(ms(100_000), ms(200)).unwrap();
    for i in 0..400u64 {
        let sent = ms(i * 10);
        let seq = t.on_send(sent).unwrap();
        let rtt = if i % 2 == 0 { us(1000) } else { us(1400) };
        t.on_reply(seq, sent + rtt, rtt);
    }
    let w = &t.poll(ms(100_200)).unwrap()[0];
    // |D| is always 400 µs.
    assert_eq!(w.jitter_ns, 400_000);
}

#[test]
fn zero_window_is_rejected() {
    assert!(ProbeTracker::new(Duration::ZERO, ms(1)).is_err());
}
