//! The synthetic network a scale run measures: racks in pods in regions,
//! with RTTs that depend on the deepest level two nodes share, a per-pair
//! offset (cabling, path), per-window noise, a few degraded nodes and a few
//! broken links. Everything is a pure function of the node count and the
//! seed, so two runs with one seed see one network.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use rand_distr::{Binomial, Distribution, StandardNormal};

/// RTT p50 (µs) of two nodes whose deepest shared level is the rack, the
/// pod or the region, as the hierarchy puts them; other regions are
/// [`INTER_REGION_US`] apart.
pub const RACK_US: f64 = 50.0;
pub const POD_US: f64 = 300.0;
pub const REGION_US: f64 = 2_000.0;
/// Base RTT between regions; each region pair draws its own in this range.
pub const INTER_REGION_US: std::ops::Range<f64> = 25_000.0..40_000.0;

/// The aggregator's group thresholds for this hierarchy: each level's cut
/// at the geometric mean of the RTTs on either side of it (racks 50 µs vs
/// pods 300 µs, pods vs regions 2 ms, regions vs 25+ ms), so the run tests
/// the clustering, not the choice of thresholds.
pub const THRESHOLDS: &str = "120us,800us,8ms";

/// Nodes per rack, racks per pod.
const RACK_SIZE: std::ops::RangeInclusive<usize> = 16..=32;
const RACKS_PER_POD: std::ops::RangeInclusive<usize> = 4..=8;
/// Nodes per region, roughly: regions = ceil(n / this), at least 2.
const NODES_PER_REGION: usize = 1_000;
/// One degraded node per this many nodes (at least one).
const NODES_PER_DEGRADED: usize = 500;
/// One broken link (every probe lost) per this many nodes.
const NODES_PER_BROKEN_LINK: usize = 100;

/// Probe loss and jitter of a degraded node, on every link it has.
const DEGRADED_LOSS: std::ops::Range<f64> = 0.02..0.05;
const DEGRADED_JITTER_US: f64 = 400.0;
/// Probe loss of the node degraded during a run.
pub const FAULT_LOSS: f64 = 0.04;

/// One node of the synthetic cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    /// Ground-truth level ids: rack, pod, region (globally unique numbers).
    pub levels: [u32; 3],
    /// Extra probe loss (0 for a healthy node).
    pub loss: f64,
    pub degraded: bool,
}

/// The whole synthetic network.
#[derive(Debug)]
pub struct Truth {
    nodes: Vec<Node>,
    index: HashMap<String, usize>,
    /// Base RTT (µs) between two regions, by region pair.
    inter_region: HashMap<(u32, u32), f64>,
    /// Unordered pairs (lower index first) that lose every probe.
    broken: HashSet<(usize, usize)>,
    seed: u64,
    /// A node degraded during the run (index + 1; 0: none), read by the
    /// agents' tasks while they run.
    fault: AtomicUsize,
}

/// One window's figures for a directed pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowFigures {
    pub sent: u64,
    pub received: u64,
    pub min_ns: u64,
    pub mean_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    pub jitter_ns: u64,
}

