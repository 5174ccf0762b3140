//! STAMP test packets (RFC 8762, unauthenticated mode).
//!
//! Session-Sender test packet (44 octets, may be padded):
//! ```text
//!  0 Sequence Number (4) | 4 Timestamp (8) | 12 Error Estimate (2) | 14 MBZ (30)
//! ```
//! Session-Reflector test packet (same length as the packet it answers):
//! ```text
//!  0 Sequence Number (4)          |  4 Timestamp T3 (8)     | 12 Error Estimate (2) | 14 MBZ (2)
//! 16 Receive Timestamp T2 (8)     | 24 Sender Seq (4)       | 28 Sender Timestamp T1 (8)
//! 36 Sender Error Estimate (2)    | 38 MBZ (2)              | 40 Sender TTL (1)     | 41 MBZ (3)
//! ```
//! Timestamps are NTP 64-bit (32-bit seconds since 1900, 32-bit fraction).
//! RTT = (T4 − T1) − (T3 − T2): the reflector's own time is excluded.

use std::time::Duration;

use crate::error::{Error, Result};

/// Length of an unauthenticated STAMP test packet without padding.
pub const PACKET_LEN: usize = 44;
/// Largest packet we reflect (sender padding included).
pub const MAX_PACKET_LEN: usize = 1500;
/// Seconds between the NTP epoch (1900) and the Unix epoch (1970).
const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;

/// Error Estimate (RFC 4656 §4.1.2): S=0 (clocks not synchronised to UTC),
/// Z=0 (NTP format), Scale=22, Multiplier=1, i.e. about 1 ms. We only ever use
/// timestamp differences taken on one clock, so the absolute error is moot.
pub const ERROR_ESTIMATE: u16 = (22 << 8) | 1;

/// An NTP 64-bit timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct NtpTimestamp(pub u64);

impl NtpTimestamp {
    /// From time since the Unix epoch.
    pub fn from_unix(since_epoch: Duration) -> Self {
        let secs = since_epoch.as_secs() + NTP_UNIX_OFFSET_S;
        let frac = (u64::from(since_epoch.subsec_nanos()) << 32) / 1_000_000_000;
        Self(((secs & 0xffff_ffff) << 32) | frac)
    }

    /// `self − earlier`, saturating at zero (wraps of the 32-bit seconds
    /// field are handled by wrapping subtraction).
    pub fn since(self, earlier: NtpTimestamp) -> Duration {
        let diff = self.0.wrapping_sub(earlier.0);
        if diff > (1u64 << 63) {
            return Duration::ZERO;
        }
        let secs = diff >> 32;
        let nanos = ((diff & 0xffff_ffff) * 1_000_000_000) >> 32;
        Duration::new(secs, u32::try_from(nanos).unwrap_or(0))
    }
}

/// Decoded Session-Sender packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderPacket {
    pub seq: u32,
    pub timestamp: NtpTimestamp,
    pub error_estimate: u16,
}

/// Decoded Session-Reflector packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReflectorPacket {
    pub seq: u32,
    /// T3: when the reflector sent the answer.
    pub timestamp: NtpTimestamp,
    pub error_estimate: u16,
    /// T2: when the reflector received the test packet.
    pub receive_timestamp: NtpTimestamp,
    pub sender_seq: u32,
    /// T1, copied from the test packet.
    pub sender_timestamp: NtpTimestamp,
    pub sender_error_estimate: u16,
    pub sender_ttl: u8,
}

