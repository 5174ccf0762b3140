//! What `/api/view` and `/api/pairs` answer, and the cache in front of
//! the aggregator.
//!
//! The page asks every few seconds, and a second tab asks as often again;
//! at 5,000 nodes the whole matrix takes the aggregator about 3 s and 100
//! MB to send. So the view is fetched once for everyone, kept, and served
//! from memory: an answer comes at once, and a fetch starts behind it when
//! the kept one is due ([`refresh_after`]). Above [`CELLS_UP_TO`] nodes
//! the page draws pairs of groups, of the finest level with at most that
//! many groups ([`level_for`]), so only those ([`cells`]) are sent, and a
//! zoom into two groups asks for their links alone ([`pairs`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hyper::StatusCode;
use netaware_proto::ProbeMethod;
use netaware_proto::v1::{GetMatrixResponse, ListGroupsRequest, ListGroupsResponse};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::matrix::{Selection, fetch_matrix, render_json};
use crate::{Error, Target, connect, groups_json};

/// Most rows the page draws: above this many nodes it draws pairs of
/// groups (of the finest level with at most this many), since a browser
/// colours 150² cells at once but not 5,000².
pub(super) const CELLS_UP_TO: usize = 150;
/// A kept view is fetched again after this long at least…
const MIN_REFRESH: Duration = Duration::from_secs(4);
/// …or this many times as long as it took to fetch, so a slow aggregator
/// spends at most a fifth of its time on this view.
const REFRESH_PER_FETCH: u32 = 4;
/// How long the first request waits for the first fetch.
const FIRST_FETCH_WAIT: Duration = Duration::from_secs(60);

/// An answer for the page: status and JSON.
pub(super) type Answer = (StatusCode, Value);

/// When a view that took `took` to fetch is due again.
pub(super) fn refresh_after(took: Duration) -> Duration {
    MIN_REFRESH.max(took * REFRESH_PER_FETCH)
}

/// The latest view and when it was fetched.
#[derive(Debug)]
struct Fetched {
    at: Instant,
    took: Duration,
    answer: Arc<Answer>,
}

/// The view, fetched once for every request and kept.
#[derive(Debug, Clone)]
pub(super) struct ViewCache {
    target: Arc<Target>,
    latest: watch::Sender<Option<Arc<Fetched>>>,
    fetching: Arc<AtomicBool>,
}

impl ViewCache {
    pub(super) fn new(target: Arc<Target>) -> Self {
        Self {
            target,
            latest: watch::Sender::new(None),
            fetching: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Start a fetch unless one is under way.
    pub(super) fn refresh(&self) {
        if self.fetching.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let answer = super::as_answer(view(&me.target).await);
            let fetched = Fetched {
                at: Instant::now(),
                took: start.elapsed(),
                answer: Arc::new(answer),
            };
            me.latest.send_replace(Some(Arc::new(fetched)));
            me.fetching.store(false, Ordering::Release);
        });
    }

    /// The kept view (fetching a newer one behind it when due), or the
    /// first one once it arrives.
    pub(super) async fn get(&self, now: Instant) -> Arc<Answer> {
        let kept = self.latest.borrow().clone();
        if let Some(f) = kept {
            if now.saturating_duration_since(f.at) >= refresh_after(f.took) {
                self.refresh();
            }
            return f.answer.clone();
        }
        self.refresh();
        let mut rx = self.latest.subscribe();
        let first = tokio::time::timeout(FIRST_FETCH_WAIT, rx.wait_for(Option::is_some)).await;
        match first {
            Ok(Ok(v)) => match v.as_ref() {
                Some(f) => f.answer.clone(),
                None => Arc::new(still_fetching()),
            },
            _ => Arc::new(still_fetching()),
        }
    }
}

fn still_fetching() -> Answer {
    (
        StatusCode::GATEWAY_TIMEOUT,
        json!({"error": format!("the aggregator has not answered within {} s; still asking", FIRST_FETCH_WAIT.as_secs())}),
    )
}

