#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! The API double as a fault injector: failures at a chosen moment, which a
//! real API server does not give on demand. The aggregator's real Node
//! writer, through a real kube client, retries what the kube client
//! retries (429, 503, 504) and reports the rest for the publisher's
//! backoff. What the writes do on a real server is tested in
//! `node_writer.rs`.

use netaware_aggregator::kube_writer::NodeWriter;
use netaware_e2e::apiserver::ApiServerDouble;
use netaware_model::labels::Desired;

fn client(double: &ApiServerDouble) -> kube::Client {
    let config = kube::Config::new(double.url().parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

fn desired(pairs: &[(&str, &str)]) -> Desired {
    let mut d = Desired::default();
    for (k, v) in pairs {
        d.labels.insert(format!("netaware.io/{k}"), v.to_string());
    }
    d.annotations
        .insert("netaware.io/summary".into(), r#"{"nearest":[]}"#.into());
    d
}

#[tokio::test]
async fn failures_are_retried_or_reported() {
    let double = ApiServerDouble::start(&["dj-1"]).await.unwrap();
    // 503 (like 429 and 504) is retried inside the kube client: the write
    // succeeds, after two PATCH requests.
    double.fail_next_writes(503, 1);
    let mut w = NodeWriter::new(client(&double));
    w.write("dj-1", &desired(&[("group-l2", "g1")]))
        .await
        .unwrap();
    assert_eq!(double.labels("dj-1").unwrap()["netaware.io/group-l2"], "g1");
    let patches = double
        .requests()
        .iter()
        .filter(|r| {
            r.starts_with("PATCH /api/v1/nodes/dj-1?") && r.contains("fieldManager=netaware")
        })
        .count();
    assert_eq!(patches, 2);
    // 500 is reported; the publisher's per-node backoff retries it later.
    double.fail_next_writes(500, 1);
    assert!(
        w.write("dj-1", &desired(&[("group-l2", "g2")]))
            .await
            .is_err()
    );
    w.write("dj-1", &desired(&[("group-l2", "g2")]))
        .await
        .unwrap();
    assert_eq!(double.labels("dj-1").unwrap()["netaware.io/group-l2"], "g2");
}
