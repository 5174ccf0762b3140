//! Nested latency groups: complete-linkage clustering of the RTT matrix, cut
//! at three thresholds into groups l1 ⊂ l2 ⊂ l3, with ids that stay stable
//! across recomputations and a hysteresis so one noisy window moves nobody.
//!
//! Complete linkage merges two clusters at the *largest* distance between
//! their members, so cutting the dendrogram at `t` yields groups in which
//! every pair is within `t`, and cuts at t1 < t2 < t3 are nested.
//!
//! **Missing pairs.** A pair with no measurement has an infinite distance:
//! two nodes whose RTT is unknown never share a group (at any level), however
//! close both are to a third node. Unknown is never treated as close.

use std::collections::{BTreeMap, HashMap};

mod sparse;
pub use sparse::complete_linkage_sparse;

/// Symmetric distance matrix over `n` nodes (µs), condensed upper triangle.
/// Missing distances are `f32::INFINITY`.
#[derive(Debug, Clone)]
pub struct Distances {
    n: usize,
    d: Vec<f32>,
}

fn tri(n: usize, i: usize, j: usize) -> usize {
    let (i, j) = if i < j { (i, j) } else { (j, i) };
    // Row i starts after rows 0..i, each of length n-1-r.
    i * (2 * n - i - 1) / 2 + (j - i - 1)
}

impl Distances {
    /// All pairs missing.
    pub fn new(n: usize) -> Self {
        Self {
            n,
            d: vec![f32::INFINITY; n * n.saturating_sub(1) / 2],
        }
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Set the distance between `i` and `j` (`i != j`); NaN counts as missing.
    pub fn set(&mut self, i: usize, j: usize, v: f64) {
        if i != j && i < self.n && j < self.n {
            self.d[tri(self.n, i, j)] = if v.is_nan() { f32::INFINITY } else { v as f32 };
        }
    }

    pub fn get(&self, i: usize, j: usize) -> f64 {
        if i == j {
            0.0
        } else {
            f64::from(self.d[tri(self.n, i, j)])
        }
    }
}

/// One merge of the dendrogram: two clusters, named by one member each,
/// joined at `height` (the largest distance between their members).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Merge {
    pub a: usize,
    pub b: usize,
    pub height: f64,
}

/// Complete-linkage dendrogram by the nearest-neighbour chain algorithm:
/// O(n²) time and n²/2 floats of memory. Merges come back sorted by height.
/// Ties are broken towards the lower index, so the result is deterministic.
pub fn complete_linkage(dist: &Distances) -> Vec<Merge> {
    let n = dist.n;
    let mut d = dist.d.clone();
    let mut active = vec![true; n];
    // A cluster lives in the slot of one of its members.
    let mut merges = Vec::with_capacity(n.saturating_sub(1));
    let mut chain: Vec<usize> = Vec::new();
    let mut remaining = n;
    while remaining > 1 {
        if chain.is_empty()
            && let Some(first) = active.iter().position(|a| *a)
        {
            chain.push(first);
        }
        let (a, b) = loop {
            let a = chain[chain.len() - 1];
            let prev = chain.len().checked_sub(2).map(|k| chain[k]);
            // Nearest active neighbour of a; the previous chain element wins ties
            // (this is what makes the chain terminate).
            let mut best = prev;
            let mut best_d = prev.map_or(f32::INFINITY, |p| d[tri(n, a, p)]);
            for c in 0..n {
                if c == a || !active[c] || Some(c) == prev {
                    continue;
                }
                let dc = d[tri(n, a, c)];
                if best.is_none() || dc < best_d {
                    best = Some(c);
                    best_d = dc;
                }
            }
            let Some(b) = best else {
                // a is the only active cluster; cannot happen while remaining > 1.
                return merges;
            };
            if Some(b) == prev {
                break (a, b);
            }
            chain.push(b);
        };
        chain.pop();
        chain.pop();
        let height = f64::from(d[tri(n, a, b)]);
        let (keep, gone) = if a < b { (a, b) } else { (b, a) };
        for k in 0..n {
            if active[k] && k != keep && k != gone {
                let v = d[tri(n, keep, k)].max(d[tri(n, gone, k)]);
                d[tri(n, keep, k)] = v;
            }
        }
        active[gone] = false;
        remaining -= 1;
        merges.push(Merge {
            a: keep,
            b: gone,
            height,
        });
    }
    // Complete linkage is monotone, so sorting keeps every child before its parent.
    merges.sort_by(|x, y| x.height.total_cmp(&y.height));
    merges
}

