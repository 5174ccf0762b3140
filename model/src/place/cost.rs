//! The predicted time of an all-reduce, in three parts: latency,
//! bandwidth and loss (docs/placement.md, "The cost model"): the ring,
//! which `Place` ranks sets by, and recursive doubling, the alternative
//! Open MPI picks for small messages ([`recursive_doubling`]).
//!
//! A ring all-reduce over `p` nodes is a reduce-scatter and an all-gather,
//! each `p − 1` steps; in every step each node sends `bytes / p` to the next
//! one, and the step ends when the slowest of those transfers does
//! (Thakur, Rabenseifner & Gropp 2005). Per step:
//!
//! - **latency**: the largest RTT of the set times [`RTTS_PER_STEP`]: half
//!   an RTT for the data to arrive, plus a whole one when the chunk is past
//!   the eager limit and goes by rendezvous (Open MPI's TCP transport sends
//!   a request and waits for the receiver's answer before the bulk);
//! - **bandwidth**: the chunk at the set's bottleneck bandwidth;
//! - **loss**: each ring link's transfer stalls with the probability that
//!   one of its exposed packets is lost one way ([`EXPOSED_FIXED`]: the
//!   ones TCP cannot repair without a timeout, more of them the more
//!   packets the transfer carries); a step with any stalled transfer is a
//!   retransmission timeout ([`STALL_MS`]) late.
//!
//! The loss part is an expectation: the prediction is the mean step time a
//! training job sees, and a lossy set's single iterations are either on
//! time or a timeout late. The constants were fitted to recorded lab runs
//! (the fixture in `model/tests/fixtures/allreduce-lab.json`).

/// Open MPI's TCP transport sends messages up to this size eagerly
/// (`btl_tcp_eager_limit`, 64 KiB); larger ones wait for a rendezvous.
pub const EAGER_LIMIT_BYTES: f64 = 65_536.0;
/// The limit counts Open MPI's own message header too (ob1's match
/// header, a few tens of bytes; this bounds it): a message of exactly
/// 64 KiB already goes by rendezvous, as the lab measured (a 64 KiB
/// recursive doubling took two RTTs a step, not one).
const HEADER_BYTES: f64 = 64.0;

/// RTTs a message of `bytes` costs before its bandwidth term.
fn rtts_before(bytes: f64) -> f64 {
    if bytes + HEADER_BYTES > EAGER_LIMIT_BYTES {
        RTTS_PER_STEP.1
    } else {
        RTTS_PER_STEP.0
    }
}
/// RTTs a step costs before its bandwidth term: eager (0.5) and rendezvous
/// (1.5). Fitted: with 0.5 alone, every cross-region set of the lab runs
/// was predicted at 0.80–0.92 of its measured time; with 1.5, 0.97–1.03.
pub const RTTS_PER_STEP: (f64, f64) = (0.5, 1.5);
/// A transfer that loses an exposed packet waits for Linux's minimum
/// retransmission timeout (`TCP_RTO_MIN`, 200 ms).
pub const STALL_MS: f64 = 200.0;

/// One link of the ring, in ring order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RingLink {
    /// Round-trip loss of the pair, as probed (0–1): the probe or its
    /// reply lost.
    pub loss: f64,
}

/// A predicted all-reduce time and its parts (ms); `total_ms` is their sum.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct Prediction {
    pub total_ms: f64,
    pub latency_ms: f64,
    pub bandwidth_ms: f64,
    /// Expected time lost to retransmission timeouts.
    pub loss_ms: f64,
}

/// Exposed packets of a transfer: lost, they stall it for a
/// retransmission timeout, which fast retransmit and tail-loss probes
/// repair for the others. A fixed part (a transfer's handshake and tail)
/// and a part per MiB the transfer carries (each lost packet is a
/// recovery that can itself go wrong: a lost retransmission, a loss while
/// the window is small). Fitted to the lab's lossy rings by their mean
/// (docs/placement.md, "Calibration"): the 660 timeouts counted in 1 and
/// 2 MiB transfers were 1.4 and 1.8 times as many as one exposed packet
/// explains.
pub const EXPOSED_FIXED: f64 = 1.0;
/// Exposed packets per MiB a transfer carries (see [`EXPOSED_FIXED`]).
pub const EXPOSED_PER_MIB: f64 = 0.4;

