//! The agent's side of the `AgentService.Session` stream: hello, plans,
//! report batches, acknowledgements, reconnects and the bounded buffer that
//! lets a short aggregator outage lose nothing.

use std::future::Future;
use std::time::{Duration, Instant};

use netaware_proto::v1::agent_message::Msg as AgentMsg;
use netaware_proto::v1::agent_service_client::AgentServiceClient;
use netaware_proto::v1::aggregator_message::Msg as AggMsg;
use netaware_proto::v1::{AgentMessage, Hello, LinkWindow, ProbePlan};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tracing::{info, warn};

use crate::bandwidth::Order;
use crate::metrics::SessionMetrics;
use netaware_common::observe::Readiness;

mod buffer;

pub use buffer::{MAX_ATTEMPTS, ReportBuffer};

/// How often buffered windows are sent while connected.
const FLUSH_INTERVAL: Duration = Duration::from_millis(250);
/// A session must last this long, with a plan, to count as healthy and
/// reset the reconnect backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// Give up a connection attempt after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Capped exponential backoff with jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    base: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            base: initial,
        }
    }

    /// Next delay given a random `unit` in [0, 1): uniformly between half the
    /// current base and the base ("equal jitter"), so agents restarted
    /// together do not reconnect in lockstep; the base then doubles up to the cap.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let base = self.base;
        self.base = (self.base * 2).min(self.max);
        base.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }

    /// After a healthy session, start again from the initial delay.
    pub fn reset(&mut self) {
        self.base = self.initial;
    }
}

/// Settings of a session loop.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub hello: Hello,
    pub max_buffered_windows: usize,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Reporting counters for `/metrics`.
    pub metrics: SessionMetrics,
    /// Ready while a session is open and has a plan (`/readyz`).
    pub ready: Readiness,
    /// The projected ServiceAccount token to present, read anew for every
    /// session (the kubelet rotates it); `None` sends none.
    pub token_file: Option<std::path::PathBuf>,
}

/// A token file larger than this is not a ServiceAccount token.
const MAX_TOKEN_BYTES: u64 = 16 << 10;

/// The bearer token in `path`, trimmed: the value of the `authorization`
/// metadata.
fn bearer(
    path: &std::path::Path,
) -> Result<tonic::metadata::MetadataValue<tonic::metadata::Ascii>, String> {
    use std::io::Read as _;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_TOKEN_BYTES + 1).read_to_string(&mut text))
        .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() || text.len() as u64 > MAX_TOKEN_BYTES {
        return Err(format!(
            "the token file {} is empty or larger than 16 KiB",
            path.display()
        ));
    }
    format!("Bearer {token}").parse().map_err(|_| {
        format!(
            "the token file {} holds characters a token cannot have",
            path.display()
        )
    })
}

/// Mirror the buffer into the metrics.
fn track(buffer: &ReportBuffer, m: &SessionMetrics) {
    m.windows_buffered
        .set(i64::try_from(buffer.len()).unwrap_or(i64::MAX));
    let catch_up = |c: &prometheus_client::metrics::counter::Counter, total: u64| {
        let shown = c.get();
        if total > shown {
            c.inc_by(total - shown);
        }
    };
    catch_up(&m.windows_dropped, buffer.full_total());
    catch_up(&m.windows_undeliverable, buffer.undeliverable_total());
}

/// Why one connected session ended.
enum Ended {
    /// Producers are gone or shutdown was asked: stop for good.
    Stop,
    /// The stream broke; `got_plan` if a plan was received on it.
    Broken { got_plan: bool, why: String },
}

/// Whether a session that ended resets the backoff: it had a plan and
/// lasted [`HEALTHY_AFTER`]. A stream that breaks soon after opening (the
/// aggregator refusing what we send, a crash loop) keeps backing off.
fn healthy(got_plan: bool, lasted: Duration) -> bool {
    got_plan && lasted >= HEALTHY_AFTER
}

