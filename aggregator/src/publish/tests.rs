use super::*;
use crate::kube_writer::test_support::{expect_apply, expect_get, writer};
use std::sync::Mutex;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);
impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

fn inferred(nodes: &[(&str, u32)]) -> Arc<Inferred> {
    Arc::new(netaware_model::testing::inferred(nodes))
}

fn fast() -> PublishConfig {
    PublishConfig {
        backoff_initial: Duration::from_millis(50),
        ..PublishConfig::default()
    }
}

#[tokio::test]
async fn dry_run_prints_each_changed_node_once_as_yaml() {
    let out = Captured::default();
    let (tx, rx) = watch::channel(None);
    let task = tokio::spawn(run(fast(), Sink::DryRun(Box::new(out.clone())), rx, None));
    tx.send_replace(Some(inferred(&[("dj-1", 90), ("dj-2", 80)])));
    tokio::time::sleep(Duration::from_millis(200)).await;
    tx.send_replace(Some(inferred(&[("dj-1", 90), ("dj-2", 70)])));
    tokio::time::sleep(Duration::from_millis(200)).await;
    task.abort();
    let text = out.text();
    assert_eq!(
        text.matches("PATCH /api/v1/nodes/dj-1?").count(),
        1,
        "{text}"
    );
    assert_eq!(
        text.matches("PATCH /api/v1/nodes/dj-2?").count(),
        2,
        "{text}"
    );
    assert!(text.contains("netaware.io/quality: '70'"), "{text}");
    assert!(text.contains("kind: Node"), "{text}");
    assert!(
        text.contains("2026-11-18T"),
        "measured_at in the summary: {text}"
    );
}

#[tokio::test]
async fn unchanged_nodes_are_counted_as_skipped_once_per_recomputation() {
    let (service, mut handle) = tower_test::mock::pair::<
        http::Request<kube::client::Body>,
        http::Response<kube::client::Body>,
    >();
    let metrics = crate::metrics::WriterMetrics::default();
    let skipped = metrics.skipped.clone();
    let w = crate::kube_writer::NodeWriter::with_metrics(
        kube::Client::new(service, "default"),
        metrics,
    );
    let (tx, rx) = watch::channel(None);
    let i = inferred(&[("a", 90)]);
    let want = desired_all(labels::DEFAULT_PREFIX, &i);
    let task = tokio::spawn(run(fast(), Sink::Kube(Box::new(w)), rx, None));
    tx.send_replace(Some(i.clone()));
    expect_get(&mut handle, "a", http::StatusCode::OK).await;
    expect_apply(&mut handle, "a", &want["a"], http::StatusCode::OK).await;
    // The same recomputation again: one skip. Then several retry ticks pass.
    tx.send_replace(Some(i));
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    task.abort();
    assert_eq!(skipped.get(), 1, "a skip per recomputation, not per tick");
}

