//! Recomputations off the owner. At 5,000 nodes one takes 2–6 s on a busy
//! machine; on the owner's task that was 2–6 s in which no report was
//! stored and no query got a snapshot (GetMatrix failed with "the owner did
//! not answer within 5 s"). So the owner hands a clone of the matrix (which
//! shares the links: it costs the nodes) with the inference to a blocking
//! thread, which reads what the recomputation needs of it in one pass
//! ([`Reading`]), drops the clone (so links changed meanwhile are not kept
//! twice for the seconds the clustering takes) and recomputes; the result
//! comes back as a message and is applied in one step. One recomputation
//! runs at a time. A recomputation that panics (a bug) loses its result,
//! not every later one: the inference starts over from the groups last
//! published, so ids stay with their nodes.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use netaware_model::groups::Assignment;
use netaware_model::infer::{InferConfig, Inference, Inferred, Reading};
use netaware_model::matrix::Matrix;
use tokio::sync::{mpsc, oneshot};

/// A finished recomputation: the inference coming home with its result,
/// or `None` if it panicked.
pub(super) struct Finished {
    pub(super) result: Option<(Inference, Inferred)>,
    /// How long reading the matrix took and the rest (both on the blocking
    /// thread).
    pub(super) read: Duration,
    pub(super) took: Duration,
}

/// The inference, at home or away on a blocking thread, and what waits for
/// it.
pub(super) struct Recomputer {
    /// To start over with when a recomputation panicked.
    config: InferConfig,
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
    pub(super) fn new(config: InferConfig, done: mpsc::Sender<Finished>) -> Self {
        let inference = Inference::new(config);
        Self {
            config,
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

    /// Recompute from `matrix` as of `now` on a blocking thread; `reply`
    /// (if any) is answered when it has ended. With one running, the same
    /// as [`queue`](Self::queue).
    pub(super) fn start(
        &mut self,
        matrix: Matrix,
        now: Instant,
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
            let mut read = Duration::ZERO;
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                let reading = Reading::of(&matrix, now);
                drop(matrix);
                read = started.elapsed();
                let out = inference.recompute_from(reading, now_unix_us);
                (inference, out)
            }));
            // The owner gone means the aggregator is stopping.
            let _ = done.blocking_send(Finished {
                result: result.ok(),
                read,
                took: started.elapsed().saturating_sub(read),
            });
        });
    }

    /// The recomputation came back: keep the inference (`None`: it
    /// panicked; start over from the groups last published), apply what
    /// happened meanwhile. Returns the replies now due, and whether
    /// another recomputation was asked for meanwhile.
    pub(super) fn finished(
        &mut self,
        inference: Option<Inference>,
    ) -> (Vec<oneshot::Sender<()>>, bool) {
        let mut inference = inference.unwrap_or_else(|| {
            let mut fresh = Inference::new(self.config);
            fresh.seed(&self.assignment);
            fresh
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    /// After a recomputation panicked the next one can run, and its
    /// inference keeps the group ids published before.
    #[test]
    fn after_a_panic_the_inference_starts_over_from_the_published_groups() {
        let (done, _rx) = mpsc::channel(1);
        let mut r = Recomputer::new(InferConfig::default(), done);
        let published: Assignment = [("a", "g7"), ("b", "g7")]
            .into_iter()
            .map(|(n, g)| (n.to_string(), [g, "g1", "g1"].map(String::from)))
            .collect();
        r.seed(published.clone());
        r.assignment = published.clone();
        // A recomputation away (its inference taken), then lost.
        let away = r.inference.take();
        assert!(away.is_some() && r.running());
        let (replies, again) = r.finished(None);
        assert!(replies.is_empty() && !again);
        assert!(!r.running());
        assert_eq!(
            r.inference.as_ref().map(|i| i.assignment()),
            Some(&published)
        );
    }
}
