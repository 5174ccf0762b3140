//! ICMP echo probing with kernel receive timestamps.
//!
//! surge-ping's client stamps a reply after its receive task wakes up, which
//! adds 0.1–0.3 ms to every RTT on a busy VM, and it exposes neither the
//! socket's control messages nor its packet builder. So this module opens the
//! socket itself (raw with CAP_NET_RAW, else a datagram "ping" socket: the same
//! fallback surge-ping uses), asks for `SO_TIMESTAMPNS`, and parses replies
//! with surge-ping's public [`surge_ping::Icmpv4Packet::decode`].
//!
//! One socket serves all peers; a receive task hands each reply to the task
//! probing that peer.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::debug;

use crate::clock::Clock;
use crate::rxts;

/// ICMP type of an echo reply.
const ECHO_REPLY: u8 = 0;
/// ICMP type of an echo request.
const ECHO_REQUEST: u8 = 8;

/// An answer to one of our echo requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoReply {
    pub seq: u16,
    /// Arrival on the agent's monotonic clock (kernel timestamp).
    pub at: Duration,
}

type Routes = Arc<Mutex<HashMap<Ipv4Addr, (u16, mpsc::Sender<EchoReply>)>>>;

/// A shared ICMP echo socket.
#[derive(Clone)]
pub struct IcmpSocket {
    socket: Arc<UdpSocket>,
    kind: Type,
    routes: Routes,
}

impl std::fmt::Debug for IcmpSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IcmpSocket")
            .field("raw", &(self.kind == Type::RAW))
            .finish()
    }
}

