//! The link-state matrix and the full-mesh probe plan, as plain data with
//! pure methods: every time-dependent method takes `now`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netaware_proto::ProbeMethod;
use netaware_proto::v1::{
    BandwidthState, ConcurrentTest, GetMatrixResponse, Hello, LinkState, LinkWindow, NodeStatus,
    PeerTarget, ProbePlan, Smoothed,
};

/// A node's interned id: links are keyed by two of these, so looking one
/// up by name costs two hash lookups and no allocation (review S10: the
/// `(String, String)` keys allocated on every lookup).
type Id = u32;

/// One source's links, by (destination, method).
type Row = BTreeMap<(Id, i32), Link>;

/// Plan timing, copied into every plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanTiming {
    pub probe_interval: Duration,
    pub report_interval: Duration,
    pub loss_timeout: Duration,
}

impl Default for PlanTiming {
    /// 5 probes per second per peer and method, 10 s windows, and a probe
    /// unanswered for 2 s is lost (far above any RTT on Earth, so loss is
    /// not confused with delay).
    fn default() -> Self {
        Self {
            probe_interval: Duration::from_millis(200),
            report_interval: Duration::from_secs(10),
            loss_timeout: Duration::from_secs(2),
        }
    }
}

/// Weight of the newest window in the smoothed figures.
pub const DEFAULT_SMOOTHING: f64 = 0.3;
/// Probes the placement loss figure (`Smoothed::placement_loss_ppm`)
/// averages over: a window weighs its probes' share of these. At 4 % loss
/// the smoothed figure (about 110 probes at the default timing) reads
/// ±1.8 %, this one about ±0.45 %; it follows a change in about 100 s of
/// probing at 10 probes per second instead of a few seconds.
pub const PLACEMENT_LOSS_PROBES: f64 = 1_000.0;
/// A link with no new window for this long is stale: three missed windows
/// of the default timing.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
struct Link {
    latest: LinkWindow,
    smoothed: Smoothed,
    windows_total: u64,
    disturbed: bool,
    disturbed_windows_total: u64,
    /// Aggregator-local receive time of the latest window: staleness is
    /// judged on our clock, so a skewed agent clock cannot hide staleness.
    received_at: Instant,
    /// `Hello.instance_id` of the agent that sent the latest window.
    instance: u64,
}

impl Link {
    /// The link has figures: an undisturbed window that sent probes
    /// (`Smoothed.loss_probes` counts their probes). A first window taken
    /// during our own bandwidth test would seed them with the test's
    /// queueing.
    fn seeded(&self) -> bool {
        self.smoothed.loss_probes > 0
    }
}

#[derive(Debug, Clone)]
struct Node {
    hello: Hello,
    /// Open sessions for this node (normally one; two briefly while a
    /// restarted agent's old stream has not yet been noticed as dead).
    sessions: u32,
    dropped_windows_total: u64,
    /// When its last session closed (`None` while connected).
    disconnected_at: Option<Instant>,
}

/// All measured links and all known nodes. Cloned into the snapshots that
/// queries read, so no query waits for (or holds up) the owner.
///
/// A clone costs the nodes, not the links: each source's links are a row
/// shared between the matrix and its clones until one of them changes it
/// (copy on write, `Arc::make_mut`). At 5,000 nodes a deep copy was
/// ~600 MB and taken up to four times a second under queries (review
/// E3f); an agent's batch rewrites its whole row anyway, so sharing per
/// row loses little to sharing per link. (The persistent-map crates, im
/// and imbl, are MPL-2.0, outside `deny.toml`'s licences.)
#[derive(Debug, Clone)]
pub struct Matrix {
    /// Ids of the names known (nodes, and peers that links point to).
    ids: HashMap<String, Id>,
    /// Name of each id still in use.
    names: HashMap<Id, String>,
    next_id: Id,
    /// Rows by source; a row is never empty.
    links: BTreeMap<Id, Arc<Row>>,
    /// Latest bandwidth test per (sender, receiver).
    bandwidth: BTreeMap<(Id, Id), BandwidthState>,
    /// Latest concurrent test per group, keyed by its sorted members. A
    /// node is in one group at a time, so a new test replaces every older
    /// one it shares a member with: at most one per node.
    concurrent: BTreeMap<Vec<String>, ConcurrentTest>,
    nodes: BTreeMap<String, Node>,
    /// Weight of the newest window in the smoothed figures (0 < alpha <= 1).
    alpha: f64,
    stale_after: Duration,
}

