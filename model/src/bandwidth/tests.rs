use super::*;

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("n{i:02}")).collect()
}

fn cfg() -> BandwidthConfig {
    BandwidthConfig {
        max_concurrent: 100,
        max_bytes_per_test: 100,
        budget_bytes_per_hour: 1_000,
        retest_after: Duration::from_secs(600),
        ..Default::default()
    }
}

/// A scheduler with [`cfg`] and no byte budget to run out of.
fn unbudgeted() -> Scheduler {
    Scheduler::new(BandwidthConfig {
        budget_bytes_per_hour: u64::MAX,
        ..cfg()
    })
}

fn counter() -> impl FnMut() -> u64 {
    let mut t = 0;
    move || {
        t += 1;
        t
    }
}

/// Finish every running test with `bytes` sent.
fn finish_all(s: &mut Scheduler, bytes: u64) {
    let running: Vec<(u64, String, String)> = s
        .running
        .iter()
        .map(|(t, r)| (*t, r.sender.clone(), r.receiver.clone()))
        .collect();
    for (t, snd, rcv) in running {
        assert!(s.result(t, &rcv, true).is_some());
        assert!(s.served(t, &snd, bytes));
    }
}

#[test]
fn a_node_is_in_at_most_one_test_at_a_time() {
    let mut s = Scheduler::new(cfg());
    let mut tok = counter();
    let now = Instant::now();
    let a = s.next(&names(7), now, &mut tok);
    assert_eq!(a.len(), 3, "7 nodes make 3 disjoint pairs");
    let mut seen = BTreeSet::new();
    for x in &a {
        assert!(seen.insert(x.sender.clone()) && seen.insert(x.receiver.clone()));
    }
    // Nothing more while they run (one node is free but has no partner).
    assert!(s.next(&names(7), now, &mut tok).is_empty());
}

#[test]
fn every_pair_is_covered_before_any_is_repeated_then_stale_pairs_again() {
    let mut s = unbudgeted();
    let mut tok = counter();
    let n = 6;
    let mut now = Instant::now();
    let mut tested: BTreeMap<(String, String), u32> = BTreeMap::new();
    let mut rounds = 0;
    while tested.len() < n * (n - 1) / 2 {
        for x in s.next(&names(n), now, &mut tok) {
            *tested.entry(unordered(&x.sender, &x.receiver)).or_default() += 1;
        }
        finish_all(&mut s, 10);
        now += Duration::from_secs(1);
        rounds += 1;
        assert!(rounds < 50, "coverage stalled: {tested:?}");
    }
    assert!(tested.values().all(|&c| c == 1), "{tested:?}");
    // Within retest_after nothing is tested again.
    assert!(s.next(&names(n), now, &mut tok).is_empty());
    // Once stale, pairs come back, in the reverse direction.
    now += Duration::from_secs(600);
    let again = s.next(&names(n), now, &mut tok);
    assert_eq!(again.len(), 3);
    for x in &again {
        assert!(x.sender > x.receiver, "reversed: {x:?}");
    }
}

#[test]
fn one_at_a_time_tests_rest_the_nodes_of_the_previous_test() {
    let mut s = Scheduler::new(BandwidthConfig {
        max_concurrent: 1,
        budget_bytes_per_hour: u64::MAX,
        ..cfg()
    });
    let mut tok = counter();
    let mut now = Instant::now();
    let mut prev: Option<Assignment> = None;
    for _ in 0..6 {
        let x = s.next(&names(6), now, &mut tok).remove(0);
        if let Some(p) = &prev {
            for n in [&x.sender, &x.receiver] {
                assert!(*n != p.sender && *n != p.receiver, "{p:?} then {x:?}");
            }
        }
        finish_all(&mut s, 10);
        prev = Some(x);
        now += Duration::from_secs(5);
    }
}

