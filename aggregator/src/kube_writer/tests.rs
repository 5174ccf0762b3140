use super::test_support::*;
use super::*;
use http::StatusCode;
use std::time::Duration;

#[tokio::test]
async fn a_write_is_a_forced_apply_of_only_our_keys() {
    let (mut w, mut handle) = writer();
    let d = desired("87");
    let server = tokio::spawn(async move {
        expect_get(&mut handle, "dj-1", StatusCode::OK).await;
        expect_apply(&mut handle, "dj-1", &desired("87"), StatusCode::OK).await;
        handle
    });
    assert_eq!(w.write("dj-1", &d).await.unwrap(), Outcome::Written);
    server.await.unwrap();
    assert_eq!(
        w.counters(),
        WriteCounters {
            writes: 1,
            errors: 0,
            skipped: 0
        }
    );
}

#[tokio::test]
async fn unchanged_keys_are_not_written_again_but_changes_are() {
    let (mut w, mut handle) = writer();
    let server = tokio::spawn(async move {
        expect_get(&mut handle, "dj-1", StatusCode::OK).await;
        expect_apply(&mut handle, "dj-1", &desired("87"), StatusCode::OK).await;
        expect_apply(&mut handle, "dj-1", &desired("42"), StatusCode::OK).await;
        // Nothing else may arrive.
        let extra = tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await;
        assert!(extra.is_err(), "an unexpected request was sent");
    });
    w.write("dj-1", &desired("87")).await.unwrap();
    assert_eq!(
        w.write("dj-1", &desired("87")).await.unwrap(),
        Outcome::Unchanged
    );
    assert_eq!(
        w.write("dj-1", &desired("42")).await.unwrap(),
        Outcome::Written
    );
    server.await.unwrap();
    assert_eq!(
        w.counters(),
        WriteCounters {
            writes: 2,
            errors: 0,
            skipped: 1
        }
    );
}

#[tokio::test]
async fn a_failed_write_is_counted_and_tried_again_next_time() {
    let (mut w, mut handle) = writer();
    let server = tokio::spawn(async move {
        expect_get(&mut handle, "se-1", StatusCode::OK).await;
        expect_apply(
            &mut handle,
            "se-1",
            &desired("90"),
            StatusCode::INTERNAL_SERVER_ERROR,
        )
        .await;
        // After an error the node is checked again before the retry.
        expect_get(&mut handle, "se-1", StatusCode::OK).await;
        expect_apply(&mut handle, "se-1", &desired("90"), StatusCode::OK).await;
    });
    assert!(w.write("se-1", &desired("90")).await.is_err());
    assert_eq!(
        w.write("se-1", &desired("90")).await.unwrap(),
        Outcome::Written
    );
    server.await.unwrap();
    assert_eq!(
        w.counters(),
        WriteCounters {
            writes: 1,
            errors: 1,
            skipped: 0
        }
    );
}

#[tokio::test]
async fn a_node_the_cluster_does_not_know_is_never_applied() {
    let (mut w, mut handle) = writer();
    let server = tokio::spawn(async move {
        expect_get(&mut handle, "ghost", StatusCode::NOT_FOUND).await;
        let extra = tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await;
        assert!(extra.is_err(), "no apply may follow a 404");
    });
    let err = w.write("ghost", &desired("87")).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 404));
    server.await.unwrap();
    assert_eq!(w.counters().errors, 1);
}

#[tokio::test]
async fn a_key_we_stop_producing_is_left_out_of_the_apply() {
    // Server-side apply removes a field its manager applied before and
    // omits now; so dropping a key from `Desired` is how it is removed.
    let (mut w, mut handle) = writer();
    let mut without = desired("87");
    without.labels.remove("netaware.io/quality");
    let expect = without.clone();
    let server = tokio::spawn(async move {
        expect_get(&mut handle, "dj-1", StatusCode::OK).await;
        expect_apply(&mut handle, "dj-1", &desired("87"), StatusCode::OK).await;
        expect_apply(&mut handle, "dj-1", &expect, StatusCode::OK).await;
    });
    w.write("dj-1", &desired("87")).await.unwrap();
    w.write("dj-1", &without).await.unwrap();
    server.await.unwrap();
}
