//! The userspace link emulator. Every node namespace has one TUN device whose
//! file descriptor stays with this process; a packet a node sends to another
//! node's address is read here, delayed, jittered or dropped according to the
//! directed link's parameters, and written into the destination's TUN device.
//!
//! The devices exchange frames with a virtio-net header in front, so a bulk
//! TCP sender hands over 64 KiB at a time as a NIC with TSO would see it
//! ([`frame`]): the emulator's work follows the number of such frames, not of
//! wire packets, while loss is still drawn per wire packet.
//!
//! Timing: one reader thread per TUN device stamps packets on arrival and puts
//! them into a deadline heap; one delivery thread writes them out when due. The
//! delivery thread sleeps with a 1 µs timer slack and spins for the last tens
//! of microseconds, because tokio timers (1 ms granularity) and the default
//! 50 µs slack would both be visible in sub-millisecond RTTs.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use tracing::{debug, warn};
use tun_rs::{InterruptEvent, SyncDevice, VIRTIO_NET_HDR_LEN};

use crate::topology::{LinkParams, Topology};

mod frame;
use frame::Frame;

/// Below this much waiting time the delivery thread spins instead of
/// sleeping: timer wake-ups on a VM are late by tens of µs, now and then more.
const SPIN_BELOW: Duration = Duration::from_micros(150);
/// Timer slack for the delivery thread (the kernel default is 50 µs).
const TIMER_SLACK_NS: u64 = 1_000;
/// Largest frame the emulator forwards: a 64 KiB GSO packet and its header.
const MAX_FRAME: usize = VIRTIO_NET_HDR_LEN + 65_536;

/// Ask the kernel to keep CPUs out of deep idle states while the returned
/// file is open (PM QoS, `/dev/cpu_dma_latency` = 0). On a VM an idle vCPU
/// halts and waking it costs tens of µs per packet, which would be added to
/// every emulated delay. `None` (with a warning) when the file is not writable.
pub fn hold_low_latency() -> Option<std::fs::File> {
    use std::io::Write;
    let open = || -> std::io::Result<std::fs::File> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/cpu_dma_latency")?;
        f.write_all(&0i32.to_ne_bytes())?;
        Ok(f)
    };
    match open() {
        Ok(f) => Some(f),
        Err(e) => {
            warn!(error = %e, "cannot hold /dev/cpu_dma_latency at 0; emulated delays may read tens of µs high");
            None
        }
    }
}

/// Real-time (SCHED_FIFO) priorities of the forwarding threads: the agents
/// and the aggregator share two cores with them, and a packet waiting for a
/// CPU is an emulated delay nobody configured. Readers rank above the
/// delivery thread so a spinning delivery never holds up an arrival stamp.
const READER_PRIORITY: u8 = 60;
const DELIVERY_PRIORITY: u8 = 50;

