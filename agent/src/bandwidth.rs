//! TCP throughput tests between agents, run only when the aggregator says so.
//!
//! The aggregator sends the sender a [`BandwidthGrant`] and the receiver a
//! [`BandwidthTest`] with the same random token (wire format in the proto
//! file). The receiver opens several TCP connections, the sender fills them
//! until the receiver closes, the byte cap is reached or the time budget
//! ends. The receiver counts what arrives, leaves out the first part (TCP
//! slow start) and reports Mbit/s overall and per stream; the sender reports
//! the bytes it sent, which the aggregator charges against both nodes'
//! budgets. A connection without a valid token gets one refusal byte and is
//! closed: nobody can make an agent send data without the aggregator.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netaware_proto::v1::agent_message::Msg as AgentMsg;
use netaware_proto::v1::{BandwidthGrant, BandwidthResult, BandwidthServed, BandwidthTest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::metrics::AgentMetrics;

/// First bytes of every test connection.
pub const MAGIC: &[u8; 4] = b"NWBW";
/// Version byte of the request.
pub const WIRE_VERSION: u8 = 1;
/// Status byte: the sender will send.
pub const ACCEPTED: u8 = 0;
/// Status byte: unknown, expired or used-up token.
pub const REFUSED: u8 = 1;
/// Request length: magic, version, stream index, two zero bytes, token.
pub const REQUEST_LEN: usize = 16;
/// A request must arrive this soon after the connection opens.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection may arrive just before its grant (two different sessions):
/// wait this long for the grant before refusing.
const GRANT_WAIT: Duration = Duration::from_secs(1);
/// Connecting and the handshake may take this long on top of the test:
/// enough for two lost SYNs (retransmitted after 1 s and 3 s) on a lossy path.
const SETUP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a grant that reached its deadline waits for its connections to
/// stop before it reports what was sent.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Size of one write or read.
const CHUNK: usize = 128 * 1024;

/// Build the 16-byte request for one stream.
pub fn request(token: u64, stream: u8) -> [u8; REQUEST_LEN] {
    let mut r = [0u8; REQUEST_LEN];
    r[..4].copy_from_slice(MAGIC);
    r[4] = WIRE_VERSION;
    r[5] = stream;
    r[8..].copy_from_slice(&token.to_be_bytes());
    r
}

/// The token of a well-formed request.
pub fn parse_request(r: &[u8; REQUEST_LEN]) -> Option<u64> {
    if &r[..4] != MAGIC || r[4] != WIRE_VERSION {
        return None;
    }
    let mut t = [0u8; 8];
    t.copy_from_slice(&r[8..]);
    Some(u64::from_be_bytes(t))
}

#[derive(Debug)]
struct Grant {
    peer: String,
    streams: u32,
    max_bytes: u64,
    budget: Duration,
    granted_at: Instant,
    first_connection: Option<Instant>,
    connections: u32,
    /// Connections that have finished sending.
    closed: u32,
    sent: Arc<AtomicU64>,
}

impl Grant {
    /// When sending must stop (or, before any connection, when the
    /// grant lapses).
    fn deadline(&self) -> Instant {
        self.first_connection.unwrap_or(self.granted_at) + self.budget
    }
}

/// The grants this agent holds as a sender.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    inner: Arc<Mutex<HashMap<u64, Grant>>>,
    added: Arc<Notify>,
    /// A connection finished sending.
    closed: Arc<Notify>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    UnknownToken,
    Expired,
    TooManyStreams,
}

/// What an accepted stream may do.
#[derive(Debug, Clone)]
pub struct Admission {
    deadline: Instant,
    max_bytes: u64,
    sent: Arc<AtomicU64>,
}

