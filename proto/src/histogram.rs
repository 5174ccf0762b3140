//! The codec of `LinkWindow.rtt_histogram`: HdrHistogram V2, with the
//! bounds every window uses.
//!
//! It lives with the wire contract because both ends use it: the agent
//! encodes each window's RTTs, and the lab (and any other reader of the
//! windows) decodes them. Neither end has to depend on the other.

use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::{Counter, Histogram};

/// Smallest RTT step the histogram resolves (1 µs). With 3 significant
/// digits RTTs above 1 ms keep 0.1 % precision; below, 1 µs. A 1 ns floor
/// would triple the memory of every open window for no useful precision.
pub const LOW_NS: u64 = 1_000;
/// Largest RTT the histogram stores (60 s); larger values are clamped.
pub const HIGH_NS: u64 = 60_000_000_000;
/// Significant decimal digits kept by the histogram (0.1 % resolution).
const SIGFIG: u8 = 3;

/// Why a histogram could not be made, encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum HistogramError {
    #[error("cannot create an RTT histogram: {0}")]
    Create(#[from] hdrhistogram::CreationError),
    #[error("cannot encode an RTT histogram: {0:?}")]
    Encode(hdrhistogram::serialization::V2SerializeError),
    #[error("rtt_histogram is not a valid HdrHistogram V2 encoding: {0:?}")]
    Decode(hdrhistogram::serialization::DeserializeError),
}

/// An empty RTT histogram (nanoseconds) with the bounds every window uses.
pub fn new_histogram() -> Result<Histogram<u32>, HistogramError> {
    Ok(Histogram::new_with_bounds(LOW_NS, HIGH_NS, SIGFIG)?)
}

/// Serialise a histogram in the HdrHistogram V2 format (what
/// `LinkWindow.rtt_histogram` carries).
pub fn encode_histogram<T: Counter>(hist: &Histogram<T>) -> Result<Vec<u8>, HistogramError> {
    let mut out = Vec::new();
    V2Serializer::new()
        .serialize(hist, &mut out)
        .map_err(HistogramError::Encode)?;
    Ok(out)
}

/// Inverse of [`encode_histogram`] (u64 counters, so merged windows cannot
/// overflow).
pub fn decode_histogram(bytes: &[u8]) -> Result<Histogram<u64>, HistogramError> {
    Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(HistogramError::Decode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_survives_the_wire() {
        let mut h = new_histogram().unwrap();
        for us in [250u64, 251, 5_000, 100_000] {
            h.record(us * 1_000).unwrap();
        }
        let back = decode_histogram(&encode_histogram(&h).unwrap()).unwrap();
        assert_eq!(back.len(), 4);
        assert_eq!(back.max(), h.max());
        assert_eq!(back.value_at_quantile(0.5), h.value_at_quantile(0.5));
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        let err = decode_histogram(b"not a histogram").unwrap_err();
        assert!(matches!(err, HistogramError::Decode(_)), "{err}");
        assert!(err.to_string().contains("rtt_histogram"), "{err}");
    }

    #[test]
    fn values_beyond_the_bounds_are_refused_by_record() {
        let mut h = new_histogram().unwrap();
        assert!(h.record(HIGH_NS * 2).is_err());
    }
}