/// Probability that one transfer of `bytes` stalls: one of its exposed
/// packets lost one way, read from the round-trip loss `rt` (both ways
/// equally lossy: `1 − (1 − p)² = rt`).
pub fn stall_probability(rt: f64, bytes: f64) -> f64 {
    let rt = if rt.is_finite() {
        rt.clamp(0.0, 1.0)
    } else {
        1.0
    };
    let exposed = EXPOSED_FIXED + EXPOSED_PER_MIB * bytes.max(0.0) / MIB;
    // (1 − p)^exposed with 1 − p = √(1 − rt).
    1.0 - (1.0 - rt).powf(exposed / 2.0)
}

const MIB: f64 = 1_048_576.0;

/// Predict a ring all-reduce of `bytes` over `p` nodes whose largest RTT is
/// `max_rtt_us`, bottleneck bandwidth `bandwidth_mbps`, and whose ring
/// links (`p` of them, in ring order: node i to node i + 1, the last back to
/// the first) lose as `ring`. `None` for fewer than two nodes or without a
/// usable bandwidth.
pub fn ring(
    p: usize,
    bytes: u64,
    max_rtt_us: f64,
    bandwidth_mbps: f64,
    ring: &[RingLink],
) -> Option<Prediction> {
    if p < 2 || !(bandwidth_mbps > 0.0 && bandwidth_mbps.is_finite()) {
        return None;
    }
    let steps = 2.0 * (p as f64 - 1.0);
    let chunk = bytes as f64 / p as f64;
    let rtts = rtts_before(chunk);
    let latency_ms = steps * rtts * max_rtt_us / 1000.0;
    let bandwidth_ms = steps * chunk * 8.0 / (bandwidth_mbps * 1e6) * 1000.0;
    // A step stalls when any of its transfers does (stalls in the same
    // step overlap), and a stalled step delays the iteration by STALL_MS.
    let on_time: f64 = ring
        .iter()
        .map(|l| 1.0 - stall_probability(l.loss, chunk))
        .product();
    let loss_ms = steps * (1.0 - on_time) * STALL_MS;
    Some(Prediction {
        total_ms: latency_ms + bandwidth_ms + loss_ms,
        latency_ms,
        bandwidth_ms,
        loss_ms,
    })
}

/// The partner of `rank` (of `p`) in each step of Open MPI's
/// recursive-doubling all-reduce (`ompi_coll_base_allreduce_intra_
/// recursivedoubling`), and which ranks sit out. With `p` not a power of
/// two, the first `2·(p − p′)` ranks pair up (p′ the largest power of two
/// ≤ p): each even one hands its data to the odd one after it and gets
/// the result back at the end; the remaining p′ ranks exchange whole
/// buffers with the rank `2^step` away in their own numbering.
fn doubling_partner(p: usize, rank: usize, step: u32) -> Option<usize> {
    let core = 1usize << p.checked_ilog2()?;
    let extra = p - core;
    let own = if rank < 2 * extra {
        if rank.is_multiple_of(2) {
            return None;
        }
        rank / 2
    } else {
        rank - extra
    };
    let other = own ^ (1usize << step);
    Some(if other < extra {
        other * 2 + 1
    } else {
        other + extra
    })
}

