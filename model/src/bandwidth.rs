//! Scheduling bandwidth tests: which pairs, when, and how many bytes.
//!
//! Rules (docs/bandwidth.md):
//! * A node takes part in at most one test at a time, from the moment the
//!   test is scheduled until the sender reports what it sent (or the test's
//!   deadline passes).
//! * Pairs never tested come first, then the pairs tested longest ago;
//!   a pair is tested again once its latest test is older than
//!   `retest_after`. Each test of a pair reverses the direction of the last.
//! * Every node has a byte budget per sliding hour. A test is scheduled only
//!   when both nodes can afford its full byte cap; that cap is reserved on
//!   both at once, and replaced by the bytes the sender reports having sent
//!   (the sender never sends more than the cap). A test whose sender never
//!   reports keeps its full reservation, so the budget is never exceeded.
//! * At most `max_concurrent` tests run at once in the whole cluster, so
//!   tests do not saturate shared links together.
//! * Concurrent tests: once every pair of an l1 group (3 to
//!   [`MAX_RING_MEMBERS`] members) has been tested, all its members send to
//!   the next member at once (a ring, like a ring all-reduce), so the flows
//!   meet on whatever they share. Such a test runs alone in the cluster
//!   (others would share the bottleneck it measures): while one is due, no
//!   new pairwise test starts, and it starts once the running ones end. A
//!   group is due while one of its members has not been in a concurrent
//!   test for `retest_after` (a minute after a failed one): kept per node,
//!   so groups that change under load (a loaded link reads slower for a
//!   while) do not start test after test.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// The budget window.
pub const BUDGET_WINDOW: Duration = Duration::from_secs(3600);
/// Time for connecting (the receiver gives up after 5 s, which covers two
/// lost SYNs) and the reports, on top of the test itself.
pub const SETUP_SLACK: Duration = Duration::from_secs(7);
/// A pair whose latest test failed is tried again after this long (or
/// after `retest_after`, when that is shorter).
pub const RETRY_FAILED_AFTER: Duration = Duration::from_secs(60);

/// Settings of the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BandwidthConfig {
    /// Schedule tests at all.
    pub enabled: bool,
    /// Parallel TCP streams per test.
    pub streams: u32,
    /// Leading part left out of the result (slow start).
    pub omit: Duration,
    /// Measured part.
    pub duration: Duration,
    /// Payload bytes one test may send at most.
    pub max_bytes_per_test: u64,
    /// Payload bytes a node may send or receive in tests per sliding hour.
    pub budget_bytes_per_hour: u64,
    /// A pair is tested again once its latest test is this old.
    pub retest_after: Duration,
    /// Tests running at once, cluster-wide.
    pub max_concurrent: usize,
}

impl Default for BandwidthConfig {
    /// The one definition: the aggregator's flags show these as their defaults.
    fn default() -> Self {
        Self {
            enabled: true,
            streams: 4,
            omit: Duration::from_secs(1),
            duration: Duration::from_secs(3),
            max_bytes_per_test: 1 << 30,
            budget_bytes_per_hour: 16 << 30,
            retest_after: Duration::from_secs(30 * 60),
            max_concurrent: 4,
        }
    }
}

impl BandwidthConfig {
    /// How long the sender keeps sending after the first connection.
    pub fn sender_budget(&self) -> Duration {
        self.omit + self.duration + Duration::from_secs(1)
    }

    /// After this long a test counts as over even without reports.
    pub fn deadline_after(&self) -> Duration {
        self.sender_budget() + SETUP_SLACK
    }
}

/// Fewest members of a group tested concurrently: with two, the "ring" is
/// one pair in both directions, which says little about shared links.
pub const MIN_RING_MEMBERS: usize = 3;
/// Most members of one concurrent test: a larger group is tested on its
/// first members by name (a sample of its shared links; each member sends
/// and receives a full test's bytes).
pub const MAX_RING_MEMBERS: usize = 16;

/// A test to start: the aggregator sends a grant to `sender` and a test to
/// `receiver`, both with `token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub token: u64,
    pub sender: String,
    pub receiver: String,
    pub max_bytes: u64,
    /// The concurrent test this flow belongs to (its id), if any.
    pub ring: Option<u64>,
}

