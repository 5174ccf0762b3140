#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! `netaware ui` in a real browser: Debian's Chromium, headless, driven by
//! chromedriver (WebDriver), loads the page the CLI serves for an
//! aggregator fed with known windows, and checks what a person would look
//! at: one cell per pair, the colour of a known slow pair, the group
//! boundaries `netaware groups` gives, a click's figures, Place's
//! highlight, and the page saying so when the aggregator goes away and
//! comes back. It saves a screenshot (its path is printed).
//!
//! Needs `chromium` and `chromedriver` (Debian's chromium and
//! chromium-driver, which `./test.sh` installs as root): SKIPPED without
//! them, a failure in CI.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netaware_aggregator::service::Services;
use netaware_aggregator::state::{
    self, Command as StateCommand, SessionId, StateConfig, StateHandle,
};
use netaware_e2e::webdriver::Browser;
use netaware_e2e::{Killed, binary, free_port};
use netaware_proto::ProbeMethod;
use netaware_proto::v1::aggregator_message::Msg as AggMsg;
use netaware_proto::v1::query_service_server::QueryServiceServer;
use netaware_proto::v1::{AggregatorMessage, Hello, LinkWindow, ReportBatch};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;

/// Three sites of three nodes.
const NODES: [&str; 9] = [
    "a-1", "a-2", "a-3", "b-1", "b-2", "b-3", "c-1", "c-2", "c-3",
];
/// The viridis buckets the page colours with (app.js PALETTE).
const BUCKETS: f64 = 10.0;

/// RTT p50 in µs between two nodes: 0.3 ms inside a site, 8 ms between a
/// and b, 40 ms to and from c (the slow site).
fn rtt_us(a: &str, b: &str) -> u64 {
    let (sa, sb) = (&a[..1], &b[..1]);
    if sa == sb {
        300
    } else if sa == "c" || sb == "c" {
        40_000
    } else {
        8_000
    }
}

/// The bucket the page's legend promises for an RTT: log scale from the
/// smallest to the largest RTT shown, brighter is worse.
fn expected_bucket(rtt: f64, lo: f64, hi: f64) -> u64 {
    let f = (rtt.ln() - lo.ln()) / (hi.ln() - lo.ln());
    ((f * BUCKETS).floor() as u64).min(BUCKETS as u64 - 1)
}

fn window(peer: &str, rtt_ns: u64) -> LinkWindow {
    window_ended(peer, rtt_ns, 60)
}

/// A window that ended `ago_s` seconds ago (fresh, and well inside the
/// aggregator's clock bounds).
fn window_ended(peer: &str, rtt_ns: u64, ago_s: u64) -> LinkWindow {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let end = u64::try_from(now.as_micros()).unwrap() - ago_s * 1_000_000;
    LinkWindow {
        peer: peer.into(),
        method: ProbeMethod::StampUdp as i32,
        window_start_unix_us: end - 10_000_000,
        window_end_unix_us: end,
        sent: 100,
        received: 100,
        rtt_min_ns: rtt_ns,
        rtt_mean_ns: rtt_ns,
        rtt_p50_ns: rtt_ns,
        rtt_p90_ns: rtt_ns * 11 / 10,
        rtt_p99_ns: rtt_ns * 11 / 10,
        rtt_max_ns: rtt_ns * 11 / 10,
        ..Default::default()
    }
}

