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
mod tests {
    use super::*;

    /// Nodes on a line at the given positions; distance = |difference|.
    fn line(points: &[f64]) -> Distances {
        let mut d = Distances::new(points.len());
        for i in 0..points.len() {
            for j in i + 1..points.len() {
                d.set(i, j, (points[i] - points[j]).abs());
            }
        }
        d
    }

    /// Brute-force check: every pair inside one cluster is within the threshold.
    fn diameters_ok(d: &Distances, labels: &[usize], t: f64) -> bool {
        (0..d.len()).all(|i| (0..d.len()).all(|j| labels[i] != labels[j] || d.get(i, j) <= t))
    }

    #[test]
    fn condensed_indexing_covers_every_pair_once() {
        let n = 7;
        let mut seen = vec![false; n * (n - 1) / 2];
        for i in 0..n {
            for j in i + 1..n {
                assert_eq!(tri(n, i, j), tri(n, j, i));
                assert!(!seen[tri(n, i, j)]);
                seen[tri(n, i, j)] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn three_sites_in_two_regions_give_nested_groups() {
        // Region A: sites {0,1} and {2,3}; region B: {4,5}. RTTs in µs.
        let mut d = Distances::new(6);
        let site = |i: usize| i / 2;
        let region = |i: usize| usize::from(i >= 4);
        for i in 0..6 {
            for j in i + 1..6 {
                let v = if site(i) == site(j) {
                    200.0
                } else if region(i) == region(j) {
                    1_500.0
                } else {
                    8_000.0
                };
                d.set(i, j, v);
            }
        }
        let m = complete_linkage(&d);
        assert_eq!(m.len(), 5);
        assert_eq!(cut(&m, 6, 500.0), vec![0, 0, 1, 1, 2, 2]);
        assert_eq!(cut(&m, 6, 2_000.0), vec![0, 0, 0, 0, 1, 1]);
        assert_eq!(cut(&m, 6, 10_000.0), vec![0; 6]);
        assert_eq!(m.last().unwrap().height, 8_000.0);
    }

    #[test]
    fn complete_linkage_is_not_single_linkage() {
        // A chain 0-1-2-3 with steps of 100: single linkage would put all in
        // one group at 150; complete linkage keeps diameters <= 150.
        let d = line(&[0.0, 100.0, 200.0, 300.0]);
        let m = complete_linkage(&d);
        let c = cut(&m, 4, 150.0);
        assert!(diameters_ok(&d, &c, 150.0));
        assert_eq!(c.iter().max(), Some(&1), "two groups of two: {c:?}");
    }

    #[test]
    fn random_matrices_respect_the_diameter_bound_and_nest() {
        let mut seed = 42u64;
        let mut rnd = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % 10_000) as f64
        };
        for n in [2usize, 3, 5, 9, 17, 40] {
            let mut d = Distances::new(n);
            for i in 0..n {
                for j in i + 1..n {
                    d.set(i, j, rnd());
                }
            }
            let m = complete_linkage(&d);
            assert_eq!(m.len(), n - 1);
            assert!(m.windows(2).all(|w| w[0].height <= w[1].height));
            let ts = [1_000.0, 4_000.0, 8_000.0];
            let cuts: Vec<Vec<usize>> = ts.iter().map(|t| cut(&m, n, *t)).collect();
            for (c, t) in cuts.iter().zip(ts) {
                assert!(diameters_ok(&d, c, t), "n={n} t={t}");
            }
            // Nested: same l1 implies same l2 implies same l3.
            for i in 0..n {
                for j in 0..n {
                    for l in 0..2 {
                        if cuts[l][i] == cuts[l][j] {
                            assert_eq!(cuts[l + 1][i], cuts[l + 1][j]);
                        }
                    }
                }
            }
        }
    }

    /// Textbook O(n³) complete linkage: merge the two clusters whose largest
    /// member distance is smallest, until one is left. Returns the heights.
    fn naive_heights(d: &Distances) -> Vec<f64> {
        let mut clusters: Vec<Vec<usize>> = (0..d.len()).map(|i| vec![i]).collect();
        let mut heights = Vec::new();
        while clusters.len() > 1 {
            let mut best = (f64::INFINITY, 0, 1);
            for a in 0..clusters.len() {
                for b in a + 1..clusters.len() {
                    let h = clusters[a]
                        .iter()
                        .flat_map(|i| clusters[b].iter().map(move |j| (*i, *j)))
                        .map(|(i, j)| d.get(i, j))
                        .fold(0.0, f64::max);
                    if h < best.0 {
                        best = (h, a, b);
                    }
                }
            }
            let (h, a, b) = best;
            let moved = clusters.remove(b);
            clusters[a].extend(moved);
            heights.push(h);
        }
        heights
    }

    #[test]
    fn the_chain_algorithm_matches_textbook_complete_linkage() {
        let mut seed = 7u64;
        for n in [2usize, 4, 8, 15, 30] {
            let mut d = Distances::new(n);
            for i in 0..n {
                for j in i + 1..n {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    // Distinct values (the fraction is unique per pair, as
                    // i*n+j < 1024) and exact in f32 (13 + 10 bits).
                    d.set(
                        i,
                        j,
                        ((seed >> 40) % 8_000) as f64 + (i * n + j) as f64 / 1024.0,
                    );
                }
            }
            let ours: Vec<f64> = complete_linkage(&d).iter().map(|m| m.height).collect();
            assert_eq!(ours, naive_heights(&d), "n={n}");
        }
    }

    #[test]
    fn ties_are_resolved_deterministically() {
        // Four nodes all 100 apart.
        let mut d = Distances::new(4);
        for i in 0..4 {
            for j in i + 1..4 {
                d.set(i, j, 100.0);
            }
        }
        let a = complete_linkage(&d);
        let b = complete_linkage(&d.clone());
        assert_eq!(a, b);
        assert_eq!(cut(&a, 4, 100.0), vec![0; 4]);
        assert_eq!(cut(&a, 4, 99.0), vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_missing_pair_never_shares_a_group() {
        // 0 and 2 were never measured; both are 100 from 1.
        let mut d = Distances::new(3);
        d.set(0, 1, 100.0);
        d.set(1, 2, 100.0);
        let m = complete_linkage(&d);
        for t in [150.0, 1e9] {
            let c = cut(&m, 3, t);
            assert_ne!(c[0], c[2], "t={t}: {c:?}");
        }
        assert!(m.last().unwrap().height.is_infinite());
        // Auto thresholds ignore the infinite merge.
        assert!(auto_thresholds(&m).iter().all(|t| t.is_finite()));
    }

    #[test]
    fn auto_cuts_at_the_largest_gaps() {
        // Sites of 2 at 200 µs, site pairs at 1.5 ms, regions at 8 ms, and a
        // far region at 40 ms: three clear gaps.
        let pts = [
            0.0, 200.0, 1_500.0, 1_700.0, 8_000.0, 8_200.0, 40_000.0, 40_200.0,
        ];
        let d = line(&pts);
        let m = complete_linkage(&d);
        let t = auto_thresholds(&m);
        assert!(t[0] > 200.0 && t[0] < 1_700.0, "{t:?}");
        assert!(t[1] > 1_700.0 && t[1] < 8_200.0, "{t:?}");
        assert!(t[2] > 8_200.0 && t[2] < 38_000.0, "{t:?}");
        // One group of equal points: no gaps, one group.
        let flat = complete_linkage(&line(&[0.0, 0.0, 0.0]));
        let t = auto_thresholds(&flat);
        assert_eq!(cut(&flat, 3, t[0]), vec![0, 0, 0]);
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("n{i}")).collect()
    }

    fn same(c: Vec<usize>) -> [Vec<usize>; 3] {
        [c.clone(), c.clone(), c]
    }

    #[test]
    fn ids_stay_stable_when_cluster_numbering_changes() {
        let mut t = GroupTracker::new(1);
        t.update(&names(4), &same(vec![0, 0, 1, 1]));
        let before = t.assignment().clone();
        // Same groups, numbered the other way round.
        let changed = t.update(&names(4), &same(vec![1, 1, 0, 0]));
        assert!(changed.is_empty());
        assert_eq!(t.assignment(), &before);
        assert_eq!(before["n0"][1], "g1");
        assert_eq!(before["n2"][1], "g2");
    }

    #[test]
    fn a_single_noisy_recomputation_moves_nobody() {
        let mut t = GroupTracker::new(3);
        t.update(&names(4), &same(vec![0, 0, 1, 1]));
        let stable = t.assignment().clone();
        // One recomputation says n1 belongs with n2 and n3; then it is back.
        assert!(t.update(&names(4), &same(vec![0, 1, 1, 1])).is_empty());
        assert!(t.update(&names(4), &same(vec![0, 0, 1, 1])).is_empty());
        assert_eq!(t.assignment(), &stable);
        // A move that holds for 3 recomputations happens on the third.
        assert!(t.update(&names(4), &same(vec![0, 1, 1, 1])).is_empty());
        assert!(t.update(&names(4), &same(vec![0, 1, 1, 1])).is_empty());
        assert_eq!(
            t.update(&names(4), &same(vec![0, 1, 1, 1])),
            vec!["n1".to_string()]
        );
        assert_eq!(t.assignment()["n1"], t.assignment()["n2"]);
    }

    #[test]
    fn a_move_into_a_new_group_completes_after_the_hysteresis() {
        let mut t = GroupTracker::new(3);
        t.update(&names(4), &same(vec![0, 0, 0, 0]));
        // n3 leaves into a group of its own, recomputation after recomputation.
        assert!(t.update(&names(4), &same(vec![0, 0, 0, 1])).is_empty());
        assert!(t.update(&names(4), &same(vec![0, 0, 0, 1])).is_empty());
        assert_eq!(
            t.update(&names(4), &same(vec![0, 0, 0, 1])),
            vec!["n3".to_string()]
        );
        let a = t.assignment();
        assert_ne!(a["n3"], a["n0"]);
        // And it stays put.
        assert!(t.update(&names(4), &same(vec![0, 0, 0, 1])).is_empty());
    }

    #[test]
    fn a_split_keeps_the_old_id_for_the_larger_part() {
        let mut t = GroupTracker::new(1);
        t.update(&names(5), &same(vec![0, 0, 0, 0, 0]));
        t.update(&names(5), &same(vec![0, 0, 0, 1, 1]));
        let a = t.assignment();
        assert_eq!(a["n0"][0], "g1");
        assert_eq!(a["n3"][0], "g2");
        assert_eq!(a["n3"], a["n4"]);
    }

    #[test]
    fn absent_nodes_keep_their_groups() {
        let mut t = GroupTracker::new(1);
        t.update(&names(3), &same(vec![0, 0, 1]));
        let n2 = t.assignment()["n2"].clone();
        t.update(&names(2), &same(vec![0, 0]));
        assert_eq!(t.assignment()["n2"], n2);
    }
}