impl Grants {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Grant>> {
        // A panic while holding the lock leaves plain data behind; go on.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Store a grant received at `now`; returns when it lapses if unused.
    pub fn add(&self, g: &BandwidthGrant, now: Instant) -> Instant {
        let grant = Grant {
            peer: g.peer.clone(),
            streams: g.streams.max(1),
            max_bytes: g.max_bytes,
            budget: Duration::from_millis(g.budget_ms),
            granted_at: now,
            first_connection: None,
            connections: 0,
            closed: 0,
            sent: Arc::new(AtomicU64::new(0)),
        };
        let lapse = grant.deadline();
        self.lock().insert(g.token, grant);
        self.added.notify_waiters();
        lapse
    }

    /// Admit one connection for `token` at `now`.
    pub fn admit(&self, token: u64, now: Instant) -> Result<Admission, Refusal> {
        let mut map = self.lock();
        let g = map.get_mut(&token).ok_or(Refusal::UnknownToken)?;
        if now >= g.deadline() {
            return Err(Refusal::Expired);
        }
        if g.connections >= g.streams {
            return Err(Refusal::TooManyStreams);
        }
        g.connections += 1;
        g.first_connection.get_or_insert(now);
        Ok(Admission {
            deadline: g.deadline(),
            max_bytes: g.max_bytes,
            sent: g.sent.clone(),
        })
    }

    /// When the grant for `token` ends (`None`: no such grant).
    pub fn deadline(&self, token: u64) -> Option<Instant> {
        self.lock().get(&token).map(Grant::deadline)
    }

    /// One admitted connection of `token` stopped sending.
    pub fn close(&self, token: u64) {
        if let Some(g) = self.lock().get_mut(&token) {
            g.closed += 1;
        }
        self.closed.notify_waiters();
    }

    /// Every stream the grant allows has come and gone: nothing more will
    /// be sent, so the grant can end before its time budget.
    pub fn all_closed(&self, token: u64) -> bool {
        self.lock()
            .get(&token)
            .is_some_and(|g| g.connections == g.streams && g.closed == g.streams)
    }

    /// Every connection admitted so far has stopped sending.
    fn admitted_closed(&self, token: u64) -> bool {
        self.lock()
            .get(&token)
            .is_none_or(|g| g.closed >= g.connections)
    }

    /// Remove a grant and say what was sent under it.
    pub fn finish(&self, token: u64) -> Option<BandwidthServed> {
        self.lock().remove(&token).map(|g| BandwidthServed {
            token,
            peer: g.peer,
            bytes_sent: g.sent.load(Ordering::Relaxed),
        })
    }

    /// Wait up to `wait` for a grant with `token` to exist.
    async fn wait_for(&self, token: u64, wait: Duration) {
        let until = tokio::time::Instant::now() + wait;
        loop {
            let added = self.added.notified();
            tokio::pin!(added);
            added.as_mut().enable();
            if self.lock().contains_key(&token) {
                return;
            }
            if tokio::time::timeout_at(until, added).await.is_err() {
                return;
            }
        }
    }
}

/// Take up to `CHUNK` bytes from the shared byte cap; 0 when it is used up.
fn claim(sent: &AtomicU64, max_bytes: u64) -> usize {
    let mut got = 0usize;
    let _ = sent.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
        let n = max_bytes.saturating_sub(s).min(CHUNK as u64);
        got = n as usize;
        (n > 0).then_some(s + n)
    });
    got
}

