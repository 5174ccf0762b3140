//! Running a lab: build the network, start the emulator, the aggregator and
//! one agent per node, collect what the agents measure, and tear it all down
//! on every exit path (success, error, Ctrl-C, panic: [`Lab`]'s `Drop`).

use std::collections::BTreeMap;
use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use netaware_proto::ProbeMethod;
use netaware_proto::v1::query_service_client::QueryServiceClient;
use netaware_proto::v1::{GetMatrixRequest, GetMatrixResponse, WatchLinksRequest};
use tonic::transport::Channel;
use tracing::{info, warn};

use crate::bench::{self, BenchOptions, BenchReport, PlacementResult};
use crate::emulator::{Emulator, Shaper, data_ip, hold_low_latency};
use crate::error::{Error, Result};
use crate::netns::{self, BRIDGE_IP, Network, ctl_ip, ns_name};
use crate::report::{self, AppliedEvent, Collector, Report, render_table};
use crate::sidecar::{PingMesh, UsageMeter};
use crate::topology::{Event, Topology};

/// The aggregator's default label prefix (the lab does not change it).
const LABEL_PREFIX: &str = "netaware.io/";
/// Port of the aggregator's agent-facing service on the control bridge.
pub const AGENT_PORT: u16 = 7400;
/// How long agents may take to connect before the run fails.
const CONNECT_DEADLINE: Duration = Duration::from_secs(30);

/// Lab settings common to `run` and `up`.
#[derive(Debug, Clone)]
pub struct Options {
    pub probe_interval: Duration,
    pub report_interval: Duration,
    pub loss_timeout: Duration,
    /// The aggregator's query API listens on 127.0.0.1:this (the CLI's default).
    pub query_port: u16,
    /// Also probe with ICMP echo.
    pub icmp: bool,
    pub agent_bin: PathBuf,
    pub aggregator_bin: PathBuf,
    /// Logs of the aggregator and every agent.
    pub log_dir: PathBuf,
    /// Seed of the emulator's loss and jitter draws.
    pub seed: u64,
    /// Run `ping` between every pair beside the agents (`run` only).
    pub ping: bool,
    /// The test-only API server double the aggregator writes labels to;
    /// `None` runs without labels.
    pub apiserver_bin: Option<PathBuf>,
    /// Bandwidth tests between agents; `None` turns them off.
    pub bandwidth: Option<BandwidthOptions>,
    /// After the run, wait until every pair's bandwidth is measured and run
    /// iperf3 on each pair the same way, for comparison (`run` only).
    pub iperf3: bool,
}

/// How the aggregator runs bandwidth tests in the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BandwidthOptions {
    pub streams: u32,
    pub omit: Duration,
    pub duration: Duration,
    /// Tests at once. 1 by default: every test goes through the one
    /// userspace emulator, and two at 800 Mbit/s would compete for its CPU.
    pub concurrency: usize,
}

/// What to do once the lab is up.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Measure for this long, then report.
    Run { duration: Duration },
    /// Show a live table until shutdown.
    Up,
    /// Measure until every pair is known, then run an MPI all-reduce on
    /// node sets chosen several ways.
    Bench(BenchOptions),
}

/// What a finished lab produced.
#[derive(Debug, Clone)]
pub enum Outcome {
    Run(Report),
    Bench(BenchReport),
}

/// Find a sibling binary (next to the running one) unless given explicitly;
/// `flag` is the option that sets it, for the error message.
pub fn find_binary(explicit: Option<PathBuf>, name: &str, flag: &str) -> Result<PathBuf> {
    let candidate = match explicit {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .map(|d| d.join(name))
            .unwrap_or_else(|| PathBuf::from(name)),
    };
    if candidate.is_file() {
        Ok(candidate)
    } else {
        Err(Error::Preflight(format!(
            "cannot find {name} at {}; build the workspace first (cargo build --workspace) or \
             pass its path with {flag}",
            candidate.display(),
        )))
    }
}

fn now_unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn log_file(dir: &Path, name: &str) -> Result<File> {
    Ok(File::create(dir.join(format!("{name}.log")))?)
}

