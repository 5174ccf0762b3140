//! Recomputations off the owner. At 5,000 nodes one takes 2–6 s on a busy
//! machine; on the owner's task that was 2–6 s in which no report was
//! stored and no query got a snapshot (GetMatrix failed with "the owner did
//! not answer within 5 s"). So the owner reads what the recomputation needs
//! of the matrix (one pass, [`Reading`]; not a copy of the matrix, which
//! at 5,000 nodes is 400 MB more) and hands it with the inference to a
//! blocking thread; the result comes back as a message and is applied in
//! one step. One recomputation runs at a time.

use std::time::{Duration, Instant};

use netaware_model::groups::Assignment;
use netaware_model::infer::{Inference, Inferred, Reading};
use tokio::sync::{mpsc, oneshot};

/// A finished recomputation: the inference coming home, and its result.
pub(super) struct Finished {
    pub(super) inference: Inference,
    pub(super) out: Inferred,
    /// How long reading the matrix took (on the owner) and the rest (on
    /// the blocking thread).
    pub(super) read: Duration,
    pub(super) took: Duration,
}

/// The inference, at home or away on a blocking thread, and what waits for
/// it.
pub(super) struct Recomputer {
    /// `None` while a recomputation runs.
    inference: Option<Inference>,
    /// The published groups of the latest recomputation: plans follow
    /// these, also while the next one runs.
    assignment: Assignment,
    /// Nodes forgotten and group ids seeded while it ran, applied when it
    /// comes back.
    forgotten: Vec<String>,
    seed: Option<Assignment>,
    /// Replies due when the running recomputation ends, and when the next
    /// one (asked for while one ran) ends.
    waiting: Vec<oneshot::Sender<()>>,
    waiting_next: Vec<oneshot::Sender<()>>,
    /// Someone asked for a recomputation while one ran.
    again: bool,
    done: mpsc::Sender<Finished>,
}

impl Recomputer {
    /// Finished recomputations arrive on `done`.
    pub(super) fn new(inference: Inference, done: mpsc::Sender<Finished>) -> Self {
        Self {
            assignment: inference.assignment().clone(),
            inference: Some(inference),
            forgotten: Vec::new(),
            seed: None,
            waiting: Vec::new(),
            waiting_next: Vec::new(),
            again: false,
            done,
        }
    }

    /// The groups plans follow.
    pub(super) fn assignment(&self) -> &Assignment {
        &self.assignment
    }

    pub(super) fn running(&self) -> bool {
        self.inference.is_none()
    }

    /// Forget a node that left the cluster (now, or when the running
    /// recomputation comes back).
    pub(super) fn forget(&mut self, node: &str) {
        match &mut self.inference {
            Some(i) => i.forget(node),
            None => self.forgotten.push(node.to_string()),
        }
    }

    /// Start from group ids published before (now, or when the running
    /// recomputation comes back, before the next one).
    pub(super) fn seed(&mut self, assignment: Assignment) {
        match &mut self.inference {
            Some(i) => i.seed(&assignment),
            None => self.seed = Some(assignment),
        }
    }

    /// Ask for a recomputation while one runs: the next starts when it
    /// ends, and `reply` (if any) is answered when that one has ended.
    pub(super) fn queue(&mut self, reply: Option<oneshot::Sender<()>>) {
        self.again = true;
        self.waiting_next.extend(reply);
    }

    /// Recompute from `reading` on a blocking thread; `reply` (if any) is
    /// answered when it has ended. With one running, the same as
    /// [`queue`](Self::queue).
    pub(super) fn start(
        &mut self,
        (reading, read): (Reading, Duration),
        now_unix_us: u64,
        reply: Option<oneshot::Sender<()>>,
    ) {
        let Some(mut inference) = self.inference.take() else {
            self.queue(reply);
            return;
        };
        self.waiting.append(&mut self.waiting_next);
        self.waiting.extend(reply);
        let done = self.done.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let out = inference.recompute_from(reading, now_unix_us);
            // The owner gone means the aggregator is stopping.
            let _ = done.blocking_send(Finished {
                inference,
                out,
                read,
                took: started.elapsed(),
            });
        });
    }

    /// The recomputation came back: keep the inference, apply what
    /// happened meanwhile. Returns the replies now due, and whether
    /// another recomputation was asked for meanwhile.
    pub(super) fn finished(
        &mut self,
        mut inference: Inference,
    ) -> (Vec<oneshot::Sender<()>>, bool) {
        for node in self.forgotten.drain(..) {
            inference.forget(&node);
        }
        if let Some(a) = self.seed.take() {
            inference.seed(&a);
        }
        self.assignment = inference.assignment().clone();
        self.inference = Some(inference);
        let again = std::mem::take(&mut self.again);
        (std::mem::take(&mut self.waiting), again)
    }

    /// Answer everyone waiting: there is nothing to recompute (no node).
    pub(super) fn nothing_to_do(&mut self, reply: Option<oneshot::Sender<()>>) {
        for r in reply.into_iter().chain(self.waiting_next.drain(..)) {
            let _ = r.send(());
        }
    }
}
