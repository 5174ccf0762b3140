#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! The security review's query experiments (E3d, E3e-size, E3f, E3g)
//! against the real aggregator binary on loopback, with a mesh of fake
//! agents: a query can neither stall measurement, nor outlive its deadline
//! or a SIGTERM, nor hold memory by not reading. At 8ba8183 each showed
//! the unsafe outcome (docs/security.md).

mod fake;

use std::time::{Duration, Instant};

use fake::{mesh, node, start, start_with, window};
use netaware_e2e::{binary, http_get, sigterm};
use netaware_proto::v1::{GetMatrixRequest, PlaceRequest, WatchLinksRequest};
use netaware_proto::{Message, ProbeMethod};

/// Zones of the review's E3e: 150 nodes.
const ZONES: [usize; 4] = [10, 50, 50, 40];

fn place(k: u32) -> PlaceRequest {
    PlaceRequest {
        k,
        ..Default::default()
    }
}

/// E3d: 40k + 40k repeated names held the aggregator (and every agent's
/// acknowledgements) for 8.6 s. Now they are refused before any work, and
/// agents are acknowledged meanwhile.
#[tokio::test]
async fn repeated_names_are_refused_at_once() {
    let agg = start_with(&["--recompute-interval", "1s"]);
    let mut fakes = mesh(&agg, &[2]).await;
    agg.recomputed(2).await;
    let q = agg.query;
    let request = tokio::spawn(async move {
        let started = Instant::now();
        let r = fake::query_client(q)
            .await
            .place(PlaceRequest {
                k: 1,
                include: vec![node(0); 40_000],
                exclude: vec![node(1); 40_000],
                ..Default::default()
            })
            .await;
        (started.elapsed(), r)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = ack_time(&mut fakes[0], 2).await;
    assert!(t < Duration::from_secs(1), "an ack took {t:?}");
    let (took, r) = request.await.unwrap();
    let e = r.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("at most 10000"), "{}", e.message());
    assert!(took < Duration::from_secs(2), "{took:?}");
}

/// How long `a` takes to have a batch acknowledged.
async fn ack_time(a: &mut fake::Fake, seq: u64) -> Duration {
    let started = Instant::now();
    a.report(seq, vec![window(&node(1), 1)]).await;
    a.acked(seq).await;
    started.elapsed()
}

/// E3d/E3f: on 150 nodes, Place with k = 75 ran past 90 s inside the state
/// owner; no agent was acknowledged meanwhile, SIGTERM was ignored for more
/// than 6 s, and `/healthz` stayed 200. Now placements run beside the
/// owner: agents are acknowledged at once, GetMatrix is answered, each
/// placement ends by its deadline, and SIGTERM ends the process in 5 s.
#[tokio::test]
async fn costly_placements_neither_stall_measurement_nor_outlive_deadline_or_sigterm() {
    let mut agg = start_with(&["--query-timeout", "3s", "--recompute-interval", "1s"]);
    let mut fakes = mesh(&agg, &ZONES).await;
    agg.recomputed(ZONES.iter().sum()).await;
    // Four at once: two run, two wait for a slot.
    let placements: Vec<_> = (0..4)
        .map(|_| {
            let agg_query = agg.query;
            tokio::spawn(async move {
                let started = Instant::now();
                let mut c = fake::query_client(agg_query).await;
                let r = c.place(place(75)).await;
                (started.elapsed(), r.map(|r| r.into_inner().nodes.len()))
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first = &mut fakes[0];
    for seq in 2..5 {
        let t = ack_time(first, seq).await;
        assert!(
            t < Duration::from_secs(1),
            "an ack took {t:?} during placements"
        );
    }
    let started = Instant::now();
    let m = agg.matrix().await;
    assert_eq!(m.links.len(), 150 * 149);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "GetMatrix took {:?}",
        started.elapsed()
    );
    let (status, _) = http_get("127.0.0.1", agg.metrics, "/healthz").unwrap();
    assert_eq!(status, 200);
    for p in placements {
        let (took, r) = p.await.unwrap();
        eprintln!(
            "Place k=75 of 150: {took:?}, {:?}",
            r.as_ref().map_err(tonic::Status::code)
        );
        match r {
            Ok(n) => assert_eq!(n, 75),
            Err(e) => {
                assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e}");
                assert!(e.message().contains("--query-timeout"), "{}", e.message());
            }
        }
        assert!(took < Duration::from_secs(5), "a placement took {took:?}");
    }

    // SIGTERM while placements run.
    let placements: Vec<_> = (0..4)
        .map(|_| {
            let q = agg.query;
            tokio::spawn(async move { fake::query_client(q).await.place(place(75)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    sigterm(&agg.child.0);
    loop {
        if agg.child.0.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the aggregator was still running 5 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(placements);
}

/// E3e-size: at 150 nodes the matrix was 4.88 MB with histograms, and
/// `netaware matrix` failed with "decoded message length too large". Now
/// GetMatrix leaves histograms out unless asked, the CLI accepts what the
/// server may send, and the answer with histograms arrives too.
#[tokio::test]
async fn a_150_node_matrix_reaches_the_cli() {
    let agg = start();
    let _fakes = mesh(&agg, &ZONES).await;
    let full = agg
        .client()
        .await
        .get_matrix(GetMatrixRequest {
            method: ProbeMethod::StampUdp as i32,
            include_histograms: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(full.links.len(), 150 * 149);
    assert!(
        full.encoded_len() > 4 << 20,
        "{} bytes: would not show what tonic's default limit refused",
        full.encoded_len()
    );
    assert!(
        full.links
            .iter()
            .all(|l| !l.latest.as_ref().unwrap().rtt_histogram.is_empty())
    );
    let lean = agg.matrix().await;
    assert!(lean.encoded_len() < full.encoded_len() * 3 / 4);

    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(binary("netaware"))
            .args(["--aggregator", &format!("http://127.0.0.1:{}", agg.query)])
            .args(["matrix", "-o", "json"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["links"].as_array().unwrap().len(), 150 * 149);
}

/// A watcher of `method` with its initial state, on the aggregator whose
/// query port is `query`.
async fn watch(
    query: u16,
    method: ProbeMethod,
) -> Result<tonic::Streaming<netaware_proto::v1::LinkUpdate>, tonic::Status> {
    fake::query_client(query)
        .await
        .watch_links(WatchLinksRequest {
            method: method as i32,
            send_initial: true,
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

/// A pair's live view watches two nodes: it gets their links alone, the
/// initial state and every update after, not the other 150 × 149.
#[tokio::test]
async fn a_watcher_of_two_nodes_gets_their_links_alone() {
    let agg = start_with(&[]);
    let fakes = mesh(&agg, &ZONES).await;
    let _ = agg.matrix().await;
    let two = vec![node(3), node(120)];
    let mut w = fake::query_client(agg.query)
        .await
        .watch_links(WatchLinksRequest {
            method: ProbeMethod::StampUdp as i32,
            send_initial: true,
            nodes: two.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    // Each node's 149 links out and 149 in, one of them shared.
    let mut initial = 0;
    while initial < 2 * 149 * 2 - 2 {
        let u = tokio::time::timeout(Duration::from_secs(5), w.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let l = u.link.unwrap();
        assert!(
            two.contains(&l.src) || two.contains(&l.dst),
            "{} → {}",
            l.src,
            l.dst
        );
        initial += 1;
    }
    // A window between two other nodes is not sent; one of node 3 is.
    fakes[7].report(2, vec![window(&node(8), 1)]).await;
    fakes[3].report(2, vec![window(&node(4), 1)]).await;
    let u = tokio::time::timeout(Duration::from_secs(5), w.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .link
        .unwrap();
    assert_eq!((u.src.as_str(), u.dst.as_str()), ("n-003", "n-004"));

    let e = fake::query_client(agg.query)
        .await
        .watch_links(WatchLinksRequest {
            nodes: vec!["x".into(); 10_001],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("at most 10000"), "{}", e.message());
}

/// Ask for a watcher with its initial state that never reads: what the
/// aggregator answered, held until the task is aborted.
fn idle_watcher(query: u16) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let r = watch(query, ProbeMethod::Unspecified).await;
        // Hold the stream (or the refusal) without reading.
        std::future::pending::<()>().await;
        drop(r);
    })
}

/// E3g: 40 watchers that never read took the aggregator from 87 to
/// 299 MiB. Now watchers are capped, at most four receive their initial
/// state at once (each streaming from a shared snapshot through a small
/// queue), and one that does not read is dropped, freeing its slots.
#[tokio::test]
async fn watchers_that_never_read_hold_neither_memory_nor_a_slot() {
    let agg = start_with(&["--max-watchers", "40"]);
    let _fakes = mesh(&agg, &ZONES).await;
    let _ = agg.matrix().await;
    let before = agg.rss_kib();
    let idle: Vec<_> = (0..40).map(|_| idle_watcher(agg.query)).collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // All 40 slots are taken (four streaming, the rest waiting their turn).
    let e = watch(agg.query, ProbeMethod::Unspecified)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    assert!(e.message().contains("--max-watchers"), "{}", e.message());
    let mut peak = 0;
    for _ in 0..10 {
        peak = peak.max(agg.rss_kib().saturating_sub(before));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(peak < 40 * 1024, "40 idle watchers took {peak} KiB");

    // Each is dropped after 5 s of not reading, or refused once it waited
    // for the whole query deadline (10 s): then a new watcher gets its
    // slot and its whole initial state.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut fresh = watch(agg.query, ProbeMethod::StampUdp).await.unwrap();
    for _ in 0..150 * 149 {
        let u = tokio::time::timeout(Duration::from_secs(5), fresh.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(u.link.is_some());
    }
    for w in idle {
        w.abort();
    }
}
