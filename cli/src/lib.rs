//! The `netaware` command-line client: talks to the aggregator's query API
//! and renders answers for people (aligned tables) and machines (JSON).

use std::fmt::Write as _;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use netaware_proto::ProbeMethod;
use netaware_proto::v1::query_service_client::QueryServiceClient;
use netaware_proto::v1::{
    GetMatrixRequest, GetMatrixResponse, GetNodeRequest, GetNodeResponse, LinkState,
    ListGroupsRequest, ListGroupsResponse, PlaceRequest, PlaceResponse,
};
use serde_json::{Value, json};

pub const ENV_AGGREGATOR: &str = "NETAWARE_QUERY";
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
    #[error("cannot render YAML: {0}")]
    Yaml(String),
}

/// netaware: look at the network as netaware measured it.
#[derive(Debug, Parser)]
#[command(name = "netaware", version)]
pub struct Cli {
    /// Aggregator query endpoint.
    #[arg(long, global = true, env = ENV_AGGREGATOR, default_value = netaware_common::default_text!(default_aggregator()))]
    pub aggregator: String,
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
}

#[derive(Debug, clap::Args)]
pub struct PlaceArgs {
    /// How many nodes the job needs.
    #[arg(short = 'k', long = "nodes", value_parser = clap::value_parser!(u32).range(1..))]
    pub k: u32,
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
    /// Only nodes whose agents reported recently.
    #[arg(long)]
    pub fresh: bool,
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

/// Connect to the query service.
pub async fn connect(url: &str) -> Result<QueryServiceClient<tonic::transport::Channel>, Error> {
    let unreachable = |reason: String| Error::Unreachable {
        url: url.to_string(),
        reason,
    };
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| unreachable(format!("not a valid URL ({e})")))?
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
    Ok(QueryServiceClient::new(channel))
}

