//! Node quality: the paper's "best node inside the zone" score made explicit.
//!
//! A node's figures are taken over its links to the other members of its own
//! l2 group (its l3 group if it is alone in l2): for each peer the worse of
//! the two directions, then the **median over peers**, so one bad peer does
//! not make its neighbours look bad while a bad node, bad towards everyone,
//! stands out. Each figure becomes a penalty in [0, 1):
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
    /// `None` until bandwidth is measured.
    pub bandwidth_mbps: Option<f64>,
    /// Peers the medians were taken over.
    pub peers: usize,
}

/// One peer's link figures (worse of both directions).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeerLink {
    pub rtt_p50_us: f64,
    pub rtt_p99_us: f64,
    pub jitter_us: f64,
    pub loss_ppm: f64,
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
        bandwidth_mbps: median(peers.iter().filter_map(|p| p.bandwidth_mbps).collect()),
        peers: peers.len(),
    })
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
mod tests {
    use super::*;

    fn link(p50: f64, loss: f64) -> PeerLink {
        PeerLink {
            rtt_p50_us: p50,
            rtt_p99_us: p50 * 2.0,
            jitter_us: p50 / 10.0,
            loss_ppm: loss,
            bandwidth_mbps: None,
        }
    }

    #[test]
    fn a_perfect_node_scores_100_and_a_terrible_one_near_0() {
        let perfect = figures(&[link(0.0, 0.0)]).unwrap();
        assert_eq!(
            score(&perfect, &Weights::default(), &Scales::default()),
            100
        );
        let awful = figures(&[link(1e7, 1e6)]).unwrap();
        assert!(score(&awful, &Weights::default(), &Scales::default()) <= 1);
    }

    #[test]
    fn medians_isolate_the_bad_node_not_its_neighbours() {
        // Group of 4; node 3 loses 2 % on every link. Node 0 sees three
        // peers, one of them node 3.
        let good = link(250.0, 0.0);
        let bad = link(250.0, 20_000.0);
        let node0 = figures(&[good, good, bad]).unwrap();
        let node3 = figures(&[bad, bad, bad]).unwrap();
        assert_eq!(node0.loss_ppm, 0.0);
        assert_eq!(node3.loss_ppm, 20_000.0);
        let (w, s) = (Weights::default(), Scales::default());
        assert!(score(&node3, &w, &s) < score(&node0, &w, &s));
    }

    #[test]
    fn more_loss_or_delay_always_scores_lower() {
        let (w, s) = (Weights::default(), Scales::default());
        let mut seed = 3u64;
        let mut rnd = |scale: f64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            (seed >> 11) as f64 / (1u64 << 53) as f64 * scale
        };
        for _ in 0..2_000 {
            let base = Figures {
                rtt_p50_us: rnd(20_000.0),
                rtt_p99_us: rnd(50_000.0),
                jitter_us: rnd(2_000.0),
                loss_ppm: rnd(50_000.0),
                bandwidth_mbps: if rnd(1.0) < 0.5 {
                    Some(rnd(2_000.0))
                } else {
                    None
                },
                peers: 3,
            };
            let r = raw_score(&base, &w, &s);
            let worse = [
                Figures {
                    loss_ppm: base.loss_ppm + 1.0 + rnd(10_000.0),
                    ..base
                },
                Figures {
                    rtt_p50_us: base.rtt_p50_us + 1.0 + rnd(5_000.0),
                    ..base
                },
                Figures {
                    rtt_p99_us: base.rtt_p99_us + 1.0 + rnd(5_000.0),
                    ..base
                },
                Figures {
                    jitter_us: base.jitter_us + 1.0 + rnd(500.0),
                    ..base
                },
            ];
            for f in worse {
                assert!(raw_score(&f, &w, &s) < r, "{f:?} vs {base:?}");
                assert!(score(&f, &w, &s) <= score(&base, &w, &s));
            }
        }
    }

    #[test]
    fn unknown_bandwidth_drops_out_and_more_bandwidth_helps() {
        let (w, s) = (Weights::default(), Scales::default());
        let f = figures(&[link(300.0, 0.0)]).unwrap();
        assert_eq!(f.bandwidth_mbps, None);
        let slow = Figures {
            bandwidth_mbps: Some(100.0),
            ..f
        };
        let fast = Figures {
            bandwidth_mbps: Some(10_000.0),
            ..f
        };
        assert!(raw_score(&fast, &w, &s) > raw_score(&slow, &w, &s));
    }

    #[test]
    fn weights_change_what_matters() {
        let s = Scales::default();
        let lossy = figures(&[link(100.0, 5_000.0)]).unwrap();
        let slow = figures(&[link(5_000.0, 0.0)]).unwrap();
        let loss_heavy = Weights {
            loss: 1.0,
            rtt_p50: 0.0,
            rtt_p99: 0.0,
            jitter: 0.0,
            bandwidth: 0.0,
        };
        let delay_heavy = Weights {
            loss: 0.0,
            rtt_p50: 1.0,
            rtt_p99: 0.0,
            jitter: 0.0,
            bandwidth: 0.0,
        };
        assert!(score(&lossy, &loss_heavy, &s) < score(&slow, &loss_heavy, &s));
        assert!(score(&lossy, &delay_heavy, &s) > score(&slow, &delay_heavy, &s));
    }

    #[test]
    fn no_peers_no_figures() {
        assert!(figures(&[]).is_none());
        assert_eq!(median(vec![1.0, 3.0, 2.0, 10.0]), Some(2.5));
    }
}
