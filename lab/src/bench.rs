//! `netaware-lab bench`: a real Open MPI all-reduce (mpi4py, one rank per
//! chosen node, each in its node's namespace with its own hostname) on node
//! sets chosen several ways, so placements are compared by what a training
//! job would feel, not by our own figures.
//!
//! Placements:
//! * `netaware` — the aggregator's `Place` answer;
//! * `latency-only` — the smallest largest measured RTT, nothing else (the
//!   centre-ball + swap search without netaware's zone-first tie-break);
//! * `spread` — round-robin over regions, as topology spreading does;
//! * `random`, `random-2`, … — k nodes drawn with the given seed, the next
//!   seed, …;
//! * `optimal` — brute force over every k-set by the emulator's configured
//!   figures: smallest largest loss first (a lost packet stalls a
//!   synchronous collective for a retransmission timeout, far longer than
//!   any RTT difference inside a region), then smallest largest RTT, then
//!   largest bottleneck cap (when the number of sets is small enough).
//!
//! With `--shape` (a shaped job, docs/placement.md "Jobs with shape") the
//! rank program runs each level's all-reduce in turn, ranks in the order
//! each placement gives them: `netaware-shaped` (Place with the shape: its
//! nodes and rank order) first, then the shape-blind placements with ranks
//! in name order, as a launcher gives them out. Two placements are the
//! same only with the same nodes in the same order; there is no `optimal`.
//!
//! Repeatability: a node set that several placements chose is measured
//! once and reported for each of them; the distinct sets run in rounds
//! (A B C, A B C, …) so drift on the shared machine hits them alike; p50,
//! p90 and each ratio to netaware carry 95 % bootstrap intervals. (One
//! bench run on 14 nodes once measured the same four nodes at 310, 346 and
//! 390 ms as three "different" placements, one after another.)

use std::path::Path;
use std::process::{Command, Stdio};

use netaware_model::groups::Distances;
use netaware_model::matrix::PLACEMENT_LOSS_PROBES;
use netaware_model::place::cost::{self, Prediction, RingLink};
use netaware_model::place::diameter::{self, Candidates};
use netaware_model::place::{PREDICTION_STEP, PairFigures, predict_ranks};
use netaware_model::shape::Shape;
use netaware_proto::ProbeMethod;
use netaware_proto::v1::GetMatrixResponse;
use rand::rngs::Xoshiro256PlusPlus;
use rand::seq::index::sample;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use crate::emulator::LatenessSummary;
use crate::error::{Error, Result};
use crate::topology::Topology;

/// Brute force is tried when there are at most this many k-sets.
pub const MAX_BRUTE_FORCE_SETS: u64 = 200_000;

/// How long a bench measures at least before placing, by default: until
/// the placement loss figure counts its full horizon of probes (100 s at
/// the lab's 10 a second). Placed sooner, a lossy link's figure rests on a
/// few hundred probes, and `Place` takes whichever set happens to read low
/// (docs/benchmarks.md §8, "Why netaware loses at geo-12, k = 8").
pub fn default_settle(probe_interval: std::time::Duration) -> std::time::Duration {
    probe_interval.mul_f64(PLACEMENT_LOSS_PROBES)
}
/// Debian's interpreter, where `python3-mpi4py` installs mpi4py.
pub const DEFAULT_PYTHON: &str = "/usr/bin/python3";
/// Bootstrap resamples per interval: the usual count for percentile
/// intervals at 95 %, and cheap (a bench has tens of times per set).
const RESAMPLES: usize = 2_000;
/// The rank program, written next to the logs at run time.
const RANK_PROGRAM: &str = include_str!("allreduce.py");

/// Which all-reduce algorithm Open MPI uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// Ring (Open MPI tuned algorithm 4), as NCCL and Horovod use for
    /// data-parallel training and as `Place`'s prediction models.
    Ring,
    /// Recursive doubling (Open MPI tuned algorithm 3): log₂ k exchanges
    /// of the whole buffer, the alternative Open MPI picks for small
    /// messages; predicted by `cost::recursive_doubling`.
    RecursiveDoubling,
    /// Open MPI's own choice by message size and rank count (predicted as
    /// a ring).
    Default,
}

/// What to benchmark.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub k: usize,
    pub bytes: u64,
    pub iters: u32,
    /// The timed iterations of each distinct set are split into this many
    /// interleaved rounds.
    pub rounds: u32,
    /// Seed of the first random placement (the others take the next ones).
    pub seed: u64,
    /// Random placements (drawn with seed, seed + 1, …).
    pub random_sets: u32,
    pub algorithm: Algorithm,
    pub python: String,
    /// Measure at least this long before placing.
    pub settle: std::time::Duration,
    /// A shaped job: each level's all-reduce in turn (a level without
    /// bytes of its own takes `bytes`).
    pub shape: Option<Shape>,
}

impl BenchOptions {
    /// The rank program's level arguments, `SIZE:BYTES` innermost first
    /// (one level of all ranks without a shape).
    pub fn levels(&self) -> Vec<String> {
        match &self.shape {
            Some(s) => s
                .levels()
                .iter()
                .map(|l| format!("{}:{}", l.size, l.bytes.unwrap_or(self.bytes)))
                .collect(),
            None => vec![format!("{}:{}", self.k, self.bytes)],
        }
    }
}

/// The emulator's configured figures of a set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ConfiguredSet {
    pub max_rtt_ms: f64,
    /// Smallest cap between two members (`None`: no pair is capped).
    pub bottleneck_mbps: Option<f64>,
    /// Largest one-way loss on a link between two members.
    pub max_loss: f64,
}