#[test]
fn the_hourly_budget_is_never_exceeded() {
    // Budget 1000, 100 per test: each node affords 10 reserved tests.
    let mut s = Scheduler::new(BandwidthConfig {
        retest_after: Duration::ZERO,
        ..cfg()
    });
    let mut tok = counter();
    let start = Instant::now();
    let mut now = start;
    let nodes = names(4);
    let mut sent: BTreeMap<String, u64> = BTreeMap::new();
    for _ in 0..100 {
        for x in s.next(&nodes, now, &mut tok) {
            // Senders report exactly the cap half the time, less otherwise.
            let bytes = if x.token % 2 == 0 { 100 } else { 40 };
            assert!(s.result(x.token, &x.receiver, true).is_some());
            assert!(s.served(x.token, &x.sender, bytes));
            *sent.entry(x.sender.clone()).or_default() += bytes;
            *sent.entry(x.receiver.clone()).or_default() += bytes;
        }
        for n in &nodes {
            assert!(s.used(n, now) <= 1_000, "{n}: {}", s.used(n, now));
        }
        now += Duration::from_secs(10);
    }
    // 100 rounds of 10 s = 1000 s < 1 h: everything sent is within budget.
    for (n, b) in &sent {
        assert!(*b <= 1_000, "{n} moved {b} bytes within the hour");
    }
    // Testing stopped only because no two nodes can afford a test.
    let can: Vec<&String> = nodes
        .iter()
        .filter(|n| s.used(n, now) + 100 <= 1_000)
        .collect();
    assert!(can.len() <= 1, "{can:?} could still test: {sent:?}");
    // An hour later the budget is free again.
    now = start + Duration::from_secs(1_000) + BUDGET_WINDOW;
    assert_eq!(s.next(&nodes, now, &mut tok).len(), 2);
}

#[test]
fn a_failed_pair_is_tried_again_after_a_minute_not_after_retest_after() {
    let mut s = Scheduler::new(cfg()); // retest_after 600 s
    let mut tok = counter();
    let now = Instant::now();
    let x = s.next(&names(2), now, &mut tok).remove(0);
    assert!(s.result(x.token, &x.receiver, false).is_some());
    assert!(s.served(x.token, &x.sender, 0));
    let soon = now + RETRY_FAILED_AFTER - Duration::from_secs(1);
    assert!(s.next(&names(2), soon, &mut tok).is_empty());
    let again = s.next(&names(2), now + RETRY_FAILED_AFTER, &mut tok);
    assert_eq!(again.len(), 1);
    // A success waits the full retest interval.
    let y = &again[0];
    assert!(s.result(y.token, &y.receiver, true).is_some());
    assert!(s.served(y.token, &y.sender, 0));
    let later = now + RETRY_FAILED_AFTER * 2;
    assert!(s.next(&names(2), later, &mut tok).is_empty());
}

#[test]
fn a_test_whose_sender_never_reports_keeps_its_reservation() {
    let mut s = Scheduler::new(BandwidthConfig {
        retest_after: Duration::ZERO,
        ..cfg()
    });
    let mut tok = counter();
    let now = Instant::now();
    let x = s.next(&names(2), now, &mut tok).remove(0);
    assert!(s.result(x.token, &x.receiver, true).is_some());
    let later = now + s.config().deadline_after();
    assert_eq!(s.expire(later), vec![x.token]);
    assert_eq!(s.used(&x.sender, later), 100, "full cap charged");
    assert_eq!(s.running(), 0);
    assert!(!s.served(x.token, &x.sender, 1), "too late");
}

#[test]
fn reports_from_the_wrong_node_or_token_are_ignored() {
    let mut s = Scheduler::new(cfg());
    let mut tok = counter();
    let now = Instant::now();
    let x = s.next(&names(2), now, &mut tok).remove(0);
    assert!(
        s.result(x.token, &x.sender, true).is_none(),
        "sender cannot report a result"
    );
    assert!(s.result(x.token + 1, &x.receiver, true).is_none());
    assert!(
        !s.served(x.token, &x.receiver, 1),
        "receiver cannot report served"
    );
    // Served first, result second: both count, then the test ends.
    assert!(s.served(x.token, &x.sender, 1_000_000));
    assert!(!s.served(x.token, &x.sender, 1), "only once");
    assert_eq!(s.running(), 1, "still waiting for the result");
    assert!(s.result(x.token, &x.receiver, true).is_some());
    assert!(s.result(x.token, &x.receiver, true).is_none(), "only once");
    assert_eq!(s.running(), 0);
    assert_eq!(s.used(&x.sender, now), 100, "charged at most the cap");
}

#[test]
fn concurrency_is_capped_and_disabled_means_none() {
    let mut s = Scheduler::new(BandwidthConfig {
        max_concurrent: 2,
        ..cfg()
    });
    let mut tok = counter();
    assert_eq!(s.next(&names(12), Instant::now(), &mut tok).len(), 2);
    let mut off = Scheduler::new(BandwidthConfig {
        enabled: false,
        ..cfg()
    });
    assert!(off.next(&names(12), Instant::now(), &mut tok).is_empty());
}

