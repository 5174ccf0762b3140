use super::*;

fn hello(name: &str, caps: &[ProbeMethod]) -> Hello {
    Hello {
        node_name: name.into(),
        probe_addresses: vec![format!("10.0.0.{}", name.len())],
        stamp_port: 8620,
        capabilities: caps.iter().map(|m| *m as i32).collect(),
        ..Default::default()
    }
}

fn window(peer: &str, start: u64, p50_us: u64, sent: u64, received: u64) -> LinkWindow {
    LinkWindow {
        peer: peer.into(),
        method: ProbeMethod::StampUdp as i32,
        window_start_unix_us: start,
        window_end_unix_us: start + 1_000_000,
        sent,
        received,
        rtt_p50_ns: p50_us * 1000,
        rtt_p99_ns: p50_us * 2000,
        ..Default::default()
    }
}

const TIMING: PlanTiming = PlanTiming {
    probe_interval: Duration::from_millis(200),
    report_interval: Duration::from_secs(5),
    loss_timeout: Duration::from_secs(1),
};

#[test]
fn disturbed_windows_are_kept_but_leave_the_smoothed_figures_alone() {
    let t0 = Instant::now();
    let mut m = Matrix::new(0.5, Duration::from_secs(30));
    m.apply("a", window("b", 1, 100, 10, 10), false, t0);
    let s = m
        .apply("a", window("b", 2, 5_000, 10, 10), true, t0)
        .unwrap();
    assert!(s.disturbed);
    assert_eq!(
        s.latest.unwrap().rtt_p50_ns,
        5_000_000,
        "kept as the latest"
    );
    assert_eq!(s.smoothed.unwrap().rtt_p50_us, 100.0, "not smoothed in");
    assert_eq!((s.windows_total, s.disturbed_windows_total), (2, 1));
    let s = m
        .apply("a", window("b", 3, 200, 10, 10), false, t0)
        .unwrap();
    assert!(!s.disturbed);
    assert_eq!(s.smoothed.unwrap().rtt_p50_us, 150.0);
}

#[test]
fn a_disturbed_first_window_does_not_seed_the_figures() {
    let t0 = Instant::now();
    let mut m = Matrix::new(0.5, Duration::from_secs(30));
    let s = m
        .apply("a", window("b", 1, 9_000, 10, 10), true, t0)
        .unwrap();
    assert_eq!(s.smoothed, None);
    assert!(m.smoothed("a", "b", ProbeMethod::StampUdp, t0).is_none());
    let s = m
        .apply("a", window("b", 2, 200, 10, 10), false, t0)
        .unwrap();
    assert_eq!(
        s.smoothed.unwrap().rtt_p50_us,
        200.0,
        "seeded by the first clean window"
    );
    let s = m
        .apply("a", window("b", 3, 400, 10, 10), false, t0)
        .unwrap();
    assert_eq!(s.smoothed.unwrap().rtt_p50_us, 300.0);
}

#[test]
fn smoothing_is_an_ewma_and_resends_are_ignored() {
    let t0 = Instant::now();
    let mut m = Matrix::new(0.5, Duration::from_secs(30));
    assert!(
        m.apply("a", window("b", 1, 100, 10, 10), false, t0)
            .is_some()
    );
    let s = m.apply("a", window("b", 2, 200, 10, 5), false, t0).unwrap();
    let sm = s.smoothed.unwrap();
    assert_eq!(sm.rtt_p50_us, 150.0);
    assert_eq!(sm.loss_ppm, 250_000.0);
    assert_eq!(s.windows_total, 2);
    // The same window again (resent after a reconnect): ignored.
    assert!(
        m.apply("a", window("b", 2, 900, 10, 0), false, t0)
            .is_none()
    );
    assert_eq!(m.links(ProbeMethod::Unspecified, t0)[0].windows_total, 2);
}

