//! Choosing k nodes whose largest pairwise RTT (the set's *diameter*) is as
//! small as possible: one slow link paces a whole all-reduce ring.
//!
//! The problem is NP-hard and no algorithm does better than a factor 2 unless
//! P = NP. For distances that obey the triangle inequality, the ball around
//! the best centre (a node and its k − 1 nearest) is within a factor 2 of the
//! optimum: every member is within r of the centre, so any two are within 2r,
//! and the optimum's diameter is at least r for the best centre. Local search
//! then swaps a member for an outsider while that shrinks the diameter.
//! Unmeasured pairs are infinitely far, so a set is never chosen across them
//! when any measured set exists.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::groups::Distances;
use crate::{Error, Result};

/// Set by another thread to end a search early (the query's deadline
/// passed): the search then returns [`Error::Stopped`] instead of running
/// on while nobody waits for it.
pub type Stop = AtomicBool;

pub(super) fn stopped(stop: &Stop) -> Result<()> {
    if stop.load(Ordering::Relaxed) {
        return Err(Error::Stopped);
    }
    Ok(())
}

/// Nodes that must or may be chosen (indices into the distance matrix).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Candidates {
    /// Nodes allowed in the answer.
    pub eligible: Vec<usize>,
    /// Nodes that must be in the answer (a subset of `eligible`).
    pub include: Vec<usize>,
}

/// The chosen set and its diameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// Chosen node indices, sorted.
    pub nodes: Vec<usize>,
    /// Largest distance between two chosen nodes (0 for one node).
    pub diameter: f64,
}

/// Largest pairwise distance of a set.
pub fn diameter(d: &Distances, set: &[usize]) -> f64 {
    let mut m: f64 = 0.0;
    for (x, &a) in set.iter().enumerate() {
        for &b in &set[x + 1..] {
            m = m.max(d.get(a, b));
        }
    }
    m
}

fn check(k: usize, c: &Candidates) -> Result<()> {
    if k == 0 {
        return Err(Error::ZeroK);
    }
    if let Some(&bad) = c.include.iter().find(|i| !c.eligible.contains(i)) {
        return Err(Error::IncludeNotEligible(bad));
    }
    if c.include.len() > k {
        return Err(Error::TooManyIncluded {
            k,
            include: c.include.len(),
        });
    }
    if c.eligible.len() < k {
        return Err(Error::TooFewEligible {
            k,
            eligible: c.eligible.len(),
        });
    }
    Ok(())
}

/// The ball around `centre`: the required nodes, then the nearest others.
fn ball(d: &Distances, c: &Candidates, centre: usize, k: usize) -> Vec<usize> {
    let mut set: Vec<usize> = c.include.clone();
    if !set.contains(&centre) {
        set.push(centre);
    }
    let mut others: Vec<usize> = c
        .eligible
        .iter()
        .copied()
        .filter(|x| !set.contains(x))
        .collect();
    // Nearest first; ties by index, so the answer is deterministic.
    others.sort_by(|&a, &b| {
        d.get(centre, a)
            .total_cmp(&d.get(centre, b))
            .then(a.cmp(&b))
    });
    set.extend(others.into_iter().take(k.saturating_sub(set.len())));
    set.truncate(k.max(c.include.len()));
    set
}

/// Whether a ball of k can grow around `centre`: with required nodes the
/// centre is one more member, so a centre outside them must leave room.
fn may_centre(c: &Candidates, centre: usize, k: usize) -> bool {
    c.include.contains(&centre) || c.include.len() < k
}

/// The distinct centre balls of size k, smallest diameter first.
pub fn balls(d: &Distances, k: usize, c: &Candidates) -> Result<Vec<Choice>> {
    check(k, c)?;
    let mut out: Vec<Choice> = Vec::new();
    for &centre in &c.eligible {
        if !may_centre(c, centre, k) {
            continue;
        }
        let mut set = ball(d, c, centre, k);
        if set.len() != k {
            continue;
        }
        set.sort_unstable();
        if out.iter().any(|o| o.nodes == set) {
            continue;
        }
        let diameter = diameter(d, &set);
        out.push(Choice {
            nodes: set,
            diameter,
        });
    }
    // Stable: equal diameters keep the centre order, so answers are repeatable.
    out.sort_by(|a, b| a.diameter.total_cmp(&b.diameter));
    Ok(out)
}

/// A lower bound on the optimum's diameter: the smallest ball radius. For
/// any member c of an optimal set, the ball around c reaches its k − 1
/// nearest within the optimum's diameter, so the smallest radius over all
/// centres is at most the optimum.
pub fn lower_bound(d: &Distances, k: usize, c: &Candidates) -> f64 {
    c.eligible
        .iter()
        .filter(|&&centre| may_centre(c, centre, k))
        .map(|&centre| {
            ball(d, c, centre, k)
                .iter()
                .map(|&x| d.get(centre, x))
                .fold(0.0, f64::max)
        })
        .fold(f64::INFINITY, f64::min)
}

