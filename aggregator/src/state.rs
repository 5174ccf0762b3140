//! The one owner of the aggregator's state. gRPC handlers send it
//! [`Command`]s; nothing else touches the matrix, so there are no locks to
//! order. Queries do not run here: the owner hands them a [`Snapshot`] (a
//! copy taken in one step) and they compute their answer on their own task.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use netaware_proto::ProbeMethod;
use netaware_proto::v1::aggregator_message::Msg as AggMsg;
use netaware_proto::v1::{
    AggregatorMessage, BandwidthResult, BandwidthServed, GetMatrixResponse, Hello, LinkState,
    NodeStatus, ReportAck, ReportBatch,
};
use std::sync::Arc;

use netaware_common::observe::Heartbeat;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tonic::Status;
use tracing::{debug, error, info, warn};

use crate::metrics::StateMetrics;
use netaware_model::bandwidth::{BandwidthConfig, Scheduler, TestPeriods};
use netaware_model::groups::Assignment;
use netaware_model::infer::{InferConfig, Inferred};
use netaware_model::labels::NodeFacts;
use netaware_model::matrix::{self, Matrix, PlanTiming};
use netaware_model::plan::PlanConfig;
use netaware_model::validate;

use recompute::{Finished, Recomputer};
pub use snapshot::{NodeLabels, Snapshot};

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
        trust: Trust,
        reply: oneshot::Sender<Result<SessionId, Status>>,
    },
    /// A batch from an open session.
    Reports {
        session: SessionId,
        batch: ReportBatch,
    },
    /// A session ended.
    Disconnect { session: SessionId },
    /// The state for a query: the latest snapshot, taken anew if the state
    /// changed and the latest is older than `StateConfig::snapshot_max_age`.
    Snapshot {
        reply: oneshot::Sender<Arc<Snapshot>>,
    },
    /// Recompute groups and quality now (tests, and after start-up); the
    /// reply comes when that recomputation has been applied.
    Recompute { reply: oneshot::Sender<()> },
    /// Start from the group ids on the Nodes (a new leader, before it
    /// writes anything), then recompute.
    SeedGroups {
        assignment: Assignment,
        reply: oneshot::Sender<()>,
    },
    /// The names of the cluster's Nodes now: a node no longer among them is
    /// forgotten once its agent has been away for `forget_after`.
    NodeList { names: BTreeSet<String> },
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
    /// Subscribe to link updates, with the state they start from.
    Watch { reply: oneshot::Sender<Watch> },
}

/// A new watcher's start: the links are the snapshot's, then `since` (the
/// updates stored after the snapshot was taken, in order), then whatever
/// `updates` brings. Taken in one step of the owner, so no update is lost
/// between them, and without a fresh copy of the matrix per watcher.
#[derive(Debug)]
pub struct Watch {
    pub snapshot: Arc<Snapshot>,
    pub since: Vec<LinkState>,
    pub updates: broadcast::Receiver<LinkState>,
}

/// What GetNode answers.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub status: NodeStatus,
    /// `None` until the first recomputation that included the node.
    pub facts: Option<NodeFacts>,
}

/// What proves a session speaks for its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Nothing (`--agent-auth none`): a newer session of the node does not
    /// close it, and it never closes an authenticated one.
    Unauthenticated,
    /// A reviewed token bound to the node, trusted until then: the session
    /// is closed at that instant and the agent reconnects with the token
    /// the kubelet has rotated in.
    Until(Instant),
}

#[derive(Debug)]
struct Session {
    node: String,
    /// The agent instance on this session (`Hello.instance_id`).
    instance: u64,
    trust: Trust,
    tx: SessionTx,
    /// The targets of the plan last sent (`None` before the first).
    plan: Option<Vec<String>>,
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
    /// How old a snapshot may be before a query makes the owner take a new
    /// one (when the state changed): bounds the copying a query flood can
    /// make the owner do.
    pub snapshot_max_age: std::time::Duration,
    /// A node whose agent has been away this long is forgotten (matrix,
    /// plans, groups, Place) once the cluster's Node list no longer has it,
    /// or at once without a Node list.
    pub forget_after: std::time::Duration,
    /// Probe-target bound and rotation.
    pub plan: PlanConfig,
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
            snapshot_max_age: DEFAULT_SNAPSHOT_MAX_AGE,
            forget_after: DEFAULT_FORGET_AFTER,
            plan: PlanConfig::default(),
        }
    }
}

