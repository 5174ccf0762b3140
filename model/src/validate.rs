//! What the aggregator accepts from an agent. Everything on the wire is
//! checked here before it reaches a figure: a Hello, each report window,
//! each bandwidth result. A refusal names the field and what was wrong, so
//! the agent's log and the aggregator's metric say the same thing.
//!
//! Pure: the caller passes the aggregator's wall clock (`now_unix_us`); the
//! checks that need the cluster's state (is the peer a known node?) are the
//! caller's.

use std::net::IpAddr;

use netaware_proto::ProbeMethod;
use netaware_proto::histogram;
use netaware_proto::v1::{BandwidthResult, Hello, LinkWindow};

use crate::labels::is_dns_subdomain;

/// Probe addresses one node may advertise (a node has a few at most:
/// IPv4, IPv6, perhaps a second interface).
pub const MAX_PROBE_ADDRESSES: usize = 4;
/// Longest software version string.
pub const MAX_VERSION_BYTES: usize = 64;
/// Probe methods one node may list.
pub const MAX_CAPABILITIES: usize = 4;
/// How far an agent's clock may run ahead of the aggregator's: a window
/// ending later than this after our now is refused, so a forged or skewed
/// window can never pin a link (every later window would look older).
pub const MAX_CLOCK_AHEAD_US: u64 = 5 * 60 * 1_000_000;
/// Oldest window accepted: an agent buffers windows through an outage, but
/// figures older than a day say nothing about the network now.
pub const MAX_WINDOW_AGE_US: u64 = 24 * 3600 * 1_000_000;
/// Longest report window.
pub const MAX_WINDOW_US: u64 = 10 * 60 * 1_000_000;
/// Most probes one window may claim (10,000/s for 10 minutes would be far
/// beyond any plan; an agent caps itself at 1,000/s to all peers).
pub const MAX_PROBES_PER_WINDOW: u64 = 6_000_000;
/// Largest encoded RTT histogram (a real window's is about 100 bytes).
pub const MAX_HISTOGRAM_BYTES: usize = 64 * 1024;
/// Fastest link believed: 10 Tbit/s.
pub const MAX_MBPS: f64 = 10_000_000.0;
/// Most streams of one bandwidth test (the aggregator asks for 1–64).
pub const MAX_STREAMS: usize = 64;

/// Why something an agent sent is refused: the field, and what is wrong
/// with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct Refusal {
    /// The message and field, e.g. `Hello.node_name`.
    pub field: &'static str,
    pub problem: String,
}

fn refuse(field: &'static str, problem: impl Into<String>) -> Refusal {
    Refusal {
        field,
        problem: problem.into(),
    }
}

impl Refusal {
    /// Windows from a session of an agent instance the node has since
    /// replaced (its newer Hello carries another `instance_id`).
    pub fn stale_instance(instance: u64) -> Self {
        refuse(
            "Hello.instance_id",
            format!(
                "windows from agent instance {instance}, which this node has since replaced (the agent restarted); not stored"
            ),
        )
    }
}

/// Text from the network for a message: long values cut, control
/// characters escaped (names reach terminals and logs).
pub fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(64).flat_map(char::escape_default).collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}

/// A valid Hello: a Kubernetes node name, a few parseable unicast probe
/// addresses, ports in range, known methods, a short version.
pub fn hello(h: &Hello) -> Result<(), Refusal> {
    if !is_dns_subdomain(&h.node_name) {
        return Err(refuse(
            "Hello.node_name",
            format!(
                "'{}' is not a Kubernetes node name (a DNS subdomain: lower-case letters, digits, '-' and '.', at most 253 bytes)",
                shown(&h.node_name)
            ),
        ));
    }
    if h.probe_addresses.is_empty() || h.probe_addresses.len() > MAX_PROBE_ADDRESSES {
        return Err(refuse(
            "Hello.probe_addresses",
            format!(
                "{} addresses; between 1 and {MAX_PROBE_ADDRESSES} are accepted",
                h.probe_addresses.len()
            ),
        ));
    }
    for a in &h.probe_addresses {
        match a.parse::<IpAddr>() {
            Ok(ip) if !ip.is_unspecified() && !ip.is_multicast() && !is_broadcast(ip) => {}
            _ => {
                return Err(refuse(
                    "Hello.probe_addresses",
                    format!("'{}' is not a unicast IP address", shown(a)),
                ));
            }
        }
    }
    if !(1..=65_535).contains(&h.stamp_port) {
        return Err(refuse(
            "Hello.stamp_port",
            format!("{} is not a port (1–65535)", h.stamp_port),
        ));
    }
    if h.bandwidth_port > 65_535 {
        return Err(refuse(
            "Hello.bandwidth_port",
            format!(
                "{} is not a port (0–65535; 0 = no bandwidth tests)",
                h.bandwidth_port
            ),
        ));
    }
    if h.software_version.len() > MAX_VERSION_BYTES
        || h.software_version.chars().any(char::is_control)
    {
        return Err(refuse(
            "Hello.software_version",
            format!(
                "'{}' is longer than {MAX_VERSION_BYTES} bytes or holds control characters",
                shown(&h.software_version)
            ),
        ));
    }
    if h.capabilities.len() > MAX_CAPABILITIES
        || h.capabilities.iter().any(|c| probe_method(*c).is_none())
    {
        return Err(refuse(
            "Hello.capabilities",
            format!(
                "{:?} is not a list of probe methods (udp, icmp)",
                h.capabilities
            ),
        ));
    }
    Ok(())
}