/// Serve one test connection.
async fn serve_connection(mut sock: TcpStream, grants: Grants) {
    let mut req = [0u8; REQUEST_LEN];
    match tokio::time::timeout(REQUEST_TIMEOUT, sock.read_exact(&mut req)).await {
        Ok(Ok(_)) => {}
        _ => return,
    }
    let Some(token) = parse_request(&req) else {
        let _ = sock.write_all(&[REFUSED]).await;
        return;
    };
    grants.wait_for(token, GRANT_WAIT).await;
    let adm = match grants.admit(token, Instant::now()) {
        Ok(a) => a,
        Err(why) => {
            debug!(token, ?why, "bandwidth test connection refused");
            let _ = sock.write_all(&[REFUSED]).await;
            return;
        }
    };
    if sock.write_all(&[ACCEPTED]).await.is_err() {
        // Admitted, so it counts as a stream that came and went.
        grants.close(token);
        return;
    }
    let buf = vec![0u8; CHUNK];
    let deadline = tokio::time::Instant::from_std(adm.deadline);
    let send = async {
        loop {
            let n = claim(&adm.sent, adm.max_bytes);
            if n == 0 {
                break;
            }
            if sock.write_all(&buf[..n]).await.is_err() {
                // The receiver closed: the test is over. The claimed bytes
                // may not all have left; the count stays an upper bound.
                break;
            }
        }
    };
    let _ = tokio::time::timeout_at(deadline, send).await;
    grants.close(token);
}

/// Connections served at once: a node is in one test at a time, of at most
/// 64 streams, so more than this is not a test (the review's E2: 1000 idle
/// connections were all accepted and held).
pub const MAX_CONNECTIONS: usize = 64 + 16;

/// Accept test connections forever; past [`MAX_CONNECTIONS`] a new one is
/// closed at once.
pub async fn run_server(listener: TcpListener, grants: Grants) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        match listener.accept().await {
            Ok((sock, _)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    debug!("bandwidth server full; closing a connection");
                    continue;
                };
                let _ = sock.set_nodelay(true);
                let grants = grants.clone();
                tokio::spawn(async move {
                    serve_connection(sock, grants).await;
                    drop(slot);
                });
            }
            Err(e) => {
                warn!(error = %e, "bandwidth server accept failed");
                tokio::time::sleep(netaware_common::observe::ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Hold a grant until it ends, then report what was sent.
async fn hold_grant(
    grants: Grants,
    token: u64,
    results: mpsc::Sender<AgentMsg>,
    metrics: Option<AgentMetrics>,
) {
    // The deadline moves once, when the first connection arrives; the grant
    // ends earlier when every stream has been closed.
    loop {
        let closed = grants.closed.notified();
        tokio::pin!(closed);
        closed.as_mut().enable();
        let Some(d) = grants.deadline(token) else {
            break;
        };
        if Instant::now() >= d || grants.all_closed(token) {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(d)) => {}
            _ = closed => {}
        }
    }
    // The connections stop at the same deadline, but on their own tasks: a
    // count read before they have stopped can miss their last chunk, and
    // the aggregator would charge less than was sent. Wait for them (they
    // stop at once at the deadline; the grace only bounds a stuck one).
    let grace = tokio::time::Instant::now() + CLOSE_GRACE;
    loop {
        let closed = grants.closed.notified();
        tokio::pin!(closed);
        closed.as_mut().enable();
        if grants.admitted_closed(token) {
            break;
        }
        if tokio::time::timeout_at(grace, closed).await.is_err() {
            warn!(
                token,
                "a bandwidth-test connection did not stop at its deadline"
            );
            break;
        }
    }
    if let Some(served) = grants.finish(token) {
        info!(token, peer = %served.peer, bytes = served.bytes_sent, "bandwidth grant ended");
        if let Some(m) = &metrics {
            m.bandwidth_test("sender", served.bytes_sent > 0);
        }
        let _ = results.send(AgentMsg::BandwidthServed(served)).await;
    }
}

/// Received-byte counters, one per stream.
type Counters = Vec<Arc<AtomicU64>>;

fn snapshot(c: &Counters) -> Vec<u64> {
    c.iter().map(|x| x.load(Ordering::Relaxed)).collect()
}

async fn open_stream(addr: SocketAddr, token: u64, index: u8) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let _ = s.set_nodelay(true);
    s.write_all(&request(token, index))
        .await
        .map_err(|e| format!("send request to {addr}: {e}"))?;
    let mut status = [0u8; 1];
    s.read_exact(&mut status)
        .await
        .map_err(|e| format!("read status from {addr}: {e}"))?;
    match status[0] {
        ACCEPTED => Ok(s),
        _ => Err(format!(
            "refused by {addr}: the sender holds no valid grant for this test"
        )),
    }
}

