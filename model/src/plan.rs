//! Which peers each agent probes: the full mesh while the cluster is small,
//! and a bounded, tiered set once it is not (docs/architecture.md, "Probe
//! plans at scale").
//!
//! With more connected nodes than `max_targets + 1`, a node's targets are,
//! in this order, until the bound is reached:
//!
//! 1. its own l1 group (rack-scale; every pair inside it is measured, which
//!    is what quality and l1 need);
//! 2. one representative of every other l1 group in its l2 group, of every
//!    other l2 group in its l3 group and of every other l3 group, so every
//!    group pair is sampled by many of its members' pairs;
//! 3. its successors on a consistent-hash ring of all nodes (stable links
//!    that catch a node grouped wrongly);
//! 4. samples from its l2 group, then its l3 group, then anywhere.
//!
//! Representatives and samples are chosen by rendezvous hashing of (node,
//! candidate, epoch): different nodes pick different members, and each
//! epoch picks again, so over time every group pair keeps fresh samples
//! while one epoch's plans stay put. A node without groups yet (a new one,
//! or everyone at start) probes representatives of every l2 group it can
//! and samples; the inference then places it, and its next plan follows
//! (Pingmesh's tiers and R-Pingmesh's sampling, with landmarks as in
//! landmark-based coordinates).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use crate::groups::Assignment;

/// Default bound on a node's probe targets.
pub const DEFAULT_MAX_TARGETS: usize = 64;
/// Default epoch length: representatives and samples change this often.
pub const DEFAULT_ROTATE_EVERY: Duration = Duration::from_secs(600);

/// Settings of the probe plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanConfig {
    /// At most this many targets per node; a cluster of at most this many
    /// nodes plus one is a full mesh.
    pub max_targets: usize,
    /// Representatives and samples are chosen again this often.
    pub rotate_every: Duration,
}

impl Default for PlanConfig {
    fn default() -> Self {
        Self {
            max_targets: DEFAULT_MAX_TARGETS,
            rotate_every: DEFAULT_ROTATE_EVERY,
        }
    }
}

impl PlanConfig {
    /// The epoch `elapsed` after the planner started.
    pub fn epoch(&self, elapsed: Duration) -> u64 {
        let every = self.rotate_every.as_millis().max(1);
        u64::try_from(elapsed.as_millis() / every).unwrap_or(u64::MAX)
    }

    /// Links not refreshed for this long are dropped: three epochs, so the
    /// samples of the last epochs still count while rotation does not make
    /// the matrix grow without end.
    pub fn link_expiry(&self) -> Duration {
        self.rotate_every * 3
    }
}
/// Ring successors every node probes once plans are sparse.
pub const RING_NEIGHBOURS: usize = 4;

/// A well-spread 64-bit hash of a few words (SplitMix64's finaliser over a
/// running sum): plans depend on names only, never on a process's random
/// hash keys, so one cluster state always gives one set of plans.
fn hash(words: &[u64]) -> u64 {
    let mut z: u64 = 0x243F_6A88_85A3_08D3;
    for w in words {
        z = z.wrapping_add(*w).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
    }
    z
}