/// Make the calling thread SCHED_FIFO at `priority`; warn if not allowed.
fn realtime(priority: u8) {
    use thread_priority::{
        RealtimeThreadSchedulePolicy, ThreadPriority, ThreadPriorityValue, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    let result = ThreadPriorityValue::try_from(priority)
        .map_err(|e| e.to_string())
        .and_then(|v| {
            set_thread_priority_and_policy(
                thread_native_id(),
                ThreadPriority::Crossplatform(v),
                ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
            )
            .map_err(|e| format!("{e:?}"))
        });
    if let Err(e) = result {
        warn!(error = %e, "cannot give the emulator real-time priority; delays may read high under load");
    }
}

/// Emulation parameters of one direction, in the form the scheduler uses.
#[derive(Debug, Clone, Copy)]
struct Emu {
    delay: Duration,
    jitter_s: f64,
    loss: f64,
}

impl From<LinkParams> for Emu {
    fn from(p: LinkParams) -> Self {
        Emu {
            delay: Duration::from_secs_f64(p.delay_ms / 1000.0),
            jitter_s: p.jitter_ms / 1000.0,
            loss: p.loss,
        }
    }
}

/// Decides, for each packet, whether and when it is delivered.
#[derive(Debug)]
pub struct Shaper {
    n: usize,
    params: Vec<Emu>,
    /// Latest delivery time per directed pair: jitter never reorders a pair.
    last: Vec<Option<Instant>>,
    /// One random stream per directed pair, derived from the seed: a link's
    /// k-th packet always gets the same draw, whatever other links carry, so
    /// the seed reproduces a run.
    rngs: Vec<Xoshiro256PlusPlus>,
}

impl Shaper {
    pub fn new(topo: &Topology, seed: u64) -> Self {
        let n = topo.nodes.len();
        let mut params = Vec::with_capacity(n * n);
        for i in 0..n {
            for j in 0..n {
                params.push(if i == j {
                    Emu {
                        delay: Duration::ZERO,
                        jitter_s: 0.0,
                        loss: 0.0,
                    }
                } else {
                    Emu::from(topo.link(i, j))
                });
            }
        }
        // seed_from_u64 scrambles its input (SplitMix64), so neighbouring
        // inputs give independent streams.
        let rngs = (0..n * n)
            .map(|k| {
                Xoshiro256PlusPlus::seed_from_u64(
                    seed ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                )
            })
            .collect();
        Shaper {
            n,
            params,
            last: vec![None; n * n],
            rngs,
        }
    }

    /// Change one direction's parameters (live topology events).
    pub fn set(&mut self, src: usize, dst: usize, p: LinkParams) {
        if src < self.n && dst < self.n {
            self.params[src * self.n + dst] = Emu::from(p);
        }
    }

    /// What becomes of a frame of `segments` wire packets from `src` to
    /// `dst` that arrived at `now`: each segment is lost with the link's
    /// probability on its own draw; the survivors share one delivery time.
    pub fn schedule(&mut self, src: usize, dst: usize, now: Instant, segments: usize) -> Fate {
        let k = src * self.n + dst;
        let p = self.params[k];
        let rng = &mut self.rngs[k];
        let mut lost = Vec::new();
        if p.loss > 0.0 {
            lost.extend((0..segments).filter(|_| rng.random::<f64>() < p.loss));
            if lost.len() == segments {
                return Fate::Lost;
            }
        }
        let mut delay = p.delay.as_secs_f64();
        if p.jitter_s > 0.0 {
            let z: f64 = StandardNormal.sample(rng);
            delay = (delay + z * p.jitter_s).max(0.0);
        }
        let mut at = now + Duration::from_secs_f64(delay);
        // Keep the pair's order: a packet never overtakes an earlier one.
        if let Some(last) = self.last[k] {
            at = at.max(last);
        }
        self.last[k] = Some(at);
        Fate::Deliver { at, lost }
    }
}

/// What [`Shaper::schedule`] decided for one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Every segment is lost.
    Lost,
    /// Delivered at `at`, except the segments listed in `lost` (by index).
    Deliver { at: Instant, lost: Vec<usize> },
}

/// Address plan of the emulated data network: node `i` is `10.77.0.(i+1)`.
pub fn data_ip(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, u8::try_from(index + 1).unwrap_or(255))
}

/// Node index of an IPv4 packet's destination, if it is a lab node.
pub fn destination(packet: &[u8], nodes: usize) -> Option<usize> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    let [a, b, c, d] = [packet[16], packet[17], packet[18], packet[19]];
    if (a, b, c) != (10, 77, 0) || d == 0 {
        return None;
    }
    let i = usize::from(d) - 1;
    (i < nodes).then_some(i)
}

