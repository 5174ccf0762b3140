//! Simulated agents: each is a real `AgentService.Session` stream to the
//! aggregator (Hello, plans in, report batches out, acknowledgements), and
//! answers the plan it was given with one window per planned peer and
//! report interval, drawn from the [`Truth`]. Nothing is probed: only
//! planned pairs get windows, so the aggregator learns exactly what a real
//! agent with that plan would tell it. Many agents share one HTTP/2
//! connection (below the aggregator's streams-per-connection cap), so 5,000
//! of them need a few hundred sockets, not 5,000.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use netaware_proto::ProbeMethod;
use netaware_proto::v1::agent_message::Msg;
use netaware_proto::v1::agent_service_client::AgentServiceClient;
use netaware_proto::v1::aggregator_message::Msg as AggMsg;
use netaware_proto::v1::{AgentMessage, Hello, LinkWindow, ReportBatch};

use super::truth::Truth;

/// Sessions per HTTP/2 connection: below the aggregator's cap of 32
/// concurrent streams per connection.
const SESSIONS_PER_CONNECTION: usize = 16;
/// Windows per batch: far below the 1 MiB batch limit (about 80 bytes a
/// window without a histogram).
const WINDOWS_PER_BATCH: usize = 4_000;
/// Wait before a lost session is opened again.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// What one simulated agent saw.
#[derive(Debug, Clone, Default)]
pub struct AgentStats {
    /// When it sent its Hello, and when its first plan came.
    pub hello_at: Option<Instant>,
    pub first_plan_at: Option<Instant>,
    pub plans: u64,
    /// Peers in its current plan, and the most it was ever given.
    pub targets: usize,
    pub targets_max: usize,
    /// Largest plan message, encoded.
    pub plan_bytes_max: usize,
    pub windows_sent: u64,
    /// Sessions opened (1 when nothing was ever lost).
    pub sessions: u64,
    pub last_error: Option<String>,
}

/// The running agents and what they saw.
#[derive(Debug)]
pub struct Fleet {
    stats: Vec<Arc<Mutex<AgentStats>>>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    channels: Vec<Channel>,
    endpoint: Endpoint,
    report_interval: Duration,
    probes_per_window: u64,
    seed: u64,
}

impl Fleet {
    /// A fleet that will talk to the aggregator's agent port at `url`.
    pub fn new(
        url: &str,
        report_interval: Duration,
        probe_interval: Duration,
        seed: u64,
    ) -> Result<Self, String> {
        let endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| format!("{url}: {e}"))?;
        let probes = report_interval.as_micros() / probe_interval.as_micros().max(1);
        Ok(Self {
            stats: Vec::new(),
            stop: watch::channel(false).0,
            tasks: Vec::new(),
            channels: Vec::new(),
            endpoint,
            report_interval,
            probes_per_window: u64::try_from(probes).unwrap_or(u64::MAX).max(1),
            seed,
        })
    }

    /// Start the agent of truth node `i` (its stats are `stats()[k]` for
    /// the k-th agent started).
    pub fn start(&mut self, truth: &Arc<Truth>, i: usize) {
        let k = self.tasks.len();
        if k.is_multiple_of(SESSIONS_PER_CONNECTION) {
            self.channels.push(self.endpoint.connect_lazy());
        }
        let channel = self.channels[k / SESSIONS_PER_CONNECTION].clone();
        let stats = Arc::new(Mutex::new(AgentStats::default()));
        self.stats.push(stats.clone());
        let agent = Agent {
            truth: truth.clone(),
            me: i,
            stats,
            report_interval: self.report_interval,
            probes: self.probes_per_window,
            rng: Xoshiro256PlusPlus::seed_from_u64(self.seed ^ (i as u64).wrapping_mul(0x9E37)),
        };
        let stop = self.stop.subscribe();
        self.tasks.push(tokio::spawn(agent.run(channel, stop)));
    }

    /// A copy of every agent's stats, in start order.
    pub fn stats(&self) -> Vec<AgentStats> {
        self.stats
            .iter()
            .map(|s| s.lock().map(|s| s.clone()).unwrap_or_default())
            .collect()
    }

    /// Close every session and wait for the agents to end.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

struct Agent {
    truth: Arc<Truth>,
    me: usize,
    stats: Arc<Mutex<AgentStats>>,
    report_interval: Duration,
    probes: u64,
    rng: Xoshiro256PlusPlus,
}

impl Agent {
    fn note(&self, f: impl FnOnce(&mut AgentStats)) {
        if let Ok(mut s) = self.stats.lock() {
            f(&mut s);
        }
    }

