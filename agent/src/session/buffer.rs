//! Report windows between measurement and the aggregator's
//! acknowledgement: bounded in count, cut into batches below the message
//! limit, and never resent for ever (a batch that keeps breaking the
//! stream is given up and counted, the review's E3c).

use std::collections::{BTreeMap, VecDeque};

use netaware_proto::Message;
use netaware_proto::limits::MAX_BATCH_BYTES;
use netaware_proto::v1::{LinkWindow, ReportBatch};

/// Most windows in one batch.
const MAX_WINDOWS_PER_BATCH: usize = 1000;
/// Bytes a window adds to a batch beyond its own encoding (field tag and
/// length prefix), and room for the batch's other fields.
const PER_WINDOW_OVERHEAD: usize = 6;
const BATCH_OVERHEAD: usize = 64;
/// Streams a window may be sent on that broke before acknowledging it:
/// past this, the window itself is the likely cause (the aggregator cannot
/// take it) and it is given up rather than sent again and again. A real
/// outage does not count: nothing is sent while disconnected.
pub const MAX_ATTEMPTS: u8 = 5;

#[derive(Debug, Clone)]
struct Held {
    window: LinkWindow,
    /// Streams it was sent on that broke before an acknowledgement.
    attempts: u8,
}

/// Windows waiting to be sent or to be acknowledged, bounded in total.
#[derive(Debug)]
pub struct ReportBuffer {
    capacity: usize,
    /// Not yet sent on the current stream.
    pending: VecDeque<Held>,
    /// Sent on the current stream, waiting for a ReportAck; by batch_seq.
    unacked: BTreeMap<u64, Vec<Held>>,
    next_batch_seq: u64,
    /// Dropped because the buffer was full.
    full_total: u64,
    /// Given up: too large for a batch, or sent [`MAX_ATTEMPTS`] times.
    undeliverable_total: u64,
}

fn size_in_batch(w: &LinkWindow) -> usize {
    w.encoded_len() + PER_WINDOW_OVERHEAD
}

impl ReportBuffer {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            pending: VecDeque::new(),
            unacked: BTreeMap::new(),
            next_batch_seq: 1,
            full_total: 0,
            undeliverable_total: 0,
        }
    }

    /// Windows held (pending and unacknowledged).
    pub fn len(&self) -> usize {
        self.pending.len() + self.unacked.values().map(Vec::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Windows lost since start, for whatever reason (what the aggregator
    /// is told in `dropped_windows_total`).
    pub fn dropped_total(&self) -> u64 {
        self.full_total + self.undeliverable_total
    }

    /// Windows dropped since start because the buffer was full.
    pub fn full_total(&self) -> u64 {
        self.full_total
    }

    /// Windows given up since start: too large, or never acknowledged.
    pub fn undeliverable_total(&self) -> u64 {
        self.undeliverable_total
    }

    /// Add a finished window; when full, the oldest window goes first.
    pub fn push(&mut self, window: LinkWindow) {
        while self.len() >= self.capacity {
            self.drop_oldest();
        }
        self.pending.push_back(Held {
            window,
            attempts: 0,
        });
    }

    fn drop_oldest(&mut self) {
        // Unacknowledged windows are older than pending ones.
        if let Some(mut entry) = self.unacked.first_entry() {
            if !entry.get().is_empty() {
                entry.get_mut().remove(0);
            }
            if entry.get().is_empty() {
                entry.remove();
            }
        } else {
            self.pending.pop_front();
        }
        self.full_total += 1;
    }

    /// Move pending windows into a new batch: at most
    /// [`MAX_WINDOWS_PER_BATCH`], and encoded below
    /// [`MAX_BATCH_BYTES`]. A window that can never be delivered is given
    /// up and counted on the way.
    pub fn take_batch(&mut self) -> Option<ReportBatch> {
        let mut taken: Vec<Held> = Vec::new();
        let mut bytes = BATCH_OVERHEAD;
        while taken.len() < MAX_WINDOWS_PER_BATCH {
            let Some(next) = self.pending.front() else {
                break;
            };
            let size = size_in_batch(&next.window);
            if next.attempts >= MAX_ATTEMPTS || size + BATCH_OVERHEAD > MAX_BATCH_BYTES {
                self.pending.pop_front();
                self.undeliverable_total += 1;
                continue;
            }
            if bytes + size > MAX_BATCH_BYTES {
                break;
            }
            bytes += size;
            if let Some(held) = self.pending.pop_front() {
                taken.push(held);
            }
        }
        if taken.is_empty() {
            return None;
        }
        let batch_seq = self.next_batch_seq;
        self.next_batch_seq += 1;
        let windows = taken.iter().map(|h| h.window.clone()).collect();
        self.unacked.insert(batch_seq, taken);
        Some(ReportBatch {
            batch_seq,
            windows,
            dropped_windows_total: self.dropped_total(),
        })
    }

    /// The aggregator stored batch `batch_seq`.
    pub fn ack(&mut self, batch_seq: u64) {
        self.unacked.remove(&batch_seq);
    }

    /// The stream broke: everything unacknowledged goes back to the front of
    /// the queue, in its original order, to be sent again, one attempt
    /// further.
    pub fn requeue_unacked(&mut self) {
        let unacked = std::mem::take(&mut self.unacked);
        for mut held in unacked
            .into_values()
            .rev()
            .flat_map(|b| b.into_iter().rev())
        {
            held.attempts = held.attempts.saturating_add(1);
            self.pending.push_front(held);
        }
    }
}

#[cfg(test)]
mod tests;
