//! Label values that move when the network does, not when a window is
//! noisy. Every label change is a write to the API server (and, for
//! Volcano's label discoverer, a rediscovery), so the published figures
//! are quantized, and a published value stays until the new one is clearly
//! elsewhere (docs/labels.md, "Steps and hysteresis"):
//!
//! | figure | published as | changes when the new figure is |
//! |---|---|---|
//! | quality | a multiple of 5 | 5 or more away from the published one |
//! | RTT p50 (µs) | two significant digits | more than 10 %, 50 µs and the node's jitter away |
//! | RTT p99, jitter (µs) | a step of 0, 10, 20, 50, 100, 200, … (1-2-5) | beyond the next step up or down |
//! | loss (ppm) | a step of 0, 1,000, 2,000, 5,000, 10,000, … (1-2-5) | beyond the next step up or down |
//! | bandwidth (Mbit/s) | two significant digits | more than 10 % and 10 Mbit/s away |
//!
//! and a figure (quality, or a summary peer's RTT or loss) changes only
//! when the previous recomputation's figure wanted a change too: one late
//! window writes nothing.
//!
//! The summary annotation's peers follow the RTT rule and a loss ladder of
//! decades, keep their place in the list unless a newcomer is in a nearer
//! latency level (or less than half as far), and its `measured_at` is when
//! its content last changed, so an unchanged summary is not rewritten
//! either.

use crate::labels::{LOSS_LABEL_PROBES, MAX_NEAREST, NodeFacts, Peer};
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

/// RTT p50: 10 %, and at least 50 µs: user-space timestamps add tens of
/// µs of their own (irtt reads above ping by that much), and a node's
/// figure is a median over a handful of peers whose pairs differ by that
/// much (in the lab, up to 80 µs between the pairs of one site). So a
/// rack's 50 µs read as 45 one minute and 51 the next, or a median that
/// loses one of its two peers, is no change of the network (at 5,000
/// simulated nodes a 5 µs floor rewrote 8 % of the nodes an hour).
pub const RTT_BAND: Band = Band {
    relative: 0.10,
    floor: 50.0,
};
/// A ladder of `N` steps: 0, then `first`, 2·`first`, 5·`first`,
/// 10·`first`, … (every step an integer, so exact in `f64`).
const fn one_two_five<const N: usize>(first: f64) -> [f64; N] {
    let mut ladder = [0.0; N];
    let mut decade = first;
    let mut k = 1;
    while k < N {
        ladder[k] = decade * [1.0, 2.0, 5.0][(k - 1) % 3];
        if k % 3 == 0 {
            decade *= 10.0;
        }
        k += 1;
    }
    ladder
}

/// Loss is published on a 1-2-5 ladder (ppm; below 0.1 % reads 0): a
/// loss measured from 50 probes a window wanders by a third of itself, so
/// finer steps would follow the noise. A published step stays while the
/// figure is between the steps either side of it.
pub const LOSS_STEPS: [f64; 11] = one_two_five(1_000.0);

/// The loss of a peer in the summary annotation: decades only. A lossy
/// node is listed by every rack mate, so a finer ladder would rewrite all
/// their summaries each time its loss wanders a step (the node's own
/// `loss-ppm` label keeps the finer [`LOSS_STEPS`]).
pub const SUMMARY_LOSS_STEPS: [f64; 5] = [0.0, 1_000.0, 10_000.0, 100_000.0, 1_000_000.0];

/// The step of `ladder` nearest `raw` (geometrically; below half the first
/// step above 0: 0).
fn loss_step(ladder: &[f64], raw: f64) -> usize {
    // NaN reads as no loss measured.
    if raw.is_nan() || ladder.len() < 2 || raw < ladder[1] / 2.0 {
        return 0;
    }
    (1..ladder.len())
        .min_by(|&a, &b| {
            let d = |k: usize| (ladder[k].ln() - raw.ln()).abs();
            d(a).total_cmp(&d(b))
        })
        .unwrap_or(0)
}

/// The loss (ppm) to publish for `raw` on `ladder`, given what is
/// published: a published step stays while the figure is between the
/// steps either side of it.
fn settle_on_ladder(ladder: &[f64], prev: Option<f64>, raw: f64) -> f64 {
    if let Some(p) = prev
        && let Some(k) = ladder.iter().position(|&s| s == p)
    {
        let below = if k == 0 {
            f64::NEG_INFINITY
        } else {
            ladder[k - 1]
        };
        let above = ladder.get(k + 1).copied().unwrap_or(f64::INFINITY);
        if raw > below && raw < above {
            return p;
        }
    }
    ladder[loss_step(ladder, raw)]
}