#[derive(Debug, Clone)]
struct Running {
    sender: String,
    receiver: String,
    deadline: Instant,
    result_in: bool,
    served_in: bool,
    ring: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Charge {
    at: Instant,
    bytes: u64,
    token: u64,
}

/// The scheduler's state; every method takes `now`.
#[derive(Debug)]
pub struct Scheduler {
    cfg: BandwidthConfig,
    running: BTreeMap<u64, Running>,
    ledger: BTreeMap<String, VecDeque<Charge>>,
    /// Latest attempt per unordered pair (names sorted).
    attempts: BTreeMap<(String, String), Attempt>,
    /// Groups to test concurrently (each sorted, at most
    /// [`MAX_RING_MEMBERS`]), from the latest recomputation.
    rings: Vec<Vec<String>>,
    /// Latest concurrent test each node was in.
    ring_attempts: BTreeMap<String, Attempt>,
    /// Members of the concurrent tests running, by id.
    rings_running: BTreeMap<u64, Vec<String>>,
}

#[derive(Debug, Clone, Copy)]
struct Attempt {
    at: Instant,
    /// The first name of the pair was the sender.
    first_sent: bool,
    /// It ended with an error or without its reports.
    failed: bool,
}

/// A test result the scheduler accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub sender: String,
    pub receiver: String,
    /// The concurrent test the flow belongs to, if any.
    pub ring: Option<u64>,
}

/// The members of `group` a concurrent test covers: sorted, the first
/// [`MAX_RING_MEMBERS`]; `None` for fewer than [`MIN_RING_MEMBERS`].
pub fn ring_members<G: IntoIterator<Item = String>>(group: G) -> Option<Vec<String>> {
    let mut g: Vec<String> = group.into_iter().collect();
    g.sort();
    g.dedup();
    g.truncate(MAX_RING_MEMBERS);
    (g.len() >= MIN_RING_MEMBERS).then_some(g)
}

