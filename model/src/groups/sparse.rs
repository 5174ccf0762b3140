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

/// The dendrogram of `n` items from the measured pairs `(i, j, distance)`
/// (µs; NaN counts as unreachable; a pair given twice keeps the larger).
/// Merges come back sorted by height; infinite ones are left out, so items
/// never joined through finite measured pairs stay apart at every cut.
pub fn complete_linkage_sparse(
    n: usize,
    pairs: impl IntoIterator<Item = (usize, usize, f64)>,
) -> Vec<Merge> {
    let mut adj: Vec<HashMap<usize, f32>> = vec![HashMap::new(); n];
    for (i, j, d) in pairs {
        if i == j || i >= n || j >= n {
            continue;
        }
        let d = if d.is_nan() { f32::INFINITY } else { d as f32 };
        let e = adj[i].entry(j).or_insert(d);
        *e = e.max(d);
        let e = *e;
        adj[j].insert(i, e);
    }
    let mut heap: BinaryHeap<Candidate> = BinaryHeap::new();
    for (i, row) in adj.iter().enumerate() {
        for (&j, &d) in row {
            if i < j && d.is_finite() {
                heap.push(candidate(d, i, j));
            }
        }
    }
    let mut active = vec![true; n];
    let mut merges = Vec::with_capacity(n.saturating_sub(1));
    while let Some(c) = heap.pop() {
        // Stale entries: a slot merged away, or a distance since raised.
        if !active[c.a] || !active[c.b] || adj[c.a].get(&c.b) != Some(&c.d) {
            continue;
        }
        let (keep, gone) = if adj[c.a].len() >= adj[c.b].len() {
            (c.a, c.b)
        } else {
            (c.b, c.a)
        };
        let folded = std::mem::take(&mut adj[gone]);
        adj[keep].remove(&gone);
        for (other, d) in folded {
            if other == keep {
                continue;
            }
            adj[other].remove(&gone);
            let merged = adj[keep].get(&other).map_or(d, |&k| k.max(d));
            adj[keep].insert(other, merged);
            adj[other].insert(keep, merged);
            if merged.is_finite() {
                heap.push(candidate(merged, keep, other));
            }
        }
        active[gone] = false;
        merges.push(Merge {
            a: keep,
            b: gone,
            height: f64::from(c.d),
        });
    }
    // Already in order (heights never decrease); sorting keeps `cut`'s
    // contract explicit should float rounding ever tie differently.
    merges.sort_by(|x, y| x.height.total_cmp(&y.height));
    merges
}

#[cfg(test)]
mod tests;