/// The median of `v` (the mean of the middle two for an even count); 0
/// for none.
fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// Fold an undisturbed window into a link's smoothed figures. Loss starts
/// from the first window that sent probes; the RTT figures only from the
/// first window that got an answer, so a link that never answered keeps
/// `rtt_known = false` (unreachable) instead of reading as 0 µs.
///
/// A window's weight in the loss figure is `alpha` or its share of all the
/// probes folded so far, whichever is larger: an agent's first window is
/// often a few probes long (it started mid-window), and a loss read from
/// ten probes is 0 or 10 %; with `alpha` alone it would still weigh 0.7
/// after the next full window and hold a loss label a step too high for a
/// minute (the ladder's hysteresis keeps it). The RTT figures need no such
/// care: a median of ten probes is already near the link's.
fn absorb(s: &mut Smoothed, w: &LinkWindow, alpha: f64) {
    let ewma = |old: &mut f64, new: f64| *old += alpha * (new - *old);
    if let Some(l) = loss_ppm(w) {
        s.loss_probes = s.loss_probes.saturating_add(w.sent);
        let sent = w.sent as f64;
        let share = sent / s.loss_probes as f64;
        s.loss_ppm += share.max(alpha) * (l - s.loss_ppm);
        // Every probe so far until the horizon is full, then an EWMA whose
        // weight is the window's share of the horizon: as precise as the
        // probes allow, whatever the window length.
        let long = share.max(sent / PLACEMENT_LOSS_PROBES).min(1.0);
        s.placement_loss_ppm += long * (l - s.placement_loss_ppm);
    }
    if w.received > 0 {
        let (p50, p99, jitter) = (us(w.rtt_p50_ns), us(w.rtt_p99_ns), us(w.jitter_ns));
        if s.rtt_known {
            ewma(&mut s.rtt_p50_us, p50);
            ewma(&mut s.rtt_p99_us, p99);
            ewma(&mut s.jitter_us, jitter);
        } else {
            (s.rtt_p50_us, s.rtt_p99_us, s.jitter_us) = (p50, p99, jitter);
            s.rtt_known = true;
        }
    }
}

/// Loss of a window in parts per million; `None` when nothing was sent.
pub fn loss_ppm(w: &LinkWindow) -> Option<f64> {
    (w.sent > 0).then(|| w.sent.saturating_sub(w.received) as f64 * 1e6 / w.sent as f64)
}

/// A link by names: (src, dst, method), where a page continues after.
pub type LinkKeyName = (String, String, i32);

/// Which links a page of the matrix holds.
#[derive(Debug, Clone, Copy)]
pub enum Filter<'a> {
    All,
    /// Links from or to one of these nodes.
    Touching(&'a BTreeSet<String>),
    /// Links between two of these nodes (a group's own links).
    Among(&'a BTreeSet<String>),
}

/// A request for one page of the matrix ([`Matrix::page`]).
#[derive(Debug, Clone)]
pub struct Page<'a> {
    /// Only this method; `Unspecified`: all.
    pub method: ProbeMethod,
    pub histograms: bool,
    pub filter: Filter<'a>,
    /// Continue after this link (`None`: the first page).
    pub after: Option<LinkKeyName>,
    /// Most links in the page.
    pub limit: usize,
}

impl Matrix {
    pub fn new(alpha: f64, stale_after: Duration) -> Self {
        Self {
            ids: HashMap::new(),
            names: HashMap::new(),
            next_id: 0,
            links: BTreeMap::new(),
            bandwidth: BTreeMap::new(),
            concurrent: BTreeMap::new(),
            nodes: BTreeMap::new(),
            alpha: alpha.clamp(f64::MIN_POSITIVE, 1.0),
            stale_after,
        }
    }