/// Each node's groups, l1 to l3 ("" where it has none yet).
fn groups_of(g: &ListGroupsResponse) -> BTreeMap<String, [String; 3]> {
    let mut of: BTreeMap<String, [String; 3]> = BTreeMap::new();
    for group in &g.groups {
        let Some(level) = (group.level as usize).checked_sub(1).filter(|l| *l < 3) else {
            continue;
        };
        for m in &group.members {
            of.entry(m.clone()).or_default()[level] = group.id.clone();
        }
    }
    of
}

/// Every node with its groups (the page's rows and their order).
fn node_groups_json(of: &BTreeMap<String, [String; 3]>) -> Value {
    Value::Array(
        of.iter()
            .map(|(name, [l1, l2, l3])| {
                json!({"name": name, "group_l1": l1, "group_l2": l2, "group_l3": l3})
            })
            .collect(),
    )
}

/// The level whose groups the page draws as rows: 0 (nodes) up to
/// [`CELLS_UP_TO`] nodes, else the finest level with at most that many
/// groups (l3 when none has).
fn level_for(of: &BTreeMap<String, [String; 3]>) -> usize {
    if of.len() <= CELLS_UP_TO {
        return 0;
    }
    (1..=3)
        .find(|&level| {
            let ids: BTreeSet<&str> = of.values().map(|g| g[level - 1].as_str()).collect();
            ids.len() <= CELLS_UP_TO
        })
        .unwrap_or(3)
}

