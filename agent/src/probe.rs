//! Probing: the STAMP reflector, one task per (peer, method), and the
//! manager that starts and stops those tasks when a new plan arrives.
//!
//! Each peer task is the single owner of its [`ProbeTracker`], so there is no
//! shared state to lock: replies come in on the task's own connected UDP
//! socket (STAMP) or from its own ping futures (ICMP), and finished windows
//! leave through an mpsc channel towards the session.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use netaware_proto::ProbeMethod;
use netaware_proto::v1::{LinkWindow, PeerTarget, ProbePlan};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant as TokioInstant, MissedTickBehavior};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::icmp::IcmpSocket;
use crate::rxts;
use crate::stamp::{self, NtpTimestamp};
use crate::stats::{ProbeTracker, WindowSummary};

/// How often a peer task looks for finished windows.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Open the ICMP socket: raw (CAP_NET_RAW) or datagram (ping_group_range).
/// `None` with a clear log line when neither is allowed; the UDP method keeps
/// working.
pub fn open_icmp(clock: Clock) -> Option<IcmpSocket> {
    match IcmpSocket::open(clock) {
        Ok(s) => {
            info!(raw = s.is_raw(), "ICMP probing enabled");
            Some(s)
        }
        Err(e) => {
            warn!(
                error = %e,
                "ICMP probing disabled: the agent needs CAP_NET_RAW or a net.ipv4.ping_group_range \
                 that includes its group; STAMP/UDP probing continues"
            );
            None
        }
    }
}

/// A finished window, ready for the wire.
pub fn to_wire(clock: &Clock, peer: &str, method: ProbeMethod, w: &WindowSummary) -> LinkWindow {
    LinkWindow {
        peer: peer.to_string(),
        method: method as i32,
        window_start_unix_us: clock.unix_us(w.start),
        window_end_unix_us: clock.unix_us(w.end),
        sent: w.sent,
        received: w.received,
        duplicates: w.duplicates,
        reordered: w.reordered,
        rtt_min_ns: w.rtt_min_ns,
        rtt_mean_ns: w.rtt_mean_ns,
        rtt_p50_ns: w.rtt_p50_ns,
        rtt_p90_ns: w.rtt_p90_ns,
        rtt_p99_ns: w.rtt_p99_ns,
        rtt_max_ns: w.rtt_max_ns,
        jitter_ns: w.jitter_ns,
        rtt_histogram: w.histogram.clone(),
    }
}

/// Timing of one peer task, derived from the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub probe_interval: Duration,
    pub window: Duration,
    pub loss_timeout: Duration,
    /// Offset of this task's probes inside the interval, so probes to all
    /// peers are spread evenly instead of bursting together.
    pub phase: Duration,
}

/// What a peer task needs to know; a change restarts the task.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TaskSpec {
    peer: String,
    method: ProbeMethod,
    target: SocketAddr,
    timing: Timing,
}

/// Starts, keeps and stops peer tasks according to the current plan.
pub struct ProbeManager {
    clock: Clock,
    icmp: Option<IcmpSocket>,
    max_probe_rate: f64,
    out: mpsc::Sender<LinkWindow>,
    tasks: HashMap<(String, ProbeMethod), (TaskSpec, JoinHandle<()>)>,
}

impl std::fmt::Debug for ProbeManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeManager")
            .field("icmp", &self.icmp.is_some())
            .field("tasks", &self.tasks.len())
            .finish()
    }
}

impl ProbeManager {
    pub fn new(
        clock: Clock,
        icmp: Option<IcmpSocket>,
        max_probe_rate: f64,
        out: mpsc::Sender<LinkWindow>,
    ) -> Self {
        Self {
            clock,
            icmp,
            max_probe_rate,
            out,
            tasks: HashMap::new(),
        }
    }