#[test]
fn a_short_first_window_weighs_its_probes_not_alpha_in_the_loss() {
    // An agent that started mid-window: 10 probes, 3 lost (300,000 ppm),
    // then full windows of 50 probes with 2 lost (40,000 ppm).
    let t0 = Instant::now();
    let mut m = Matrix::new(0.3, Duration::from_secs(30));
    let loss = |m: &mut Matrix, start, sent, received| {
        let s = m.apply("a", window("b", start, 100, sent, received), false, t0);
        s.unwrap().smoothed.unwrap().loss_ppm
    };
    assert_eq!(loss(&mut m, 1, 10, 7), 300_000.0);
    // Every probe so far: 5 of 60 lost. With alpha alone: 222,000.
    let second = loss(&mut m, 2, 50, 48);
    assert!((second - 5e6 / 60.0).abs() < 1e-6, "{second}");
    // 7 of 110, then 9 of 160 (a share of 0.3125 > alpha).
    let third = loss(&mut m, 3, 50, 48);
    assert!((third - 7e6 / 110.0).abs() < 1e-6, "{third}");
    let fourth = loss(&mut m, 4, 50, 48);
    assert!((fourth - 9e6 / 160.0).abs() < 1e-6, "{fourth}");
    // From here a window is less than alpha of the probes: the EWMA.
    let fifth = loss(&mut m, 5, 50, 48);
    assert!((fifth - (fourth + 0.3 * (40_000.0 - fourth))).abs() < 1e-6);
}

/// Place's loss figure averages every probe until its horizon is full,
/// then weighs a window by its share of the horizon: on a link whose
/// windows read 0 % and 8 % in turn (4 % on average) it stays within
/// ±1,100 ppm of 4 %, where the labels' figure swings by ±7,100; after the
/// link turns lossy it has moved less than half way in ten windows, where
/// the labels' figure is nearly there.
#[test]
fn the_placement_loss_holds_still_and_follows_slowly() {
    let t0 = Instant::now();
    let mut m = Matrix::new(DEFAULT_SMOOTHING, Duration::from_secs(30));
    let mut start = 0;
    let mut next = |m: &mut Matrix, lost: u64| {
        start += 1;
        m.apply("a", window("b", start, 100, 50, 50 - lost), false, t0)
            .unwrap()
            .smoothed
            .unwrap()
    };
    // The first windows: every probe so far (1 of 50, then 3 of 100).
    let first = next(&mut m, 1);
    assert_eq!(first.placement_loss_ppm, 20_000.0);
    let second = next(&mut m, 2);
    assert!(
        (second.placement_loss_ppm - 30_000.0).abs() < 1e-6,
        "{second:?}"
    );
    // The probes behind the figures (the loss label waits for enough).
    assert_eq!((first.loss_probes, second.loss_probes), (50, 100));
    // Long past the horizon, windows of 0 and 4 lost in turn.
    let (mut labels, mut place) = ((f64::MAX, 0.0f64), (f64::MAX, 0.0f64));
    for i in 0..400 {
        let s = next(&mut m, if i % 2 == 0 { 0 } else { 4 });
        if i >= 300 {
            labels = (labels.0.min(s.loss_ppm), labels.1.max(s.loss_ppm));
            place = (
                place.0.min(s.placement_loss_ppm),
                place.1.max(s.placement_loss_ppm),
            );
        }
    }
    assert!(place.0 > 38_900.0 && place.1 < 41_100.0, "{place:?}");
    assert!(labels.0 < 33_000.0 && labels.1 > 47_000.0, "{labels:?}");
    // A clean link turns lossy (4 of 50, 8 %): ten windows later.
    for _ in 0..100 {
        next(&mut m, 0);
    }
    let mut s = next(&mut m, 4);
    for _ in 0..9 {
        s = next(&mut m, 4);
    }
    assert!(s.loss_ppm > 0.9 * 80_000.0, "{s:?}");
    assert!(s.placement_loss_ppm < 0.5 * 80_000.0, "{s:?}");
    assert!(
        s.placement_loss_ppm > 0.3 * 80_000.0,
        "it does follow: {s:?}"
    );
}

