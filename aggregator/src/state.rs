//! The one owner of the aggregator's state. gRPC handlers send it
//! [`Command`]s and await replies; nothing else touches the matrix, so there
//! are no locks to order.

use std::collections::{BTreeMap, HashMap};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use netaware_proto::ProbeMethod;
use netaware_proto::v1::aggregator_message::Msg as AggMsg;
use netaware_proto::v1::{
    AggregatorMessage, BandwidthResult, BandwidthServed, GetMatrixResponse, Hello, LinkState,
    NodeStatus, ReportAck, ReportBatch,
};
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tonic::Status;
use tracing::{debug, info, warn};

use crate::metrics::StateMetrics;
use netaware_model::Error as PlaceError;
use netaware_model::bandwidth::{BandwidthConfig, Scheduler, TestPeriods};
use netaware_model::infer::{Group, InferConfig, Inference, Inferred};
use netaware_model::labels::NodeFacts;
use netaware_model::matrix::{self, Matrix, PlanTiming};
use netaware_model::place::{self, Placement, Query, View};
use netaware_model::validate;

use crate::refusals::RefusalLog;

/// Outbound messages of one agent session.
pub type SessionTx = mpsc::Sender<Result<AggregatorMessage, Status>>;
/// Identifies one open agent session.
pub type SessionId = u64;

/// Requests to the state owner.
#[derive(Debug)]
pub enum Command {
    /// An agent said hello; its plans and acks go to `tx`.
    Connect {
        hello: Hello,
        tx: SessionTx,
        reply: oneshot::Sender<SessionId>,
    },
    /// A batch from an open session.
    Reports {
        session: SessionId,
        batch: ReportBatch,
    },
    /// A session ended.
    Disconnect { session: SessionId },
    GetMatrix {
        method: ProbeMethod,
        reply: oneshot::Sender<GetMatrixResponse>,
    },
    /// One node's status and published facts (`None`: unknown node).
    GetNode {
        name: String,
        reply: oneshot::Sender<Option<NodeView>>,
    },
    /// The published groups (`None` before the first recomputation).
    ListGroups {
        reply: oneshot::Sender<Option<Vec<Group>>>,
    },
    /// Recompute groups and quality now (tests, and after start-up).
    Recompute,
    /// Choose nodes for a job; `labels` are the Node labels when the request
    /// has a selector and the aggregator watches Nodes.
    Place {
        query: Query,
        labels: Option<BTreeMap<String, BTreeMap<String, String>>>,
        reply: oneshot::Sender<Result<Placement, PlaceError>>,
    },
    /// A bandwidth test result from the session's node (the receiver).
    BandwidthResult {
        session: SessionId,
        result: BandwidthResult,
    },
    /// What the session's node sent under a grant (the sender).
    BandwidthServed {
        session: SessionId,
        served: BandwidthServed,
    },
    /// Subscribe to link updates, with the current links if asked.
    Watch {
        method: ProbeMethod,
        send_initial: bool,
        reply: oneshot::Sender<(Vec<LinkState>, broadcast::Receiver<LinkState>)>,
    },
}

/// What GetNode answers.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub status: NodeStatus,
    /// `None` until the first recomputation that included the node.
    pub facts: Option<NodeFacts>,
}

#[derive(Debug)]
struct Session {
    node: String,
    tx: SessionTx,
}

/// Settings of the state owner.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StateConfig {
    pub timing: PlanTiming,
    pub smoothing: f64,
    pub stale_after: std::time::Duration,
    pub infer: InferConfig,
    /// How often groups and quality are recomputed.
    pub recompute_interval: std::time::Duration,
    pub bandwidth: BandwidthConfig,
}

impl Default for StateConfig {
    /// The one definition of these defaults: the aggregator's flags show
    /// them (`config.rs` renders each from here or from the model's).
    fn default() -> Self {
        Self {
            timing: PlanTiming::default(),
            smoothing: matrix::DEFAULT_SMOOTHING,
            stale_after: matrix::DEFAULT_STALE_AFTER,
            infer: InferConfig::default(),
            recompute_interval: DEFAULT_RECOMPUTE_INTERVAL,
            bandwidth: BandwidthConfig::default(),
        }
    }
}