fn mix(a: u64, b: u64) -> u64 {
    // SplitMix64's finaliser: a well-spread hash of two numbers, so a
    // pair's fixed offset needs no table.
    let mut z = a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.rotate_left(32);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Truth {
    /// `n` nodes, the first `n - joining` of which start with the run (the
    /// rest join later: they sit in existing racks). The layout depends on
    /// `n` and `seed` only.
    pub fn generate(n: usize, seed: u64) -> Self {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let regions = n.div_ceil(NODES_PER_REGION).max(2);
        let mut nodes = Vec::with_capacity(n);
        let (mut rack, mut pod) = (0u32, 0u32);
        for region in 0..regions {
            // Spread the remainder over the first regions.
            let quota = n / regions + usize::from(region < n % regions);
            let mut left = quota;
            while left > 0 {
                let racks = rng.random_range(RACKS_PER_POD);
                for _ in 0..racks {
                    let size = rng.random_range(RACK_SIZE).min(left);
                    for _ in 0..size {
                        nodes.push(Node {
                            name: format!("node-{:05}", nodes.len()),
                            levels: [rack, pod, region as u32],
                            loss: 0.0,
                            degraded: false,
                        });
                    }
                    left -= size;
                    rack += 1;
                    if left == 0 {
                        break;
                    }
                }
                pod += 1;
            }
        }
        // Degraded nodes: at most one per pod, so "the lowest quality of
        // its group" names one node.
        let want = (n / NODES_PER_DEGRADED).max(1).min(pod as usize);
        let mut pods_taken = HashSet::new();
        let mut degraded = 0;
        while degraded < want {
            let i = rng.random_range(0..n);
            if pods_taken.insert(nodes[i].levels[1]) {
                nodes[i].degraded = true;
                nodes[i].loss = rng.random_range(DEGRADED_LOSS);
                degraded += 1;
            }
        }
        let mut broken = HashSet::new();
        while n >= 2 && broken.len() < n / NODES_PER_BROKEN_LINK {
            let (a, b) = (rng.random_range(0..n), rng.random_range(0..n));
            if a != b {
                broken.insert((a.min(b), a.max(b)));
            }
        }
        let mut inter_region = HashMap::new();
        for a in 0..regions as u32 {
            for b in a + 1..regions as u32 {
                inter_region.insert((a, b), rng.random_range(INTER_REGION_US));
            }
        }
        let index = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        Self {
            nodes,
            index,
            inter_region,
            broken,
            seed,
            fault: AtomicUsize::new(0),
        }
    }

    /// Degrade node `i` from now on: [`FAULT_LOSS`] and the degraded
    /// jitter on every link it has.
    pub fn inject_fault(&self, i: usize) {
        self.fault.store(i + 1, Ordering::Relaxed);
    }

    /// Degraded from the start or by [`inject_fault`](Self::inject_fault).
    pub fn is_degraded(&self, i: usize) -> bool {
        self.nodes[i].degraded || self.fault.load(Ordering::Relaxed) == i + 1
    }

    fn node_loss(&self, i: usize) -> f64 {
        if self.fault.load(Ordering::Relaxed) == i + 1 {
            FAULT_LOSS
        } else {
            self.nodes[i].loss
        }
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The node's ground-truth id at `level` (0 rack, 1 pod, 2 region).
    pub fn level(&self, i: usize, level: usize) -> u32 {
        self.nodes[i].levels[level]
    }

    /// The pair's RTT p50 (µs) without window noise: the base of the
    /// deepest shared level times a fixed per-pair factor in [0.9, 1.1].
    pub fn rtt_us(&self, a: usize, b: usize) -> f64 {
        let (x, y) = (&self.nodes[a].levels, &self.nodes[b].levels);
        let base = if x[0] == y[0] {
            RACK_US
        } else if x[1] == y[1] {
            POD_US
        } else if x[2] == y[2] {
            REGION_US
        } else {
            let key = (x[2].min(y[2]), x[2].max(y[2]));
            self.inter_region
                .get(&key)
                .copied()
                .unwrap_or(INTER_REGION_US.start)
        };
        let h = mix(self.seed ^ a.min(b) as u64, a.max(b) as u64);
        let factor = 0.9 + 0.2 * (h % 10_000) as f64 / 10_000.0;
        base * factor
    }

    pub fn is_broken(&self, a: usize, b: usize) -> bool {
        self.broken.contains(&(a.min(b), a.max(b)))
    }

    /// Probe loss of the pair: every probe on a broken link, else the
    /// worse end's.
    pub fn loss(&self, a: usize, b: usize) -> f64 {
        if self.is_broken(a, b) {
            1.0
        } else {
            self.node_loss(a).max(self.node_loss(b))
        }
    }

    /// One window of `sent` probes from `a` to `b`, drawn with `rng`.
    pub fn window(&self, a: usize, b: usize, sent: u64, rng: &mut impl rand::Rng) -> WindowFigures {
        let loss = self.loss(a, b);
        let received = Binomial::new(sent, 1.0 - loss)
            .map(|d| d.sample(rng))
            .unwrap_or(0);
        let base = self.rtt_us(a, b);
        let noise: f64 = rng.sample(StandardNormal);
        let p50 = base * (1.0 + 0.02 * noise.clamp(-3.0, 3.0));
        let degraded = self.is_degraded(a) || self.is_degraded(b);
        let jitter = if degraded {
            DEGRADED_JITTER_US
        } else {
            (0.02 * base).max(2.0)
        };
        let ns = |us: f64| (us.max(1.0) * 1_000.0).round() as u64;
        let mean = ns(p50 * 1.02);
        let (min, p50, p90, p99) = (
            ns(p50 * 0.9),
            ns(p50),
            ns(p50 * 1.05 + jitter),
            ns(p50 * 1.15 + 3.0 * jitter),
        );
        let max = p99 + ns(jitter);
        WindowFigures {
            sent,
            received,
            min_ns: min,
            mean_ns: mean.clamp(min, max),
            p50_ns: p50.max(min),
            p90_ns: p90.max(p50),
            p99_ns: p99.max(p90),
            max_ns: max,
            jitter_ns: ns(jitter),
        }
    }
}

#[cfg(test)]
mod tests;