#[test]
fn links_go_stale_but_are_never_deleted() {
    let t0 = Instant::now();
    let mut m = Matrix::new(0.3, Duration::from_secs(30));
    m.apply("a", window("b", 1, 100, 10, 10), false, t0);
    assert!(!m.links(ProbeMethod::Unspecified, t0 + Duration::from_secs(30))[0].stale);
    let later = m.links(ProbeMethod::Unspecified, t0 + Duration::from_secs(31));
    assert_eq!(later.len(), 1);
    assert!(later[0].stale);
}

#[test]
fn the_plan_is_a_full_mesh_of_connected_nodes_with_shared_methods() {
    let mut m = Matrix::new(0.3, Duration::from_secs(30));
    let both = [ProbeMethod::StampUdp, ProbeMethod::IcmpEcho];
    m.connect(hello("a", &both));
    m.connect(hello("bb", &both));
    m.connect(hello("ccc", &[ProbeMethod::StampUdp]));
    let p = m.plan_for("a", 7, TIMING).unwrap();
    assert_eq!(p.version, 7);
    let peers: Vec<(&str, usize)> = p
        .peers
        .iter()
        .map(|t| (t.node_name.as_str(), t.methods.len()))
        .collect();
    assert_eq!(peers, vec![("bb", 2), ("ccc", 1)]);
    assert_eq!(p.probe_interval_us, 200_000);
    m.disconnect("bb", Instant::now());
    let p = m.plan_for("a", 8, TIMING).unwrap();
    assert_eq!(p.peers.len(), 1);
    assert!(m.plan_for("bb", 8, TIMING).is_none());
    // bb is still known, as disconnected.
    let snap = m.snapshot(ProbeMethod::Unspecified, false, Instant::now(), 0);
    assert_eq!(snap.nodes.len(), 3);
    assert!(!snap.nodes[1].connected);
    assert_eq!(m.node_status("bb"), Some(snap.nodes[1].clone()));
    assert_eq!(m.node_status("nobody"), None);
}

#[test]
fn a_second_session_keeps_the_node_connected_when_the_first_closes() {
    let mut m = Matrix::new(0.3, Duration::from_secs(30));
    m.connect(hello("a", &[ProbeMethod::StampUdp]));
    m.connect(hello("a", &[ProbeMethod::StampUdp]));
    m.disconnect("a", Instant::now());
    assert!(m.is_connected("a"));
    m.disconnect("a", Instant::now());
    assert!(!m.is_connected("a"));
}

#[test]
fn snapshot_filters_by_method_and_sends_histograms_only_when_asked() {
    let t0 = Instant::now();
    let mut m = Matrix::new(0.3, Duration::from_secs(30));
    let mut udp = window("b", 1, 100, 10, 10);
    udp.rtt_histogram = vec![1, 2, 3];
    m.apply("a", udp, false, t0);
    let mut icmp = window("b", 1, 100, 10, 10);
    icmp.method = ProbeMethod::IcmpEcho as i32;
    m.apply("a", icmp, false, t0);
    assert_eq!(
        m.snapshot(ProbeMethod::Unspecified, false, t0, 0)
            .links
            .len(),
        2
    );
    assert_eq!(
        m.snapshot(ProbeMethod::IcmpEcho, false, t0, 0).links.len(),
        1
    );
    let histogram = |with: bool| {
        m.snapshot(ProbeMethod::StampUdp, with, t0, 0).links[0]
            .latest
            .clone()
            .unwrap()
            .rtt_histogram
    };
    assert_eq!(histogram(true), vec![1, 2, 3]);
    assert!(histogram(false).is_empty());
    // The matrix keeps it: leaving it out is a property of the answer.
    assert_eq!(
        m.links(ProbeMethod::StampUdp, t0)[0]
            .latest
            .as_ref()
            .unwrap()
            .rtt_histogram,
        vec![1, 2, 3]
    );
}