/// Run one test as the receiver. Never runs longer than setup + omit +
/// duration; every failure is an `error` in the result.
pub async fn run_test(t: &BandwidthTest, clock: Clock) -> BandwidthResult {
    let mut result = BandwidthResult {
        token: t.token,
        peer: t.peer.clone(),
        ..Default::default()
    };
    let fail = |mut r: BandwidthResult, e: String| {
        r.error = e;
        r
    };
    let ip: std::net::IpAddr = match t.address.parse() {
        Ok(ip) => ip,
        Err(_) => return fail(result, format!("bad address '{}'", t.address)),
    };
    let Ok(port) = u16::try_from(t.port) else {
        return fail(result, format!("bad port {}", t.port));
    };
    let addr = SocketAddr::new(ip, port);
    let streams = t.streams.clamp(1, 64) as u8;
    let opening =
        futures_util::future::join_all((0..streams).map(|i| open_stream(addr, t.token, i)));
    let socks = match tokio::time::timeout(SETUP_TIMEOUT, opening).await {
        Err(_) => {
            return fail(
                result,
                format!("setting up the streams to {addr} timed out"),
            );
        }
        Ok(v) => match v.into_iter().collect::<Result<Vec<_>, _>>() {
            Ok(s) => s,
            Err(e) => return fail(result, e),
        },
    };
    let counters: Counters = (0..socks.len())
        .map(|_| Arc::new(AtomicU64::new(0)))
        .collect();
    let mut set = JoinSet::new();
    for (mut s, c) in socks.into_iter().zip(counters.iter().cloned()) {
        set.spawn(async move {
            let mut buf = vec![0u8; CHUNK];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                c.fetch_add(n as u64, Ordering::Relaxed);
            }
        });
    }
    result.started_unix_us = clock.unix_us(clock.now());
    let omit = Duration::from_millis(t.omit_ms);
    let duration = Duration::from_millis(t.duration_ms.max(1));
    // Wait until `until` or until every stream has ended (byte cap).
    async fn wait(set: &mut JoinSet<()>, until: tokio::time::Instant) -> bool {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => false,
            _ = async { while set.join_next().await.is_some() {} } => true,
        }
    }
    let t0 = tokio::time::Instant::now();
    if wait(&mut set, t0 + omit).await {
        result.total_bytes = snapshot(&counters).iter().sum();
        return fail(
            result,
            "the byte cap ended the test within the omitted part; nothing to measure".into(),
        );
    }
    let (t1, c1) = (tokio::time::Instant::now(), snapshot(&counters));
    let capped = wait(&mut set, t1 + duration).await;
    let (t2, c2) = (tokio::time::Instant::now(), snapshot(&counters));
    set.abort_all();
    let secs = (t2 - t1).as_secs_f64();
    let mbps = |bytes: u64| bytes as f64 * 8.0 / secs / 1e6;
    result.stream_mbps = c1.iter().zip(&c2).map(|(a, b)| mbps(b - a)).collect();
    result.measured_bytes = c2.iter().sum::<u64>() - c1.iter().sum::<u64>();
    result.measured_ns = u64::try_from((t2 - t1).as_nanos()).unwrap_or(u64::MAX);
    result.mbps = mbps(result.measured_bytes);
    result.total_bytes = c2.iter().sum();
    result.byte_capped = capped;
    result
}

