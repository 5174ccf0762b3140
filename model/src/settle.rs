//! Label values that move when the network does, not when a window is
//! noisy. Every label change is a write to the API server (and, for
//! Volcano's label discoverer, a rediscovery), so the published figures
//! are quantized, and a published value stays until the new one is clearly
//! elsewhere (docs/labels.md, "Steps and hysteresis"):
//!
//! | figure | published as | changes when the new figure is |
//! |---|---|---|
//! | quality | a multiple of 5 | 5 or more away from the published one |
//! | RTT p50/p99, jitter (µs) | two significant digits | more than 10 % and 5 µs away |
//! | loss (ppm) | a step of 0, 1,000, 2,000, 5,000, 10,000, … (1-2-5) | beyond the next step up or down |
//! | bandwidth (Mbit/s) | two significant digits | more than 10 % and 10 Mbit/s away |
//!
//! The summary annotation's peers follow the RTT and loss rules, and its
//! `measured_at` is when its content last changed, so an unchanged summary
//! is not rewritten either.

use crate::labels::{MAX_NEAREST, NodeFacts, Peer};
use crate::quality::Figures;

/// Quality is published in steps of this many points, and moves only when
/// the score is at least this far from the published value.
pub const QUALITY_STEP: u32 = 5;

/// How far a figure may wander before its published value changes: a
/// relative band and an absolute floor (whichever is larger).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Band {
    pub relative: f64,
    pub floor: f64,
}

pub const RTT_BAND: Band = Band {
    relative: 0.10,
    floor: 5.0,
};
/// Loss is published on a 1-2-5 ladder (ppm; below 0.1 % reads 0): a
/// loss measured from 50 probes a window wanders by a third of itself, so
/// finer steps would follow the noise. A published step stays while the
/// figure is between the steps either side of it.
pub const LOSS_STEPS: [f64; 11] = [
    0.0,
    1_000.0,
    2_000.0,
    5_000.0,
    10_000.0,
    20_000.0,
    50_000.0,
    100_000.0,
    200_000.0,
    500_000.0,
    1_000_000.0,
];

/// The loss step nearest `raw` (geometrically; below 500 ppm: 0).
fn loss_step(raw: f64) -> usize {
    // NaN reads as no loss measured.
    if raw.is_nan() || raw < 500.0 {
        return 0;
    }
    (1..LOSS_STEPS.len())
        .min_by(|&a, &b| {
            let d = |k: usize| (LOSS_STEPS[k].ln() - raw.ln()).abs();
            d(a).total_cmp(&d(b))
        })
        .unwrap_or(0)
}

/// The loss (ppm) to publish for `raw`, given what is published.
pub fn settle_loss(prev: Option<f64>, raw: f64) -> f64 {
    if let Some(p) = prev
        && let Some(k) = LOSS_STEPS.iter().position(|&s| s == p)
    {
        let below = if k == 0 {
            f64::NEG_INFINITY
        } else {
            LOSS_STEPS[k - 1]
        };
        let above = LOSS_STEPS.get(k + 1).copied().unwrap_or(f64::INFINITY);
        if raw > below && raw < above {
            return p;
        }
    }
    LOSS_STEPS[loss_step(raw)]
}
pub const BANDWIDTH_BAND: Band = Band {
    relative: 0.10,
    floor: 10.0,
};

/// `x` rounded to two significant digits (infinite and zero stay so).
pub fn two_digits(x: f64) -> f64 {
    if !x.is_finite() || x <= 0.0 {
        return x.max(0.0);
    }
    let scale = 10f64.powi(x.log10().floor() as i32 - 1);
    (x / scale).round() * scale
}

/// The value to publish for `raw`, given what is published (`prev`).
pub fn settle_value(prev: Option<f64>, raw: f64, band: Band) -> f64 {
    match prev {
        Some(p) if p.is_finite() == raw.is_finite() => {
            if !raw.is_finite() || (raw - p).abs() <= (band.relative * p).max(band.floor) {
                p
            } else {
                two_digits(raw)
            }
        }
        _ => two_digits(raw),
    }
}

/// The quality to publish for `raw`, given what is published.
pub fn settle_quality(prev: Option<u32>, raw: Option<u32>) -> Option<u32> {
    let raw = raw?;
    let step = |q: u32| ((q + QUALITY_STEP / 2) / QUALITY_STEP * QUALITY_STEP).min(100);
    Some(match prev {
        Some(p) if raw.abs_diff(p) < QUALITY_STEP => p,
        _ => step(raw),
    })
}

fn settle_figures(prev: Option<&Figures>, new: Figures) -> Figures {
    let v = |f: fn(&Figures) -> f64, band| settle_value(prev.map(f), f(&new), band);
    Figures {
        rtt_p50_us: v(|f| f.rtt_p50_us, RTT_BAND),
        rtt_p99_us: v(|f| f.rtt_p99_us, RTT_BAND),
        jitter_us: v(|f| f.jitter_us, RTT_BAND),
        loss_ppm: settle_loss(prev.map(|f| f.loss_ppm), new.loss_ppm),
        bandwidth_mbps: new
            .bandwidth_mbps
            .map(|b| settle_value(prev.and_then(|p| p.bandwidth_mbps), b, BANDWIDTH_BAND)),
        peers: new.peers,
    }
}

/// The [`MAX_NEAREST`] peers to list from the candidates `new`: values
/// settled against the listed ones, and a peer not listed before replaces
/// a listed one only when it is nearer by more than the RTT band (among
/// many peers at about the same distance, the list would otherwise change
/// with every window).
fn settle_peers(prev: &[Peer], new: Vec<Peer>) -> Vec<Peer> {
    let mut out: Vec<(f64, Peer)> = new
        .into_iter()
        .map(|p| {
            let old = prev.iter().find(|o| o.node == p.node);
            let int = |prev: Option<u64>, raw: u64, band| {
                settle_value(prev.map(|x| x as f64), raw as f64, band).round() as u64
            };
            let peer = Peer {
                rtt_p50_us: int(old.map(|o| o.rtt_p50_us), p.rtt_p50_us, RTT_BAND),
                loss_ppm: settle_loss(old.map(|o| o.loss_ppm as f64), p.loss_ppm as f64).round()
                    as u64,
                node: p.node,
            };
            let rank = peer.rtt_p50_us as f64;
            let rank = if old.is_some() {
                rank
            } else {
                rank * (1.0 + RTT_BAND.relative) + RTT_BAND.floor
            };
            (rank, peer)
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.node.cmp(&b.1.node)));
    out.truncate(MAX_NEAREST);
    let mut out: Vec<Peer> = out.into_iter().map(|(_, p)| p).collect();
    out.sort_by(|a, b| (a.rtt_p50_us, &a.node).cmp(&(b.rtt_p50_us, &b.node)));
    out
}

/// What to publish for a node now (`new`, with `now_unix_us`), given what
/// was published before (`prev`). Group ids are not touched: the group
/// tracker's hysteresis keeps them.
pub fn settle(prev: Option<&NodeFacts>, mut new: NodeFacts, now_unix_us: u64) -> NodeFacts {
    new.quality = settle_quality(prev.and_then(|p| p.quality), new.quality);
    new.figures = new
        .figures
        .map(|f| settle_figures(prev.and_then(|p| p.figures.as_ref()), f));
    new.nearest = settle_peers(prev.map_or(&[], |p| &p.nearest), new.nearest);
    new.summary_since_unix_us = match prev {
        Some(p) if p.nearest == new.nearest => p.summary_since_unix_us,
        _ => now_unix_us,
    };
    new
}

#[cfg(test)]
mod tests;