/// One placement's result.
#[derive(Debug, Clone, Serialize)]
pub struct PlacementResult {
    pub name: String,
    pub nodes: Vec<String>,
    pub iter_ms_p50: f64,
    pub iter_ms_p90: f64,
    /// 95 % bootstrap intervals of the p50 and p90.
    pub iter_ms_p50_ci95: [f64; 2],
    pub iter_ms_p90_ci95: [f64; 2],
    /// The mean iteration and its 95 % bootstrap interval: what a training
    /// job's total time adds up, and what the model predicts. A lossy set's
    /// iterations are either on time or whole timeouts late, so its median
    /// is a coin flip between the two; its mean is not.
    pub iter_ms_mean: f64,
    pub iter_ms_mean_ci95: [f64; 2],
    /// This placement's median divided by netaware's.
    pub ratio_to_netaware: Option<f64>,
    /// 95 % bootstrap interval of the ratio (both medians resampled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_netaware_ci95: Option<[f64; 2]>,
    /// This placement's mean divided by netaware's, and its interval: the
    /// ratio that holds from run to run when stalls make the medians jump.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_ratio_to_netaware: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_ratio_to_netaware_ci95: Option<[f64; 2]>,
    /// The earlier placement that chose the same nodes: the times are that
    /// one measurement's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub same_set_as: Option<String>,
    pub configured: ConfiguredSet,
    /// The set's figures in the matrix the placements were chosen from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measured: Option<MeasuredSet>,
    /// `Place`'s prediction from `measured` (every pair measured): the
    /// total, and its latency, bandwidth and loss parts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicted_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prediction: Option<Prediction>,
    /// The prediction's on-time part bounded below by what the job needs
    /// of this machine's cores ([`HostPart::cpu_ms`]), plus its loss part,
    /// when the bench measured the cores: what the lab, whose nodes all
    /// share them, should take.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicted_with_host_ms: Option<f64>,
    /// The prediction the bench compares (`predicted_with_host_ms` when
    /// the cores were measured, else `predicted_ms`) ÷ `iter_ms_p50`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicted_over_measured: Option<f64>,
    /// The same ÷ `iter_ms_mean`: the comparison the model is made for
    /// (its loss part is an expectation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicted_over_mean: Option<f64>,
    /// How late the lab's emulator delivered packets while this set's
    /// all-reduces ran (all rounds): a lab that falls behind slows the set
    /// down by itself, which no measurement of the network predicts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emulator: Option<LatenessSummary>,
    /// Share of the machine's CPU time that was busy while this set's
    /// timed all-reduces ran (all rounds; rank 0 reads `/proc/stat`
    /// around its timed iterations): near 1, every
    /// node's ranks and the kernel's work for every emulated link shared
    /// cores the emulated cluster would not share, and the lab, not the
    /// network, may have set the pace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_busy: Option<f64>,
    pub iter_ms: Vec<f64>,
}

impl PlacementResult {
    /// Bound the prediction's on-time part (all but its loss part) below
    /// by `cpu_ms`, what the job needs of this machine's cores, add the
    /// loss part back (a retransmission timeout is idle waiting, which
    /// the cores' work does not fill), and compare the result with what
    /// was measured.
    fn add_host(&mut self, cpu_ms: f64) {
        let Some(p) = self.prediction else {
            return;
        };
        let total = (p.total_ms - p.loss_ms).max(cpu_ms) + p.loss_ms;
        self.predicted_with_host_ms = Some(total);
        let (p50, mean) = (self.iter_ms_p50, self.iter_ms_mean);
        self.predicted_over_measured = (p50 > 0.0).then(|| total / p50);
        self.predicted_over_mean = (mean > 0.0).then(|| total / mean);
    }

    /// The prediction the bench compares with: bounded by the cores when
    /// they were measured.
    fn predicted_total_ms(&self) -> Option<f64> {
        self.predicted_with_host_ms.or(self.predicted_ms)
    }
}

/// What the job needs of this machine's cores, whatever the network:
/// a lower bound on every set's time in the lab. On a real cluster each
/// node has its own cores, and copies and reductions (the γ of the α-β-γ
/// model) take a few milliseconds; in the lab every node's ranks, the
/// kernel and the emulator share this machine's two, so a ring inside one
/// region at 1 Gbit/s is bound by them, not by its links
/// (docs/benchmarks.md §8). Two parts, both measured, neither fitted to
/// the sets' times:
/// * the ranks' own work: the same all-reduce with every rank on this
///   machine over loopback ([`run_host`]), interleaved with the rounds;
/// * forwarding what the job puts on the wire ([`wire_bytes`]) at the
///   most the lab was seen to forward at once ([`forwarded_at_once`]).
#[derive(Debug, Clone, Serialize)]
pub struct HostPart {
    pub iter_ms_mean: f64,
    pub iter_ms_p50: f64,
    pub iter_ms: Vec<f64>,
    /// Bytes the job puts on the wire, all ranks together.
    pub wire_bytes: f64,
    /// Mbit/s: the largest total of a concurrent test (`None`: no group
    /// was tested; then only the ranks' own work counts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_mbps: Option<f64>,
    /// The ranks' own work (the loopback mean) plus forwarding.
    pub cpu_ms: f64,
}

impl HostPart {
    pub fn new(iter_ms: Vec<f64>, wire_bytes: f64, forward_mbps: Option<f64>) -> Self {
        let own = mean(&iter_ms);
        let forwarding = forward_mbps
            .filter(|c| *c > 0.0)
            .map_or(0.0, |c| wire_bytes * 8.0 / (c * 1000.0));
        Self {
            iter_ms_mean: own,
            iter_ms_p50: percentiles(&iter_ms).0,
            iter_ms,
            wire_bytes,
            forward_mbps,
            cpu_ms: own + forwarding,
        }
    }
}

/// Bytes the job puts on the wire, all ranks together, each level in
/// turn: a ring of s ranks moves 2(s − 1)·b (each rank sends 2(s − 1)/s
/// of the b bytes); recursive doubling, p′·log₂ p′·b among the largest
/// power of two p′ ≤ s, plus b each way for every rank beyond it.
pub fn wire_bytes(o: &BenchOptions) -> f64 {
    let levels: Vec<(usize, u64)> = match &o.shape {
        Some(s) => s
            .levels()
            .iter()
            .map(|l| (l.size, l.bytes.unwrap_or(o.bytes)))
            .collect(),
        None => vec![(o.k, o.bytes)],
    };
    levels
        .into_iter()
        .filter(|&(size, _)| size >= 2)
        .map(|(size, bytes)| {
            let groups = (o.k / size) as f64;
            let b = bytes as f64;
            let one = match o.algorithm {
                Algorithm::RecursiveDoubling => {
                    let p2 = 1usize << size.ilog2();
                    (p2 as f64) * f64::from(size.ilog2()) * b + 2.0 * (size - p2) as f64 * b
                }
                Algorithm::Ring | Algorithm::Default => 2.0 * (size - 1) as f64 * b,
            };
            groups * one
        })
        .sum()
}

/// The most the lab was seen to forward at once (Mbit/s): the largest
/// total of the flows of one concurrent test in `m`. A lower bound on
/// what this machine forwards; `None` when no group was tested.
pub fn forwarded_at_once(m: &GetMatrixResponse) -> Option<f64> {
    m.concurrent
        .iter()
        .map(|c| c.flow_mbps.iter().filter(|x| x.is_finite()).sum::<f64>())
        .filter(|t| *t > 0.0)
        .reduce(f64::max)
}

/// Some span of the machine's CPU time, in clock ticks: busy (all but
/// idle and iowait, as `/proc/stat` counts them) and total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

impl CpuTimes {
    /// Add `other`'s time.
    pub fn add(&mut self, other: Self) {
        self.busy += other.busy;
        self.total += other.total;
    }

    /// Busy share of the time added up; `None` when no time passed.
    pub fn busy_share(self) -> Option<f64> {
        (self.total > 0).then(|| self.busy as f64 / self.total as f64)
    }
}

/// Above this busy share of the machine's CPU time, a set slower than
/// predicted is reported as CPU-bound: the lab's cores, not the emulated
/// network, may have set its pace.
pub const CPU_BUSY_LIMIT: f64 = 0.95;