fn unordered(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

impl Scheduler {
    pub fn new(cfg: BandwidthConfig) -> Self {
        Self {
            cfg,
            running: BTreeMap::new(),
            ledger: BTreeMap::new(),
            attempts: BTreeMap::new(),
            rings: Vec::new(),
            ring_attempts: BTreeMap::new(),
            rings_running: BTreeMap::new(),
        }
    }

    /// The groups to test concurrently: those with at least
    /// [`MIN_RING_MEMBERS`], cut to their first [`MAX_RING_MEMBERS`] by
    /// name.
    pub fn set_rings<I, G>(&mut self, groups: I)
    where
        I: IntoIterator<Item = G>,
        G: IntoIterator<Item = String>,
    {
        self.rings = groups.into_iter().filter_map(ring_members).collect();
        self.rings.sort();
    }

    pub fn config(&self) -> &BandwidthConfig {
        &self.cfg
    }

    /// Bytes charged to `node` within the last hour (reservations included).
    pub fn used(&self, node: &str, now: Instant) -> u64 {
        self.ledger.get(node).map_or(0, |l| {
            l.iter()
                .filter(|c| now.saturating_duration_since(c.at) < BUDGET_WINDOW)
                .map(|c| c.bytes)
                .sum()
        })
    }

    /// Nodes in a running test.
    pub fn busy(&self) -> BTreeSet<&str> {
        self.running
            .values()
            .flat_map(|r| [r.sender.as_str(), r.receiver.as_str()])
            .collect()
    }

    /// Tests running now.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Forget charges older than the window and tests past their deadline.
    pub fn expire(&mut self, now: Instant) -> Vec<u64> {
        for l in self.ledger.values_mut() {
            while l
                .front()
                .is_some_and(|c| now.saturating_duration_since(c.at) >= BUDGET_WINDOW)
            {
                l.pop_front();
            }
        }
        self.ledger.retain(|_, l| !l.is_empty());
        // Older than any wait: the same as never tested.
        let keep = self.cfg.retest_after.max(RETRY_FAILED_AFTER);
        self.ring_attempts
            .retain(|_, x| now.saturating_duration_since(x.at) < keep);
        let late: Vec<u64> = self
            .running
            .iter()
            .filter(|(_, r)| now >= r.deadline)
            .map(|(t, _)| *t)
            .collect();
        for t in &late {
            // Its reservation stays charged: we do not know what was sent.
            if let Some(r) = self.running.remove(t) {
                self.mark_failed(&r);
                self.forget_ring_if_over(r.ring);
            }
        }
        late
    }

    /// How long a pair or group waits after `x` before it is tested again.
    fn wait_after(&self, x: &Attempt) -> Duration {
        if x.failed {
            RETRY_FAILED_AFTER.min(self.cfg.retest_after)
        } else {
            self.cfg.retest_after
        }
    }

    /// The group to test concurrently now, if one is due: all its members
    /// can take part, every pair of it has been tried, each member can
    /// afford sending and receiving a full test, and one of its members
    /// has not been in a concurrent test for long enough. The group whose
    /// least recently tested member waited longest goes first (never
    /// tested before any).
    fn due_ring(&self, nodes: &[String], now: Instant) -> Option<Vec<String>> {
        let need = self.cfg.max_bytes_per_test.saturating_mul(2);
        let present: BTreeSet<&String> = nodes.iter().collect();
        self.rings
            .iter()
            .filter(|g| {
                g.iter().all(|n| {
                    present.contains(n)
                        && self.used(n, now).saturating_add(need) <= self.cfg.budget_bytes_per_hour
                })
            })
            .filter(|g| {
                g.iter().enumerate().all(|(i, a)| {
                    g[i + 1..]
                        .iter()
                        .all(|b| self.attempts.contains_key(&unordered(a, b)))
                })
            })
            .filter_map(|g| {
                let last = |n: &String| self.ring_attempts.get(n);
                let due = g.iter().any(|n| {
                    last(n)
                        .is_none_or(|x| now.saturating_duration_since(x.at) >= self.wait_after(x))
                });
                // None (a member never tested) sorts first.
                let oldest = g.iter().map(|n| last(n).map(|x| x.at)).min().flatten();
                due.then_some((oldest, g))
            })
            .min()
            .map(|(_, g)| g.clone())
    }

    /// Start the concurrent test of `members`: member i sends to member
    /// i + 1, the last to the first, all at once.
    fn start_ring(
        &mut self,
        members: Vec<String>,
        now: Instant,
        token: &mut impl FnMut() -> u64,
    ) -> Vec<Assignment> {
        let mut out = Vec::with_capacity(members.len());
        let mut id = None;
        for (i, sender) in members.iter().enumerate() {
            let receiver = members[(i + 1) % members.len()].clone();
            let t = token();
            let ring = *id.get_or_insert(t);
            out.push(self.start_flow(sender.clone(), receiver, t, Some(ring), now));
        }
        if let Some(ring) = id {
            for n in &members {
                self.ring_attempts.insert(
                    n.clone(),
                    Attempt {
                        at: now,
                        first_sent: true,
                        failed: false,
                    },
                );
            }
            self.rings_running.insert(ring, members);
        }
        out
    }

    /// Forget the members of concurrent test `ring` once none of its flows
    /// is running.
    fn forget_ring_if_over(&mut self, ring: Option<u64>) {
        if let Some(ring) = ring
            && !self.running.values().any(|r| r.ring == Some(ring))
        {
            self.rings_running.remove(&ring);
        }
    }

    /// Pick the tests to start now among `nodes` (the nodes that can take
    /// part: connected, serving bandwidth tests), in coverage order.
    pub fn next(
        &mut self,
        nodes: &[String],
        now: Instant,
        mut token: impl FnMut() -> u64,
    ) -> Vec<Assignment> {
        if !self.cfg.enabled {
            return Vec::new();
        }
        self.expire(now);
        // A concurrent test runs alone: nothing starts beside it, and one
        // that is due waits for the running tests to end.
        if !self.rings_running.is_empty() {
            return Vec::new();
        }
        if let Some(ring) = self.due_ring(nodes, now) {
            if self.running.is_empty() {
                return self.start_ring(ring, now, &mut token);
            }
            return Vec::new();
        }
        let need = self.cfg.max_bytes_per_test;
        let budget = self.cfg.budget_bytes_per_hour;
        let mut busy: BTreeSet<String> = self.busy().into_iter().map(str::to_string).collect();
        let affordable = |s: &Self, n: &str| s.used(n, now).saturating_add(need) <= budget;
        let mut free: Vec<&String> = nodes
            .iter()
            .filter(|n| !busy.contains(n.as_str()) && affordable(self, n))
            .collect();
        free.sort();
        free.dedup();
        // When each node last took part in a test: pairs of nodes that
        // rested longest go first, so tests (which disturb both ends' RTT
        // windows) spread over the nodes instead of queueing on one.
        let mut node_last: BTreeMap<&str, Instant> = BTreeMap::new();
        for ((a, b), at) in &self.attempts {
            for n in [a.as_str(), b.as_str()] {
                let e = node_last.entry(n).or_insert(at.at);
                *e = (*e).max(at.at);
            }
        }
        let rested = |a: &str, b: &str| node_last.get(a).max(node_last.get(b)).copied();
        // Never tested first (None < Some), then tested longest ago; among
        // those, nodes that rested longest; names break ties.
        type Candidate = (Option<Instant>, Option<Instant>, String, String);
        let mut pairs: Vec<Candidate> = Vec::new();
        for (i, a) in free.iter().enumerate() {
            for b in &free[i + 1..] {
                let attempt = self.attempts.get(&unordered(a, b));
                if attempt.is_some_and(|x| now.saturating_duration_since(x.at) < self.wait_after(x))
                {
                    continue;
                }
                let last = attempt.map(|x| x.at);
                pairs.push((last, rested(a, b), a.to_string(), b.to_string()));
            }
        }
        pairs.sort();
        let mut out = Vec::new();
        for (_, _, a, b) in pairs {
            if self.running.len() >= self.cfg.max_concurrent {
                break;
            }
            if busy.contains(&a) || busy.contains(&b) {
                continue;
            }
            let key = unordered(&a, &b);
            // Reverse the direction of the previous test of this pair.
            let first_sends = self.attempts.get(&key).is_none_or(|x| !x.first_sent);
            let (sender, receiver) = if first_sends {
                (a.clone(), b.clone())
            } else {
                (b.clone(), a.clone())
            };
            self.attempts.insert(
                key,
                Attempt {
                    at: now,
                    first_sent: first_sends,
                    failed: false,
                },
            );
            busy.insert(a);
            busy.insert(b);
            out.push(self.start_flow(sender, receiver, token(), None, now));
        }
        out
    }

    /// Start one flow: reserve its full cap on both ends and count it as
    /// running until both reports are in or its deadline passes.
    fn start_flow(
        &mut self,
        sender: String,
        receiver: String,
        token: u64,
        ring: Option<u64>,
        now: Instant,
    ) -> Assignment {
        let need = self.cfg.max_bytes_per_test;
        for n in [&sender, &receiver] {
            self.ledger.entry(n.clone()).or_default().push_back(Charge {
                at: now,
                bytes: need,
                token,
            });
        }
        self.running.insert(
            token,
            Running {
                sender: sender.clone(),
                receiver: receiver.clone(),
                deadline: now + self.cfg.deadline_after(),
                result_in: false,
                served_in: false,
                ring,
            },
        );
        Assignment {
            token,
            sender,
            receiver,
            max_bytes: need,
            ring,
        }
    }

    /// A failed flow marks its pair, or every member of its concurrent
    /// test.
    fn mark_failed(&mut self, r: &Running) {
        match r.ring {
            Some(ring) => {
                for n in self.rings_running.get(&ring).into_iter().flatten() {
                    if let Some(x) = self.ring_attempts.get_mut(n) {
                        x.failed = true;
                    }
                }
            }
            None => {
                if let Some(x) = self.attempts.get_mut(&unordered(&r.sender, &r.receiver)) {
                    x.failed = true;
                }
            }
        }
    }

    /// The receiver `from` reported test `token`, successful or not (`ok`).
    /// Returns the pair when the report is for a running test and came from
    /// its receiver. A failed pair is tried again after
    /// [`RETRY_FAILED_AFTER`].
    pub fn result(&mut self, token: u64, from: &str, ok: bool) -> Option<Finished> {
        let r = self.running.get_mut(&token)?;
        if r.receiver != from || r.result_in {
            return None;
        }
        r.result_in = true;
        let done = Finished {
            sender: r.sender.clone(),
            receiver: r.receiver.clone(),
            ring: r.ring,
        };
        let (served_in, r) = (r.served_in, r.clone());
        if !ok {
            self.mark_failed(&r);
        }
        if served_in {
            self.running.remove(&token);
            self.forget_ring_if_over(r.ring);
        }
        Some(done)
    }

    /// Whether test `token` is still running (waiting for a report).
    pub fn is_running(&self, token: u64) -> bool {
        self.running.contains_key(&token)
    }

    /// The sender `from` reported sending `bytes` under `token`: replace the
    /// reservation on both nodes. The test ends once both reports are in
    /// (in either order). Returns whether accepted.
    pub fn served(&mut self, token: u64, from: &str, bytes: u64) -> bool {
        let Some(r) = self.running.get_mut(&token) else {
            return false;
        };
        if r.sender != from || r.served_in {
            return false;
        }
        r.served_in = true;
        let (sender, receiver, result_in, ring) =
            (r.sender.clone(), r.receiver.clone(), r.result_in, r.ring);
        // Never charge more than the cap that was reserved.
        let bytes = bytes.min(self.cfg.max_bytes_per_test);
        for n in [sender, receiver] {
            if let Some(l) = self.ledger.get_mut(&n) {
                for c in l.iter_mut().filter(|c| c.token == token) {
                    c.bytes = bytes;
                }
            }
        }
        if result_in {
            self.running.remove(&token);
            self.forget_ring_if_over(ring);
        }
        true
    }
}

/// Slack around a test period for clock differences between the
/// aggregator and the agents.
pub const CLOCK_MARGIN_US: u64 = 500_000;
/// After a test its queues still drain: a full 1000-packet queue of 1500
/// bytes takes 0.6 s at 20 Mbit/s. Windows this soon after count as
/// disturbed too.
pub const DRAIN_MARGIN_US: u64 = 2_000_000;
/// Test periods are kept this long, longer than any window can be late.
const KEEP_PERIODS_US: u64 = 10 * 60 * 1_000_000;

/// When nodes took part in bandwidth tests (wall clock, µs since the Unix
/// epoch), to tell which probe windows our own tests disturbed: a test fills
/// queues on both ends' links, so their RTTs in that time are not the
/// network's ordinary RTTs.
#[derive(Debug, Default)]
pub struct TestPeriods {
    /// Per node: (token, start, end).
    by_node: BTreeMap<String, VecDeque<(u64, u64, u64)>>,
}

impl TestPeriods {
    /// Both nodes of test `token` are busy from `start_us` to (at most) `end_us`.
    pub fn add(&mut self, token: u64, a: &str, b: &str, start_us: u64, end_us: u64) {
        for n in [a, b] {
            self.by_node
                .entry(n.to_string())
                .or_default()
                .push_back((token, start_us, end_us));
        }
    }

    /// Test `token` is over at `end_us` (earlier than its deadline).
    pub fn end(&mut self, token: u64, end_us: u64) {
        for ps in self.by_node.values_mut() {
            for p in ps.iter_mut().filter(|p| p.0 == token) {
                p.2 = p.2.min(end_us);
            }
        }
    }

    /// Whether a window of `src → dst` over `[start_us, end_us)` overlaps a
    /// test of either end.
    pub fn disturbs(&self, src: &str, dst: &str, start_us: u64, end_us: u64) -> bool {
        [src, dst].iter().any(|n| {
            self.by_node.get(*n).is_some_and(|ps| {
                ps.iter().any(|&(_, s, e)| {
                    s.saturating_sub(CLOCK_MARGIN_US) < end_us
                        && e.saturating_add(CLOCK_MARGIN_US + DRAIN_MARGIN_US) > start_us
                })
            })
        })
    }

    /// Forget periods that ended long before `now_us`.
    pub fn prune(&mut self, now_us: u64) {
        for ps in self.by_node.values_mut() {
            while ps
                .front()
                .is_some_and(|&(_, _, e)| e.saturating_add(KEEP_PERIODS_US) < now_us)
            {
                ps.pop_front();
            }
        }
        self.by_node.retain(|_, ps| !ps.is_empty());
    }
}

#[cfg(test)]
mod tests;
