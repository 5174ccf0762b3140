//! The state owner on its own, through its handle: commands take effect
//! in the order they were sent, a session that does not read is closed
//! without stalling anyone, and every query is answered.

use super::*;
use netaware_common::now_unix_us;
use netaware_model::Error as PlaceError;
use netaware_model::place::diameter::Stop;
use netaware_model::place::{Query, place_on};
use netaware_proto::v1::LinkWindow;
use std::time::Duration;

/// A session's outbound queue, as the gRPC layer would hold it.
type Rx = mpsc::Receiver<Result<AggregatorMessage, Status>>;

fn config() -> StateConfig {
    StateConfig {
        // Recompute only when told to, so a test decides when.
        recompute_interval: Duration::from_secs(3600),
        bandwidth: BandwidthConfig {
            enabled: false,
            ..BandwidthConfig::default()
        },
        // Every query sees every command sent before it.
        snapshot_max_age: Duration::ZERO,
        ..StateConfig::default()
    }
}

fn hello(node: &str) -> Hello {
    Hello {
        node_name: node.into(),
        probe_addresses: vec!["192.0.2.1".into()],
        stamp_port: 8620,
        capabilities: vec![ProbeMethod::StampUdp as i32],
        protocol_version: netaware_proto::PROTOCOL_VERSION,
        instance_id: 1,
        ..Default::default()
    }
}

/// A window `start_s` seconds after an hour ago (the aggregator refuses
/// windows far from its clock), every RTT figure `rtt_us`.
fn window(peer: &str, start_s: u64, rtt_us: u64) -> LinkWindow {
    let base = now_unix_us() - 3_600_000_000;
    let ns = rtt_us * 1_000;
    LinkWindow {
        peer: peer.into(),
        method: ProbeMethod::StampUdp as i32,
        window_start_unix_us: base + start_s * 1_000_000,
        window_end_unix_us: base + (start_s + 1) * 1_000_000,
        sent: 10,
        received: 10,
        rtt_min_ns: ns,
        rtt_mean_ns: ns,
        rtt_p50_ns: ns,
        rtt_p90_ns: ns,
        rtt_p99_ns: ns,
        rtt_max_ns: ns,
        ..Default::default()
    }
}

async fn connect(state: &StateHandle, node: &str, capacity: usize) -> (SessionId, Rx) {
    let (tx, rx) = mpsc::channel(capacity);
    (state.connect(hello(node), tx).await.unwrap(), rx)
}

async fn reports(state: &StateHandle, session: SessionId, seq: u64, windows: Vec<LinkWindow>) {
    state
        .send(Command::Reports {
            session,
            batch: ReportBatch {
                batch_seq: seq,
                windows,
                ..Default::default()
            },
        })
        .await
        .unwrap();
}

async fn matrix(state: &StateHandle) -> GetMatrixResponse {
    state.matrix(ProbeMethod::Unspecified).await.unwrap()
}

/// Messages queued for a session so far.
fn drain(rx: &mut Rx) -> Vec<AggMsg> {
    std::iter::from_fn(|| rx.try_recv().ok())
        .filter_map(|m| m.ok().and_then(|m| m.msg))
        .collect()
}

fn connected(m: &GetMatrixResponse, node: &str) -> bool {
    m.nodes.iter().any(|n| n.node_name == node && n.connected)
}