/// FNV-1a of a name: its position on the ring and its hash word.
fn name_hash(s: &str) -> u64 {
    s.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// The connected nodes and their published groups, indexed once per
/// replanning so each node's plan costs about its group sizes.
#[derive(Debug)]
pub struct PlanIndex<'a> {
    names: Vec<&'a str>,
    words: Vec<u64>,
    position: BTreeMap<&'a str, usize>,
    groups: Vec<Option<&'a [String; 3]>>,
    /// Members (indices) of each group id, per level.
    members: [BTreeMap<&'a str, Vec<usize>>; 3],
    /// Indices sorted by ring position.
    ring: Vec<usize>,
    /// Each index's place in `ring`.
    ring_slot: Vec<usize>,
}

impl<'a> PlanIndex<'a> {
    /// `names`: the connected nodes; `assignment`: the published groups
    /// (nodes missing from it have none yet).
    pub fn new(names: &'a [String], assignment: &'a Assignment) -> Self {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let words: Vec<u64> = names.iter().map(|n| name_hash(n)).collect();
        let groups: Vec<Option<&[String; 3]>> = names.iter().map(|n| assignment.get(*n)).collect();
        let mut members: [BTreeMap<&str, Vec<usize>>; 3] = Default::default();
        for (i, g) in groups.iter().enumerate() {
            if let Some(g) = g {
                for (level, id) in g.iter().enumerate() {
                    members[level].entry(id.as_str()).or_default().push(i);
                }
            }
        }
        let mut ring: Vec<usize> = (0..names.len()).collect();
        ring.sort_by_key(|&i| (words[i], i));
        let mut ring_slot = vec![0; names.len()];
        for (slot, &i) in ring.iter().enumerate() {
            ring_slot[i] = slot;
        }
        let position = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        Self {
            names,
            words,
            position,
            groups,
            members,
            ring,
            ring_slot,
        }
    }

    /// The probe targets of `me` (a connected node) for `epoch`, at most
    /// `max_targets`, in the order of the rules above; every other node
    /// while they fit. Empty for a node that is not connected.
    pub fn targets(&self, me: &str, max_targets: usize, epoch: u64) -> Vec<&'a str> {
        let Some(&i) = self.position.get(me) else {
            return Vec::new();
        };
        let n = self.names.len();
        if n - 1 <= max_targets {
            return (0..n).filter(|&j| j != i).map(|j| self.names[j]).collect();
        }
        let mut plan = Plan {
            me: i,
            max: max_targets,
            chosen: Vec::new(),
            seen: HashSet::from([i]),
        };
        // Rendezvous score of a candidate for this node and epoch.
        let score = |j: usize| hash(&[self.words[i], self.words[j], epoch]);
        // A group's representative for this node and epoch: a hashed
        // member, so the choice costs one hash, not one per member.
        let pick = |id: &str, pool: &[usize]| -> Option<usize> {
            let h = hash(&[self.words[i], name_hash(id), epoch]);
            let j = *pool.get((h % pool.len().max(1) as u64) as usize)?;
            (j != i).then_some(j)
        };
        match self.groups[i] {
            Some(g) => {
                // 1. The own l1 group, by score when it does not fit.
                plan.extend(best(self.group(0, &g[0]), max_targets / 2, score));
                // 2. A representative of every other group: l1 groups of
                // the own l2, l2 groups of the own l3, other l3 groups.
                for level in 0..3 {
                    let reps: Vec<usize> = self.members[level]
                        .iter()
                        .filter(|(id, _)| **id != g[level].as_str())
                        .filter(|(_, ms)| level == 2 || self.shares(ms[0], g, level + 1))
                        .filter_map(|(id, ms)| pick(id, ms))
                        .collect();
                    let k = reps.len();
                    plan.extend(best(&reps, k, score));
                }
            }
            None => {
                // New: a representative of every l2 group (landmarks that
                // find its region and zone), by score when they do not fit.
                let reps: Vec<usize> = self.members[1]
                    .iter()
                    .filter_map(|(id, ms)| pick(id, ms))
                    .collect();
                plan.extend(best(
                    &reps,
                    max_targets.saturating_sub(RING_NEIGHBOURS),
                    score,
                ));
            }
        }
        // 3. Ring successors.
        let slot = self.ring_slot[i];
        plan.extend(
            (1..n)
                .map(|k| self.ring[(slot + k) % n])
                .take(RING_NEIGHBOURS),
        );
        // 4. Samples: the own l2 group, the own l3 group, then anywhere.
        if let Some(g) = self.groups[i] {
            for level in [1, 2] {
                // Half of what is left (plus the picks already taken,
                // which are skipped) from each pool.
                let k = plan.left().div_ceil(2) + plan.chosen.len();
                plan.extend(best(self.group(level, &g[level]), k, score));
            }
        }
        // Anywhere: start at a hashed point of the ring and walk on.
        let start = (score(i) % n as u64) as usize;
        plan.extend((0..n).map(|k| self.ring[(start + k) % n]));
        plan.chosen.into_iter().map(|j| self.names[j]).collect()
    }

    fn group(&self, level: usize, id: &str) -> &[usize] {
        self.members[level].get(id).map_or(&[], Vec::as_slice)
    }

    /// Whether node `j` is in the same group as `g` at `level`.
    fn shares(&self, j: usize, g: &[String; 3], level: usize) -> bool {
        self.groups[j].is_some_and(|h| h[level] == g[level])
    }
}

/// The `k` members of `pool` with the lowest `score`, lowest first, in
/// O(|pool|).
fn best(pool: &[usize], k: usize, score: impl Fn(usize) -> u64) -> Vec<usize> {
    let mut v: Vec<(u64, usize)> = pool.iter().map(|&j| (score(j), j)).collect();
    if k < v.len() {
        v.select_nth_unstable(k);
        v.truncate(k);
    }
    v.sort_unstable();
    v.into_iter().map(|(_, j)| j).collect()
}

/// A plan being filled: no repeats, not the node itself, never past `max`.
struct Plan {
    me: usize,
    max: usize,
    chosen: Vec<usize>,
    seen: HashSet<usize>,
}

impl Plan {
    fn left(&self) -> usize {
        self.max.saturating_sub(self.chosen.len())
    }

    fn extend(&mut self, candidates: impl IntoIterator<Item = usize>) {
        for j in candidates {
            if self.chosen.len() >= self.max {
                return;
            }
            if j != self.me && self.seen.insert(j) {
                self.chosen.push(j);
            }
        }
    }
}

#[cfg(test)]
mod tests;