/// How often groups and quality are recomputed: once per default report
/// window, so every recomputation sees new figures.
pub const DEFAULT_RECOMPUTE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// How often the bandwidth scheduler looks for tests to start.
const BANDWIDTH_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// Capacity of the link-update broadcast; a watcher further behind is told so.
const WATCH_CAPACITY: usize = 4096;

/// Handle for sending commands to the state owner.
#[derive(Debug, Clone)]
pub struct StateHandle {
    tx: mpsc::Sender<Command>,
    inferred: watch::Receiver<Option<Arc<Inferred>>>,
    metrics: StateMetrics,
}

impl StateHandle {
    /// Every recomputation of groups and quality, as it happens.
    pub fn subscribe_inferred(&self) -> watch::Receiver<Option<Arc<Inferred>>> {
        self.inferred.clone()
    }

    /// The owner's counters (the gRPC layer counts the Hellos it refuses).
    pub fn metrics(&self) -> &StateMetrics {
        &self.metrics
    }

    /// Send a command; fails only when the state owner has stopped.
    pub async fn send(&self, cmd: Command) -> Result<(), Status> {
        self.tx
            .send(cmd)
            .await
            .map_err(|_| Status::unavailable("aggregator is shutting down"))
    }

    /// Open a session for an agent that said `hello`; its plans and acks
    /// go to `tx`.
    pub async fn connect(&self, hello: Hello, tx: SessionTx) -> Result<SessionId, Status> {
        self.ask(|reply| Command::Connect { hello, tx, reply })
            .await
    }

    /// The matrix, for one method or all (`Unspecified`).
    pub async fn matrix(&self, method: ProbeMethod) -> Result<GetMatrixResponse, Status> {
        self.ask(|reply| Command::GetMatrix { method, reply }).await
    }

    /// Send a command and await its reply.
    pub async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Status> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx)).await?;
        rx.await
            .map_err(|_| Status::unavailable("aggregator is shutting down"))
    }
}

/// Start the state owner task.
pub fn spawn(config: StateConfig) -> StateHandle {
    spawn_with_metrics(config, StateMetrics::default())
}

/// Start the state owner task, counting into `metrics`.
pub fn spawn_with_metrics(config: StateConfig, metrics: StateMetrics) -> StateHandle {
    let (tx, rx) = mpsc::channel(1024);
    let (inferred_tx, inferred) = watch::channel(None);
    tokio::spawn(run(config, rx, inferred_tx, metrics.clone()));
    StateHandle {
        tx,
        inferred,
        metrics,
    }
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn now_unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

struct Owner {
    config: StateConfig,
    matrix: Matrix,
    inference: Inference,
    inferred: Option<Arc<Inferred>>,
    inferred_tx: watch::Sender<Option<Arc<Inferred>>>,
    sessions: HashMap<SessionId, Session>,
    next_session: SessionId,
    plan_version: u64,
    updates: broadcast::Sender<LinkState>,
    bandwidth: Scheduler,
    test_periods: TestPeriods,
    metrics: StateMetrics,
    refusals: RefusalLog,
}

async fn run(
    config: StateConfig,
    mut rx: mpsc::Receiver<Command>,
    inferred_tx: watch::Sender<Option<Arc<Inferred>>>,
    metrics: StateMetrics,
) {
    let (updates, _) = broadcast::channel(WATCH_CAPACITY);
    let mut owner = Owner {
        config,
        matrix: Matrix::new(config.smoothing, config.stale_after),
        inference: Inference::new(config.infer),
        inferred: None,
        inferred_tx,
        sessions: HashMap::new(),
        next_session: 1,
        plan_version: 0,
        updates,
        bandwidth: Scheduler::new(config.bandwidth),
        test_periods: TestPeriods::default(),
        metrics,
        refusals: RefusalLog::default(),
    };
    let mut bandwidth_tick = tokio::time::interval(BANDWIDTH_TICK);
    bandwidth_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut recompute = tokio::time::interval(config.recompute_interval);
    recompute.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(cmd) => owner.handle(cmd, Instant::now()),
                None => break,
            },
            _ = recompute.tick() => owner.recompute(Instant::now()),
            _ = bandwidth_tick.tick() => owner.schedule_bandwidth(Instant::now()),
        }
    }
}