/// Figures of the measured links between two groups.
#[derive(Debug, Default)]
struct Acc {
    rtt_p50: Vec<f64>,
    rtt_p99: Vec<f64>,
    jitter: Vec<f64>,
    loss: Vec<f64>,
    bandwidth: Vec<f64>,
    stale: u32,
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

fn max(v: &[f64]) -> Option<f64> {
    v.iter().copied().max_by(f64::total_cmp)
}

/// Group × group at `level` (1 to 3): how many directed pairs, how many
/// measured, and the median and largest of each figure over the measured
/// ones. At l1 the largest is what an unmeasured pair between the two
/// groups is taken to be (as `Place` estimates it: on the slow side,
/// docs/placement.md).
pub(super) fn cells(g: &ListGroupsResponse, m: &GetMatrixResponse, level: usize) -> Vec<Value> {
    let of = groups_of(g);
    let at = level.clamp(1, 3) - 1;
    let group_of = |n: &str| of.get(n).map(|x| x[at].as_str()).filter(|x| !x.is_empty());
    let mut size: HashMap<&str, u64> = HashMap::new();
    for groups in of.values() {
        if !groups[at].is_empty() {
            *size.entry(groups[at].as_str()).or_default() += 1;
        }
    }
    let mut acc: BTreeMap<(&str, &str), Acc> = BTreeMap::new();
    for l in &m.links {
        let (Some(a), Some(b)) = (group_of(&l.src), group_of(&l.dst)) else {
            continue;
        };
        let (Some(s), Some(w)) = (l.smoothed.as_ref(), l.latest.as_ref()) else {
            continue;
        };
        let e = acc.entry((a, b)).or_default();
        if w.received > 0 {
            e.rtt_p50.push(s.rtt_p50_us);
            e.rtt_p99.push(s.rtt_p99_us);
            e.jitter.push(s.jitter_us);
        }
        e.loss.push(s.loss_ppm);
        e.stale += u32::from(l.stale);
    }
    for b in &m.bandwidth {
        if let (Some(x), Some(y)) = (group_of(&b.sender), group_of(&b.receiver)) {
            acc.entry((x, y)).or_default().bandwidth.push(b.mbps);
        }
    }
    acc.into_iter()
        .map(|((a, b), mut e)| {
            let (na, nb) = (size[a], size[b]);
            let pairs = if a == b {
                na * na.saturating_sub(1)
            } else {
                na * nb
            };
            let figure = |v: &mut Vec<f64>| json!({"median": median(v), "max": max(v)});
            json!({
                "src": a,
                "dst": b,
                "pairs": pairs,
                "measured": e.loss.len(),
                "stale": e.stale,
                "rtt_p50_us": figure(&mut e.rtt_p50),
                "rtt_p99_us": figure(&mut e.rtt_p99),
                "jitter_us": figure(&mut e.jitter),
                "loss_ppm": figure(&mut e.loss),
                "bandwidth_mbps": figure(&mut e.bandwidth),
            })
        })
        .collect()
}

/// The whole view: nodes with their groups, the groups, the cells of the
/// level drawn (l1 when nodes are), and (up to [`CELLS_UP_TO`] nodes)
/// every UDP link.
async fn view(target: &Target) -> Result<Value, Error> {
    let groups = connect(target)
        .await?
        .list_groups(ListGroupsRequest {})
        .await?
        .into_inner();
    let matrix = fetch_matrix(target, ProbeMethod::StampUdp, &Selection::default()).await?;
    let of = groups_of(&groups);
    let level = level_for(&of);
    let by_nodes = level == 0;
    let mut v = json!({
        "kind": if by_nodes { "nodes" } else { "groups" },
        "level": level,
        "nodes": node_groups_json(&of),
        "groups": groups_json(&groups),
        "cells": cells(&groups, &matrix, level.max(1)),
        "links_total": matrix.links.len(),
        "generated_unix_us": matrix.generated_unix_us,
    });
    if by_nodes {
        v["matrix"] = render_json(&matrix);
    }
    Ok(v)
}

/// The links between the members of the `level` groups `a` and `b`, both
/// ways (and inside each), as `netaware matrix -o json` prints them, with
/// the l1 cells among them (for the estimates): a zoom.
pub(super) async fn pairs(target: &Target, a: &str, b: &str, level: u32) -> Result<Value, Error> {
    let groups = connect(target)
        .await?
        .list_groups(ListGroupsRequest {})
        .await?
        .into_inner();
    let members = |id: &str| {
        groups
            .groups
            .iter()
            .find(|g| g.level == level && g.id == id)
            .map(|g| g.members.clone())
    };
    let unknown = |id: &str| {
        Error::Status(tonic::Status::not_found(format!(
            "no l{level} group {id:?} (groups change as the network does: reload the view)"
        )))
    };
    let mut nodes: BTreeSet<String> = members(a).ok_or_else(|| unknown(a))?.into_iter().collect();
    nodes.extend(members(b).ok_or_else(|| unknown(b))?);
    let select = Selection {
        nodes: nodes.iter().cloned().collect(),
        group: None,
    };
    let mut m = fetch_matrix(target, ProbeMethod::StampUdp, &select).await?;
    // "From or to one of these": keep the links among them only.
    let inside = |n: &str| nodes.contains(n);
    m.links.retain(|l| inside(&l.src) && inside(&l.dst));
    m.bandwidth
        .retain(|b| inside(&b.sender) && inside(&b.receiver));
    m.nodes.retain(|n| inside(&n.node_name));
    let mut v = render_json(&m);
    v["cells"] = Value::Array(cells(&groups, &m, 1));
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netaware_proto::v1::{BandwidthState, Group, LinkState, LinkWindow, Smoothed};

    fn groups() -> ListGroupsResponse {
        let g = |level, id: &str, members: &[&str]| Group {
            level,
            id: id.into(),
            members: members.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        ListGroupsResponse {
            groups: vec![
                g(1, "r1", &["a", "b"]),
                g(1, "r2", &["c", "d", "e"]),
                g(2, "p1", &["a", "b", "c", "d", "e"]),
            ],
        }
    }

    fn link(src: &str, dst: &str, rtt: f64, received: u64) -> LinkState {
        LinkState {
            src: src.into(),
            dst: dst.into(),
            latest: Some(LinkWindow {
                sent: 10,
                received,
                ..Default::default()
            }),
            smoothed: Some(Smoothed {
                rtt_p50_us: rtt,
                rtt_p99_us: rtt * 2.0,
                loss_ppm: if received == 10 { 0.0 } else { 500_000.0 },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn cells_count_pairs_and_take_medians_and_maxima_between_groups() {
        let m = GetMatrixResponse {
            links: vec![
                link("a", "b", 100.0, 10),
                link("a", "c", 1000.0, 10),
                link("a", "d", 3000.0, 10),
                link("b", "e", 2000.0, 10),
                // Nothing came back: loss counts, no RTT.
                link("b", "c", 0.0, 0),
                // A node in no group yet is left out.
                link("a", "new", 5.0, 10),
            ],
            bandwidth: vec![BandwidthState {
                sender: "c".into(),
                receiver: "a".into(),
                mbps: 900.0,
                ..Default::default()
            }],
            ..Default::default()
        };
        let cells = cells(&groups(), &m, 1);
        let cell = |a: &str, b: &str| {
            cells
                .iter()
                .find(|c| c["src"] == a && c["dst"] == b)
                .unwrap_or_else(|| panic!("no cell {a} {b}: {cells:?}"))
                .clone()
        };
        let across = cell("r1", "r2");
        assert_eq!(across["pairs"], 6, "2 × 3 directed pairs");
        assert_eq!(across["measured"], 4);
        // RTTs 1000, 3000, 2000: median 2000, largest 3000.
        assert_eq!(across["rtt_p50_us"]["median"], 2000.0);
        assert_eq!(across["rtt_p50_us"]["max"], 3000.0);
        assert_eq!(across["rtt_p99_us"]["max"], 6000.0);
        assert_eq!(across["loss_ppm"]["max"], 500_000.0);
        let inside = cell("r1", "r1");
        assert_eq!(inside["pairs"], 2, "a→b and b→a");
        assert_eq!(inside["rtt_p50_us"]["median"], 100.0);
        assert_eq!(cell("r2", "r1")["bandwidth_mbps"]["median"], 900.0);
        assert!(cell("r2", "r1")["rtt_p50_us"]["median"].is_null());
        assert_eq!(cells.len(), 3, "{cells:?}");
    }

    #[test]
    fn a_slow_fetch_is_repeated_less_often() {
        assert_eq!(refresh_after(Duration::from_millis(50)), MIN_REFRESH);
        assert_eq!(
            refresh_after(Duration::from_secs(3)),
            Duration::from_secs(12)
        );
    }

    #[test]
    fn the_rows_are_the_finest_groups_a_page_can_draw() {
        let of = |n: usize, per_l1: usize, per_l2: usize| -> BTreeMap<String, [String; 3]> {
            (0..n)
                .map(|i| {
                    (
                        format!("n{i}"),
                        [
                            format!("r{}", i / per_l1),
                            format!("p{}", i / per_l2),
                            "all".into(),
                        ],
                    )
                })
                .collect()
        };
        assert_eq!(level_for(&of(150, 10, 100)), 0, "150 nodes: nodes");
        assert_eq!(level_for(&of(1_000, 10, 100)), 1, "100 racks");
        assert_eq!(level_for(&of(5_000, 10, 100)), 2, "500 racks, 50 pods");
        assert_eq!(
            level_for(&of(5_000, 1, 1)),
            3,
            "nothing coarse enough below l3"
        );
        let l2 = cells(
            &groups(),
            &GetMatrixResponse {
                links: vec![link("a", "c", 1000.0, 10), link("a", "b", 100.0, 10)],
                ..Default::default()
            },
            2,
        );
        assert_eq!(l2.len(), 1, "one l2 group: {l2:?}");
        assert_eq!(l2[0]["pairs"], 20, "5 × 4");
        assert_eq!(l2[0]["rtt_p50_us"]["max"], 1000.0);
    }

    #[test]
    fn every_node_gets_its_groups_by_level() {
        let of = groups_of(&groups());
        assert_eq!(of["c"], ["r2".to_string(), "p1".into(), String::new()]);
        assert_eq!(of.len(), 5);
    }
}