    /// Methods this agent can run.
    pub fn capabilities(&self) -> Vec<ProbeMethod> {
        let mut m = vec![ProbeMethod::StampUdp];
        if self.icmp.is_some() {
            m.push(ProbeMethod::IcmpEcho);
        }
        m
    }

    /// Follow plans from `plans` until the sender is dropped.
    pub async fn run(mut self, mut plans: watch::Receiver<Option<ProbePlan>>) {
        loop {
            let plan = plans.borrow_and_update().clone();
            if let Some(plan) = plan {
                self.apply(&plan);
            }
            if plans.changed().await.is_err() {
                break;
            }
        }
        self.stop_all();
    }

    fn stop_all(&mut self) {
        for (_, (_, h)) in self.tasks.drain() {
            h.abort();
        }
    }

    /// The task specs a plan asks for, with probes spread in time.
    fn specs(&self, plan: &ProbePlan) -> Vec<TaskSpec> {
        let mut wanted: Vec<(&PeerTarget, ProbeMethod, SocketAddr)> = Vec::new();
        for p in &plan.peers {
            let Ok(ip) = p.address.parse::<IpAddr>() else {
                warn!(peer = %p.node_name, address = %p.address, "plan has an unparsable address; skipping peer");
                continue;
            };
            let port = u16::try_from(p.stamp_port).unwrap_or(0);
            for m in p.methods() {
                let runnable = match m {
                    ProbeMethod::StampUdp => port != 0,
                    ProbeMethod::IcmpEcho => self.icmp.is_some(),
                    _ => false,
                };
                if runnable {
                    wanted.push((p, m, SocketAddr::new(ip, port)));
                }
            }
        }
        let n = wanted.len().max(1) as u32;
        let mut interval = Duration::from_micros(plan.probe_interval_us.max(1));
        // Respect the local rate cap: n streams at 1/interval each.
        let rate = f64::from(n) / interval.as_secs_f64();
        if rate > self.max_probe_rate {
            interval = Duration::from_secs_f64(f64::from(n) / self.max_probe_rate);
            warn!(
                asked_per_s = rate,
                cap_per_s = self.max_probe_rate,
                "plan asks for more probes than --max-probe-rate allows; slowing down"
            );
        }
        let window = Duration::from_millis(plan.report_interval_ms.max(1));
        let loss_timeout = Duration::from_millis(plan.loss_timeout_ms.max(1));
        wanted
            .into_iter()
            .enumerate()
            .map(|(i, (p, method, target))| TaskSpec {
                peer: p.node_name.clone(),
                method,
                target,
                timing: Timing {
                    probe_interval: interval,
                    window,
                    loss_timeout,
                    phase: interval * (i as u32) / n,
                },
            })
            .collect()
    }

    /// Make the running tasks match `plan`.
    pub fn apply(&mut self, plan: &ProbePlan) {
        let specs = self.specs(plan);
        let keep: HashMap<(String, ProbeMethod), TaskSpec> = specs
            .into_iter()
            .map(|s| ((s.peer.clone(), s.method), s))
            .collect();
        self.tasks.retain(|key, (spec, handle)| {
            let same = keep.get(key) == Some(spec) && !handle.is_finished();
            if !same {
                handle.abort();
            }
            same
        });
        for (key, spec) in keep {
            if self.tasks.contains_key(&key) {
                continue;
            }
            let handle = self.spawn(spec.clone());
            self.tasks.insert(key, (spec, handle));
        }
        info!(
            version = plan.version,
            tasks = self.tasks.len(),
            "probe plan applied"
        );
    }

    fn spawn(&self, spec: TaskSpec) -> JoinHandle<()> {
        let span = info_span!("probe", peer = %spec.peer, method = spec.method.short_name());
        let clock = self.clock;
        let out = self.out.clone();
        match spec.method {
            ProbeMethod::IcmpEcho => {
                let client = self.icmp.clone();
                tokio::spawn(
                    async move {
                        let Some(client) = client else { return };
                        if let Err(e) = run_icmp(spec, clock, client, out).await {
                            warn!(error = %e, "ICMP probe task stopped");
                        }
                    }
                    .instrument(span),
                )
            }
            _ => tokio::spawn(
                async move {
                    if let Err(e) = run_stamp(spec, clock, out).await {
                        warn!(error = %e, "STAMP probe task stopped");
                    }
                }
                .instrument(span),
            ),
        }
    }
}