    pub fn stale_after(&self) -> Duration {
        self.stale_after
    }

    fn id(&self, name: &str) -> Option<Id> {
        self.ids.get(name).copied()
    }

    /// The id of `name`, given one if it has none.
    fn intern(&mut self, name: &str) -> Id {
        if let Some(id) = self.id(name) {
            return id;
        }
        let id = self.next_id;
        // Ids are never reused: 4 G names would take centuries of churn.
        self.next_id = self.next_id.wrapping_add(1);
        self.ids.insert(name.to_string(), id);
        self.names.insert(id, name.to_string());
        id
    }

    fn name(&self, id: Id) -> &str {
        self.names.get(&id).map_or("", String::as_str)
    }

    /// A session for `hello.node_name` opened.
    pub fn connect(&mut self, hello: Hello) {
        let entry = self.nodes.entry(hello.node_name.clone()).or_insert(Node {
            hello: hello.clone(),
            sessions: 0,
            dropped_windows_total: 0,
            disconnected_at: None,
        });
        entry.hello = hello;
        entry.sessions += 1;
        entry.disconnected_at = None;
    }

    /// A session for `node` closed at `now`. The node and its links are
    /// kept (see [`forgettable`](Self::forgettable)).
    pub fn disconnect(&mut self, node: &str, now: Instant) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.sessions = n.sessions.saturating_sub(1);
            if n.sessions == 0 {
                n.disconnected_at = Some(now);
            }
        }
    }

    /// Nodes to forget at `now`: disconnected for at least `after`, and,
    /// when the cluster's Node list is known (`listed`), no longer in it. A
    /// Node of the cluster whose agent is away (a reboot, a crash loop) is
    /// kept with its figures; one the autoscaler deleted leaves.
    pub fn forgettable(
        &self,
        now: Instant,
        after: Duration,
        listed: Option<&BTreeSet<String>>,
    ) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(name, n)| {
                n.sessions == 0
                    && n.disconnected_at
                        .is_some_and(|t| now.saturating_duration_since(t) >= after)
                    && listed.is_none_or(|l| !l.contains(name.as_str()))
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Remove a node: its entry, every link from or to it, and its
    /// bandwidth figures.
    pub fn forget(&mut self, node: &str) {
        self.nodes.remove(node);
        // Concurrent tests are kept by name: a member may have no id.
        self.concurrent
            .retain(|members, _| !members.iter().any(|m| m == node));
        let Some(id) = self.ids.remove(node) else {
            return;
        };
        self.names.remove(&id);
        self.links.remove(&id);
        // Only rows with a link to the node are unshared and rewritten.
        self.links.retain(|_, row| {
            if row.range((id, i32::MIN)..=(id, i32::MAX)).next().is_some() {
                Arc::make_mut(row).retain(|(dst, _), _| *dst != id);
            }
            !row.is_empty()
        });
        self.bandwidth.retain(|(a, b), _| *a != id && *b != id);
    }

    /// Nodes at either end of a link with figures: what the aggregator has
    /// measured since it started.
    pub fn measured_nodes(&self) -> BTreeSet<&str> {
        let mut out = BTreeSet::new();
        for ((src, dst, _), link) in self.all_links() {
            if link.seeded() {
                out.insert(self.name(src));
                out.insert(self.name(dst));
            }
        }
        out
    }

    /// Every link with figures, without copying: (source, destination,
    /// method, smoothed figures). For passes over the whole matrix, where a
    /// lookup per pair would cost more than the pass.
    pub fn figures(&self) -> impl Iterator<Item = (&str, &str, i32, &Smoothed)> + '_ {
        self.all_links()
            .filter(|(_, link)| link.seeded())
            .map(|((a, b, m), link)| (self.name(a), self.name(b), m, &link.smoothed))
    }

    /// Every link in (source, destination, method) id order.
    fn all_links(&self) -> impl Iterator<Item = ((Id, Id, i32), &Link)> + '_ {
        self.links.iter().flat_map(|(src, row)| {
            row.iter()
                .map(move |((dst, m), link)| ((*src, *dst, *m), link))
        })
    }

    /// Whether the node's own agent delivered a window within
    /// `stale_after` of `now` (towards any peer, by any method).
    pub fn reports_fresh(&self, node: &str, now: Instant) -> bool {
        let Some(id) = self.id(node) else {
            return false;
        };
        self.links
            .get(&id)
            .is_some_and(|row| row.values().any(|link| !self.is_stale(link, now)))
    }

    /// Drop links with no window for `after` (a peer that left the plan
    /// long ago); returns how many. Their figures would otherwise be kept
    /// for ever, and with rotating plans that is a link per pair ever
    /// sampled.
    pub fn expire_links(&mut self, now: Instant, after: Duration) -> usize {
        let expired = |link: &Link| now.saturating_duration_since(link.received_at) >= after;
        let mut dropped = 0;
        // Only rows with an expired link are unshared and rewritten.
        self.links.retain(|_, row| {
            let n = row.values().filter(|l| expired(l)).count();
            if n > 0 {
                Arc::make_mut(row).retain(|_, l| !expired(l));
                dropped += n;
            }
            !row.is_empty()
        });
        dropped
    }

    /// The node's latest Hello.
    pub fn hello(&self, node: &str) -> Option<&Hello> {
        self.nodes.get(node).map(|n| &n.hello)
    }

    pub fn is_connected(&self, node: &str) -> bool {
        self.nodes.get(node).is_some_and(|n| n.sessions > 0)
    }

    /// Record the dropped-window counter an agent reports.
    pub fn set_dropped(&mut self, node: &str, dropped_total: u64) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.dropped_windows_total = dropped_total;
        }
    }

    /// Store a window from `src`. Returns the link's new state, or `None`
    /// when the window is not newer than the latest one (a resend after a
    /// reconnect, which must not be counted twice). A `disturbed` window
    /// (it overlapped our own bandwidth test) becomes the latest but leaves
    /// the smoothed figures alone.
    pub fn apply(
        &mut self,
        src: &str,
        w: LinkWindow,
        disturbed: bool,
        now: Instant,
    ) -> Option<LinkState> {
        let instance = self.nodes.get(src).map_or(0, |n| n.hello.instance_id);
        self.apply_from(src, instance, w, disturbed, now)
    }

    /// Store a window from the agent instance `instance` of `src`. Windows
    /// are ordered per instance: within one, a window that does not start
    /// after the latest is a resend and ignored. A restarted agent (the
    /// node's newest Hello carries its new instance) starts its own order,
    /// so a clock that stepped back does not hide its windows; windows of
    /// any other instance (an old session not closed yet) are ignored.
    pub fn apply_from(
        &mut self,
        src: &str,
        instance: u64,
        w: LinkWindow,
        disturbed: bool,
        now: Instant,
    ) -> Option<LinkState> {
        let current = self.nodes.get(src).map(|n| n.hello.instance_id);
        if current.is_some_and(|c| c != instance) {
            return None;
        }
        let (src_id, key) = (self.intern(src), (self.intern(&w.peer), w.method));
        let alpha = self.alpha;
        if let Some(link) = self.links.get(&src_id).and_then(|row| row.get(&key))
            && link.instance == instance
            && w.window_start_unix_us <= link.latest.window_start_unix_us
        {
            return None;
        }
        let row = Arc::make_mut(self.links.entry(src_id).or_default());
        let link = row.entry(key).or_insert_with(|| Link {
            smoothed: Smoothed::default(),
            latest: LinkWindow::default(),
            windows_total: 0,
            disturbed: false,
            disturbed_windows_total: 0,
            received_at: now,
            instance,
        });
        link.instance = instance;
        if disturbed {
            link.disturbed_windows_total += 1;
        } else {
            absorb(&mut link.smoothed, &w, alpha);
        }
        link.disturbed = disturbed;
        link.latest = w;
        link.windows_total += 1;
        link.received_at = now;
        Some(Self::state_of(src, link, false))
    }

    /// Store a successful bandwidth test from `sender` to `receiver`.
    pub fn apply_bandwidth(
        &mut self,
        sender: &str,
        receiver: &str,
        mbps: f64,
        stream_mbps: Vec<f64>,
        started_unix_us: u64,
    ) {
        let key = (self.intern(sender), self.intern(receiver));
        let tests_total = self.bandwidth.get(&key).map_or(0, |b| b.tests_total) + 1;
        let state = BandwidthState {
            sender: sender.to_string(),
            receiver: receiver.to_string(),
            mbps,
            stream_mbps,
            started_unix_us,
            tests_total,
        };
        self.bandwidth.insert(key, state);
    }

    /// Store a successful concurrent test: `members` in ring order, each
    /// flow's Mbit/s (member i to member i + 1). It replaces every stored
    /// test that shares a member with it.
    pub fn apply_concurrent(
        &mut self,
        members: Vec<String>,
        flow_mbps: Vec<f64>,
        started_unix_us: u64,
    ) {
        let mut key = members.clone();
        key.sort();
        self.concurrent
            .retain(|k, _| !k.iter().any(|m| key.binary_search(m).is_ok()));
        let share_mbps = median(&flow_mbps);
        self.concurrent.insert(
            key,
            ConcurrentTest {
                members,
                flow_mbps,
                share_mbps,
                started_unix_us,
            },
        );
    }

    /// The latest concurrent test of every group tested.
    pub fn concurrent(&self) -> impl Iterator<Item = &ConcurrentTest> + '_ {
        self.concurrent.values()
    }

    /// Every directed pair's latest bandwidth test: (sender, receiver,
    /// Mbit/s).
    pub fn bandwidths(&self) -> impl Iterator<Item = (&str, &str, f64)> + '_ {
        self.bandwidth
            .iter()
            .map(|((s, r), b)| (self.name(*s), self.name(*r), b.mbps))
    }

    /// Bandwidth of a pair: the lower of the two directions' latest tests,
    /// or the one direction tested.
    pub fn bandwidth(&self, a: &str, b: &str) -> Option<f64> {
        let one = |s: &str, r: &str| {
            self.bandwidth
                .get(&(self.id(s)?, self.id(r)?))
                .map(|b| b.mbps)
        };
        match (one(a, b), one(b, a)) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        }
    }

    fn state_of(src: &str, link: &Link, stale: bool) -> LinkState {
        LinkState {
            src: src.to_string(),
            dst: link.latest.peer.clone(),
            method: link.latest.method,
            latest: Some(link.latest.clone()),
            smoothed: link.seeded().then_some(link.smoothed),
            stale,
            windows_total: link.windows_total,
            disturbed: link.disturbed,
            disturbed_windows_total: link.disturbed_windows_total,
        }
    }

    fn is_stale(&self, link: &Link, now: Instant) -> bool {
        now.saturating_duration_since(link.received_at) > self.stale_after
    }

    /// How many nodes are known (connected now or before).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Names of every node known (connected now or before), sorted.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    /// Smoothed figures of one directed link and whether it is stale at `now`.
    pub fn smoothed(
        &self,
        src: &str,
        dst: &str,
        method: ProbeMethod,
        now: Instant,
    ) -> Option<(Smoothed, bool)> {
        let link = self
            .links
            .get(&self.id(src)?)?
            .get(&(self.id(dst)?, method as i32))?;
        link.seeded()
            .then(|| (link.smoothed, self.is_stale(link, now)))
    }

    /// Every link (optionally of one method) as of `now`.
    pub fn links(&self, method: ProbeMethod, now: Instant) -> Vec<LinkState> {
        self.links_iter(method, now).collect()
    }

    /// [`links`](Self::links) one at a time, for streaming without a copy
    /// of them all.
    pub fn links_iter(
        &self,
        method: ProbeMethod,
        now: Instant,
    ) -> impl Iterator<Item = LinkState> + '_ {
        self.all_links()
            .filter(move |((_, _, m), _)| method == ProbeMethod::Unspecified || *m == method as i32)
            .map(move |((src, _, _), link)| {
                Self::state_of(self.name(src), link, self.is_stale(link, now))
            })
    }

    fn status_of(name: &str, n: &Node) -> NodeStatus {
        NodeStatus {
            node_name: name.to_string(),
            connected: n.sessions > 0,
            software_version: n.hello.software_version.clone(),
            probe_addresses: n.hello.probe_addresses.clone(),
            capabilities: n.hello.capabilities.clone(),
            dropped_windows_total: n.dropped_windows_total,
        }
    }

    /// Every known node's status, by name.
    pub fn node_statuses(&self) -> impl Iterator<Item = (String, NodeStatus)> + '_ {
        self.nodes
            .iter()
            .map(|(name, n)| (name.clone(), Self::status_of(name, n)))
    }

    /// One node's status, if the node is known.
    pub fn node_status(&self, name: &str) -> Option<NodeStatus> {
        self.nodes.get(name).map(|n| Self::status_of(name, n))
    }

    /// The query answer for GetMatrix. Histograms (about 100 bytes a link,
    /// half the answer) only when asked for.
    pub fn snapshot(
        &self,
        method: ProbeMethod,
        histograms: bool,
        now: Instant,
        now_unix_us: u64,
    ) -> GetMatrixResponse {
        let all = Page {
            method,
            histograms,
            filter: Filter::All,
            after: None,
            limit: usize::MAX,
        };
        self.page(&all, now, now_unix_us).0
    }

    /// One page of the matrix: the links `q` selects, sorted by (src, dst,
    /// method) as in [`snapshot`](Self::snapshot), starting after `q.after`,
    /// at most `q.limit` of them; with the key to continue after (`None`:
    /// this was the last page). Node statuses and bandwidth tests (of the
    /// selected nodes) come with the first page only. Costs the links of
    /// the sources read, not a copy of the whole matrix.
    pub fn page(
        &self,
        q: &Page<'_>,
        now: Instant,
        now_unix_us: u64,
    ) -> (GetMatrixResponse, Option<LinkKeyName>) {
        let wanted = |name: &str| match q.filter {
            Filter::All => true,
            Filter::Touching(set) | Filter::Among(set) => set.contains(name),
        };
        let pair_wanted = |src: &str, dst: &str| match q.filter {
            Filter::All => true,
            Filter::Touching(set) => set.contains(src) || set.contains(dst),
            Filter::Among(set) => set.contains(src) && set.contains(dst),
        };
        let method_ok = |m: i32| q.method == ProbeMethod::Unspecified || m == q.method as i32;
        let start = q.after.as_ref().map_or("", |(src, _, _)| src.as_str());
        let mut links: Vec<LinkState> = Vec::new();
        let mut next = None;
        // Every name with links, in order (a link may outlive its node's
        // entry, as in `links`).
        let mut sources: Vec<(&str, Id)> = self
            .ids
            .iter()
            .map(|(name, id)| (name.as_str(), *id))
            .filter(|(name, _)| *name >= start)
            .collect();
        sources.sort_unstable();
        'sources: for (src, id) in sources {
            // A source outside the set can still have links into it.
            if matches!(q.filter, Filter::Among(_)) && !wanted(src) {
                continue;
            }
            let mut row: Vec<(&str, i32, &Link)> = self
                .links
                .get(&id)
                .into_iter()
                .flat_map(|row| row.iter())
                .filter(|((_, m), _)| method_ok(*m))
                .map(|((d, m), link)| (self.name(*d), *m, link))
                .filter(|(dst, _, _)| pair_wanted(src, dst))
                .collect();
            row.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
            for (dst, m, link) in row {
                if let Some((s, d, mm)) = &q.after
                    && (src, dst, m) <= (s.as_str(), d.as_str(), *mm)
                {
                    continue;
                }
                if links.len() >= q.limit {
                    next = links
                        .last()
                        .map(|l: &LinkState| (l.src.clone(), l.dst.clone(), l.method));
                    break 'sources;
                }
                let mut state = Self::state_of(src, link, self.is_stale(link, now));
                if !q.histograms
                    && let Some(w) = state.latest.as_mut()
                {
                    w.rtt_histogram.clear();
                }
                links.push(state);
            }
        }
        let first = q.after.is_none();
        let nodes = if first {
            self.nodes
                .iter()
                .filter(|(name, _)| wanted(name))
                .map(|(name, n)| Self::status_of(name, n))
                .collect()
        } else {
            Vec::new()
        };
        let bandwidth = if first {
            let mut b: Vec<BandwidthState> = self
                .bandwidth
                .values()
                .filter(|b| pair_wanted(&b.sender, &b.receiver))
                .cloned()
                .collect();
            b.sort_by(|x, y| (&x.sender, &x.receiver).cmp(&(&y.sender, &y.receiver)));
            b
        } else {
            Vec::new()
        };
        let concurrent = if first {
            self.concurrent
                .values()
                .filter(|c| match q.filter {
                    Filter::All => true,
                    Filter::Touching(set) => c.members.iter().any(|m| set.contains(m.as_str())),
                    Filter::Among(set) => c.members.iter().all(|m| set.contains(m.as_str())),
                })
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        (
            GetMatrixResponse {
                nodes,
                links,
                generated_unix_us: now_unix_us,
                stale_after_ms: u64::try_from(self.stale_after.as_millis()).unwrap_or(u64::MAX),
                bandwidth,
                next_page_token: String::new(),
                concurrent,
            },
            next,
        )
    }

    /// Full-mesh plan for `node`: every other connected node, with the
    /// methods both ends support. `None` if the node is not connected.
    pub fn plan_for(&self, node: &str, version: u64, timing: PlanTiming) -> Option<ProbePlan> {
        let others: Vec<&str> = self.connected().filter(|n| *n != node).collect();
        self.plan_with(node, &others, version, timing)
    }

    /// Names of the connected nodes, sorted.
    pub fn connected(&self) -> impl Iterator<Item = &str> + '_ {
        self.nodes
            .iter()
            .filter(|(_, n)| n.sessions > 0)
            .map(|(name, _)| name.as_str())
    }

    /// The plan for `node` towards `targets` (those connected and sharing a
    /// method with it, in the given order). `None` if the node is not
    /// connected.
    pub fn plan_with(
        &self,
        node: &str,
        targets: &[&str],
        version: u64,
        timing: PlanTiming,
    ) -> Option<ProbePlan> {
        let me = self.nodes.get(node).filter(|n| n.sessions > 0)?;
        let peers = targets
            .iter()
            .filter(|name| **name != node)
            .filter_map(|name| self.nodes.get(*name).map(|n| (*name, n)))
            .filter(|(_, n)| n.sessions > 0)
            .filter_map(|(name, n)| {
                let methods: Vec<i32> = [ProbeMethod::StampUdp, ProbeMethod::IcmpEcho]
                    .into_iter()
                    .map(|m| m as i32)
                    .filter(|m| {
                        me.hello.capabilities.contains(m) && n.hello.capabilities.contains(m)
                    })
                    .collect();
                let address = n.hello.probe_addresses.first()?.clone();
                (!methods.is_empty()).then(|| PeerTarget {
                    node_name: name.to_string(),
                    address,
                    stamp_port: n.hello.stamp_port,
                    methods,
                })
            })
            .collect();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Some(ProbePlan {
            version,
            peers,
            probe_interval_us: u64::try_from(timing.probe_interval.as_micros()).unwrap_or(u64::MAX),
            report_interval_ms: ms(timing.report_interval),
            loss_timeout_ms: ms(timing.loss_timeout),
        })
    }
}

#[cfg(test)]
mod tests;