/// More packets than this share more than 1 ms late, and the emulator,
/// not the emulated network, set the pace (the goal for a faithful
/// lab is at most 0.1 %).
pub const EMULATOR_LATE_LIMIT: f64 = 0.001;

/// A prediction this far from the measured mean (either way) is called
/// out in the report, with what may explain it.
pub const PREDICTION_BAND: (f64, f64) = (0.8, 1.25);

/// The benchmark report (JSON contract in docs/lab.md; fields may be added).
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub topology: String,
    pub k: usize,
    pub bytes: u64,
    /// The shape, as given (`tp=2:8MiB,dp=4:1MiB`); absent for one ring.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shape: Option<String>,
    pub iters: u32,
    pub rounds: u32,
    pub algorithm: Algorithm,
    pub seed: u64,
    /// What `Place` itself answered for netaware's set (its own reading
    /// of the matrix, a moment before the bench's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub place_predicted_ms: Option<f64>,
    /// Spearman's rank correlation of predicted and measured medians over
    /// the distinct sets with a prediction: 1 means the model orders the
    /// sets as the runs did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spearman_predicted_measured: Option<f64>,
    /// The same against the measured means, which the model predicts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spearman_predicted_mean: Option<f64>,
    /// Both again with predictions within 5 % of each other tied
    /// ([`tie_close`]): `Place` does not choose between such sets on their
    /// predictions, so the model makes no claim about their order, and
    /// ranking them anyway reads the runs' noise as its error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spearman_tied_predicted_measured: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spearman_tied_predicted_mean: Option<f64>,
    /// The order claim without the noise: of the pairs of sets the model
    /// predicts more than 5 % apart, how many ran in that order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ordered_pairs: Option<OrderedPairs>,
    /// What the job needs of this machine's cores, which bounds every
    /// prediction's on-time part below.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<HostPart>,
    pub placements: Vec<PlacementResult>,
}

impl BenchReport {
    /// Bound every set's prediction's on-time part below by what the job
    /// needs of this machine's cores (`host.cpu_ms`; see
    /// [`PlacementResult::add_host`]). Spearman keeps `Place`'s own
    /// predictions: the order it chooses by.
    pub fn with_host(mut self, host: HostPart) -> Self {
        for p in &mut self.placements {
            p.add_host(host.cpu_ms);
        }
        self.host = Some(host);
        self
    }
}

/// Round-robin over regions (in order of first appearance), nodes in file
/// order within a region.
pub fn spread(topo: &Topology, k: usize) -> Vec<usize> {
    let mut regions: Vec<Vec<usize>> = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for (i, n) in topo.nodes.iter().enumerate() {
        match names.iter().position(|r| *r == n.region) {
            Some(r) => regions[r].push(i),
            None => {
                names.push(&n.region);
                regions.push(vec![i]);
            }
        }
    }
    let mut out = Vec::new();
    let mut round = 0;
    while out.len() < k && out.len() < topo.nodes.len() {
        for r in &regions {
            if let Some(&i) = r.get(round)
                && out.len() < k
            {
                out.push(i);
            }
        }
        round += 1;
    }
    out
}

/// `k` of `n` nodes drawn with `seed`.
pub fn random(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut v = sample(&mut rng, n, k.min(n)).into_vec();
    v.sort_unstable();
    v
}

/// The emulator's figures of a set.
pub fn configured(topo: &Topology, set: &[usize]) -> ConfiguredSet {
    let (mut rtt, mut cap, mut loss) = (0.0f64, None::<f64>, 0.0f64);
    for &a in set {
        for &b in set {
            if a == b {
                continue;
            }
            let (f, r) = (topo.link(a, b), topo.link(b, a));
            rtt = rtt.max(f.delay_ms + r.delay_ms);
            loss = loss.max(f.loss);
            if let Some(c) = f.bandwidth_mbps {
                cap = Some(cap.map_or(c, |x: f64| x.min(c)));
            }
        }
    }
    ConfiguredSet {
        max_rtt_ms: rtt,
        bottleneck_mbps: cap,
        max_loss: loss,
    }
}

fn binomial(n: u64, k: u64) -> u64 {
    (0..k.min(n - k.min(n))).fold(1u64, |acc, i| acc.saturating_mul(n - i) / (i + 1))
}

/// The best set by the configured figures, if brute force is affordable.
pub fn optimal(topo: &Topology, k: usize) -> Option<Vec<usize>> {
    let n = topo.nodes.len();
    if k > n || binomial(n as u64, k as u64) > MAX_BRUTE_FORCE_SETS {
        return None;
    }
    // Smaller is better: (max loss, max RTT, -bottleneck).
    let key = |s: &[usize]| {
        let c = configured(topo, s);
        (
            c.max_loss,
            c.max_rtt_ms,
            -c.bottleneck_mbps.unwrap_or(f64::MAX),
        )
    };
    let mut best: Option<((f64, f64, f64), Vec<usize>)> = None;
    let mut set: Vec<usize> = (0..k).collect();
    loop {
        let kk = key(&set);
        if best.as_ref().is_none_or(|(b, _)| kk < *b) {
            best = Some((kk, set.clone()));
        }
        // Next combination in lexicographic order.
        let Some(pos) = (0..k).rev().find(|&p| set[p] < n - k + p) else {
            break;
        };
        set[pos] += 1;
        for p in pos + 1..k {
            set[p] = set[p - 1] + 1;
        }
    }
    best.map(|(_, s)| s)
}

/// The latency-only choice from the measured matrix: worse direction of
/// each pair's smoothed UDP RTT p50, smallest largest RTT.
pub fn latency_only(m: &GetMatrixResponse, names: &[String], k: usize) -> Result<Vec<String>> {
    let idx = |n: &str| names.iter().position(|x| x == n);
    let mut d = Distances::new(names.len());
    for ((a, b), v) in pair_rtts(m) {
        if let (Some(a), Some(b)) = (idx(a), idx(b)) {
            d.set(a, b, v);
        }
    }
    let c = Candidates {
        eligible: (0..names.len()).collect(),
        include: Vec::new(),
    };
    // Nothing stops the lab's own search.
    let choice = diameter::choose(&d, k, &c, &diameter::Stop::new(false))?;
    Ok(choice.nodes.iter().map(|&i| names[i].clone()).collect())
}

/// Each measured pair's RTT (µs) as `Place` reads it: the worse direction
/// of the smoothed UDP p50s, from links that have answered (a link that
/// never did has no RTT, not one of 0).
fn pair_rtts(m: &GetMatrixResponse) -> std::collections::BTreeMap<(&str, &str), f64> {
    let mut worse = std::collections::BTreeMap::new();
    for l in &m.links {
        let Some(s) = l.smoothed.as_ref() else {
            continue;
        };
        if l.method == ProbeMethod::StampUdp as i32 && s.rtt_known {
            let e = worse.entry(pair_key(&l.src, &l.dst)).or_insert(0.0f64);
            *e = e.max(s.rtt_p50_us);
        }
    }
    worse
}