/// A running lab. Field order matters: the emulator (which holds the TUN
/// fds) stops before the network is removed.
#[derive(Debug)]
struct Lab {
    emulator: Option<Emulator>,
    network: Network,
    /// Port of the API server double on 127.0.0.1, when labels are on.
    apiserver_port: Option<u16>,
    /// Held open while the lab runs (see `emulator::hold_low_latency`).
    _low_latency: Option<File>,
}

impl Lab {
    fn teardown(&mut self) {
        if let Some(mut e) = self.emulator.take() {
            e.stop();
        }
        self.network.teardown();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Methods the lab's agents probe with.
pub fn methods(opts: &Options) -> Vec<ProbeMethod> {
    if opts.icmp {
        vec![ProbeMethod::StampUdp, ProbeMethod::IcmpEcho]
    } else {
        vec![ProbeMethod::StampUdp]
    }
}

fn start(topo: &Topology, opts: &Options) -> Result<Lab> {
    std::fs::create_dir_all(&opts.log_dir)?;
    let mut lab = Lab {
        emulator: None,
        apiserver_port: None,
        network: Network::build(topo)?,
        _low_latency: hold_low_latency(),
    };
    lab.emulator = Some(Emulator::start(
        lab.network.tun_devices(),
        Shaper::new(topo, opts.seed),
    )?);

    let ms = |d: Duration| format!("{}ms", d.as_millis());
    let stale = opts.report_interval * 3 + opts.loss_timeout;
    let mut kube_args: Vec<String> = vec!["--kubernetes".into(), "off".into()];
    if let Some(bin) = &opts.apiserver_bin {
        let port_file = opts.log_dir.join("apiserver.port");
        let kubeconfig = opts.log_dir.join("kubeconfig");
        let _ = std::fs::remove_file(&port_file);
        let names: Vec<&str> = topo.nodes.iter().map(|n| n.name.as_str()).collect();
        let child = Command::new(bin)
            .arg("--nodes")
            .arg(names.join(","))
            .arg("--port-file")
            .arg(&port_file)
            .arg("--kubeconfig-out")
            .arg(&kubeconfig)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&opts.log_dir, "apiserver")?)
            .spawn()
            .map_err(|e| Error::Run(format!("cannot start {}: {e}", bin.display())))?;
        lab.network.adopt(netns::APISERVER, child);
        let port = wait_for_file(&port_file, Duration::from_secs(10))?;
        lab.apiserver_port = port.trim().parse().ok();
        kube_args = vec![
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            // The lab recomputes every report interval; a short resync keeps
            // the demo honest if the double restarts.
            "--resync".into(),
            "5m".into(),
        ];
    }
    let aggregator = Command::new(&opts.aggregator_bin)
        .args([
            "--agent-listen",
            &format!("{BRIDGE_IP}:{AGENT_PORT}"),
            "--query-listen",
            &format!("127.0.0.1:{}", opts.query_port),
            "--probe-interval",
            &format!("{}us", opts.probe_interval.as_micros()),
            "--report-interval",
            &ms(opts.report_interval),
            "--loss-timeout",
            &ms(opts.loss_timeout),
            "--stale-after",
            &ms(stale),
            "--recompute-interval",
            &ms(opts.report_interval),
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .args(&kube_args)
        .args(bandwidth_args(opts.bandwidth))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file(&opts.log_dir, "aggregator")?)
        .spawn()
        .map_err(|e| {
            Error::Run(format!(
                "cannot start {}: {e}",
                opts.aggregator_bin.display()
            ))
        })?;
    lab.network.adopt(netns::AGGREGATOR, aggregator);

    for (i, node) in topo.nodes.iter().enumerate() {
        let ns = ns_name(&node.name);
        let ip = data_ip(i).to_string();
        // Each node gets its own UTS namespace so `hostname` says the node's name.
        let child = Command::new("ip")
            .args(["netns", "exec", &ns, "unshare", "--uts", "sh", "-c"])
            .arg("hostname \"$0\" && exec \"$@\"")
            .arg(&node.name)
            .arg(&opts.agent_bin)
            .args([
                "--node-name",
                &node.name,
                "--node-ip",
                &ip,
                "--stamp-bind",
                &ip,
                "--aggregator",
                &format!("http://{BRIDGE_IP}:{AGENT_PORT}"),
                "--icmp",
                if opts.icmp { "true" } else { "false" },
                "--backoff-max",
                "2s",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&opts.log_dir, &node.name)?)
            .spawn()
            .map_err(|e| Error::Run(format!("cannot start the agent of {}: {e}", node.name)))?;
        lab.network.adopt(&node.name, child);
        info!(node = %node.name, ns = %ns, data = %ip, control = %ctl_ip(i), "agent started");
    }
    Ok(lab)
}

/// Wait until every directed pair has smoothed UDP figures from at least
/// two windows.
async fn wait_rtt(
    lab: &mut Lab,
    client: &mut QueryServiceClient<Channel>,
    topo: &Topology,
    opts: &Options,
) -> Result<()> {
    let n = topo.nodes.len();
    let deadline = tokio::time::Instant::now() + opts.report_interval * 10 + CONNECT_DEADLINE;
    let polled = poll_matrix(
        lab,
        client,
        opts,
        deadline,
        Duration::from_millis(500),
        |m| {
            let have = m
                .links
                .iter()
                .filter(|l| l.method == ProbeMethod::StampUdp as i32 && l.windows_total >= 2)
                .count();
            if have >= n * (n - 1) {
                Ok(())
            } else {
                Err(have)
            }
        },
    )
    .await?;
    polled.map_err(|have| {
        Error::Run(format!(
            "only {have} of {} directed pairs measured in time; see the logs in {}",
            n * (n - 1),
            opts.log_dir.display()
        ))
    })
}

/// Poll the matrix every `every` until `progress` says done (`Ok`) or
/// `deadline` passes, which returns `progress`'s last `Err` (what is still
/// missing). The lab's processes are checked between polls.
async fn poll_matrix<T, E>(
    lab: &mut Lab,
    client: &mut QueryServiceClient<Channel>,
    opts: &Options,
    deadline: tokio::time::Instant,
    every: Duration,
    mut progress: impl FnMut(GetMatrixResponse) -> std::result::Result<T, E>,
) -> Result<std::result::Result<T, E>> {
    loop {
        match progress(matrix(client).await?) {
            Ok(done) => return Ok(Ok(done)),
            Err(missing) if tokio::time::Instant::now() >= deadline => return Ok(Err(missing)),
            Err(_) => {}
        }
        check_children(lab, opts)?;
        tokio::time::sleep(every).await;
    }
}

/// The `bench` mode: measure, place several ways, run MPI on each set.
async fn bench_mode(
    lab: &mut Lab,
    client: &mut QueryServiceClient<Channel>,
    topo: &Topology,
    opts: &Options,
    b: &BenchOptions,
) -> Result<BenchReport> {
    let started = tokio::time::Instant::now();
    eprintln!(
        "measuring {} nodes (at least {}{})...",
        topo.nodes.len(),
        human(b.settle),
        if opts.bandwidth.is_some() {
            ", and until every pair's bandwidth is tested"
        } else {
            ""
        }
    );
    wait_rtt(lab, client, topo, opts).await?;
    if let Some(bw) = opts.bandwidth {
        wait_bandwidth(lab, client, topo, opts, bw).await?;
    }
    while tokio::time::Instant::now() < started + b.settle {
        check_children(lab, opts)?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Two more recomputations, so groups and quality include everything.
    tokio::time::sleep(opts.report_interval * 2).await;

    let m = matrix(client).await?;
    let mut names: Vec<String> = topo.nodes.iter().map(|n| n.name.clone()).collect();
    names.sort();
    let placed = client
        .place(netaware_proto::v1::PlaceRequest {
            k: u32::try_from(b.k).unwrap_or(u32::MAX),
            allreduce_bytes: b.bytes,
            ..Default::default()
        })
        .await?
        .into_inner();
    let by_index = |set: Vec<usize>| -> Vec<String> {
        set.into_iter()
            .map(|i| topo.nodes[i].name.clone())
            .collect()
    };
    let mut sets: Vec<(&str, Vec<String>, Option<f64>)> = vec![
        (
            "netaware",
            placed.nodes.clone(),
            (placed.predicted_allreduce_ms > 0.0).then_some(placed.predicted_allreduce_ms),
        ),
        ("latency-only", bench::latency_only(&m, &names, b.k)?, None),
        ("spread", by_index(bench::spread(topo, b.k)), None),
        (
            "random",
            by_index(bench::random(topo.nodes.len(), b.k, b.seed)),
            None,
        ),
    ];
    if let Some(best) = bench::optimal(topo, b.k) {
        sets.push(("optimal", by_index(best), None));
    }
    let (program, launcher) = bench::prepare(&opts.log_dir.join("bench"))?;
    let mut results: Vec<PlacementResult> = Vec::new();
    for (name, mut nodes, predicted_ms) in sets {
        nodes.sort();
        eprintln!("all-reduce on {name}: {}", nodes.join(" "));
        let idx: Vec<usize> = nodes.iter().filter_map(|n| topo.index_of(n)).collect();
        let (o, p, l, ns) = (b.clone(), program.clone(), launcher.clone(), nodes.clone());
        let times = tokio::task::spawn_blocking(move || bench::run_mpi(&ns, &o, &p, &l))
            .await
            .map_err(|e| Error::Run(format!("mpirun task failed: {e}")))??;
        check_children(lab, opts)?;
        let (p50, p90) = bench::percentiles(&times);
        results.push(PlacementResult {
            name: name.to_string(),
            configured: bench::configured(topo, &idx),
            nodes,
            iter_ms_p50: p50,
            iter_ms_p90: p90,
            ratio_to_netaware: None,
            predicted_ms,
            iter_ms: times,
        });
    }
    let ours = results.first().map(|r| r.iter_ms_p50);
    for r in &mut results {
        r.ratio_to_netaware = ours.filter(|o| *o > 0.0).map(|o| r.iter_ms_p50 / o);
    }
    Ok(BenchReport {
        topology: topo.name.clone(),
        k: b.k,
        bytes: b.bytes,
        iters: b.iters,
        algorithm: b.algorithm,
        seed: b.seed,
        placements: results,
    })
}

/// Run iperf3 on every measured pair, one after another, and attach it.
async fn compare_iperf3(
    topo: &Topology,
    rows: &mut [report::BandwidthReport],
    b: BandwidthOptions,
) -> Result<()> {
    for row in rows.iter_mut() {
        let (Some(i), Some(j)) = (topo.index_of(&row.sender), topo.index_of(&row.receiver)) else {
            continue;
        };
        let t = topo.clone();
        let mbps = tokio::task::spawn_blocking(move || {
            crate::sidecar::iperf3(&t, i, j, b.streams, b.omit.as_secs(), b.duration.as_secs())
        })
        .await
        .map_err(|e| Error::Run(format!("iperf3 task failed: {e}")))??;
        row.iperf3_mbps = Some(mbps);
        row.to_iperf3 = Some(row.measured_mbps / mbps);
    }
    Ok(())
}

fn bandwidth_args(b: Option<BandwidthOptions>) -> Vec<String> {
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    match b {
        None => vec!["--bandwidth-tests".into(), "false".into()],
        Some(b) => vec![
            "--bandwidth-tests".into(),
            "true".into(),
            "--bandwidth-streams".into(),
            b.streams.to_string(),
            "--bandwidth-omit".into(),
            ms(b.omit),
            "--bandwidth-duration".into(),
            ms(b.duration),
            "--bandwidth-concurrency".into(),
            b.concurrency.to_string(),
        ],
    }
}

/// Wait until every unordered pair has a bandwidth result (or a deadline
/// sized for the number of tests), then return the latest results.
async fn wait_bandwidth(
    lab: &mut Lab,
    client: &mut QueryServiceClient<Channel>,
    topo: &Topology,
    opts: &Options,
    b: BandwidthOptions,
) -> Result<Vec<netaware_proto::v1::BandwidthState>> {
    let n = topo.nodes.len();
    let pairs = n * (n - 1) / 2;
    let per_test = b.omit + b.duration + Duration::from_secs(3);
    let rounds = u32::try_from(pairs.div_ceil(b.concurrency.max(1))).unwrap_or(u32::MAX);
    let deadline = tokio::time::Instant::now() + per_test * rounds + Duration::from_secs(30);
    let polled = poll_matrix(
        lab,
        client,
        opts,
        deadline,
        Duration::from_millis(500),
        |m| {
            let covered: std::collections::BTreeSet<(String, String)> = m
                .bandwidth
                .iter()
                .map(|s| {
                    if s.sender < s.receiver {
                        (s.sender.clone(), s.receiver.clone())
                    } else {
                        (s.receiver.clone(), s.sender.clone())
                    }
                })
                .collect();
            if covered.len() >= pairs {
                Ok(m.bandwidth)
            } else {
                Err((covered.len(), m.bandwidth))
            }
        },
    )
    .await?;
    Ok(polled.unwrap_or_else(|(measured, bandwidth)| {
        warn!(
            measured,
            pairs, "not every pair's bandwidth was measured in time; comparing those that were"
        );
        bandwidth
    }))
}

fn check_children(lab: &mut Lab, opts: &Options) -> Result<()> {
    let exited = lab.network.exited_children();
    if exited.is_empty() {
        return Ok(());
    }
    Err(Error::Run(format!(
        "exited unexpectedly: {}; see the logs in {}",
        exited.join(", "),
        opts.log_dir.display()
    )))
}

async fn connect_query(lab: &mut Lab, opts: &Options) -> Result<QueryServiceClient<Channel>> {
    let url = format!("http://127.0.0.1:{}", opts.query_port);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tonic::transport::Endpoint::from_shared(url.clone())?
            .connect()
            .await
        {
            Ok(ch) => return Ok(QueryServiceClient::new(ch)),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(Error::Run(format!(
                    "the aggregator's query API at {url} did not come up: {e}; see {}",
                    opts.log_dir.join("aggregator.log").display()
                )));
            }
            Err(_) => {
                check_children(lab, opts)?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn matrix(client: &mut QueryServiceClient<Channel>) -> Result<GetMatrixResponse> {
    Ok(client
        .get_matrix(GetMatrixRequest {
            method: ProbeMethod::Unspecified as i32,
        })
        .await?
        .into_inner())
}

async fn wait_connected(
    lab: &mut Lab,
    client: &mut QueryServiceClient<Channel>,
    topo: &Topology,
    opts: &Options,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + CONNECT_DEADLINE;
    let polled = poll_matrix(
        lab,
        client,
        opts,
        deadline,
        Duration::from_millis(200),
        |m| {
            let missing: Vec<&str> = topo
                .nodes
                .iter()
                .map(|n| n.name.as_str())
                .filter(|n| !m.nodes.iter().any(|s| s.node_name == *n && s.connected))
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(missing)
            }
        },
    )
    .await?;
    polled.map_err(|missing| {
        Error::Run(format!(
            "agents not connected after {}: {}; see their logs in {}",
            human(CONNECT_DEADLINE),
            missing.join(", "),
            opts.log_dir.display()
        ))
    })
}

/// Build the lab, run `mode`, tear everything down. Returns the report of a
/// `Run` or `Bench`, `None` for `Up` (or when `shutdown` fired).
pub async fn execute(
    topo: &Topology,
    opts: &Options,
    mode: Mode,
    shutdown: impl Future<Output = ()>,
) -> Result<Option<Outcome>> {
    netns::preflight()?;
    netns::clean_leftovers()?;
    let mut lab = start(topo, opts)?;
    tokio::pin!(shutdown);
    let outcome = tokio::select! {
        r = drive(&mut lab, topo, opts, mode) => r,
        _ = &mut shutdown => {
            warn!("interrupted; tearing the lab down");
            Ok(None)
        }
    };
    if let Some(e) = lab.emulator.as_ref() {
        let c = e.counters();
        info!(
            forwarded = c.forwarded.load(std::sync::atomic::Ordering::Relaxed),
            dropped = c.dropped.load(std::sync::atomic::Ordering::Relaxed),
            "emulator totals"
        );
        if let Some(l) = e.lateness() {
            info!(
                p50_us = l.p50_us,
                p99_us = l.p99_us,
                max_us = l.max_us,
                over_1ms = l.over_1ms,
                packets = l.packets,
                "emulator delivery lateness"
            );
        }
    }
    let lateness = lab.emulator.as_ref().and_then(Emulator::lateness);
    lab.teardown();
    outcome.map(|r| {
        r.map(|mut o| {
            if let Outcome::Run(r) = &mut o {
                r.emulator = lateness;
            }
            o
        })
    })
}

/// Wait until `path` exists and has content; return it.
fn wait_for_file(path: &Path, timeout: Duration) -> Result<String> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && !s.trim().is_empty()
        {
            return Ok(s);
        }
        if std::time::Instant::now() >= deadline {
            return Err(Error::Run(format!(
                "{} did not appear within {}",
                path.display(),
                human(timeout)
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The labels under `prefix` of every Node in the API server double.
fn read_labels(port: u16, prefix: &str) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /api/v1/nodes HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .ok_or_else(|| Error::Run("the API server double sent no body".into()))?;
    let list: serde_json::Value = serde_json::from_str(body)?;
    let mut out = BTreeMap::new();
    for item in list["items"].as_array().into_iter().flatten() {
        let Some(name) = item["metadata"]["name"].as_str() else {
            continue;
        };
        let labels: BTreeMap<String, String> = item["metadata"]["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.starts_with(prefix))
            .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
            .collect();
        out.insert(name.to_string(), labels);
    }
    Ok(out)
}

/// Apply one topology event: emulator parameters at once, bandwidth caps via tc.
fn apply_event(lab: &Lab, topo: &Topology, ev: &Event) -> Result<AppliedEvent> {
    for (src, dst, p) in &ev.changes {
        if let Some(e) = lab.emulator.as_ref() {
            e.set_link(*src, *dst, *p);
        }
        if let Some(bw) = p.bandwidth_mbps
            && topo.link(*src, *dst).bandwidth_mbps.is_some()
        {
            lab.network.set_bandwidth(topo, *src, *dst, bw)?;
        }
    }
    info!(
        at_s = ev.at_s,
        links = ev.changes.len(),
        "topology event applied"
    );
    Ok(AppliedEvent {
        at_s: ev.at_s,
        applied_unix_us: now_unix_us(),
        links: ev.changes.len(),
    })
}

/// Topology events in time order, relative to when measuring started.
#[derive(Debug)]
struct EventSchedule<'a> {
    events: &'a [Event],
    start: tokio::time::Instant,
    next: usize,
}

impl<'a> EventSchedule<'a> {
    fn new(topo: &'a Topology) -> Self {
        Self {
            events: &topo.events,
            start: tokio::time::Instant::now(),
            next: 0,
        }
    }

    fn pending(&self) -> bool {
        self.next < self.events.len()
    }

    /// When the next event is due (far away when none is left; the select
    /// branch is disabled by `pending` then).
    fn due(&self) -> tokio::time::Instant {
        match self.events.get(self.next) {
            Some(e) => self.start + Duration::from_secs_f64(e.at_s),
            None => self.start + Duration::from_secs(86_400 * 365),
        }
    }

    /// Apply the next event.
    fn fire(&mut self, lab: &Lab, topo: &Topology) -> Result<AppliedEvent> {
        let applied = apply_event(lab, topo, &self.events[self.next])?;
        self.next += 1;
        Ok(applied)
    }
}

async fn drive(
    lab: &mut Lab,
    topo: &Topology,
    opts: &Options,
    mode: Mode,
) -> Result<Option<Outcome>> {
    let mut client = connect_query(lab, opts).await?;
    wait_connected(lab, &mut client, topo, opts).await?;
    info!(nodes = topo.nodes.len(), "all agents connected");

    match mode {
        Mode::Run { duration } => {
            let mut watch = client
                .watch_links(WatchLinksRequest {
                    method: ProbeMethod::Unspecified as i32,
                    send_initial: false,
                })
                .await?
                .into_inner();
            // Windows that began before every agent had its plan are partial: skip them.
            let from = now_unix_us();
            let to = from + u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
            let mut collector = Collector::new(from, to);
            // The last window starting before `to` ends one report interval
            // later and is sent after the loss timeout and a flush.
            let grace = opts.report_interval + opts.loss_timeout + Duration::from_secs(2);
            let until = tokio::time::Instant::now() + duration + grace;
            eprintln!(
                "measuring {} nodes for {} (results about {} later)...",
                topo.nodes.len(),
                human(duration),
                human(grace)
            );
            let pings = if opts.ping {
                Some(PingMesh::start(topo, opts.probe_interval, duration)?)
            } else {
                None
            };
            let mut usage = Some(UsageMeter::start(lab.network.agent_pids()));
            let measure_end = tokio::time::Instant::now() + duration;
            let mut agents = Vec::new();
            let mut health = tokio::time::interval(Duration::from_secs(1));
            let mut labels_seen: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
            let mut label_changes = Vec::new();
            let mut events = EventSchedule::new(topo);
            let mut applied = Vec::new();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => break,
                    _ = tokio::time::sleep_until(events.due()), if events.pending() => {
                        applied.push(events.fire(lab, topo)?);
                    }
                    _ = health.tick() => {
                        check_children(lab, opts)?;
                        if let Some(port) = lab.apiserver_port {
                            // Sampled once a second: convergence times are within a second.
                            match read_labels(port, LABEL_PREFIX) {
                                Ok(now) => {
                                    label_changes.extend(report::label_changes(&labels_seen, &now, now_unix_us()));
                                    labels_seen = now;
                                }
                                Err(e) => warn!(error = %e, "cannot read labels from the API double"),
                            }
                        }
                        if let Some(u) = usage.as_mut() {
                            u.sample();
                        }
                        if tokio::time::Instant::now() >= measure_end
                            && let Some(u) = usage.take()
                        {
                            agents = u.finish();
                        }
                    }
                    m = watch.message() => match m? {
                        Some(update) => {
                            if let Some(link) = update.link
                                && let Some(w) = link.latest.as_ref()
                            {
                                if link.disturbed {
                                    collector.skip_disturbed(w);
                                } else {
                                    collector.add(&link.src, w)?;
                                }
                            }
                        }
                        None => return Err(Error::Run("the aggregator ended the link watch".into())),
                    },
                }
            }
            let mut report = collector.report(topo, duration.as_secs_f64(), &methods(opts));
            // Labels as the measuring period left them: the iperf3
            // comparison below loads links the aggregator does not know of.
            if let Some(port) = lab.apiserver_port {
                report.labels = read_labels(port, LABEL_PREFIX)?;
                report.label_changes = label_changes;
            }
            let bandwidth = match (opts.iperf3, opts.bandwidth) {
                (true, Some(b)) => {
                    eprintln!(
                        "waiting until every pair's bandwidth is measured, then running iperf3 on each..."
                    );
                    wait_bandwidth(lab, &mut client, topo, opts, b).await?
                }
                _ => matrix(&mut client).await?.bandwidth,
            };
            report.bandwidth = report::bandwidth_report(topo, &bandwidth);
            if let (true, Some(b)) = (opts.iperf3, opts.bandwidth) {
                compare_iperf3(topo, &mut report.bandwidth, b).await?;
            }
            report.agents = agents;
            report.events = applied;
            if let Some(p) = pings {
                let results = tokio::task::spawn_blocking(move || p.finish())
                    .await
                    .map_err(|e| Error::Run(format!("ping collection failed: {e}")))??;
                report.attach_ping(&results);
            }
            Ok(Some(Outcome::Run(report)))
        }
        Mode::Bench(b) => bench_mode(lab, &mut client, topo, opts, &b)
            .await
            .map(|r| Some(Outcome::Bench(r))),
        Mode::Up => {
            let mut tick = tokio::time::interval(opts.report_interval);
            let mut events = EventSchedule::new(topo);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = tokio::time::sleep_until(events.due()), if events.pending() => {
                        events.fire(lab, topo)?;
                        continue;
                    }
                }
                check_children(lab, opts)?;
                let m = matrix(&mut client).await?;
                let mut c = Collector::new(0, u64::MAX);
                for l in &m.links {
                    if let Some(w) = l.latest.as_ref() {
                        c.add(&l.src, w)?;
                    }
                }
                let r = c.report(topo, opts.report_interval.as_secs_f64(), &methods(opts));
                // Clear the screen and redraw: a live table.
                netaware_common::print_stdout(&format!(
                    "\x1b[2J\x1b[Hnetaware-lab up: {} ({} nodes) — latest {} window per link; Ctrl-C to stop\n\
                     query API: http://127.0.0.1:{} (try: netaware matrix)\n\n{}",
                    topo.name,
                    topo.nodes.len(),
                    human(opts.report_interval),
                    opts.query_port,
                    render_table(&r)
                ));
            }
        }
    }
}
