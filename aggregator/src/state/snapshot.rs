//! What queries read: a clone of the owner's matrix (sharing its rows of
//! links) and latest inference, taken by the owner in one step and then
//! shared read-only. Every answer is computed from it by the query's own
//! task, so a costly query never holds up measurement, and a stuck owner
//! never hangs a query for longer than its deadline.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use netaware_model::infer::{Group, Inferred};
use netaware_model::matrix::{LinkKeyName, Matrix, Page};
use netaware_proto::ProbeMethod;
use netaware_proto::v1::{GetMatrixResponse, LinkState};

/// The owner's state at one moment.
#[derive(Debug)]
pub struct Snapshot {
    /// Shared with the snapshot that replaces this one when a
    /// recomputation ends (same links, the new result).
    pub(super) matrix: Arc<Matrix>,
    pub(super) inferred: Option<Arc<Inferred>>,
    /// The owner's change counter when this was taken.
    pub(super) changes: u64,
}

/// Node labels by node name, for Place's label selector.
pub type NodeLabels = BTreeMap<String, BTreeMap<String, String>>;

impl Snapshot {
    /// The GetMatrix answer, as of `now` (staleness is judged at query
    /// time, not when the snapshot was taken).
    pub fn matrix(
        &self,
        method: ProbeMethod,
        histograms: bool,
        now: Instant,
        now_unix_us: u64,
    ) -> GetMatrixResponse {
        self.matrix.snapshot(method, histograms, now, now_unix_us)
    }

    /// One page of the matrix ([`Matrix::page`]).
    pub fn page(
        &self,
        page: &Page<'_>,
        now: Instant,
        now_unix_us: u64,
    ) -> (GetMatrixResponse, Option<LinkKeyName>) {
        self.matrix.page(page, now, now_unix_us)
    }

    /// Whether the node is known (connected now or measured before).
    pub fn knows(&self, node: &str) -> bool {
        self.matrix.hello(node).is_some()
    }

    /// Every link of `method` (all: `Unspecified`), as of `now`, one at a
    /// time: watchers stream them without each holding a copy of all.
    pub fn links(&self, method: ProbeMethod, now: Instant) -> impl Iterator<Item = LinkState> + '_ {
        self.matrix.links_iter(method, now)
    }

    /// The published groups (`None` before the first recomputation).
    pub fn groups(&self) -> Option<Vec<Group>> {
        self.inferred.as_ref().map(|i| i.groups.clone())
    }
}