/// An aggregator state whose `nodes` measured each other as their probe
/// plans say (every peer up to 64 nodes, a bounded set past that): the
/// RTT in µs that `rtt` gives, no window where it gives `None`. Also each
/// node's session, to report more.
async fn measured_cluster(
    nodes: &[String],
    rtt: impl Fn(&str, &str) -> Option<u64>,
) -> (StateHandle, BTreeMap<String, SessionId>) {
    let state = state::spawn(StateConfig::default());
    let mut sessions = Vec::new();
    for node in nodes {
        // Room for every plan the joins bring; drained below.
        let (tx, rx) = tokio::sync::mpsc::channel(4 * nodes.len());
        let hello = Hello {
            node_name: node.clone(),
            probe_addresses: vec!["192.0.2.1".into()],
            capabilities: vec![ProbeMethod::StampUdp as i32],
            protocol_version: netaware_proto::PROTOCOL_VERSION,
            ..Default::default()
        };
        sessions.push((node, state.connect(hello, tx).await.unwrap(), rx));
    }
    // Every join changes the others' plans: let the last ones arrive.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut ids = BTreeMap::new();
    for (node, session, mut rx) in sessions {
        ids.insert(node.clone(), session);
        // The latest plan: whom this node probes (the last to join may
        // still be waiting for its first).
        let mut peers = Vec::new();
        loop {
            let msg = match rx.try_recv() {
                Ok(m) => m,
                Err(_) if !peers.is_empty() => break,
                Err(_) => tokio::time::timeout(Duration::from_secs(10), rx.recv())
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| panic!("{node} got no probe plan")),
            };
            if let Ok(AggregatorMessage {
                msg: Some(AggMsg::Plan(plan)),
            }) = msg
            {
                peers = plan.peers.into_iter().map(|p| p.node_name).collect();
            }
        }
        let windows = peers
            .iter()
            .filter_map(|p| rtt(node, p).map(|us| window(p, us * 1000)))
            .collect();
        let batch = ReportBatch {
            batch_seq: 1,
            windows,
            dropped_windows_total: 0,
        };
        state
            .send(StateCommand::Reports { session, batch })
            .await
            .unwrap();
        // Keep the session's queue open (a closed one ends the session).
        std::mem::forget(rx);
    }
    state.recompute().await.unwrap();
    (state, ids)
}

/// The query API on `addr` until the returned sender is dropped or fires.
async fn serve_query(state: StateHandle, addr: SocketAddr) -> oneshot::Sender<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(QueryServiceServer::new(Services::new(state)))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            }),
    );
    stop
}

/// A program on PATH, or `None`.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Chromium and chromedriver, or `None` after a loud SKIPPED (outside CI).
fn browser() -> Option<(PathBuf, PathBuf)> {
    match (on_path("chromium"), on_path("chromedriver")) {
        (Some(c), Some(d)) => Some((c, d)),
        _ if std::env::var_os("CI").is_none() => {
            eprintln!(
                "SKIPPED: the browser test needs Debian's chromium and chromium-driver \
                 (./test.sh installs them as root; CI does)"
            );
            None
        }
        _ => panic!("chromium or chromedriver is missing in CI: scripts/deps.sh installs them"),
    }
}

