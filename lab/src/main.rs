//! `netaware-lab` binary: subcommands `run`, `up` and `bench`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use netaware_common::{default_text, format_duration};
use netaware_lab::lab::{self, Mode, Options, Outcome};
use netaware_lab::report::render_table;
use netaware_lab::topology::Topology;
use netaware_lab::{bench, cluster, scale};
use netaware_model::bandwidth::BandwidthConfig;
use netaware_model::shape::Shape;

/// netaware-lab: run netaware on an emulated multi-region cluster (needs root).
#[derive(Debug, Parser)]
#[command(name = "netaware-lab", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Measure for a while, print configured vs measured per pair, tear down.
    Run {
        /// Topology file (see docs/lab.md).
        topology: PathBuf,
        /// How long to measure.
        #[arg(long = "for", default_value = "60s", value_parser = netaware_common::parse_duration)]
        duration: Duration,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Run `ping` between every pair beside the agents and compare (benchmark).
        #[arg(long)]
        ping: bool,
        /// After the run, wait until every pair's bandwidth is measured, then
        /// run iperf3 on each pair the same way and compare (benchmark).
        #[arg(long)]
        iperf3: bool,
        /// Once every node has its group labels, create the objects in this
        /// file (Jobs, Pods, anything the API server accepts) and report
        /// where the scheduler put their pods (repeatable; needs
        /// --kubernetes real).
        #[arg(long = "apply", value_name = "FILE")]
        apply: Vec<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// Run a real Open MPI all-reduce on node sets chosen by netaware, by
    /// latency alone, by region spreading, at random and by brute force, and
    /// compare their iteration times (needs openmpi-bin and python3-mpi4py).
    Bench {
        /// Topology file (see docs/lab.md).
        topology: PathBuf,
        /// Nodes (MPI ranks, one per node); with --shape, its ranks.
        #[arg(short = 'k', value_parser = clap::value_parser!(u64).range(2..), required_unless_present = "shape")]
        k: Option<u64>,
        /// A shaped job, innermost level first (`tp=2:8MiB,dp=4:1MiB`; a level
        /// without bytes takes --bytes): each level's all-reduce in turn, and
        /// netaware's shaped placement with its rank order against the
        /// shape-blind ones with ranks in name order (docs/lab.md).
        #[arg(long, value_parser = parse_shape)]
        shape: Option<Shape>,
        /// All-reduce message size (e.g. 8MiB).
        #[arg(long, default_value = "8MiB", value_parser = netaware_common::parse_bytes)]
        bytes: u64,
        /// Timed iterations per node set (each mpirun adds two warm-up ones).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
        iters: u32,
        /// Split each node set's iterations into this many rounds, the sets
        /// taking turns (A B C, A B C, …), so drift hits them alike.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
        rounds: u32,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Seed of the first random placement (the others take the next seeds).
        #[arg(long, default_value_t = 1)]
        placement_seed: u64,
        /// Random placements to run ("best measured" means more with more).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
        random_sets: u32,
        /// Open MPI's all-reduce algorithm.
        #[arg(long, value_enum, default_value_t = bench::Algorithm::Ring)]
        algorithm: bench::Algorithm,
        /// Python interpreter that has mpi4py.
        #[arg(long, default_value = bench::DEFAULT_PYTHON)]
        python: String,
        /// Measure at least this long before placing [default: the time
        /// the placement loss figure takes to count its 1,000 probes at
        /// --probe-interval: 100s at the lab's pace].
        #[arg(long, value_parser = netaware_common::parse_duration)]
        settle: Option<Duration>,
        #[command(flatten)]
        common: Common,
    },
    /// Start only a real Kubernetes control plane (etcd, API server,
    /// scheduler, controller-manager; no kubelets) until Ctrl-C, with a
    /// Ready Node per topology node: for trying manifests by hand.
    Cluster {
        /// Topology whose nodes become Nodes (none: no Nodes).
        topology: Option<PathBuf>,
        /// State, certificates, logs and admin.kubeconfig.
        #[arg(long, default_value_os_t = std::env::temp_dir().join("netaware-cluster"))]
        dir: PathBuf,
    },
    /// Scale run, no root needed: the real aggregator and N simulated
    /// agents (real gRPC sessions on loopback, windows drawn from a
    /// synthetic network of racks, pods and regions); reports CPU, memory,
    /// plan sizes, label convergence and accuracy, query latencies, a
    /// joining node and Node writes (docs/lab.md, docs/benchmarks.md).
    Scale {
        /// Simulated nodes.
        #[arg(long, value_parser = clap::value_parser!(u32).range(2..=100_000))]
        nodes: u32,
        /// How long to run (the join happens at 70 %, the queries at 85 %).
        #[arg(long = "for", default_value = "300s", value_parser = netaware_common::parse_duration)]
        duration: Duration,
        /// Seed of the synthetic network and of the agents' noise.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Window length of the simulated agents (and the aggregator's
        /// recompute interval).
        #[arg(long, default_value = "10s", value_parser = netaware_common::parse_duration)]
        report_interval: Duration,
        /// Placement sizes to time (comma-separated).
        #[arg(long, default_value = "4,64,256", value_delimiter = ',')]
        place_k: Vec<u32>,
        /// One more aggregator flag (repeatable), e.g. `--aggregator-arg=--max-probe-targets=16`.
        #[arg(long = "aggregator-arg", allow_hyphen_values = true)]
        aggregator_args: Vec<String>,
        /// The aggregator binary (default: next to netaware-lab).
        #[arg(long, env = "NETAWARE_AGGREGATOR_BIN")]
        aggregator_bin: Option<PathBuf>,
        /// Where the aggregator's log goes.
        #[arg(long, default_value_os_t = std::env::temp_dir().join("netaware-scale"))]
        log_dir: PathBuf,
    },
    /// Keep the lab running with a live table until Ctrl-C.
    Up {
        /// Topology file (see docs/lab.md).
        topology: PathBuf,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, clap::Args)]
