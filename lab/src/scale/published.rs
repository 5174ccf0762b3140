//! What the aggregator would write to the Nodes, read from its `--dry-run`
//! output: every patch it would send, so the run sees the labels a cluster
//! would carry and counts the writes a cluster's API server would take.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Deserialize;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// The first line of each printed patch, followed by the node's name.
const PATCH: &str = "# PATCH /api/v1/nodes/";

/// One write the aggregator would send.
#[derive(Debug, Clone)]
pub struct Write {
    pub at: Instant,
    pub node: String,
    /// Label keys whose value changed (or appeared) with this write; empty
    /// for a write that only rewrote the annotation.
    pub changed: Vec<String>,
    /// Each changed label's value before and after (empty: it was absent).
    pub was: Vec<(String, String)>,
    /// What changed in the summary annotation.
    pub summary: SummaryChange,
    /// For an `Rtt` or `Loss` change, each listed peer's changed value:
    /// what (e.g. `summary loss of node-00012`), before, after.
    pub summary_was: Vec<(String, String, String)>,
}

/// How a write changed the node's summary annotation (the nearest peers),
/// the most telling first: which of its rules let the write through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SummaryChange {
    /// Not written, or written as it was.
    None,
    /// Another set of peers (or the first one).
    Peers,
    /// The same peers, another RTT.
    Rtt,
    /// The same peers and RTTs, another loss.
    Loss,
    /// Only `measured_at`, or a summary that did not parse.
    Other,
}

impl SummaryChange {
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Peers => "peers",
            Self::Rtt => "rtt",
            Self::Loss => "loss",
            Self::Other => "other",
        }
    }

    /// The kind of change, and for `Rtt` and `Loss` the changed values.
    fn of(old: Option<&str>, new: Option<&str>) -> (Self, Vec<(String, String, String)>) {
        #[derive(Deserialize, PartialEq)]
        struct Peer {
            node: String,
            rtt_p50_us: u64,
            loss_ppm: u64,
        }
        #[derive(Deserialize)]
        struct Summary {
            nearest: Vec<Peer>,
        }
        if new.is_none() || old == new {
            return (Self::None, Vec::new());
        }
        if old.is_none() {
            return (Self::Peers, Vec::new());
        }
        let parse = |s: Option<&str>| s.and_then(|s| serde_json::from_str::<Summary>(s).ok());
        let (Some(a), Some(b)) = (parse(old), parse(new)) else {
            return (Self::Other, Vec::new());
        };
        let nodes = |s: &Summary| -> Vec<String> {
            let mut v: Vec<String> = s.nearest.iter().map(|p| p.node.clone()).collect();
            v.sort();
            v
        };
        let of = |s: &Summary, f: fn(&Peer) -> u64| -> BTreeMap<String, u64> {
            s.nearest.iter().map(|p| (p.node.clone(), f(p))).collect()
        };
        let diff = |what: &str, f: fn(&Peer) -> u64| -> Vec<(String, String, String)> {
            let (x, y) = (of(&a, f), of(&b, f));
            x.iter()
                .filter(|(node, v)| y.get(*node) != Some(*v))
                .map(|(node, v)| {
                    let to = y.get(node).map(u64::to_string).unwrap_or_default();
                    (format!("summary {what} of {node}"), v.to_string(), to)
                })
                .collect()
        };
        if nodes(&a) != nodes(&b) {
            (Self::Peers, Vec::new())
        } else if of(&a, |p| p.rtt_p50_us) != of(&b, |p| p.rtt_p50_us) {
            (Self::Rtt, diff("rtt", |p| p.rtt_p50_us))
        } else if of(&a, |p| p.loss_ppm) != of(&b, |p| p.loss_ppm) {
            (Self::Loss, diff("loss", |p| p.loss_ppm))
        } else {
            (Self::Other, Vec::new())
        }
    }
}

/// The labels every node would carry now, and every write so far.
#[derive(Debug, Default)]
pub struct Published {
    pub labels: HashMap<String, BTreeMap<String, String>>,
    /// The summary annotation each node would carry now.
    summaries: HashMap<String, String>,
    pub writes: Vec<Write>,
    /// Patches that did not parse (a format change would show here).
    pub unreadable: u64,
}

#[derive(Deserialize)]
struct Body {
    metadata: Meta,
}