/// Predict Open MPI's recursive-doubling all-reduce of `bytes` over `p`
/// ranks (rank i on the i-th node): ⌊log₂ p⌋ steps in which every active
/// rank exchanges the whole buffer with its partner, plus, when `p` is not
/// a power of two, one step before and one after for the ranks that sit
/// out. Fewer steps than a ring (log₂ p against 2(p − 1)), each moving all
/// `bytes`: the faster choice for small messages, where latency rules.
/// Latency and bandwidth as [`ring`] reads them (the set's largest RTT and
/// bottleneck bandwidth, RTTs per step by the eager limit on `bytes`);
/// `pair_loss(i, j)` is the round-trip loss between ranks i and j, and a
/// step stalls when any of its transfers (both ways of every exchange, each
/// the whole buffer) loses an exposed packet.
pub fn recursive_doubling(
    p: usize,
    bytes: u64,
    max_rtt_us: f64,
    bandwidth_mbps: f64,
    pair_loss: impl Fn(usize, usize) -> f64,
) -> Option<Prediction> {
    if p < 2 || !(bandwidth_mbps > 0.0 && bandwidth_mbps.is_finite()) {
        return None;
    }
    let n = bytes as f64;
    let rtts = rtts_before(n);
    let log = p.checked_ilog2()?;
    let core = 1usize << log;
    let extra = p - core;
    // Probability that a step is on time: every transfer in it gets its
    // exposed packets through.
    let mut on_time_by_step: Vec<f64> = (0..log)
        .map(|step| {
            (0..p)
                .filter_map(|r| Some((r, doubling_partner(p, r, step)?)))
                .filter(|(r, partner)| r < partner)
                .map(|(r, partner)| (1.0 - stall_probability(pair_loss(r, partner), n)).powi(2))
                .product()
        })
        .collect();
    if extra > 0 {
        // Rank 2i hands its buffer to 2i + 1 before, and gets the result
        // back after: one transfer each way per pair, in two steps.
        let hand_over: f64 = (0..extra)
            .map(|i| 1.0 - stall_probability(pair_loss(2 * i, 2 * i + 1), n))
            .product();
        on_time_by_step.push(hand_over);
        on_time_by_step.push(hand_over);
    }
    let steps = on_time_by_step.len() as f64;
    let latency_ms = steps * rtts * max_rtt_us / 1000.0;
    let bandwidth_ms = steps * n * 8.0 / (bandwidth_mbps * 1e6) * 1000.0;
    let loss_ms = on_time_by_step
        .iter()
        .map(|on_time| (1.0 - on_time) * STALL_MS)
        .sum::<f64>();
    Some(Prediction {
        total_ms: latency_ms + bandwidth_ms + loss_ms,
        latency_ms,
        bandwidth_ms,
        loss_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(p: usize) -> Vec<RingLink> {
        vec![RingLink { loss: 0.0 }; p]
    }

    #[test]
    fn a_loss_free_ring_is_the_alpha_beta_model_with_rendezvous() {
        // 4 nodes, 8 MiB (2 MiB chunks: rendezvous), 250 µs, 1 Gbit/s:
        // 6 steps of (1.5 × 0.25 ms + 2 MiB at 1 Gbit/s).
        let got = ring(4, 8 << 20, 250.0, 1_000.0, &clean(4)).unwrap();
        let transfer = (2u64 << 20) as f64 * 8.0 / 1e9 * 1e3;
        assert!((got.latency_ms - 6.0 * 0.375).abs() < 1e-9, "{got:?}");
        assert!((got.bandwidth_ms - 6.0 * transfer).abs() < 1e-9, "{got:?}");
        assert_eq!(got.loss_ms, 0.0);
        assert!((got.total_ms - (got.latency_ms + got.bandwidth_ms)).abs() < 1e-9);
    }

    #[test]
    fn small_chunks_go_eagerly_at_half_an_rtt_per_step() {
        // 64 KiB over 4 nodes: 16 KiB chunks, under the eager limit.
        let got = ring(4, 64 << 10, 10_000.0, 1_000.0, &clean(4)).unwrap();
        assert!((got.latency_ms - 6.0 * 5.0).abs() < 1e-9, "{got:?}");
        // 256 KiB: 64 KiB chunks, which with Open MPI's header are past it.
        let at_limit = ring(4, 256 << 10, 10_000.0, 1_000.0, &clean(4)).unwrap();
        assert!(
            (at_limit.latency_ms - 6.0 * 15.0).abs() < 1e-9,
            "{at_limit:?}"
        );
        let under = ring(4, (256 << 10) - 4 * 64, 10_000.0, 1_000.0, &clean(4)).unwrap();
        assert!((under.latency_ms - 6.0 * 5.0).abs() < 1e-9, "{under:?}");
    }

    #[test]
    fn loss_adds_expected_timeouts_per_lossy_ring_link_and_step() {
        // One node losing 2 % each way: two of the ring's links (to it and
        // from it) lose 1 − 0.98² of the round trips.
        let rt = 1.0 - 0.98_f64.powi(2);
        let mut links = clean(8);
        links[2].loss = rt;
        links[3].loss = rt;
        let got = ring(8, 8 << 20, 5_000.0, 400.0, &links).unwrap();
        // 1 MiB chunks: 1.4 exposed packets each. 14 steps, each stalled
        // when either lossy transfer is: 1 − 0.98^2.8 of them, 200 ms each.
        let stalled = 1.0 - 0.98_f64.powf(2.0 * 1.4);
        assert!(
            (got.loss_ms - 14.0 * stalled * 200.0).abs() < 1e-9,
            "{got:?}"
        );
        let lossless = ring(8, 8 << 20, 5_000.0, 400.0, &clean(8)).unwrap();
        assert!((got.total_ms - lossless.total_ms - got.loss_ms).abs() < 1e-9);
    }

    #[test]
    fn a_transfer_exposes_one_packet_and_more_per_mib_it_carries() {
        // 2 % lost each way.
        let rt = 1.0 - 0.98_f64.powi(2);
        let exposed = |mib: f64| 1.0 - 0.98_f64.powf(EXPOSED_FIXED + EXPOSED_PER_MIB * mib);
        assert!((stall_probability(rt, 0.0) - 0.02).abs() < 1e-12);
        for mib in [0.0625, 1.0, 2.0, 8.0] {
            let got = stall_probability(rt, mib * MIB);
            assert!((got - exposed(mib)).abs() < 1e-12, "{mib} MiB: {got}");
        }
        assert!(stall_probability(rt, 2.0 * MIB) > stall_probability(rt, MIB));
        assert!(stall_probability(rt, MIB) > stall_probability(rt, 0.0));
        // A ring of the same bytes over fewer nodes moves bigger chunks,
        // so each of its steps stalls more often.
        let lossy = |p: usize| {
            let mut links = clean(p);
            links[0].loss = rt;
            ring(p, 8 << 20, 1_000.0, 1_000.0, &links).unwrap().loss_ms / (2.0 * (p as f64 - 1.0))
        };
        assert!(lossy(4) > lossy(8), "{} {}", lossy(4), lossy(8));
    }

    #[test]
    fn recursive_doubling_pairs_ranks_as_open_mpi_does() {
        // 8 ranks: partners at distance 1, 2, 4.
        let partners = |p: usize, step: u32| -> Vec<Option<usize>> {
            (0..p).map(|r| doubling_partner(p, r, step)).collect()
        };
        assert_eq!(partners(8, 0), [1, 0, 3, 2, 5, 4, 7, 6].map(Some));
        assert_eq!(partners(8, 2), [4, 5, 6, 7, 0, 1, 2, 3].map(Some));
        // 6 ranks: 0 and 2 hand over to 1 and 3 and sit out; the core is
        // 1, 3, 4, 5 (own ranks 0–3).
        assert_eq!(
            partners(6, 0),
            [None, Some(3), None, Some(1), Some(5), Some(4)]
        );
        assert_eq!(
            partners(6, 1),
            [None, Some(4), None, Some(5), Some(1), Some(3)]
        );
        // Every partnership is mutual.
        for p in 2..=33_usize {
            for step in 0..p.ilog2() {
                for r in 0..p {
                    if let Some(q) = doubling_partner(p, r, step) {
                        assert!(q < p && q != r, "p {p} rank {r} step {step}");
                        assert_eq!(doubling_partner(p, q, step), Some(r), "p {p} {r}<->{q}");
                    }
                }
            }
        }
    }

    #[test]
    fn recursive_doubling_takes_log_steps_of_the_whole_buffer() {
        // 8 ranks, 16 KiB (eager), 10 ms, 100 Mbit/s: 3 steps of
        // (0.5 × 10 ms + 16 KiB at 100 Mbit/s).
        let none = |_: usize, _: usize| 0.0;
        let got = recursive_doubling(8, 16 << 10, 10_000.0, 100.0, none).unwrap();
        let transfer = (16u64 << 10) as f64 * 8.0 / 100e6 * 1e3;
        assert!((got.latency_ms - 3.0 * 5.0).abs() < 1e-9, "{got:?}");
        assert!((got.bandwidth_ms - 3.0 * transfer).abs() < 1e-9, "{got:?}");
        assert_eq!(got.loss_ms, 0.0);
        // 6 ranks: 2 exchange steps and the hand-over before and after.
        let six = recursive_doubling(6, 16 << 10, 10_000.0, 100.0, none).unwrap();
        assert!((six.latency_ms - 4.0 * 5.0).abs() < 1e-9, "{six:?}");
        // Small messages: fewer latency-bound steps than the ring's 2(p − 1).
        let ring8 = ring(8, 16 << 10, 10_000.0, 100.0, &clean(8)).unwrap();
        assert!(got.total_ms < ring8.total_ms / 2.0, "{got:?} {ring8:?}");
        // Large ones: the ring moves 2(p − 1)/p of the buffer, not log₂ p.
        let big = recursive_doubling(8, 64 << 20, 10_000.0, 100.0, none).unwrap();
        let ring_big = ring(8, 64 << 20, 10_000.0, 100.0, &clean(8)).unwrap();
        assert!(ring_big.total_ms < big.total_ms, "{big:?} {ring_big:?}");
        assert_eq!(recursive_doubling(1, 1, 1.0, 1.0, none), None);
        assert_eq!(recursive_doubling(4, 1, 1.0, 0.0, none), None);
    }

    #[test]
    fn recursive_doubling_stalls_only_in_steps_that_use_a_lossy_pair() {
        // 4 ranks; only the pair 0–2 loses (2 % each way). It exchanges in
        // step 1 only (distance 2): one step of two lossy transfers.
        let rt = 1.0 - 0.98_f64.powi(2);
        let loss = |a: usize, b: usize| {
            if a.min(b) == 0 && a.max(b) == 2 {
                rt
            } else {
                0.0
            }
        };
        let got = recursive_doubling(4, 16 << 10, 1_000.0, 1_000.0, loss).unwrap();
        // Each transfer carries the whole 16 KiB buffer.
        let exposed = EXPOSED_FIXED + EXPOSED_PER_MIB / 64.0;
        let want = (1.0 - 0.98_f64.powf(2.0 * exposed)) * STALL_MS;
        assert!((got.loss_ms - want).abs() < 1e-9, "{got:?}");
        // The pair 0–1 of 6 ranks is a hand-over pair: one way before,
        // one way after.
        let loss01 = |a: usize, b: usize| {
            if a.min(b) == 0 && a.max(b) == 1 {
                rt
            } else {
                0.0
            }
        };
        let six = recursive_doubling(6, 16 << 10, 1_000.0, 1_000.0, loss01).unwrap();
        let one_way = 1.0 - 0.98_f64.powf(exposed);
        assert!(
            (six.loss_ms - 2.0 * one_way * STALL_MS).abs() < 1e-9,
            "{six:?}"
        );
    }

    #[test]
    fn nonsense_loss_counts_as_total_loss_and_nothing_is_predicted_without_bandwidth() {
        assert_eq!(stall_probability(f64::NAN, MIB), 1.0);
        assert_eq!(stall_probability(7.0, MIB), 1.0);
        assert_eq!(stall_probability(-1.0, MIB), 0.0);
        // A negative size is no transfer at all: the fixed part only.
        assert_eq!(stall_probability(0.5, -1.0), stall_probability(0.5, 0.0));
        assert_eq!(ring(1, 8 << 20, 250.0, 1_000.0, &clean(1)), None);
        assert_eq!(ring(4, 8 << 20, 250.0, 0.0, &clean(4)), None);
        assert_eq!(ring(4, 8 << 20, 250.0, f64::NAN, &clean(4)), None);
    }
}
