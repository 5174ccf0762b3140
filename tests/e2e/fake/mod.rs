//! A real aggregator binary on loopback and fake agents that speak the
//! wire protocol (any client that reaches the agent port can), shared by
//! the hostile-input tests.

// Each test crate that includes this module uses part of it.
#![allow(dead_code)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use netaware_e2e::{Killed, free_port, http_get, spawn_aggregator};
use netaware_proto::ProbeMethod;
use netaware_proto::v1::agent_message::Msg as AgentMsg;
use netaware_proto::v1::agent_service_client::AgentServiceClient;
use netaware_proto::v1::aggregator_message::Msg as AggMsg;
use netaware_proto::v1::query_service_client::QueryServiceClient;
use netaware_proto::v1::{
    AgentMessage, AggregatorMessage, GetMatrixRequest, GetMatrixResponse, GetNodeRequest, Hello,
    LinkWindow, ReportBatch,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

/// A real aggregator on loopback ports of its own.
pub struct Aggregator {
    pub child: Killed,
    pub agent: u16,
    pub query: u16,
    pub metrics: u16,
    /// The CA of its certificate when it serves TLS (then clients connect
    /// with https to 127.0.0.1).
    pub ca: Option<std::path::PathBuf>,
}

/// An aggregator with short bandwidth tests.
pub fn start() -> Aggregator {
    start_with(&[])
}

/// An aggregator with short bandwidth tests and `extra` flags, ready.
pub fn start_with(extra: &[&str]) -> Aggregator {
    let (agent, query, metrics) = (free_port(), free_port(), free_port());
    let mut flags = vec!["--bandwidth-omit", "0s", "--bandwidth-duration", "1s"];
    flags.extend_from_slice(extra);
    let child = spawn_aggregator(agent, query, metrics, &flags);
    ready(child, agent, query, metrics)
}

/// An aggregator writing Node labels through `kubeconfig`, with `extra`
/// flags, ready. Fake agents have no tokens: agent authentication is off
/// unless `extra` sets `--agent-auth`.
pub fn start_with_kubeconfig(kubeconfig: &std::path::Path, extra: &[&str]) -> Aggregator {
    let (agent, query, metrics) = (free_port(), free_port(), free_port());
    let auth: &[&str] = if extra.contains(&"--agent-auth") {
        &[]
    } else {
        &netaware_e2e::UNAUTHENTICATED
    };
    let child = Killed(
        netaware_e2e::aggregator_command(agent, query, metrics)
            .args(["--report-interval", "1s"])
            .args(["--kubeconfig", kubeconfig.to_str().unwrap()])
            .args(auth)
            .args(extra)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    ready(child, agent, query, metrics)
}

/// [`start_with_kubeconfig`] serving TLS, as the chart sets it up: a
/// certificate for 127.0.0.1 signed by a CA made in `dir` (clients then
/// connect with https and that CA).
pub fn start_tls_with_kubeconfig(
    kubeconfig: &std::path::Path,
    dir: &std::path::Path,
    extra: &[&str],
) -> Aggregator {
    let (pki, _) = netaware_lab::cluster::serving_certificate(dir, &["127.0.0.1"]).unwrap();
    let mut flags = extra.to_vec();
    let (cert, key) = (pki.cert.to_str().unwrap(), pki.key.to_str().unwrap());
    flags.extend(["--tls-cert", cert, "--tls-key", key]);
    let mut agg = start_with_kubeconfig(kubeconfig, &flags);
    agg.ca = Some(pki.ca);
    agg
}

/// An aggregator without Kubernetes or agent authentication serving TLS
/// with `cert` and `key` (signed by `ca`), ready.
pub fn spawn_tls(
    cert: &std::path::Path,
    key: &std::path::Path,
    ca: &std::path::Path,
) -> Aggregator {
    let (agent, query, metrics) = (free_port(), free_port(), free_port());
    let child = Killed(
        netaware_e2e::aggregator_command(agent, query, metrics)
            .args(["--kubernetes", "off", "--agent-auth", "none"])
            .args(["--query-auth", "none"])
            .args(["--report-interval", "1s", "--bandwidth-tests", "false"])
            .args(["--tls-cert", cert.to_str().unwrap()])
            .args(["--tls-key", key.to_str().unwrap()])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut a = ready(child, agent, query, metrics);
    a.ca = Some(ca.to_path_buf());
    a
}

/// Whether a plain-text query to `port` is answered.
pub async fn query_client_plain(port: u16) -> Result<(), String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(3));
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    QueryServiceClient::new(channel)
        .get_matrix(GetMatrixRequest::default())
        .await
        .map(|_| ())
        .map_err(|s| s.to_string())
}

fn ready(child: Killed, agent: u16, query: u16, metrics: u16) -> Aggregator {
    let deadline = Instant::now() + Duration::from_secs(15);
    while http_get("127.0.0.1", metrics, "/readyz").is_none_or(|(s, _)| s != 200) {
        assert!(
            Instant::now() < deadline,
            "the aggregator did not become ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Aggregator {
        child,
        agent,
        query,
        metrics,
        ca: None,
    }
}

impl Aggregator {
    /// `netaware_refused_total{kind="…"}` from /metrics.
    pub fn refused(&self, kind: &str) -> u64 {
        self.metric(&format!("netaware_refused_total{{kind=\"{kind}\"}}"))
    }

    /// The value of the series `series` (name and labels as exposed) on
    /// /metrics; 0 when absent.
    pub fn metric(&self, series: &str) -> u64 {
        let (_, body) = http_get("127.0.0.1", self.metrics, "/metrics").unwrap();
        let line = format!("{series} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&line))
            .map_or(0, |v| v.trim().parse().unwrap())
    }

    /// A query client with the limits the CLI uses.
    pub async fn client(&self) -> QueryServiceClient<Channel> {
        QueryServiceClient::new(self.channel(self.query).await)
            .max_decoding_message_size(netaware_proto::limits::MAX_QUERY_RESPONSE_BYTES)
    }

    /// `http://` or, with TLS, `https://` on loopback.
    pub fn url(&self, port: u16) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{port}")
    }

    /// A channel to `port`, over TLS checked against [`Self::ca`] if set.
    pub async fn channel(&self, port: u16) -> Channel {
        netaware_proto::client::endpoint(&self.url(port), self.ca.as_deref())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// The matrix over TLS checked against `ca` instead of [`Self::ca`].
    pub async fn matrix_with_ca(&self, ca: &std::path::Path) -> GetMatrixResponse {
        let channel = netaware_proto::client::endpoint(&self.url(self.query), Some(ca))
            .unwrap()
            .connect()
            .await
            .unwrap();
        QueryServiceClient::new(channel)
            .get_matrix(GetMatrixRequest::default())
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn matrix(&self) -> GetMatrixResponse {
        self.client()
            .await
            .get_matrix(GetMatrixRequest {
                method: ProbeMethod::Unspecified as i32,
                include_histograms: false,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// The matrix once `done` holds: queries read a snapshot that may be
    /// a quarter of a second old.
    pub async fn matrix_when(
        &self,
        done: impl Fn(&GetMatrixResponse) -> bool,
    ) -> GetMatrixResponse {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let m = self.matrix().await;
            if done(&m) || Instant::now() > deadline {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Once a recomputation has seen nodes `0..n` reporting (Place
    /// answers from the latest one); start the aggregator with a short
    /// `--recompute-interval`.
    pub async fn recomputed(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut client = query_client(self.query).await;
        for i in 0..n {
            loop {
                let fresh = client
                    .get_node(GetNodeRequest { node_name: node(i) })
                    .await
                    .is_ok_and(|r| r.into_inner().fresh);
                if fresh {
                    break;
                }
                assert!(Instant::now() < deadline, "{} not fresh in 10 s", node(i));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// The process's resident memory (KiB), from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.0.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

/// A query client of the aggregator on `port`, with the limits the CLI uses.
pub async fn query_client(port: u16) -> QueryServiceClient<Channel> {
    QueryServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap()
        .max_decoding_message_size(netaware_proto::limits::MAX_QUERY_RESPONSE_BYTES)
}

/// A fake agent: what it sends, and what the aggregator sends it.
pub struct Fake {
    pub tx: mpsc::Sender<AgentMessage>,
    pub rx: Streaming<AggregatorMessage>,
}

pub fn hello(name: &str) -> Hello {
    Hello {
        node_name: name.into(),
        probe_addresses: vec!["127.0.0.9".into()],
        stamp_port: 9999,
        software_version: "fake".into(),
        capabilities: vec![ProbeMethod::StampUdp as i32],
        protocol_version: netaware_proto::PROTOCOL_VERSION,
        instance_id: 1,
        bandwidth_port: 0,
    }
}

pub async fn connect(agg: &Aggregator, h: Hello) -> Result<Fake, tonic::Status> {
    connect_with_token(agg, h, None).await
}

/// [`connect`] presenting `token` as the bearer token, if given.
pub async fn connect_with_token(
    agg: &Aggregator,
    h: Hello,
    token: Option<&str>,
) -> Result<Fake, tonic::Status> {
    let mut client = AgentServiceClient::new(agg.channel(agg.agent).await);
    let (tx, rx) = mpsc::channel(16);
    tx.send(AgentMessage {
        msg: Some(AgentMsg::Hello(h)),
    })
    .await
    .unwrap();
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(t) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let rx = client.session(request).await?.into_inner();
    Ok(Fake { tx, rx })
}

pub fn now_us() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros(),
    )
    .unwrap()
}

/// A plausible window towards `peer` that ended `ago_s` seconds ago.
pub fn window(peer: &str, ago_s: u64) -> LinkWindow {
    let end = now_us() - ago_s * 1_000_000;
    LinkWindow {
        peer: peer.into(),
        method: ProbeMethod::StampUdp as i32,
        window_start_unix_us: end - 1_000_000,
        window_end_unix_us: end,
        sent: 10,
        received: 10,
        rtt_min_ns: 100_000,
        rtt_mean_ns: 120_000,
        rtt_p50_ns: 120_000,
        rtt_p90_ns: 150_000,
        rtt_p99_ns: 160_000,
        rtt_max_ns: 170_000,
        ..Default::default()
    }
}

impl Fake {
    pub async fn report(&self, seq: u64, windows: Vec<LinkWindow>) {
        self.tx
            .send(AgentMessage {
                msg: Some(AgentMsg::Reports(ReportBatch {
                    batch_seq: seq,
                    windows,
                    dropped_windows_total: 0,
                })),
            })
            .await
            .unwrap();
    }

    /// The next message the aggregator sends that `pick` wants.
    pub async fn expect<T>(&mut self, what: &str, mut pick: impl FnMut(AggMsg) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let m = tokio::time::timeout_at(deadline, self.rx.message())
                .await
                .unwrap_or_else(|_| panic!("no {what} within 15 s"))
                .unwrap()
                .unwrap_or_else(|| panic!("the session ended before {what}"));
            if let Some(t) = m.msg.and_then(&mut pick) {
                return t;
            }
        }
    }

    pub async fn acked(&mut self, seq: u64) {
        self.expect("an acknowledgement", |m| match m {
            AggMsg::Ack(a) if a.batch_seq == seq => Some(()),
            _ => None,
        })
        .await;
    }
}

pub fn windows_total(m: &GetMatrixResponse, src: &str, dst: &str) -> u64 {
    m.link(src, dst).map_or(0, |l| l.windows_total)
}

/// Node `i` of a mesh.
pub fn node(i: usize) -> String {
    format!("n-{i:03}")
}

/// The histogram of a real 50-probe window (about 90 bytes encoded).
pub fn histogram() -> Vec<u8> {
    let mut h = netaware_proto::histogram::new_histogram().unwrap();
    for i in 0..50u64 {
        h.record(100_000 + i * 997).unwrap();
    }
    netaware_proto::histogram::encode_histogram(&h).unwrap()
}

/// A full mesh of fake agents in zones of the given sizes: every node
/// reports one window to every other (about 100 µs inside a zone, 20 ms
/// across), with a real window's histogram, and each batch is
/// acknowledged. The sessions stay open while the returned fakes live.
pub async fn mesh(agg: &Aggregator, zones: &[usize]) -> Vec<Fake> {
    let zone_of: Vec<usize> = zones
        .iter()
        .enumerate()
        .flat_map(|(z, &size)| std::iter::repeat_n(z, size))
        .collect();
    let n = zone_of.len();
    let mut fakes = Vec::with_capacity(n);
    for i in 0..n {
        fakes.push(connect(agg, hello(&node(i))).await.unwrap());
    }
    let hist = histogram();
    for (i, fake) in fakes.iter_mut().enumerate() {
        let windows = (0..n)
            .filter(|&j| j != i)
            .map(|j| {
                let rtt = if zone_of[i] == zone_of[j] {
                    100_000 + 1_000 * ((i * 7 + j * 3) % 10) as u64
                } else {
                    20_000_000
                };
                LinkWindow {
                    rtt_min_ns: rtt,
                    rtt_mean_ns: rtt,
                    rtt_p50_ns: rtt,
                    rtt_p90_ns: rtt,
                    rtt_p99_ns: rtt,
                    rtt_max_ns: rtt,
                    rtt_histogram: hist.clone(),
                    ..window(&node(j), 2)
                }
            })
            .collect();
        fake.report(1, windows).await;
        fake.acked(1).await;
    }
    fakes
}