/// Long enough for a node to reboot or its agent to be upgraded, short
/// enough that nodes an autoscaler removed leave within minutes.
pub const DEFAULT_FORGET_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// Queries see the state at most this old: at most four clones a second,
/// however many queries come.
pub const DEFAULT_SNAPSHOT_MAX_AGE: std::time::Duration = std::time::Duration::from_millis(250);

/// How often the owner proves it is not wedged, and how long a silence
/// `/healthz` tolerates (a recomputation of a large cluster takes seconds).
const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(1);
const HEARTBEAT_MAX_SILENCE: std::time::Duration = std::time::Duration::from_secs(15);

/// Updates kept since the latest snapshot, for watchers that start from
/// it; past this many, the next query takes a new snapshot instead.
const MAX_SINCE_SNAPSHOT: usize = 1024;

/// How long a query waits for the owner to hand over a snapshot.
const OWNER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// How often groups and quality are recomputed: once per default report
/// window, so every recomputation sees new figures.
pub const DEFAULT_RECOMPUTE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// How often plans are looked at again when something changed: at most
/// one replanning of every session per tick.
const REPLAN_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// How often the bandwidth scheduler looks for tests to start.
const BANDWIDTH_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// Capacity of the link-update broadcast; a watcher further behind is told so.
const WATCH_CAPACITY: usize = 4096;

/// Handle for sending commands to the state owner.
#[derive(Debug, Clone)]
pub struct StateHandle {
    tx: mpsc::Sender<Command>,
    inferred: watch::Receiver<Option<Arc<Inferred>>>,
    statuses: watch::Receiver<Arc<Statuses>>,
    metrics: StateMetrics,
    heartbeat: Heartbeat,
}

impl StateHandle {
    /// Every recomputation of groups and quality, as it happens.
    pub fn subscribe_inferred(&self) -> watch::Receiver<Option<Arc<Inferred>>> {
        self.inferred.clone()
    }

    /// One node's status and published facts (`None`: unknown node),
    /// without asking the owner: GetNode is answered while the owner
    /// recomputes a large cluster. Statuses are at most a replanning tick
    /// old on a cluster past the probe-target bound, current below it.
    /// The latest recomputation (`None` before the first), read without
    /// the owner: Place works on it alone.
    pub fn inferred(&self) -> Option<Arc<Inferred>> {
        self.inferred.borrow().clone()
    }

    pub fn node(&self, name: &str) -> Option<NodeView> {
        let status = self.statuses.borrow().get(name).cloned()?;
        let facts = self
            .inferred
            .borrow()
            .as_ref()
            .and_then(|i| i.facts.get(name).cloned());
        Some(NodeView { status, facts })
    }

    /// The owner's counters (the gRPC layer counts the Hellos it refuses).
    pub fn metrics(&self) -> &StateMetrics {
        &self.metrics
    }

    /// Beats while the owner's loop goes round (for `/healthz`).
    pub fn heartbeat(&self) -> Heartbeat {
        self.heartbeat.clone()
    }

    /// Send a command; fails only when the state owner has stopped.
    pub async fn send(&self, cmd: Command) -> Result<(), Status> {
        self.tx
            .send(cmd)
            .await
            .map_err(|_| Status::unavailable("aggregator is shutting down"))
    }

    /// Open a session for an agent that said `hello`, unauthenticated
    /// (`--agent-auth none`, and tests); its plans and acks go to `tx`.
    pub async fn connect(&self, hello: Hello, tx: SessionTx) -> Result<SessionId, Status> {
        self.connect_as(hello, tx, Trust::Unauthenticated).await
    }

    /// Open a session whose node `trust` vouches for.
    pub async fn connect_as(
        &self,
        hello: Hello,
        tx: SessionTx,
        trust: Trust,
    ) -> Result<SessionId, Status> {
        self.ask(|reply| Command::Connect {
            hello,
            tx,
            trust,
            reply,
        })
        .await?
    }

    /// The state for a query.
    pub async fn snapshot(&self) -> Result<Arc<Snapshot>, Status> {
        self.ask(|reply| Command::Snapshot { reply }).await
    }

    /// Link updates from now on, and the state they start from.
    pub async fn watch(&self) -> Result<Watch, Status> {
        self.ask(|reply| Command::Watch { reply }).await
    }