/// An unordered pair of node names, as a map key.
fn pair_key<'a>(a: &'a str, b: &'a str) -> (&'a str, &'a str) {
    (a.min(b), a.max(b))
}

/// A set's figures as the bench read them from the measured matrix: what
/// `Place`'s model sees.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeasuredSet {
    /// Largest pair RTT: the worse direction of each pair's smoothed UDP p50.
    pub max_rtt_us: f64,
    /// Smallest pair bandwidth a job can count on: the lower direction's
    /// latest test, capped by the group share of a concurrent test that
    /// held both ends.
    pub bottleneck_mbps: Option<f64>,
    /// The smallest group share (concurrent tests) among the set's pairs,
    /// if any pair's ends were tested together.
    pub shared_mbps: Option<f64>,
    /// Largest loss (`placement_loss_ppm`, UDP) of a link between two
    /// members.
    pub max_loss_ppm: f64,
    /// Round-trip loss (ppm, the worse direction's `placement_loss_ppm`,
    /// UDP) of
    /// each ring link, in the order the ranks were given out: member i to
    /// member i + 1, the last back to the first.
    pub ring_loss_ppm: Vec<f64>,
    /// Round-trip loss (ppm) between every two members, by rank: what a
    /// recursive doubling's exchanges lose (not in the report: the ring
    /// links and the largest say it there).
    #[serde(skip)]
    pub pair_loss_ppm: Vec<Vec<f64>>,
    /// Every pair has an RTT and a bandwidth.
    pub complete: bool,
}

/// `set`'s figures in `m`.
pub fn measured(m: &GetMatrixResponse, set: &[String]) -> MeasuredSet {
    let member = |n: &str| set.iter().any(|s| s == n);
    let ours = |(a, b): &(&str, &str)| member(a) && member(b);
    let rtt: Vec<f64> = pair_rtts(m)
        .into_iter()
        .filter(|(k, _)| ours(k))
        .map(|(_, v)| v)
        .collect();
    let loss = pair_losses(m);
    let between = |a: &str, b: &str| {
        if a == b {
            0.0
        } else {
            loss.get(&pair_key(a, b)).copied().unwrap_or(0.0)
        }
    };
    let pair_loss_ppm: Vec<Vec<f64>> = set
        .iter()
        .map(|a| set.iter().map(|b| between(a, b)).collect())
        .collect();
    // The ring's links are pairs too: member i to member i + 1.
    let ring_loss_ppm = (0..set.len())
        .map(|i| pair_loss_ppm[i][(i + 1) % set.len()])
        .collect();
    let bw: Vec<f64> = pair_bandwidths(m)
        .into_iter()
        .filter(|(k, _)| ours(k))
        .map(|(_, v)| v)
        .collect();
    // The smallest share of a concurrent test that held a pair of the set.
    let shared = m
        .concurrent
        .iter()
        .filter(|c| c.members.iter().filter(|x| member(x)).count() >= 2)
        .map(|c| c.share_mbps)
        .reduce(f64::min);
    let pairs = set.len() * set.len().saturating_sub(1) / 2;
    MeasuredSet {
        max_rtt_us: rtt.iter().copied().fold(0.0, f64::max),
        bottleneck_mbps: bw.iter().copied().reduce(f64::min),
        shared_mbps: shared,
        max_loss_ppm: loss
            .iter()
            .filter(|(k, _)| ours(k))
            .map(|(_, v)| *v)
            .fold(0.0, f64::max),
        ring_loss_ppm,
        pair_loss_ppm,
        complete: rtt.len() == pairs && bw.len() == pairs,
    }
}

/// `Place`'s prediction of a shaped job with rank `r` on `ranks[r]`, from
/// the pair figures in `m` read as `measured` reads them (`None` unless
/// every pair of every ring has an RTT and a bandwidth).
pub fn predict_shaped(
    m: &GetMatrixResponse,
    ranks: &[String],
    shape: &Shape,
    bytes: u64,
) -> Option<Prediction> {
    let name = |i: usize| ranks[i].as_str();
    let rtts = pair_rtts(m);
    let bw = pair_bandwidths(m);
    let loss = pair_losses(m);
    let rtt = |a: usize, b: usize| {
        rtts.get(&pair_key(name(a), name(b)))
            .copied()
            .unwrap_or(f64::INFINITY)
    };
    let bandwidth = |a: usize, b: usize| bw.get(&pair_key(name(a), name(b))).copied();
    let lost = |a: usize, b: usize| {
        loss.get(&pair_key(name(a), name(b)))
            .map_or(0.0, |ppm| ppm / 1e6)
    };
    let f = PairFigures {
        rtt_us: &rtt,
        bandwidth_mbps: &bandwidth,
        loss: &lost,
    };
    let order: Vec<usize> = (0..ranks.len()).collect();
    predict_ranks(shape, bytes, &order, &f)
        .0
        .filter(|p| p.total_ms.is_finite())
}

/// Each pair's round-trip loss (ppm): the worse direction's UDP loss
/// over the long horizon `Place` reads (`placement_loss_ppm`).
fn pair_losses(m: &GetMatrixResponse) -> std::collections::BTreeMap<(&str, &str), f64> {
    let mut loss = std::collections::BTreeMap::new();
    for l in &m.links {
        if l.method == ProbeMethod::StampUdp as i32
            && let Some(s) = l.smoothed.as_ref()
        {
            let e = loss.entry(pair_key(&l.src, &l.dst)).or_insert(0.0f64);
            *e = e.max(s.placement_loss_ppm);
        }
    }
    loss
}

/// Each tested pair's bandwidth a job can count on: the lower direction's
/// latest test, capped by the share of a concurrent test that held both
/// ends (as `Place` reads it).
fn pair_bandwidths(m: &GetMatrixResponse) -> std::collections::BTreeMap<(&str, &str), f64> {
    let mut bw = std::collections::BTreeMap::new();
    for b in &m.bandwidth {
        let e = bw
            .entry(pair_key(&b.sender, &b.receiver))
            .or_insert(f64::INFINITY);
        *e = e.min(b.mbps);
    }
    for c in &m.concurrent {
        let held = |n: &str| c.members.iter().any(|x| x == n);
        for ((a, b), v) in bw.iter_mut() {
            if held(a) && held(b) {
                *v = v.min(c.share_mbps);
            }
        }
    }
    bw
}