/// The loss (ppm) to publish for `raw`, given what is published.
pub fn settle_loss(prev: Option<f64>, raw: f64) -> f64 {
    settle_on_ladder(&LOSS_STEPS, prev, raw)
}

/// RTT p99 and jitter (µs) are published on a 1-2-5 ladder: tail figures
/// follow every burst of queueing (in the lab, every time the emulator is
/// late), so a 10 % band would rewrite them every few windows.
pub const TAIL_STEPS: [f64; 19] = one_two_five(10.0);

/// The tail figure (µs) to publish for `raw`; infinite (never answered)
/// stays infinite.
pub fn settle_tail(prev: Option<f64>, raw: f64) -> f64 {
    if !raw.is_finite() {
        return raw;
    }
    settle_on_ladder(&TAIL_STEPS, prev.filter(|p| p.is_finite()), raw)
}

/// What to publish for the latest raw figure `now`: `settle` it against
/// the published value, which changes only when the previous
/// recomputation's raw figure (`before`), settled the same way, wanted a
/// change too: one late window is not a new network. The first value is
/// published at once.
fn settle_confirmed<T: PartialEq + Copy, R>(
    published: Option<T>,
    before: Option<R>,
    now: R,
    settle: impl Fn(Option<T>, R) -> T,
) -> T {
    let now = settle(published, now);
    match published {
        Some(p) if now != p && before.is_none_or(|b| settle(published, b) == p) => p,
        _ => now,
    }
}

/// Bandwidth: 10 %, and at least 10 Mbit/s.
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

fn settle_figures(prev: Option<&Figures>, before: Option<&Figures>, new: Figures) -> Figures {
    // Each figure settled against what is published, from the latest raw
    // figures and (for confirmation) the previous ones.
    let both = |f: fn(&Figures) -> f64, settle: &dyn Fn(Option<f64>, f64) -> f64| {
        settle_confirmed(prev.map(f), before.map(f), f(&new), settle)
    };
    let band = |band: Band| move |p: Option<f64>, raw: f64| settle_value(p, raw, band);
    let bandwidth = new.bandwidth_mbps.map(|b| {
        settle_confirmed(
            prev.and_then(|p| p.bandwidth_mbps),
            before.and_then(|x| x.bandwidth_mbps),
            b,
            band(BANDWIDTH_BAND),
        )
    });
    // A median RTT is uncertain by about the jitter around it (the lossy,
    // jittery dj-4 of the lab: 1 ms of jitter, its p50 wandering between
    // 860 and 1,000 µs), so the band is at least the node's jitter.
    let published_loss = prev.filter(|p| p.loss_ready());
    let rtt_band = Band {
        floor: RTT_BAND.floor.max(new.jitter_us.min(new.rtt_p50_us)),
        ..RTT_BAND
    };
    Figures {
        rtt_p50_us: both(|f| f.rtt_p50_us, &band(rtt_band)),
        rtt_p99_us: both(|f| f.rtt_p99_us, &settle_tail),
        jitter_us: both(|f| f.jitter_us, &settle_tail),
        // Settled only against a published loss: one counted from too
        // few probes was never written. Once written it stays so (a new
        // peer's few probes are one value of a median, not a reason to
        // start over), and the count stops at the threshold, so the
        // published facts do not change with every window's probes.
        loss_ppm: settle_confirmed(
            published_loss.map(|f| f.loss_ppm),
            before.map(|f| f.loss_ppm),
            new.loss_ppm,
            settle_loss,
        ),
        loss_probes: if published_loss.is_some() {
            LOSS_LABEL_PROBES
        } else {
            new.loss_probes.min(LOSS_LABEL_PROBES)
        },
        bandwidth_mbps: bandwidth,
        peers: new.peers,
    }
}

/// A peer not listed replaces a listed one in the same latency level only
/// when it is less than this fraction as far.
pub const NEWCOMER_FACTOR: f64 = 0.5;

/// The latency level of an RTT: 0 under the first group threshold, 1 under
/// the second, …, `levels.len()` above them all.
fn level(levels: &[f64], rtt_us: f64) -> usize {
    levels
        .iter()
        .position(|&t| rtt_us <= t)
        .unwrap_or(levels.len())
}

