//! QueryService: every answer is computed from a snapshot of the state, on
//! the query's own task, within a deadline. The costly ones (GetMatrix,
//! Place) run on a blocking thread, at most [`QUERY_CONCURRENCY`] of each
//! kind at once, so a flood of one kind does not starve the other;
//! watchers are capped, at most [`INITIAL_CONCURRENCY`] receive their
//! initial state at once, and one that stops reading is dropped. None of it
//! can hold up the state owner, which keeps measuring (the review's S4,
//! S11).

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use netaware_model::Error as PlaceError;
use netaware_model::matrix::{Filter, LinkKeyName, Page};
use netaware_model::place::diameter::Stop;
use netaware_model::place::{MAX_NAMES, Query, place_on};
use netaware_model::shape::{self, Shape};
use netaware_proto::limits::MAX_QUERY_RESPONSE_BYTES;
use netaware_proto::v1::query_service_server::QueryService;
use netaware_proto::v1::{
    GetMatrixRequest, GetMatrixResponse, GetNodeRequest, GetNodeResponse, LinkState, LinkUpdate,
    ListGroupsRequest, ListGroupsResponse, PlaceRequest, PlaceResponse, WatchLinksRequest,
};
use netaware_proto::{Message, ProbeMethod};
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::Services;
use crate::auth::Access;
use crate::state::{NodeLabels, Snapshot, Watch};

/// Costly queries of one kind running at once: one per core of a small
/// control-plane node; the rest wait (within their deadline) instead of
/// taking the cores the state owner needs.
pub const QUERY_CONCURRENCY: usize = 2;
/// Watchers receiving their initial state at once. Each holds a snapshot
/// while it does, so this bounds the snapshots watchers keep alive (the
/// review's E3g: 40 watchers that never read held 212 MiB).
pub const INITIAL_CONCURRENCY: usize = 4;

/// Updates queued for one watcher.
const WATCH_QUEUE: usize = 64;
/// A watcher whose queue stays full this long is not reading: it is
/// dropped, so it holds no memory and no slot.
pub const WATCH_SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// The same while it receives its initial state, shorter: it holds one of
/// the [`INITIAL_CONCURRENCY`] slots others may be waiting for. A reader
/// takes a 150-node mesh in well under a second.
pub const INITIAL_SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Limits of the query service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// Longest a query may take, waiting for a slot included.
    pub timeout: Duration,
    /// WatchLinks streams open at once.
    pub max_watchers: usize,
}

impl Default for QueryLimits {
    /// Ten seconds: Place on a few hundred nodes takes milliseconds, and a
    /// person waits about that long. 64 watchers: a few dashboards and
    /// CLIs each, far below what would press on memory.
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            max_watchers: 64,
        }
    }
}

/// Most links one GetMatrix page may hold: about 15 MB without
/// histograms, well inside the message limit.
pub const MAX_PAGE_SIZE: usize = 100_000;

/// Where a page continues: opaque to clients. Node names are DNS names
/// (checked when an agent says hello), so a space separates them.
/// A prediction as the wire carries it.
fn wire_prediction(p: netaware_model::place::cost::Prediction) -> netaware_proto::v1::Prediction {
    netaware_proto::v1::Prediction {
        total_ms: p.total_ms,
        latency_ms: p.latency_ms,
        bandwidth_ms: p.bandwidth_ms,
        loss_ms: p.loss_ms,
    }
}

fn page_token((src, dst, method): &LinkKeyName) -> String {
    format!("v1 {method} {src} {dst}")
}

fn parse_page_token(t: &str) -> Result<LinkKeyName, Status> {
    let bad = || {
        Status::invalid_argument("page_token is not one this server gave; start again without one")
    };
    let mut parts = t.split(' ');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("v1"), Some(m), Some(src), Some(dst), None) => {
            let m: i32 = m.parse().map_err(|_| bad())?;
            Ok((src.to_string(), dst.to_string(), m))
        }
        _ => Err(bad()),
    }
}