    /// Recompute now; returns once the result is applied (queries and
    /// `inferred()` see it).
    pub async fn recompute(&self) -> Result<(), Status> {
        self.ask(|reply| Command::Recompute { reply }).await
    }

    /// Start from the group ids the Nodes carry; returns once the owner
    /// has recomputed with them.
    pub async fn seed_groups(&self, assignment: Assignment) -> Result<(), Status> {
        self.ask(|reply| Command::SeedGroups { assignment, reply })
            .await
    }

    /// The matrix with histograms, for one method or all (`Unspecified`).
    pub async fn matrix(&self, method: ProbeMethod) -> Result<GetMatrixResponse, Status> {
        let s = self.snapshot().await?;
        Ok(s.matrix(method, true, Instant::now(), netaware_common::now_unix_us()))
    }

    /// Send a command and await its reply, for at most [`OWNER_DEADLINE`]:
    /// a wedged owner makes queries fail with a clear error, not hang.
    pub async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Status> {
        let (tx, rx) = oneshot::channel();
        let asked = async {
            self.send(make(tx)).await?;
            rx.await
                .map_err(|_| Status::unavailable("aggregator is shutting down"))
        };
        tokio::time::timeout(OWNER_DEADLINE, asked)
            .await
            .map_err(|_| {
                Status::unavailable(format!(
                    "the aggregator's state owner did not answer within {} s (see /healthz); try again",
                    OWNER_DEADLINE.as_secs()
                ))
            })?
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
    let (statuses_tx, statuses) = watch::channel(Arc::new(Statuses::new()));
    let heartbeat = Heartbeat::new("state owner", HEARTBEAT_MAX_SILENCE, Instant::now());
    tokio::spawn(run(
        config,
        rx,
        (inferred_tx, statuses_tx),
        metrics.clone(),
        heartbeat.clone(),
    ));
    StateHandle {
        tx,
        inferred,
        statuses,
        metrics,
        heartbeat,
    }
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

struct Owner {
    config: StateConfig,
    matrix: Matrix,
    /// The inference, and its recomputations on a blocking thread.
    recomputer: Recomputer,
    inferred: Option<Arc<Inferred>>,
    inferred_tx: watch::Sender<Option<Arc<Inferred>>>,
    /// Every known node's status, for GetNode without the owner; the
    /// `changes` count it was taken at.
    statuses_tx: watch::Sender<Arc<Statuses>>,
    statuses_at: u64,
    sessions: HashMap<SessionId, Session>,
    next_session: SessionId,
    plan_version: u64,
    updates: broadcast::Sender<LinkState>,
    bandwidth: Scheduler,
    test_periods: TestPeriods,
    /// Concurrent bandwidth tests under way, by id.
    rings: BTreeMap<u64, bandwidth::RingRun>,
    metrics: StateMetrics,
    refusals: RefusalLog,
    /// Counts every command that may change the state; a snapshot is
    /// current while this has not moved since it was taken.
    changes: u64,
    /// The latest snapshot and when it was taken.
    snapshot: Option<(Arc<Snapshot>, Instant)>,
    /// Link updates stored since that snapshot was taken, in order.
    since_snapshot: Vec<LinkState>,
    /// The cluster's Node names, once known (`None` without Kubernetes).
    listed: Option<BTreeSet<String>>,
    /// When the owner started (plan epochs count from here), the epoch of
    /// the plans sent, and whether plans must be looked at again on the
    /// next replanning tick.
    started: Instant,
    epoch: u64,
    replan_due: bool,
}

/// Every known node's status, by name.
type Statuses = BTreeMap<String, NodeStatus>;

async fn run(
    config: StateConfig,
    mut rx: mpsc::Receiver<Command>,
    (inferred_tx, statuses_tx): (
        watch::Sender<Option<Arc<Inferred>>>,
        watch::Sender<Arc<Statuses>>,
    ),
    metrics: StateMetrics,
    heartbeat: Heartbeat,
) {
    let (updates, _) = broadcast::channel(WATCH_CAPACITY);
    // One recomputation runs at a time: one result can be on its way.
    let (done_tx, mut done) = mpsc::channel(1);
    let mut owner = Owner {
        config,
        matrix: Matrix::new(config.smoothing, config.stale_after),
        recomputer: Recomputer::new(config.infer, done_tx),
        inferred: None,
        inferred_tx,
        statuses_tx,
        statuses_at: u64::MAX,
        sessions: HashMap::new(),
        next_session: 1,
        plan_version: 0,
        updates,
        bandwidth: Scheduler::new(config.bandwidth),
        test_periods: TestPeriods::default(),
        rings: BTreeMap::new(),
        metrics,
        refusals: RefusalLog::default(),
        changes: 0,
        snapshot: None,
        since_snapshot: Vec::new(),
        listed: None,
        started: Instant::now(),
        epoch: 0,
        replan_due: false,
    };
    let mut bandwidth_tick = tokio::time::interval(BANDWIDTH_TICK);
    bandwidth_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first after one interval: at start there is nothing to compute.
    let mut recompute = tokio::time::interval_at(
        tokio::time::Instant::now() + config.recompute_interval,
        config.recompute_interval,
    );
    recompute.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut replan_tick = tokio::time::interval(REPLAN_TICK);
    replan_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(cmd) => owner.handle(cmd, Instant::now()),
                None => break,
            },
            _ = recompute.tick() => {
                owner.forget_departed(Instant::now());
                if owner.recomputer.running() {
                    // Slower than the interval: skip a tick, not queue one.
                    warn!(interval = ?config.recompute_interval, "the previous recomputation is still running: skipping one");
                } else {
                    owner.recompute(Instant::now(), None);
                }
            }
            Some(finished) = done.recv() => owner.recomputed(finished, Instant::now()),
            _ = bandwidth_tick.tick() => owner.schedule_bandwidth(Instant::now()),
            _ = replan_tick.tick() => {
                owner.replan_if_due(Instant::now());
                owner.publish_statuses();
            }
            _ = beat.tick() => {
                owner.expire_sessions(Instant::now());
                owner.release_old_snapshot(Instant::now());
                heartbeat.beat(Instant::now());
            }
        }
    }
}