/// Centre-ball 2-approximation followed by swap local search.
pub fn choose(d: &Distances, k: usize, c: &Candidates, stop: &Stop) -> Result<Choice> {
    let Some(start) = balls(d, k, c)?.into_iter().next() else {
        return Err(Error::TooFewEligible {
            k,
            eligible: c.eligible.len(),
        });
    };
    let nodes = shrink(d, start.nodes, c, stop)?;
    Ok(Choice {
        diameter: diameter(d, &nodes),
        nodes,
    })
}

/// Swap local search on the diameter alone: the same walk as
/// [`swap_search`] with the diameter as value (the same swaps, in the same
/// order, so the same answer), but a trial costs O(k) instead of O(k²): the
/// diameter after swapping member `pos` for `out` is the larger of the
/// others' diameter (computed once per position) and `out`'s farthest
/// distance to the others.
fn shrink(d: &Distances, mut set: Vec<usize>, c: &Candidates, stop: &Stop) -> Result<Vec<usize>> {
    let mut best = diameter(d, &set);
    let mut member = vec![false; d.len()];
    for &m in &set {
        member[m] = true;
    }
    loop {
        stopped(stop)?;
        let mut bound = best;
        let mut improved: Option<(usize, usize)> = None;
        for pos in 0..set.len() {
            if c.include.contains(&set[pos]) {
                continue;
            }
            let rest = diameter_without(d, &set, pos);
            if rest >= bound {
                continue;
            }
            for &out in &c.eligible {
                if member[out] {
                    continue;
                }
                let mut v = rest;
                for (x, &m) in set.iter().enumerate() {
                    if x != pos {
                        v = v.max(d.get(out, m));
                        if v >= bound {
                            break;
                        }
                    }
                }
                if v < bound {
                    bound = v;
                    improved = Some((pos, out));
                }
            }
        }
        let Some((pos, out)) = improved else {
            break;
        };
        member[set[pos]] = false;
        member[out] = true;
        set[pos] = out;
        best = bound;
    }
    set.sort_unstable();
    Ok(set)
}

/// The diameter of `set` without its member at `pos`.
fn diameter_without(d: &Distances, set: &[usize], pos: usize) -> f64 {
    let mut m: f64 = 0.0;
    for (x, &a) in set.iter().enumerate() {
        if x == pos {
            continue;
        }
        for (y, &b) in set.iter().enumerate().skip(x + 1) {
            if y != pos {
                m = m.max(d.get(a, b));
            }
        }
    }
    m
}

/// Among sets whose diameter stays within `limit`, move to a better one by
/// `key` (larger is better), one swap at a time, while a swap improves it.
///
/// Used to break near-ties: measured RTTs of nodes in one zone differ by
/// noise, and between sets that are equally good for latency the one with
/// the faster links and healthier nodes is better for the job.
pub fn refine<K: PartialOrd>(
    d: &Distances,
    choice: Choice,
    c: &Candidates,
    limit: f64,
    key: impl Fn(&[usize]) -> K,
    stop: &Stop,
) -> Result<Choice> {
    let start = key(&choice.nodes);
    let nodes = swap_search(
        choice.nodes,
        c,
        start,
        |s| (diameter(d, s) <= limit).then(|| key(s)),
        stop,
    )?;
    Ok(Choice {
        diameter: diameter(d, &nodes),
        nodes,
    })
}

/// Swap local search: replace one member (never a required one) by an
/// outsider, taking the best swap by `value` (larger is better; `None`: the
/// set is not allowed), until no swap beats the current set's value
/// (`start` for the set given). Returns the set sorted.
fn swap_search<K: PartialOrd>(
    mut set: Vec<usize>,
    c: &Candidates,
    start: K,
    value: impl Fn(&[usize]) -> Option<K>,
    stop: &Stop,
) -> Result<Vec<usize>> {
    let mut best = start;
    loop {
        stopped(stop)?;
        let mut improved: Option<(K, usize, usize)> = None;
        for pos in 0..set.len() {
            if c.include.contains(&set[pos]) {
                continue;
            }
            for &out in &c.eligible {
                if set.contains(&out) {
                    continue;
                }
                let mut trial = set.clone();
                trial[pos] = out;
                let Some(v) = value(&trial) else {
                    continue;
                };
                if v > *improved.as_ref().map_or(&best, |(b, _, _)| b) {
                    improved = Some((v, pos, out));
                }
            }
        }
        match improved {
            Some((v, pos, out)) => {
                set[pos] = out;
                best = v;
            }
            None => break,
        }
    }
    set.sort_unstable();
    Ok(set)
}

#[cfg(test)]
pub(crate) mod tests;