#[tokio::test]
async fn commands_take_effect_in_the_order_they_were_sent() {
    let state = spawn(config());
    let (a, mut rx_a) = connect(&state, "a", 64).await;
    let (_b, mut rx_b) = connect(&state, "b", 64).await;
    // Sent, not awaited: the query after them must already see them.
    reports(&state, a, 1, vec![window("b", 1, 500)]).await;
    reports(&state, a, 2, vec![window("b", 2, 700)]).await;
    let m = matrix(&state).await;
    let link = m.link("a", "b").unwrap();
    assert_eq!(link.windows_total, 2);
    assert_eq!(link.latest.as_ref().unwrap().rtt_p50_ns, 700_000);

    // a got its plans (alone, then with b) and both acks, in order.
    let msgs = drain(&mut rx_a);
    let acks: Vec<u64> = msgs
        .iter()
        .filter_map(|m| match m {
            AggMsg::Ack(a) => Some(a.batch_seq),
            _ => None,
        })
        .collect();
    assert_eq!(acks, [1, 2]);
    let last_plan = msgs
        .iter()
        .filter_map(|m| match m {
            AggMsg::Plan(p) => Some(p),
            _ => None,
        })
        .next_back()
        .unwrap();
    assert_eq!(last_plan.peers.len(), 1, "a's plan names b");
    assert!(
        drain(&mut rx_b)
            .iter()
            .any(|m| matches!(m, AggMsg::Plan(p) if p.peers.len() == 1)),
        "b's plan names a"
    );
}

#[tokio::test]
async fn a_session_that_does_not_read_is_closed_and_the_others_go_on() {
    let state = spawn(config());
    // Room for one message: its first plan fills it, and nothing reads it.
    let (_slow, _rx_slow) = connect(&state, "slow", 1).await;
    let (a, mut rx_a) = connect(&state, "a", 64).await;
    // a's arrival replans everyone: the slow session's queue is full.
    for seq in 1..=3 {
        reports(&state, a, seq, vec![window("slow", seq, 300)]).await;
    }
    let m = matrix(&state).await;
    assert!(!connected(&m, "slow"), "{:?}", m.nodes);
    assert!(connected(&m, "a"));
    let acks = drain(&mut rx_a)
        .into_iter()
        .filter(|m| matches!(m, AggMsg::Ack(_)))
        .count();
    assert_eq!(acks, 3, "the owner kept serving a");
    // The closed node's figures are kept (marked disconnected), not lost.
    assert!(m.links.iter().any(|l| l.src == "a" && l.dst == "slow"));
}

#[tokio::test]
async fn every_query_is_answered() {
    let state = spawn(config());
    // Before anything is known.
    assert!(state.node("nowhere").is_none());
    assert!(state.snapshot().await.unwrap().groups().is_none());

    // Two sites: a-b close, c far.
    let mut sessions = Vec::new();
    for n in ["a", "b", "c"] {
        sessions.push((n, connect(&state, n, 64).await));
    }
    for (src, (id, _)) in &sessions {
        let windows = ["a", "b", "c"]
            .iter()
            .filter(|p| *p != src)
            .map(|p| {
                let far = *src == "c" || *p == "c";
                window(p, 1, if far { 20_000 } else { 200 })
            })
            .collect();
        reports(&state, *id, 1, windows).await;
    }
    state.recompute().await.unwrap();
    let groups = state.snapshot().await.unwrap().groups().unwrap();
    let l1: Vec<Vec<String>> = groups
        .iter()
        .filter(|g| g.level == 1)
        .map(|g| g.members.clone())
        .collect();
    assert!(
        l1.contains(&vec!["a".to_string(), "b".to_string()]),
        "{l1:?}"
    );
    let node = state.node("a").unwrap();
    assert!(node.status.connected && node.facts.is_some(), "{node:?}");

    let place = |k: usize| {
        let state = state.clone();
        async move {
            let query = Query {
                k,
                ..Default::default()
            };
            let inferred = state.inferred().unwrap();
            place_on(&inferred, &query, None, &Stop::new(false))
        }
    };
    assert_eq!(place(2).await.unwrap().nodes, ["a", "b"]);
    assert_eq!(place(0).await.unwrap_err(), PlaceError::ZeroK);

    let w = state.watch().await.unwrap();
    let links = w
        .snapshot
        .links(ProbeMethod::StampUdp, Instant::now())
        .count();
    assert_eq!(links + w.since.len(), 6, "every directed pair");
}