impl Owner {
    fn handle(&mut self, cmd: Command, now: Instant) {
        // What a snapshot holds (the matrix, the inference) may change;
        // scheduling and queries do not count.
        if matches!(
            cmd,
            Command::Connect { .. }
                | Command::Reports { .. }
                | Command::Disconnect { .. }
                | Command::BandwidthResult { .. }
        ) {
            self.changes += 1;
        }
        match cmd {
            Command::Connect {
                hello,
                tx,
                trust,
                reply,
            } => {
                if let Err(refused) = self.displace(&hello.node_name, trust) {
                    let _ = reply.send(Err(refused));
                    return;
                }
                let id = self.next_session;
                self.next_session += 1;
                info!(node = %hello.node_name, version = %hello.software_version, session = id, "agent connected");
                self.matrix.connect(hello.clone());
                self.sessions.insert(
                    id,
                    Session {
                        node: hello.node_name,
                        instance: hello.instance_id,
                        trust,
                        tx,
                        plan: None,
                    },
                );
                let _ = reply.send(Ok(id));
                self.metrics
                    .agents_connected
                    .set(i64::try_from(self.sessions.len()).unwrap_or(i64::MAX));
                // The newcomer gets its plan now; the others, whose plans
                // may now name it, at once while the cluster is a full
                // mesh, else on the next replanning tick (a rollout of
                // thousands of agents costs one replanning a tick, not one
                // per agent).
                self.plan_sessions(&[id]);
                self.peers_changed();
            }
            Command::Reports { session, batch } => self.reports(session, batch, now),
            Command::Disconnect { session } => self.close(session),
            Command::Snapshot { reply } => {
                let _ = reply.send(self.snapshot(now));
            }
            Command::Recompute { reply } => {
                self.forget_departed(now);
                self.recompute(now, Some(reply));
            }
            Command::SeedGroups { assignment, reply } => {
                info!(
                    nodes = assignment.len(),
                    "group ids seeded from the Node labels"
                );
                self.recomputer.seed(assignment);
                self.recompute(now, Some(reply));
            }
            Command::NodeList { names } => self.listed = Some(names),
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
            Command::Watch { reply } => {
                let snapshot = self.snapshot(now);
                let _ = reply.send(Watch {
                    snapshot,
                    since: self.since_snapshot.clone(),
                    updates: self.updates.subscribe(),
                });
            }
        }
    }

