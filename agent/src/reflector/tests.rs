use super::*;
use std::time::Duration;

const P: u16 = 8620;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn guard(per_source: f64, total: f64, now: Instant) -> Guard {
    Guard::new(
        addr("10.0.0.1:8620"),
        P,
        Limits {
            per_source_pps: per_source,
            total_pps: total,
        },
        now,
    )
}

fn test_packet() -> Vec<u8> {
    stamp::encode_sender(7, NtpTimestamp(1 << 40)).to_vec()
}

#[test]
fn a_test_packet_from_a_peer_is_answered() {
    let now = Instant::now();
    let mut g = guard(100.0, 1000.0, now);
    assert_eq!(g.check(addr("10.0.0.2:40000"), &test_packet(), now), Ok(()));
    // Padding after the 44 bytes is allowed (RFC 8762 §4.2.1).
    let mut padded = test_packet();
    padded.resize(1400, 0xab);
    assert_eq!(g.check(addr("10.0.0.2:40001"), &padded, now), Ok(()));
}

#[test]
fn what_would_loop_is_refused() {
    let now = Instant::now();
    let mut g = guard(100.0, 1000.0, now);
    let p = test_packet();
    // Another reflector (E1-loop: one spoofed packet, 62,908 packets/s).
    assert_eq!(
        g.check(addr("10.0.0.3:8620"), &p, now),
        Err(Refused::FromAReflectorPort)
    );
    assert_eq!(
        g.check(addr("10.0.0.3:53"), &p, now),
        Err(Refused::FromAPrivilegedPort)
    );
    assert_eq!(
        g.check(addr("10.0.0.3:0"), &p, now),
        Err(Refused::FromAPrivilegedPort)
    );
    let mut me = guard(100.0, 1000.0, now);
    me.stamp_port = 9999;
    assert_eq!(
        me.check(addr("10.0.0.1:8620"), &p, now),
        Err(Refused::FromItself)
    );
    // A reflection (E1: the reflector answered its own replies): its
    // must-be-zero bytes hold timestamps.
    let mut reflection = Vec::new();
    stamp::encode_reflection(&p, NtpTimestamp(2 << 40), 255, &mut reflection, || {
        NtpTimestamp(3 << 40)
    })
    .unwrap();
    assert_eq!(
        g.check(addr("10.0.0.2:40000"), &reflection, now),
        Err(Refused::NotATestPacket)
    );
    // Garbage (E1: 44 bytes of 0xff were reflected) and short packets.
    assert_eq!(
        g.check(addr("10.0.0.2:40000"), &[0xff; 44], now),
        Err(Refused::NotATestPacket)
    );
    assert_eq!(
        g.check(addr("10.0.0.2:40000"), &p[..43], now),
        Err(Refused::NotATestPacket)
    );
}

#[test]
fn one_source_is_held_to_its_rate_and_the_others_are_not_affected() {
    let t0 = Instant::now();
    let mut g = guard(10.0, 1000.0, t0);
    let p = test_packet();
    let noisy = addr("10.0.0.9:40000");
    let answered = (0..2000).filter(|_| g.check(noisy, &p, t0).is_ok()).count();
    assert_eq!(answered, 10, "a burst of one second's worth");
    assert_eq!(g.check(addr("10.0.0.2:40000"), &p, t0), Ok(()));
    // A second later, the noisy source has another second's worth.
    let t1 = t0 + Duration::from_secs(1);
    let answered = (0..2000).filter(|_| g.check(noisy, &p, t1).is_ok()).count();
    assert_eq!(answered, 10);
}

#[test]
fn the_total_rate_caps_many_sources() {
    let t0 = Instant::now();
    let mut g = guard(100.0, 50.0, t0);
    let p = test_packet();
    let answered = (0..200u16)
        .filter(|i| {
            g.check(
                addr(&format!("10.1.{}.{}:40000", i / 200, i % 200 + 1)),
                &p,
                t0,
            )
            .is_ok()
        })
        .count();
    assert_eq!(answered, 50);
    assert_eq!(
        g.check(addr("10.2.0.1:40000"), &p, t0),
        Err(Refused::TotalRate)
    );
}