impl Owner {
    fn handle(&mut self, cmd: Command, now: Instant) {
        match cmd {
            Command::Connect { hello, tx, reply } => {
                let id = self.next_session;
                self.next_session += 1;
                info!(node = %hello.node_name, version = %hello.software_version, session = id, "agent connected");
                self.matrix.connect(hello.clone());
                self.sessions.insert(
                    id,
                    Session {
                        node: hello.node_name,
                        tx,
                    },
                );
                let _ = reply.send(id);
                self.metrics
                    .agents_connected
                    .set(i64::try_from(self.sessions.len()).unwrap_or(i64::MAX));
                self.replan();
            }
            Command::Reports { session, batch } => self.reports(session, batch, now),
            Command::Disconnect { session } => self.close(session),
            Command::GetNode { name, reply } => {
                let view = self.matrix.node_status(&name).map(|status| NodeView {
                    status,
                    facts: self
                        .inferred
                        .as_ref()
                        .and_then(|i| i.facts.get(&name).cloned()),
                });
                let _ = reply.send(view);
            }
            Command::ListGroups { reply } => {
                let _ = reply.send(self.inferred.as_ref().map(|i| i.groups.clone()));
            }
            Command::Recompute => self.recompute(now),
            Command::BandwidthResult { session, result } => {
                self.bandwidth_result(session, result, now);
            }
            Command::BandwidthServed { session, served } => {
                let Some(node) = self.sessions.get(&session).map(|s| s.node.clone()) else {
                    return;
                };
                if self
                    .bandwidth
                    .served(served.token, &node, served.bytes_sent)
                {
                    debug!(%node, token = served.token, bytes = served.bytes_sent, "bandwidth grant served");
                    self.test_ended(served.token, now);
                }
            }
            Command::Place {
                query,
                labels,
                reply,
            } => {
                let _ = reply.send(self.place(&query, labels.as_ref(), now));
            }
            Command::GetMatrix { method, reply } => {
                let _ = reply.send(self.matrix.snapshot(method, now, now_unix_us()));
            }
            Command::Watch {
                method,
                send_initial,
                reply,
            } => {
                let initial = if send_initial {
                    self.matrix.links(method, now)
                } else {
                    Vec::new()
                };
                let _ = reply.send((initial, self.updates.subscribe()));
            }
        }
    }

    /// Queue a message for the newest session of `node`.
    fn push_to_node(&mut self, node: &str, msg: AggMsg) {
        let id = self
            .sessions
            .iter()
            .filter(|(_, s)| s.node == node)
            .map(|(id, _)| *id)
            .max();
        if let Some(id) = id {
            self.push(id, AggregatorMessage { msg: Some(msg) });
        }
    }

    fn place(
        &self,
        query: &Query,
        labels: Option<&BTreeMap<String, BTreeMap<String, String>>>,
        now: Instant,
    ) -> Result<Placement, PlaceError> {
        let names = self.matrix.node_names();
        let dist = netaware_model::infer::distances(&self.matrix, &names, now);
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
            .map(|n| netaware_model::infer::is_fresh(&self.matrix, n, &names, now))
            .collect();
        // The group thresholds in use (resolved when `auto`).
        let levels: Vec<f64> = match (&self.inferred, self.config.infer.thresholds) {
            (Some(i), _) => i.thresholds.to_vec(),
            (None, netaware_model::groups::Thresholds::Fixed(t)) => t.to_vec(),
            (None, netaware_model::groups::Thresholds::Auto) => Vec::new(),
        };
        let view = View {
            names: &names,
            dist: &dist,
            bandwidth: &bandwidth,
            quality: &quality,
            fresh: &fresh,
            labels,
            levels: &levels,
        };
        place::place(query, &view)
    }