    /// The latest snapshot if nothing changed since, or if it is younger
    /// than `snapshot_max_age`; else a new one. Cloning the matrix (its
    /// nodes; the links are shared) is the one cost a query puts on the
    /// owner, and the age bounds how often it is paid.
    fn snapshot(&mut self, now: Instant) -> Arc<Snapshot> {
        if let Some(s) = self.latest_snapshot(now) {
            return s;
        }
        let s = Arc::new(Snapshot {
            matrix: Arc::new(self.matrix.clone()),
            inferred: self.inferred.clone(),
            changes: self.changes,
        });
        self.snapshot = Some((s.clone(), now));
        self.since_snapshot.clear();
        s
    }

    /// The latest snapshot, if a query may still be given it at `now`.
    fn latest_snapshot(&self, now: Instant) -> Option<Arc<Snapshot>> {
        let (s, taken) = self.snapshot.as_ref()?;
        (s.changes == self.changes
            || now.saturating_duration_since(*taken) < self.config.snapshot_max_age)
            .then(|| s.clone())
    }

    /// Let go of the latest snapshot once no query may be given it: it
    /// keeps every row of links changed since it was taken (within one
    /// report interval, nearly all of them), so holding on to it would
    /// double the links' memory. Queries still reading it keep it while they do.
    fn release_old_snapshot(&mut self, now: Instant) {
        if self.latest_snapshot(now).is_none() {
            self.snapshot = None;
            self.since_snapshot.clear();
        }
    }

    /// Forget nodes that left: away for `forget_after` and no longer
    /// Nodes of the cluster (see `Matrix::forgettable`).
    fn forget_departed(&mut self, now: Instant) {
        let expired = self
            .matrix
            .expire_links(now, self.config.plan.link_expiry());
        if expired > 0 {
            self.changes += 1;
            debug!(links = expired, "dropped links no plan has refreshed");
        }
        let gone = self
            .matrix
            .forgettable(now, self.config.forget_after, self.listed.as_ref());
        if gone.is_empty() {
            return;
        }
        for node in &gone {
            self.matrix.forget(node);
            self.recomputer.forget(node);
        }
        self.changes += 1;
        info!(nodes = ?gone, "forgot nodes that left the cluster");
    }