/// Fetch the matrix for one method.
pub async fn fetch_matrix(url: &str, method: ProbeMethod) -> Result<GetMatrixResponse, Error> {
    let mut client = connect(url).await?;
    let r = client
        .get_matrix(GetMatrixRequest {
            method: method as i32,
        })
        .await?;
    Ok(r.into_inner())
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// The value of one metric for a link (milliseconds, a fraction for loss, a count for samples).
pub fn metric_value(link: &LinkState, metric: Metric) -> Option<f64> {
    let w = link.latest.as_ref()?;
    let has_rtt = w.received > 0;
    Some(match metric {
        Metric::Loss => {
            if w.sent == 0 {
                return None;
            }
            w.sent.saturating_sub(w.received) as f64 / w.sent as f64
        }
        Metric::Samples => w.received as f64,
        // Not a probe figure: it comes from GetMatrixResponse.bandwidth.
        Metric::Bandwidth => return None,
        _ if !has_rtt => return None,
        Metric::RttMin => ms(w.rtt_min_ns),
        Metric::RttMean => ms(w.rtt_mean_ns),
        Metric::RttP50 => ms(w.rtt_p50_ns),
        Metric::RttP90 => ms(w.rtt_p90_ns),
        Metric::RttP99 => ms(w.rtt_p99_ns),
        Metric::RttMax => ms(w.rtt_max_ns),
        Metric::Jitter => ms(w.jitter_ns),
    })
}

fn format_metric(metric: Metric, v: Option<f64>) -> String {
    match (metric, v) {
        (_, None) => "-".into(),
        (Metric::Loss, Some(v)) => format!("{:.1}%", v * 100.0),
        (Metric::Samples, Some(v)) => format!("{v:.0}"),
        (Metric::Bandwidth, Some(v)) => format!("{v:.0}Mb/s"),
        (_, Some(v)) if v < 10.0 => format!("{v:.3}ms"),
        (_, Some(v)) => format!("{v:.1}ms"),
    }
}

/// An aligned table: rows are sources, columns destinations; each cell holds
/// the chosen metrics separated by " / ". A `*` marks a stale link.
pub fn render_table(m: &GetMatrixResponse, metrics: &[Metric], method: ProbeMethod) -> String {
    let names: Vec<&str> = m.nodes.iter().map(|n| n.node_name.as_str()).collect();
    let cell = |src: &str, dst: &str| -> String {
        if src == dst {
            return "·".into();
        }
        let link = m
            .links
            .iter()
            .find(|l| l.src == src && l.dst == dst && l.method == method as i32);
        let bandwidth = m
            .bandwidth
            .iter()
            .find(|b| b.sender == src && b.receiver == dst)
            .map(|b| b.mbps);
        if link.is_none() && (bandwidth.is_none() || !metrics.contains(&Metric::Bandwidth)) {
            return "-".into();
        }
        let body: Vec<String> = metrics
            .iter()
            .map(|mt| match mt {
                Metric::Bandwidth => format_metric(*mt, bandwidth),
                _ => format_metric(*mt, link.and_then(|l| metric_value(l, *mt))),
            })
            .collect();
        let stale = if link.is_some_and(|l| l.stale) {
            "*"
        } else {
            ""
        };
        format!("{}{stale}", body.join(" / "))
    };
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut header = vec!["src \\ dst".to_string()];
    header.extend(names.iter().map(|n| n.to_string()));
    rows.push(header);
    for src in &names {
        let mut row = vec![src.to_string()];
        row.extend(names.iter().map(|dst| cell(src, dst)));
        rows.push(row);
    }
    let mut out = netaware_common::aligned_table(&rows, 1);
    let names: Vec<&str> = metrics.iter().map(|m| metric_name(*m)).collect();
    let _ = writeln!(
        out,
        "\nmethod {}; cells: {}; '-' no data; '*' stale (no window for {} s)",
        method.short_name(),
        names.join(" / "),
        m.stale_after_ms / 1000
    );
    let down: Vec<&str> = m
        .nodes
        .iter()
        .filter(|n| !n.connected)
        .map(|n| n.node_name.as_str())
        .collect();
    if !down.is_empty() {
        let _ = writeln!(out, "disconnected agents: {}", down.join(", "));
    }
    out
}

fn metric_name(m: Metric) -> &'static str {
    match m {
        Metric::RttMin => "rtt-min",
        Metric::RttMean => "rtt-mean",
        Metric::RttP50 => "rtt-p50",
        Metric::RttP90 => "rtt-p90",
        Metric::RttP99 => "rtt-p99",
        Metric::RttMax => "rtt-max",
        Metric::Jitter => "jitter",
        Metric::Loss => "loss",
        Metric::Samples => "samples",
        Metric::Bandwidth => "bandwidth",
    }
}

/// JSON for machines: every node and every link with all figures.
pub fn render_json(m: &GetMatrixResponse) -> Value {
    let links: Vec<Value> = m
        .links
        .iter()
        .map(|l| {
            let w = l.latest.clone().unwrap_or_default();
            let s = l.smoothed.unwrap_or_default();
            json!({
                "src": l.src,
                "dst": l.dst,
                "method": ProbeMethod::try_from(l.method).unwrap_or(ProbeMethod::Unspecified).short_name(),
                "stale": l.stale,
                "windows_total": l.windows_total,
                "disturbed": l.disturbed,
                "disturbed_windows_total": l.disturbed_windows_total,
                "latest": {
                    "window_start_unix_us": w.window_start_unix_us,
                    "window_end_unix_us": w.window_end_unix_us,
                    "sent": w.sent,
                    "received": w.received,
                    "duplicates": w.duplicates,
                    "reordered": w.reordered,
                    "rtt_min_ns": w.rtt_min_ns,
                    "rtt_mean_ns": w.rtt_mean_ns,
                    "rtt_p50_ns": w.rtt_p50_ns,
                    "rtt_p90_ns": w.rtt_p90_ns,
                    "rtt_p99_ns": w.rtt_p99_ns,
                    "rtt_max_ns": w.rtt_max_ns,
                    "jitter_ns": w.jitter_ns,
                },
                "smoothed": {
                    "rtt_p50_us": s.rtt_p50_us,
                    "rtt_p99_us": s.rtt_p99_us,
                    "jitter_us": s.jitter_us,
                    "loss_ppm": s.loss_ppm,
                },
            })
        })
        .collect();
    let nodes: Vec<Value> = m
        .nodes
        .iter()
        .map(|n| {
            json!({
                "name": n.node_name,
                "connected": n.connected,
                "software_version": n.software_version,
                "probe_addresses": n.probe_addresses,
                "dropped_windows_total": n.dropped_windows_total,
            })
        })
        .collect();
    let bandwidth: Vec<Value> = m
        .bandwidth
        .iter()
        .map(|b| {
            json!({
                "sender": b.sender,
                "receiver": b.receiver,
                "mbps": b.mbps,
                "stream_mbps": b.stream_mbps,
                "started_unix_us": b.started_unix_us,
                "tests_total": b.tests_total,
            })
        })
        .collect();
    json!({
        "generated_unix_us": m.generated_unix_us,
        "stale_after_ms": m.stale_after_ms,
        "nodes": nodes,
        "links": links,
        "bandwidth": bandwidth,
    })
}