fn is_broadcast(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

/// The probe method of a window or capability, if it is one we measure.
fn probe_method(raw: i32) -> Option<ProbeMethod> {
    match ProbeMethod::try_from(raw) {
        Ok(m @ (ProbeMethod::StampUdp | ProbeMethod::IcmpEcho)) => Some(m),
        _ => None,
    }
}

/// A window from `sender` that can be true: a method we probe with, a peer
/// that is another node the aggregator knows (`known`), a time span near
/// the aggregator's clock, counts that add up, ordered RTT figures.
pub fn window(
    w: &LinkWindow,
    sender: &str,
    known: impl Fn(&str) -> bool,
    now_unix_us: u64,
) -> Result<(), Refusal> {
    if probe_method(w.method).is_none() {
        return Err(refuse(
            "LinkWindow.method",
            format!("{} is not udp or icmp", w.method),
        ));
    }
    if !is_dns_subdomain(&w.peer) {
        return Err(refuse(
            "LinkWindow.peer",
            format!("'{}' is not a node name", shown(&w.peer)),
        ));
    }
    if w.peer == sender || !known(&w.peer) {
        return Err(refuse(
            "LinkWindow.peer",
            format!("'{}' is not another known node", shown(&w.peer)),
        ));
    }
    let (start, end) = (w.window_start_unix_us, w.window_end_unix_us);
    if end <= start || end - start > MAX_WINDOW_US {
        return Err(refuse(
            "LinkWindow.window_end_unix_us",
            format!(
                "the window [{start}, {end}) is empty, reversed or longer than {} s",
                MAX_WINDOW_US / 1_000_000
            ),
        ));
    }
    if end > now_unix_us.saturating_add(MAX_CLOCK_AHEAD_US) {
        return Err(refuse(
            "LinkWindow.window_end_unix_us",
            format!(
                "ends {} s after the aggregator's clock (at most {} s ahead is accepted: check the node's clock)",
                (end - now_unix_us) / 1_000_000,
                MAX_CLOCK_AHEAD_US / 1_000_000
            ),
        ));
    }
    if start < now_unix_us.saturating_sub(MAX_WINDOW_AGE_US) {
        return Err(refuse(
            "LinkWindow.window_start_unix_us",
            format!("older than {} h", MAX_WINDOW_AGE_US / 3_600_000_000),
        ));
    }
    if w.sent > MAX_PROBES_PER_WINDOW {
        return Err(refuse(
            "LinkWindow.sent",
            format!("{} probes in one window", w.sent),
        ));
    }
    if w.received > w.sent {
        return Err(refuse(
            "LinkWindow.received",
            format!("{} answers to {} probes", w.received, w.sent),
        ));
    }
    if w.rtt_histogram.len() > MAX_HISTOGRAM_BYTES {
        return Err(refuse(
            "LinkWindow.rtt_histogram",
            format!(
                "{} bytes, more than {MAX_HISTOGRAM_BYTES}",
                w.rtt_histogram.len()
            ),
        ));
    }
    if w.received > 0 {
        let ordered = [
            w.rtt_min_ns,
            w.rtt_p50_ns,
            w.rtt_p90_ns,
            w.rtt_p99_ns,
            w.rtt_max_ns,
        ];
        let in_order = ordered.windows(2).all(|p| p[0] <= p[1]);
        let mean_inside = (w.rtt_min_ns..=w.rtt_max_ns).contains(&w.rtt_mean_ns);
        if !in_order || !mean_inside || w.rtt_max_ns > histogram::HIGH_NS {
            return Err(refuse(
                "LinkWindow.rtt_*_ns",
                format!(
                    "min {} ≤ p50 {} ≤ p90 {} ≤ p99 {} ≤ max {} (and mean {} inside, max ≤ 60 s) does not hold",
                    w.rtt_min_ns,
                    w.rtt_p50_ns,
                    w.rtt_p90_ns,
                    w.rtt_p99_ns,
                    w.rtt_max_ns,
                    w.rtt_mean_ns
                ),
            ));
        }
    }
    Ok(())
}

/// A successful bandwidth result that can be true: finite, non-negative
/// figures below [`MAX_MBPS`], a plausible number of streams, and a total
/// that agrees with the bytes and time it was measured over.
pub fn bandwidth_result(r: &BandwidthResult) -> Result<(), Refusal> {
    let ok = |x: f64| x.is_finite() && (0.0..=MAX_MBPS).contains(&x);
    if !ok(r.mbps) {
        return Err(refuse(
            "BandwidthResult.mbps",
            format!(
                "{} is not a throughput between 0 and {MAX_MBPS} Mbit/s",
                r.mbps
            ),
        ));
    }
    if r.stream_mbps.len() > MAX_STREAMS || !r.stream_mbps.iter().all(|&s| ok(s)) {
        return Err(refuse(
            "BandwidthResult.stream_mbps",
            "more than 64 streams, or a value that is not a throughput",
        ));
    }
    if r.measured_ns > 0 {
        let from_bytes = r.measured_bytes as f64 * 8.0 / r.measured_ns as f64 * 1_000.0;
        // 1 % and 1 Mbit/s of slack for rounding on the agent's side.
        if (from_bytes - r.mbps).abs() > from_bytes * 0.01 + 1.0 {
            return Err(refuse(
                "BandwidthResult.mbps",
                format!(
                    "{} Mbit/s, but {} bytes in {} ns is {from_bytes:.1}",
                    r.mbps, r.measured_bytes, r.measured_ns
                ),
            ));
        }
    }
    if r.measured_bytes > r.total_bytes {
        return Err(refuse(
            "BandwidthResult.measured_bytes",
            format!(
                "{} measured of {} received",
                r.measured_bytes, r.total_bytes
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