struct Pending {
    at: Instant,
    order: u64,
    src: usize,
    dst: usize,
    /// Header and packet, as written to the destination's device.
    frame: Vec<u8>,
    /// Wire packets in `frame` (for the counters and the lateness).
    segments: usize,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    // Reversed: BinaryHeap is a max-heap and we want the earliest first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

struct Queue {
    shaper: Shaper,
    heap: BinaryHeap<Pending>,
    order: u64,
}

/// Counters for the run summary, in wire packets (a GSO packet counts its
/// segments).
#[derive(Debug, Default)]
pub struct Counters {
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
    /// Frames that are not lab IPv4 packets (IPv6 router solicitations and
    /// the like) or whose GSO headers do not add up.
    pub foreign: AtomicU64,
}

/// Summary of the emulator's delivery lateness over a run.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct LatenessSummary {
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// Wire packets delivered (a GSO packet counts its segments: they all
    /// left as late as it did).
    pub packets: u64,
    /// Wire packets delivered more than 1 ms after their deadline.
    pub over_1ms: u64,
}

/// How late packets were written compared with their deadline, in ns
/// (the emulator's own error, reported at the end of a run).
pub type Lateness = hdrhistogram::Histogram<u64>;

/// Packets later than this count as the emulator falling behind.
const LATE_NS: u64 = 1_000_000;

/// `h` in µs; `None` when it holds no packet.
pub fn summarize(h: &Lateness) -> Option<LatenessSummary> {
    if h.is_empty() {
        return None;
    }
    let us = |ns: u64| ns as f64 / 1000.0;
    Some(LatenessSummary {
        p50_us: us(h.value_at_quantile(0.5)),
        p99_us: us(h.value_at_quantile(0.99)),
        max_us: us(h.max()),
        packets: h.len(),
        over_1ms: h.count_between(LATE_NS, h.max().max(LATE_NS)),
    })
}

impl LatenessSummary {
    /// The share of packets more than 1 ms late.
    pub fn late_fraction(&self) -> f64 {
        if self.packets == 0 {
            0.0
        } else {
            self.over_1ms as f64 / self.packets as f64
        }
    }
}

/// Length of the time slots [`LateLog`] remembers late packets by: short
/// next to a window (2 s by default), so a late burst leaves out only the
/// windows it fell in.
const LATE_SLOT_US: u64 = 10_000;
/// Most (link, slot) entries [`LateLog`] keeps: about 50 MB of hash set at
/// most (24-byte keys in 2^21 buckets), hours of
/// one late link per slot. Past it, every later span counts as late.
const MAX_LATE_ENTRIES: usize = 1_000_000;

/// Which directed links had packets leave more than 1 ms late, and when
/// (the deadline's 10 ms slot), so that the lab can leave out windows the
/// emulator distorted ([`Emulator::late_during`]).
#[derive(Debug)]
struct LateLog {
    /// The same moment on both clocks: deadlines are `Instant`s, windows
    /// carry Unix times.
    origin: (Instant, u64),
    slots: HashSet<(usize, usize, u64)>,
    /// Most entries kept ([`MAX_LATE_ENTRIES`]).
    capacity: usize,
    /// The first slot not recorded once the log was full.
    full_from: Option<u64>,
}

impl LateLog {
    fn new(origin_instant: Instant, origin_unix_us: u64, capacity: usize) -> Self {
        LateLog {
            origin: (origin_instant, origin_unix_us),
            slots: HashSet::new(),
            capacity,
            full_from: None,
        }
    }

    /// The slot of a deadline.
    fn slot(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.origin.0);
        let us = self.origin.1 + u64::try_from(since.as_micros()).unwrap_or(u64::MAX / 2);
        us / LATE_SLOT_US
    }

    fn record(&mut self, src: usize, dst: usize, at: Instant) {
        let slot = self.slot(at);
        if self.slots.len() < self.capacity || self.slots.contains(&(src, dst, slot)) {
            self.slots.insert((src, dst, slot));
        } else if self.full_from.is_none_or(|f| slot < f) {
            self.full_from = Some(slot);
        }
    }

    /// Whether a packet between `a` and `b` (either way) with a deadline in
    /// `[from_unix_us, to_unix_us]` left late, or might have (log full).
    fn late_during(&self, a: usize, b: usize, from_unix_us: u64, to_unix_us: u64) -> bool {
        let (first, last) = (from_unix_us / LATE_SLOT_US, to_unix_us / LATE_SLOT_US);
        if self.full_from.is_some_and(|f| last >= f) {
            return true;
        }
        (first..=last).any(|s| self.slots.contains(&(a, b, s)) || self.slots.contains(&(b, a, s)))
    }
}