    fn hello(&self, instance_id: u64) -> Hello {
        let i = self.me as u32 + 1;
        Hello {
            node_name: self.truth.nodes()[self.me].name.clone(),
            // 10.0.0.0/8 holds 16 M nodes: one address each.
            probe_addresses: vec![format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255)],
            stamp_port: 8620,
            software_version: concat!("netaware-lab-scale/", env!("CARGO_PKG_VERSION")).into(),
            capabilities: vec![ProbeMethod::StampUdp as i32],
            protocol_version: netaware_proto::PROTOCOL_VERSION,
            instance_id,
            bandwidth_port: 0,
        }
    }

    async fn run(mut self, channel: Channel, mut stop: watch::Receiver<bool>) {
        let instance_id: u64 = self.rng.random();
        // Agents start spread over the interval, as real ones do.
        let phase = self
            .report_interval
            .mul_f64(self.rng.random_range(0.0..1.0));
        let mut seq = 0u64;
        loop {
            let (tx, rx) = mpsc::channel::<AgentMessage>(4);
            let hello = AgentMessage {
                msg: Some(Msg::Hello(self.hello(instance_id))),
            };
            if tx.send(hello).await.is_err() {
                return;
            }
            self.note(|s| {
                s.sessions += 1;
                s.hello_at.get_or_insert_with(Instant::now);
            });
            let mut client = AgentServiceClient::new(channel.clone())
                .max_decoding_message_size(netaware_proto::limits::MAX_AGGREGATOR_MESSAGE_BYTES);
            let opened = tokio::select! {
                r = client.session(ReceiverStream::new(rx)) => r,
                _ = stop.changed() => return,
            };
            match opened {
                Ok(response) => {
                    let mut inbound = response.into_inner();
                    let mut peers: Vec<usize> = Vec::new();
                    let mut tick = tokio::time::interval_at(
                        tokio::time::Instant::now() + phase,
                        self.report_interval,
                    );
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tokio::select! {
                            m = inbound.message() => match m {
                                Ok(Some(m)) => {
                                    if let Some(AggMsg::Plan(plan)) = m.msg {
                                        let bytes = plan.encoded_len();
                                        peers = plan
                                            .peers
                                            .iter()
                                            .filter_map(|p| self.truth.index_of(&p.node_name))
                                            .collect();
                                        let n = peers.len();
                                        self.note(|s| {
                                            s.plans += 1;
                                            s.first_plan_at.get_or_insert_with(Instant::now);
                                            s.targets = n;
                                            s.targets_max = s.targets_max.max(n);
                                            s.plan_bytes_max = s.plan_bytes_max.max(bytes);
                                        });
                                    }
                                }
                                Ok(None) => break,
                                Err(e) => {
                                    self.note(|s| s.last_error = Some(e.message().to_string()));
                                    break;
                                }
                            },
                            _ = tick.tick() => {
                                for batch in self.batches(&peers, &mut seq) {
                                    let n = batch.windows.len() as u64;
                                    let msg = AgentMessage { msg: Some(Msg::Reports(batch)) };
                                    if tx.send(msg).await.is_err() {
                                        break;
                                    }
                                    self.note(|s| s.windows_sent += n);
                                }
                            }
                            _ = stop.changed() => return,
                        }
                    }
                }
                Err(e) => self.note(|s| s.last_error = Some(e.message().to_string())),
            }
            tokio::select! {
                _ = tokio::time::sleep(RECONNECT_AFTER) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// This interval's windows towards every planned peer, in batches.
    fn batches(&mut self, peers: &[usize], seq: &mut u64) -> Vec<ReportBatch> {
        let end = netaware_common::now_unix_us();
        let start =
            end.saturating_sub(u64::try_from(self.report_interval.as_micros()).unwrap_or(0));
        let windows: Vec<LinkWindow> = peers
            .iter()
            .map(|&p| {
                let f = self.truth.window(self.me, p, self.probes, &mut self.rng);
                LinkWindow {
                    peer: self.truth.nodes()[p].name.clone(),
                    method: ProbeMethod::StampUdp as i32,
                    window_start_unix_us: start,
                    window_end_unix_us: end,
                    sent: f.sent,
                    received: f.received,
                    rtt_min_ns: f.min_ns,
                    rtt_mean_ns: f.mean_ns,
                    rtt_p50_ns: f.p50_ns,
                    rtt_p90_ns: f.p90_ns,
                    rtt_p99_ns: f.p99_ns,
                    rtt_max_ns: f.max_ns,
                    jitter_ns: f.jitter_ns,
                    ..Default::default()
                }
            })
            .collect();
        windows
            .chunks(WINDOWS_PER_BATCH)
            .map(|c| {
                *seq += 1;
                ReportBatch {
                    batch_seq: *seq,
                    windows: c.to_vec(),
                    dropped_windows_total: 0,
                }
            })
            .collect()
    }
}
