//! `netaware matrix`: the link-state matrix as an aligned table of one or
//! more metrics, or as JSON with every link, bandwidth test and concurrent
//! test.

use std::fmt::Write as _;

use netaware_proto::ProbeMethod;
use netaware_proto::v1::{GetMatrixRequest, GetMatrixResponse, LinkState};
use serde_json::{Value, json};

use crate::{Error, Metric, Target, connect};

/// Past this many nodes `netaware matrix` prints the groups instead of the
/// matrix (unless zoomed or `--full`): a 200-column table is past reading,
/// and its JSON past 10 MB.
pub const SUMMARY_ABOVE: usize = 200;
/// Links asked for per page: about 3 MB without histograms.
const PAGE_SIZE: u32 = 20_000;

/// Which links to fetch.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Links from or to these nodes.
    pub nodes: Vec<String>,
    /// Links among the members of this group (id, level).
    pub group: Option<(String, u32)>,
}

impl Selection {
    pub fn is_all(&self) -> bool {
        self.nodes.is_empty() && self.group.is_none()
    }
}

/// How many nodes the aggregator knows (one page of a single link).
pub async fn count_nodes(target: &Target) -> Result<usize, Error> {
    let mut client = connect(target).await?;
    let r = client
        .get_matrix(GetMatrixRequest {
            page_size: 1,
            ..Default::default()
        })
        .await?;
    Ok(r.into_inner().nodes.len())
}

/// Fetch the selected links of one method, page by page.
pub async fn fetch_matrix(
    target: &Target,
    method: ProbeMethod,
    select: &Selection,
) -> Result<GetMatrixResponse, Error> {
    let mut client = connect(target).await?;
    let (group, group_level) = select.group.clone().unwrap_or_default();
    let mut request = GetMatrixRequest {
        method: method as i32,
        include_histograms: false,
        nodes: select.nodes.clone(),
        group,
        group_level,
        page_size: PAGE_SIZE,
        page_token: String::new(),
    };
    let mut all = client.get_matrix(request.clone()).await?.into_inner();
    while !all.next_page_token.is_empty() {
        request.page_token = std::mem::take(&mut all.next_page_token);
        let page = client.get_matrix(request.clone()).await?.into_inner();
        all.links.extend(page.links);
        all.next_page_token = page.next_page_token;
    }
    Ok(all)
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

/// One link with all its figures, as `-o json` prints it.
pub fn link_json(l: &LinkState) -> Value {
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
}

/// JSON for machines: every node and every link with all figures.
pub fn render_json(m: &GetMatrixResponse) -> Value {
    let links: Vec<Value> = m.links.iter().map(link_json).collect();
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
    let concurrent: Vec<Value> = m
        .concurrent
        .iter()
        .map(|c| {
            json!({
                "members": c.members,
                "flow_mbps": c.flow_mbps,
                "share_mbps": c.share_mbps,
                "started_unix_us": c.started_unix_us,
            })
        })
        .collect();
    json!({
        "generated_unix_us": m.generated_unix_us,
        "stale_after_ms": m.stale_after_ms,
        "nodes": nodes,
        "links": links,
        "bandwidth": bandwidth,
        "concurrent": concurrent,
    })
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
            concurrent: vec![netaware_proto::v1::ConcurrentTest {
                members: vec!["bb".into(), "a".into(), "c".into()],
                flow_mbps: vec![700.0, 800.0, 900.0],
                share_mbps: 800.0,
                started_unix_us: 5,
            }],
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
        assert_eq!(v["concurrent"][0]["members"][0], "bb", "ring order");
        assert_eq!(v["concurrent"][0]["share_mbps"], 800.0);
    }
}
