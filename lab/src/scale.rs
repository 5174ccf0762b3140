//! `netaware-lab scale`: the real aggregator process and N simulated agents
//! on loopback, no root and no network emulation. The agents answer the
//! plans they are given with windows drawn from a synthetic network
//! ([`truth`]); the run then measures what the issue asks of a large
//! cluster: the aggregator's CPU and memory, plan sizes, how fast labels
//! converge and whether they find the racks, pods and regions, whether the
//! degraded nodes stand out, query latencies under load, how fast a joining
//! node gets a plan and labels, and how many Node writes the steady state
//! costs. Labels are read from the aggregator's `--dry-run` output, which
//! is exactly what it would send to the API server.

pub mod ari;
mod fleet;
mod published;
mod report;
pub mod truth;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use tokio::io::BufReader;
use tonic::transport::Channel;

use netaware_proto::v1::query_service_client::QueryServiceClient;
use netaware_proto::v1::{GetMatrixRequest, GetNodeRequest, PlaceRequest};

use crate::{Error, Result};
use fleet::Fleet;
use published::Published;
pub use report::{
    Degraded, Fault, Groups, Join, Queries, Sample, ScaleReport, Targets, Usage, render,
};
use truth::Truth;

/// What a scale run is asked to do.
#[derive(Debug, Clone)]
pub struct ScaleOptions {
    pub nodes: usize,
    pub duration: Duration,
    pub seed: u64,
    pub aggregator_bin: PathBuf,
    /// The aggregator's log goes here.
    pub log_dir: PathBuf,
    /// Window length of the simulated agents (the aggregator's
    /// `--report-interval` and `--recompute-interval` are set to it).
    pub report_interval: Duration,
    pub probe_interval: Duration,
    /// Placement sizes to time.
    pub place_k: Vec<u32>,
    /// More aggregator flags (e.g. a probe-target bound).
    pub aggregator_args: Vec<String>,
}

/// The label keys the run reads (default prefix).
const PREFIX: &str = netaware_model::labels::DEFAULT_PREFIX;
/// ARI every level must reach for the labels to count as converged.
const CONVERGED_ARI: f64 = 0.99;
/// How often the labels are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// A degraded node must be this many quality points below its group's
/// median (and the lowest of its group) to count as found.
const STANDS_OUT_BY: i64 = 10;
/// Place calls per k and GetNode calls, for the percentiles.
const PLACE_CALLS: usize = 10;
const GET_NODE_CALLS: usize = 200;

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// CPU seconds (user + system) and RSS (MiB) of a process, from /proc.
/// /proc/PID/stat counts in USER_HZ, which the kernel ABI fixes at 100.
fn sample_proc(pid: &str) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((ticks / 100.0, rss_kib / 1024.0))
}

/// Samples a process's CPU and RSS once a second until stopped.
struct Sampler {
    pid: String,
    start: Option<(Instant, f64)>,
    last: Option<(Instant, f64)>,
    rss_max: f64,
    rss: f64,
}

impl Sampler {
    fn new(pid: String) -> Self {
        Self {
            pid,
            start: None,
            last: None,
            rss_max: 0.0,
            rss: 0.0,
        }
    }

    fn sample(&mut self) {
        if let Some((cpu, rss)) = sample_proc(&self.pid) {
            let now = Instant::now();
            self.start.get_or_insert((now, cpu));
            self.last = Some((now, cpu));
            self.rss_max = self.rss_max.max(rss);
            self.rss = rss;
        }
    }

    fn usage(&self) -> Usage {
        let cpu = match (self.start, self.last) {
            (Some((t0, c0)), Some((t1, c1))) if t1 > t0 => {
                (c1 - c0) / t1.duration_since(t0).as_secs_f64()
            }
            _ => 0.0,
        };
        Usage {
            cpu_cores_mean: cpu,
            rss_max_mib: self.rss_max,
        }
    }
}

