//! Jobs with shape: ranks that talk heavily come in nested groups (tensor
//! parallel inside data parallel, say), and which node gets which rank
//! decides how often the heavy traffic crosses a slow link.
//!
//! A shape is written innermost level first, as Megatron-style launchers
//! order them: `tp=2,dp=4` is 8 ranks, ranks 0–1, 2–3, 4–5 and 6–7 each a
//! tensor-parallel pair, and the four pairs a data-parallel ring. Rank `r`
//! belongs to group `r / 2` of the inner level.
//!
//! A level may say how many bytes its groups all-reduce per step
//! (`tp=2:256MiB,dp=4:16MiB`: heavy inside the tensor-parallel pairs,
//! lighter across them); a level without gets the request's all-reduce
//! size.
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
    /// Bytes each group of this level all-reduces per step; `None`: the
    /// request's all-reduce size.
    pub bytes: Option<u64>,
}

/// Nested groups of ranks, innermost level first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    levels: Vec<Level>,
}

impl Shape {
    /// Parse `name=size[:bytes][,…]`, innermost first (`tp=2,dp=4`,
    /// `tp=2:256MiB,dp=4:16MiB`); `bytes` reads a byte count (the caller's
    /// grammar, `8MiB` in the CLI) or says what is wrong with it.
    pub fn parse(
        text: &str,
        bytes: impl Fn(&str) -> std::result::Result<u64, String>,
    ) -> Result<Self> {
        let bad = |why: String| bad_shape(text, why);
        let text = text.trim();
        if text.is_empty() {
            return Err(bad("it is empty".into()));
        }
        let mut levels: Vec<Level> = Vec::new();
        // More parts than levels allowed are refused by `new`; stop reading
        // there so a megabyte of commas costs nothing.
        for part in text.split(',').take(MAX_LEVELS + 1) {
            let Some((name, rest)) = part.trim().split_once('=') else {
                return Err(bad(format!("'{}' is not name=size", part.trim())));
            };
            let (size, size_bytes) = match rest.split_once(':') {
                Some((size, b)) => (
                    size,
                    Some(
                        bytes(b.trim())
                            .map_err(|e| bad(format!("the bytes of '{}': {e}", name.trim())))?,
                    ),
                ),
                None => (rest, None),
            };
            let size: usize = size
                .trim()
                .parse()
                .ok()
                .filter(|s| *s >= 1)
                .ok_or_else(|| {
                    bad(format!(
                        "the size of '{}' must be a whole number of at least 1",
                        name.trim()
                    ))
                })?;
            levels.push(Level {
                name: name.trim().to_string(),
                size,
                bytes: size_bytes,
            });
        }
        Self::new(levels).map_err(|e| match e {
            Error::BadShape { why, .. } => bad(why),
            other => other,
        })
    }