/// Serve grants and run tests as the aggregator orders, reporting to
/// `results`. Tests run one at a time; a test ordered while one runs is
/// refused with an error (the aggregator schedules one per node anyway).
pub async fn run(
    grants: Grants,
    clock: Clock,
    mut orders: mpsc::Receiver<Order>,
    results: mpsc::Sender<AgentMsg>,
    metrics: Option<AgentMetrics>,
) {
    let busy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    while let Some(order) = orders.recv().await {
        match order {
            Order::Grant(g) => {
                info!(token = g.token, peer = %g.peer, max_bytes = g.max_bytes, "bandwidth grant");
                grants.add(&g, Instant::now());
                let m = metrics.clone();
                tokio::spawn(hold_grant(grants.clone(), g.token, results.clone(), m));
            }
            Order::Test(t) => {
                if busy.swap(true, Ordering::AcqRel) {
                    let r = BandwidthResult {
                        token: t.token,
                        peer: t.peer,
                        error: "another test is running on this node".into(),
                        ..Default::default()
                    };
                    let _ = results.send(AgentMsg::BandwidthResult(r)).await;
                    continue;
                }
                let (busy, results, m) = (busy.clone(), results.clone(), metrics.clone());
                tokio::spawn(async move {
                    let r = run_test(&t, clock).await;
                    busy.store(false, Ordering::Release);
                    if let Some(m) = &m {
                        m.bandwidth_test("receiver", r.error.is_empty());
                    }
                    if r.error.is_empty() {
                        info!(peer = %r.peer, mbps = format!("{:.1}", r.mbps), "bandwidth test done");
                    } else {
                        warn!(peer = %r.peer, error = %r.error, "bandwidth test failed");
                    }
                    let _ = results.send(AgentMsg::BandwidthResult(r)).await;
                });
            }
        }
    }
}

/// What the aggregator asks of the bandwidth part.
#[derive(Debug, Clone, PartialEq)]
pub enum Order {
    Grant(BandwidthGrant),
    Test(BandwidthTest),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(token: u64, streams: u32, max_bytes: u64, budget_ms: u64) -> BandwidthGrant {
        BandwidthGrant {
            token,
            peer: "receiver".into(),
            streams,
            max_bytes,
            budget_ms,
        }
    }

    #[test]
    fn requests_round_trip_and_garbage_is_rejected() {
        let r = request(0xdead_beef_0123_4567, 3);
        assert_eq!(parse_request(&r), Some(0xdead_beef_0123_4567));
        let mut bad = r;
        bad[0] = b'X';
        assert_eq!(parse_request(&bad), None);
        let mut v2 = r;
        v2[4] = 2;
        assert_eq!(parse_request(&v2), None);
    }

    #[test]
    fn admission_checks_token_streams_and_time() {
        let g = Grants::default();
        let t0 = Instant::now();
        g.add(&grant(7, 2, 1000, 500), t0);
        assert_eq!(g.admit(8, t0).unwrap_err(), Refusal::UnknownToken);
        let a = g.admit(7, t0 + Duration::from_millis(100)).unwrap();
        // The budget now runs from the first connection.
        assert_eq!(a.deadline, t0 + Duration::from_millis(600));
        g.admit(7, t0 + Duration::from_millis(200)).unwrap();
        assert_eq!(
            g.admit(7, t0 + Duration::from_millis(300)).unwrap_err(),
            Refusal::TooManyStreams
        );
        g.add(&grant(9, 1, 1000, 500), t0);
        assert_eq!(
            g.admit(9, t0 + Duration::from_millis(500)).unwrap_err(),
            Refusal::Expired
        );
        let served = g.finish(7).unwrap();
        assert_eq!((served.token, served.bytes_sent), (7, 0));
        assert_eq!(g.admit(7, t0).unwrap_err(), Refusal::UnknownToken);
    }

    #[test]
    fn the_byte_cap_is_shared_by_all_streams_and_never_exceeded() {
        let sent = AtomicU64::new(0);
        let max = (CHUNK as u64) * 2 + 10;
        let mut total = 0usize;
        while let n @ 1.. = claim(&sent, max) {
            total += n;
        }
        assert_eq!(total as u64, max);
        assert_eq!(claim(&sent, max), 0);
    }
}