/// What a session exchanges with the rest of the agent.
#[derive(Debug)]
pub struct SessionIo {
    /// Finished windows from the probe tasks.
    pub windows: mpsc::Receiver<LinkWindow>,
    /// The newest plan, for the probe manager.
    pub plans: watch::Sender<Option<ProbePlan>>,
    /// Bandwidth grants and tests from the aggregator.
    pub orders: mpsc::Sender<Order>,
    /// Bandwidth results and served reports for the aggregator. Sent while
    /// connected; while not, they are dropped (the aggregator times the
    /// test out and charges its full byte reservation).
    pub results: mpsc::Receiver<AgentMsg>,
}

/// Keep a session to the aggregator open until `shutdown` resolves or the
/// window producers go away. `connect` opens a new channel (a real endpoint
/// in production, an in-memory pipe in tests).
pub async fn run_session<F, Fut, E>(
    cfg: SessionConfig,
    connect: F,
    mut io: SessionIo,
    shutdown: impl Future<Output = ()>,
) -> ReportBuffer
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Channel, E>>,
    E: std::fmt::Display,
{
    let mut buffer = ReportBuffer::new(cfg.max_buffered_windows);
    let mut backoff = Backoff::new(cfg.backoff_initial, cfg.backoff_max);
    tokio::pin!(shutdown);
    loop {
        let started = Instant::now();
        let ended = tokio::select! {
            e = connected(&cfg, &connect, &mut io, &mut buffer) => e,
            _ = &mut shutdown => Ended::Stop,
        };
        match ended {
            Ended::Stop => return buffer,
            Ended::Broken { got_plan, why } => {
                cfg.metrics.connected.set(0);
                cfg.ready
                    .set_not_ready(&format!("no session to the aggregator ({why})"));
                buffer.requeue_unacked();
                track(&buffer, &cfg.metrics);
                if healthy(got_plan, Instant::now().saturating_duration_since(started)) {
                    backoff.reset();
                }
                let delay = backoff.next_delay(rand::random::<f64>());
                warn!(
                    reason = %why,
                    retry_in_ms = delay.as_millis() as u64,
                    buffered = buffer.len(),
                    dropped_total = buffer.dropped_total(),
                    "aggregator session lost; measuring on and buffering"
                );
                // Keep accepting windows while waiting, so nothing measured is lost.
                let sleep = tokio::time::sleep(delay);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        _ = &mut shutdown => return buffer,
                        w = io.windows.recv() => match w {
                            Some(w) => {
                                buffer.push(w);
                                track(&buffer, &cfg.metrics);
                            }
                            None => return buffer,
                        },
                        Some(r) = io.results.recv() => {
                            warn!(result = ?r, "bandwidth report dropped: not connected");
                        }
                    }
                }
            }
        }
    }
}

/// Hand an order to the bandwidth part without blocking the session.
fn order(orders: &mpsc::Sender<Order>, o: Order) {
    if let Err(e) = orders.try_send(o) {
        warn!(error = %e, "bandwidth order dropped");
    }
}