#[derive(Deserialize)]
struct Meta {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

impl Published {
    fn apply(&mut self, text: &str, at: Instant) {
        let Ok(body) = serde_norway::from_str::<Body>(text) else {
            self.unreadable += 1;
            return;
        };
        let Meta {
            name,
            labels,
            annotations,
        } = body.metadata;
        let new_summary = annotations
            .iter()
            .find(|(k, _)| k.ends_with("/summary"))
            .map(|(_, v)| v.clone());
        let (summary, summary_was) = SummaryChange::of(
            self.summaries.get(&name).map(String::as_str),
            new_summary.as_deref(),
        );
        if let Some(s) = new_summary {
            self.summaries.insert(name.clone(), s);
        }
        let old = self.labels.get(&name);
        let (changed, was) = labels
            .iter()
            .filter(|(k, v)| old.and_then(|o| o.get(*k)) != Some(*v))
            .map(|(k, v)| {
                let before = old.and_then(|o| o.get(k)).cloned().unwrap_or_default();
                (k.clone(), (before, v.clone()))
            })
            .unzip();
        self.writes.push(Write {
            at,
            node: name.clone(),
            changed,
            was,
            summary,
            summary_was,
        });
        self.labels.insert(name, labels);
    }
}

/// Read patches from `out` (the aggregator's stdout) into `into` until it
/// closes. A patch ends at the empty line the aggregator prints after it
/// (or at the next patch): waiting for the next patch would date the last
/// write of a recomputation to whenever the aggregator next writes, which
/// in a steady state is minutes later.
pub async fn follow(out: impl AsyncBufRead + Unpin, into: Arc<Mutex<Published>>) {
    let mut lines = out.lines();
    let mut doc = String::new();
    let mut in_patch = false;
    let flush = |doc: &mut String, in_patch: bool| {
        if in_patch
            && !doc.trim().is_empty()
            && let Ok(mut p) = into.lock()
        {
            p.apply(doc, Instant::now());
        }
        doc.clear();
    };
    while let Ok(Some(line)) = lines.next_line().await {
        if line.starts_with(PATCH) {
            flush(&mut doc, in_patch);
            in_patch = true;
        } else if line.is_empty() {
            if !doc.trim().is_empty() {
                flush(&mut doc, in_patch);
                in_patch = false;
            }
        } else if line != "---" {
            doc.push_str(&line);
            doc.push('\n');
        }
    }
    flush(&mut doc, in_patch);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn patches_become_labels_and_counted_writes() {
        let out = r#"\
# PATCH /api/v1/nodes/a?fieldManager=netaware&force=true (dry run)
---
apiVersion: v1
kind: Node
metadata:
  name: a
  labels:
    netaware.io/group-l1: g1
    netaware.io/quality: '90'
  annotations:
    netaware.io/summary: '{"measured_at":"t1","nearest":[{"node":"b","rtt_p50_us":50,"loss_ppm":0}]}'

# PATCH /api/v1/nodes/a?fieldManager=netaware&force=true (dry run)
---
apiVersion: v1
kind: Node
metadata:
  name: a
  labels:
    netaware.io/group-l1: g1
    netaware.io/quality: '88'
  annotations:
    netaware.io/summary: '{"measured_at":"t2","nearest":[{"node":"b","rtt_p50_us":60,"loss_ppm":0}]}'
# PATCH /api/v1/nodes/b?fieldManager=netaware&force=true (dry run)
---
not: [a, node
"#;
        let p = Arc::new(Mutex::new(Published::default()));
        follow(out.as_bytes(), p.clone()).await;
        let p = p.lock().unwrap();
        assert_eq!(p.writes.len(), 2);
        assert_eq!(p.writes[0].changed.len(), 2);
        assert_eq!(p.writes[1].changed, ["netaware.io/quality"]);
        assert_eq!(p.writes[1].was, [("90".to_string(), "88".to_string())]);
        assert_eq!(p.writes[0].summary, SummaryChange::Peers);
        assert_eq!(p.writes[1].summary, SummaryChange::Rtt);
        assert_eq!(
            p.writes[1].summary_was,
            [(
                "summary rtt of b".to_string(),
                "50".to_string(),
                "60".to_string()
            )]
        );
        assert_eq!(p.labels["a"]["netaware.io/quality"], "88");
        assert_eq!(p.unreadable, 1);
    }

    /// A patch counts when its empty line arrives, not when the next
    /// patch does: the aggregator may print nothing more for minutes.
    #[tokio::test]
    async fn a_patch_counts_at_its_end_while_the_stream_stays_open() {
        let (mut tx, rx) = tokio::io::duplex(4096);
        let p = Arc::new(Mutex::new(Published::default()));
        let reader = tokio::spawn(follow(tokio::io::BufReader::new(rx), p.clone()));
        let patch = "# PATCH /api/v1/nodes/a?fieldManager=netaware&force=true (dry run)\n---\n\
            apiVersion: v1\nkind: Node\nmetadata:\n  name: a\n  labels:\n    netaware.io/quality: '90'\n\n";
        tokio::io::AsyncWriteExt::write_all(&mut tx, patch.as_bytes())
            .await
            .unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while p.lock().unwrap().writes.is_empty() {
            assert!(
                Instant::now() < deadline,
                "the patch was not counted while the stream stayed open"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(p.lock().unwrap().labels["a"]["netaware.io/quality"], "90");
        drop(tx);
        reader.await.unwrap();
        assert_eq!(p.lock().unwrap().writes.len(), 1);
    }
}