    /// A shape from its levels, innermost first (as the Place request
    /// carries them), checked as [`Shape::parse`] checks text.
    pub fn new(levels: Vec<Level>) -> Result<Self> {
        let text = levels
            .iter()
            .take(MAX_LEVELS + 1)
            .map(|l| {
                format!(
                    "{}={}",
                    l.name.chars().take(MAX_NAME + 1).collect::<String>(),
                    l.size
                )
            })
            .collect::<Vec<_>>()
            .join(",");
        let bad = |why: String| bad_shape(&text, why);
        if levels.is_empty() {
            return Err(bad("it has no levels".into()));
        }
        if levels.len() > MAX_LEVELS {
            return Err(bad(format!(
                "{} levels or more; at most {MAX_LEVELS} are accepted",
                levels.len()
            )));
        }
        for (i, l) in levels.iter().enumerate() {
            let name = l.name.as_str();
            let valid_name = !name.is_empty()
                && name.len() <= MAX_NAME
                && name.starts_with(|c: char| c.is_ascii_lowercase())
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !valid_name {
                return Err(bad(format!(
                    "level name '{}' must be 1 to {MAX_NAME} lower-case letters, digits or '_', starting with a letter",
                    name.chars().take(MAX_NAME + 1).collect::<String>()
                )));
            }
            if levels[..i].iter().any(|o| o.name == name) {
                return Err(bad(format!("level '{name}' is named twice")));
            }
            if l.size == 0 {
                return Err(bad(format!(
                    "the size of '{name}' must be a whole number of at least 1"
                )));
            }
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

    /// The all-reduce rings of each level, innermost first, as lists of
    /// ranks: with Megatron's convention, a group of level `l` is `size`
    /// consecutive groups of the level below, and its ring joins the ranks
    /// at the same position in each of them (`tp=2,dp=4`: tensor-parallel
    /// rings {0,1} {2,3} {4,5} {6,7}; data-parallel rings {0,2,4,6} and
    /// {1,3,5,7}).
    pub fn rings(&self) -> Vec<Vec<Vec<usize>>> {
        let ranks = self.ranks();
        let mut stride = 1usize;
        let mut out = Vec::with_capacity(self.levels.len());
        for l in &self.levels {
            let block = stride * l.size;
            let mut rings = Vec::with_capacity(ranks / l.size.max(1));
            for base in (0..ranks).step_by(block.max(1)) {
                for offset in 0..stride {
                    rings.push((0..l.size).map(|j| base + offset + j * stride).collect());
                }
            }
            out.push(rings);
            stride = block;
        }
        out
    }
}

fn bad_shape(text: &str, why: String) -> Error {
    Error::BadShape {
        shape: text.chars().take(100).collect(),
        why,
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
        let d = linkage(&units, &rtt);
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

/// Candidate node sets for `shape` among `n` nodes, bottom-up: every level
/// below the top partitions the units left (nodes, then groups) into
/// groups of its size by complete linkage, keeping only full groups; the
/// top level then grows one group of its size from each unit as a seed,
/// taking the unit nearest (largest distance) to the group each time, and
/// once more taking tight units (not much wider inside than the tightest)
/// before loose ones. So
/// every tensor-parallel pair a candidate has is a close pair, even when
/// the whole job spans sites. At most `seeds` candidates, each sorted;
/// none when the nodes cannot fill the shape. `d(a, b)` is symmetric
/// (infinite: unusable pair).
pub(crate) fn candidates(
    shape: &Shape,
    n: usize,
    d: impl Fn(usize, usize) -> f64,
    seeds: usize,
) -> Vec<Vec<usize>> {
    let Some((top, below)) = shape.levels.split_last() else {
        return Vec::new();
    };
    let mut units: Vec<Vec<usize>> = (0..n).map(|x| vec![x]).collect();
    for level in below {
        let dist = linkage(&units, &d);
        units = group(&dist, level.size)
            .into_iter()
            .filter(|g| g.len() == level.size)
            .map(|g| g.into_iter().flat_map(|u| units[u].clone()).collect())
            .collect();
    }
    if units.len() < top.size {
        return Vec::new();
    }
    let dist = linkage(&units, &d);
    // A unit is tight when its own largest distance is at most twice the
    // tightest unit's: a pair formed from two sites' leftovers is not. The
    // nearest-unit growth alone would take such a pair when both its
    // sites are already in (it adds no distance between units), and put
    // the heavy traffic of the level below across a slow link.
    let internal: Vec<f64> = units
        .iter()
        .map(|u| {
            u.iter()
                .flat_map(|&x| u.iter().map(move |&y| (x, y)))
                .filter(|(x, y)| x != y)
                .map(|(x, y)| d(x, y))
                .fold(0.0f64, f64::max)
        })
        .collect();
    let tightest = internal.iter().copied().fold(f64::INFINITY, f64::min);
    let loose = |u: usize| u8::from(internal[u] > 2.0 * tightest);
    let mut out: Vec<Vec<usize>> = Vec::new();
    for seed in 0..units.len() {
        if out.len() >= seeds {
            break;
        }
        // Each seed grown twice: nearest unit first, and tight units first.
        for tight_first in [false, true] {
            let mut members = vec![seed];
            while members.len() < top.size {
                let next = (0..units.len())
                    .filter(|u| !members.contains(u))
                    .map(|u| {
                        let far = members.iter().map(|&m| dist[u][m]).fold(0.0f64, f64::max);
                        let class = if tight_first { loose(u) } else { 0 };
                        (class, far, u)
                    })
                    .min_by(|x, y| x.0.cmp(&y.0).then(x.1.total_cmp(&y.1)).then(x.2.cmp(&y.2)));
                match next {
                    Some((_, far, u)) if far.is_finite() => members.push(u),
                    _ => break,
                }
            }
            if members.len() < top.size {
                continue;
            }
            let mut set: Vec<usize> = members.iter().flat_map(|&u| units[u].clone()).collect();
            set.sort_unstable();
            if !out.contains(&set) {
                out.push(set);
            }
        }
    }
    out
}

/// Complete linkage: two units (lists of nodes) are as far apart as their
/// farthest members; a node is 0 from itself.
fn linkage(units: &[Vec<usize>], d: &impl Fn(usize, usize) -> f64) -> Vec<Vec<f64>> {
    units
        .iter()
        .map(|a| {
            units
                .iter()
                .map(|b| {
                    a.iter()
                        .flat_map(|&x| b.iter().map(move |&y| (x, y)))
                        .map(|(x, y)| if x == y { 0.0 } else { d(x, y) })
                        .fold(0.0f64, f64::max)
                })
                .collect()
        })
        .collect()
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
pub(crate) mod tests;