/// The [`MAX_NEAREST`] peers to list from the candidates `new`, and their
/// raw values: values settled against the listed ones (`prev`; loss on
/// [`SUMMARY_LOSS_STEPS`]) and changed only when the previous
/// recomputation's raw value (`before`) wanted a change too, and a
/// peer not listed before replaces a listed one only when it is in a
/// nearer latency level (`levels`, the group thresholds; its RTT widened by
/// the RTT band), or in the same level less than [`NEWCOMER_FACTOR`] as
/// far. Past a rack, a node has hundreds of peers at about the same
/// distance whose RTTs differ by more than any band: a list ranked by RTT
/// alone would change with every newly measured pair.
fn settle_peers(
    prev: &[Peer],
    before: &[Peer],
    new: Vec<Peer>,
    levels: &[f64],
) -> (Vec<Peer>, Vec<Peer>) {
    let rtt = |prev: Option<u64>, raw: u64| {
        settle_value(prev.map(|x| x as f64), raw as f64, RTT_BAND).round() as u64
    };
    let loss = |prev: Option<u64>, raw: u64| {
        settle_on_ladder(&SUMMARY_LOSS_STEPS, prev.map(|x| x as f64), raw as f64).round() as u64
    };
    let mut out: Vec<_> = new
        .into_iter()
        .map(|p| {
            let old = prev.iter().find(|o| o.node == p.node);
            let earlier = before.iter().find(|o| o.node == p.node);
            let both = |f: fn(&Peer) -> u64, settle: &dyn Fn(Option<u64>, u64) -> u64| {
                settle_confirmed(old.map(f), earlier.map(f), f(&p), settle)
            };
            let peer = Peer {
                rtt_p50_us: both(|p| p.rtt_p50_us, &rtt),
                loss_ppm: both(|p| p.loss_ppm, &loss),
                node: p.node,
            };
            let rtt = peer.rtt_p50_us as f64;
            let rank = if old.is_some() {
                (level(levels, rtt), rtt)
            } else {
                let widened = rtt * (1.0 + RTT_BAND.relative) + RTT_BAND.floor;
                (level(levels, widened), rtt / NEWCOMER_FACTOR)
            };
            (rank, peer, (p.rtt_p50_us, p.loss_ppm))
        })
        .collect();
    out.sort_by(|a, b| {
        (a.0.0.cmp(&b.0.0))
            .then(a.0.1.total_cmp(&b.0.1))
            .then_with(|| a.1.node.cmp(&b.1.node))
    });
    out.truncate(MAX_NEAREST);
    let raw = out
        .iter()
        .map(|(_, peer, (rtt_p50_us, loss_ppm))| Peer {
            node: peer.node.clone(),
            rtt_p50_us: *rtt_p50_us,
            loss_ppm: *loss_ppm,
        })
        .collect();
    let mut listed: Vec<Peer> = out.into_iter().map(|(_, peer, _)| peer).collect();
    listed.sort_by(|a, b| (a.rtt_p50_us, &a.node).cmp(&(b.rtt_p50_us, &b.node)));
    (listed, raw)
}

/// The raw figures of a node in one recomputation, kept for the next
/// one's confirmation ([`settle`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Raw {
    pub quality: Option<u32>,
    pub figures: Option<Figures>,
    /// The raw RTT and loss of the peers the summary lists.
    pub nearest: Vec<Peer>,
}

/// What to publish for a node now (`new`, with `now_unix_us`), given what
/// was published before (`prev`) and the previous recomputation's raw
/// figures (`before`): a figure, quality or listed peer's value changes
/// only when both want it to; `levels` are the group thresholds (µs).
/// Group ids are not touched: the group tracker's hysteresis keeps them.
/// Also returns this recomputation's raw figures, for the next one.
pub fn settle(
    prev: Option<&NodeFacts>,
    before: Option<&Raw>,
    mut new: NodeFacts,
    now_unix_us: u64,
    levels: &[f64],
) -> (NodeFacts, Raw) {
    let mut raw = Raw {
        quality: new.quality,
        figures: new.figures,
        nearest: Vec::new(),
    };
    new.quality = settle_confirmed(
        prev.map(|p| p.quality),
        before.map(|b| b.quality),
        new.quality,
        |published, raw| settle_quality(published.flatten(), raw),
    );
    new.figures = new.figures.map(|f| {
        settle_figures(
            prev.and_then(|p| p.figures.as_ref()),
            before.and_then(|b| b.figures.as_ref()),
            f,
        )
    });
    (new.nearest, raw.nearest) = settle_peers(
        prev.map_or(&[], |p| &p.nearest),
        before.map_or(&[], |b| &b.nearest),
        new.nearest,
        levels,
    );
    new.summary_since_unix_us = match prev {
        Some(p) if p.nearest == new.nearest => p.summary_since_unix_us,
        _ => now_unix_us,
    };
    (new, raw)
}

#[cfg(test)]
mod tests;