impl ReflectorPacket {
    /// Time the packet spent in the reflector (T3 − T2).
    pub fn reflector_hold(&self) -> Duration {
        self.timestamp.since(self.receive_timestamp)
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

fn check_len(buf: &[u8]) -> Result<()> {
    if buf.len() < PACKET_LEN {
        return Err(Error::Packet(format!(
            "STAMP packet of {} bytes is shorter than {PACKET_LEN}",
            buf.len()
        )));
    }
    Ok(())
}

/// Whether `buf` is a Session-Sender test packet: long enough, and its
/// must-be-zero bytes (14..44) zero. A Session-Reflector packet carries
/// timestamps there, so a reflection never passes for a test packet.
pub fn is_sender_packet(buf: &[u8]) -> bool {
    buf.len() >= PACKET_LEN && buf[14..PACKET_LEN].iter().all(|&b| b == 0)
}

/// Encode a Session-Sender packet (no padding).
pub fn encode_sender(seq: u32, t1: NtpTimestamp) -> [u8; PACKET_LEN] {
    let mut b = [0u8; PACKET_LEN];
    b[0..4].copy_from_slice(&seq.to_be_bytes());
    b[4..12].copy_from_slice(&t1.0.to_be_bytes());
    b[12..14].copy_from_slice(&ERROR_ESTIMATE.to_be_bytes());
    b
}

/// Decode a Session-Sender packet.
pub fn decode_sender(buf: &[u8]) -> Result<SenderPacket> {
    check_len(buf)?;
    Ok(SenderPacket {
        seq: u32_at(buf, 0),
        timestamp: NtpTimestamp(u64_at(buf, 4)),
        error_estimate: u16_at(buf, 12),
    })
}

/// Write the reflection of `test` (a Session-Sender packet) into `out`, in
/// stateless mode (the reflector's sequence number copies the sender's).
/// `out` gets the same length as `test`, as RFC 8762 §4.3 asks for symmetric
/// packet sizes; T3 is stamped by `t3` as late as possible.
pub fn encode_reflection(
    test: &[u8],
    t2: NtpTimestamp,
    ttl: u8,
    out: &mut Vec<u8>,
    t3: impl FnOnce() -> NtpTimestamp,
) -> Result<()> {
    let s = decode_sender(test)?;
    out.clear();
    out.resize(test.len().min(MAX_PACKET_LEN), 0);
    out[0..4].copy_from_slice(&s.seq.to_be_bytes());
    out[12..14].copy_from_slice(&ERROR_ESTIMATE.to_be_bytes());
    out[16..24].copy_from_slice(&t2.0.to_be_bytes());
    out[24..28].copy_from_slice(&s.seq.to_be_bytes());
    out[28..36].copy_from_slice(&s.timestamp.0.to_be_bytes());
    out[36..38].copy_from_slice(&s.error_estimate.to_be_bytes());
    out[40] = ttl;
    out[4..12].copy_from_slice(&t3().0.to_be_bytes());
    Ok(())
}

/// Decode a Session-Reflector packet.
pub fn decode_reflector(buf: &[u8]) -> Result<ReflectorPacket> {
    check_len(buf)?;
    Ok(ReflectorPacket {
        seq: u32_at(buf, 0),
        timestamp: NtpTimestamp(u64_at(buf, 4)),
        error_estimate: u16_at(buf, 12),
        receive_timestamp: NtpTimestamp(u64_at(buf, 16)),
        sender_seq: u32_at(buf, 24),
        sender_timestamp: NtpTimestamp(u64_at(buf, 28)),
        sender_error_estimate: u16_at(buf, 36),
        sender_ttl: buf[40],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntp_conversion_matches_the_epoch_offset() {
        let t = NtpTimestamp::from_unix(Duration::new(0, 500_000_000));
        assert_eq!(t.0 >> 32, NTP_UNIX_OFFSET_S);
        assert_eq!(t.0 & 0xffff_ffff, 1 << 31);
        let a = NtpTimestamp::from_unix(Duration::new(1_700_000_000, 123_000));
        let b = NtpTimestamp::from_unix(Duration::new(1_700_000_001, 223_000));
        let d = b.since(a);
        assert!(d.as_nanos().abs_diff(1_000_100_000) <= 2, "{d:?}");
        assert_eq!(a.since(b), Duration::ZERO);
    }

    /// Builds a sender packet byte by byte from RFC 8762 §4.2.1, independently
    /// of `encode_sender`, the way a third-party STAMP sender would.
    fn third_party_sender_packet(seq: u32, ts: u64, pad_to: usize) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&[0x80, 0x01]); // S=1, Z=0, scale 0, multiplier 1
        p.resize(pad_to.max(44), 0);
        p
    }

    #[test]
    fn reflection_of_a_standard_sender_packet_has_the_rfc_layout() {
        let test = third_party_sender_packet(0xdead_beef, 0x0102_0304_0506_0708, 44);
        let mut out = Vec::new();
        encode_reflection(&test, NtpTimestamp(0x1111), 64, &mut out, || {
            NtpTimestamp(0x2222)
        })
        .unwrap();
        assert_eq!(out.len(), 44);
        assert_eq!(&out[0..4], &0xdead_beefu32.to_be_bytes()); // stateless: copies seq
        assert_eq!(&out[4..12], &0x2222u64.to_be_bytes()); // T3
        assert_eq!(&out[16..24], &0x1111u64.to_be_bytes()); // T2
        assert_eq!(&out[24..28], &0xdead_beefu32.to_be_bytes());
        assert_eq!(&out[28..36], &0x0102_0304_0506_0708u64.to_be_bytes()); // T1
        assert_eq!(&out[36..38], &[0x80, 0x01]);
        assert_eq!(out[40], 64);
        assert!(
            out[14..16]
                .iter()
                .chain(&out[38..40])
                .chain(&out[41..44])
                .all(|b| *b == 0)
        );
        let r = decode_reflector(&out).unwrap();
        assert_eq!(
            r.reflector_hold(),
            NtpTimestamp(0x2222).since(NtpTimestamp(0x1111))
        );
    }

    #[test]
    fn padded_packets_are_reflected_with_the_same_length() {
        let test = third_party_sender_packet(7, 9, 200);
        let mut out = Vec::new();
        encode_reflection(&test, NtpTimestamp(1), 1, &mut out, || NtpTimestamp(2)).unwrap();
        assert_eq!(out.len(), 200);
    }

    #[test]
    fn short_packets_are_rejected() {
        assert!(decode_sender(&[0u8; 43]).is_err());
        let mut out = Vec::new();
        assert!(
            encode_reflection(&[0u8; 10], NtpTimestamp(1), 1, &mut out, || NtpTimestamp(2))
                .is_err()
        );
    }

    #[test]
    fn our_sender_packet_round_trips() {
        let t1 = NtpTimestamp::from_unix(Duration::new(1_800_000_000, 42));
        let p = encode_sender(5, t1);
        let s = decode_sender(&p).unwrap();
        assert_eq!(
            (s.seq, s.timestamp, s.error_estimate),
            (5, t1, ERROR_ESTIMATE)
        );
    }
}