/// The members of group `id` at `level`, for GetMatrix's group filter.
fn group_members(snapshot: &Snapshot, id: &str, level: u32) -> Result<BTreeSet<String>, Status> {
    if !(1..=3).contains(&level) {
        return Err(Status::invalid_argument(format!(
            "group_level must be 1, 2 or 3 with a group, got {level}"
        )));
    }
    let groups = snapshot.groups().ok_or_else(|| {
        Status::unavailable("groups are not computed yet; try again after the next recomputation")
    })?;
    groups
        .into_iter()
        .find(|g| g.level == level && g.id == id)
        .map(|g| g.members.into_iter().collect())
        .ok_or_else(|| {
            Status::not_found(format!(
                "no level-{level} group '{}' (`netaware groups` lists them)",
                netaware_common::printable(id)
            ))
        })
}

fn method_of(raw: i32) -> Result<ProbeMethod, Status> {
    ProbeMethod::try_from(raw)
        .map_err(|_| Status::invalid_argument(format!("unknown probe method {raw}")))
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Sets the stop flag when dropped: a query whose client went away, or
/// whose deadline passed, stops its search at the next round.
struct StopOnDrop(Arc<Stop>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Services {
    /// Run `work` on a blocking thread once a costly-query slot is free,
    /// for at most the query deadline (the wait for a slot included).
    async fn costly<T: Send + 'static>(
        &self,
        what: &'static str,
        slots: &Arc<Semaphore>,
        work: impl FnOnce(&Stop) -> T + Send + 'static,
    ) -> Result<T, Status> {
        let timeout = self.limits.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let late = |doing: &str| {
            Status::deadline_exceeded(format!(
                "{what} {doing} the query deadline of {} s (--query-timeout); narrow the request or try again",
                timeout.as_secs_f64()
            ))
        };
        let permit = tokio::time::timeout_at(deadline, slots.clone().acquire_owned())
            .await
            .map_err(|_| late("waited for a free slot for all of"))?
            .map_err(|_| Status::unavailable("aggregator is shutting down"))?;
        let stop = Arc::new(Stop::new(false));
        let guard = StopOnDrop(stop.clone());
        let task = tokio::task::spawn_blocking(move || {
            // The slot is held until the work really ends, not until the
            // caller stops waiting.
            let _permit = permit;
            work(&stop)
        });
        let out = tokio::time::timeout_at(deadline, task)
            .await
            .map_err(|_| late("ran past"))?
            .map_err(|e| Status::internal(format!("{what} failed: {e}")))?;
        drop(guard);
        Ok(out)
    }

    /// The Node list with labels, when the aggregator watches Nodes and
    /// has loaded them: Place considers only nodes in it.
    fn node_labels(&self) -> Option<NodeLabels> {
        let list = self.nodes.as_ref()?;
        // Before the first list, no answer beats "no node exists".
        if !list.is_ready() {
            return None;
        }
        Some(
            list.store()
                .state()
                .iter()
                .filter_map(|n| {
                    let name = n.metadata.name.clone()?;
                    Some((name, n.metadata.labels.clone().unwrap_or_default()))
                })
                .collect::<BTreeMap<_, _>>(),
        )
    }
}

#[tonic::async_trait]
impl QueryService for Services {
    async fn get_matrix(
        &self,
        request: Request<GetMatrixRequest>,
    ) -> Result<Response<GetMatrixResponse>, Status> {
        self.authorize(&request, Access::Read).await?;
        let r = request.into_inner();
        let method = method_of(r.method)?;
        let limit = match r.page_size as usize {
            0 => usize::MAX,
            n if n > MAX_PAGE_SIZE => {
                return Err(Status::invalid_argument(format!(
                    "page_size {n} is more than {MAX_PAGE_SIZE}; ask for smaller pages"
                )));
            }
            n => n,
        };
        if r.nodes.len() > MAX_NAMES {
            return Err(Status::invalid_argument(format!(
                "GetMatrixRequest.nodes names {} nodes; at most {MAX_NAMES} are accepted",
                r.nodes.len()
            )));
        }
        if !r.nodes.is_empty() && !r.group.is_empty() {
            return Err(Status::invalid_argument(
                "GetMatrixRequest: give nodes or group, not both",
            ));
        }
        let after = match r.page_token.as_str() {
            "" => None,
            t => Some(parse_page_token(t)?),
        };
        // Each page reads the latest snapshot: one per page costs the owner
        // a clone of the nodes (the links are shared), and holding one
        // snapshot for a whole read (tens of seconds at 5,000 nodes) would
        // keep every row changed meanwhile.
        let snapshot = self.state.snapshot().await?;
        let set: Option<BTreeSet<String>> = if !r.group.is_empty() {
            Some(group_members(&snapshot, &r.group, r.group_level)?)
        } else if !r.nodes.is_empty() {
            for name in &r.nodes {
                if !snapshot.knows(name) {
                    return Err(Status::not_found(format!(
                        "node '{}' is unknown: no agent with that node name ever connected",
                        netaware_common::printable(name)
                    )));
                }
            }
            Some(r.nodes.iter().cloned().collect())
        } else {
            None
        };
        let among = !r.group.is_empty();
        let histograms = r.include_histograms;
        let (mut m, next) = self
            .costly("GetMatrix", &self.matrix_slots, move |_| {
                let filter = match (&set, among) {
                    (None, _) => Filter::All,
                    (Some(s), true) => Filter::Among(s),
                    (Some(s), false) => Filter::Touching(s),
                };
                let page = Page {
                    method,
                    histograms,
                    filter,
                    after,
                    limit,
                };
                snapshot.page(&page, Instant::now(), netaware_common::now_unix_us())
            })
            .await?;
        m.next_page_token = next.map(|k| page_token(&k)).unwrap_or_default();
        let size = m.encoded_len();
        if size > MAX_QUERY_RESPONSE_BYTES {
            return Err(Status::resource_exhausted(format!(
                "the matrix is {size} bytes, more than the {} MiB one answer may carry; ask for pages (page_size), one method, or some nodes{}",
                MAX_QUERY_RESPONSE_BYTES >> 20,
                if r.include_histograms {
                    ", or leave the histograms out"
                } else {
                    ""
                }
            )));
        }
        Ok(Response::new(m))
    }

    async fn get_node(
        &self,
        request: Request<GetNodeRequest>,
    ) -> Result<Response<GetNodeResponse>, Status> {
        self.authorize(&request, Access::Read).await?;
        let name = request.into_inner().node_name;
        if name.is_empty() {
            return Err(Status::invalid_argument(
                "GetNodeRequest.node_name is empty",
            ));
        }
        let view = self.state.node(&name).ok_or_else(|| {
            Status::not_found(format!(
                "node '{}' is unknown: no agent with that node name ever connected",
                netaware_common::printable(&name)
            ))
        })?;
        let Some(facts) = view.facts else {
            return Err(Status::unavailable(format!(
                "node '{name}' is known but its groups are not computed yet; try again after the next recomputation"
            )));
        };
        // The same function the publisher uses, so the page shows what the
        // Node carries; it refuses only facts no Node could carry.
        let labels = netaware_model::labels::node_labels(&self.label_prefix, &facts)
            .map_err(|e| Status::internal(format!("node '{name}': its labels: {e}")))?;
        let f = facts.figures;
        Ok(Response::new(GetNodeResponse {
            status: Some(view.status),
            group_l1: facts.groups[0].clone(),
            group_l2: facts.groups[1].clone(),
            group_l3: facts.groups[2].clone(),
            quality: facts.quality,
            rtt_p50_us: f.map_or(0.0, |f| f.rtt_p50_us),
            rtt_p99_us: f.map_or(0.0, |f| f.rtt_p99_us),
            jitter_us: f.map_or(0.0, |f| f.jitter_us),
            loss_ppm: f.map_or(0.0, |f| f.loss_ppm),
            bandwidth_mbps: f.and_then(|f| f.bandwidth_mbps).unwrap_or(0.0),
            fresh: facts.fresh,
            labels: labels.into_iter().collect(),
        }))
    }

    async fn list_groups(
        &self,
        request: Request<ListGroupsRequest>,
    ) -> Result<Response<ListGroupsResponse>, Status> {
        self.authorize(&request, Access::Read).await?;
        let groups = self.state.snapshot().await?.groups().ok_or_else(|| {
            Status::unavailable(
                "groups are not computed yet (no agent has reported); try again shortly",
            )
        })?;
        Ok(Response::new(ListGroupsResponse {
            groups: groups
                .into_iter()
                .map(|g| netaware_proto::v1::Group {
                    level: g.level,
                    id: g.id,
                    members: g.members,
                    max_rtt_us: g.max_rtt_us,
                })
                .collect(),
        }))
    }

    async fn place(
        &self,
        request: Request<PlaceRequest>,
    ) -> Result<Response<PlaceResponse>, Status> {
        self.authorize(&request, Access::Place).await?;
        let r = request.into_inner();
        let selector = if r.label_selector.trim().is_empty() {
            None
        } else {
            let filter = crate::selector::filter(&r.label_selector)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            Some(filter)
        };
        let labels = self.node_labels();
        let shape = if r.shape.is_empty() {
            None
        } else {
            let levels = r
                .shape
                .into_iter()
                .take(shape::MAX_LEVELS + 1)
                .map(|l| shape::Level {
                    name: l.name,
                    size: usize::try_from(l.size).unwrap_or(usize::MAX),
                    bytes: (l.bytes > 0).then_some(l.bytes),
                })
                .collect();
            Some(Shape::new(levels).map_err(|e| Status::invalid_argument(e.to_string()))?)
        };
        // A shaped job takes one node per rank: k may be left out.
        let k = match (&shape, r.k) {
            (Some(s), 0) => s.ranks(),
            _ => usize::try_from(r.k).unwrap_or(usize::MAX),
        };
        let query = Query {
            k,
            include: r.include,
            exclude: r.exclude,
            selector,
            min_bandwidth_mbps: r.min_bandwidth_mbps,
            // fresh_only (older clients) is the default now.
            allow_stale: r.allow_stale && !r.fresh_only,
            allreduce_bytes: r.allreduce_bytes,
            explain: r.explain,
            shape,
        };
        // The latest recomputation, without asking the owner: it may be
        // busy recomputing, and Place needs nothing newer.
        let inferred = self.state.inferred().ok_or_else(|| {
            Status::unavailable(
                "no recomputation yet: figures and groups come within --recompute-interval of the first windows; try again then",
            )
        })?;
        let p = self
            .costly("Place", &self.place_slots, move |stop| {
                place_on(&inferred, &query, labels.as_ref(), stop)
            })
            .await?
            .map_err(|e| match e {
                PlaceError::NoLabels => Status::failed_precondition(e.to_string()),
                PlaceError::Stopped => Status::deadline_exceeded(e.to_string()),
                e => Status::invalid_argument(e.to_string()),
            })?;
        Ok(Response::new(PlaceResponse {
            nodes: p.nodes,
            max_rtt_us: p.max_rtt_us,
            bottleneck_bandwidth_mbps: p.bottleneck_mbps.unwrap_or(0.0),
            predicted_allreduce_ms: p.predicted_allreduce_ms.unwrap_or(0.0),
            exclusions: p
                .exclusions
                .into_iter()
                .map(|(node_name, reason)| netaware_proto::v1::Exclusion { node_name, reason })
                .collect(),
            pairs: p.pairs,
            bandwidth_pairs_measured: p.bandwidth_pairs_measured,
            rtt_pairs_measured: p.rtt_pairs_measured,
            prediction: p.prediction.map(wire_prediction),
            runner_up: p.runner_up.map(|r| netaware_proto::v1::RunnerUp {
                nodes: r.nodes,
                prediction: r.prediction.map(wire_prediction),
                why: r.why,
            }),
            ranks: p.ranks,
            levels: p
                .levels
                .into_iter()
                .map(|l| netaware_proto::v1::LevelPrediction {
                    name: l.name,
                    size: u32::try_from(l.size).unwrap_or(u32::MAX),
                    bytes: l.bytes,
                    prediction: l.prediction.map(wire_prediction),
                })
                .collect(),
        }))
    }

    type WatchLinksStream = BoxStream<LinkUpdate>;

    async fn watch_links(
        &self,
        request: Request<WatchLinksRequest>,
    ) -> Result<Response<Self::WatchLinksStream>, Status> {
        self.authorize(&request, Access::Read).await?;
        let req = request.into_inner();
        let method = method_of(req.method)?;
        if req.nodes.len() > MAX_NAMES {
            return Err(Status::invalid_argument(format!(
                "WatchLinksRequest.nodes names {} nodes; at most {MAX_NAMES} are accepted",
                req.nodes.len()
            )));
        }
        // Unknown names are fine here: a node may join while it is watched.
        let want = Wanted {
            method,
            nodes: req.nodes.into_iter().collect(),
        };
        let slot = self.watchers.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{} watchers are open, the most this aggregator serves (--max-watchers); close one or try later",
                self.limits.max_watchers
            ))
        })?;
        let initial_slot = if req.send_initial {
            let slot = tokio::time::timeout(
                self.limits.timeout,
                self.initial_slots.clone().acquire_owned(),
            )
            .await
            .map_err(|_| {
                Status::resource_exhausted(format!(
                    "{INITIAL_CONCURRENCY} watchers were receiving their initial state for all of the query deadline; try again"
                ))
            })?
            .map_err(|_| Status::unavailable("aggregator is shutting down"))?;
            Some(slot)
        } else {
            None
        };
        let watch = self.state.watch().await?;
        let (tx, rx) = mpsc::channel(WATCH_QUEUE);
        tokio::spawn(async move {
            // The slots are free again when the watcher is gone (or, for the
            // initial one, has its initial state).
            let _slot = slot;
            let Watch {
                snapshot,
                since,
                updates,
            } = watch;
            if let Some(initial_slot) = initial_slot {
                if !send_initial(snapshot, since, &want, &tx).await {
                    return;
                }
                drop(initial_slot);
            } else {
                drop(snapshot);
            }
            forward(updates, &want, &tx).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// The links a watcher asked for: of one method (or all), from or to one
/// of some nodes (or any).
#[derive(Debug)]
struct Wanted {
    method: ProbeMethod,
    nodes: BTreeSet<String>,
}

impl Wanted {
    fn wants(&self, l: &LinkState) -> bool {
        (self.method == ProbeMethod::Unspecified || l.method == self.method as i32)
            && (self.nodes.is_empty() || self.nodes.contains(&l.src) || self.nodes.contains(&l.dst))
    }
}

/// Send a watcher the links as of `snapshot` and the updates since it;
/// false when the watcher went away or stopped reading.
async fn send_initial(
    snapshot: Arc<Snapshot>,
    since: Vec<LinkState>,
    want: &Wanted,
    tx: &mpsc::Sender<Result<LinkUpdate, Status>>,
) -> bool {
    // One link at a time from the shared snapshot: a watcher holds its
    // queue, not a copy of the matrix.
    let links = snapshot
        .links(want.method, Instant::now())
        .filter(|l| want.wants(l))
        .chain(since.into_iter().filter(|l| want.wants(l)));
    for link in links {
        let update = Ok(LinkUpdate { link: Some(link) });
        if tx.send_timeout(update, INITIAL_SEND_TIMEOUT).await.is_err() {
            return false;
        }
    }
    true
}

/// Stream every update `want`s into `tx` until the watcher goes away,
/// stops reading for [`WATCH_SEND_TIMEOUT`], or falls behind the updates.
async fn forward(
    mut updates: broadcast::Receiver<LinkState>,
    want: &Wanted,
    tx: &mpsc::Sender<Result<LinkUpdate, Status>>,
) {
    let send = |item: Result<LinkUpdate, Status>| tx.send_timeout(item, WATCH_SEND_TIMEOUT);
    loop {
        let item = match updates.recv().await {
            Ok(link) if want.wants(&link) => Ok(LinkUpdate { link: Some(link) }),
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(n)) => Err(Status::resource_exhausted(
                format!("watcher fell {n} updates behind; watch again with send_initial"),
            )),
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let last = item.is_err();
        if send(item).await.is_err() || last {
            return;
        }
    }
}