#[tokio::test]
async fn a_failed_node_is_retried_after_its_backoff_and_the_others_are_not_resent() {
    let (w, mut handle) = writer();
    let (tx, rx) = watch::channel(None);
    let i = inferred(&[("a", 90), ("b", 80)]);
    let want: BTreeMap<String, Desired> = desired_all(labels::DEFAULT_PREFIX, &i);
    let task = tokio::spawn(run(fast(), Sink::Kube(Box::new(w)), rx, None));
    tx.send_replace(Some(i));
    // a fails, b succeeds, then a is retried (and only a); each first
    // write to a node, and each retry, is preceded by a check it exists.
    expect_get(&mut handle, "a", http::StatusCode::OK).await;
    expect_apply(
        &mut handle,
        "a",
        &want["a"],
        http::StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    expect_get(&mut handle, "b", http::StatusCode::OK).await;
    expect_apply(&mut handle, "b", &want["b"], http::StatusCode::OK).await;
    expect_get(&mut handle, "a", http::StatusCode::OK).await;
    expect_apply(&mut handle, "a", &want["a"], http::StatusCode::OK).await;
    let extra = tokio::time::timeout(Duration::from_millis(1500), handle.next_request()).await;
    assert!(extra.is_err(), "nothing more may be sent");
    task.abort();
}

/// A Node store fed by hand: (store, writer).
fn store_with(
    nodes: &[(&str, &[(&str, &str)])],
) -> (Store<Node>, kube::runtime::reflector::store::Writer<Node>) {
    let (reader, mut writer) = kube::runtime::reflector::store();
    for (name, labels) in nodes {
        writer.apply_watcher_event(&watcher::Event::Apply(node(name, labels)));
    }
    (reader, writer)
}

fn node(name: &str, labels: &[(&str, &str)]) -> Node {
    let mut n = Node::default();
    n.metadata.name = Some(name.into());
    n.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    n
}

/// The review's S9: a key of ours changed on the Node (through
/// nodes/status, which the admission policy did not cover) lived until the
/// hourly resync, because the writer compared with what it remembered
/// writing. Now the live Node is compared: the same recomputation again
/// rewrites a drifted node, and skips it once it carries our keys.
#[tokio::test]
async fn a_drifted_node_is_written_again_at_the_next_recomputation() {
    let (w, mut handle) = writer();
    let (tx, rx) = watch::channel(None);
    let i = inferred(&[("a", 90)]);
    let want = desired_all(labels::DEFAULT_PREFIX, &i)["a"].clone();
    let (store, mut feed) = store_with(&[("a", &[])]);
    let task = tokio::spawn(run(fast(), Sink::Kube(Box::new(w)), rx, Some(store)));
    tx.send_replace(Some(i.clone()));
    expect_get(&mut handle, "a", http::StatusCode::OK).await;
    expect_apply(&mut handle, "a", &want, http::StatusCode::OK).await;
    // The watch shows our keys, but one of them forged.
    let mut forged: Vec<(&str, &str)> = want
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    forged.retain(|(k, _)| *k != "netaware.io/quality");
    forged.push(("netaware.io/quality", "100"));
    let mut live = node("a", &forged);
    live.metadata.annotations = Some(want.annotations.clone());
    feed.apply_watcher_event(&watcher::Event::Apply(live.clone()));
    tx.send_replace(Some(i.clone()));
    expect_apply(&mut handle, "a", &want, http::StatusCode::OK).await;
    // Repaired on the Node: the same recomputation is skipped.
    live.metadata.labels = Some(want.labels.clone());
    feed.apply_watcher_event(&watcher::Event::Apply(live));
    tx.send_replace(Some(i));
    let extra = tokio::time::timeout(Duration::from_millis(1500), handle.next_request()).await;
    assert!(
        extra.is_err(),
        "a node carrying our keys is not written again"
    );
    task.abort();
}

/// The review's S12: a restarted aggregator that had not measured a
/// bandwidth yet left `bandwidth-mbps` out, and server-side apply removed
/// it from every Node for hours. Now a label of ours not produced yet keeps
/// the value the Node carries.
#[tokio::test]
async fn a_label_not_measured_yet_keeps_the_value_the_node_carries() {
    let (w, mut handle) = writer();
    let (tx, rx) = watch::channel(None);
    let i = inferred(&[("a", 90)]);
    let mut want = desired_all(labels::DEFAULT_PREFIX, &i)["a"].clone();
    assert!(!want.labels.contains_key("netaware.io/bandwidth-mbps"));
    let (store, _feed) = store_with(&[("a", &[("netaware.io/bandwidth-mbps", "9400")])]);
    let task = tokio::spawn(run(fast(), Sink::Kube(Box::new(w)), rx, Some(store)));
    tx.send_replace(Some(i));
    want.labels
        .insert("netaware.io/bandwidth-mbps".into(), "9400".into());
    expect_get(&mut handle, "a", http::StatusCode::OK).await;
    expect_apply(&mut handle, "a", &want, http::StatusCode::OK).await;
    task.abort();
}