#[test]
fn a_link_that_never_answered_has_no_rtt_not_a_zero_one() {
    let t0 = Instant::now();
    let mut m = Matrix::new(0.3, Duration::from_secs(30));
    // Probes sent, none answered: loss is known (all lost), the RTT is not.
    for start in 1..=3 {
        m.apply("a", window("b", start, 0, 10, 0), false, t0);
    }
    let (s, _) = m.smoothed("a", "b", ProbeMethod::StampUdp, t0).unwrap();
    assert!(!s.rtt_known, "{s:?}");
    assert_eq!(s.loss_ppm, 1e6);
    // The first answer seeds the RTT as it is: 3 ms, not 30 % of the way
    // from a made-up 0 µs.
    m.apply("a", window("b", 4, 3_000, 10, 10), false, t0);
    let (s, _) = m.smoothed("a", "b", ProbeMethod::StampUdp, t0).unwrap();
    assert!(s.rtt_known);
    assert_eq!(s.rtt_p50_us, 3_000.0);
    assert!(s.loss_ppm < 1e6 && s.loss_ppm > 0.0, "{s:?}");
    // And it goes on smoothing from there.
    m.apply("a", window("b", 5, 4_000, 10, 10), false, t0);
    let (s, _) = m.smoothed("a", "b", ProbeMethod::StampUdp, t0).unwrap();
    assert!((s.rtt_p50_us - 3_300.0).abs() < 1e-9, "{s:?}");
}

#[test]
fn a_window_that_sent_nothing_seeds_nothing() {
    let t0 = Instant::now();
    let mut m = Matrix::new(0.3, Duration::from_secs(30));
    m.apply("a", window("b", 1, 0, 0, 0), false, t0);
    assert!(m.smoothed("a", "b", ProbeMethod::StampUdp, t0).is_none());
}

#[test]
fn a_node_is_forgotten_when_away_long_enough_and_not_a_node_of_the_cluster() {
    let t0 = Instant::now();
    let after = Duration::from_secs(600);
    let mut m = Matrix::new(0.3, Duration::from_secs(30));
    for n in ["a", "b", "c"] {
        m.connect(hello(n, &[ProbeMethod::StampUdp]));
    }
    m.apply("a", window("b", 1, 100, 10, 10), false, t0);
    m.apply("b", window("a", 1, 100, 10, 10), false, t0);
    m.apply("a", window("c", 1, 100, 10, 10), false, t0);
    assert_eq!(m.measured_nodes().len(), 3);
    m.disconnect("b", t0);
    m.disconnect("c", t0);
    let listed: BTreeSet<String> = ["a", "c"].iter().map(|s| s.to_string()).collect();
    // Not yet: away for less than `after`.
    assert!(
        m.forgettable(t0 + after / 2, after, Some(&listed))
            .is_empty()
    );
    // b is gone from the cluster; c is a Node still (its agent away); a is
    // connected.
    assert_eq!(m.forgettable(t0 + after, after, Some(&listed)), vec!["b"]);
    // Without a Node list, being away is enough.
    assert_eq!(m.forgettable(t0 + after, after, None), vec!["b", "c"]);
    // Reconnecting stops the clock.
    m.connect(hello("c", &[ProbeMethod::StampUdp]));
    assert_eq!(m.forgettable(t0 + after, after, None), vec!["b"]);
    m.apply_bandwidth("a", "b", 900.0, vec![900.0], 1);
    m.forget("b");
    assert_eq!(m.node_names(), vec!["a", "c"]);
    assert!(
        m.links(ProbeMethod::Unspecified, t0)
            .iter()
            .all(|l| l.src != "b" && l.dst != "b")
    );
    assert_eq!(m.links(ProbeMethod::Unspecified, t0).len(), 1);
    assert!(m.bandwidth.is_empty());
    assert_eq!(
        m.measured_nodes().into_iter().collect::<Vec<_>>(),
        vec!["a", "c"]
    );
}

