//! The buffer on its own: batches acknowledged or sent again in order,
//! cut by size, bounded, and windows that cannot be delivered given up.

use super::*;

fn w(i: u64) -> LinkWindow {
    LinkWindow {
        peer: "p".into(),
        window_start_unix_us: i,
        ..Default::default()
    }
}

fn starts(ws: &[LinkWindow]) -> Vec<u64> {
    ws.iter().map(|w| w.window_start_unix_us).collect()
}

#[test]
fn acked_batches_leave_the_buffer() {
    let mut b = ReportBuffer::new(10);
    b.push(w(1));
    b.push(w(2));
    let batch = b.take_batch().unwrap();
    assert_eq!(starts(&batch.windows), vec![1, 2]);
    assert_eq!(b.len(), 2, "unacked windows are still held");
    b.ack(batch.batch_seq);
    assert!(b.is_empty());
    assert!(b.take_batch().is_none());
}

#[test]
fn unacked_windows_are_resent_in_order_after_a_break() {
    let mut b = ReportBuffer::new(10);
    b.push(w(1));
    let first = b.take_batch().unwrap();
    b.push(w(2));
    let _second = b.take_batch().unwrap();
    b.push(w(3));
    b.ack(first.batch_seq);
    b.requeue_unacked();
    let again = b.take_batch().unwrap();
    assert_eq!(starts(&again.windows), vec![2, 3]);
    assert!(again.batch_seq > first.batch_seq);
}

#[test]
fn a_full_buffer_drops_the_oldest_and_counts() {
    let mut b = ReportBuffer::new(3);
    b.push(w(1));
    let _ = b.take_batch(); // 1 is unacked: the oldest
    b.push(w(2));
    b.push(w(3));
    b.push(w(4)); // drops 1
    b.push(w(5)); // drops 2
    assert_eq!(b.dropped_total(), 2);
    b.requeue_unacked();
    let batch = b.take_batch().unwrap();
    assert_eq!(starts(&batch.windows), vec![3, 4, 5]);
    assert_eq!(batch.dropped_windows_total, 2);
}

/// A window carrying `bytes` of histogram.
fn heavy(i: u64, bytes: usize) -> LinkWindow {
    LinkWindow {
        rtt_histogram: vec![7; bytes],
        ..w(i)
    }
}

#[test]
fn batches_are_cut_below_the_message_limit_and_keep_the_order() {
    let mut b = ReportBuffer::new(100);
    for i in 0..20 {
        b.push(heavy(i, 200_000));
    }
    let mut sent = Vec::new();
    let mut batches = 0;
    while let Some(batch) = b.take_batch() {
        assert!(
            batch.encoded_len() <= MAX_BATCH_BYTES,
            "{}",
            batch.encoded_len()
        );
        sent.extend(starts(&batch.windows));
        b.ack(batch.batch_seq);
        batches += 1;
    }
    assert_eq!(sent, (0..20).collect::<Vec<_>>());
    // Five of 200 kB fit under 1 MiB, not six.
    assert_eq!(batches, 4);
    assert_eq!(b.undeliverable_total(), 0);
}

#[test]
fn a_window_too_large_for_any_batch_is_given_up_and_counted() {
    let mut b = ReportBuffer::new(10);
    b.push(w(1));
    b.push(heavy(2, MAX_BATCH_BYTES));
    b.push(w(3));
    let batch = b.take_batch().unwrap();
    assert_eq!(starts(&batch.windows), vec![1, 3]);
    assert_eq!(b.undeliverable_total(), 1);
    assert_eq!(batch.dropped_windows_total, 1, "the aggregator is told");
}

/// E3c from the agent's side: a batch that breaks the stream every time
/// it is sent is sent `MAX_ATTEMPTS` times, then given up; what came after
/// it is delivered.
#[test]
fn a_batch_that_keeps_breaking_the_stream_is_given_up_after_its_attempts() {
    let mut b = ReportBuffer::new(10);
    b.push(w(1));
    for attempt in 0..MAX_ATTEMPTS {
        let batch = b.take_batch().unwrap();
        assert_eq!(starts(&batch.windows), vec![1], "attempt {attempt}");
        b.requeue_unacked();
    }
    b.push(w(2));
    let batch = b.take_batch().unwrap();
    assert_eq!(starts(&batch.windows), vec![2]);
    assert_eq!(b.undeliverable_total(), 1);
    assert_eq!(b.full_total(), 0);
}
