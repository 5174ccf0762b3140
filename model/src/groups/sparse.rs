//! Complete linkage over the pairs that were measured, for clusters where
//! nobody measures every pair (sparse probe plans, docs/architecture.md).
//!
//! The distance between two clusters is the largest *measured* distance
//! between their members; two clusters with no measured pair between them
//! are never merged. So a cluster cut at `t` has every measured pair inside
//! it within `t` (the dense algorithm's guarantee, restricted to what is
//! known), an unknown pair is neither close nor far, and a pair measured as
//! unreachable (an infinite distance) still keeps its two nodes apart at
//! every level. On a complete matrix this is textbook complete linkage.
//!
//! Merges are taken smallest first from a heap with lazy deletion, and a
//! merged cluster keeps the larger of the two adjacency maps (the smaller
//! is folded in), so the cost is O(E log E) for E measured pairs: a
//! 5,000-node cluster with 64 peers a node has E ≈ 320 k, not 12.5 M.
//! Heights never decrease: when A and B merge at h (the smallest distance
//! left anywhere), every other distance from A or B is already ≥ h, and
//! the merged cluster's distances are maxima of those.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use super::Merge;

/// A heap entry: smallest distance first, then the lower pair of slots
/// (so equal inputs always give equal merges).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Candidate {
    d: f32,
    a: usize,
    b: usize,
}

impl Eq for Candidate {}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap.
        other
            .d
            .total_cmp(&self.d)
            .then_with(|| (other.a, other.b).cmp(&(self.a, self.b)))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn candidate(d: f32, x: usize, y: usize) -> Candidate {
    Candidate {
        d,
        a: x.min(y),
        b: x.max(y),
    }
}

/// At most this share (a fifth) of the measured pairs across a merge may be
/// unreachable. One broken pair between two otherwise well-measured racks
/// (a host firewall rule, a bad cable) does not split a region in two; a
/// firewall between zones (every pair across lost) still does, and so does
/// a single unreachable pair between two nodes that share nothing else.
pub const MAX_UNREACHABLE_SHARE: f64 = 0.2;

/// What is known between two clusters: the largest finite distance, and
/// how many measured pairs across were finite and how many unreachable.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Across {
    max: f32,
    finite: u32,
    unreachable: u32,
    /// The heap key this pair was last pushed with (NaN: not in the heap).
    key: f32,
}

impl Across {
    fn of(d: f32) -> Self {
        if d.is_finite() {
            Self {
                max: d,
                finite: 1,
                unreachable: 0,
                key: f32::NAN,
            }
        } else {
            Self {
                max: 0.0,
                finite: 0,
                unreachable: 1,
                key: f32::NAN,
            }
        }
    }

    fn add(self, o: Self) -> Self {
        Self {
            max: self.max.max(o.max),
            finite: self.finite + o.finite,
            unreachable: self.unreachable + o.unreachable,
            key: f32::NAN,
        }
    }

    /// The merge height, if the two clusters may merge at all.
    fn height(&self) -> Option<f32> {
        let known = f64::from(self.finite + self.unreachable);
        (self.finite > 0 && f64::from(self.unreachable) <= MAX_UNREACHABLE_SHARE * known)
            .then_some(self.max)
    }
}

/// The dendrogram of `n` items from the measured pairs `(i, j, distance)`
/// (µs; infinite or NaN: unreachable; a pair given twice keeps the worse).
/// Merges come back sorted by height; clusters with no finite measured
/// pair between them, or too many unreachable ones
/// ([`MAX_UNREACHABLE_SHARE`]), never merge.
///
/// Merges above `ceiling` are not made (the cuts below it do not need
/// them; pass infinity for the whole dendrogram, as `auto` thresholds do).
pub fn complete_linkage_sparse(
    n: usize,
    pairs: impl IntoIterator<Item = (usize, usize, f64)>,
    ceiling: f64,
) -> Vec<Merge> {
    let mut given: HashMap<(usize, usize), f32> = HashMap::new();
    for (i, j, d) in pairs {
        if i == j || i >= n || j >= n {
            continue;
        }
        let d = if d.is_nan() { f32::INFINITY } else { d as f32 };
        let e = given.entry((i.min(j), i.max(j))).or_insert(d);
        *e = e.max(d);
    }
    let ceiling = ceiling as f32;
    let mut adj: Vec<HashMap<usize, Across>> = vec![HashMap::new(); n];
    let mut first = Vec::with_capacity(given.len());
    for (&(i, j), &d) in &given {
        let mut a = Across::of(d);
        if let Some(h) = a.height().filter(|h| *h <= ceiling) {
            a.key = h;
            first.push(candidate(h, i, j));
        }
        adj[i].insert(j, a);
        adj[j].insert(i, a);
    }
    // Built at once (O(E)), not pushed one by one.
    let mut heap = BinaryHeap::from(first);
    let mut active = vec![true; n];
    let mut merges = Vec::with_capacity(n.saturating_sub(1));
    while let Some(c) = heap.pop() {
        // Stale entries: a slot merged away, or the pair pushed again
        // since (what is known across it changed).
        let key = adj[c.a].get(&c.b).map(|a| a.key);
        if !active[c.a] || !active[c.b] || key != Some(c.d) {
            continue;
        }
        let (keep, gone) = if adj[c.a].len() >= adj[c.b].len() {
            (c.a, c.b)
        } else {
            (c.b, c.a)
        };
        let folded = std::mem::take(&mut adj[gone]);
        adj[keep].remove(&gone);
        for (other, a) in folded {
            if other == keep {
                continue;
            }
            adj[other].remove(&gone);
            // What is known across changed for this neighbour: it may now
            // merge (unreachable pairs outweighed), or at another height,
            // never below this merge's, so heights stay in order. The
            // neighbours of `keep` alone are unchanged and stay queued.
            let mut merged = adj[keep].get(&other).map_or(a, |k| k.add(a));
            merged.key = f32::NAN;
            if let Some(h) = merged
                .height()
                .map(|h| h.max(c.d))
                .filter(|h| *h <= ceiling)
            {
                merged.key = h;
                heap.push(candidate(h, keep, other));
            }
            adj[keep].insert(other, merged);
            adj[other].insert(keep, merged);
        }
        active[gone] = false;
        merges.push(Merge {
            a: keep,
            b: gone,
            height: f64::from(c.d),
        });
    }
    merges.sort_by(|x, y| x.height.total_cmp(&y.height));
    merges
}

#[cfg(test)]
mod tests;