/// Windows are tied to the agent instance that sent them: a restarted
/// agent (whose clock may have stepped back) is heard at once, and the
/// windows of its previous instance, from a session not closed yet, are
/// not.
#[test]
fn a_restarted_agent_is_heard_and_its_old_instance_is_not() {
    let t0 = Instant::now();
    let mut m = Matrix::new(1.0, Duration::from_secs(30));
    let with = |instance| Hello {
        instance_id: instance,
        ..hello("a", &[ProbeMethod::StampUdp])
    };
    m.connect(with(1));
    assert!(
        m.apply_from("a", 1, window("b", 100, 300, 10, 10), false, t0)
            .is_some()
    );
    // A resend within the instance: ignored.
    assert!(
        m.apply_from("a", 1, window("b", 100, 300, 10, 10), false, t0)
            .is_none()
    );
    // The agent restarts with its clock behind.
    m.connect(with(2));
    let restarted = m.apply_from("a", 2, window("b", 50, 500, 10, 10), false, t0);
    assert_eq!(restarted.unwrap().windows_total, 2);
    // The old instance's session speaks once more: not heard.
    assert!(
        m.apply_from("a", 1, window("b", 200, 900, 10, 10), false, t0)
            .is_none()
    );
    let s = m.smoothed("a", "b", ProbeMethod::StampUdp, t0).unwrap().0;
    assert_eq!(s.rtt_p50_us, 500.0);
}

#[test]
fn pages_cover_every_selected_link_once_in_order() {
    let t0 = Instant::now();
    let mut m = Matrix::new(0.3, Duration::from_secs(30));
    let names = ["a", "b", "c", "d", "e"];
    for src in names {
        m.connect(hello(src, &[ProbeMethod::StampUdp]));
        for dst in names.iter().filter(|d| **d != src) {
            m.apply(src, window(dst, 1, 100, 10, 10), false, t0);
        }
    }
    let whole = m.snapshot(ProbeMethod::Unspecified, false, t0, 0);
    assert_eq!(whole.links.len(), 20);
    let key = |l: &LinkState| (l.src.clone(), l.dst.clone(), l.method);
    let collect = |filter: Filter<'_>, limit: usize| {
        let mut page = Page {
            method: ProbeMethod::Unspecified,
            histograms: false,
            filter,
            after: None,
            limit,
        };
        let mut got = Vec::new();
        let mut pages = 0;
        loop {
            let (r, next) = m.page(&page, t0, 0);
            assert!(r.links.len() <= limit);
            // Statuses come with the first page only.
            assert_eq!(r.nodes.is_empty(), pages > 0);
            got.extend(r.links.iter().map(key));
            pages += 1;
            match next {
                Some(k) => page.after = Some(k),
                None => break,
            }
        }
        (got, pages)
    };
    // Pages of 3: the whole matrix, in order, nothing twice.
    let (got, pages) = collect(Filter::All, 3);
    assert_eq!(got, whole.links.iter().map(key).collect::<Vec<_>>());
    assert_eq!(pages, 7);
    // Exactly a page's worth: no empty page after it.
    assert_eq!(collect(Filter::All, 20).1, 1);
    // Links from or to b: its row and its column.
    let b: BTreeSet<String> = ["b".to_string()].into();
    let (got, _) = collect(Filter::Touching(&b), 3);
    assert_eq!(got.len(), 8);
    assert!(got.iter().all(|(s, d, _)| s == "b" || d == "b"));
    // Links among a, c, e only.
    let ace: BTreeSet<String> = ["a", "c", "e"].map(String::from).into();
    let (got, _) = collect(Filter::Among(&ace), 2);
    assert_eq!(got.len(), 6);
    assert!(
        got.iter()
            .all(|(s, d, _)| ace.contains(s) && ace.contains(d))
    );
    let (first, _) = m.page(
        &Page {
            method: ProbeMethod::Unspecified,
            histograms: false,
            filter: Filter::Among(&ace),
            after: None,
            limit: 100,
        },
        t0,
        0,
    );
    assert_eq!(first.nodes.len(), 3, "statuses of the selected nodes only");
}

