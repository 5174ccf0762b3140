//! Frames as the lab's TUN devices exchange them: a virtio-net header, then
//! one IPv4 packet.
//!
//! The devices are opened with segmentation offload (TSO/USO), as a real
//! NIC would offer it: a bulk TCP sender's kernel hands over up to 64 KiB at
//! once, one "GSO" packet standing for many wire packets (segments). The
//! emulator delays such a packet as one unit and writes it, header and all,
//! to the receiver's device, whose kernel takes it as GRO would have merged
//! it. One read, one heap entry and one write per 40-odd wire packets is
//! what lets the emulator keep up with bandwidth tests on two cores; with one
//! per wire packet it fell milliseconds behind (docs/benchmarks.md §2).
//!
//! Loss stays per wire packet: a GSO packet that loses some of its segments
//! is split here and only the survivors are delivered.

use tun_rs::{VIRTIO_NET_HDR_LEN, VirtioNetHdr, gso_split};

/// `gso_type` of a packet that is not a GSO packet.
const GSO_NONE: u8 = 0;
/// The ECN bit of `gso_type` (set on TCP packets that carry CWR).
const GSO_ECN: u8 = 0x80;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// Most segments one GSO packet is split into. The kernel's own bound is
/// 64 KiB of payload, i.e. 45 segments at an MSS of 1448 and 53 at the
/// smallest MTU the lab allows; a header claiming more is malformed.
pub(super) const MAX_SEGMENTS: usize = 128;

/// A frame read from a TUN device, checked.
#[derive(Debug, Clone, Copy)]
pub(super) struct Frame<'a> {
    /// The header, `hdr_len` recomputed from the packet itself (the kernel's
    /// value can cover the whole first segment).
    hdr: VirtioNetHdr,
    /// The IP packet after the header.
    pub(super) packet: &'a [u8],
    /// Wire packets this frame stands for: 1, or a GSO packet's segments.
    pub(super) segments: usize,
}

impl<'a> Frame<'a> {
    /// Check `frame`; `None` when it is too short, not IPv4, or a GSO packet
    /// whose headers do not add up (the emulator drops those).
    pub(super) fn parse(frame: &'a [u8]) -> Option<Self> {
        let head = frame.get(..VIRTIO_NET_HDR_LEN)?;
        let mut hdr = VirtioNetHdr::decode(head).ok()?;
        let packet = &frame[VIRTIO_NET_HDR_LEN..];
        if packet.len() < 20 || packet[0] >> 4 != 4 {
            return None;
        }
        if hdr.gso_type == GSO_NONE {
            return Some(Frame {
                hdr,
                packet,
                segments: 1,
            });
        }
        let ip_len = usize::from(packet[0] & 0x0f) * 4;
        let transport = match (hdr.gso_type & !GSO_ECN, packet[9]) {
            (t, IPPROTO_TCP) if t == tun_rs::VIRTIO_NET_HDR_GSO_TCPV4 => {
                let tcp_len = usize::from(*packet.get(ip_len + 12)? >> 4) * 4;
                (20..=60).contains(&tcp_len).then_some(tcp_len)?
            }
            (t, IPPROTO_UDP) if t == tun_rs::VIRTIO_NET_HDR_GSO_UDP_L4 => 8,
            _ => return None,
        };
        let header_len = ip_len + transport;
        let gso_size = usize::from(hdr.gso_size);
        if ip_len < 20 || usize::from(hdr.csum_start) != ip_len || gso_size == 0 {
            return None;
        }
        let payload = packet.len().checked_sub(header_len)?;
        let segments = payload.div_ceil(gso_size).max(1);
        if segments > MAX_SEGMENTS {
            return None;
        }
        hdr.hdr_len = u16::try_from(header_len).ok()?;
        Some(Frame {
            hdr,
            packet,
            segments,
        })
    }

    /// The segments whose index `keep` accepts, each as a frame of its own
    /// (a plain header, checksums computed), in order.
    pub(super) fn split(&self, keep: impl Fn(usize) -> bool) -> std::io::Result<Vec<Vec<u8>>> {
        let segment_len =
            VIRTIO_NET_HDR_LEN + usize::from(self.hdr.hdr_len) + usize::from(self.hdr.gso_size);
        let mut bufs = vec![vec![0u8; segment_len]; self.segments];
        let mut sizes = vec![0usize; self.segments];
        // gso_split rewrites headers in place while it walks the packet.
        let mut input = self.packet.to_vec();
        let n = gso_split(
            &mut input,
            self.hdr,
            &mut bufs,
            &mut sizes,
            VIRTIO_NET_HDR_LEN,
            false,
        )?;
        Ok(bufs
            .into_iter()
            .zip(sizes)
            .take(n)
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .map(|(_, (mut buf, size))| {
                // The zeroed header in front says: one plain packet, its
                // checksums complete.
                buf.truncate(VIRTIO_NET_HDR_LEN + size);
                buf
            })
            .collect())
    }
}

#[cfg(test)]
mod tests;
