//! RTTs for pairs nobody probes.
//!
//! Past the full-mesh bound each agent probes a bounded set of peers
//! (docs/architecture.md, "Probe plans at scale"), so most pairs of a large
//! cluster have no measurement. Their figures come from the latency groups
//! instead: the eligible members of one l1 group form a *unit*, and
//!
//! - a pair inside a unit that was not measured is as far as the unit's
//!   group is wide (its largest measured RTT, which complete linkage keeps
//!   under the l1 threshold);
//! - two units are as far apart as the largest reachable RTT measured
//!   between their members (the representatives and ring neighbours of the
//!   plans give most unit pairs several); with none measured, as wide as
//!   the smallest group holding both (l2, then l3), and between regions as
//!   the largest RTT measured between the two l3 groups.
//!
//! Taking the largest keeps estimates on the slow side, as complete
//! linkage does. A measured pair that is unreachable (too lossy to use) is
//! kept apart: it never makes a whole rack unusable, but its two nodes are
//! never chosen together ([`Estimator::broken`]).

use std::collections::{HashMap, HashSet};

use crate::{Error, Result};

use super::{View, Zone};

/// Most units the unit-level search works with: the unit distance table is
/// `units²` entries (16 MiB at this bound). Only a cluster without groups
/// yet (every node its own unit) comes near it.
pub(super) const MAX_UNITS: usize = 2_048;

/// Sentinel for "no group at this level".
const NONE: u32 = u32::MAX;

/// Figures for every pair of eligible nodes: measured where measured,
/// estimated from the groups elsewhere.
#[derive(Debug)]
pub(super) struct Estimator {
    /// Unit of each node (by node index), `NONE` for nodes not eligible.
    unit_of: Vec<u32>,
    /// Eligible members of each unit, ascending.
    pub(super) members: Vec<Vec<usize>>,
    /// How wide each unit is: its l1 group's largest measured RTT, or the
    /// largest measured among its eligible members if that is larger.
    pub(super) span: Vec<f64>,
    /// Unit-to-unit distances, `units × units`, row-major; infinite =
    /// unknown or unreachable.
    dist: Vec<f32>,
    /// Pairs measured unreachable, by node (both directions).
    broken: HashMap<usize, HashSet<usize>>,
}

/// Largest reachable and whether any unreachable pair was seen.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    max: Option<f64>,
    broken: bool,
}

impl Seen {
    fn add(&mut self, d: f64) {
        if d.is_finite() {
            self.max = Some(self.max.map_or(d, |m| m.max(d)));
        } else {
            self.broken = true;
        }
    }
}

impl Estimator {
    /// Units and their distances for `eligible` (node indices), in one
    /// pass over the measured pairs of the eligible nodes.
    pub(super) fn new(v: &View, eligible: &[usize]) -> Result<Self> {
        let n = v.names.len();
        // Each node's group at every level, by index into `v.zones`.
        let mut zone_of = vec![[NONE; 3]; n];
        for (z, zone) in v.zones.iter().enumerate() {
            let Some(level) = (zone.level as usize).checked_sub(1).filter(|l| *l < 3) else {
                continue;
            };
            for &m in &zone.members {
                if let Some(slot) = zone_of.get_mut(m) {
                    slot[level] = z as u32;
                }
            }
        }
        // Units: the eligible members of each l1 group; a node without one
        // is a unit of its own.
        let mut unit_of = vec![NONE; n];
        let mut members: Vec<Vec<usize>> = Vec::new();
        let mut unit_zone: Vec<[u32; 3]> = Vec::new();
        let mut by_l1: HashMap<u32, u32> = HashMap::new();
        for &i in eligible {
            let zones = zone_of[i];
            let u = if zones[0] == NONE {
                None
            } else {
                by_l1.get(&zones[0]).copied()
            };
            let u = u.unwrap_or_else(|| {
                let u = members.len() as u32;
                members.push(Vec::new());
                unit_zone.push(zones);
                if zones[0] != NONE {
                    by_l1.insert(zones[0], u);
                }
                u
            });
            unit_of[i] = u;
            members[u as usize].push(i);
        }
        let units = members.len();
        if units > MAX_UNITS {
            return Err(Error::TooManyUnits {
                units,
                max: MAX_UNITS,
            });
        }
        let width = |z: u32| -> f64 {
            if z == NONE {
                f64::INFINITY
            } else {
                v.zones[z as usize].max_rtt_us
            }
        };
        let mut span: Vec<f64> = unit_zone
            .iter()
            .zip(&members)
            .map(|(z, m)| if m.len() > 1 { width(z[0]) } else { 0.0 })
            .collect();

        // Keyed by unit pair (lower first): only pairs with a measurement
        // take room.
        let mut seen: HashMap<(u32, u32), Seen> = HashMap::new();
        let mut regions: HashMap<(u32, u32), Seen> = HashMap::new();
        let mut broken: HashMap<usize, HashSet<usize>> = HashMap::new();
        for &i in eligible {
            for &(j, d) in &v.rtt[i] {
                if j <= i || unit_of.get(j).is_none_or(|&u| u == NONE) {
                    continue;
                }
                let (a, b) = (unit_of[i], unit_of[j]);
                seen.entry((a.min(b), a.max(b))).or_default().add(d);
                let (ra, rb) = (zone_of[i][2], zone_of[j][2]);
                if ra != rb && ra != NONE && rb != NONE {
                    regions.entry((ra.min(rb), ra.max(rb))).or_default().add(d);
                }
                if !d.is_finite() {
                    broken.entry(i).or_default().insert(j);
                    broken.entry(j).or_default().insert(i);
                }
            }
        }
        let mut dist = vec![f32::INFINITY; units * units];
        for a in 0..units {
            for b in a..units {
                let s = seen.get(&(a as u32, b as u32)).copied().unwrap_or_default();
                let d = if a == b {
                    span[a] = span[a].max(s.max.unwrap_or(0.0));
                    0.0
                } else {
                    match s {
                        Seen { max: Some(m), .. } => m,
                        // Only unreachable pairs measured between them.
                        Seen { broken: true, .. } => f64::INFINITY,
                        _ => estimate(&unit_zone[a], &unit_zone[b], &width, &regions),
                    }
                };
                dist[a * units + b] = d as f32;
                dist[b * units + a] = d as f32;
            }
        }
        Ok(Self {
            unit_of,
            members,
            span,
            dist,
            broken,
        })
    }

