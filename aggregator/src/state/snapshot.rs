//! What queries read: a copy of the owner's matrix and latest inference,
//! taken by the owner in one step and then shared read-only. Every answer
//! is computed from it by the query's own task, so a costly query never
//! holds up measurement, and a stuck owner never hangs a query for longer
//! than its deadline.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use netaware_model::Error as PlaceError;
use netaware_model::groups::Thresholds;
use netaware_model::infer::{self, Group, Inferred};
use netaware_model::matrix::{LinkKeyName, Matrix, Page};
use netaware_model::place::diameter::Stop;
use netaware_model::place::{self, Placement, Query, View, Zone, estimate};
use netaware_proto::ProbeMethod;
use netaware_proto::v1::{GetMatrixResponse, LinkState};

/// The owner's state at one moment.
#[derive(Debug)]
pub struct Snapshot {
    pub(super) matrix: Matrix,
    pub(super) inferred: Option<Arc<Inferred>>,
    pub(super) thresholds: Thresholds,
    /// The owner's change counter when this was taken.
    pub(super) changes: u64,
    /// Place's inputs, once a Place asked ([`Snapshot::place_inputs`]).
    pub(super) place_inputs: OnceLock<PlaceInputs>,
}

/// Node labels by node name, for Place's label selector.
pub type NodeLabels = BTreeMap<String, BTreeMap<String, String>>;

/// What every Place on one snapshot reads the same: node names, their
/// measured RTTs, and the groups by node index.
pub(super) type PlaceInputs = (Vec<String>, Vec<Vec<(usize, f64)>>, Vec<Zone>);

impl Snapshot {
    /// Built once per snapshot, on the first Place that needs it: at
    /// 5,000 nodes reading every measured pair costs about a tenth of a
    /// second, and queries in a burst share a snapshot.
    fn place_inputs(&self) -> PlaceInputs {
        let names = self.matrix.node_names();
        let rtt = infer::rtts(&self.matrix, &names);
        let index: HashMap<&str, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let zones = self
            .inferred
            .as_ref()
            .map(|i| estimate::zones(&i.groups, &index))
            .unwrap_or_default();
        (names, rtt, zones)
    }

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

    /// Choose nodes for `query`; `labels` are the Node labels when the
    /// request has a selector and the aggregator watches Nodes. Ends with
    /// [`PlaceError::Stopped`] once `stop` is set.
    pub fn place(
        &self,
        query: &Query,
        labels: Option<&NodeLabels>,
        now: Instant,
        stop: &Stop,
    ) -> Result<Placement, PlaceError> {
        let (names, rtt, zones) = self.place_inputs.get_or_init(|| self.place_inputs());
        let bandwidth = |i: usize, j: usize| self.matrix.bandwidth(&names[i], &names[j]);
        let quality: Vec<Option<u32>> = names
            .iter()
            .map(|n| {
                self.inferred
                    .as_ref()
                    .and_then(|i| i.facts.get(n))
                    .and_then(|f| f.quality)
            })
            .collect();
        let fresh: Vec<bool> = names
            .iter()
            .map(|n| self.matrix.reports_fresh(n, now))
            .collect();
        // The group thresholds in use (resolved when `auto`).
        let levels: Vec<f64> = match (&self.inferred, self.thresholds) {
            (Some(i), _) => i.thresholds.to_vec(),
            (None, Thresholds::Fixed(t)) => t.to_vec(),
            (None, Thresholds::Auto) => Vec::new(),
        };
        let view = View {
            names,
            rtt,
            zones,
            bandwidth: &bandwidth,
            quality: &quality,
            fresh: &fresh,
            labels,
            levels: &levels,
        };
        place::place(query, &view, stop)
    }
}