#[test]
fn windows_overlapping_a_test_of_either_end_are_disturbed() {
    let mut p = TestPeriods::default();
    let s = 100_000_000;
    p.add(1, "a", "b", s, s + 5_000_000);
    // a -> c overlaps (a was testing); c -> d does not.
    assert!(p.disturbs("a", "c", s + 1_000_000, s + 3_000_000));
    assert!(p.disturbs("c", "b", s - 2_000_000, s + 1));
    assert!(!p.disturbs("c", "d", s, s + 5_000_000));
    // Before and after, beyond the margins: not disturbed.
    let after = s + 5_000_000 + CLOCK_MARGIN_US + DRAIN_MARGIN_US;
    assert!(!p.disturbs("a", "c", s - 3_000_000, s - CLOCK_MARGIN_US));
    assert!(!p.disturbs("a", "c", after, after + 4_000_000));
    // Within them (queues still draining): disturbed.
    assert!(p.disturbs("a", "c", after - 1, after + 4_000_000));
    // Ending early shortens the period.
    p.add(2, "c", "d", s + 10_000_000, s + 20_000_000);
    assert!(p.disturbs("c", "e", s + 15_000_000, s + 16_000_000));
    p.end(2, s + 12_000_000);
    assert!(!p.disturbs("c", "e", s + 15_000_000, s + 16_000_000));
    assert!(p.disturbs("c", "e", s + 13_000_000, s + 14_000_000));
    p.prune(s + 20_000_000 + KEEP_PERIODS_US + 1);
    assert!(!p.disturbs("a", "b", s, s + 5_000_000), "pruned");
}

/// Run pairwise tests (each finished at once) until the scheduler hands
/// out a concurrent test or nothing; return that.
fn until_ring(
    s: &mut Scheduler,
    nodes: &[String],
    now: Instant,
    tok: &mut impl FnMut() -> u64,
    bytes: u64,
) -> Vec<Assignment> {
    for _ in 0..100 {
        let a = s.next(nodes, now, &mut *tok);
        if a.is_empty() || a[0].ring.is_some() {
            return a;
        }
        finish_all(s, bytes);
    }
    panic!("the scheduler never stopped handing out pairwise tests");
}

#[test]
fn a_group_is_tested_concurrently_as_a_ring_once_its_pairs_are_tested() {
    let mut s = unbudgeted();
    let mut tok = counter();
    let now = Instant::now();
    let nodes = names(6);
    s.set_rings([nodes[..4].to_vec()]);
    let ring = until_ring(&mut s, &nodes, now, &mut tok, 1);
    // Every pair of the group was tried first.
    for (i, a) in nodes[..4].iter().enumerate() {
        for b in &nodes[i + 1..4] {
            assert!(
                s.attempts.contains_key(&unordered(a, b)),
                "{a}-{b} untested"
            );
        }
    }
    let order: Vec<(&str, &str)> = ring
        .iter()
        .map(|a| (a.sender.as_str(), a.receiver.as_str()))
        .collect();
    assert_eq!(
        order,
        [
            ("n00", "n01"),
            ("n01", "n02"),
            ("n02", "n03"),
            ("n03", "n00")
        ],
        "member i sends to member i + 1, the last to the first"
    );
    let id = ring[0].ring;
    assert!(ring.iter().all(|a| a.ring == id));
    assert_eq!(s.running(), 4, "all flows at once");
    // It runs alone: the untested pairs outside it (n04, n05) wait.
    assert!(s.next(&nodes, now, &mut tok).is_empty());
    for a in &ring[..3] {
        let done = s.result(a.token, &a.receiver, true).expect("running");
        assert_eq!(done.ring, id);
        assert!(s.served(a.token, &a.sender, 1));
    }
    assert!(
        s.next(&nodes, now, &mut tok).is_empty(),
        "one flow still runs"
    );
    let last = &ring[3];
    assert!(s.result(last.token, &last.receiver, true).is_some());
    assert!(s.served(last.token, &last.sender, 1));
    // Over: the other pairs go on, and the ring is not repeated early.
    let next = s.next(&nodes, now, &mut tok);
    assert!(!next.is_empty() && next.iter().all(|a| a.ring.is_none()));
    finish_all(&mut s, 1);
    assert!(until_ring(&mut s, &nodes, now, &mut tok, 1).is_empty());
    let later = now + cfg().retest_after;
    let again = until_ring(&mut s, &nodes, later, &mut tok, 1);
    assert_eq!(again.len(), 4, "tested again after retest_after");
}