#[test]
fn the_sources_remembered_are_bounded_and_idle_ones_make_room() {
    let t0 = Instant::now();
    let mut g = guard(1.0, 1e9, t0);
    let p = test_packet();
    let source = |i: usize| {
        addr(&format!(
            "10.{}.{}.{}:40000",
            i / 65536,
            (i / 256) % 256,
            i % 256
        ))
    };
    for i in 0..MAX_SOURCES {
        assert_eq!(g.check(source(i), &p, t0), Ok(()));
    }
    // Every bucket is in use right now: a new source is refused.
    assert_eq!(
        g.check(source(MAX_SOURCES), &p, t0),
        Err(Refused::TooManySources)
    );
    assert!(g.sources.len() <= MAX_SOURCES);
    // Once they are idle (refilled), they are forgotten for a new one.
    let later = t0 + Duration::from_secs(5);
    assert_eq!(g.check(source(MAX_SOURCES), &p, later), Ok(()));
    assert!(g.sources.len() <= MAX_SOURCES);
}

/// Start a reflector on loopback with room for `per_source` packets a
/// second from one source; returns its address.
async fn running(per_source: f64) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let socket = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let local = socket.local_addr().unwrap();
    let g = Guard::new(
        local,
        local.port(),
        Limits {
            per_source_pps: per_source,
            total_pps: 10_000.0,
        },
        Instant::now(),
    );
    (local, tokio::spawn(run(socket, Clock::new(), g, None)))
}

/// A hand-built RFC 8762 Session-Sender packet, sent over real UDP to the
/// running reflector, comes back with the reflector layout filled in; the
/// answer sent back to the reflector is not answered again (E1: three
/// rounds, and with two reflectors, for ever).
#[tokio::test]
async fn the_reflector_answers_a_standard_stamp_sender_and_never_its_own_reply() {
    let (addr, reflector) = running(100.0).await;
    let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut test = Vec::new();
    test.extend_from_slice(&77u32.to_be_bytes()); // sequence number
    test.extend_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes()); // T1
    test.extend_from_slice(&[0x00, 0x01]); // error estimate
    test.resize(64, 0); // MBZ and some padding
    sender.send_to(&test, addr).await.unwrap();
    let mut buf = [0u8; 128];
    let (n, from) = tokio::time::timeout(Duration::from_secs(2), sender.recv_from(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    assert_eq!(from, addr);
    assert_eq!(n, 64, "same length as the test packet");
    let r = stamp::decode_reflector(&buf[..n]).unwrap();
    assert_eq!((r.seq, r.sender_seq), (77, 77));
    assert_eq!(r.sender_timestamp.0, 0x0102_0304_0506_0708);
    assert_eq!(r.sender_error_estimate, 1);
    assert!(r.timestamp >= r.receive_timestamp, "T3 >= T2");
    assert!(r.reflector_hold() < Duration::from_millis(100));

    // The reply, sent back as if it were a test packet.
    sender.send_to(&buf[..n], addr).await.unwrap();
    let again = tokio::time::timeout(Duration::from_millis(300), sender.recv_from(&mut buf)).await;
    assert!(again.is_err(), "a reflection must not be reflected");
    reflector.abort();
}

/// E1's burst: 2000 packets in a moment meet the per-source limit.
#[tokio::test]
async fn a_burst_from_one_source_is_answered_up_to_its_rate() {
    let (addr, reflector) = running(20.0).await;
    let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let test = test_packet();
    for _ in 0..2000 {
        sender.send_to(&test, addr).await.unwrap();
    }
    let mut answers = 0;
    let mut buf = [0u8; 128];
    while tokio::time::timeout(Duration::from_millis(300), sender.recv_from(&mut buf))
        .await
        .is_ok()
    {
        answers += 1;
    }
    reflector.abort();
    // One second's worth (20), and a token or two refilled while sending.
    assert!((20..=30).contains(&answers), "{answers} answers");
}
