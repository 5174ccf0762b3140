//! Place on a large cluster: zone first by construction.
//!
//! The exact search ([`super::diameter`]) swaps single nodes and costs
//! O(k²·n) per round: at 5,000 nodes it cannot finish inside a query's
//! deadline. Here the same centre-ball idea runs over *units* (the eligible
//! members of one l1 group, [`Estimator`]) instead of nodes:
//!
//! 1. For every unit as a centre, the ball of the required units, the
//!    centre and the nearest other units until they hold at least k
//!    eligible nodes. Its diameter is the largest unit-to-unit distance
//!    inside it, or a member unit's own width. A ball inside one rack is
//!    as narrow as the rack; a job larger than any rack gets the nearest
//!    racks of one pod, then of one region, then the nearest regions: the
//!    cheapest union of nearby groups.
//! 2. Balls within the tie limit of the narrowest ([`super::tie_limit`]:
//!    the same latency level, capped at twice the smallest ball radius)
//!    count as equally good for latency; among the first
//!    [`MAX_TIED`] of them the answer is the one whose chosen nodes have
//!    the best bandwidth step, then mean quality (as in the exact search).
//! 3. Inside a ball, k nodes by quality (healthiest first), then nearest
//!    unit first; never both ends of a pair measured unreachable.
//!
//! Cost: O(u² log u) for u units, plus k² figures for each tied ball;
//! independent of how many pairs were measured. With the unit distances
//! obeying the triangle inequality, every unit of a ball is within its
//! radius r of the centre unit, so any two of its units are within 2r.

use std::collections::HashSet;

use crate::Result;

use super::diameter::{Stop, stopped};
use super::estimate::Estimator;

/// Tied balls whose chosen nodes are compared by bandwidth and quality:
/// each costs k² bandwidth lookups.
const MAX_TIED: usize = 32;

/// A ball of units and the k nodes chosen in it.
#[derive(Debug, Clone)]
pub(super) struct Ball {
    /// Units, the required ones first, then the centre, then nearest first.
    units: Vec<usize>,
    /// Largest distance inside the ball (estimated where not measured).
    pub(super) diameter: f64,
    /// Largest distance from the centre unit.
    pub(super) radius: f64,
}

/// The distinct balls that hold at least k eligible nodes, narrowest first.
pub(super) fn balls(
    est: &Estimator,
    k: usize,
    required: &[usize],
    stop: &Stop,
) -> Result<Vec<Ball>> {
    let units = est.units();
    let mut forced: Vec<usize> = Vec::new();
    for &i in required {
        let u = est.unit(i);
        if !forced.contains(&u) {
            forced.push(u);
        }
    }
    let mut seen: HashSet<Vec<usize>> = HashSet::new();
    let mut out = Vec::new();
    for centre in 0..units {
        if centre % 64 == 0 {
            stopped(stop)?;
        }
        let mut set = forced.clone();
        if !set.contains(&centre) {
            set.push(centre);
        }
        let mut size: usize = set.iter().map(|&u| est.members[u].len()).sum();
        if size < k {
            let mut near: Vec<(f64, usize)> = (0..units)
                .filter(|u| !set.contains(u))
                .map(|u| (est.between(centre, u), u))
                .filter(|(d, _)| d.is_finite())
                .collect();
            // Nearest first; ties by unit number, so answers repeat.
            near.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            for (_, u) in near {
                if size >= k {
                    break;
                }
                size += est.members[u].len();
                set.push(u);
            }
        }
        if size < k {
            continue;
        }
        let mut key = set.clone();
        key.sort_unstable();
        if !seen.insert(key) {
            continue;
        }
        let radius = set
            .iter()
            .map(|&u| est.between(centre, u))
            .fold(est.span[centre], f64::max);
        let mut diameter = set.iter().map(|&u| est.span[u]).fold(0.0, f64::max);
        for (x, &a) in set.iter().enumerate() {
            for &b in &set[x + 1..] {
                diameter = diameter.max(est.between(a, b));
            }
        }
        out.push(Ball {
            units: set,
            diameter,
            radius,
        });
    }
    // Stable: equal diameters keep the centre order.
    out.sort_by(|a, b| a.diameter.total_cmp(&b.diameter));
    Ok(out)
}

/// k nodes of `ball`: the required ones, then by quality (healthiest
/// first), then nearest unit first, then node index; skipping a node
/// measured unreachable from one already chosen. `None` when the ball
/// cannot give k such nodes.
pub(super) fn pick(
    est: &Estimator,
    ball: &Ball,
    k: usize,
    required: &[usize],
    quality: &[Option<u32>],
) -> Option<Vec<usize>> {
    let mut ranked: Vec<(u32, usize, usize)> = ball
        .units
        .iter()
        .enumerate()
        .flat_map(|(pos, &u)| est.members[u].iter().map(move |&i| (pos, i)))
        .filter(|(_, i)| !required.contains(i))
        .map(|(pos, i)| (quality[i].unwrap_or(0), pos, i))
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut chosen: Vec<usize> = required.to_vec();
    for (_, _, i) in ranked {
        if chosen.len() >= k {
            break;
        }
        if chosen.iter().any(|&c| est.broken(c, i)) {
            continue;
        }
        chosen.push(i);
    }
    chosen.sort_unstable();
    (chosen.len() == k).then_some(chosen)
}

/// The balls worth comparing: those within `limit`, at most [`MAX_TIED`].
pub(super) fn tied(balls: &[Ball], limit: f64) -> impl Iterator<Item = &Ball> {
    balls
        .iter()
        .take_while(move |b| b.diameter <= limit)
        .take(MAX_TIED)
}

#[cfg(test)]
mod tests;