/// A state whose snapshots are reused for `max_age`, with nodes a and b
/// connected: a's session, and both sessions' receivers to keep open.
async fn two_nodes_with_snapshots_kept(max_age: Duration) -> (StateHandle, SessionId, [Rx; 2]) {
    let state = spawn(StateConfig {
        snapshot_max_age: max_age,
        ..config()
    });
    let (a, rx_a) = connect(&state, "a", 64).await;
    let (_, rx_b) = connect(&state, "b", 64).await;
    (state, a, [rx_a, rx_b])
}

/// Queries read snapshots: one taken when the state changed and the last
/// is older than the maximum age, else the last one again (so a query
/// flood costs the owner at most one copy per `snapshot_max_age`). A
/// watcher gets the last one and the updates stored since, so it misses
/// nothing.
#[tokio::test]
async fn a_snapshot_is_reused_while_young_and_retaken_when_old_and_changed() {
    // Real time: the owner's clock is std's, which tokio's pause does not
    // move.
    let max_age = Duration::from_millis(300);
    let (state, a, _sessions) = two_nodes_with_snapshots_kept(max_age).await;
    let first = state.snapshot().await.unwrap();
    assert_eq!(
        first
            .links(ProbeMethod::Unspecified, Instant::now())
            .count(),
        0
    );
    // Unchanged: the same copy.
    assert!(Arc::ptr_eq(&first, &state.snapshot().await.unwrap()));
    // Changed, but the copy is young: still the same (one stored window
    // not yet seen).
    reports(&state, a, 1, vec![window("b", 1, 500)]).await;
    let young = state.snapshot().await.unwrap();
    assert!(Arc::ptr_eq(&first, &young));
    // A watcher must not miss the window: it comes after the snapshot.
    let w = state.watch().await.unwrap();
    assert!(Arc::ptr_eq(&first, &w.snapshot));
    assert_eq!(w.since.len(), 1);
    assert_eq!(w.since[0].windows_total, 1);
    // Old and changed: a new copy.
    reports(&state, a, 2, vec![window("b", 2, 500)]).await;
    tokio::time::sleep(max_age + Duration::from_millis(50)).await;
    let fresh = state.snapshot().await.unwrap();
    assert!(!Arc::ptr_eq(&first, &fresh));
    // Taken anew: nothing is "since" it.
    assert!(state.watch().await.unwrap().since.is_empty());
    let link = fresh.matrix(ProbeMethod::Unspecified, false, Instant::now(), 0);
    assert_eq!(link.links[0].windows_total, 2);
}

/// The owner lets go of its latest snapshot once no query may be given it
/// (old, and the state changed since): held on, it would keep every row of
/// links changed since. A query still reading it keeps it readable.
#[tokio::test]
async fn the_owner_lets_go_of_a_snapshot_no_query_may_be_given() {
    let max_age = Duration::from_millis(200);
    let (state, a, _sessions) = two_nodes_with_snapshots_kept(max_age).await;
    let first = state.snapshot().await.unwrap();
    // Unchanged, every query may have it however old: kept.
    tokio::time::sleep(HEARTBEAT + max_age).await;
    assert_eq!(Arc::strong_count(&first), 2, "let go of while current");
    assert!(Arc::ptr_eq(&first, &state.snapshot().await.unwrap()));
    reports(&state, a, 1, vec![window("b", 1, 500)]).await;
    tokio::time::sleep(HEARTBEAT + max_age).await;
    assert_eq!(Arc::strong_count(&first), 1, "the owner still holds it");
    let now = Instant::now();
    assert_eq!(first.links(ProbeMethod::Unspecified, now).count(), 0);
    let fresh = state.snapshot().await.unwrap();
    assert_eq!(fresh.links(ProbeMethod::Unspecified, now).count(), 1);
}