    pub(super) fn units(&self) -> usize {
        self.members.len()
    }

    /// The unit of an eligible node.
    pub(super) fn unit(&self, i: usize) -> usize {
        self.unit_of[i] as usize
    }

    /// Distance between two units (0 from a unit to itself).
    pub(super) fn between(&self, a: usize, b: usize) -> f64 {
        f64::from(self.dist[a * self.members.len() + b])
    }

    /// Whether `i` and `j` were measured unreachable from each other.
    pub(super) fn broken(&self, i: usize, j: usize) -> bool {
        self.broken.get(&i).is_some_and(|s| s.contains(&j))
    }

    /// The RTT of a pair of eligible nodes and whether it was measured.
    pub(super) fn rtt(&self, v: &View, i: usize, j: usize) -> (f64, bool) {
        if i == j {
            return (0.0, true);
        }
        if let Some(d) = measured(v, i, j) {
            return (d, true);
        }
        let (a, b) = (self.unit(i), self.unit(j));
        if a == b {
            (self.span[a], false)
        } else {
            (self.between(a, b), false)
        }
    }
}

/// The measured RTT of a pair (rows of [`View::rtt`] are sorted by peer).
pub(super) fn measured(v: &View, i: usize, j: usize) -> Option<f64> {
    let row = v.rtt.get(i)?;
    row.binary_search_by_key(&j, |&(p, _)| p)
        .ok()
        .map(|x| row[x].1)
}

/// Two units with no pair measured between them: as wide as the smallest
/// group holding both, else (different regions) the largest RTT measured
/// between their regions, else unknown.
fn estimate(
    a: &[u32; 3],
    b: &[u32; 3],
    width: &impl Fn(u32) -> f64,
    regions: &HashMap<(u32, u32), Seen>,
) -> f64 {
    for level in 1..3 {
        if a[level] != NONE && a[level] == b[level] {
            return width(a[level]);
        }
    }
    let (ra, rb) = (a[2], b[2]);
    if ra == NONE || rb == NONE {
        return f64::INFINITY;
    }
    regions
        .get(&(ra.min(rb), ra.max(rb)))
        .and_then(|s| s.max)
        .unwrap_or(f64::INFINITY)
}

/// The groups of [`crate::infer::Group`] by node index, for [`View::zones`].
pub(super) fn zones(groups: &[crate::infer::Group], index: &HashMap<&str, usize>) -> Vec<Zone> {
    groups
        .iter()
        .map(|g| Zone {
            level: g.level,
            members: g
                .members
                .iter()
                .filter_map(|m| index.get(m.as_str()).copied())
                .collect(),
            max_rtt_us: g.max_rtt_us,
        })
        .collect()
}
