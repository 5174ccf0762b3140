//! The predicted time of a ring all-reduce, in three parts: latency,
//! bandwidth and loss (docs/placement.md, "The cost model").
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
//!   its one unrepairable packet (the rendezvous handshake or the tail of
//!   the chunk, which no later packet's duplicate ACKs can repair) is lost
//!   one way; a step with any stalled transfer is a retransmission timeout
//!   ([`STALL_MS`]) late.
//!
//! The loss part is an expectation: the prediction is the mean step time a
//! training job sees, and a lossy set's single iterations are either on
//! time or a timeout late. The constants were fitted to recorded lab runs
//! (the fixture in `model/tests/fixtures/allreduce-lab.json`).

/// Open MPI's TCP transport sends messages up to this size eagerly
/// (`btl_tcp_eager_limit`, 64 KiB); larger ones wait for a rendezvous.
pub const EAGER_LIMIT_BYTES: f64 = 65_536.0;
/// RTTs a step costs before its bandwidth term: eager (0.5) and rendezvous
/// (1.5). Fitted: with 0.5 alone, every cross-region set of the lab runs
/// was predicted at 0.80–0.92 of its measured time; with 1.5, 0.97–1.03.
pub const RTTS_PER_STEP: (f64, f64) = (0.5, 1.5);
/// A transfer that loses its unrepairable packet waits for Linux's minimum
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

/// Probability that one transfer of a step stalls: its one unrepairable
/// packet lost one way, read from the round-trip loss `rt` (both ways
/// equally lossy: `1 − (1 − p)² = rt`).
pub fn stall_probability(rt: f64) -> f64 {
    let rt = if rt.is_finite() {
        rt.clamp(0.0, 1.0)
    } else {
        1.0
    };
    1.0 - (1.0 - rt).sqrt()
}

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
    let rtts = if chunk > EAGER_LIMIT_BYTES {
        RTTS_PER_STEP.1
    } else {
        RTTS_PER_STEP.0
    };
    let latency_ms = steps * rtts * max_rtt_us / 1000.0;
    let bandwidth_ms = steps * chunk * 8.0 / (bandwidth_mbps * 1e6) * 1000.0;
    // A step stalls when any of its transfers does (stalls in the same
    // step overlap), and a stalled step delays the iteration by STALL_MS.
    let on_time: f64 = ring
        .iter()
        .map(|l| 1.0 - stall_probability(l.loss))
        .product();
    let loss_ms = steps * (1.0 - on_time) * STALL_MS;
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
    }

    #[test]
    fn loss_adds_expected_timeouts_per_lossy_ring_link_and_step() {
        // One node losing 2 % each way: two of the ring's links (to it and
        // from it) lose 1 − 0.98² of the round trips.
        let rt = 1.0 - 0.98_f64.powi(2);
        assert!((stall_probability(rt) - 0.02).abs() < 1e-12);
        let mut links = clean(8);
        links[2].loss = rt;
        links[3].loss = rt;
        let got = ring(8, 8 << 20, 5_000.0, 400.0, &links).unwrap();
        // 14 steps, each stalled when either lossy transfer is:
        // 1 − 0.98² of them, 200 ms each.
        assert!((got.loss_ms - 14.0 * rt * 200.0).abs() < 1e-9, "{got:?}");
        let lossless = ring(8, 8 << 20, 5_000.0, 400.0, &clean(8)).unwrap();
        assert!((got.total_ms - lossless.total_ms - got.loss_ms).abs() < 1e-9);
    }

    #[test]
    fn nonsense_loss_counts_as_total_loss_and_nothing_is_predicted_without_bandwidth() {
        assert_eq!(stall_probability(f64::NAN), 1.0);
        assert_eq!(stall_probability(7.0), 1.0);
        assert_eq!(stall_probability(-1.0), 0.0);
        assert_eq!(ring(1, 8 << 20, 250.0, 1_000.0, &clean(1)), None);
        assert_eq!(ring(4, 8 << 20, 250.0, 0.0, &clean(4)), None);
        assert_eq!(ring(4, 8 << 20, 250.0, f64::NAN, &clean(4)), None);
    }
}
