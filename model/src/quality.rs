//! Node quality: the paper's "best node inside the zone" score made explicit.
//!
//! A node's figures are taken over its links to the other members of its own
//! l1 group (its l2 group if it is alone in l1, its l3 group if alone in
//! l2): for each peer the worse of the two directions, then the **median
//! over peers**, so a bad node, bad towards everyone, stands out. A pair's
//! figure describes both ends, so a peer that is clearly worse with
//! everyone than the node is ([`Own`], [`clearly_worse`]) is left out of
//! the node's medians: its neighbours do not look bad because of it,
//! however few they are (in a group of three, a median over two peers is
//! their mean). Each figure becomes a penalty in [0, 1):
//!
//! ```text
//! penalty(x) = 1 − exp(−x / scale)          loss, RTT p50, RTT p99, jitter
//! penalty(b) = exp(−b / scale)              bandwidth (more is better)
//! score      = round(100 · (1 − Σ wᵢ·penaltyᵢ / Σ wᵢ))
//! ```
//!
//! Terms with no data (bandwidth before it is measured) drop out and the
//! weights of the others are renormalised. Every penalty is strictly
//! increasing in its figure, so more loss or delay always lowers the score
//! (before rounding to an integer).

/// Weights of the terms (any non-negative numbers; they are normalised).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    pub loss: f64,
    pub rtt_p50: f64,
    pub rtt_p99: f64,
    pub jitter: f64,
    pub bandwidth: f64,
}

impl Default for Weights {
    /// Loss hurts collective operations most (a retransmission stalls the
    /// ring), then the typical delay, then tail, bandwidth and jitter.
    fn default() -> Self {
        Self {
            loss: 0.35,
            rtt_p50: 0.25,
            rtt_p99: 0.15,
            jitter: 0.10,
            bandwidth: 0.15,
        }
    }
}

/// `loss=0.35,rtt-p50=0.25,...`: the form `--quality-weights` takes.
impl std::fmt::Display for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "loss={},rtt-p50={},rtt-p99={},jitter={},bandwidth={}",
            self.loss, self.rtt_p50, self.rtt_p99, self.jitter, self.bandwidth
        )
    }
}

/// The figure at which a term's penalty reaches 1 − 1/e ≈ 63 %.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scales {
    pub loss_ppm: f64,
    pub rtt_p50_us: f64,
    pub rtt_p99_us: f64,
    pub jitter_us: f64,
    pub bandwidth_mbps: f64,
}

impl Default for Scales {
    fn default() -> Self {
        Self {
            loss_ppm: 10_000.0, // 1 %
            rtt_p50_us: 2_000.0,
            rtt_p99_us: 5_000.0,
            jitter_us: 500.0,
            bandwidth_mbps: 1_000.0,
        }
    }
}

/// A node's figures towards its group peers (medians over peers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    pub rtt_p50_us: f64,
    pub rtt_p99_us: f64,
    pub jitter_us: f64,
    pub loss_ppm: f64,
    /// The fewest probes behind any of the peers' loss figures: the
    /// `loss-ppm` label waits for [`crate::labels::LOSS_LABEL_PROBES`]
    /// (settled figures count up to that and stay there once published).
    pub loss_probes: u64,
    /// `None` until bandwidth is measured.
    pub bandwidth_mbps: Option<f64>,
    /// Peers the medians were taken over.
    pub peers: usize,
}

impl Figures {
    /// Whether the loss figure counts probes enough to be published.
    pub fn loss_ready(&self) -> bool {
        self.loss_probes >= crate::labels::LOSS_LABEL_PROBES
    }
}

/// One peer's link figures (worse of both directions).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeerLink {
    pub rtt_p50_us: f64,
    pub rtt_p99_us: f64,
    pub jitter_us: f64,
    pub loss_ppm: f64,
    /// The long-horizon loss `Place` reads (the quality score reads
    /// `loss_ppm`, which follows changes quickly).
    pub placement_loss_ppm: f64,
    /// Probes behind the loss figures (the fewer of both directions).
    pub loss_probes: u64,
    pub bandwidth_mbps: Option<f64>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len().is_multiple_of(2) {
        (v[m - 1] + v[m]) / 2.0
    } else {
        v[m]
    })
}