    fn recompute(&mut self, now: Instant) {
        if self.matrix.node_names().is_empty() {
            return;
        }
        let started = Instant::now();
        let mut out = self.inference.recompute(&self.matrix, now);
        out.computed_unix_us = now_unix_us();
        info!(
            nodes = out.facts.len(),
            moved = out.moved.len(),
            thresholds_us = ?out.thresholds,
            took_ms = started.elapsed().as_millis() as u64,
            "groups and quality recomputed"
        );
        let out = Arc::new(out);
        self.inferred = Some(out.clone());
        // Nobody subscribed (no publisher) is fine.
        self.inferred_tx.send_replace(Some(out));
    }

    fn reports(&mut self, session: SessionId, batch: ReportBatch, now: Instant) {
        let Some(s) = self.sessions.get(&session) else {
            return;
        };
        let node = s.node.clone();
        self.matrix.set_dropped(&node, batch.dropped_windows_total);
        let mut stored = 0usize;
        let wall = now_unix_us();
        for w in batch.windows {
            // A bad window is dropped alone and the batch still
            // acknowledged: refusing the batch would make the agent send
            // it again and again.
            let checked = validate::window(&w, &node, |p| self.matrix.hello(p).is_some(), wall);
            if let Err(r) = checked {
                self.metrics.refused("window");
                self.refusals.warn(&node, "window", &r);
                continue;
            }
            let disturbed = self.test_periods.disturbs(
                &node,
                &w.peer,
                w.window_start_unix_us,
                w.window_end_unix_us,
            );
            if let Some(state) = self.matrix.apply(&node, w, disturbed, now) {
                self.metrics.windows.inc();
                if disturbed {
                    self.metrics.windows_disturbed.inc();
                }
                stored += 1;
                // No watchers is fine.
                let _ = self.updates.send(state);
            }
        }
        debug!(%node, batch = batch.batch_seq, stored, "report batch");
        let ack = AggregatorMessage {
            msg: Some(AggMsg::Ack(ReportAck {
                batch_seq: batch.batch_seq,
            })),
        };
        self.push(session, ack);
    }

    /// Queue a message for a session without ever blocking the owner: an
    /// agent that does not read its stream is disconnected (it will
    /// reconnect and resend whatever was not acknowledged).
    fn push(&mut self, session: SessionId, msg: AggregatorMessage) {
        let Some(s) = self.sessions.get(&session) else {
            return;
        };
        if let Err(e) = s.tx.try_send(Ok(msg)) {
            warn!(node = %s.node, session, error = %e, "agent session is not keeping up; closing it");
            self.close(session);
        }
    }

    fn close(&mut self, session: SessionId) {
        if let Some(s) = self.sessions.remove(&session) {
            info!(node = %s.node, session, "agent disconnected");
            self.metrics
                .agents_connected
                .set(i64::try_from(self.sessions.len()).unwrap_or(i64::MAX));
            self.matrix.disconnect(&s.node);
            self.replan();
        }
    }

    /// Send every open session its full-mesh plan.
    fn replan(&mut self) {
        self.plan_version += 1;
        let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        for id in ids {
            let Some(node) = self.sessions.get(&id).map(|s| s.node.clone()) else {
                continue;
            };
            if let Some(plan) = self
                .matrix
                .plan_for(&node, self.plan_version, self.config.timing)
            {
                self.push(
                    id,
                    AggregatorMessage {
                        msg: Some(AggMsg::Plan(plan)),
                    },
                );
            }
        }
    }
}

mod bandwidth;

#[cfg(test)]
mod tests;