/// `Place`'s all-reduce prediction for a set's measured figures, for the
/// algorithm the bench runs (`None` unless every pair has an RTT and a
/// bandwidth).
pub fn predict(f: &MeasuredSet, k: usize, bytes: u64, algorithm: Algorithm) -> Option<Prediction> {
    let bw = f.bottleneck_mbps.filter(|_| f.complete)?;
    if algorithm == Algorithm::RecursiveDoubling {
        let loss = |a: usize, b: usize| {
            f.pair_loss_ppm
                .get(a)
                .and_then(|row| row.get(b))
                .map_or(0.0, |ppm| ppm / 1e6)
        };
        return cost::recursive_doubling(k, bytes, f.max_rtt_us, bw, loss);
    }
    let ring: Vec<RingLink> = f
        .ring_loss_ppm
        .iter()
        .map(|ppm| RingLink { loss: ppm / 1e6 })
        .collect();
    cost::ring(k, bytes, f.max_rtt_us, bw, &ring)
}

/// Spearman's rank correlation of `x` and `y` (ties get their mean rank);
/// `None` for fewer than two points or when either side is constant.
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    fn ranks(v: &[f64]) -> Vec<f64> {
        let mut order: Vec<usize> = (0..v.len()).collect();
        order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
        let mut r = vec![0.0; v.len()];
        let mut i = 0;
        while i < order.len() {
            let mut j = i;
            while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
                j += 1;
            }
            for &o in &order[i..=j] {
                r[o] = (i + j) as f64 / 2.0 + 1.0;
            }
            i = j + 1;
        }
        r
    }
    if x.len() != y.len() || x.len() < 2 {
        return None;
    }
    let (rx, ry) = (ranks(x), ranks(y));
    let mean = (x.len() as f64 + 1.0) / 2.0;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in rx.iter().zip(&ry) {
        sxy += (a - mean) * (b - mean);
        sxx += (a - mean) * (a - mean);
        syy += (b - mean) * (b - mean);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

/// Median and p90 (nearest rank).
pub fn percentiles(times: &[f64]) -> (f64, f64) {
    let mut t = times.to_vec();
    t.sort_by(f64::total_cmp);
    if t.is_empty() {
        return (0.0, 0.0);
    }
    (quantile(&t, 0.5), quantile(&t, 0.9))
}

/// The distinct node sets of `sets` (compared as sorted sets, or as
/// ordered lists when `ordered`: a shaped job's rank orders) in order of
/// first appearance, and for each entry of `sets` the index of its set.
pub fn distinct_sets(sets: &[Vec<String>], ordered: bool) -> (Vec<Vec<String>>, Vec<usize>) {
    let mut distinct: Vec<Vec<String>> = Vec::new();
    let mut which = Vec::with_capacity(sets.len());
    for set in sets {
        let mut sorted = set.clone();
        if !ordered {
            sorted.sort();
            sorted.dedup();
        }
        let i = distinct
            .iter()
            .position(|d| *d == sorted)
            .unwrap_or_else(|| {
                distinct.push(sorted);
                distinct.len() - 1
            });
        which.push(i);
    }
    (distinct, which)
}

/// Timed iterations per round so that `rounds` rounds give at least
/// `iters` (every round at least one).
pub fn iters_per_round(iters: u32, rounds: u32) -> u32 {
    iters.div_ceil(rounds.max(1)).max(1)
}

/// The 95 % percentile-bootstrap interval of `stat` over resamples of
/// `samples` (seeded, so a report is reproducible); `stat` gets each
/// resample sorted. `[NaN, NaN]` when `samples` is empty.
fn bootstrap<const N: usize>(
    samples: [&[f64]; N],
    seed: u64,
    stat: impl Fn([&[f64]; N]) -> f64,
) -> [f64; 2] {
    if samples.iter().any(|s| s.is_empty()) {
        return [f64::NAN; 2];
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut bufs: [Vec<f64>; N] = std::array::from_fn(|i| Vec::with_capacity(samples[i].len()));
    let mut stats: Vec<f64> = (0..RESAMPLES)
        .map(|_| {
            for (buf, s) in bufs.iter_mut().zip(samples) {
                buf.clear();
                buf.extend((0..s.len()).map(|_| s[rng.random_range(0..s.len())]));
                buf.sort_by(f64::total_cmp);
            }
            stat(std::array::from_fn(|i| bufs[i].as_slice()))
        })
        .collect();
    stats.sort_by(f64::total_cmp);
    let at = |q: f64| stats[((q * (RESAMPLES - 1) as f64).round() as usize).min(RESAMPLES - 1)];
    [at(0.025), at(0.975)]
}

/// Nearest-rank quantile of sorted, non-empty `t`.
fn quantile(t: &[f64], q: f64) -> f64 {
    t[((q * t.len() as f64).ceil() as usize).clamp(1, t.len()) - 1]
}

/// Mean of `t`; 0 when empty (as [`percentiles`] answers).
fn mean(t: &[f64]) -> f64 {
    if t.is_empty() {
        return 0.0;
    }
    t.iter().sum::<f64>() / t.len() as f64
}

/// One placement's result from its iteration times (ms).
pub fn placement_result(
    name: &str,
    nodes: Vec<String>,
    configured: ConfiguredSet,
    measured: Option<MeasuredSet>,
    prediction: Option<Prediction>,
    iter_ms: Vec<f64>,
) -> PlacementResult {
    let (p50, p90) = percentiles(&iter_ms);
    let predicted_ms = prediction.map(|p| p.total_ms);
    let predicted_over_measured = predicted_ms.filter(|_| p50 > 0.0).map(|x| x / p50);
    let avg = mean(&iter_ms);
    let predicted_over_mean = predicted_ms.filter(|_| avg > 0.0).map(|x| x / avg);
    PlacementResult {
        name: name.to_string(),
        nodes,
        iter_ms_p50: p50,
        iter_ms_p90: p90,
        iter_ms_p50_ci95: bootstrap([&iter_ms], 50, |[t]| quantile(t, 0.5)),
        iter_ms_p90_ci95: bootstrap([&iter_ms], 90, |[t]| quantile(t, 0.9)),
        iter_ms_mean: avg,
        iter_ms_mean_ci95: bootstrap([&iter_ms], 1, |[t]| mean(t)),
        ratio_to_netaware: None,
        ratio_to_netaware_ci95: None,
        mean_ratio_to_netaware: None,
        mean_ratio_to_netaware_ci95: None,
        same_set_as: None,
        configured,
        measured,
        predicted_ms,
        prediction,
        predicted_with_host_ms: None,
        predicted_over_measured,
        predicted_over_mean,
        emulator: None,
        cpu_busy: None,
        iter_ms,
    }
}

/// The report, with every placement's median compared to the first one's
/// (netaware's; no ratio when that median is 0), and placements that chose
/// the same nodes as an earlier one marked so.
pub fn report(
    topo: &Topology,
    b: &BenchOptions,
    mut placements: Vec<PlacementResult>,
) -> BenchReport {
    let ours = placements
        .first()
        .filter(|r| r.iter_ms_p50 > 0.0 && r.iter_ms_mean > 0.0)
        .map(|r| (r.iter_ms_p50, r.iter_ms_mean, r.iter_ms.clone()));
    let (_, which) = distinct_sets(
        &placements
            .iter()
            .map(|p| p.nodes.clone())
            .collect::<Vec<_>>(),
        b.shape.is_some(),
    );
    let names: Vec<String> = placements.iter().map(|p| p.name.clone()).collect();
    for (i, r) in placements.iter_mut().enumerate() {
        r.same_set_as = which[..i]
            .iter()
            .position(|&w| w == which[i])
            .map(|j| names[j].clone());
        let Some((o, o_mean, ref times)) = ours else {
            continue;
        };
        r.ratio_to_netaware = Some(r.iter_ms_p50 / o);
        r.mean_ratio_to_netaware = Some(r.iter_ms_mean / o_mean);
        if which[i] == which[0] {
            // The same measurement: the ratios are exactly 1.
            r.ratio_to_netaware_ci95 = Some([1.0, 1.0]);
            r.mean_ratio_to_netaware_ci95 = Some([1.0, 1.0]);
        } else {
            r.ratio_to_netaware_ci95 = Some(bootstrap([&r.iter_ms, times], 1, |[a, b]| {
                quantile(a, 0.5) / quantile(b, 0.5)
            }));
            r.mean_ratio_to_netaware_ci95 = Some(bootstrap([&r.iter_ms, times], 2, |[a, b]| {
                mean(a) / mean(b)
            }));
        }
    }
    BenchReport {
        topology: topo.name.clone(),
        k: b.k,
        bytes: b.bytes,
        shape: b.shape.as_ref().map(describe),
        iters: b.iters,
        rounds: b.rounds,
        algorithm: b.algorithm,
        seed: b.seed,
        place_predicted_ms: None,
        spearman_predicted_measured: order_against(&placements, false, |p| p.iter_ms_p50),
        spearman_predicted_mean: order_against(&placements, false, |p| p.iter_ms_mean),
        spearman_tied_predicted_measured: order_against(&placements, true, |p| p.iter_ms_p50),
        spearman_tied_predicted_mean: order_against(&placements, true, |p| p.iter_ms_mean),
        ordered_pairs: ordered_pairs(&placements),
        host: None,
        placements,
    }
}

/// Spearman's rank correlation of the distinct sets' predictions with
/// `measured` of each; with predictions within 5 % tied when `tied`.
fn order_against(
    placements: &[PlacementResult],
    tied: bool,
    measured: impl Fn(&PlacementResult) -> f64,
) -> Option<f64> {
    let (x, y): (Vec<f64>, Vec<f64>) = placements
        .iter()
        .filter(|p| p.same_set_as.is_none())
        .filter_map(|p| Some((p.predicted_ms?, measured(p))))
        .unzip();
    if tied {
        spearman(&tie_close(&x, PREDICTION_STEP), &y)
    } else {
        spearman(&x, &y)
    }
}

/// Pairs of distinct sets that `Place`'s model tells apart (predictions
/// more than [`PREDICTION_STEP`] apart), and how many of them the runs
/// measured in the predicted order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OrderedPairs {
    pub apart: usize,
    /// Of those, the ones whose faster-predicted set had the lower mean.
    pub by_mean: usize,
    /// The same by the median.
    pub by_median: usize,
}

/// The pairs of distinct sets with a prediction that are predicted apart,
/// and how many ran in that order; `None` with fewer than two such sets.
/// Unlike a rank correlation it leaves out what the model does not claim:
/// the order of sets it predicts alike.
fn ordered_pairs(placements: &[PlacementResult]) -> Option<OrderedPairs> {
    let sets: Vec<(f64, f64, f64)> = placements
        .iter()
        .filter(|p| p.same_set_as.is_none())
        .filter_map(|p| Some((p.predicted_ms?, p.iter_ms_mean, p.iter_ms_p50)))
        .collect();
    if sets.len() < 2 {
        return None;
    }
    let mut o = OrderedPairs {
        apart: 0,
        by_mean: 0,
        by_median: 0,
    };
    for (i, a) in sets.iter().enumerate() {
        for b in &sets[i + 1..] {
            let (fast, slow) = if a.0 <= b.0 { (a, b) } else { (b, a) };
            if slow.0 <= fast.0 * PREDICTION_STEP {
                continue;
            }
            o.apart += 1;
            o.by_mean += usize::from(fast.1 < slow.1);
            o.by_median += usize::from(fast.2 < slow.2);
        }
    }
    Some(o)
}

/// `v` with values that chain within a factor `step` of the next larger
/// one replaced by the smallest of their chain, so that rank correlation
/// ties them. Chains, not fixed bins: 597.1 and 597.6 tie wherever a bin
/// edge would fall.
pub fn tie_close(v: &[f64], step: f64) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut out = v.to_vec();
    let mut first = None::<f64>;
    let mut prev = f64::NEG_INFINITY;
    for i in order {
        let x = v[i];
        let start = match first {
            Some(f) if x <= prev * step => f,
            _ => x,
        };
        first = Some(start);
        out[i] = start;
        prev = x;
    }
    out
}

