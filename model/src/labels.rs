//! The Node labels and the summary annotation netaware writes, and the
//! Kubernetes rules every key and value is checked against before a write.
//! See `docs/labels.md` for the meaning of each key.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::quality::Figures;
use crate::{Error, Result};

/// Default prefix of every key we own.
pub const DEFAULT_PREFIX: &str = "netaware.io/";
/// Largest summary annotation we write.
pub const MAX_SUMMARY_BYTES: usize = 4 * 1024;
/// Peers listed in a node's summary annotation, nearest first.
pub const MAX_NEAREST: usize = 32;
/// Annotation name (after the prefix).
pub const SUMMARY: &str = "summary";
/// Probes every peer link behind a node's loss figure needs before its
/// `loss-ppm` label is written (40 s at the default 5 probes a second, 20 s
/// at the lab's 10). A loss counted from fewer is a step off too often: at
/// 4 % loss a direction's 50 probes read 8 % or more one time in seven, and
/// in the lab's churn test a lossy node's first label was a step high, then
/// rewritten with nothing changed; from 200 probes a node's median over
/// three such peers reads a step high about one time in 400.
pub const LOSS_LABEL_PROBES: u64 = 200;

fn name_like(s: &str) -> bool {
    let ok = |b: u8| b.is_ascii_alphanumeric();
    s.len() <= 63
        && s.bytes()
            .all(|b| ok(b) || b == b'-' || b == b'_' || b == b'.')
        && s.bytes().next().is_some_and(ok)
        && s.bytes().last().is_some_and(ok)
}

/// Check a label value (may be empty).
pub fn check_value(v: &str) -> Result<()> {
    if v.is_empty() || name_like(v) {
        Ok(())
    } else {
        Err(Error::LabelValue(v.to_string()))
    }
}

/// Check a label name (the part after the prefix).
pub fn check_name(n: &str) -> Result<()> {
    if name_like(n) {
        Ok(())
    } else {
        Err(Error::LabelName(n.to_string()))
    }
}

/// Whether `s` is a DNS label (RFC 1123): lower-case letters, digits and
/// '-', 1 to 63 characters, not starting or ending with '-'.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Whether `s` is a DNS subdomain (RFC 1123): dot-separated DNS labels, at
/// most 253 characters. Node names and label-key prefixes are subdomains.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Check a configured prefix such as `netaware.io/`.
pub fn check_prefix(p: &str) -> Result<()> {
    let Some(domain) = p.strip_suffix('/') else {
        return Err(Error::LabelPrefix(p.to_string()));
    };
    if !is_dns_subdomain(domain) {
        return Err(Error::LabelPrefix(p.to_string()));
    }
    let reserved = ["kubernetes.io", "k8s.io"];
    if reserved
        .iter()
        .any(|r| domain == *r || domain.ends_with(&format!(".{r}")))
    {
        return Err(Error::ReservedLabelPrefix(p.to_string()));
    }
    Ok(())
}

/// What netaware knows about one node, to be published.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFacts {
    /// Group ids of levels 1, 2, 3.
    pub groups: [String; 3],
    pub quality: Option<u32>,
    pub figures: Option<Figures>,
    /// Whether the node's data is fresh (not stale).
    pub fresh: bool,
    /// Measured peers, nearest first (for the summary annotation).
    pub nearest: Vec<Peer>,
    /// When `nearest` last changed (µs since the Unix epoch; 0: unknown),
    /// the summary's `measured_at`, so an unchanged summary is not
    /// rewritten.
    pub summary_since_unix_us: u64,
}

/// A figure as a label value. Gt/Lt compare integers only, and Kubernetes
/// parses them as int64: plain non-negative integers up to `i64::MAX` (an
/// unreachable peer's infinite RTT reads as that maximum, the worst value).
fn us(x: f64) -> String {
    // 2^63 and above (and infinity) do not fit; NaN is treated as 0.
    const I64_LIMIT: f64 = 9_223_372_036_854_775_808.0;
    let v = x.max(0.0).round();
    if v >= I64_LIMIT {
        i64::MAX.to_string()
    } else {
        format!("{}", v as u64)
    }
}

