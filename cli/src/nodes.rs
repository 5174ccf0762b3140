//! `netaware nodes` and `netaware groups`: every node's groups, quality and
//! figures (what its labels carry), and the nested groups.

use netaware_proto::v1::{
    GetNodeRequest, GetNodeResponse, Group, ListGroupsRequest, ListGroupsResponse,
};
use serde_json::{Value, json};

use crate::{Client, Error, Target, connect};

/// Every known node with its published facts (nodes not computed yet are skipped).
pub async fn fetch_nodes(target: &Target) -> Result<Vec<GetNodeResponse>, Error> {
    let mut client = connect(target).await?;
    // The level-1 groups name every placed node (the others have no facts
    // yet); asking for the matrix would ship every link just for the names.
    let groups = match client.list_groups(ListGroupsRequest {}).await {
        Ok(r) => r.into_inner().groups,
        Err(s) if s.code() == tonic::Code::Unavailable => return Ok(Vec::new()),
        Err(s) => return Err(s.into()),
    };
    nodes_of(&mut client, &groups).await
}

/// The published facts of every member of the level-1 `groups`, asked on
/// `client`.
pub async fn nodes_of(
    client: &mut Client,
    groups: &[Group],
) -> Result<Vec<GetNodeResponse>, Error> {
    let names: std::collections::BTreeSet<String> = groups
        .iter()
        .filter(|g| g.level == 1)
        .flat_map(|g| g.members.iter().cloned())
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
                    // Sorted by key (the wire's map has no order).
                    "labels": n.labels.iter().collect::<std::collections::BTreeMap<_, _>>(),
                })
            })
            .collect(),
    )
}

/// A large cluster's matrix in brief: each group with its size, width and
/// first members, level by level, and how to zoom in.
pub fn render_group_summary(nodes: usize, g: &ListGroupsResponse) -> String {
    let mut rows = vec![
        ["level", "group", "first members", "nodes", "max rtt us"]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
    ];
    let mut groups = g.groups.clone();
    groups.sort_by(|a, b| (a.level, &a.id).cmp(&(b.level, &b.id)));
    for x in &groups {
        let mut first = x
            .members
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join(",");
        if x.members.len() > 3 {
            first.push_str(",…");
        }
        rows.push(vec![
            format!("l{}", x.level),
            x.id.clone(),
            first,
            x.members.len().to_string(),
            format!("{:.0}", x.max_rtt_us),
        ]);
    }
    format!(
        "{nodes} nodes: too many for one matrix, so by group. Zoom in with --group ID [--level N] or --node NAME; --full prints every link.\n\n{}",
        netaware_common::aligned_table(&rows, 3)
    )
}

/// The groups table, level by level.
pub fn render_groups(g: &ListGroupsResponse) -> String {
    let mut rows = vec![
        ["level", "group", "members", "max rtt us"]
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