/// Every known node with its published facts (nodes not computed yet are skipped).
pub async fn fetch_nodes(url: &str) -> Result<Vec<GetNodeResponse>, Error> {
    let mut client = connect(url).await?;
    // The level-1 groups name every placed node (the others have no facts
    // yet); asking for the matrix would ship every link just for the names.
    let groups = match client.list_groups(ListGroupsRequest {}).await {
        Ok(r) => r.into_inner().groups,
        Err(s) if s.code() == tonic::Code::Unavailable => return Ok(Vec::new()),
        Err(s) => return Err(s.into()),
    };
    let names: std::collections::BTreeSet<String> = groups
        .into_iter()
        .filter(|g| g.level == 1)
        .flat_map(|g| g.members)
        .collect();
    let mut out = Vec::new();
    for node_name in names {
        match client.get_node(GetNodeRequest { node_name }).await {
            Ok(r) => out.push(r.into_inner()),
            Err(s) if s.code() == tonic::Code::Unavailable => {}
            Err(s) => return Err(s.into()),
        }
    }
    Ok(out)
}

/// The nodes table: groups, quality and the figures behind it.
pub fn render_nodes(nodes: &[GetNodeResponse]) -> String {
    let mut rows = vec![
        [
            "node",
            "l1",
            "l2",
            "l3",
            "quality",
            "rtt p50 us",
            "rtt p99 us",
            "jitter us",
            "loss ppm",
            "fresh",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>(),
    ];
    for n in nodes {
        let name = n.status.as_ref().map_or("?", |s| s.node_name.as_str());
        rows.push(vec![
            name.to_string(),
            n.group_l1.clone(),
            n.group_l2.clone(),
            n.group_l3.clone(),
            n.quality.map_or("-".into(), |q| q.to_string()),
            format!("{:.0}", n.rtt_p50_us),
            format!("{:.0}", n.rtt_p99_us),
            format!("{:.0}", n.jitter_us),
            format!("{:.0}", n.loss_ppm),
            n.fresh.to_string(),
        ]);
    }
    netaware_common::aligned_table(&rows, 4)
}

/// Nodes as JSON.
pub fn nodes_json(nodes: &[GetNodeResponse]) -> Value {
    Value::Array(
        nodes
            .iter()
            .map(|n| {
                json!({
                    "name": n.status.as_ref().map(|s| s.node_name.clone()),
                    "group_l1": n.group_l1, "group_l2": n.group_l2, "group_l3": n.group_l3,
                    "quality": n.quality,
                    "rtt_p50_us": n.rtt_p50_us, "rtt_p99_us": n.rtt_p99_us,
                    "jitter_us": n.jitter_us, "loss_ppm": n.loss_ppm,
                    "bandwidth_mbps": n.bandwidth_mbps, "fresh": n.fresh,
                })
            })
            .collect(),
    )
}

/// The groups table, level by level.
pub fn render_groups(g: &ListGroupsResponse) -> String {
    let mut rows = vec![
        ["level", "group", "max rtt us", "members"]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
    ];
    let mut groups = g.groups.clone();
    groups.sort_by(|a, b| (a.level, &a.id).cmp(&(b.level, &b.id)));
    for x in &groups {
        rows.push(vec![
            format!("l{}", x.level),
            x.id.clone(),
            x.members.join(","),
            format!("{:.0}", x.max_rtt_us),
        ]);
    }
    netaware_common::aligned_table(&rows, 3)
}

/// The request for `netaware place`.
pub fn place_request(a: &PlaceArgs) -> PlaceRequest {
    PlaceRequest {
        k: a.k,
        include: a.include.clone(),
        exclude: a.exclude.clone(),
        label_selector: a.selector.clone().unwrap_or_default(),
        min_bandwidth_mbps: a.min_bandwidth.unwrap_or(0.0),
        fresh_only: a.fresh,
        allreduce_bytes: a.bytes.unwrap_or(0),
        explain: a.explain,
    }
}

/// `None` for the proto's "0 = unknown".
fn known(v: f64) -> Option<f64> {
    (v > 0.0).then_some(v)
}

/// The placement as JSON.
pub fn place_json(p: &PlaceResponse, bytes: Option<u64>) -> Value {
    json!({
        "nodes": p.nodes,
        "max_rtt_us": p.max_rtt_us,
        "bottleneck_bandwidth_mbps": known(p.bottleneck_bandwidth_mbps),
        "pairs": p.pairs,
        "bandwidth_pairs_measured": p.bandwidth_pairs_measured,
        "allreduce_bytes": bytes,
        "predicted_allreduce_ms": known(p.predicted_allreduce_ms),
        "exclusions": p.exclusions.iter()
            .map(|e| json!({"node": e.node_name, "reason": e.reason}))
            .collect::<Vec<_>>(),
    })
}

/// The placement as a table, exclusions below it.
pub fn render_place(p: &PlaceResponse, bytes: Option<u64>) -> String {
    let mut rows = vec![
        vec!["nodes".to_string(), p.nodes.join(" ")],
        vec![
            "largest RTT".into(),
            format!("{:.3} ms", p.max_rtt_us / 1000.0),
        ],
        vec![
            "bottleneck bandwidth".into(),
            match known(p.bottleneck_bandwidth_mbps) {
                Some(b) => format!(
                    "{b:.0} Mbit/s ({} of {} pairs measured)",
                    p.bandwidth_pairs_measured, p.pairs
                ),
                None => format!("not measured yet (0 of {} pairs)", p.pairs),
            },
        ],
    ];
    if let Some(b) = bytes {
        rows.push(vec![
            format!("predicted all-reduce ({b} bytes)"),
            match known(p.predicted_allreduce_ms) {
                Some(t) => format!("{t:.1} ms"),
                None if p.nodes.len() < 2 => "0 ms (one node)".into(),
                None => "unknown until every chosen pair's bandwidth is measured".into(),
            },
        ]);
    }
    let mut out = netaware_common::aligned_table(&rows, 2);
    if !p.exclusions.is_empty() {
        let mut ex = vec![vec!["NODE".to_string(), "NOT CHOSEN BECAUSE".to_string()]];
        ex.extend(
            p.exclusions
                .iter()
                .map(|e| vec![e.node_name.clone(), e.reason.clone()]),
        );
        out.push('\n');
        out.push_str(&netaware_common::aligned_table(&ex, 2));
    }
    out
}

/// A nodeAffinity block pinning a pod template to the chosen nodes, by the
/// `kubernetes.io/hostname` label (which the kubelet sets to the node name
/// unless overridden with --hostname-override).
pub fn place_yaml(p: &PlaceResponse, k: u32) -> Result<String, Error> {
    let affinity = json!({
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{
                        "matchExpressions": [{
                            "key": "kubernetes.io/hostname",
                            "operator": "In",
                            "values": p.nodes,
                        }]
                    }]
                }
            }
        }
    });
    let body = serde_norway::to_string(&affinity).map_err(|e| Error::Yaml(e.to_string()))?;
    let bw = known(p.bottleneck_bandwidth_mbps)
        .map_or("not measured".to_string(), |b| format!("{b:.0} Mbit/s"));
    Ok(format!(
        "# netaware place -k {k}: largest RTT {:.3} ms, bottleneck bandwidth {bw}.\n\
         # Paste under the Job's spec.template.spec; with k pods, add a\n\
         # podAntiAffinity on kubernetes.io/hostname to get one pod per node.\n{body}",
        p.max_rtt_us / 1000.0
    ))
}

