#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! `netaware matrix` on a cluster too large for one table, and GetMatrix's
//! pages and filters behind it, against a real aggregator query service.

mod common;
use common::run;

use netaware_aggregator::state::{self, StateConfig};
use netaware_model::plan::PlanConfig;
use netaware_proto::v1::aggregator_message::Msg as AggMsg;
use netaware_proto::v1::{GetMatrixRequest, ListGroupsRequest};

/// More nodes than the CLI shows as one matrix.
const N: usize = 201;

fn name(i: usize) -> String {
    format!("n{i:03}")
}

/// An aggregator with N nodes in a full mesh (the bound raised to N), each
/// measuring every peer of its plan: two racks, 50 µs inside, 3 ms between.
async fn cluster() -> String {
    let state = state::spawn(StateConfig {
        plan: PlanConfig {
            max_targets: N,
            ..PlanConfig::default()
        },
        ..StateConfig::default()
    });
    let mut sessions = Vec::new();
    for i in 0..N {
        // Room for a plan per node that connects after this one.
        let (tx, rx) = tokio::sync::mpsc::channel(4 * N);
        sessions.push((
            state.connect(common::hello(&name(i)), tx).await.unwrap(),
            rx,
        ));
    }
    // Plans are sent at most once a second.
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    for (i, (session, mut rx)) in sessions.into_iter().enumerate() {
        let mut plan = None;
        while let Ok(Ok(m)) = rx.try_recv() {
            if let Some(AggMsg::Plan(p)) = m.msg {
                plan = Some(p);
            }
        }
        let windows = plan
            .expect("every node has a plan")
            .peers
            .iter()
            .map(|t| {
                let j: usize = t.node_name[1..].parse().unwrap();
                let rtt_ns = if (i < 100) == (j < 100) {
                    50_000
                } else {
                    3_000_000
                };
                common::window(&t.node_name, rtt_ns, rtt_ns, 100, 100)
            })
            .collect();
        common::report(&state, session, windows).await;
        std::mem::forget(rx); // keep the session's outbound queue open
    }
    state.recompute().await.unwrap();
    common::serve(state).await
}

/// The (src, dst) of every link in `netaware matrix -o json`'s output.
fn pairs(json: &str) -> Vec<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["src"].as_str().unwrap().to_string(),
                l["dst"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn text(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_matrix_is_summarised_by_group_and_zooms_by_node_or_group() {
    let url = cluster().await;
    let summary = text(&run(&["matrix", "--aggregator", &url]).await);
    assert!(summary.starts_with("201 nodes: too many"), "{summary}");
    assert!(summary.contains("--group ID"), "{summary}");
    assert!(summary.lines().any(|l| l.starts_with("l1")), "{summary}");

    // --full: every link, fetched in pages.
    let json = ["-o", "json"];
    let all = run(&[&["matrix", "--aggregator", &url, "--full"][..], &json].concat()).await;
    let all = pairs(&text(&all));
    assert!(all.len() > 5_000, "{} links", all.len());

    // --node: n000's row and column, all of them.
    let zoom = run(&[
        &["matrix", "--aggregator", &url, "--node", "n000"][..],
        &json,
    ]
    .concat())
    .await;
    let want: Vec<(String, String)> = all
        .iter()
        .filter(|(s, d)| s == "n000" || d == "n000")
        .cloned()
        .collect();
    assert!(want.len() > 10);
    assert_eq!(pairs(&text(&zoom)), want);

    // --group: the links among one l1 group's members.
    let mut client = netaware_cli::connect(&url.as_str().into()).await.unwrap();
    let groups = client
        .list_groups(ListGroupsRequest {})
        .await
        .unwrap()
        .into_inner()
        .groups;
    let g = groups
        .iter()
        .find(|g| g.level == 1 && g.members.contains(&name(0)))
        .unwrap();
    let out = run(&[
        &["matrix", "--aggregator", &url, "--group", &g.id][..],
        &json,
    ]
    .concat())
    .await;
    let want: Vec<(String, String)> = all
        .iter()
        .filter(|(s, d)| g.members.contains(s) && g.members.contains(d))
        .cloned()
        .collect();
    assert!(want.len() > 10);
    assert_eq!(pairs(&text(&out)), want);

    // A group that does not exist says so.
    let out = run(&["matrix", "--aggregator", &url, "--group", "g999"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no level-1 group 'g999'"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_carry_every_link_once_and_a_forged_token_is_refused() {
    let url = cluster().await;
    let mut client = netaware_cli::connect(&url.as_str().into()).await.unwrap();
    let whole = client
        .get_matrix(GetMatrixRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(whole.next_page_token.is_empty(), "page_size 0: one answer");
    let mut request = GetMatrixRequest {
        page_size: 1_000,
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = client
            .get_matrix(request.clone())
            .await
            .unwrap()
            .into_inner();
        assert!(page.links.len() <= 1_000);
        assert_eq!(page.nodes.len(), if pages == 0 { N } else { 0 });
        seen.extend(page.links.iter().map(|l| (l.src.clone(), l.dst.clone())));
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    assert!(pages > 5);
    assert_eq!(pages, whole.links.len().div_ceil(1_000));
    let whole: Vec<(String, String)> = whole
        .links
        .iter()
        .map(|l| (l.src.clone(), l.dst.clone()))
        .collect();
    assert_eq!(seen, whole, "the same links, in order, none twice");

    for (bad, says) in [
        (
            GetMatrixRequest {
                page_token: "v1 1 n000".into(),
                ..Default::default()
            },
            "page_token is not one this server gave",
        ),
        (
            GetMatrixRequest {
                page_size: 100_001,
                ..Default::default()
            },
            "page_size 100001 is more than 100000",
        ),
        (
            GetMatrixRequest {
                nodes: vec!["nope".into()],
                ..Default::default()
            },
            "node 'nope' is unknown",
        ),
        (
            GetMatrixRequest {
                group: "g1".into(),
                group_level: 4,
                ..Default::default()
            },
            "group_level must be 1, 2 or 3",
        ),
    ] {
        let e = client.get_matrix(bad).await.unwrap_err();
        assert!(e.message().contains(says), "{}", e.message());
    }
}