/// Nearest-rank percentile of `v` (sorted here), in the same unit.
fn percentile(v: &mut [f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// A node's labelled group ids, if it has all three.
fn groups_of(labels: &BTreeMap<String, String>) -> Option<[&str; 3]> {
    let g = |l: u32| {
        labels
            .get(&format!("{PREFIX}group-l{l}"))
            .map(String::as_str)
    };
    Some([g(1)?, g(2)?, g(3)?])
}

fn quality_of(labels: &BTreeMap<String, String>) -> Option<i64> {
    labels.get(&format!("{PREFIX}quality"))?.parse().ok()
}

/// ARI of each labelled level against the truth, over the first `n` nodes;
/// a node without labels counts as a group of its own.
fn score(
    truth: &Truth,
    n: usize,
    labels: &HashMap<String, BTreeMap<String, String>>,
) -> ([f64; 3], usize) {
    let mut found: [Vec<String>; 3] = Default::default();
    let mut want: [Vec<u32>; 3] = Default::default();
    let mut labelled = 0;
    for (i, node) in truth.nodes().iter().take(n).enumerate() {
        let l = labels.get(&node.name);
        let g = l.and_then(groups_of);
        if g.is_some() && l.and_then(quality_of).is_some() {
            labelled += 1;
        }
        for level in 0..3 {
            found[level].push(g.map_or_else(|| format!("none-{i}"), |g| g[level].to_string()));
            want[level].push(node.levels[level]);
        }
    }
    let ari = [0, 1, 2].map(|l| ari::adjusted_rand_index(&want[l], &found[l]));
    (ari, labelled)
}

/// Degraded nodes found: the lowest quality of their labelled l2 group and
/// [`STANDS_OUT_BY`] below its median; healthy nodes that stand out the
/// same way are false finds.
fn degraded(
    truth: &Truth,
    n: usize,
    labels: &HashMap<String, BTreeMap<String, String>>,
) -> Degraded {
    let mut by_group: HashMap<&str, Vec<(i64, usize)>> = HashMap::new();
    for (i, node) in truth.nodes().iter().take(n).enumerate() {
        if let Some(l) = labels.get(&node.name)
            && let (Some(g), Some(q)) = (groups_of(l), quality_of(l))
        {
            by_group.entry(g[1]).or_default().push((q, i));
        }
    }
    let mut out = Degraded {
        of: (0..n).filter(|&i| truth.is_degraded(i)).count(),
        ..Default::default()
    };
    for members in by_group.values_mut() {
        members.sort();
        let median = members[members.len() / 2].0;
        let (lowest, i) = members[0];
        if members.len() > 1 && median - lowest >= STANDS_OUT_BY {
            if truth.is_degraded(i) {
                out.found += 1;
            } else {
                out.false_ += 1;
            }
        }
    }
    out
}

/// Whether `node`'s quality is the lowest of its labelled l2 group (and
/// the group has others).
fn lowest_of_group(labels: &HashMap<String, BTreeMap<String, String>>, node: &str) -> bool {
    let Some(mine) = labels.get(node) else {
        return false;
    };
    let (Some(g), Some(q)) = (groups_of(mine), quality_of(mine)) else {
        return false;
    };
    let peers: Vec<i64> = labels
        .iter()
        .filter(|(name, l)| name.as_str() != node && groups_of(l).is_some_and(|h| h[1] == g[1]))
        .filter_map(|(_, l)| quality_of(l))
        .collect();
    !peers.is_empty() && peers.iter().all(|&p| p > q)
}

/// A write's label changes: label (without the prefix), from, to.
fn label_changes(w: &published::Write) -> impl Iterator<Item = (String, String, String)> + '_ {
    w.changed.iter().zip(&w.was).map(|(k, (from, to))| {
        (
            k.trim_start_matches(PREFIX).to_string(),
            from.clone(),
            to.clone(),
        )
    })
}

/// Label changes listed in the report (steady, and others' after the
/// fault), to see what moved.
const STEADY_SAMPLE: usize = 20;
/// Recomputations after convergence before the steady state is counted:
/// group hysteresis (3) and a confirmed figure change (2), and one more.
const SETTLE_RECOMPUTATIONS: f64 = 6.0;

/// Links per GetMatrix page, as the CLI asks.
const MATRIX_PAGE: u32 = 20_000;

/// Time the queries a user and a scheduler would send, under the agents'
/// load: GetNode in a loop while Place runs for each k, then the whole
/// matrix in pages.
async fn time_queries(
    client: &QueryServiceClient<Channel>,
    truth: &Truth,
    n: usize,
    place_k: &[u32],
    seed: u64,
) -> Queries {
    let mut q = Queries::default();
    let get_nodes = {
        let client = client.clone();
        let names: Vec<String> = {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            (0..GET_NODE_CALLS)
                .map(|_| truth.nodes()[rng.random_range(0..n)].name.clone())
                .collect()
        };
        tokio::spawn(async move {
            let mut ms = Vec::new();
            let mut error = None;
            for name in names {
                let t = Instant::now();
                match client
                    .clone()
                    .get_node(GetNodeRequest { node_name: name })
                    .await
                {
                    Ok(_) => ms.push(t.elapsed().as_secs_f64() * 1e3),
                    Err(e) => {
                        error.get_or_insert(e.message().to_string());
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ms, error)
        })
    };
    for &k in place_k.iter().filter(|&&k| k as usize <= n) {
        let mut ms = Vec::new();
        for _ in 0..PLACE_CALLS {
            let t = Instant::now();
            let r = client
                .clone()
                .place(PlaceRequest {
                    k,
                    ..Default::default()
                })
                .await;
            match r {
                Ok(_) => ms.push(t.elapsed().as_secs_f64() * 1e3),
                Err(e) => {
                    q.errors
                        .entry(format!("place_{k}"))
                        .or_insert_with(|| e.message().to_string());
                }
            }
        }
        if let Some(p) = percentile(&mut ms, 99.0) {
            q.place_ms_p99.insert(k.to_string(), p);
        }
    }
    if let Ok((mut ms, error)) = get_nodes.await {
        q.get_node_calls = ms.len();
        q.get_node_ms_p99 = percentile(&mut ms, 99.0);
        if let Some(e) = error {
            q.errors.insert("get_node".into(), e);
        }
    }
    // The whole matrix as `netaware matrix --full` fetches it: in pages.
    let t = Instant::now();
    let mut request = GetMatrixRequest {
        page_size: MATRIX_PAGE,
        ..Default::default()
    };
    let (mut bytes, mut pages) = (0, 0);
    loop {
        match client.clone().get_matrix(request.clone()).await {
            Ok(r) => {
                let r = r.into_inner();
                bytes += prost::Message::encoded_len(&r);
                pages += 1;
                if r.next_page_token.is_empty() {
                    q.get_matrix_ms = Some(t.elapsed().as_secs_f64() * 1e3);
                    q.get_matrix_bytes = Some(bytes);
                    q.get_matrix_pages = Some(pages);
                    break;
                }
                request.page_token = r.next_page_token;
            }
            Err(e) => {
                q.errors
                    .insert("get_matrix".into(), e.message().to_string());
                break;
            }
        }
    }
    q
}

/// Run the aggregator and `opts.nodes` simulated agents for
/// `opts.duration`; one more node joins at 70 % of it.
pub async fn run(opts: &ScaleOptions) -> Result<ScaleReport> {
    if opts.nodes < 2 {
        return Err(Error::Preflight("--nodes must be at least 2".into()));
    }
    let n = opts.nodes;
    let truth = Arc::new(Truth::generate(n + 1, opts.seed));
    std::fs::create_dir_all(&opts.log_dir)?;
    let (agent_port, query_port) = (free_port()?, free_port()?);
    let interval = format!("{}ms", opts.report_interval.as_millis());
    let mut aggregator = tokio::process::Command::new(&opts.aggregator_bin)
        .args(["--agent-listen", &format!("127.0.0.1:{agent_port}")])
        .args(["--query-listen", &format!("127.0.0.1:{query_port}")])
        .args(["--metrics-listen", "127.0.0.1:0"])
        // A loopback benchmark with no API server: no TLS, no tokens, and
        // labels printed instead of written.
        .args([
            "--agent-auth",
            "none",
            "--query-auth",
            "none",
            "--tls",
            "false",
        ])
        .args([
            "--kubernetes",
            "off",
            "--dry-run",
            "--bandwidth-tests",
            "false",
        ])
        .args(["--group-thresholds", truth::THRESHOLDS])
        .args([
            "--report-interval",
            &interval,
            "--recompute-interval",
            &interval,
        ])
        .args([
            "--probe-interval",
            &format!("{}us", opts.probe_interval.as_micros()),
        ])
        .args(&opts.aggregator_args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(opts.log_dir.join("aggregator.log"))?)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            Error::Preflight(format!(
                "cannot start {}: {e}",
                opts.aggregator_bin.display()
            ))
        })?;
    let pid = aggregator.id().map(|p| p.to_string()).unwrap_or_default();
    let published = Arc::new(Mutex::new(Published::default()));
    if let Some(out) = aggregator.stdout.take() {
        tokio::spawn(published::follow(BufReader::new(out), published.clone()));
    }
    // The query port answers once the aggregator is up.
    let query_url = format!("http://127.0.0.1:{query_port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = loop {
        // Connected (TCP and HTTP/2) is up: ListGroups would say
        // "unavailable" until the first agents report.
        if let Ok(c) = QueryServiceClient::connect(query_url.clone()).await {
            break c;
        }
        if let Ok(Some(status)) = aggregator.try_wait() {
            return Err(Error::Run(format!(
                "the aggregator exited ({status}); see {}",
                opts.log_dir.join("aggregator.log").display()
            )));
        }
        if Instant::now() > deadline {
            return Err(Error::Run(
                "the aggregator did not answer within 30 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // Where to look while it runs (netaware matrix, netaware ui).
    tracing::info!(query = %query_url, "the aggregator's query API (no TLS, no token)");
    let started = Instant::now();
    let mut agg_usage = Sampler::new(pid);
    let mut sim_usage = Sampler::new("self".into());
    agg_usage.sample();
    sim_usage.sample();
    let mut fleet = Fleet::new(
        &format!("http://127.0.0.1:{agent_port}"),
        opts.report_interval,
        opts.probe_interval,
        opts.seed,
    )
    .map_err(Error::Run)?;
    for i in 0..n {
        fleet.start(&truth, i);
    }
    let fault_at = opts.duration.mul_f64(0.5);
    let join_at = opts.duration.mul_f64(0.7);
    // The node to degrade: healthy, in a pod with no degraded node.
    let fault_node = {
        let sick_pods: std::collections::HashSet<u32> = truth
            .nodes()
            .iter()
            .filter(|x| x.degraded)
            .map(|x| x.levels[1])
            .collect();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(opts.seed ^ 0xFA17);
        let healthy: Vec<usize> = (0..n)
            .filter(|&i| !sick_pods.contains(&truth.nodes()[i].levels[1]))
            .collect();
        healthy
            .get(rng.random_range(0..healthy.len().max(1)))
            .copied()
    };
    let mut faulted: Option<Instant> = None;
    let queries_at = opts.duration.mul_f64(0.85);
    let mut joined: Option<Instant> = None;
    let mut queries: Option<tokio::task::JoinHandle<Queries>> = None;
    let mut timeline = Vec::new();
    let mut next_sample = Instant::now();
    let mut last_cpu = agg_usage.last.map(|(_, c)| c).unwrap_or(0.0);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while started.elapsed() < opts.duration {
        tick.tick().await;
        agg_usage.sample();
        sim_usage.sample();
        if let Ok(Some(status)) = aggregator.try_wait() {
            return Err(Error::Run(format!(
                "the aggregator exited during the run ({status}); see {}",
                opts.log_dir.join("aggregator.log").display()
            )));
        }
        if Instant::now() >= next_sample {
            next_sample += SAMPLE_EVERY;
            let cpu = agg_usage.last.map(|(_, c)| c).unwrap_or(0.0);
            let cores = (cpu - last_cpu) / SAMPLE_EVERY.as_secs_f64();
            last_cpu = cpu;
            if let Ok(p) = published.lock() {
                let (ari, labelled) = score(&truth, n, &p.labels);
                timeline.push(Sample {
                    t_s: started.elapsed().as_secs_f64(),
                    labelled,
                    ari,
                    writes_total: p.writes.len(),
                    aggregator_rss_mib: agg_usage.rss,
                    aggregator_cpu_cores: cores,
                });
            }
        }
        if faulted.is_none() && started.elapsed() >= fault_at {
            faulted = Some(Instant::now());
            if let Some(i) = fault_node {
                truth.inject_fault(i);
            }
        }
        if joined.is_none() && started.elapsed() >= join_at {
            joined = Some(Instant::now());
            fleet.start(&truth, n);
        }
        if queries.is_none() && started.elapsed() >= queries_at {
            let (client, truth, k) = (client.clone(), truth.clone(), opts.place_k.clone());
            let seed = opts.seed;
            queries = Some(tokio::spawn(async move {
                time_queries(&client, &truth, n, &k, seed).await
            }));
        }
    }
    // Slow queries (a Place may take up to the aggregator's deadline)
    // lengthen the run rather than being cut short.
    let queries = match queries {
        Some(q) => q.await.ok(),
        None => None,
    };
    agg_usage.sample();
    sim_usage.sample();
    let stats = fleet.stats();
    fleet.stop().await;
    if let Some(pid) = aggregator.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(0)),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), aggregator.wait()).await;

    let p = published
        .lock()
        .map_err(|_| Error::Run("the label reader panicked".into()))?;
    let initial = &stats[..n.min(stats.len())];
    let mut report = ScaleReport {
        nodes: n,
        duration_s: started.elapsed().as_secs_f64(),
        seed: opts.seed,
        aggregator: agg_usage.usage(),
        simulator: sim_usage.usage(),
        probe_targets_per_agent: Targets {
            max: initial.iter().map(|s| s.targets_max).max().unwrap_or(0),
            mean: initial.iter().map(|s| s.targets as f64).sum::<f64>() / n as f64,
        },
        plan_bytes_max: stats.iter().map(|s| s.plan_bytes_max).max().unwrap_or(0),
        windows_sent: stats.iter().map(|s| s.windows_sent).sum(),
        sessions_reopened: stats.iter().map(|s| s.sessions.saturating_sub(1)).sum(),
        queries: queries.unwrap_or_default(),
        unreadable_patches: p.unreadable,
        ..Default::default()
    };
    for s in &stats {
        if let Some(e) = &s.last_error {
            *report.agent_errors.entry(e.clone()).or_default() += 1;
        }
    }
    let (ari, _) = score(&truth, n, &p.labels);
    let count = |level: usize, found: bool| -> usize {
        let mut ids: Vec<String> = truth
            .nodes()
            .iter()
            .take(n)
            .filter_map(|node| {
                if found {
                    p.labels
                        .get(&node.name)
                        .and_then(groups_of)
                        .map(|g| g[level].to_string())
                } else {
                    Some(node.levels[level].to_string())
                }
            })
            .collect();
        ids.sort();
        ids.dedup();
        ids.len()
    };
    report.groups = Groups {
        ari_l1: ari[0],
        ari_l2: ari[1],
        ari_l3: ari[2],
        measured: [0, 1, 2].map(|l| count(l, true)),
        truth: [0, 1, 2].map(|l| count(l, false)),
    };
    report.degraded_detected = degraded(&truth, n, &p.labels);

    // Converged: from the first sample after which every later sample
    // (until the join) has every node labelled and every level's ARI at
    // least CONVERGED_ARI.
    let fault_s = fault_at.as_secs_f64();
    let before_join: Vec<&Sample> = timeline.iter().filter(|s| s.t_s < fault_s).collect();
    let good = |s: &Sample| s.labelled == n && s.ari.iter().all(|&a| a >= CONVERGED_ARI);
    let first_good = before_join
        .iter()
        .rposition(|s| !good(s))
        .map_or(0, |k| k + 1);
    report.labels_converged_s = before_join.get(first_good).map(|s| s.t_s);
    if let (Some(conv), Some(until)) = (report.labels_converged_s, faulted) {
        // The steady state: from SETTLE_RECOMPUTATIONS after convergence
        // (plans and figures settle for a few recomputations after the
        // groups have), or in a short run the second half of the time
        // between convergence and the fault, until the fault.
        let settled = conv + opts.report_interval.as_secs_f64() * SETTLE_RECOMPUTATIONS;
        let from_s = settled.min((conv + fault_s) / 2.0);
        let from = started + Duration::from_secs_f64(from_s);
        report.steady_from_s = Some(from_s);
        let span = until.saturating_duration_since(from).as_secs_f64();
        if span > 0.0 {
            let steady: Vec<_> = p
                .writes
                .iter()
                .filter(|w| w.at >= from && w.at < until)
                .collect();
            let per_hour = steady.len() as f64 * 3600.0 / span;
            report.label_writes_per_hour_steady = Some(per_hour);
            report.label_writes_per_hour_steady_pct = Some(per_hour * 100.0 / n as f64);
            let upper = report::poisson_upper95(steady.len()) * 3600.0 / span;
            report.steady_span_s = Some(span);
            report.label_writes_per_hour_steady_upper95 = Some(upper);
            report.label_writes_per_hour_steady_upper95_pct = Some(upper * 100.0 / n as f64);
            report.label_changes_per_hour_steady = Some(
                steady.iter().filter(|w| !w.changed.is_empty()).count() as f64 * 3600.0 / span,
            );
            for w in &steady {
                *report
                    .summary_changes_per_hour_steady
                    .entry(w.summary.name().to_string())
                    .or_default() += 3600.0 / span;
                for (key, _, _) in label_changes(w) {
                    *report
                        .label_changes_by_key_per_hour_steady
                        .entry(key)
                        .or_default() += 3600.0 / span;
                }
                // The sample shows the summary's changed values too.
                let summary = w.summary_was.iter().cloned();
                for (key, from, to) in label_changes(w).chain(summary) {
                    if report.steady_changes_sample.len() < STEADY_SAMPLE {
                        let at = w.at.saturating_duration_since(started).as_secs_f64();
                        report
                            .steady_changes_sample
                            .push((w.node.clone(), key, from, to, at));
                    }
                }
            }
        }
    }
    if let (Some(i), Some(from), Some(until)) = (fault_node, faulted, joined) {
        let name = &truth.nodes()[i].name;
        let mut f = Fault {
            node: name.clone(),
            at_s: from.saturating_duration_since(started).as_secs_f64(),
            ..Default::default()
        };
        f.window_s = until.saturating_duration_since(from).as_secs_f64();
        f.others_expected = report
            .label_changes_per_hour_steady
            .map(|h| h * f.window_s / 3600.0);
        let group = |n: &str, level: u8| {
            p.labels
                .get(n)
                .and_then(|l| l.get(&format!("{PREFIX}group-l{level}")))
        };
        let mut others = std::collections::HashSet::new();
        let mut in_group = std::collections::HashSet::new();
        for w in p
            .writes
            .iter()
            .filter(|w| w.at >= from && w.at < until && !w.changed.is_empty())
        {
            if &w.node == name {
                f.relabelled = true;
            } else {
                others.insert(w.node.clone());
                let shares = |level| {
                    group(&w.node, level).is_some() && group(&w.node, level) == group(name, level)
                };
                if shares(2) {
                    in_group.insert(w.node.clone());
                }
                let peer = shares(1);
                for (key, from, to) in label_changes(w) {
                    *f.others_keys.entry(key.clone()).or_default() += 1;
                    if f.others_sample.len() < STEADY_SAMPLE {
                        let at = w.at.saturating_duration_since(started).as_secs_f64();
                        f.others_sample
                            .push((w.node.clone(), key, from, to, at, peer));
                    }
                }
            }
        }
        for w in p.writes.iter().filter(|w| &w.node == name && w.at >= from) {
            let at = w.at.saturating_duration_since(started).as_secs_f64();
            for (key, was, now) in label_changes(w) {
                if f.own_changes.len() < STEADY_SAMPLE {
                    f.own_changes.push((key, was, now, at));
                }
            }
        }
        // Its first change, which the list always holds.
        f.labels_followed_s = f.own_changes.first().map(|c| (c.3 - f.at_s).max(0.0));
        f.others_relabelled = others.len();
        f.others_in_group = in_group.len();
        f.found = lowest_of_group(&p.labels, name);
        report.nodes_relabelled_on_single_fault = Some(f.others_relabelled);
        report.fault = f;
    }
    if let Some(join) = joined {
        let s = stats.get(n).cloned().unwrap_or_default();
        report.join.plan_s = match (s.hello_at, s.first_plan_at) {
            (Some(h), Some(p)) => Some(p.saturating_duration_since(h).as_secs_f64()),
            _ => None,
        };
        let name = &truth.nodes()[n].name;
        report.join.labels_s = p
            .writes
            .iter()
            .filter(|w| &w.node == name && w.at >= join)
            .find(|_| {
                p.labels
                    .get(name)
                    .is_some_and(|l| groups_of(l).is_some() && quality_of(l).is_some())
            })
            .map(|w| w.at.saturating_duration_since(join).as_secs_f64());
        report.join.recomputations = report
            .join
            .labels_s
            .map(|s| s / opts.report_interval.as_secs_f64());
    }
    report.timeline = timeline;
    Ok(report)
}