fn find(parent: &mut [usize], mut x: usize) -> usize {
    while parent[x] != x {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    x
}

/// Flat clusters at `threshold`: each node's cluster, numbered 0.. in the order
/// of each cluster's lowest member.
pub fn cut(merges: &[Merge], n: usize, threshold: f64) -> Vec<usize> {
    let mut parent: Vec<usize> = (0..n).collect();
    for m in merges.iter().take_while(|m| m.height <= threshold) {
        let (ra, rb) = (find(&mut parent, m.a), find(&mut parent, m.b));
        if ra != rb {
            parent[ra.max(rb)] = ra.min(rb);
        }
    }
    let mut number: HashMap<usize, usize> = HashMap::new();
    (0..n)
        .map(|i| {
            let root = find(&mut parent, i);
            let next = number.len();
            *number.entry(root).or_insert(next)
        })
        .collect()
}

/// Thresholds of the three levels, µs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Thresholds {
    Fixed([f64; 3]),
    /// Cut at the three largest gaps of the dendrogram.
    Auto,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self::Fixed(DEFAULT_THRESHOLDS_US)
    }
}

/// `auto`, or the three thresholds as durations (`500us,2ms,10ms`): the
/// form `--group-thresholds` takes.
impl std::fmt::Display for Thresholds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Fixed(t) => {
                for (i, us) in t.iter().enumerate() {
                    let d = std::time::Duration::from_nanos((us * 1e3).round() as u64);
                    let sep = if i == 0 { "" } else { "," };
                    write!(f, "{sep}{}", humantime::format_duration(d))?;
                }
                Ok(())
            }
        }
    }
}

/// Default thresholds: same site (0.5 ms), same metro/zone (2 ms), same
/// region (10 ms) round trip.
pub const DEFAULT_THRESHOLDS_US: [f64; 3] = [500.0, 2_000.0, 10_000.0];
/// A gap counts for `auto` only if the next merge is at least this many
/// times higher than the previous one.
pub const AUTO_MIN_GAP_RATIO: f64 = 1.5;

/// The `auto` thresholds: take the finite merge heights in order, find the
/// three largest ratios between consecutive heights (at least
/// [`AUTO_MIN_GAP_RATIO`]), and cut each gap at the geometric mean of its two
/// sides. Ratios, not differences, because RTTs span orders of magnitude.
/// With fewer than three gaps the highest cut found is repeated (levels
/// coincide); with none, everything finite is one group.
pub fn auto_thresholds(merges: &[Merge]) -> [f64; 3] {
    let heights: Vec<f64> = merges
        .iter()
        .map(|m| m.height.max(1.0))
        .filter(|h| h.is_finite())
        .collect();
    let Some(&top) = heights.last() else {
        return [f64::INFINITY; 3];
    };
    let mut gaps: Vec<(f64, f64)> = heights
        .windows(2)
        .map(|w| (w[1] / w[0], (w[0] * w[1]).sqrt()))
        .filter(|(ratio, _)| *ratio >= AUTO_MIN_GAP_RATIO)
        .collect();
    gaps.sort_by(|x, y| y.0.total_cmp(&x.0));
    let mut cuts: Vec<f64> = gaps.iter().take(3).map(|g| g.1).collect();
    cuts.sort_by(f64::total_cmp);
    let fill = cuts.last().copied().unwrap_or(top);
    [0, 1, 2].map(|k| cuts.get(k).copied().unwrap_or(fill))
}

/// The three thresholds in force for `merges`.
pub fn thresholds_for(t: Thresholds, merges: &[Merge]) -> [f64; 3] {
    match t {
        Thresholds::Fixed(v) => v,
        Thresholds::Auto => auto_thresholds(merges),
    }
}

/// Group ids per level for named nodes, e.g. `{"dj-1": ["g1", "g1", "g1"]}`.
pub type Assignment = BTreeMap<String, [String; 3]>;

/// Keeps group ids stable across recomputations and applies hysteresis.
#[derive(Debug, Clone)]
pub struct GroupTracker {
    /// Consecutive recomputations a new group must hold before a node moves.
    hysteresis: u32,
    published: Assignment,
    /// Per node: the tuple it is moving to and how many times in a row it was seen.
    pending: BTreeMap<String, ([String; 3], u32)>,
    next_id: [u64; 3],
}

impl GroupTracker {
    pub fn new(hysteresis: u32) -> Self {
        Self {
            hysteresis: hysteresis.max(1),
            published: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_id: [1; 3],
        }
    }

    /// The published assignment.
    pub fn assignment(&self) -> &Assignment {
        &self.published
    }