struct Shared {
    lateness: Mutex<Option<Lateness>>,
    late_log: Mutex<LateLog>,
    queue: Mutex<Queue>,
    wake: Condvar,
    stop: AtomicBool,
    counters: Counters,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A poisoned lock means a forwarding thread panicked; the data is a
        // queue of packets, still consistent, so keep going.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running emulator; dropping it stops the threads.
pub struct Emulator {
    shared: Arc<Shared>,
    interrupt: Arc<InterruptEvent>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("threads", &self.threads.len())
            .finish()
    }
}

impl Emulator {
    /// Start forwarding between `devices` (index = node index).
    pub fn start(devices: Vec<Arc<SyncDevice>>, shaper: Shaper) -> std::io::Result<Self> {
        let unix_us = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
            .unwrap_or(0);
        let shared = Arc::new(Shared {
            late_log: Mutex::new(LateLog::new(Instant::now(), unix_us, MAX_LATE_ENTRIES)),
            lateness: Mutex::new(
                hdrhistogram::Histogram::new_with_bounds(1, 10_000_000_000, 2).ok(),
            ),
            queue: Mutex::new(Queue {
                shaper,
                heap: BinaryHeap::new(),
                order: 0,
            }),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            counters: Counters::default(),
        });
        let interrupt = Arc::new(InterruptEvent::new()?);
        let mut threads = Vec::new();
        let n = devices.len();
        for (i, dev) in devices.iter().enumerate() {
            dev.set_nonblocking(true)?;
            let (dev, shared, interrupt) = (dev.clone(), shared.clone(), interrupt.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("emu-rx-{i}"))
                    .spawn(move || read_loop(i, n, &dev, &shared, &interrupt))?,
            );
        }
        let out = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("emu-tx".into())
                .spawn(move || deliver_loop(&devices, &out))?,
        );
        Ok(Emulator {
            shared,
            interrupt,
            threads,
        })
    }

    /// Change one direction's parameters while running.
    pub fn set_link(&self, src: usize, dst: usize, p: LinkParams) {
        self.shared.lock().shaper.set(src, dst, p);
    }

    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// How late packets left the emulator.
    pub fn lateness(&self) -> Option<LatenessSummary> {
        self.lateness_mark().as_ref().and_then(summarize)
    }

    /// The lateness of every packet so far, to tell later what came after
    /// ([`lateness_since`](Self::lateness_since)).
    pub fn lateness_mark(&self) -> Option<Lateness> {
        self.shared
            .lateness
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The lateness of the packets delivered since `mark` was taken.
    pub fn lateness_since(&self, mark: Option<&Lateness>) -> Option<Lateness> {
        let mut now = self.lateness_mark()?;
        if let Some(m) = mark {
            now.subtract(m).ok()?;
        }
        Some(now)
    }

    /// Whether packets between nodes `a` and `b` (either direction) whose
    /// deadline fell in `[from_unix_us, to_unix_us]` left more than 1 ms
    /// late: a window measured then reads the emulator, not the link.
    pub fn late_during(&self, a: usize, b: usize, from_unix_us: u64, to_unix_us: u64) -> bool {
        self.shared
            .late_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .late_during(a, b, from_unix_us, to_unix_us)
    }

    /// Stop all threads and wait for them.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        if let Err(e) = self.interrupt.trigger() {
            warn!(error = %e, "cannot interrupt the emulator's readers");
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_loop(src: usize, n: usize, dev: &SyncDevice, shared: &Shared, interrupt: &InterruptEvent) {
    realtime(READER_PRIORITY);
    let mut buf = vec![0u8; MAX_FRAME];
    while !shared.stop.load(Ordering::Relaxed) {
        let len = match dev.recv_intr(&mut buf, interrupt) {
            Ok(len) => len,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => break,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                debug!(node = src, error = %e, "TUN read failed; reader stops");
                break;
            }
        };
        let now = Instant::now();
        let Some((frame, dst)) =
            Frame::parse(&buf[..len]).and_then(|f| Some((f, destination(f.packet, n)?)))
        else {
            shared.counters.foreign.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let fate = shared.lock().shaper.schedule(src, dst, now, frame.segments);
        let (at, pieces) = match fate {
            Fate::Lost => {
                count(&shared.counters.dropped, frame.segments);
                continue;
            }
            Fate::Deliver { at, lost } if lost.is_empty() => {
                (at, vec![(buf[..len].to_vec(), frame.segments)])
            }
            Fate::Deliver { at, lost } => {
                count(&shared.counters.dropped, lost.len());
                // Split outside the lock: rare (lossy links only), and the
                // delivery thread should not wait for it.
                match frame.split(|i| !lost.contains(&i)) {
                    Ok(kept) => (at, kept.into_iter().map(|f| (f, 1)).collect()),
                    Err(e) => {
                        debug!(node = src, error = %e, "cannot split a GSO packet; dropped whole");
                        count(&shared.counters.dropped, frame.segments - lost.len());
                        continue;
                    }
                }
            }
        };
        let mut q = shared.lock();
        for (frame, segments) in pieces {
            let order = q.order;
            q.order += 1;
            q.heap.push(Pending {
                at,
                order,
                src,
                dst,
                frame,
                segments,
            });
        }
        drop(q);
        shared.wake.notify_one();
    }
}

fn count(counter: &AtomicU64, packets: usize) {
    counter.fetch_add(
        u64::try_from(packets).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
}

fn deliver_loop(devices: &[Arc<SyncDevice>], shared: &Shared) {
    realtime(DELIVERY_PRIORITY);
    if let Err(e) = nix::sys::prctl::set_timerslack(TIMER_SLACK_NS) {
        warn!(error = %e, "cannot lower the timer slack; delays may be up to 50 µs late");
    }
    loop {
        let mut q = shared.lock();
        let due = loop {
            if shared.stop.load(Ordering::Relaxed) {
                return;
            }
            let Some(next) = q.heap.peek().map(|p| p.at) else {
                q = shared
                    .wake
                    .wait_timeout(q, Duration::from_millis(100))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
                continue;
            };
            let now = Instant::now();
            if next <= now {
                break q.heap.pop();
            }
            let wait = next - now;
            if wait > SPIN_BELOW {
                q = shared
                    .wake
                    .wait_timeout(q, wait - SPIN_BELOW)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
            } else {
                drop(q);
                while Instant::now() < next {
                    std::hint::spin_loop();
                }
                q = shared.lock();
            }
        };
        drop(q);
        if let Some(p) = due {
            let late = Instant::now().saturating_duration_since(p.at);
            let ns = u64::try_from(late.as_nanos()).unwrap_or(u64::MAX).max(1);
            if ns > LATE_NS {
                shared
                    .late_log
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .record(p.src, p.dst, p.at);
            }
            if let Some(h) = shared
                .lateness
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_mut()
            {
                h.saturating_record_n(ns, u64::try_from(p.segments).unwrap_or(u64::MAX));
            }
            match devices[p.dst].send(&p.frame) {
                Ok(_) => count(&shared.counters.forwarded, p.segments),
                Err(e) => debug!(dst = p.dst, error = %e, "TUN write failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests;
