//! The STAMP reflector: answers the test packets of peers, and refuses what
//! would turn it into a loop or a flood (security review S6, E1, E1-loop).
//!
//! A packet is answered only when all of these hold, checked in this order:
//! - it does not come from a reflector port (the cluster's STAMP port):
//!   senders use ephemeral ports, and two reflectors answering each other
//!   would loop for ever on one spoofed packet;
//! - it does not come from a privileged port (< 1024), nor from the
//!   reflector's own address and port;
//! - it is a Session-Sender test packet: at least 44 bytes, with the 30
//!   must-be-zero bytes zero. A reflected packet carries timestamps there,
//!   so a reflection is never reflected again;
//! - its source is within its own rate (token bucket per source address)
//!   and the reflector within its total rate.
//!
//! Every refusal is counted by reason (`netaware_reflector_packets_total`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use netaware_common::rate::RateLimiter;
use tokio::net::UdpSocket;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::metrics::AgentMetrics;
use crate::rxts;
use crate::stamp::{self, NtpTimestamp};

/// Source addresses whose rate is tracked at once; an idle source's
/// bucket (full again) is forgotten to make room.
const MAX_SOURCES: usize = 4096;

/// How many test packets the reflector answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Packets a second from one source address (burst: one second's worth).
    pub per_source_pps: f64,
    /// Packets a second from all sources together.
    pub total_pps: f64,
}

/// Why a packet was not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    FromAReflectorPort,
    FromAPrivilegedPort,
    FromItself,
    NotATestPacket,
    SourceRate,
    TotalRate,
    TooManySources,
}

impl Refused {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Self::FromAReflectorPort => "from_reflector_port",
            Self::FromAPrivilegedPort => "from_privileged_port",
            Self::FromItself => "from_itself",
            Self::NotATestPacket => "not_a_test_packet",
            Self::SourceRate => "source_rate",
            Self::TotalRate => "total_rate",
            Self::TooManySources => "too_many_sources",
        }
    }
}

/// Decides, packet by packet, whether to answer. Pure: time is passed in.
#[derive(Debug)]
pub struct Guard {
    local: SocketAddr,
    stamp_port: u16,
    limits: Limits,
    sources: HashMap<IpAddr, RateLimiter>,
    total: RateLimiter,
}

fn burst(pps: f64) -> u32 {
    // One second's worth, at least one packet.
    pps.clamp(1.0, f64::from(u32::MAX)) as u32
}

impl Guard {
    /// A guard for a reflector bound to `local`, in a cluster whose
    /// reflectors listen on `stamp_port`.
    pub fn new(local: SocketAddr, stamp_port: u16, limits: Limits, now: Instant) -> Self {
        Self {
            local,
            stamp_port,
            limits,
            sources: HashMap::new(),
            total: RateLimiter::new(limits.total_pps, burst(limits.total_pps), now),
        }
    }

    /// Whether to answer `packet` from `from` at `now`.
    pub fn check(&mut self, from: SocketAddr, packet: &[u8], now: Instant) -> Result<(), Refused> {
        if from.port() == self.stamp_port {
            return Err(Refused::FromAReflectorPort);
        }
        if from.port() < 1024 {
            return Err(Refused::FromAPrivilegedPort);
        }
        if from == self.local {
            return Err(Refused::FromItself);
        }
        if !stamp::is_sender_packet(packet) {
            return Err(Refused::NotATestPacket);
        }
        let ip = from.ip();
        if !self.sources.contains_key(&ip) && self.sources.len() >= MAX_SOURCES {
            self.sources.retain(|_, b| !b.is_full(now));
            if self.sources.len() >= MAX_SOURCES {
                return Err(Refused::TooManySources);
            }
        }
        let pps = self.limits.per_source_pps;
        let source = self
            .sources
            .entry(ip)
            .or_insert_with(|| RateLimiter::new(pps, burst(pps), now));
        if source.try_take(now).is_err() {
            return Err(Refused::SourceRate);
        }
        self.total.try_take(now).map_err(|_| Refused::TotalRate)
    }
}

/// Bind the STAMP reflector socket (done before anything else so a port
/// conflict is reported at start).
pub async fn bind(addr: SocketAddr) -> Result<UdpSocket> {
    UdpSocket::bind(addr)
        .await
        .map_err(|source| Error::BindReflector { addr, source })
}

/// Answer the STAMP test packets on `socket` that `guard` lets through
/// (stateless mode) until cancelled.
pub async fn run(socket: UdpSocket, clock: Clock, mut guard: Guard, metrics: Option<AgentMetrics>) {
    if let Err(e) = rxts::enable(&socket) {
        warn!(error = %e, "no kernel receive timestamps; T2 includes wake-up latency");
    }
    let count = |outcome: &str| {
        if let Some(m) = &metrics {
            m.reflector_packet(outcome);
        }
    };
    let mut buf = vec![0u8; stamp::MAX_PACKET_LEN];
    let mut out = Vec::with_capacity(stamp::MAX_PACKET_LEN);
    loop {
        let r = match rxts::recv(&socket, &mut buf, &clock).await {
            Ok(r) => r,
            Err(e) => {
                debug!(error = %e, "reflector receive failed");
                continue;
            }
        };
        let Some(from) = r.from else { continue };
        if let Err(why) = guard.check(from, &buf[..r.len], Instant::now()) {
            count(why.reason());
            continue;
        }
        // T2 is the kernel's arrival time, so the hold time T3 - T2 covers
        // our wake-up too and the sender subtracts it.
        let t2 = NtpTimestamp::from_unix(clock.to_unix(r.at));
        // The TTL of the test packet is not visible through a plain UDP
        // socket; 255 says "not measured" to a sender that looks at it.
        if let Err(e) =
            stamp::encode_reflection(&buf[..r.len], t2, 255, &mut out, || ntp_now(&clock))
        {
            debug!(%from, error = %e, "ignoring a packet that is not a STAMP test packet");
            count(Refused::NotATestPacket.reason());
            continue;
        }
        match socket.send_to(&out, from).await {
            Ok(_) => count("answered"),
            Err(e) => debug!(%from, error = %e, "reflector send failed"),
        }
    }
}

fn ntp_now(clock: &Clock) -> NtpTimestamp {
    NtpTimestamp::from_unix(clock.to_unix(clock.now()))
}

#[cfg(test)]
mod tests;
