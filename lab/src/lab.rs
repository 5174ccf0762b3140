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
use crate::cluster::{self, ControlPlane};
use crate::emulator::{Emulator, Shaper, data_ip, hold_low_latency};
use crate::error::{Error, Result};
use crate::netns::{self, Network, ctl_ip, ns_name};
use crate::report::Report;
use crate::topology::Topology;

mod events;
mod modes;
mod secure;
mod spawn;

pub use secure::SecurityReport;
mod wait;

/// Port of the aggregator's agent-facing service on the control bridge.
pub use netaware_proto::AGENT_PORT;

/// The lab's plan timing: ten times the cluster default's pace (100 ms
/// probes, 2 s windows), so a one-minute demo has figures, groups and every
/// label (`loss-ppm` waits for 200 probes a link outside bandwidth tests).
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
    /// No TLS and no authentication (`--insecure`, for measuring their cost).
    pub insecure: bool,
    pub agent_bin: PathBuf,
    pub aggregator_bin: PathBuf,
    /// Logs of the aggregator and every agent.
    pub log_dir: PathBuf,
    /// Seed of the emulator's loss and jitter draws.
    pub seed: u64,
    /// Run `ping` between every pair beside the agents (`run` only).
    pub ping: bool,
    /// The API server the aggregator writes labels to.
    pub kubernetes: Kubernetes,
    /// Manifests to create once the first labels are written (`run` only).
    pub apply: Vec<Manifest>,
    /// Bandwidth tests between agents; `None` turns them off.
    pub bandwidth: Option<BandwidthOptions>,
    /// After the run, wait until every pair's bandwidth is measured and run
    /// iperf3 on each pair the same way, for comparison (`run` only).
    pub iperf3: bool,
    /// The aggregator's probe-target bound (`None`: its default, so the
    /// lab's topologies are full meshes).
    pub max_probe_targets: Option<usize>,
}

/// Which API server the aggregator writes Node labels to.
#[derive(Debug, Clone)]
pub enum Kubernetes {
    /// A real control plane ([`cluster`]): what the stock scheduler does
    /// with the labels can be seen.
    Real(cluster::Binaries),
    /// The test-only API server double (Nodes and Leases only), at this path.
    Double(PathBuf),
    /// No API server: no labels.
    Off,
}

impl Kubernetes {
    /// `real`, `double` or `off`, as the flag and the report say it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Real(_) => "real",
            Self::Double(_) => "double",
            Self::Off => "off",
        }
    }
}

/// The objects of one `--apply` file, parsed before the lab starts.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub path: PathBuf,
    pub objects: Vec<serde_json::Value>,
}

impl Manifest {
    /// Read and parse `path`: an error naming the file and document when
    /// it is not a stream of Kubernetes objects.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Preflight(format!("--apply {}: {e}", path.display())))?;
        let what = format!("--apply {}", path.display());
        let objects = cluster::objects::parse_manifests(&text, &what)?;
        if objects.is_empty() {
            return Err(Error::Preflight(format!("{what}: no objects in the file")));
        }
        Ok(Self {
            path: path.to_path_buf(),
            objects,
        })
    }
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
    /// Both boxed: each report is hundreds of bytes, and the outcome is
    /// moved about.
    Run(Box<Report>),
    Bench(Box<BenchReport>),
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
    /// TLS always; agent tokens with a real API server.
    security: secure::Security,
    emulator: Option<Emulator>,
    network: Network,
    /// The API server labels go to, unless Kubernetes is off.
    kube: Option<KubeAccess>,
    /// Held open while the lab runs (see `emulator::hold_low_latency`).
    _low_latency: Option<File>,
}

/// The lab's API server: an admin client (to read labels, apply manifests
/// and see pods), and the control plane when it is a real one.
struct KubeAccess {
    client: kube::Client,
    mode: &'static str,
    /// What `/version` said (a real server only).
    version: Option<String>,
    /// The admin's kubeconfig (a real server only), for people to use.
    admin_kubeconfig: Option<PathBuf>,
    /// Stopped when the lab is dropped.
    _plane: Option<ControlPlane>,
}

impl std::fmt::Debug for KubeAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeAccess")
            .field("mode", &self.mode)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
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