#[test]
fn a_due_ring_waits_for_running_pairs_and_holds_new_ones_back() {
    let mut s = unbudgeted();
    let mut tok = counter();
    let now = Instant::now();
    let nodes = names(5);
    // Cover the group's pairs (n00..n02) without the ring known yet.
    let group = nodes[..3].to_vec();
    while group.iter().enumerate().any(|(i, a)| {
        group[i + 1..]
            .iter()
            .any(|b| !s.attempts.contains_key(&unordered(a, b)))
    }) {
        assert!(!s.next(&nodes, now, &mut tok).is_empty());
        finish_all(&mut s, 1);
    }
    // A pair outside the group is running when the ring becomes due.
    let outside = s.next(&names(5)[3..], now, &mut tok);
    assert_eq!(outside.len(), 1);
    s.set_rings([group.clone()]);
    assert!(
        s.next(&nodes, now, &mut tok).is_empty(),
        "waits, starts nothing new"
    );
    finish_all(&mut s, 1);
    let ring = s.next(&nodes, now, &mut tok);
    assert_eq!(ring.len(), 3);
    assert!(ring.iter().all(|a| a.ring.is_some()));
}

#[test]
fn a_failed_flow_fails_the_ring_which_is_retried_after_a_minute() {
    let mut s = unbudgeted();
    let mut tok = counter();
    let now = Instant::now();
    let nodes = names(3);
    s.set_rings([nodes.clone()]);
    let ring = until_ring(&mut s, &nodes, now, &mut tok, 1);
    assert_eq!(ring.len(), 3);
    assert!(s.result(ring[0].token, &ring[0].receiver, false).is_some());
    // Nothing else reports: the deadline ends every flow.
    let late = now + s.config().deadline_after();
    assert_eq!(s.expire(late).len(), 3);
    assert!(s.rings_running.is_empty());
    assert!(s.next(&nodes, late, &mut tok).is_empty());
    let retry = s.next(&nodes, now + RETRY_FAILED_AFTER, &mut tok);
    assert_eq!(
        retry.len(),
        3,
        "a failed ring is retried like a failed pair"
    );
}

#[test]
fn a_ring_needs_every_member_to_afford_sending_and_receiving() {
    // Budget 1,000, cap 100: pairwise tests leave each of 3 nodes with
    // 200 charged; a ring needs 200 more on each.
    let mut s = Scheduler::new(BandwidthConfig {
        budget_bytes_per_hour: 350,
        retest_after: Duration::from_secs(3600 * 2),
        ..cfg()
    });
    let mut tok = counter();
    let now = Instant::now();
    let nodes = names(3);
    s.set_rings([nodes.clone()]);
    assert!(
        until_ring(&mut s, &nodes, now, &mut tok, 100).is_empty(),
        "cannot afford it"
    );
    let hour = now + BUDGET_WINDOW;
    let ring = s.next(&nodes, hour, &mut tok);
    assert_eq!(ring.len(), 3, "affordable once the charges age out");
    for n in &nodes {
        assert_eq!(s.used(n, hour), 200, "{n} charged as sender and receiver");
    }
}

#[test]
fn only_groups_of_three_or_more_are_rings_and_large_ones_are_sampled() {
    let mut s = Scheduler::new(cfg());
    let big: Vec<String> = names(40).into_iter().rev().collect();
    s.set_rings([names(2), big]);
    assert_eq!(s.rings.len(), 1, "a pair is no ring");
    assert_eq!(s.rings[0], names(MAX_RING_MEMBERS), "first members by name");
}

/// Groups change under load (a loaded link reads slower for a while): a
/// group of members that were all in a concurrent test lately is not due,
/// whatever group they were tested in; one with a new member is.
#[test]
fn a_group_that_changed_is_not_retested_until_a_member_is_due() {
    let mut s = unbudgeted();
    let mut tok = counter();
    let now = Instant::now();
    let nodes = names(5);
    s.set_rings([nodes[..4].to_vec()]);
    let ring = until_ring(&mut s, &nodes, now, &mut tok, 1);
    assert_eq!(ring.len(), 4);
    finish_all(&mut s, 1);
    // n03 leaves the group: the other three were tested a moment ago.
    s.set_rings([nodes[..3].to_vec()]);
    assert!(until_ring(&mut s, &nodes, now, &mut tok, 1).is_empty());
    // n04 joins: never in a concurrent test, so the group is due.
    s.set_rings([vec![nodes[0].clone(), nodes[1].clone(), nodes[4].clone()]]);
    let again = until_ring(&mut s, &nodes, now, &mut tok, 1);
    let members: Vec<&str> = again.iter().map(|a| a.sender.as_str()).collect();
    assert_eq!(members, ["n00", "n01", "n04"]);
}