/// A recomputation runs off the owner: queries are answered while it
/// runs (at 5,000 nodes one takes seconds, and GetMatrix had failed with
/// "the owner did not answer within 5 s"), and its result is applied once
/// it is done.
#[tokio::test]
async fn the_owner_answers_while_a_recomputation_runs() {
    let state = spawn(config());
    let names: Vec<String> = (0..60).map(|i| format!("n{i:02}")).collect();
    let mut sessions = Vec::new();
    for n in &names {
        sessions.push(connect(&state, n, 1024).await);
    }
    for (i, (id, _)) in sessions.iter().enumerate() {
        let windows = names
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(j, p)| window(p, 1, if (i < 30) == (j < 30) { 200 } else { 20_000 }))
            .collect();
        reports(&state, *id, 1, windows).await;
    }
    let recompute = tokio::spawn({
        let state = state.clone();
        async move { state.recompute().await }
    });
    // Let the owner take the command and start the recomputation.
    tokio::task::yield_now().await;
    let during = state.snapshot().await.unwrap();
    assert!(
        state.inferred().is_none() && during.groups().is_none(),
        "the snapshot was answered only after the recomputation"
    );
    recompute.await.unwrap().unwrap();
    let groups = state.snapshot().await.unwrap().groups().unwrap();
    assert_eq!(groups.iter().filter(|g| g.level == 1).count(), 2);
    assert!(state.inferred().is_some());
}

/// The heartbeat `/healthz` checks beats while the owner goes round.
#[tokio::test]
async fn the_owner_beats_while_it_goes_round() {
    let t0 = Instant::now();
    let state = spawn(config());
    tokio::time::sleep(HEARTBEAT * 2 + Duration::from_millis(200)).await;
    // Without a beat after t0 + 1.5 s this would be a silence of 16.5 s.
    let later = t0 + HEARTBEAT_MAX_SILENCE + Duration::from_millis(1500);
    assert_eq!(state.heartbeat().wedged(later), None);
}

/// A query to an owner that does not answer fails within its deadline,
/// with a message that says so (the review's E3f).
#[tokio::test(start_paused = true)]
async fn a_query_to_a_silent_owner_fails_in_time() {
    // An owner that never reads its commands (wedged).
    let (tx, _rx) = mpsc::channel(1);
    let (_inferred_tx, inferred) = watch::channel(None);
    let (_statuses_tx, statuses) = watch::channel(Arc::new(Statuses::new()));
    let wedged = StateHandle {
        tx,
        inferred,
        statuses,
        metrics: StateMetrics::default(),
        heartbeat: Heartbeat::new("state owner", HEARTBEAT_MAX_SILENCE, Instant::now()),
    };
    let started = tokio::time::Instant::now();
    let e = wedged.snapshot().await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    assert!(e.message().contains("did not answer within 5 s"), "{e}");
    assert_eq!(started.elapsed(), OWNER_DEADLINE);
    assert!(
        wedged
            .heartbeat()
            .wedged(Instant::now() + HEARTBEAT_MAX_SILENCE)
            .is_some()
    );
}

fn refused(state: &StateHandle, kind: &str) -> u64 {
    state
        .metrics()
        .refused
        .get_or_create(&crate::metrics::RefusedLabels { kind: kind.into() })
        .get()
}

#[tokio::test]
async fn a_bad_window_is_dropped_alone_and_its_batch_still_acknowledged() {
    let state = spawn(config());
    let (a, mut rx_a) = connect(&state, "a", 64).await;
    let _b = connect(&state, "b", 64).await;
    let mut future = window("b", 1, 300);
    future.window_start_unix_us = 1 << 62;
    future.window_end_unix_us = (1 << 62) + 1_000_000;
    let mut inverted = window("b", 2, 300);
    inverted.received = inverted.sent + 1;
    let batch = vec![
        future,
        window("b", 3, 300),
        inverted,
        window("nobody", 4, 300),
    ];
    reports(&state, a, 1, batch).await;
    let m = matrix(&state).await;
    let link = m.link("a", "b").unwrap();
    assert_eq!(link.windows_total, 1, "only the good window is stored");
    assert!(!m.links.iter().any(|l| l.dst == "nobody"));
    assert_eq!(refused(&state, "window"), 3);
    // Acknowledged, so the agent does not send the batch again and again.
    let acked = drain(&mut rx_a)
        .iter()
        .any(|m| matches!(m, AggMsg::Ack(a) if a.batch_seq == 1));
    assert!(acked);
}