/// Build the network, start the emulator, the API server (unless
/// Kubernetes is off), the aggregator and every agent.
async fn start(topo: &Topology, opts: &Options) -> Result<Lab> {
    std::fs::create_dir_all(&opts.log_dir)?;
    let mut lab = Lab {
        security: if opts.insecure {
            warn!("--insecure: no TLS, no agent or query authentication in this lab");
            secure::Security::insecure()
        } else {
            secure::Security::new(&opts.log_dir)?
        },
        emulator: None,
        kube: None,
        network: Network::build(topo)?,
        _low_latency: hold_low_latency(),
    };
    lab.emulator = Some(Emulator::start(
        lab.network.tun_devices(),
        Shaper::new(topo, opts.seed),
    )?);

    let kubeconfig = match &opts.kubernetes {
        Kubernetes::Off => None,
        Kubernetes::Double(bin) => Some(start_double(&mut lab, topo, opts, bin).await?),
        Kubernetes::Real(bins) => Some(start_real(&mut lab, topo, opts, bins).await?),
    };
    let cmd = spawn::aggregator(opts, kubeconfig.as_deref(), &lab.security);
    let child = start_process(
        &cmd,
        log_file(&opts.log_dir, "aggregator")?,
        &opts.aggregator_bin.display().to_string(),
    )?;
    lab.network.adopt(netns::AGGREGATOR, child);

    for (i, node) in topo.nodes.iter().enumerate() {
        let ns = ns_name(&node.name);
        let ip = data_ip(i);
        let cmd = spawn::agent(opts, &ns, &node.name, ip, &lab.security);
        let what = format!("the agent of {}", node.name);
        let child = start_process(&cmd, log_file(&opts.log_dir, &node.name)?, &what)?;
        lab.network.adopt(&node.name, child);
        info!(node = %node.name, ns = %ns, data = %ip, control = %ctl_ip(i), "agent started");
    }
    Ok(lab)
}

/// Start the API server double with the topology's Nodes; the
/// aggregator's kubeconfig.
async fn start_double(
    lab: &mut Lab,
    topo: &Topology,
    opts: &Options,
    bin: &Path,
) -> Result<PathBuf> {
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
    wait::for_file(&port_file, Duration::from_secs(10))?;
    lab.kube = Some(KubeAccess {
        client: cluster::client_from_kubeconfig(&config).await?,
        mode: "double",
        version: None,
        admin_kubeconfig: None,
        _plane: None,
    });
    Ok(config)
}

/// Start a real control plane in `<log dir>/kubernetes` with one Ready Node
/// per topology node (its data address as InternalIP); the aggregator's
/// kubeconfig. The lab's aggregator writes as a cluster admin: the chart's
/// narrower RBAC is what the end-to-end tests check, and the lab needs no
/// Helm.
async fn start_real(
    lab: &mut Lab,
    topo: &Topology,
    opts: &Options,
    bins: &cluster::Binaries,
) -> Result<PathBuf> {
    let dir = opts.log_dir.join("kubernetes");
    // A previous run's etcd data would bring back its Nodes and pods.
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "starting a real Kubernetes {} control plane...",
        cluster::kubernetes_version()
    );
    let plane = ControlPlane::start(bins, &dir).await?;
    netns::note_control_plane(&plane.pids())?;
    let admin = plane.admin();
    let client = plane.client(&admin).await?;
    let nodes: Vec<cluster::objects::NodeSpec> = topo
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| cluster::objects::NodeSpec {
            name: n.name.clone(),
            internal_ip: Some(data_ip(i).into()),
        })
        .collect();
    cluster::objects::add_nodes(&client, &nodes).await?;
    if !opts.insecure {
        lab.security
            .issue_tokens(&client, topo, &opts.log_dir.join("tokens"))
            .await?;
    }
    let version = client
        .apiserver_version()
        .await
        .map(|v| v.git_version)
        .map_err(|e| Error::Run(format!("the API server's /version: {e}")))?;
    let kubeconfig = plane.write_kubeconfig("aggregator", &admin)?;
    let admin_kubeconfig = Some(plane.write_kubeconfig("admin", &admin)?);
    info!(server = %plane.server(), %version, "Kubernetes control plane up");
    lab.kube = Some(KubeAccess {
        client,
        mode: "real",
        version: Some(version),
        admin_kubeconfig,
        _plane: Some(plane),
    });
    Ok(kubeconfig)
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
    let mut lab = start(topo, opts).await?;
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
            .map(|r| Some(Outcome::Run(Box::new(r)))),
        Mode::Bench(b) => modes::bench(&mut r, &b)
            .await
            .map(|r| Some(Outcome::Bench(Box::new(r)))),
        Mode::Up => modes::up(&mut r).await.map(|()| None),
    }
}