/// A shape as `name=size:bytes,…` (bytes in full, as the bench ran it).
fn describe(s: &Shape) -> String {
    s.levels()
        .iter()
        .map(|l| match l.bytes {
            Some(b) => format!("{}={}:{b}", l.name, l.size),
            None => format!("{}={}", l.name, l.size),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Write the rank program and the launcher mpirun uses instead of ssh: it
/// runs the remote command in the node's namespace under its own hostname.
pub fn prepare(dir: &Path) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let program = dir.join("allreduce.py");
    std::fs::write(&program, RANK_PROGRAM)?;
    let launcher = dir.join("mpi-launch-in-netns.sh");
    std::fs::write(
        &launcher,
        "#!/bin/sh\n\
         # mpirun's remote shell: $1 is the host (a lab node), the rest the command.\n\
         host=\"$1\"; shift\n\
         exec ip netns exec \"nwa-$host\" unshare --uts sh -c 'hostname \"$0\" && exec sh -c \"$1\"' \"$host\" \"$*\"\n",
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&launcher, std::fs::Permissions::from_mode(0o755))?;
    Ok((program, launcher))
}

/// What one mpirun measured.
#[derive(Debug, Clone, PartialEq)]
pub struct MpiRun {
    /// Each timed iteration (ms).
    pub iter_ms: Vec<f64>,
    /// The machine's CPU time over the timed iterations.
    pub cpu: Option<CpuTimes>,
}

/// The `cpu_ticks` of the rank program's answer: `[busy, total]`.
fn cpu_ticks(v: &serde_json::Value) -> Option<CpuTimes> {
    let a = v["cpu_ticks"].as_array()?;
    match a.as_slice() {
        [busy, total] => {
            let (busy, total) = (busy.as_u64()?, total.as_u64()?);
            (busy <= total).then_some(CpuTimes { busy, total })
        }
        _ => None,
    }
}

/// Run the all-reduce on `nodes`: each iteration's time and the CPU time.
pub fn run_mpi(
    nodes: &[String],
    o: &BenchOptions,
    program: &Path,
    launcher: &Path,
) -> Result<MpiRun> {
    let hosts_list = nodes.join(",");
    let mut cmd = mpirun(o);
    cmd.args(["--host", &hosts_list])
        .args(["-np", &nodes.len().to_string()])
        .arg("--mca")
        .arg("plm_rsh_agent")
        .arg(launcher)
        // Ranks talk over the emulated data network only; mpirun reaches its
        // daemons over the control bridge.
        .args(["--mca", "btl_tcp_if_include", "10.77.0.0/24"])
        .args(["--mca", "oob_tcp_if_include", "10.78.0.0/24"]);
    let (v, hosts) = run_ranks(cmd, o, program, &hosts_list)?;
    // Each rank must have run in its own node's namespace, rank r on
    // nodes[r] (a shaped job's rank order is the placement).
    let want: Vec<&str> = nodes.iter().map(String::as_str).collect();
    if hosts != want {
        return Err(Error::Run(format!(
            "ranks ran on {hosts:?}, not on {want:?} in that order: each node's namespace must \
             have its own hostname, and mpirun must give rank r the r-th host"
        )));
    }
    mpi_run(&v, &hosts_list)
}

/// Run the same all-reduce with every rank in this namespace, talking over
/// loopback: what the job costs this machine with no network in the way
/// (copies, reductions, the TCP stack, all ranks sharing its cores): the
/// ranks' own part of [`HostPart`], which bounds each set's prediction
/// below ([`BenchReport::with_host`]). In the lab every node's ranks share
/// two cores, which a real cluster's nodes do not.
pub fn run_host(o: &BenchOptions, program: &Path) -> Result<MpiRun> {
    let mut cmd = mpirun(o);
    cmd.args(["-np", &o.k.to_string()])
        // More ranks than cores, as in the lab.
        .arg("--oversubscribe")
        .args(["--mca", "btl_tcp_if_include", "lo"])
        .args(["--mca", "oob_tcp_if_include", "lo"]);
    let (v, hosts) = run_ranks(cmd, o, program, "this host")?;
    if hosts.len() != o.k {
        return Err(Error::Run(format!(
            "the host run started {} ranks, not {}",
            hosts.len(),
            o.k
        )));
    }
    mpi_run(&v, "this host")
}

/// mpirun with the settings every run shares: root allowed, no binding,
/// yielding ranks, TCP between ranks, the bench's algorithm.
fn mpirun(o: &BenchOptions) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.arg("--allow-run-as-root")
        // Every "host" is this machine: binding would pin all ranks to core 0.
        .args(["--bind-to", "none"])
        // A rank waiting for data spins by default, which on a real node
        // costs nothing but its own core. Here 4-12 ranks share two cores
        // with the kernel work of their own transfers: spinning ranks slow
        // the network they wait for. Yielding gives the node's CPU back.
        .args(["--mca", "mpi_yield_when_idle", "1"])
        .args(["--mca", "btl", "tcp,self"]);
    let forced = match o.algorithm {
        Algorithm::Ring => Some("4"),
        Algorithm::RecursiveDoubling => Some("3"),
        Algorithm::Default => None,
    };
    if let Some(number) = forced {
        cmd.args(["--mca", "coll_tuned_use_dynamic_rules", "1"])
            .args(["--mca", "coll_tuned_allreduce_algorithm", number]);
    }
    cmd
}

/// Run `cmd` (mpirun set up) with the rank program; rank 0's JSON answer
/// and the ranks' hostnames in rank order. `where_` names the ranks' hosts
/// in errors.
fn run_ranks(
    mut cmd: Command,
    o: &BenchOptions,
    program: &Path,
    where_: &str,
) -> Result<(serde_json::Value, Vec<String>)> {
    let out = cmd
        .arg(&o.python)
        .arg(program)
        .arg(o.bytes.to_string())
        .arg(o.iters.to_string())
        .args(o.levels())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            Error::Run(format!(
                "cannot run mpirun (install openmpi-bin and python3-mpi4py): {e}"
            ))
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let fail = || {
        Error::Run(format!(
            "mpirun on {} failed ({}): {}{}",
            where_,
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    };
    if !out.status.success() {
        return Err(fail());
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(fail)?;
    let v: serde_json::Value = serde_json::from_str(line)?;
    let hosts = v["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h.as_str().map(String::from))
        .collect();
    Ok((v, hosts))
}

/// The times and CPU reading of rank 0's answer `v`.
fn mpi_run(v: &serde_json::Value, where_: &str) -> Result<MpiRun> {
    let iter_ms = v["iter_ms"]
        .as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
        .ok_or_else(|| {
            Error::Run(format!(
                "the rank program on {where_} answered without iteration times: {v}"
            ))
        })?;
    Ok(MpiRun {
        iter_ms,
        cpu: cpu_ticks(v),
    })
}

/// An aligned table of the report.
pub fn render(r: &BenchReport) -> String {
    let mut rows = vec![
        [
            "placement",
            "nodes",
            "cfg RTT ms",
            "cfg cap",
            "cfg loss",
            "p50 ms (95 % CI)",
            "p90 ms (95 % CI)",
            "mean ms (95 % CI)",
            "p50 ÷ netaware's (95 % CI)",
            "mean ÷ netaware's (95 % CI)",
            "predicted ms",
            "lab ms",
            "emulator late",
            "CPU busy",
        ]
        .map(String::from)
        .to_vec(),
    ];
    // Ratios are to the first placement: netaware-shaped for a shaped job.
    if let Some(first) = r.placements.first() {
        rows[0][8] = format!("p50 ÷ {}'s (95 % CI)", first.name);
        rows[0][9] = format!("mean ÷ {}'s (95 % CI)", first.name);
    }
    let mut notes = Vec::new();
    for p in &r.placements {
        rows.push(vec![
            p.name.clone(),
            p.nodes.join(" "),
            format!("{:.3}", p.configured.max_rtt_ms),
            p.configured
                .bottleneck_mbps
                .map_or("-".into(), |c| format!("{c:.0}")),
            format!("{:.1}%", p.configured.max_loss * 100.0),
            format!("{:.1} {}", p.iter_ms_p50, interval(p.iter_ms_p50_ci95, 1)),
            format!("{:.1} {}", p.iter_ms_p90, interval(p.iter_ms_p90_ci95, 1)),
            format!("{:.1} {}", p.iter_ms_mean, interval(p.iter_ms_mean_ci95, 1)),
            p.ratio_to_netaware.map_or("-".into(), |x| {
                format!(
                    "{x:.2} {}",
                    p.ratio_to_netaware_ci95
                        .map_or(String::new(), |c| interval(c, 2))
                )
            }),
            p.mean_ratio_to_netaware.map_or("-".into(), |x| {
                format!(
                    "{x:.2} {}",
                    p.mean_ratio_to_netaware_ci95
                        .map_or(String::new(), |c| interval(c, 2))
                )
            }),
            p.predicted_ms.map_or("-".into(), |x| format!("{x:.1}")),
            p.predicted_with_host_ms
                .map_or("-".into(), |x| format!("{x:.1}")),
            p.emulator
                .map_or("-".into(), |e| format!("{:.2}%", e.late_fraction() * 100.0)),
            p.cpu_busy
                .map_or("-".into(), |b| format!("{:.0}%", b * 100.0)),
        ]);
        if let Some(first) = &p.same_set_as {
            notes.push(format!(
                "{} chose the same nodes as {first}: one measurement",
                p.name
            ));
        } else if let Some(note) = far_from_prediction(p) {
            notes.push(note);
        }
    }
    let job = match &r.shape {
        Some(s) => format!("shaped job {s} (levels in turn"),
        None => format!("all-reduce of {} bytes (one ring", r.bytes),
    };
    let mut out = format!(
        "{job}) on k = {} nodes, {} iterations in {} interleaved rounds ({:?} algorithm), topology {}\n{}",
        r.k,
        r.iters,
        r.rounds,
        r.algorithm,
        r.topology,
        netaware_common::aligned_table(&rows, 2)
    );
    if let Some(h) = &r.host {
        let forwarding = match h.forward_mbps {
            Some(c) => format!(
                "forwarding its {:.1} MiB on the wire at {c:.0} Mbit/s (the most the lab's \
                 concurrent tests moved at once) {:.1} ms",
                h.wire_bytes / f64::from(1u32 << 20),
                h.cpu_ms - h.iter_ms_mean
            ),
            None => "forwarding not counted (no concurrent test)".into(),
        };
        out.push_str(&format!(
            "this machine's cores: the same job with all {} ranks over loopback, no network, \
             mean {:.1} ms (p50 {:.1}, {} iterations); {forwarding}; together {:.1} ms, below \
             which no set's on-time iterations can run here. lab ms = the larger of predicted \
             (but its loss part) and that, plus the loss part: what the ratios compare\n",
            r.k,
            h.iter_ms_mean,
            h.iter_ms_p50,
            h.iter_ms.len(),
            h.cpu_ms
        ));
    }
    if let (Some(rho), Some(rho_mean)) = (r.spearman_predicted_measured, r.spearman_predicted_mean)
    {
        out.push_str(&format!(
            "predicted vs measured order (Spearman, distinct sets): {rho:.2} by the median, \
             {rho_mean:.2} by the mean"
        ));
        if let (Some(t), Some(t_mean)) = (
            r.spearman_tied_predicted_measured,
            r.spearman_tied_predicted_mean,
        ) {
            out.push_str(&format!(
                "; with predictions within {:.0} % of each other tied, as Place ties them: \
                 {t:.2} and {t_mean:.2}",
                (PREDICTION_STEP - 1.0) * 100.0
            ));
        }
        out.push('\n');
    }
    if let Some(o) = r.ordered_pairs {
        out.push_str(&format!(
            "pairs of sets predicted more than {:.0} % apart: {}; ran in that order: {} by the \
             mean, {} by the median\n",
            (PREDICTION_STEP - 1.0) * 100.0,
            o.apart,
            o.by_mean,
            o.by_median
        ));
    }
    for n in notes {
        out.push_str(&n);
        out.push('\n');
    }
    out
}

/// Why a measured mean is far from its prediction, as far as the bench
/// can tell; `None` when it is within [`PREDICTION_BAND`]. The mean, not
/// the median: the model predicts the mean (its loss part is an
/// expectation), and a lossy set's median jumps by whole timeouts between
/// runs while its mean holds (docs/benchmarks.md §8).
fn far_from_prediction(p: &PlacementResult) -> Option<String> {
    let x = p.predicted_over_mean?;
    if (PREDICTION_BAND.0..=PREDICTION_BAND.1).contains(&x) {
        return None;
    }
    let loss_ms = p.prediction.map_or(0.0, |p| p.loss_ms);
    let slower = x < PREDICTION_BAND.0;
    let behind = p
        .emulator
        .filter(|e| slower && e.late_fraction() > EMULATOR_LATE_LIMIT)
        .map(|e| {
            format!(
                "the lab's emulator fell behind while it ran ({:.1} % of packets more than 1 ms \
                 late, p99 {:.1} ms): the lab set the pace, not the emulated network",
                e.late_fraction() * 100.0,
                e.p99_us / 1000.0
            )
        });
    let cpu = p
        .cpu_busy
        .filter(|b| slower && *b > CPU_BUSY_LIMIT)
        .map(|b| {
            format!(
                "the machine's CPUs were {:.0} % busy while it ran: its ranks and the kernel's \
                 work for all its links shared cores a real cluster would not share, so the lab \
                 may have set the pace, not the emulated network",
                b * 100.0
            )
        });
    let network = if loss_ms > 0.0 && slower {
        Some(format!(
            "its ring loses packets and the model expects {loss_ms:.0} ms of retransmission \
             timeouts per iteration: more of them stalled in this run (they come whole, 200 ms each)"
        ))
    } else if loss_ms > 0.0 {
        Some(format!(
            "its ring loses packets and the model expects {loss_ms:.0} ms of retransmission \
             timeouts per iteration: this run met fewer"
        ))
    } else if behind.is_some() || cpu.is_some() {
        // Nothing in the network to add to the lab's own limits.
        None
    } else if slower {
        Some(match p.measured.as_ref().and_then(|m| m.shared_mbps) {
            Some(share) => format!(
                "slower than its RTTs and bandwidths explain, even with the {share:.0} Mbit/s \
                 a flow got in its group's concurrent test: a bottleneck that test did not load \
                 the way this job does (more flows at once, or flows between groups)"
            ),
            None => "slower than its RTTs and bandwidths explain, and no concurrent test held \
                     its pairs: a bottleneck the pairwise tests miss (an oversubscribed uplink)"
                .into(),
        })
    } else {
        Some(
            "faster than predicted: its measured bandwidth or RTT reads worse than the runs met"
                .into(),
        )
    };
    // A lossy set may have both: timeouts, and a lab that fell behind.
    let why = [network, behind, cpu]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("; and ");
    Some(format!(
        "{}: predicted {:.1} ms is {x:.2}× the measured mean — {why}",
        p.name,
        p.predicted_total_ms().unwrap_or(0.0)
    ))
}

/// `[lo–hi]` with `decimals`.
fn interval([lo, hi]: [f64; 2], decimals: usize) -> String {
    format!("[{lo:.decimals$}–{hi:.decimals$}]")
}

#[cfg(test)]
mod tests;
