//! The `netaware` command-line client: talks to the aggregator's query API
//! and renders answers for people (aligned tables) and machines (JSON).

mod credentials;
mod matrix;
mod nodes;
mod place;
pub mod ui;

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use netaware_proto::ProbeMethod;
use netaware_proto::v1::query_service_client::QueryServiceClient;
use netaware_proto::v1::{ListGroupsRequest, ListGroupsResponse};
use serde_json::{Value, json};

use matrix::{SUMMARY_ABOVE, Selection, count_nodes, fetch_matrix, render_json, render_table};
use netaware_model::shape::Shape;
use nodes::{fetch_nodes, nodes_json, render_group_summary, render_groups, render_nodes};
use place::{place_hostfile, place_json, place_request, place_yaml, render_place};

pub const ENV_AGGREGATOR: &str = "NETAWARE_QUERY";
pub const ENV_CA_FILE: &str = "NETAWARE_CA_FILE";
pub const ENV_TOKEN: &str = "NETAWARE_TOKEN";
/// The query port on this machine (a `kubectl port-forward` or the lab).
fn default_aggregator() -> String {
    format!("http://127.0.0.1:{}", netaware_proto::QUERY_PORT)
}
/// Exit code when the aggregator cannot be reached (sysexits' EX_UNAVAILABLE).
pub const EXIT_UNAVAILABLE: i32 = 69;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors of the CLI library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot reach the aggregator at {url}: {reason}\n\
         Is it running, and is the address right? Set it with --aggregator or {ENV_AGGREGATOR} \
         (in a cluster: kubectl port-forward svc/netaware-aggregator 7401)."
    )]
    Unreachable { url: String, reason: String },
    #[error("the aggregator answered with an error: {0}")]
    Status(#[from] tonic::Status),
    #[error("cannot find the token to send: {0} (give --token)")]
    Credentials(String),
    #[error("cannot render YAML: {0}")]
    Yaml(String),
    #[error("cannot serve the view: {0}")]
    Listen(String),
}

/// netaware: look at the network as netaware measured it.
#[derive(Debug, Parser)]
#[command(name = "netaware", version)]
pub struct Cli {
    /// Aggregator query endpoint.
    #[arg(long, global = true, env = ENV_AGGREGATOR, default_value = netaware_common::default_text!(default_aggregator()))]
    pub aggregator: String,
    /// PEM CA bundle that signed the aggregator's certificate, for an
    /// https:// --aggregator (the chart's Secret has it as ca.crt).
    #[arg(long, global = true, env = ENV_CA_FILE)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Bearer token for the query API (an aggregator with --query-auth
    /// token); by default the kubeconfig's current user's token, as kubectl
    /// sends it.
    #[arg(long, global = true, env = ENV_TOKEN, hide_env_values = true)]
    pub token: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the link-state matrix: one row per source, one column per destination.
    Matrix(MatrixArgs),
    /// Print every node's groups, quality and figures (what its labels carry).
    Nodes(OutputArgs),
    /// Print the nested latency groups and their members.
    Groups(OutputArgs),
    /// Choose k nodes for a job: the smallest largest RTT between them, near
    /// ties broken by bottleneck bandwidth, then quality.
    Place(PlaceArgs),
    /// Serve a view of the network for your browser on this machine: the
    /// link matrix as a heatmap, pair and node figures, placements. It asks
    /// the aggregator with your address and credentials, as `kubectl
    /// proxy` does; prints the URL and runs until interrupted.
    Ui(UiArgs),
}

#[derive(Debug, clap::Args)]
pub struct UiArgs {
    /// Loopback address and port to serve on (port 0: any free one).
    #[arg(long, default_value = ui::DEFAULT_LISTEN)]
    pub listen: std::net::SocketAddr,
}