#[tokio::test]
async fn a_window_from_the_future_cannot_pin_a_link() {
    let state = spawn(config());
    let (a, _rx_a) = connect(&state, "a", 64).await;
    let _b = connect(&state, "b", 64).await;
    let mut forged = window("b", 1, 300);
    forged.window_start_unix_us = 1 << 62;
    forged.window_end_unix_us = (1 << 62) + 1_000_000;
    reports(&state, a, 1, vec![forged]).await;
    // The genuine windows after it are all stored (at 8ba8183 none was:
    // every one looked older than the forged one).
    for s in 2..=4 {
        reports(&state, a, s, vec![window("b", s, 300)]).await;
    }
    let m = matrix(&state).await;
    let link = m.link("a", "b").unwrap();
    assert_eq!(link.windows_total, 3);
}

#[tokio::test]
async fn an_impossible_bandwidth_result_counts_as_a_failed_test() {
    let state = spawn(config());
    let (a, _rx) = connect(&state, "a", 64).await;
    // No test is running: the result is refused first, then ignored as
    // foreign; either way nothing reaches the matrix.
    state
        .send(Command::BandwidthResult {
            session: a,
            result: BandwidthResult {
                token: 1,
                mbps: f64::NAN,
                stream_mbps: vec![f64::NAN, -5.0],
                ..Default::default()
            },
        })
        .await
        .unwrap();
    let m = matrix(&state).await;
    assert!(m.bandwidth.is_empty());
    assert_eq!(refused(&state, "bandwidth_result"), 1);
}

/// The review's S10: nodes were never forgotten, so Place could choose a
/// node the autoscaler deleted long ago. A node away for `forget_after`
/// and no longer in the Node list leaves the matrix, the groups and Place;
/// one still listed (its agent away) stays.
#[tokio::test]
async fn a_node_deleted_from_the_cluster_is_forgotten_after_its_grace() {
    let state = spawn(StateConfig {
        forget_after: Duration::ZERO,
        ..config()
    });
    let mut sessions = Vec::new();
    for n in ["a", "b", "c"] {
        sessions.push(connect(&state, n, 64).await);
    }
    for (i, src) in ["a", "b", "c"].iter().enumerate() {
        let windows = ["a", "b", "c"]
            .iter()
            .filter(|p| *p != src)
            .map(|p| window(p, 1, 200))
            .collect();
        reports(&state, sessions[i].0, 1, windows).await;
    }
    // b and c go away; only c is still a Node of the cluster.
    for (id, _) in sessions.drain(1..) {
        state
            .send(Command::Disconnect { session: id })
            .await
            .unwrap();
    }
    let listed = ["a", "c"].iter().map(|s| s.to_string()).collect();
    state
        .send(Command::NodeList { names: listed })
        .await
        .unwrap();
    state.recompute().await.unwrap();
    let s = state.snapshot().await.unwrap();
    let nodes: Vec<String> = s
        .matrix(ProbeMethod::Unspecified, false, Instant::now(), 0)
        .nodes
        .into_iter()
        .map(|n| n.node_name)
        .collect();
    assert_eq!(nodes, ["a", "c"]);
    assert!(
        s.groups()
            .unwrap()
            .iter()
            .all(|g| !g.members.contains(&"b".to_string()))
    );
    let all = Query {
        k: 3,
        allow_stale: true,
        ..Default::default()
    };
    let e = place_on(&state.inferred().unwrap(), &all, None, &Stop::new(false));
    assert!(
        matches!(e, Err(PlaceError::TooFewEligibleBecause { known: 2, .. })),
        "{e:?}"
    );
}