/// Recover a 64-bit sequence number from its low `bits` bits (32 for STAMP,
/// 16 for ICMP), picking the value closest below `next` (the tracker's next
/// sequence number).
pub fn unwrap_seq(next: u64, low: u64, bits: u32) -> u64 {
    let span = 1u64 << bits;
    let candidate = (next & !(span - 1)) | (low & (span - 1));
    if candidate >= next {
        candidate.saturating_sub(span)
    } else {
        candidate
    }
}

fn probe_timer(timing: &Timing) -> tokio::time::Interval {
    let mut t = tokio::time::interval_at(TokioInstant::now() + timing.phase, timing.probe_interval);
    // After a stall, keep the spacing instead of bursting to catch up.
    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    t
}

async fn emit(
    tracker: &mut ProbeTracker,
    clock: &Clock,
    spec: &TaskSpec,
    out: &mpsc::Sender<LinkWindow>,
) -> Result<bool> {
    for w in tracker.poll(clock.now())? {
        if out
            .send(to_wire(clock, &spec.peer, spec.method, &w))
            .await
            .is_err()
        {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn run_stamp(spec: TaskSpec, clock: Clock, out: mpsc::Sender<LinkWindow>) -> Result<()> {
    let bind: SocketAddr = if spec.target.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(spec.target).await?;
    if let Err(e) = rxts::enable(&socket) {
        warn!(error = %e, "no kernel receive timestamps; RTTs include wake-up latency");
    }
    let mut tracker = ProbeTracker::new(spec.timing.window, spec.timing.loss_timeout)?;
    let mut probe = probe_timer(&spec.timing);
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    let mut buf = vec![0u8; stamp::MAX_PACKET_LEN];
    loop {
        tokio::select! {
            _ = probe.tick() => {
                let now = clock.now();
                let seq = tracker.on_send(now)?;
                let packet = stamp::encode_sender(seq as u32, NtpTimestamp::from_unix(clock.to_unix(now)));
                // A failed send (no route, ICMP unreachable) is a lost probe.
                if let Err(e) = socket.send(&packet).await {
                    debug!(error = %e, "send failed");
                }
            }
            r = rxts::recv(&socket, &mut buf, &clock) => {
                let r = match r {
                    Ok(r) => r,
                    // ECONNREFUSED from an earlier send: the reflector is not there (yet).
                    Err(e) => { debug!(error = %e, "receive failed"); continue; }
                };
                let Ok(reply) = stamp::decode_reflector(&buf[..r.len]) else { continue };
                let seq = unwrap_seq(tracker.next_seq(), u64::from(reply.sender_seq), 32);
                let Some(sent) = tracker.sent_at(seq) else { continue };
                // RTT = (T4 - T1) - (T3 - T2), T4 being the kernel's arrival time.
                let rtt = r.at.saturating_sub(sent).saturating_sub(reply.reflector_hold());
                tracker.on_reply(seq, r.at, rtt);
            }
            _ = poll.tick() => {
                if !emit(&mut tracker, &clock, &spec, &out).await? {
                    return Ok(());
                }
            }
        }
    }
}

async fn run_icmp(
    spec: TaskSpec,
    clock: Clock,
    icmp: IcmpSocket,
    out: mpsc::Sender<LinkWindow>,
) -> Result<()> {
    let IpAddr::V4(ip) = spec.target.ip() else {
        return Err(Error::Config {
            name: "peer address",
            message: format!(
                "{} is not IPv4; ICMP probing is IPv4 only",
                spec.target.ip()
            ),
        });
    };
    // Identifier: raw sockets see every reply on the host, this tells ours
    // apart (datagram sockets get one from the kernel).
    let ident = rand::random::<u16>();
    let mut replies = icmp.register(ip, ident);
    let _unregister = Unregister {
        icmp: icmp.clone(),
        ip,
        ident,
    };
    let mut tracker = ProbeTracker::new(spec.timing.window, spec.timing.loss_timeout)?;
    let mut probe = probe_timer(&spec.timing);
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    let payload = *b"netaware-icmp-01";
    loop {
        tokio::select! {
            _ = probe.tick() => {
                let seq = tracker.on_send(clock.now())?;
                // ICMP sequence numbers are 16 bits; the tracker keeps the full count.
                if let Err(e) = icmp.send(ip, ident, seq as u16, &payload).await {
                    debug!(error = %e, "send failed");
                }
            }
            Some(r) = replies.recv() => {
                let seq = unwrap_seq(tracker.next_seq(), u64::from(r.seq), 16);
                if let Some(sent) = tracker.sent_at(seq) {
                    tracker.on_reply(seq, r.at, r.at.saturating_sub(sent));
                }
            }
            _ = poll.tick() => {
                if !emit(&mut tracker, &clock, &spec, &out).await? {
                    return Ok(());
                }
            }
        }
    }
}

/// Removes a peer's reply route when its task ends or is aborted.
struct Unregister {
    icmp: IcmpSocket,
    ip: std::net::Ipv4Addr,
    ident: u16,
}

impl Drop for Unregister {
    fn drop(&mut self) {
        self.icmp.unregister(self.ip, self.ident);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_unwrap_across_the_boundary() {
        assert_eq!(unwrap_seq(10, 9, 32), 9);
        assert_eq!(unwrap_seq(10, 0, 32), 0);
        assert_eq!(unwrap_seq((1 << 32) + 5, 0xffff_fffe, 32), 0xffff_fffe);
        assert_eq!(unwrap_seq((1 << 32) + 5, 3, 32), (1 << 32) + 3);
        assert_eq!(unwrap_seq(70_000, 4_463, 16), 69_999);
        assert_eq!(unwrap_seq(70_000, 65_535, 16), 65_535);
    }

    fn plan(peers: usize, interval_us: u64) -> ProbePlan {
        ProbePlan {
            version: 1,
            peers: (0..peers)
                .map(|i| PeerTarget {
                    node_name: format!("n{i}"),
                    address: format!("10.0.0.{}", i + 1),
                    stamp_port: 8620,
                    methods: vec![ProbeMethod::StampUdp as i32, ProbeMethod::IcmpEcho as i32],
                })
                .collect(),
            probe_interval_us: interval_us,
            report_interval_ms: 1000,
            loss_timeout_ms: 500,
        }
    }

    #[tokio::test]
    async fn probes_are_spread_evenly_over_the_interval() {
        let (tx, _rx) = mpsc::channel(1);
        let m = ProbeManager::new(Clock::new(), None, 1000.0, tx);
        let specs = m.specs(&plan(4, 200_000));
        // No ICMP client: only the 4 UDP tasks, phases 0, 50, 100, 150 ms.
        let phases: Vec<u128> = specs.iter().map(|s| s.timing.phase.as_millis()).collect();
        assert_eq!(phases, vec![0, 50, 100, 150]);
        assert!(specs.iter().all(|s| s.method == ProbeMethod::StampUdp));
    }

    #[tokio::test]
    async fn the_local_rate_cap_stretches_the_interval() {
        let (tx, _rx) = mpsc::channel(1);
        let m = ProbeManager::new(Clock::new(), None, 10.0, tx);
        // 4 peers at 1 ms = 4000/s, capped at 10/s -> 400 ms per peer.
        let specs = m.specs(&plan(4, 1_000));
        assert_eq!(specs[0].timing.probe_interval, Duration::from_millis(400));
    }
}