async fn connected<F, Fut, E>(
    cfg: &SessionConfig,
    connect: &F,
    io: &mut SessionIo,
    buffer: &mut ReportBuffer,
) -> Ended
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Channel, E>>,
    E: std::fmt::Display,
{
    let broken = |got_plan: bool, why: String| Ended::Broken { got_plan, why };
    let channel = match tokio::time::timeout(CONNECT_TIMEOUT, connect()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return broken(false, format!("connect: {e}")),
        Err(_) => return broken(false, "connect: timed out".into()),
    };
    let (tx, rx) = mpsc::channel::<AgentMessage>(16);
    let hello_msg = AgentMessage {
        msg: Some(AgentMsg::Hello(cfg.hello.clone())),
    };
    if tx.send(hello_msg).await.is_err() {
        return broken(false, "stream closed before hello".into());
    }
    let mut client = AgentServiceClient::new(channel)
        .max_decoding_message_size(netaware_proto::limits::MAX_AGGREGATOR_MESSAGE_BYTES)
        .max_encoding_message_size(netaware_proto::limits::MAX_AGENT_MESSAGE_BYTES);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(path) = &cfg.token_file {
        match bearer(path) {
            Ok(v) => {
                request.metadata_mut().insert("authorization", v);
            }
            Err(why) => return broken(false, why),
        }
    }
    let mut inbound = match client.session(request).await {
        Ok(r) => r.into_inner(),
        Err(s) => return broken(false, format!("open session: {s}")),
    };
    let mut got_plan = false;
    let mut flush = tokio::time::interval(FLUSH_INTERVAL);
    loop {
        tokio::select! {
            m = inbound.message() => match m {
                Ok(Some(msg)) => match msg.msg {
                    Some(AggMsg::Plan(plan)) => {
                        if !got_plan {
                            info!(version = plan.version, peers = plan.peers.len(), "connected to the aggregator");
                            cfg.metrics.sessions.inc();
                            cfg.metrics.connected.set(1);
                            cfg.ready.set_ready();
                        }
                        got_plan = true;
                        // Receivers only care about the newest plan.
                        io.plans.send_replace(Some(plan));
                    }
                    Some(AggMsg::Ack(ack)) => {
                        buffer.ack(ack.batch_seq);
                        track(buffer, &cfg.metrics);
                    }
                    Some(AggMsg::BandwidthTest(t)) => order(&io.orders, Order::Test(t)),
                    Some(AggMsg::BandwidthGrant(g)) => order(&io.orders, Order::Grant(g)),
                    None => {}
                },
                Ok(None) => return broken(got_plan, "aggregator ended the stream".into()),
                Err(s) => return broken(got_plan, format!("stream error: {s}")),
            },
            w = io.windows.recv() => match w {
                Some(w) => {
                    buffer.push(w);
                    track(buffer, &cfg.metrics);
                }
                None => return Ended::Stop,
            },
            Some(r) = io.results.recv() => {
                if tx.send(AgentMessage { msg: Some(r) }).await.is_err() {
                    return broken(got_plan, "send failed".into());
                }
            }
            _ = flush.tick() => {
                while let Some(batch) = buffer.take_batch() {
                    track(buffer, &cfg.metrics);
                    cfg.metrics.windows_sent.inc_by(batch.windows.len() as u64);
                    let msg = AgentMessage { msg: Some(AgentMsg::Reports(batch)) };
                    if tx.send(msg).await.is_err() {
                        return broken(got_plan, "send failed".into());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_and_resets() {
        let mut bo = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let d: Vec<u128> = (0..5).map(|_| bo.next_delay(1.0).as_millis()).collect();
        assert_eq!(d, vec![100, 200, 400, 500, 500]);
        assert_eq!(
            bo.next_delay(0.0).as_millis(),
            250,
            "jitter spans half the base"
        );
        bo.reset();
        assert_eq!(bo.next_delay(0.999_999).as_millis(), 99);
    }

    /// A stream that broke soon after its plan (e.g. on a batch the
    /// aggregator cannot take) must not reset the backoff, or the agent
    /// reconnects in a tight loop.
    #[test]
    fn the_token_file_is_read_as_a_bearer_token() {
        let dir = std::env::temp_dir().join(format!("netaware-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "abc.def.ghi\n").unwrap();
        assert_eq!(bearer(&path).unwrap(), "Bearer abc.def.ghi");
        std::fs::write(&path, "").unwrap();
        assert!(bearer(&path).unwrap_err().contains("empty"));
        std::fs::write(&path, "x".repeat(20_000)).unwrap();
        assert!(bearer(&path).unwrap_err().contains("16 KiB"));
        std::fs::write(&path, "a\u{1}b").unwrap();
        assert!(bearer(&path).unwrap_err().contains("characters"));
        let missing = dir.join("missing");
        assert!(bearer(&missing).unwrap_err().contains("cannot read"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_a_session_that_lasted_is_healthy() {
        assert!(!healthy(false, HEALTHY_AFTER * 10));
        assert!(!healthy(true, HEALTHY_AFTER - Duration::from_millis(1)));
        assert!(healthy(true, HEALTHY_AFTER));
    }
}