/// The labels for one node, keys with `prefix`, all checked.
pub fn node_labels(prefix: &str, f: &NodeFacts) -> Result<BTreeMap<String, String>> {
    let mut m: BTreeMap<String, String> = BTreeMap::new();
    let mut put = |name: &str, value: String| -> Result<()> {
        check_name(name)?;
        check_value(&value)?;
        m.insert(format!("{prefix}{name}"), value);
        Ok(())
    };
    for (level, id) in f.groups.iter().enumerate() {
        put(&format!("group-l{}", level + 1), id.clone())?;
    }
    if let Some(q) = f.quality {
        put("quality", q.min(100).to_string())?;
    }
    if let Some(fig) = &f.figures {
        put("rtt-p50-us", us(fig.rtt_p50_us))?;
        put("rtt-p99-us", us(fig.rtt_p99_us))?;
        put("jitter-us", us(fig.jitter_us))?;
        if fig.loss_ready() {
            put("loss-ppm", us(fig.loss_ppm))?;
        }
        if let Some(b) = fig.bandwidth_mbps {
            put("bandwidth-mbps", us(b))?;
        }
    }
    put("fresh", f.fresh.to_string())?;
    Ok(m)
}

/// Every label name we write (after the prefix). A label of ours that a
/// recomputation does not produce (a figure not measured since a restart)
/// keeps its last value: see [`keep_last_known`].
pub const LABEL_NAMES: [&str; 10] = [
    "group-l1",
    "group-l2",
    "group-l3",
    "quality",
    "rtt-p50-us",
    "rtt-p99-us",
    "jitter-us",
    "loss-ppm",
    "bandwidth-mbps",
    "fresh",
];

/// Add to `desired` every label of ours that it leaves out but the Node
/// carries now (`current`), with the Node's value: a figure not measured
/// yet (after a restart, a failover) is not a figure that went away, and
/// server-side apply would remove a key we leave out. Values Kubernetes
/// would refuse are not carried.
pub fn keep_last_known(prefix: &str, desired: &mut Desired, current: &BTreeMap<String, String>) {
    for name in LABEL_NAMES {
        let key = format!("{prefix}{name}");
        if desired.labels.contains_key(&key) {
            continue;
        }
        if let Some(v) = current.get(&key)
            && check_value(v).is_ok()
        {
            desired.labels.insert(key, v.clone());
        }
    }
}

/// The group ids a Node's labels give it (`None` unless all three levels
/// are there and valid): the state a new leader starts its group ids from.
pub fn groups_from_labels(prefix: &str, labels: &BTreeMap<String, String>) -> Option<[String; 3]> {
    let id = |l: usize| {
        labels
            .get(&format!("{prefix}group-l{l}"))
            .filter(|v| !v.is_empty() && check_value(v).is_ok())
            .cloned()
    };
    Some([id(1)?, id(2)?, id(3)?])
}

/// The keys we want on one Node: every label and annotation under our
/// prefix. What the Kubernetes writer applies, and nothing else.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// Everything to apply to one Node: the labels and the summary annotation,
/// all under `prefix` and checked. `measured_at` is RFC 3339.
pub fn desired(prefix: &str, facts: &NodeFacts, measured_at: &str) -> Result<Desired> {
    let labels = node_labels(prefix, facts)?;
    check_name(SUMMARY)?;
    let mut annotations = BTreeMap::new();
    annotations.insert(
        format!("{prefix}{SUMMARY}"),
        summary(measured_at, &facts.nearest),
    );
    Ok(Desired {
        labels,
        annotations,
    })
}

/// One peer in the summary annotation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Peer {
    pub node: String,
    pub rtt_p50_us: u64,
    pub loss_ppm: u64,
}

#[derive(Debug, Serialize)]
struct Summary<'a> {
    /// When the figures were computed (RFC 3339, UTC).
    measured_at: &'a str,
    /// Nearest peers first.
    nearest: &'a [Peer],
}

/// The summary annotation: JSON with the measurement time and the node's
/// nearest peers (sorted by RTT), cut to as many peers as fit in
/// [`MAX_SUMMARY_BYTES`].
pub fn summary(measured_at: &str, nearest: &[Peer]) -> String {
    let mut n = nearest.len();
    loop {
        let s = serde_json::to_string(&Summary {
            measured_at,
            nearest: &nearest[..n],
        })
        .unwrap_or_default();
        if s.len() <= MAX_SUMMARY_BYTES || n == 0 {
            return s;
        }
        // Shrink proportionally, at least by one.
        n = (n * MAX_SUMMARY_BYTES / s.len()).min(n - 1);
    }
}

#[cfg(test)]
mod tests;