/// `netaware ui` for `aggregator`; its URL.
fn start_ui(aggregator: &str) -> (Killed, String) {
    let mut child = Killed(
        Command::new(binary("netaware"))
            .args(["ui", "--listen", "127.0.0.1:0", "--aggregator", aggregator])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string();
    (child, url)
}

/// Evaluate `js` (a function body that returns a value) in the page.
async fn eval(c: &Browser, js: &str) -> Value {
    c.execute(js).await
}

/// Wait until `js` returns true, or fail saying `what`.
async fn until(c: &Browser, js: &str, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    loop {
        if eval(c, js).await == Value::Bool(true) {
            return;
        }
        assert!(Instant::now() < deadline, "{what} (waited {within:?})");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The shown text of the element with `id`, read in one script once it is
/// there. Not an element found first and read after: the page redraws
/// its detail panel when a shown pair gets a new window, and an element
/// found a moment before is then gone ("stale element reference", a CI
/// failure of 2026-12-04).
async fn text_of(c: &Browser, id: &str) -> String {
    until(
        c,
        &format!("return document.getElementById('{id}') !== null"),
        Duration::from_secs(10),
        &format!("#{id} never appeared"),
    )
    .await;
    // A redraw replaces the panel within one task, so the element is
    // there, old or new, whenever this script runs.
    let text = eval(
        c,
        &format!("return document.getElementById('{id}').innerText"),
    )
    .await;
    text.as_str().unwrap_or_default().to_string()
}

/// A browser, or `None` after SKIPPED; and where its profile goes.
async fn browser_session(test: &str) -> Option<(Browser, PathBuf)> {
    let (chromium, driver) = browser()?;
    let profile = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{test}-profile-{}", std::process::id()));
    Some((Browser::start(&chromium, &driver, &profile).await, profile))
}

/// The heatmap's row names, top to bottom.
async fn row_names(c: &Browser) -> Vec<String> {
    serde_json::from_value(
        eval(
            c,
            "return [...document.querySelectorAll('#heatmap text.row')].map(t => t.dataset.name)",
        )
        .await,
    )
    .unwrap()
}

/// `netaware groups -o json`: each level's group of every node.
fn groups_by_level(aggregator: &str) -> BTreeMap<u64, BTreeMap<String, String>> {
    let out = Command::new(binary("netaware"))
        .args(["groups", "-o", "json", "--aggregator", aggregator])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let groups: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut by_level: BTreeMap<u64, BTreeMap<String, String>> = BTreeMap::new();
    for g in groups.as_array().unwrap() {
        let level = g["level"].as_u64().unwrap();
        for m in g["members"].as_array().unwrap() {
            by_level
                .entry(level)
                .or_default()
                .insert(m.as_str().unwrap().into(), g["id"].as_str().unwrap().into());
        }
    }
    by_level
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_draws_the_measured_network_and_places_a_job() {
    let Some((c, profile)) = browser_session("ui-browser").await else {
        return;
    };
    let names: Vec<String> = NODES.iter().map(|n| n.to_string()).collect();
    // One pair was never measured (a sparse probe plan leaves most out).
    let (state, sessions) = measured_cluster(&names, |a, b| {
        (!(a == "b-1" && b == "c-3")).then(|| rtt_us(a, b))
    })
    .await;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut stop = Some(serve_query(state.clone(), addr).await);
    let aggregator = format!("http://{addr}");
    let (_ui, url) = start_ui(&aggregator);
    c.goto(&url).await;
    until(
        &c,
        "return document.querySelectorAll('#heatmap rect.cell').length > 0",
        Duration::from_secs(15),
        "the heatmap was never drawn",
    )
    .await;

    // One cell per ordered pair (and a blank diagonal), each pair once.
    let cells = eval(
        &c,
        "return [...document.querySelectorAll('#heatmap rect.cell')].map(r => \
         [r.dataset.src, r.dataset.dst, r.dataset.bucket, r.classList.contains('self')])",
    )
    .await;
    let cells = cells.as_array().unwrap();
    assert_eq!(cells.len(), NODES.len() * NODES.len());
    let mut buckets = BTreeMap::new();
    for cell in cells {
        let (src, dst) = (cell[0].as_str().unwrap(), cell[1].as_str().unwrap());
        assert_eq!(cell[3].as_bool().unwrap(), src == dst, "{cell}");
        if src != dst {
            let b: u64 = cell[2].as_str().unwrap().parse().unwrap();
            assert!(
                buckets
                    .insert((src.to_string(), dst.to_string()), b)
                    .is_none(),
                "two cells for {src} → {dst}"
            );
        }
    }
    assert_eq!(buckets.len(), NODES.len() * (NODES.len() - 1));
    // The known slow pair is the brightest; a middling pair sits where the
    // log scale of the legend puts it; a pair inside a site is darkest.
    let (lo, hi) = (300.0, 40_000.0);
    for (src, dst) in [("a-1", "c-2"), ("b-3", "a-2"), ("c-1", "c-3")] {
        let want = expected_bucket(rtt_us(src, dst) as f64, lo, hi);
        assert_eq!(
            buckets[&(src.to_string(), dst.to_string())],
            want,
            "{src} → {dst} ({} µs)",
            rtt_us(src, dst)
        );
    }
    assert_eq!(buckets[&("a-1".into(), "c-2".into())], 9);
    // The unmeasured pair: drawn apart, as the slowest measured between
    // its groups (b → c: 40 ms), as Place estimates it.
    let estimated = eval(
        &c,
        "return [...document.querySelectorAll('#heatmap rect.cell.estimated')].map(r => \
         [r.dataset.src, r.dataset.dst, r.dataset.bucket, r.getAttribute('aria-label')])",
    )
    .await;
    let estimated = estimated.as_array().unwrap();
    assert_eq!(estimated.len(), 1, "{estimated:?}");
    assert_eq!(estimated[0][0], "b-1");
    assert_eq!(estimated[0][1], "c-3");
    assert_eq!(estimated[0][2], "9");
    assert!(
        estimated[0][3].as_str().unwrap().contains("estimated"),
        "{estimated:?}"
    );
    let legend = eval(&c, "return document.getElementById('legend').textContent").await;
    assert!(
        legend.as_str().unwrap().contains("0.30 ms … 40.0 ms"),
        "the legend gives the scale in real units: {legend}"
    );

    // Group boundaries where `netaware groups` says a group changes, and
    // every group one block.
    let rows = row_names(&c).await;
    assert_eq!(rows.len(), NODES.len());
    let by_level = groups_by_level(&aggregator);
    assert!(by_level.contains_key(&1), "no l1 groups: {by_level:?}");
    let l1_count: std::collections::BTreeSet<&String> = by_level[&1].values().collect();
    assert_eq!(l1_count.len(), 3, "three sites: {by_level:?}");
    for (level, group_of) in &by_level {
        let want: Vec<u64> = (1..rows.len())
            .filter(|&i| group_of[&rows[i]] != group_of[&rows[i - 1]])
            .map(|i| i as u64)
            .collect();
        let drawn: Vec<u64> = serde_json::from_value(
            eval(
                &c,
                &format!(
                    "return [...document.querySelectorAll('#heatmap line.boundary.l{level}[data-axis=row]')]\
                     .map(l => Number(l.dataset.index)).sort((a, b) => a - b)"
                ),
            )
            .await,
        )
        .unwrap();
        assert_eq!(drawn, want, "l{level} boundaries for rows {rows:?}");
        let blocks = 1 + want.len();
        let distinct: std::collections::BTreeSet<&String> = group_of.values().collect();
        assert_eq!(blocks, distinct.len(), "l{level}: a group split in two");
    }

    // A click on the slow pair shows both directions' figures.
    let cell = c
        .find("#heatmap rect.cell[data-src='a-1'][data-dst='c-2']")
        .await;
    c.click(&cell).await;
    let figures = text_of(&c, "pair-figures").await;
    assert!(figures.contains("a-1 → c-2"), "{figures}");
    assert!(figures.contains("c-2 → a-1"), "{figures}");
    assert!(figures.contains("RTT p50 40.0 ms"), "{figures}");
    assert!(figures.contains("100 of 100 probes back"), "{figures}");

    // The pair is live: a new window of a-1 → c-2 (45 ms) shows without a
    // reload, and its sparkline gains a point.
    until(
        &c,
        "return document.getElementById('pair-live')?.dataset.state === 'live'",
        Duration::from_secs(10),
        "the pair never went live",
    )
    .await;
    let points = "return [...document.querySelectorAll('#detail svg.sparkline')].map(s => Number(s.dataset.points))";
    // The stream's first answer (the pair's current windows) may come a
    // moment after it opened.
    until(
        &c,
        &format!("{points}.join() === '1,1'"),
        Duration::from_secs(10),
        "the sparklines never showed one window each way",
    )
    .await;
    state
        .send(StateCommand::Reports {
            session: sessions["a-1"],
            batch: ReportBatch {
                batch_seq: 2,
                windows: vec![window_ended("c-2", 45_000_000, 30)],
                dropped_windows_total: 0,
            },
        })
        .await
        .unwrap();
    until(
        &c,
        "return document.getElementById('pair-figures').textContent.includes('RTT p50 45.0 ms')",
        Duration::from_secs(10),
        "the new window never showed",
    )
    .await;
    assert_eq!(
        eval(&c, points).await,
        json!([2, 1]),
        "a-1 → c-2 gained one"
    );

    // A click on a node's name shows its groups and the figures behind
    // its quality, asked then.
    c.click(&c.find("#heatmap text.row[data-name='b-2']").await)
        .await;
    until(
        &c,
        "return document.getElementById('node-figures') !== null",
        Duration::from_secs(10),
        "the node's figures never came",
    )
    .await;
    let node = text_of(&c, "node-figures").await;
    assert!(
        node.contains(&format!("l1 {}", by_level[&1]["b-2"])),
        "{node}"
    );
    assert!(node.contains("RTT p50 0.30 ms"), "{node}");
    let labels = text_of(&c, "node-labels").await;
    assert!(
        labels.contains(&format!("netaware.io/group-l1={}", by_level[&1]["b-2"])),
        "the Node's labels, keys and values: {labels}"
    );

    // Place 3: three nodes highlighted, the ones `Place` chose, with the
    // explanation.
    let k = c.find("#k").await;
    c.clear(&k).await;
    c.type_text(&k, "3").await;
    c.click(&c.find("#place button[type=submit]").await).await;
    until(
        &c,
        "return document.querySelector('#placement pre')?.textContent.startsWith('chosen:') === true",
        Duration::from_secs(10),
        "Place never answered on the page",
    )
    .await;
    let chosen: Vec<String> = serde_json::from_value(
        eval(
            &c,
            "return [...document.querySelectorAll('#heatmap text.row.chosen')].map(t => t.dataset.name)",
        )
        .await,
    )
    .unwrap();
    assert_eq!(chosen.len(), 3, "{chosen:?}");
    let site = &chosen[0][..1];
    assert!(
        chosen.iter().all(|n| &n[..1] == site),
        "one site: {chosen:?}"
    );
    let chosen_cells = eval(
        &c,
        "return document.querySelectorAll('#heatmap rect.cell.chosen').length",
    )
    .await;
    assert_eq!(chosen_cells, json!(6), "the pairs among the chosen");
    let explained = eval(
        &c,
        "return document.querySelector('#placement pre').textContent",
    )
    .await;
    let explained = explained.as_str().unwrap();
    assert!(
        explained.contains("largest RTT 0.30 ms"),
        "the explanation: {explained}"
    );
    assert!(
        explained.contains("not ") && explained.contains("runner-up"),
        "why others were left out: {explained}"
    );

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-browser.png");
    let png = c.screenshot().await;
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "screenshot"
    );
    std::fs::write(&shot, &png).unwrap();
    eprintln!("screenshot: {}", shot.display());

    // The aggregator goes away: the page says so and keeps the picture;
    // it comes back (same address): the page is live again by itself.
    drop(stop.take());
    until(
        &c,
        "return document.getElementById('status').dataset.state === 'down'",
        Duration::from_secs(20),
        "the page never said the aggregator is unreachable",
    )
    .await;
    let kept = eval(
        &c,
        "return document.querySelectorAll('#heatmap rect.cell').length",
    )
    .await;
    assert_eq!(
        kept,
        json!(NODES.len() * NODES.len()),
        "the last picture stays"
    );
    let _restarted = serve_query(state, addr).await;
    until(
        &c,
        "return document.getElementById('status').dataset.state === 'live'",
        Duration::from_secs(20),
        "the page never came back after the aggregator did",
    )
    .await;

    c.close().await;
    let _ = std::fs::remove_dir_all(&profile);
}

/// 160 nodes in 8 racks of 20, two regions of four racks: 0.2 ms inside a
/// rack, 1.5 ms between racks of a region, 30 ms between regions. Past 64
/// nodes the probe plans leave most pairs between racks unmeasured.
fn rack_of(n: &str) -> usize {
    n[1..n.find('-').unwrap()].parse().unwrap()
}

fn rack_rtt_us(a: &str, b: &str) -> Option<u64> {
    let (ra, rb) = (rack_of(a), rack_of(b));
    Some(if ra == rb {
        200
    } else if ra / 4 == rb / 4 {
        1_500
    } else {
        30_000
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_cluster_is_drawn_by_groups_and_zooms_into_two() {
    let Some((c, profile)) = browser_session("ui-browser-large").await else {
        return;
    };
    let names: Vec<String> = (0..8)
        .flat_map(|r| (0..20).map(move |i| format!("r{r}-n{i:02}")))
        .collect();
    let (state, _) = measured_cluster(&names, rack_rtt_us).await;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _serving = serve_query(state, addr).await;
    let aggregator = format!("http://{addr}");
    let l1 = groups_by_level(&aggregator).remove(&1).unwrap();
    let racks: std::collections::BTreeSet<&String> = l1.values().collect();
    assert_eq!(racks.len(), 8, "one l1 group a rack: {l1:?}");
    let (_ui, url) = start_ui(&aggregator);

    let opened = Instant::now();
    c.goto(&url).await;
    until(
        &c,
        "return document.querySelectorAll('#heatmap rect.cell').length > 0",
        Duration::from_secs(15),
        "the heatmap was never drawn",
    )
    .await;
    eprintln!("160 nodes drawn {:?} after opening", opened.elapsed());
    let kind = eval(&c, "return document.getElementById('heatmap').dataset.kind").await;
    assert_eq!(kind, "group", "past 150 nodes a cell is a pair of groups");
    let cells = eval(
        &c,
        "return document.querySelectorAll('#heatmap rect.cell').length",
    )
    .await;
    assert_eq!(cells, json!(64), "8 × 8 racks");

    // Rack 0 → a rack only some of whose 400 pairs with it are measured
    // (the most such), as `netaware matrix` shows.
    let out = Command::new(binary("netaware"))
        .args(["matrix", "-o", "json", "--aggregator", &aggregator])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let matrix: Value = serde_json::from_slice(&out.stdout).unwrap();
    let g0 = &l1["r0-n00"];
    let mut from_rack0: BTreeMap<&String, usize> = BTreeMap::new();
    for l in matrix["links"].as_array().unwrap() {
        let (src, dst) = (l["src"].as_str().unwrap(), l["dst"].as_str().unwrap());
        if l1[src] == *g0 && l1[dst] != *g0 {
            *from_rack0.entry(&l1[dst]).or_default() += 1;
        }
    }
    let (g4, measured) = from_rack0
        .iter()
        .filter(|(_, n)| **n < 400)
        .max_by_key(|(_, n)| **n)
        .map(|(g, n)| (*g, *n))
        .unwrap_or_else(|| panic!("no rack partly measured from rack 0: {from_rack0:?}"));
    let other = l1.iter().find(|(_, g)| *g == g4).unwrap().0;
    let want_rtt = rack_rtt_us("r0-n00", other).unwrap() as f64 / 1000.0;
    let css = format!("#heatmap rect.cell[data-src='{g0}'][data-dst='{g4}']");
    let label = eval(
        &c,
        &format!("return document.querySelector(\"{css}\").getAttribute('aria-label')"),
    )
    .await;
    let label = label.as_str().unwrap();
    let want_rtt = if want_rtt < 10.0 {
        format!("RTT p50 {want_rtt:.2} ms")
    } else {
        format!("RTT p50 {want_rtt:.1} ms")
    };
    assert!(label.contains(&want_rtt), "{label}");
    assert!(
        label.contains(&format!("median of {measured} measured of 400 pairs")),
        "{label}"
    );

    // A click zooms into the two racks: their nodes, the measured pairs
    // drawn as measured, the rest estimated from the groups.
    c.click(&c.find(&css).await).await;
    until(
        &c,
        "return document.getElementById('heatmap').dataset.kind === 'node'",
        Duration::from_secs(10),
        "the click never zoomed in",
    )
    .await;
    let counts = eval(
        &c,
        "const q = (s) => document.querySelectorAll(s).length; \
         return [q('#heatmap rect.cell'), q('#heatmap rect.cell.estimated'), q('#heatmap rect.cell.unmeasured')]",
    )
    .await;
    assert_eq!(
        counts,
        json!([400, 400 - measured, 0]),
        "cells, estimated, grey"
    );
    let rows = row_names(&c).await;
    assert!(rows.iter().all(|n| l1[n] == *g0), "{rows:?}");
    // Escape goes back to all groups.
    c.execute("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape'})); return true")
        .await;
    until(
        &c,
        "return document.getElementById('heatmap').dataset.kind === 'group'",
        Duration::from_secs(5),
        "Escape never went back to the groups",
    )
    .await;

    c.close().await;
    let _ = std::fs::remove_dir_all(&profile);
}