/// A clone (what a query's snapshot holds) shares the rows nobody changed
/// and keeps what it saw when the matrix changes after it: a new window,
/// an expired link, a forgotten node.
#[test]
fn a_clone_shares_unchanged_rows_and_keeps_its_own_view() {
    let t0 = Instant::now();
    let mut m = Matrix::new(0.5, Duration::from_secs(30));
    for n in ["a", "b", "c"] {
        m.connect(hello(n, &[ProbeMethod::StampUdp]));
    }
    m.apply("a", window("b", 1, 100, 10, 10), false, t0);
    m.apply("b", window("a", 1, 100, 10, 10), false, t0);
    m.apply("c", window("a", 1, 100, 10, 10), false, t0);
    m.apply(
        "c",
        window("b", 1, 100, 10, 10),
        false,
        t0 + Duration::from_secs(50),
    );
    let copy = m.clone();
    let row = |m: &Matrix, n: &str| m.links.get(&m.id(n).unwrap()).cloned().unwrap();
    assert!(
        ["a", "b", "c"]
            .iter()
            .all(|n| Arc::ptr_eq(&row(&m, n), &row(&copy, n)))
    );

    // A new window unshares its source's row only.
    m.apply("a", window("b", 2, 300, 10, 10), false, t0);
    assert!(!Arc::ptr_eq(&row(&m, "a"), &row(&copy, "a")));
    assert!(Arc::ptr_eq(&row(&m, "b"), &row(&copy, "b")));
    let p50 = |m: &Matrix| {
        m.smoothed("a", "b", ProbeMethod::StampUdp, t0)
            .unwrap()
            .0
            .rtt_p50_us
    };
    assert_eq!((p50(&m), p50(&copy)), (200.0, 100.0));

    // Expiry at t0 + 60 s drops the three links last heard at t0 and keeps
    // c→b (heard at t0 + 50 s).
    assert_eq!(
        m.expire_links(t0 + Duration::from_secs(60), Duration::from_secs(60)),
        3
    );
    assert_eq!(m.links(ProbeMethod::Unspecified, t0).len(), 1);
    assert_eq!(copy.links(ProbeMethod::Unspecified, t0).len(), 4);

    // Forgetting a node leaves the clone's rows alone.
    let mut m = copy.clone();
    m.forget("a");
    assert_eq!(
        m.links(ProbeMethod::Unspecified, t0)
            .iter()
            .map(|l| (l.src.as_str(), l.dst.as_str()))
            .collect::<Vec<_>>(),
        vec![("c", "b")]
    );
    assert_eq!(copy.links(ProbeMethod::Unspecified, t0).len(), 4);
    assert!(!copy.links.values().any(|r| r.is_empty()) && !m.links.values().any(|r| r.is_empty()));
}

/// A node is in one group at a time: a new concurrent test replaces every
/// stored one it shares a member with, and leaves when one of its members
/// is forgotten. Its share is the median flow.
#[test]
fn a_concurrent_test_replaces_those_it_overlaps_and_goes_with_its_members() {
    let mut m = Matrix::new(0.3, Duration::from_secs(60));
    let ring = |ns: &[&str]| ns.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    m.apply_concurrent(ring(&["c", "a", "b"]), vec![300.0, 100.0, 200.0], 1);
    m.apply_concurrent(ring(&["x", "y", "z", "w"]), vec![1.0, 4.0, 3.0, 2.0], 1);
    let shares: Vec<f64> = m.concurrent().map(|c| c.share_mbps).collect();
    assert_eq!(
        shares,
        [200.0, 2.5],
        "the median flow (mean of the middle two)"
    );
    assert_eq!(
        m.concurrent().next().unwrap().members,
        ["c", "a", "b"],
        "ring order kept"
    );
    // b and d moved into a group with x: both older tests overlap it.
    m.apply_concurrent(ring(&["b", "d", "x"]), vec![50.0; 3], 2);
    let left: Vec<&Vec<String>> = m.concurrent().map(|c| &c.members).collect();
    assert_eq!(left, [&ring(&["b", "d", "x"])]);
    m.forget("d");
    assert_eq!(m.concurrent().count(), 0);
}
