//! Jobs with shape: ranks that talk heavily come in nested groups (tensor
//! parallel inside data parallel, say), and which node gets which rank
//! decides how often the heavy traffic crosses a slow link.
//!
//! A shape is written innermost level first, as Megatron-style launchers
//! order them: `tp=2,dp=4` is 8 ranks, ranks 0–1, 2–3, 4–5 and 6–7 each a
//! tensor-parallel pair, and the four pairs a data-parallel ring. Rank `r`
//! belongs to group `r / 2` of the inner level.
//!
//! [`rank_order`] gives the ranks to a chosen set of nodes level by level:
//! the innermost groups are formed from the closest nodes (complete
//! linkage: a group's cost is its largest RTT), each level's groups are
//! then treated as one node whose distance to another is the largest RTT
//! between their members, and at every level the members follow a
//! nearest-neighbour ring, so that the ring of the level above crosses a
//! slow link as few times as the nodes allow.

use crate::{Error, Result};

/// Levels one shape may have at most (tensor, pipeline, data, expert
/// parallel, and one spare).
pub const MAX_LEVELS: usize = 5;
/// Longest level name.
const MAX_NAME: usize = 16;
/// Ranks one shape may have at most: giving them out compares every pair of
/// nodes at every level (a 1,024-rank order takes well under a second).
pub const MAX_RANKS: usize = 1024;

/// One level of a shape: `size` groups of the level below (ranks, for the
/// innermost) form one group of this level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Level {
    pub name: String,
    pub size: usize,
}

/// Nested groups of ranks, innermost level first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    levels: Vec<Level>,
}

impl Shape {
    /// Parse `name=size[,name=size…]`, innermost first (`tp=2,dp=4`).
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: String| Error::BadShape {
            shape: text.chars().take(100).collect(),
            why,
        };
        let text = text.trim();
        if text.is_empty() {
            return Err(bad("it is empty".into()));
        }
        let mut levels: Vec<Level> = Vec::new();
        for part in text.split(',') {
            let Some((name, size)) = part.trim().split_once('=') else {
                return Err(bad(format!("'{}' is not name=size", part.trim())));
            };
            let name = name.trim();
            let valid_name = !name.is_empty()
                && name.len() <= MAX_NAME
                && name.starts_with(|c: char| c.is_ascii_lowercase())
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !valid_name {
                return Err(bad(format!(
                    "level name '{name}' must be 1 to {MAX_NAME} lower-case letters, digits or '_', starting with a letter"
                )));
            }
            if levels.iter().any(|l| l.name == name) {
                return Err(bad(format!("level '{name}' is named twice")));
            }
            let size: usize = size
                .trim()
                .parse()
                .ok()
                .filter(|s| *s >= 1)
                .ok_or_else(|| {
                    bad(format!(
                        "the size of '{name}' must be a whole number of at least 1"
                    ))
                })?;
            levels.push(Level {
                name: name.to_string(),
                size,
            });
        }
        if levels.len() > MAX_LEVELS {
            return Err(bad(format!(
                "{} levels; at most {MAX_LEVELS} are accepted",
                levels.len()
            )));
        }
        let ranks = levels
            .iter()
            .try_fold(1usize, |acc, l| acc.checked_mul(l.size));
        if ranks.is_none_or(|r| r > MAX_RANKS) {
            return Err(bad(format!(
                "its ranks (the product of the sizes) are more than the {MAX_RANKS} a shaped job may have"
            )));
        }
        Ok(Self { levels })
    }

    /// The levels, innermost first.
    pub fn levels(&self) -> &[Level] {
        &self.levels
    }

    /// Ranks in all: the product of the levels' sizes.
    pub fn ranks(&self) -> usize {
        self.levels.iter().map(|l| l.size).product()
    }
}

/// Which of `nodes` nodes gets each rank of `shape`: `out[rank]` is a node
/// index. `rtt(a, b)` is the pair's round trip (any unit; symmetric, and
/// `f64::INFINITY` for a pair with no figure). Refused unless there is
/// exactly one node per rank.
pub fn rank_order(
    shape: &Shape,
    nodes: usize,
    rtt: impl Fn(usize, usize) -> f64,
) -> Result<Vec<usize>> {
    if nodes != shape.ranks() {
        return Err(Error::ShapeSize {
            ranks: shape.ranks(),
            nodes,
        });
    }
    // Units of the current level: each an ordered list of nodes. At the
    // start every node is a unit of its own.
    let mut units: Vec<Vec<usize>> = (0..nodes).map(|n| vec![n]).collect();
    for level in &shape.levels {
        // Complete linkage: two units are as far apart as their farthest
        // members.
        let d: Vec<Vec<f64>> = units
            .iter()
            .map(|a| {
                units
                    .iter()
                    .map(|b| {
                        a.iter()
                            .flat_map(|x| b.iter().map(|y| rtt(*x, *y)))
                            .fold(0.0f64, f64::max)
                    })
                    .collect()
            })
            .collect();
        units = group(&d, level.size)
            .into_iter()
            .map(|members| {
                ring(&members, &d)
                    .into_iter()
                    .flat_map(|u| units[u].iter().copied())
                    .collect()
            })
            .collect();
    }
    // One unit is left: the whole job, in rank order.
    Ok(units.into_iter().flatten().collect())
}

/// Partition the units of distance matrix `d` into groups of `size` by
/// complete linkage: a group starts from the closest remaining pair and
/// grows by the unit whose largest distance to the group is smallest. Ties
/// go to the lower index, so the result does not depend on hash order.
fn group(d: &[Vec<f64>], size: usize) -> Vec<Vec<usize>> {
    let n = d.len();
    let mut left: Vec<usize> = (0..n).collect();
    let mut out = Vec::with_capacity(n / size.max(1));
    while !left.is_empty() {
        // The closest pair among those left seeds the group.
        let mut members = match closest_pair(d, &left) {
            Some((a, b)) if size >= 2 => vec![a, b],
            _ => vec![left[0]],
        };
        while members.len() < size {
            let next = left
                .iter()
                .filter(|u| !members.contains(u))
                .map(|&u| (members.iter().map(|&m| d[u][m]).fold(0.0f64, f64::max), u))
                .min_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
            match next {
                Some((_, u)) => members.push(u),
                None => break,
            }
        }
        left.retain(|u| !members.contains(u));
        members.sort_unstable();
        out.push(members);
    }
    out
}

/// The closest pair among `left` by `d` (the first in order on a tie),
/// if two are left.
fn closest_pair(d: &[Vec<f64>], left: &[usize]) -> Option<(usize, usize)> {
    left.iter()
        .enumerate()
        .flat_map(|(i, &a)| left[i + 1..].iter().map(move |&b| (a, b)))
        .min_by(|x, y| d[x.0][x.1].total_cmp(&d[y.0][y.1]))
}

/// `members` in a nearest-neighbour ring from the first: each next one is
/// the closest (by `d`) not yet taken, so a ring over several sites visits
/// each site's members together.
fn ring(members: &[usize], d: &[Vec<f64>]) -> Vec<usize> {
    let mut left = members.to_vec();
    let mut out = Vec::with_capacity(left.len());
    let Some(first) = left.first().copied() else {
        return out;
    };
    left.remove(0);
    out.push(first);
    while !left.is_empty() {
        let last = out[out.len() - 1];
        let i = (0..left.len())
            .min_by(|&x, &y| {
                d[last][left[x]]
                    .total_cmp(&d[last][left[y]])
                    .then(left[x].cmp(&left[y]))
            })
            .unwrap_or(0);
        out.push(left.remove(i));
    }
    out
}

#[cfg(test)]
mod tests;