    /// Start from ids published before (the labels on the Nodes, read by a
    /// restarted or newly elected aggregator): they become the published
    /// assignment of their nodes, and fresh ids are numbered past every
    /// `gN` among them, so the next recomputation keeps them wherever the
    /// clusters still overlap instead of renumbering every group.
    pub fn seed(&mut self, assignment: &Assignment) {
        for (node, ids) in assignment {
            self.published.insert(node.clone(), ids.clone());
            self.pending.remove(node);
            for (level, id) in ids.iter().enumerate() {
                if let Some(n) = id.strip_prefix('g').and_then(|n| n.parse::<u64>().ok()) {
                    self.next_id[level] = self.next_id[level].max(n.saturating_add(1));
                }
            }
        }
    }

    /// Forget a node (deleted from the cluster).
    pub fn forget(&mut self, node: &str) {
        self.published.remove(node);
        self.pending.remove(node);
    }

    /// Give the new clusters of one level ids: each new cluster takes the
    /// published id it overlaps most (largest overlaps first), others get
    /// fresh ids. Returns node -> id.
    fn name_level(&mut self, level: usize, names: &[String], clusters: &[usize]) -> Vec<String> {
        let k = clusters.iter().max().map_or(0, |m| m + 1);
        // overlap[(cluster, old id)] = members in common
        let mut overlap: BTreeMap<(usize, &str), usize> = BTreeMap::new();
        for (i, c) in clusters.iter().enumerate() {
            if let Some(old) = self.published.get(&names[i]) {
                *overlap.entry((*c, old[level].as_str())).or_insert(0) += 1;
            }
        }
        let mut pairs: Vec<((usize, &str), usize)> = overlap.into_iter().collect();
        // Largest overlap first; ties by cluster number then id, for determinism.
        pairs.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
        let mut id_of: Vec<Option<String>> = vec![None; k];
        let mut taken: Vec<String> = Vec::new();
        for ((c, old), _) in pairs {
            if id_of[c].is_none() && !taken.iter().any(|t| t == old) {
                id_of[c] = Some(old.to_string());
                taken.push(old.to_string());
            }
        }
        // A cluster with no published id takes the id its members are
        // already moving to, so a move in progress keeps one target and its
        // hysteresis can complete (a fresh id every time never would).
        let mut pending_overlap: BTreeMap<(usize, String), usize> = BTreeMap::new();
        for (i, c) in clusters.iter().enumerate() {
            if id_of[*c].is_none()
                && let Some((target, _)) = self.pending.get(&names[i])
            {
                *pending_overlap
                    .entry((*c, target[level].clone()))
                    .or_insert(0) += 1;
            }
        }
        let mut pending_pairs: Vec<((usize, String), usize)> =
            pending_overlap.into_iter().collect();
        pending_pairs.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
        for ((c, id), _) in pending_pairs {
            if id_of[c].is_none() && !taken.contains(&id) {
                id_of[c] = Some(id.clone());
                taken.push(id);
            }
        }
        // Never reuse an id that is published, or pending, anywhere.
        let used: std::collections::BTreeSet<String> = self
            .published
            .values()
            .chain(self.pending.values().map(|(t, _)| t))
            .map(|ids| ids[level].clone())
            .collect();
        for slot in id_of.iter_mut() {
            if slot.is_none() {
                let id = loop {
                    let candidate = format!("g{}", self.next_id[level]);
                    self.next_id[level] += 1;
                    if !used.contains(&candidate) {
                        break candidate;
                    }
                };
                *slot = Some(id);
            }
        }
        clusters
            .iter()
            .map(|c| id_of[*c].clone().unwrap_or_default())
            .collect()
    }

    /// Feed one recomputation: `levels[l][i]` is node `names[i]`'s cluster at
    /// level l. Nodes move only once their new groups held for `hysteresis`
    /// recomputations in a row; new nodes are placed at once. Nodes absent
    /// from `names` keep their published groups (never drop a label for lack
    /// of data). Returns the nodes whose published groups changed.
    pub fn update(&mut self, names: &[String], levels: &[Vec<usize>; 3]) -> Vec<String> {
        let ids: Vec<Vec<String>> = (0..3)
            .map(|l| self.name_level(l, names, &levels[l]))
            .collect();
        let mut changed = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let new = [ids[0][i].clone(), ids[1][i].clone(), ids[2][i].clone()];
            match self.published.get(name) {
                None => {
                    self.published.insert(name.clone(), new);
                    changed.push(name.clone());
                }
                Some(cur) if *cur == new => {
                    self.pending.remove(name);
                }
                Some(_) => {
                    let seen = match self.pending.get(name) {
                        Some((target, count)) if *target == new => count + 1,
                        _ => 1,
                    };
                    if seen >= self.hysteresis {
                        self.pending.remove(name);
                        self.published.insert(name.clone(), new);
                        changed.push(name.clone());
                    } else {
                        self.pending.insert(name.clone(), (new, seen));
                    }
                }
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests;
