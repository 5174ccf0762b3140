//! What any client of the agent port can send: bytes decoded as an
//! AgentMessage, checked as the aggregator checks it, and what passes
//! stored in a matrix and read back (figures must never panic or go NaN
//! into an answer).
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use netaware_model::matrix::Matrix;
use netaware_model::validate;
use netaware_proto::v1::AgentMessage;
use netaware_proto::v1::agent_message::Msg;
use netaware_proto::{Message, ProbeMethod};

/// The aggregator's clock in the target: windows near it can pass.
const NOW_US: u64 = 1_800_000_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = AgentMessage::decode(data) else {
        return;
    };
    match m.msg {
        Some(Msg::Hello(h)) => {
            let _ = validate::hello(&h);
        }
        Some(Msg::Reports(batch)) => {
            let now = Instant::now();
            let mut matrix = Matrix::new(0.3, Duration::from_secs(30));
            for w in batch.windows {
                if validate::window(&w, "sender", |p| p != "sender", NOW_US).is_ok() {
                    matrix.apply("sender", w, false, now);
                }
            }
            let answer = matrix.snapshot(ProbeMethod::Unspecified, true, now, NOW_US);
            for l in answer.links {
                let s = l.smoothed.unwrap_or_default();
                assert!(!s.rtt_p50_us.is_nan() && !s.loss_ppm.is_nan(), "{l:?}");
            }
        }
        Some(Msg::BandwidthResult(r)) => {
            if validate::bandwidth_result(&r).is_ok() {
                assert!(r.mbps.is_finite() && r.mbps >= 0.0, "{r:?}");
            }
        }
        Some(Msg::BandwidthServed(_)) | None => {}
    }
});