/// A new leader seeded with the ids on the Nodes publishes them, not
/// fresh ones.
#[tokio::test]
async fn seeded_group_ids_are_the_ones_published() {
    let state = spawn(config());
    let (a, _ra) = connect(&state, "a", 64).await;
    let (b, _rb) = connect(&state, "b", 64).await;
    reports(&state, a, 1, vec![window("b", 1, 200)]).await;
    reports(&state, b, 1, vec![window("a", 1, 200)]).await;
    let ids = ["g41".to_string(), "g42".to_string(), "g43".to_string()];
    let seeded = [
        ("a".to_string(), ids.clone()),
        ("b".to_string(), ids.clone()),
    ]
    .into_iter()
    .collect();
    state.seed_groups(seeded).await.unwrap();
    let inferred = state.subscribe_inferred().borrow().clone().unwrap();
    assert_eq!(inferred.facts["a"].groups, ids);
    assert_eq!(inferred.facts["b"].groups, ids);
}

/// A restarted agent's new session is heard; what its previous instance
/// still sends on an old session is acknowledged (so never resent) but not
/// stored, and counted.
#[tokio::test]
async fn windows_of_a_replaced_agent_instance_are_not_stored() {
    let state = spawn(config());
    let _b = connect(&state, "b", 64).await;
    let (old, mut rx_old) = connect(&state, "a", 64).await;
    let (tx, _rx_new) = mpsc::channel(64);
    let restarted = Hello {
        instance_id: 2,
        ..hello("a")
    };
    let new = state.connect(restarted, tx).await.unwrap();
    reports(&state, old, 1, vec![window("b", 5, 900)]).await;
    reports(&state, new, 1, vec![window("b", 1, 300)]).await;
    let m = matrix(&state).await;
    let link = m.link("a", "b").unwrap();
    assert_eq!(link.windows_total, 1);
    assert_eq!(link.latest.as_ref().unwrap().rtt_p50_ns, 300_000);
    assert_eq!(refused(&state, "window"), 1);
    assert!(
        drain(&mut rx_old)
            .iter()
            .any(|m| matches!(m, AggMsg::Ack(a) if a.batch_seq == 1)),
        "the old session's batch is acknowledged"
    );
}

/// The status a session's queue ends with (after any messages).
fn closing_status(rx: &mut Rx) -> Option<Status> {
    std::iter::from_fn(|| rx.try_recv().ok()).find_map(Result::err)
}

/// A node has one agent: a newer authenticated session closes the older
/// one, saying why; an unauthenticated one may not join it at all.
#[tokio::test]
async fn a_newer_authenticated_session_replaces_the_older_and_none_may_sneak_in() {
    let state = spawn(config());
    let until = Trust::Until(Instant::now() + Duration::from_secs(3600));
    let (tx, mut old_rx) = mpsc::channel(64);
    let old = state.connect_as(hello("a"), tx, until).await.unwrap();
    let (tx, _new_rx) = mpsc::channel(64);
    let new = state.connect_as(hello("a"), tx, until).await.unwrap();
    assert_ne!(old, new);
    let s = closing_status(&mut old_rx).expect("the older session is told");
    assert_eq!(s.code(), tonic::Code::Aborted, "{s:?}");
    assert!(s.message().contains("replaced"), "{s:?}");
    assert!(
        connected(&matrix(&state).await, "a"),
        "the newer one is live"
    );
    // The older stream's end, arriving later, changes nothing.
    state
        .send(Command::Disconnect { session: old })
        .await
        .unwrap();
    assert!(connected(&matrix(&state).await, "a"), "still live");
    state
        .send(Command::Disconnect { session: new })
        .await
        .unwrap();
    assert!(
        !connected(&matrix(&state).await, "a"),
        "gone with the newer"
    );
    let (tx, _new_rx) = mpsc::channel(64);
    state.connect_as(hello("a"), tx, until).await.unwrap();

    let (tx, _rx) = mpsc::channel(64);
    let refused = state.connect(hello("a"), tx).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    // Unauthenticated sessions (--agent-auth none) live side by side.
    let (_, _b1) = connect(&state, "b", 64).await;
    let (_, mut b2) = connect(&state, "b", 64).await;
    assert!(closing_status(&mut b2).is_none());
}