struct Common {
    /// Interval between probes to one peer (per method).
    #[arg(long, default_value = default_text!(format_duration(lab::LAB_TIMING.probe_interval)), value_parser = netaware_common::parse_duration)]
    probe_interval: Duration,
    /// Report window length.
    #[arg(long, default_value = default_text!(format_duration(lab::LAB_TIMING.report_interval)), value_parser = netaware_common::parse_duration)]
    report_interval: Duration,
    /// A probe unanswered for this long is lost.
    #[arg(long, default_value = default_text!(format_duration(lab::LAB_TIMING.loss_timeout)), value_parser = netaware_common::parse_duration)]
    loss_timeout: Duration,
    /// Port of the aggregator's query API on 127.0.0.1 (the CLI's default).
    #[arg(long, default_value_t = netaware_proto::QUERY_PORT)]
    query_port: u16,
    /// Probe with ICMP echo too.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    icmp: bool,
    /// Run without TLS and without any authentication, to measure what
    /// they cost side by side (docs/benchmarks.md §10); said loudly, and in
    /// the report.
    #[arg(long)]
    insecure: bool,
    /// The agent binary (default: next to netaware-lab).
    #[arg(long, env = "NETAWARE_AGENT_BIN")]
    agent_bin: Option<PathBuf>,
    /// The aggregator binary (default: next to netaware-lab).
    #[arg(long, env = "NETAWARE_AGGREGATOR_BIN")]
    aggregator_bin: Option<PathBuf>,
    /// Where the aggregator's and agents' logs go.
    #[arg(long, default_value_os_t = std::env::temp_dir().join("netaware-lab"))]
    log_dir: PathBuf,
    /// Seed of the emulator's random loss and jitter.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The aggregator's bound on probe targets per agent (its default keeps
    /// every lab topology a full mesh; a low bound shows the sparse plans
    /// of a large cluster on a small one).
    #[arg(long, value_parser = netaware_common::parse_nonzero_usize)]
    max_probe_targets: Option<usize>,
    /// Where the aggregator writes Node labels: `real` (a local Kubernetes
    /// control plane, built once by scripts/k8s.sh), `double` (the test
    /// API server double) or `off`. Default: real when its binaries are
    /// built, else double (saying how to get real).
    #[arg(long, value_enum)]
    kubernetes: Option<KubeFlag>,
    /// The API server double binary (default: next to netaware-lab).
    #[arg(long, env = "NETAWARE_APISERVER_BIN")]
    apiserver_bin: Option<PathBuf>,
    /// Let the aggregator schedule TCP bandwidth tests between the agents.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    bandwidth: bool,
    /// Parallel TCP streams per bandwidth test (the aggregator's default).
    #[arg(long, default_value = default_text!(BandwidthConfig::default().streams), value_parser = clap::value_parser!(u32).range(1..=64))]
    bandwidth_streams: u32,
    /// Leading part of a bandwidth test left out (whole seconds, as iperf3 takes them).
    #[arg(long, default_value = default_text!(format_duration(BandwidthConfig::default().omit)), value_parser = parse_whole_seconds)]
    bandwidth_omit: Duration,
    /// Measured part of a bandwidth test (whole seconds).
    #[arg(long, default_value = default_text!(format_duration(BandwidthConfig::default().duration)), value_parser = parse_whole_seconds)]
    bandwidth_duration: Duration,
    /// Bandwidth tests at once (1: tests do not compete for the emulator's CPU).
    #[arg(long, default_value_t = lab::LAB_BANDWIDTH_CONCURRENCY, value_parser = clap::value_parser!(u64).range(1..))]
    bandwidth_concurrency: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum KubeFlag {
    Real,
    Double,
    Off,
}

/// The API server the lab runs, from `--kubernetes`.
fn kubernetes(
    flag: Option<KubeFlag>,
    double_bin: Option<PathBuf>,
) -> anyhow::Result<lab::Kubernetes> {
    let double = |bin| -> anyhow::Result<lab::Kubernetes> {
        Ok(lab::Kubernetes::Double(lab::find_binary(
            bin,
            "netaware-apiserver-double",
            "--apiserver-bin (or --kubernetes off)",
        )?))
    };
    Ok(match flag {
        Some(KubeFlag::Off) => lab::Kubernetes::Off,
        Some(KubeFlag::Double) => double(double_bin)?,
        Some(KubeFlag::Real) => lab::Kubernetes::Real(cluster::Binaries::find()?),
        None => match cluster::Binaries::find() {
            Ok(b) => lab::Kubernetes::Real(b),
            Err(e) => {
                eprintln!("using the API server double, not a real control plane: {e}");
                double(double_bin)?
            }
        },
    })
}

/// `--shape`: the model's grammar with byte counts like `8MiB`.
fn parse_shape(text: &str) -> Result<Shape, String> {
    Shape::parse(text, netaware_common::parse_bytes).map_err(|e| e.to_string())
}

fn parse_whole_seconds(s: &str) -> Result<Duration, String> {
    let d = netaware_common::parse_duration_or_zero(s)?;
    if d.subsec_nanos() != 0 {
        return Err(format!(
            "'{s}' must be whole seconds (iperf3 takes whole seconds)"
        ));
    }
    Ok(d)
}

fn options(c: Common, ping: bool, iperf3: bool, apply: &[PathBuf]) -> anyhow::Result<Options> {
    if iperf3 && !c.bandwidth {
        anyhow::bail!("--iperf3 compares with netaware's bandwidth tests: drop --bandwidth false");
    }
    if c.bandwidth_duration.is_zero() {
        anyhow::bail!("--bandwidth-duration must be at least 1s");
    }
    let apply = apply
        .iter()
        .map(|p| lab::Manifest::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    let kubernetes = kubernetes(c.kubernetes, c.apiserver_bin)?;
    if !apply.is_empty() && !matches!(kubernetes, lab::Kubernetes::Real(_)) {
        anyhow::bail!(
            "--apply needs a real scheduler, but the lab runs with --kubernetes {}: build the control plane with scripts/k8s.sh and use --kubernetes real",
            kubernetes.name()
        );
    }
    Ok(Options {
        probe_interval: c.probe_interval,
        report_interval: c.report_interval,
        loss_timeout: c.loss_timeout,
        query_port: c.query_port,
        icmp: c.icmp,
        insecure: c.insecure,
        agent_bin: lab::find_binary(c.agent_bin, "netaware-agent", "--agent-bin")?,
        aggregator_bin: lab::find_binary(
            c.aggregator_bin,
            "netaware-aggregator",
            "--aggregator-bin",
        )?,
        log_dir: c.log_dir,
        seed: c.seed,
        ping,
        bandwidth: c.bandwidth.then_some(lab::BandwidthOptions {
            streams: c.bandwidth_streams,
            omit: c.bandwidth_omit,
            duration: c.bandwidth_duration,
            concurrency: usize::try_from(c.bandwidth_concurrency).unwrap_or(usize::MAX),
        }),
        iperf3,
        max_probe_targets: c.max_probe_targets,
        kubernetes,
        apply,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = netaware_common::parse_args_or_exit();
    netaware_common::init_logging();
    match cli.command {
        Cmd::Run {
            topology,
            duration,
            json,
            ping,
            iperf3,
            apply,
            common,
        } => {
            // Everything that can be wrong with the input is checked before
            // anything is created.
            let topo = Topology::load(&topology)?;
            let opts = options(common, ping, iperf3, &apply)?;
            let report = lab::execute(
                &topo,
                &opts,
                Mode::Run { duration },
                netaware_common::shutdown_signal(),
            )
            .await?;
            let Some(Outcome::Run(report)) = report else {
                eprintln!("interrupted: the lab was removed, no report");
                std::process::exit(130);
            };
            netaware_common::print_stdout(&render_table(&report));
            if let Some(path) = json {
                let text = serde_json::to_string_pretty(&report)?;
                std::fs::write(&path, text + "\n")
                    .with_context(|| format!("writing the report to {}", path.display()))?;
                eprintln!("report written to {}", path.display());
            }
        }
        Cmd::Bench {
            topology,
            k,
            bytes,
            iters,
            rounds,
            json,
            placement_seed,
            random_sets,
            algorithm,
            python,
            settle,
            shape,
            common,
        } => {
            let topo = Topology::load(&topology)?;
            let k = match (k, &shape) {
                (Some(k), Some(s)) if usize::try_from(k)? != s.ranks() => anyhow::bail!(
                    "-k {k} but the shape has {} ranks (one node per rank): leave -k out",
                    s.ranks()
                ),
                (_, Some(s)) => s.ranks(),
                (Some(k), None) => usize::try_from(k)?,
                (None, None) => anyhow::bail!("give -k or --shape"),
            };
            if shape.is_some() && algorithm == bench::Algorithm::RecursiveDoubling {
                anyhow::bail!(
                    "--algorithm recursive-doubling with --shape: a shaped job's prediction models \
                     ring levels; use --algorithm ring (the default) with a shape"
                );
            }
            if k > topo.nodes.len() {
                anyhow::bail!(
                    "-k {k} but the topology {} has only {} nodes",
                    topology.display(),
                    topo.nodes.len()
                );
            }
            let opts = options(common, false, false, &[])?;
            let b = bench::BenchOptions {
                k,
                bytes,
                iters,
                rounds,
                seed: placement_seed,
                random_sets,
                algorithm,
                python,
                settle: settle.unwrap_or_else(|| bench::default_settle(opts.probe_interval)),
                shape,
            };
            let out = lab::execute(
                &topo,
                &opts,
                Mode::Bench(b),
                netaware_common::shutdown_signal(),
            )
            .await?;
            let Some(Outcome::Bench(report)) = out else {
                eprintln!("interrupted: the lab was removed, no report");
                std::process::exit(130);
            };
            netaware_common::print_stdout(&bench::render(&report));
            if let Some(path) = json {
                let text = serde_json::to_string_pretty(&report)?;
                std::fs::write(&path, text + "\n")
                    .with_context(|| format!("writing the report to {}", path.display()))?;
                eprintln!("report written to {}", path.display());
            }
        }
        Cmd::Cluster { topology, dir } => {
            let topo = topology.as_deref().map(Topology::load).transpose()?;
            let bins = cluster::Binaries::find()?;
            // A previous run's etcd data would bring back its objects.
            let _ = std::fs::remove_dir_all(&dir);
            let plane = cluster::ControlPlane::start(&bins, &dir).await?;
            let admin = plane.admin();
            if let Some(topo) = &topo {
                let nodes: Vec<_> = topo
                    .nodes
                    .iter()
                    .map(|n| cluster::objects::NodeSpec {
                        name: n.name.clone(),
                        internal_ip: None,
                    })
                    .collect();
                cluster::objects::add_nodes(&plane.client(&admin).await?, &nodes).await?;
            }
            let kubeconfig = plane.write_kubeconfig("admin", &admin)?;
            netaware_common::print_stdout(&format!(
                "Kubernetes {} is up at {} (ready in {:.1} s; logs in {}); Ctrl-C stops it.\n\
                 export KUBECONFIG={}\n",
                cluster::kubernetes_version(),
                plane.server(),
                plane.ready_after().as_secs_f64(),
                plane.dir().join("logs").display(),
                kubeconfig.display()
            ));
            netaware_common::shutdown_signal().await;
            drop(plane);
            eprintln!("stopped");
        }
        Cmd::Scale {
            nodes,
            duration,
            seed,
            json,
            report_interval,
            place_k,
            aggregator_args,
            aggregator_bin,
            log_dir,
        } => {
            let opts = scale::ScaleOptions {
                nodes: nodes as usize,
                duration,
                seed,
                aggregator_bin: lab::find_binary(
                    aggregator_bin,
                    "netaware-aggregator",
                    "--aggregator-bin",
                )?,
                log_dir,
                report_interval,
                probe_interval: lab::LAB_TIMING.probe_interval,
                place_k,
                aggregator_args,
            };
            let report = scale::run(&opts).await?;
            netaware_common::print_stdout(&scale::render(&report));
            if let Some(path) = json {
                let text = serde_json::to_string_pretty(&report)?;
                std::fs::write(&path, text + "\n")
                    .with_context(|| format!("writing the report to {}", path.display()))?;
                eprintln!("report written to {}", path.display());
            }
        }
        Cmd::Up { topology, common } => {
            let topo = Topology::load(&topology)?;
            let opts = options(common, false, false, &[])?;
            lab::execute(&topo, &opts, Mode::Up, netaware_common::shutdown_signal()).await?;
            eprintln!("stopped: the lab was removed");
        }
    }
    Ok(())
}