    /// Remember a stored update for watchers that start from the latest
    /// snapshot; too many, and the snapshot is dropped instead.
    fn stored_since_snapshot(&mut self, state: &LinkState) {
        if self.snapshot.is_none() {
            return;
        }
        if self.since_snapshot.len() < MAX_SINCE_SNAPSHOT {
            self.since_snapshot.push(state.clone());
        } else {
            self.snapshot = None;
            self.since_snapshot.clear();
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

    /// Start a recomputation of the matrix as of `now` on a blocking
    /// thread; `reply` is answered once it is applied.
    fn recompute(&mut self, now: Instant, reply: Option<oneshot::Sender<()>>) {
        if self.recomputer.running() {
            self.recomputer.queue(reply);
            return;
        }
        if self.matrix.node_count() == 0 {
            self.recomputer.nothing_to_do(reply);
            return;
        }
        // A clone shares the links (see `Matrix`): the owner pays for the
        // nodes only, the reading happens on the blocking thread.
        self.recomputer.start(
            self.matrix.clone(),
            now,
            netaware_common::now_unix_us(),
            reply,
        );
    }

    /// A recomputation came back: publish it, and start the next if one
    /// was asked for meanwhile.
    fn recomputed(&mut self, finished: Finished, now: Instant) {
        let Finished { result, read, took } = finished;
        let (inference, out) = match result {
            Some((i, out)) => (Some(i), Some(out)),
            None => (None, None),
        };
        let (replies, again) = self.recomputer.finished(inference);
        if let Some(out) = out {
            self.publish_recomputation(out, read, took);
        } else {
            error!(
                "a recomputation panicked (a bug: please report it with the log): its result is lost, the next one starts over from the groups last published"
            );
        }
        for r in replies {
            let _ = r.send(());
        }
        if again {
            self.recompute(now, None);
        }
    }

    /// Make a recomputation's result what queries, plans and the
    /// publisher see.
    fn publish_recomputation(
        &mut self,
        out: Inferred,
        read: std::time::Duration,
        took: std::time::Duration,
    ) {
        info!(
            nodes = out.facts.len(),
            moved = out.moved.len(),
            pairs = out.links.pairs(),
            thresholds_us = ?out.thresholds,
            read_ms = ms(read),
            took_ms = ms(took),
            "groups and quality recomputed"
        );
        if !out.moved.is_empty() {
            // Plans follow the groups (a full mesh does not change).
            self.replan_due = true;
        }
        // The measured l1 groups are what concurrent tests cover.
        self.bandwidth.set_rings(
            out.groups
                .iter()
                .filter(|g| g.level == 1)
                .map(|g| g.members.iter().cloned()),
        );
        let out = Arc::new(out);
        self.inferred = Some(out.clone());
        // Queries see the result at once: the latest snapshot is replaced
        // by one with the same matrix (shared, not copied) and this result.
        if let Some((s, taken)) = &self.snapshot {
            let s = Arc::new(Snapshot {
                matrix: s.matrix.clone(),
                inferred: Some(out.clone()),
                changes: s.changes,
            });
            self.snapshot = Some((s, *taken));
        }
        // Nobody subscribed (no publisher) is fine.
        self.inferred_tx.send_replace(Some(out));
    }

    fn reports(&mut self, session: SessionId, batch: ReportBatch, now: Instant) {
        let Some(s) = self.sessions.get(&session) else {
            return;
        };
        let (node, instance) = (s.node.clone(), s.instance);
        let mut stored = 0usize;
        let wall = netaware_common::now_unix_us();
        // A session of an agent that has since restarted (a newer Hello
        // from the node): what it still sends is old, and not stored. The
        // batch is acknowledged all the same, so nothing is resent.
        if self.matrix.hello(&node).map(|h| h.instance_id) != Some(instance) {
            for _ in &batch.windows {
                self.metrics.refused("window");
            }
            let r = validate::Refusal::stale_instance(instance);
            self.refusals.warn(&node, "window", &r);
            self.push(
                session,
                AggregatorMessage {
                    msg: Some(AggMsg::Ack(ReportAck {
                        batch_seq: batch.batch_seq,
                    })),
                },
            );
            return;
        }
        self.matrix.set_dropped(&node, batch.dropped_windows_total);
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
            if let Some(state) = self.matrix.apply_from(&node, instance, w, disturbed, now) {
                self.metrics.windows.inc();
                if disturbed {
                    self.metrics.windows_disturbed.inc();
                }
                stored += 1;
                self.stored_since_snapshot(&state);
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
            // Also when called outside a command (an expired token).
            self.changes += 1;
            info!(node = %s.node, session, "agent disconnected");
            self.metrics
                .agents_connected
                .set(i64::try_from(self.sessions.len()).unwrap_or(i64::MAX));
            self.matrix.disconnect(&s.node, Instant::now());
            self.peers_changed();
        }
    }

    /// Make way for a new session of `node`: an authenticated one closes
    /// the node's older sessions (a node has one agent; the older stream is
    /// a dead connection or an impostor that held a stolen token); an
    /// unauthenticated one may not join a node that has an authenticated
    /// session.
    fn displace(&mut self, node: &str, trust: Trust) -> Result<(), Status> {
        let older: Vec<(SessionId, Trust)> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.node == node)
            .map(|(id, s)| (*id, s.trust))
            .collect();
        match trust {
            Trust::Unauthenticated => {
                if older.iter().any(|(_, t)| *t != Trust::Unauthenticated) {
                    return Err(Status::permission_denied(format!(
                        "node '{node}' has an authenticated session; an unauthenticated one may not replace it"
                    )));
                }
            }
            Trust::Until(_) => {
                for (id, _) in older {
                    if let Some(s) = self.sessions.remove(&id) {
                        // The node stays connected: the new session counts next.
                        self.matrix.disconnect(node, Instant::now());
                        info!(%node, session = id, "agent session replaced by a newer authenticated one");
                        let _ = s.tx.try_send(Err(Status::aborted(format!(
                            "replaced by a newer authenticated session of node '{node}'"
                        ))));
                    }
                }
            }
        }
        Ok(())
    }

    /// Close the sessions whose token has expired; their agents reconnect
    /// with the token the kubelet has rotated in meanwhile.
    fn expire_sessions(&mut self, now: Instant) {
        let expired: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| matches!(s.trust, Trust::Until(t) if now >= t))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(s) = self.sessions.get(&id) {
                let _ = s.tx.try_send(Err(Status::unauthenticated(
                    "the session's token has expired; reconnect with the current one",
                )));
            }
            self.close(id);
        }
    }
}

mod bandwidth;
mod plans;
mod recompute;
mod snapshot;

#[cfg(test)]
mod tests;
