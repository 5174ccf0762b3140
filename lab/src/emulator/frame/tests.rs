use super::*;

const MSS: u16 = 1448;
const TCP_LEN: usize = 32;
const SEQ: u32 = 0x0102_0304;

/// The ones' complement sum of `data` (16-bit big-endian words), folded.
fn ones_sum(data: &[u8], mut sum: u32) -> u16 {
    for pair in data.chunks(2) {
        let hi = u32::from(pair[0]) << 8;
        let lo = pair.get(1).map_or(0, |b| u32::from(*b));
        sum += hi | lo;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// A TSO frame as the kernel hands it over: IPv4 + TCP (12 bytes of
/// options) + `payload` bytes, a header asking for `mss`-byte segments.
/// `hdr_len` is deliberately wrong: the kernel's value is not trusted.
fn tso_frame(payload: usize, mss: u16) -> Vec<u8> {
    let hdr = VirtioNetHdr {
        flags: 1, // NEEDS_CSUM
        gso_type: tun_rs::VIRTIO_NET_HDR_GSO_TCPV4,
        hdr_len: 1500,
        gso_size: mss,
        csum_start: 20,
        csum_offset: 16,
    };
    let mut f = vec![0u8; VIRTIO_NET_HDR_LEN];
    hdr.encode(&mut f).unwrap();
    let total = u16::try_from(20 + TCP_LEN + payload).unwrap_or(u16::MAX);
    let mut ip = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, IPPROTO_TCP, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[10, 77, 0, 1, 10, 77, 0, 2]);
    f.extend_from_slice(&ip);
    let mut tcp = vec![0u8; TCP_LEN];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&5201u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&SEQ.to_be_bytes());
    tcp[12] = ((TCP_LEN / 4) as u8) << 4;
    tcp[13] = 0x18; // ACK | PSH
    f.extend_from_slice(&tcp);
    f.extend((0..payload).map(|i| (i % 251) as u8));
    f
}

#[test]
fn a_plain_frame_is_one_wire_packet() {
    let mut f = tso_frame(100, MSS);
    f[1] = GSO_NONE; // gso_type
    let frame = Frame::parse(&f).unwrap();
    assert_eq!(frame.segments, 1);
    assert_eq!(frame.packet, &f[VIRTIO_NET_HDR_LEN..]);
}

#[test]
fn a_tso_frame_counts_its_segments() {
    // 10,000 bytes in 1,448-byte segments: 6 full and one of 1,312.
    let f = tso_frame(10_000, MSS);
    let frame = Frame::parse(&f).unwrap();
    assert_eq!(frame.segments, 7);
    assert_eq!(usize::from(frame.hdr.hdr_len), 20 + TCP_LEN);
    // Exactly two segments' worth is two, not three.
    assert_eq!(Frame::parse(&tso_frame(2 * 1448, MSS)).unwrap().segments, 2);
}

#[test]
fn split_keeps_the_chosen_segments_as_valid_packets() {
    let f = tso_frame(10_000, MSS);
    let frame = Frame::parse(&f).unwrap();
    let kept = frame.split(|i| i != 2 && i != 5).unwrap();
    let indices = [0usize, 1, 3, 4, 6];
    assert_eq!(kept.len(), indices.len());
    let payload = &f[VIRTIO_NET_HDR_LEN + 20 + TCP_LEN..];
    for (out, i) in kept.iter().zip(indices) {
        let head = VirtioNetHdr::decode(out).unwrap();
        assert_eq!((head.flags, head.gso_type), (0, GSO_NONE), "a plain packet");
        let ip = &out[VIRTIO_NET_HDR_LEN..];
        let data_len = if i == 6 { 10_000 - 6 * 1448 } else { 1448 };
        assert_eq!(ip.len(), 20 + TCP_LEN + data_len, "segment {i}");
        assert_eq!(usize::from(u16::from_be_bytes([ip[2], ip[3]])), ip.len());
        assert_eq!(
            ones_sum(&ip[..20], 0),
            0xffff,
            "IPv4 header checksum of {i}"
        );
        let tcp = &ip[20..];
        let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
        assert_eq!(seq, SEQ + 1448 * i as u32, "sequence number of {i}");
        assert_eq!(tcp[13] & 0x08 != 0, i == 6, "PSH only on the last segment");
        // Pseudo-header: addresses, protocol, TCP length.
        let pseudo = ones_sum(&ip[12..20], u32::from(IPPROTO_TCP) + tcp.len() as u32);
        assert_eq!(
            ones_sum(tcp, u32::from(pseudo)),
            0xffff,
            "TCP checksum of {i}"
        );
        let start = i * 1448;
        assert_eq!(&tcp[TCP_LEN..], &payload[start..start + data_len]);
    }
}

#[test]
fn malformed_frames_are_refused() {
    let good = tso_frame(3_000, MSS);
    assert!(Frame::parse(&good).is_some());
    assert!(
        Frame::parse(&good[..VIRTIO_NET_HDR_LEN + 10]).is_none(),
        "short"
    );
    let mut v6 = good.clone();
    v6[VIRTIO_NET_HDR_LEN] = 0x60;
    assert!(Frame::parse(&v6).is_none(), "IPv6");
    let mut no_size = good.clone();
    no_size[4..6].copy_from_slice(&0u16.to_ne_bytes()); // gso_size
    assert!(Frame::parse(&no_size).is_none(), "gso_size 0");
    let mut start = good.clone();
    start[6..8].copy_from_slice(&24u16.to_ne_bytes()); // csum_start
    assert!(
        Frame::parse(&start).is_none(),
        "csum_start beyond the IP header"
    );
    let mut offset = good.clone();
    offset[VIRTIO_NET_HDR_LEN + 20 + 12] = 0x10; // 4-byte TCP header
    assert!(Frame::parse(&offset).is_none(), "TCP data offset");
    let mut udp = good.clone();
    udp[VIRTIO_NET_HDR_LEN + 9] = IPPROTO_UDP;
    assert!(Frame::parse(&udp).is_none(), "TCP GSO type on a UDP packet");
    // 200 one-byte segments: more than any kernel sends.
    assert!(
        Frame::parse(&tso_frame(200, 1)).is_none(),
        "too many segments"
    );
    assert!(Frame::parse(&tso_frame(MAX_SEGMENTS, 1)).is_some());
}
