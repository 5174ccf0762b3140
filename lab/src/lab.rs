//! Running a lab: build the network, start the emulator, the aggregator and
//! one agent per node, hand the running lab to a mode, and tear it all down
//! on every exit path (success, error, Ctrl-C, panic: [`Lab`]'s `Drop`).
//!
//! - `spawn`: the command line of every process the lab starts;
//! - `wait`: polling the aggregator until agents, RTTs or bandwidths are in;
//! - `events`: timed topology events;
//! - `modes`: `run`, `up` and `bench`.

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use netaware_common::format_duration as human;
use netaware_model::matrix::PlanTiming;
use netaware_proto::ProbeMethod;
use tracing::{info, warn};

use crate::bench::{BenchOptions, BenchReport};
use crate::emulator::{Emulator, Shaper, data_ip, hold_low_latency};
use crate::error::{Error, Result};
use crate::netns::{self, Network, ctl_ip, ns_name};
use crate::report::Report;
use crate::topology::Topology;

mod events;
mod modes;
mod spawn;
mod wait;

/// Port of the aggregator's agent-facing service on the control bridge.
pub use netaware_proto::AGENT_PORT;

/// The lab's plan timing: ten times the cluster default's pace (100 ms
/// probes, 2 s windows), so a 30 s demo has figures, groups and labels.
pub const LAB_TIMING: PlanTiming = PlanTiming {
    probe_interval: Duration::from_millis(100),
    report_interval: Duration::from_secs(2),
    loss_timeout: Duration::from_secs(1),
};
/// Bandwidth tests at once in the lab: one, since every test goes through
/// the one userspace emulator and two would compete for its CPU.
pub const LAB_BANDWIDTH_CONCURRENCY: u64 = 1;
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

fn log_file(dir: &Path, name: &str) -> Result<File> {
    Ok(File::create(dir.join(format!("{name}.log")))?)
}

/// Start `cmd` with no input and its output in `log`.
fn start_process(cmd: &spawn::CommandLine, log: File, what: &str) -> Result<Child> {
    Command::new(&cmd.program)
        .args(&cmd.args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| Error::Run(format!("cannot start {what}: {e}")))
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

/// Build the network, start the emulator, the API server double (when
/// labels are on), the aggregator and every agent.
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

    let mut kubeconfig = None;
    if let Some(bin) = &opts.apiserver_bin {
        let port_file = opts.log_dir.join("apiserver.port");
        let config = opts.log_dir.join("kubeconfig");
        let _ = std::fs::remove_file(&port_file);
        let names: Vec<&str> = topo.nodes.iter().map(|n| n.name.as_str()).collect();
        let cmd = spawn::apiserver(bin, &names, &port_file, &config);
        let child = start_process(
            &cmd,
            log_file(&opts.log_dir, "apiserver")?,
            &bin.display().to_string(),
        )?;
        lab.network.adopt(netns::APISERVER, child);
        let port = wait::for_file(&port_file, Duration::from_secs(10))?;
        lab.apiserver_port = port.trim().parse().ok();
        kubeconfig = Some(config);
    }
    let cmd = spawn::aggregator(opts, kubeconfig.as_deref());
    let child = start_process(
        &cmd,
        log_file(&opts.log_dir, "aggregator")?,
        &opts.aggregator_bin.display().to_string(),
    )?;
    lab.network.adopt(netns::AGGREGATOR, child);

    for (i, node) in topo.nodes.iter().enumerate() {
        let ns = ns_name(&node.name);
        let ip = data_ip(i);
        let cmd = spawn::agent(opts, &ns, &node.name, ip);
        let what = format!("the agent of {}", node.name);
        let child = start_process(&cmd, log_file(&opts.log_dir, &node.name)?, &what)?;
        lab.network.adopt(&node.name, child);
        info!(node = %node.name, ns = %ns, data = %ip, control = %ctl_ip(i), "agent started");
    }
    Ok(lab)
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
    let lateness = lab.emulator.as_ref().and_then(Emulator::lateness);
    if let Some(e) = lab.emulator.as_ref() {
        let c = e.counters();
        info!(
            forwarded = c.forwarded.load(std::sync::atomic::Ordering::Relaxed),
            dropped = c.dropped.load(std::sync::atomic::Ordering::Relaxed),
            "emulator totals"
        );
        if let Some(l) = &lateness {
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

/// Connect to the aggregator, wait for every agent, then run `mode`.
async fn drive(
    lab: &mut Lab,
    topo: &Topology,
    opts: &Options,
    mode: Mode,
) -> Result<Option<Outcome>> {
    let client = wait::connect_query(lab, opts).await?;
    let mut r = wait::Running {
        lab,
        client,
        topo,
        opts,
    };
    r.connected().await?;
    info!(nodes = topo.nodes.len(), "all agents connected");
    match mode {
        Mode::Run { duration } => modes::run(&mut r, duration)
            .await
            .map(|r| Some(Outcome::Run(r))),
        Mode::Bench(b) => modes::bench(&mut r, &b)
            .await
            .map(|r| Some(Outcome::Bench(r))),
        Mode::Up => modes::up(&mut r).await.map(|()| None),
    }
}