/// Medians over peers; `None` with no peers.
pub fn figures(peers: &[PeerLink]) -> Option<Figures> {
    let med = |f: fn(&PeerLink) -> f64| median(peers.iter().map(f).collect());
    Some(Figures {
        rtt_p50_us: med(|p| p.rtt_p50_us)?,
        rtt_p99_us: med(|p| p.rtt_p99_us)?,
        jitter_us: med(|p| p.jitter_us)?,
        loss_ppm: med(|p| p.loss_ppm)?,
        loss_probes: peers.iter().map(|p| p.loss_probes).min()?,
        bandwidth_mbps: median(peers.iter().filter_map(|p| p.bandwidth_mbps).collect()),
        peers: peers.len(),
    })
}

/// What a node shows with everyone: the lower quartile of its jitter and
/// loss over its peers. A node bad towards everyone is bad with its best
/// quarter too, while a healthy node keeps reading healthy even when up
/// to three quarters of its peers are bad (a median would not). Only
/// the figures that belong to a node (a congested NIC or CPU, a bad
/// cable): its RTTs depend on where its peers are (a node alone in its
/// rack has only other racks' nodes as peers), not on the node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Own {
    pub(crate) jitter_us: f64,
    pub(crate) loss_ppm: f64,
}

/// The lower quartile (nearest rank, rounding down: the smallest of up
/// to four values).
fn lower_quartile(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len().checked_sub(1)? / 4).copied()
}

/// A node's own figures from its peer links; `None` with no peers.
pub(crate) fn own<'a>(peers: impl Iterator<Item = &'a PeerLink> + Clone) -> Option<Own> {
    let q = |f: fn(&PeerLink) -> f64| lower_quartile(peers.clone().map(f).collect());
    Some(Own {
        jitter_us: q(|p| p.jitter_us)?,
        loss_ppm: q(|p| p.loss_ppm)?,
    })
}

/// How much worse a peer's own figure must be than the node's to count as
/// clearly worse: more than `factor` times it plus `floor` (the floor keeps
/// the noise of healthy figures near zero from counting).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Margin {
    factor: f64,
    floor: f64,
}

/// Jitter (µs): twice, plus 100 µs (the lab's healthy jitter is 20 µs, a
/// degraded node's 400 µs or more).
const JITTER_MARGIN: Margin = Margin {
    factor: 2.0,
    floor: 100.0,
};
/// Loss (ppm): twice, plus 0.1 % (the first step of the published ladder).
const LOSS_MARGIN: Margin = Margin {
    factor: 2.0,
    floor: 1_000.0,
};

/// Whether `peer` is clearly worse with everyone than `node` in any
/// figure: then the pair's figures say more about the peer than about
/// the node, and the node's medians leave it out.
pub(crate) fn clearly_worse(peer: &Own, node: &Own) -> bool {
    let worse = |p: f64, n: f64, m: Margin| p > m.factor * n.max(0.0) + m.floor;
    worse(peer.jitter_us, node.jitter_us, JITTER_MARGIN)
        || worse(peer.loss_ppm, node.loss_ppm, LOSS_MARGIN)
}

fn grows(x: f64, scale: f64) -> f64 {
    1.0 - (-x.max(0.0) / scale.max(f64::MIN_POSITIVE)).exp()
}

/// The score before rounding, in [0, 100].
pub fn raw_score(f: &Figures, w: &Weights, s: &Scales) -> f64 {
    let mut terms = vec![
        (w.loss, grows(f.loss_ppm, s.loss_ppm)),
        (w.rtt_p50, grows(f.rtt_p50_us, s.rtt_p50_us)),
        (w.rtt_p99, grows(f.rtt_p99_us, s.rtt_p99_us)),
        (w.jitter, grows(f.jitter_us, s.jitter_us)),
    ];
    if let Some(b) = f.bandwidth_mbps {
        terms.push((w.bandwidth, 1.0 - grows(b, s.bandwidth_mbps)));
    }
    let total: f64 = terms.iter().map(|(w, _)| w.max(0.0)).sum();
    if total <= 0.0 {
        return 100.0;
    }
    let penalty: f64 = terms.iter().map(|(w, p)| w.max(0.0) * p).sum::<f64>() / total;
    (100.0 * (1.0 - penalty)).clamp(0.0, 100.0)
}

/// The integer score 0–100 of the `quality` label.
pub fn score(f: &Figures, w: &Weights, s: &Scales) -> u32 {
    raw_score(f, w, s).round() as u32
}

#[cfg(test)]
mod tests;