#[derive(Debug, clap::Args)]
pub struct PlaceArgs {
    /// How many nodes the job needs (with --shape: its ranks, may be left out).
    #[arg(short = 'k', long = "nodes", value_parser = clap::value_parser!(u32).range(1..), required_unless_present = "shape")]
    pub k: Option<u32>,
    /// The job's shape, innermost level first: `tp=2,dp=4`, with bytes each
    /// level all-reduces per step if they differ: `tp=2:256MiB,dp=4:16MiB`
    /// (a level without takes --bytes). One node per rank; the answer gives
    /// each rank its node.
    #[arg(long, value_parser = parse_shape)]
    pub shape: Option<Shape>,
    /// All-reduce message size for the predicted time (e.g. 100MB, 8MiB).
    #[arg(long, value_parser = netaware_common::parse_bytes)]
    pub bytes: Option<u64>,
    /// Only nodes whose labels match this selector (kubectl -l syntax).
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Nodes that must be chosen (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub include: Vec<String>,
    /// Nodes that must not be chosen (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub exclude: Vec<String>,
    /// Every chosen pair must have a measured bandwidth of at least this (Mbit/s).
    #[arg(long, value_name = "MBPS")]
    pub min_bandwidth: Option<f64>,
    /// Also consider nodes whose agents have not reported recently (left
    /// out by default).
    #[arg(long)]
    pub allow_stale: bool,
    /// Also say why every other node was not chosen.
    #[arg(long)]
    pub explain: bool,
    /// Output format; `yaml` prints a nodeAffinity block for a pod template.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = PlaceOutput::Table)]
    pub output: PlaceOutput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlaceOutput {
    Table,
    Json,
    Yaml,
    /// An MPI hostfile, one line per rank in rank order (`node slots=1`).
    Hostfile,
}

/// `--shape`: the model's grammar with the CLI's byte counts.
fn parse_shape(text: &str) -> Result<Shape, String> {
    Shape::parse(text, netaware_common::parse_bytes).map_err(|e| e.to_string())
}

#[derive(Debug, clap::Args)]
pub struct OutputArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, clap::Args)]
pub struct MatrixArgs {
    /// Figures to show in each cell (comma separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Metric::RttP50, Metric::Loss])]
    pub metric: Vec<Metric>,
    /// Probe method to show.
    #[arg(long, value_enum, default_value_t = Method::Udp)]
    pub method: Method,
    /// Only links from or to this node (repeatable).
    #[arg(long = "node", conflicts_with = "group")]
    pub nodes: Vec<String>,
    /// Only links between members of this group (an id from `netaware groups`).
    #[arg(long)]
    pub group: Option<String>,
    /// The level of --group (1, 2 or 3).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=3), requires = "group")]
    pub level: u32,
    /// Every link even on a large cluster (by default more than 200 nodes
    /// are summarised by group).
    #[arg(long)]
    pub full: bool,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Metric {
    RttMin,
    RttMean,
    RttP50,
    RttP90,
    RttP99,
    RttMax,
    Jitter,
    Loss,
    Samples,
    /// Latest bandwidth test from src to dst (Mbit/s).
    Bandwidth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Method {
    Udp,
    Icmp,
}

impl From<Method> for ProbeMethod {
    fn from(m: Method) -> Self {
        match m {
            Method::Udp => ProbeMethod::StampUdp,
            Method::Icmp => ProbeMethod::IcmpEcho,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// The aggregator's query API: where, and (for `https://`) the CA bundle
/// that signed its certificate.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    pub ca_file: Option<std::path::PathBuf>,
    /// Sent as `authorization: Bearer`.
    pub token: Option<String>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url)
            .field("ca_file", &self.ca_file)
            .field("token", &self.token.as_ref().map(|_| "(set)"))
            .finish()
    }
}

impl From<&str> for Target {
    /// A plain-text (`http://`) target without a token.
    fn from(url: &str) -> Self {
        Self {
            url: url.to_string(),
            ..Self::default()
        }
    }
}

impl Cli {
    /// The aggregator this command line names, with the token to send.
    pub fn target(&self) -> Result<Target, Error> {
        Ok(Target {
            url: self.aggregator.clone(),
            ca_file: self.ca_file.clone(),
            token: credentials::token(self.token.as_deref()).map_err(Error::Credentials)?,
        })
    }
}

/// A query client of the aggregator.
pub type Client = netaware_proto::client::QueryClient;

/// Connect to the query service.
pub async fn connect(target: &Target) -> Result<Client, Error> {
    let url = &target.url;
    let unreachable = |reason: String| Error::Unreachable {
        url: url.to_string(),
        reason,
    };
    let endpoint = netaware_proto::client::endpoint(url, target.ca_file.as_deref())
        .map_err(unreachable)?
        .connect_timeout(CONNECT_TIMEOUT);
    let channel = endpoint.connect().await.map_err(|e| {
        let mut reason = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            reason = format!("{reason}: {s}");
            src = s.source();
        }
        unreachable(reason)
    })?;
    let bearer =
        netaware_proto::client::Bearer::new(target.token.as_deref()).map_err(Error::Credentials)?;
    // The server's limits, on purpose: an answer the server may send is
    // one the CLI accepts (tonic's default would refuse a 150-node matrix).
    Ok(QueryServiceClient::with_interceptor(channel, bearer)
        .max_decoding_message_size(netaware_proto::limits::MAX_QUERY_RESPONSE_BYTES)
        .max_encoding_message_size(netaware_proto::limits::MAX_QUERY_REQUEST_BYTES))
}

/// The groups as JSON.
pub(crate) fn groups_json(g: &ListGroupsResponse) -> Value {
    Value::Array(
        g.groups
            .iter()
            .map(|x| json!({"level": x.level, "id": x.id, "members": x.members, "max_rtt_us": x.max_rtt_us}))
            .collect(),
    )
}

/// Run one CLI command and return what to print.
pub async fn execute(cli: &Cli) -> Result<String, Error> {
    let target = cli.target()?;
    match &cli.command {
        Command::Matrix(args) => {
            let method = ProbeMethod::from(args.method);
            let select = Selection {
                nodes: args.nodes.clone(),
                group: args.group.clone().map(|g| (g, args.level)),
            };
            if select.is_all() && !args.full {
                let known = count_nodes(&target).await?;
                if known > SUMMARY_ABOVE {
                    let mut client = connect(&target).await?;
                    let g = client.list_groups(ListGroupsRequest {}).await?.into_inner();
                    return Ok(match args.output {
                        Output::Table => render_group_summary(known, &g),
                        Output::Json => format!("{:#}\n", groups_json(&g)),
                    });
                }
            }
            let m = fetch_matrix(&target, method, &select).await?;
            Ok(match args.output {
                Output::Table => render_table(&m, &args.metric, method),
                Output::Json => format!("{:#}\n", render_json(&m)),
            })
        }
        Command::Nodes(args) => {
            let nodes = fetch_nodes(&target).await?;
            Ok(match args.output {
                Output::Table => render_nodes(&nodes),
                Output::Json => format!("{:#}\n", nodes_json(&nodes)),
            })
        }
        Command::Groups(args) => {
            let mut client = connect(&target).await?;
            let g = client.list_groups(ListGroupsRequest {}).await?.into_inner();
            Ok(match args.output {
                Output::Table => render_groups(&g),
                Output::Json => format!("{:#}\n", groups_json(&g)),
            })
        }
        Command::Ui(args) => {
            ui::check_listen(args.listen)?;
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .map_err(|e| Error::Listen(format!("cannot listen on {}: {e}", args.listen)))?;
            let at = listener
                .local_addr()
                .map_err(|e| Error::Listen(e.to_string()))?;
            netaware_common::print_stdout(&format!(
                "netaware ui: http://{at}/ (asking {}; Ctrl-C to stop)\n",
                target.url
            ));
            tokio::select! {
                () = ui::serve(listener, target) => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            Ok(String::new())
        }
        Command::Place(args) => {
            let mut client = connect(&target).await?;
            let p = client.place(place_request(args)).await?.into_inner();
            match args.output {
                PlaceOutput::Table => Ok(render_place(&p, args.bytes)),
                PlaceOutput::Json => Ok(format!("{:#}\n", place_json(&p, args.bytes))),
                PlaceOutput::Yaml => place_yaml(&p),
                PlaceOutput::Hostfile => Ok(place_hostfile(&p)),
            }
        }
    }
}