/// A session lasts as long as its token: then it is closed, and the
/// agent reconnects with the token the kubelet rotated in.
/// (Real time: the owner reads the wall of `std::time::Instant`, checked
/// on its one-second heartbeat.)
#[tokio::test]
async fn a_session_is_closed_when_its_token_expires() {
    let state = spawn(config());
    let (tx, mut rx) = mpsc::channel(64);
    let until = Instant::now() + Duration::from_millis(1500);
    state
        .connect_as(hello("a"), tx, Trust::Until(until))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(connected(&matrix(&state).await, "a"));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!connected(&matrix(&state).await, "a"));
    let s = closing_status(&mut rx).expect("the agent is told why");
    assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");
    assert!(s.message().contains("expired"), "{s:?}");
}

/// The peers of the newest plan among `msgs`.
fn latest_plan(msgs: &[AggMsg]) -> Option<Vec<String>> {
    msgs.iter()
        .filter_map(|m| match m {
            AggMsg::Plan(p) => Some(p.peers.iter().map(|t| t.node_name.clone()).collect()),
            _ => None,
        })
        .next_back()
}

#[tokio::test(start_paused = true)]
async fn past_the_bound_a_newcomer_is_planned_at_once_and_the_others_on_the_next_tick() {
    let mut c = config();
    c.plan.max_targets = 2;
    let state = spawn(c);
    let names = ["a", "b", "c", "d", "e", "f"];
    let mut rxs = Vec::new();
    for n in names {
        rxs.push(connect(&state, n, 64).await.1);
    }
    // Connecting is answered only after the newcomer's plan is queued.
    let first: Vec<Vec<AggMsg>> = rxs.iter_mut().map(drain).collect();
    let f = latest_plan(&first[5]).expect("f was planned when it connected");
    assert_eq!(f.len(), 2, "{f:?}");
    // a saw a full mesh while the cluster fitted (up to 3 nodes), then
    // nothing more until the replanning tick.
    assert_eq!(latest_plan(&first[0]).map(|p| p.len()), Some(2));
    tokio::time::sleep(REPLAN_TICK * 2).await;
    for (rx, me) in rxs.iter_mut().zip(names) {
        if let Some(p) = latest_plan(&drain(rx)) {
            assert!(p.len() <= 2 && !p.contains(&me.to_string()), "{me}: {p:?}");
        }
    }
    // A node that leaves is dropped from every plan on the next tick.
    state
        .send(Command::Disconnect { session: 1 })
        .await
        .unwrap();
    tokio::time::sleep(REPLAN_TICK * 2).await;
    let mut replanned = 0;
    for rx in rxs.iter_mut().skip(1) {
        if let Some(p) = latest_plan(&drain(rx)) {
            assert!(!p.contains(&"a".to_string()), "{p:?}");
            replanned += 1;
        }
    }
    assert!(replanned > 0, "the nodes that probed a got new plans");
}

#[tokio::test]
async fn get_node_is_answered_without_the_owner() {
    let state = spawn(config());
    let (a, _rx) = connect(&state, "a", 64).await;
    connect(&state, "b", 64).await;
    // Known at once on a small cluster, with no facts yet.
    let view = state.node("a").expect("a is known once connected");
    assert!(view.status.connected && view.facts.is_none());
    assert!(state.node("nowhere").is_none());
    reports(&state, a, 1, vec![window("b", 1, 300)]).await;
    state.recompute().await.unwrap();
    // The recomputation is published with its facts.
    let mut inferred = state.subscribe_inferred();
    inferred.wait_for(|i| i.is_some()).await.unwrap();
    let view = state.node("a").unwrap();
    assert!(view.facts.is_some(), "{view:?}");
}