/// Run one CLI command and return what to print.
pub async fn execute(cli: &Cli) -> Result<String, Error> {
    match &cli.command {
        Command::Matrix(args) => {
            let method = ProbeMethod::from(args.method);
            let m = fetch_matrix(&cli.aggregator, method).await?;
            Ok(match args.output {
                Output::Table => render_table(&m, &args.metric, method),
                Output::Json => format!("{:#}\n", render_json(&m)),
            })
        }
        Command::Nodes(args) => {
            let nodes = fetch_nodes(&cli.aggregator).await?;
            Ok(match args.output {
                Output::Table => render_nodes(&nodes),
                Output::Json => format!("{:#}\n", nodes_json(&nodes)),
            })
        }
        Command::Groups(args) => {
            let mut client = connect(&cli.aggregator).await?;
            let g = client.list_groups(ListGroupsRequest {}).await?.into_inner();
            Ok(match args.output {
                Output::Table => render_groups(&g),
                Output::Json => {
                    let v: Vec<Value> = g
                        .groups
                        .iter()
                        .map(|x| json!({"level": x.level, "id": x.id, "members": x.members, "max_rtt_us": x.max_rtt_us}))
                        .collect();
                    format!("{:#}\n", Value::Array(v))
                }
            })
        }
        Command::Place(args) => {
            let mut client = connect(&cli.aggregator).await?;
            let p = client.place(place_request(args)).await?.into_inner();
            match args.output {
                PlaceOutput::Table => Ok(render_place(&p, args.bytes)),
                PlaceOutput::Json => Ok(format!("{:#}\n", place_json(&p, args.bytes))),
                PlaceOutput::Yaml => place_yaml(&p, args.k),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netaware_proto::v1::{LinkWindow, NodeStatus};

    fn sample() -> GetMatrixResponse {
        let node = |n: &str| NodeStatus {
            node_name: n.into(),
            connected: n != "c",
            ..Default::default()
        };
        let link = |src: &str, dst: &str, p50_ns: u64, received: u64, stale: bool| LinkState {
            src: src.into(),
            dst: dst.into(),
            method: ProbeMethod::StampUdp as i32,
            latest: Some(LinkWindow {
                peer: dst.into(),
                sent: 100,
                received,
                rtt_p50_ns: p50_ns,
                ..Default::default()
            }),
            stale,
            ..Default::default()
        };
        GetMatrixResponse {
            nodes: vec![node("a"), node("bb"), node("c")],
            links: vec![
                link("a", "bb", 1_234_567, 100, false),
                link("bb", "a", 25_000_000, 98, true),
            ],
            stale_after_ms: 30_000,
            ..Default::default()
        }
    }

    #[test]
    fn table_has_aligned_columns_and_marks_missing_and_stale_links() {
        let t = render_table(
            &sample(),
            &[Metric::RttP50, Metric::Loss],
            ProbeMethod::StampUdp,
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["src", "\\", "dst", "a", "bb", "c"]
        );
        assert!(lines[1].contains("1.235ms / 0.0%"), "{t}");
        assert!(lines[2].contains("25.0ms / 2.0%*"), "{t}");
        assert!(lines[3].starts_with("c "), "{t}");
        // Every row has the same width up to its last column.
        let width = |l: &str| l.chars().count();
        assert_eq!(width(lines[0]), width(lines[1]));
        assert_eq!(width(lines[1]), width(lines[2]));
        assert!(t.contains("disconnected agents: c"), "{t}");
    }

    #[test]
    fn metrics_without_answers_are_dashes() {
        let mut m = sample();
        if let Some(w) = m.links[0].latest.as_mut() {
            w.received = 0;
        }
        assert_eq!(metric_value(&m.links[0], Metric::RttP50), None);
        assert_eq!(metric_value(&m.links[0], Metric::Loss), Some(1.0));
    }

    #[test]
    fn json_carries_every_link_with_names() {
        let v = render_json(&sample());
        assert_eq!(v["links"].as_array().map(Vec::len), Some(2));
        assert_eq!(v["links"][0]["method"], "udp");
        assert_eq!(v["links"][0]["latest"]["rtt_p50_ns"], 1_234_567);
        assert_eq!(v["nodes"][2]["connected"], false);
    }
}