/// RFC 1071 Internet checksum.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMPv4 echo request (header and payload; the IP header is the kernel's).
pub fn echo_request(ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 8 + payload.len()];
    p[0] = ECHO_REQUEST;
    p[4..6].copy_from_slice(&ident.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    p[8..].copy_from_slice(payload);
    let c = checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

/// The identifier and sequence number of an echo reply from `from`, or
/// `None` when `packet` is anything else. `raw`: the packet starts with its
/// IPv4 header (a raw socket), else with the ICMP header (a ping socket).
/// Every byte the ICMP socket receives passes here first (fuzzed:
/// `fuzz/fuzz_targets/icmp_reply.rs`).
pub fn parse_echo_reply(packet: &[u8], raw: bool, from: Ipv4Addr) -> Option<(u16, u16)> {
    let kind = if raw { Type::RAW } else { Type::DGRAM };
    let p = surge_ping::Icmpv4Packet::decode(packet, kind, from, Ipv4Addr::UNSPECIFIED).ok()?;
    (p.get_icmp_type().0 == ECHO_REPLY).then(|| (p.get_identifier().0, p.get_sequence().0))
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl IcmpSocket {
    /// Open a raw ICMP socket, or a datagram one when raw is not allowed, and
    /// start the receive task.
    pub fn open(clock: Clock) -> io::Result<Self> {
        let (socket, kind) = match Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)) {
            Ok(s) => (s, Type::RAW),
            Err(raw_err) => match Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::ICMPV4)) {
                Ok(s) => (s, Type::DGRAM),
                Err(dgram_err) => {
                    return Err(io::Error::new(
                        dgram_err.kind(),
                        format!("raw socket: {raw_err}; datagram socket: {dgram_err}"),
                    ));
                }
            },
        };
        socket.set_nonblocking(true)?;
        let socket = UdpSocket::from_std(std::net::UdpSocket::from(socket))?;
        rxts::enable(&socket)?;
        let this = IcmpSocket {
            socket: Arc::new(socket),
            kind,
            routes: Arc::new(Mutex::new(HashMap::new())),
        };
        tokio::spawn(this.clone().receive(clock));
        Ok(this)
    }

    /// Whether this is a raw socket (otherwise a datagram ping socket).
    pub fn is_raw(&self) -> bool {
        self.kind == Type::RAW
    }

    /// Receive echo replies for `peer`; `ident` is the identifier our
    /// requests carry (datagram sockets get theirs from the kernel).
    pub fn register(&self, peer: Ipv4Addr, ident: u16) -> mpsc::Receiver<EchoReply> {
        let (tx, rx) = mpsc::channel(256);
        locked(&self.routes).insert(peer, (ident, tx));
        rx
    }

    /// Stop routing replies from `peer`, if they are still routed to `ident`
    /// (a restarted task may already have registered anew).
    pub fn unregister(&self, peer: Ipv4Addr, ident: u16) {
        let mut routes = locked(&self.routes);
        if routes.get(&peer).is_some_and(|(i, _)| *i == ident) {
            routes.remove(&peer);
        }
    }

    /// Send an echo request to `peer`.
    pub async fn send(
        &self,
        peer: Ipv4Addr,
        ident: u16,
        seq: u16,
        payload: &[u8],
    ) -> io::Result<()> {
        let packet = echo_request(ident, seq, payload);
        self.socket
            .send_to(&packet, SocketAddr::new(IpAddr::V4(peer), 0))
            .await?;
        Ok(())
    }

    async fn receive(self, clock: Clock) {
        let mut buf = vec![0u8; 2048];
        loop {
            let r = match rxts::recv(&self.socket, &mut buf, &clock).await {
                Ok(r) => r,
                Err(e) => {
                    debug!(error = %e, "ICMP receive failed");
                    continue;
                }
            };
            let Some(SocketAddr::V4(from)) = r.from else {
                continue;
            };
            let raw = self.kind == Type::RAW;
            let Some((reply_ident, seq)) = parse_echo_reply(&buf[..r.len], raw, *from.ip()) else {
                continue;
            };
            let route = locked(&self.routes).get(from.ip()).cloned();
            let Some((ident, tx)) = route else { continue };
            // A raw socket sees every echo reply on the host: keep ours only.
            if raw && reply_ident != ident {
                continue;
            }
            let _ = tx.try_send(EchoReply { seq, at: r.at });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_requests_carry_a_valid_checksum() {
        let p = echo_request(0x1234, 7, b"abc");
        assert_eq!(p[0], ECHO_REQUEST);
        assert_eq!(&p[4..8], &[0x12, 0x34, 0, 7]);
        // The checksum over a packet including its checksum is zero.
        assert_eq!(checksum(&p), 0);
    }

    #[test]
    fn an_echo_reply_parses_and_anything_else_does_not() {
        let from = Ipv4Addr::new(192, 0, 2, 7);
        let mut reply = echo_request(0x1234, 9, b"netaware");
        reply[0] = ECHO_REPLY;
        reply[2..4].copy_from_slice(&[0, 0]);
        let sum = checksum(&reply);
        reply[2..4].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(parse_echo_reply(&reply, false, from), Some((0x1234, 9)));
        // An echo request, a truncated reply, nothing at all.
        let request = echo_request(0x1234, 9, b"netaware");
        assert_eq!(parse_echo_reply(&request, false, from), None);
        assert_eq!(parse_echo_reply(&reply[..3], false, from), None);
        assert_eq!(parse_echo_reply(&[], true, from), None);
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: 0001 f203 f4f5 f6f7 sums to ddf2, checksum 220d.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
    }

    #[tokio::test]
    async fn loopback_echo_is_answered_with_a_kernel_timestamp() {
        let clock = Clock::new();
        let Ok(s) = IcmpSocket::open(clock) else {
            eprintln!(
                "no ICMP socket allowed here (neither CAP_NET_RAW nor ping_group_range); skipping"
            );
            return;
        };
        let peer = Ipv4Addr::LOCALHOST;
        let mut rx = s.register(peer, 0x4242);
        let before = clock.now();
        s.send(peer, 0x4242, 3, b"netaware").await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .expect("an echo reply")
            .unwrap();
        assert_eq!(reply.seq, 3);
        assert!(reply.at >= before && reply.at <= clock.now());
    }
}