/// Answer the bandwidth tests queued for the sessions: `mbps(n)` for each
/// of the `n` tests queued at once (a concurrent test's flows come
/// together). Returns how many were answered.
async fn answer_tests(
    state: &StateHandle,
    sessions: &mut [(SessionId, Rx)],
    mbps: impl Fn(usize, usize) -> f64,
) -> usize {
    let mut tests = Vec::new();
    let mut grants = Vec::new();
    for (id, rx) in sessions.iter_mut() {
        for m in drain(rx) {
            match m {
                AggMsg::BandwidthTest(t) => tests.push((*id, t)),
                AggMsg::BandwidthGrant(g) => grants.push((*id, g)),
                _ => {}
            }
        }
    }
    let n = tests.len();
    for (i, (session, t)) in tests.into_iter().enumerate() {
        let result = BandwidthResult {
            token: t.token,
            peer: t.peer,
            mbps: mbps(i, n),
            started_unix_us: now_unix_us(),
            ..Default::default()
        };
        state
            .send(Command::BandwidthResult { session, result })
            .await
            .unwrap();
    }
    for (session, g) in grants {
        let served = BandwidthServed {
            token: g.token,
            bytes_sent: 1000,
            ..Default::default()
        };
        state
            .send(Command::BandwidthServed { session, served })
            .await
            .unwrap();
    }
    n
}

/// A group's concurrent test is stored as such (its median flow the
/// group's share), never as pairwise figures, and Place counts on the
/// share where it is lower than the pair tests.
#[tokio::test]
async fn a_concurrent_test_is_stored_apart_and_caps_what_place_counts_on() {
    let state = spawn(StateConfig {
        bandwidth: BandwidthConfig {
            enabled: true,
            ..BandwidthConfig::default()
        },
        ..config()
    });
    let names = ["a", "b", "c"];
    let mut sessions = Vec::new();
    for n in names {
        let (tx, rx) = mpsc::channel(64);
        let h = Hello {
            bandwidth_port: 8621,
            ..hello(n)
        };
        sessions.push((state.connect(h, tx).await.unwrap(), rx));
    }
    // One l1 group of all three.
    for (i, (s, _)) in sessions.iter().enumerate() {
        let peers = names.iter().filter(|p| **p != names[i]);
        reports(&state, *s, 1, peers.map(|p| window(p, 0, 100)).collect()).await;
    }
    state.recompute().await.unwrap();
    // Pair tests alone at 900 Mbit/s; the ring's three flows at once.
    let ring_flows = [300.0, 500.0, 400.0];
    let deadline = Instant::now() + Duration::from_secs(20);
    while matrix(&state).await.concurrent.is_empty() {
        assert!(Instant::now() < deadline, "no concurrent test in 20 s");
        answer_tests(&state, &mut sessions, |i, n| {
            if n == 3 { ring_flows[i] } else { 900.0 }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = matrix(&state).await;
    assert_eq!(m.concurrent.len(), 1);
    let c = &m.concurrent[0];
    assert_eq!(c.members.len(), 3);
    let mut flows = c.flow_mbps.clone();
    flows.sort_by(f64::total_cmp);
    assert_eq!(flows, [300.0, 400.0, 500.0]);
    assert_eq!(c.share_mbps, 400.0, "the median flow");
    assert!(
        m.bandwidth.iter().all(|b| b.mbps == 900.0),
        "ring flows are not pair figures: {:?}",
        m.bandwidth
    );
    state.recompute().await.unwrap();
    let inferred = state.inferred().unwrap();
    let placed = place_on(
        &inferred,
        &Query {
            k: 3,
            allow_stale: true,
            ..Default::default()
        },
        None,
        &Stop::new(false),
    )
    .unwrap();
    assert_eq!(placed.bottleneck_mbps, Some(400.0));
}
