//! The lab's topology file: nodes in regions, and the emulated network
//! between them. See `docs/lab.md` for the format.
//!
//! Every directed link starts from `defaults`; a `regions` entry overrides the
//! keys it names for links between (or, with `a == b`, inside) two regions; a
//! `links` entry overrides the keys it names for node pairs. Later entries win.
//! `a`/`b` entries apply to both directions; `from`/`to` entries to one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;
use serde_norway::Value;

use crate::error::{Error, Result};

/// Most nodes a lab can emulate (one /24 of addresses).
pub const MAX_NODES: usize = 250;
/// Longest one-way delay accepted, in milliseconds.
const MAX_DELAY_MS: f64 = 10_000.0;
/// Keys starting with this are free for users' own annotations.
const EXTENSION_PREFIX: &str = "x-";

/// Emulated properties of one direction of one link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkParams {
    /// One-way delay.
    pub delay_ms: f64,
    /// Standard deviation of the one-way delay (normal distribution).
    pub jitter_ms: f64,
    /// Probability that a packet is dropped in this direction.
    pub loss: f64,
    /// Rate cap in this direction; `None` means uncapped.
    pub bandwidth_mbps: Option<f64>,
}

impl LinkParams {
    const ZERO: LinkParams = LinkParams {
        delay_ms: 0.0,
        jitter_ms: 0.0,
        loss: 0.0,
        bandwidth_mbps: None,
    };
}

/// One emulated node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub region: String,
}

/// A timed change of links during a run, resolved to the full new
/// parameters of every directed link it touches.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Seconds after measuring starts.
    pub at_s: f64,
    /// (src, dst, parameters from then on).
    pub changes: Vec<(usize, usize, LinkParams)>,
}

/// A validated topology with every directed link resolved.
#[derive(Debug, Clone)]
pub struct Topology {
    pub name: String,
    pub nodes: Vec<Node>,
    /// `links[i][j]`: parameters from node i to node j (`i != j`).
    links: Vec<Vec<LinkParams>>,
    /// Timed link changes, in time order.
    pub events: Vec<Event>,
    /// MTU of every node's data interface.
    pub mtu: u32,
}

/// MTU of the data network unless the topology sets one.
pub const DEFAULT_MTU: u32 = 1500;
/// Smallest MTU allowed (IPv6's minimum, so probes and TCP always fit).
pub const MIN_MTU: u32 = 1280;
/// Largest MTU allowed (the emulator reads packets of up to 64 KiB).
pub const MAX_MTU: u32 = 65_000;

impl Topology {
    /// Parameters of the direction `src -> dst` (node indices).
    pub fn link(&self, src: usize, dst: usize) -> LinkParams {
        self.links[src][dst]
    }

    /// Index of a node by name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Read and validate a topology file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Topology {
            path: path.display().to_string(),
            message: format!("cannot read it: {e}"),
        })?;
        let default_name = path.file_stem().map_or_else(
            || "topology".to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        Self::parse(&text, &default_name).map_err(|message| Error::Topology {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parse and validate topology YAML; errors are human-readable messages.
    pub fn parse(text: &str, default_name: &str) -> std::result::Result<Self, String> {
        let raw: RawTopology = serde_norway::from_str(text).map_err(|e| e.to_string())?;
        check_extra("the top level", &raw.extra)?;
        let nodes = validate_nodes(&raw.nodes)?;
        let regions: BTreeSet<&str> = nodes.iter().map(|n| n.region.as_str()).collect();

        let mut defaults = LinkParams::ZERO;
        if let Some(d) = &raw.defaults {
            check_extra("defaults", &d.extra)?;
            d.keys.apply("defaults", &mut defaults)?;
        }
        let n = nodes.len();
        let mut links = vec![vec![defaults; n]; n];

        // Inter-region pairs must be described: silently giving them LAN
        // figures would make a typo look like a fast link.
        let mut described: BTreeSet<(String, String)> = BTreeSet::new();
        for (k, r) in raw.regions.iter().enumerate() {
            let at = format!("regions[{k}]");
            check_extra(&at, &r.extra)?;
            let (a, b, both) = r.ends(&at)?;
            for end in [&a, &b] {
                if !regions.contains(end.as_str()) {
                    return Err(format!(
                        "{at}: region '{end}' has no nodes (known regions: {})",
                        join(&regions)
                    ));
                }
            }
            described.insert((a.clone(), b.clone()));
            described.insert((b.clone(), a.clone()));
            for i in 0..n {
                for j in 0..n {
                    let (ri, rj) = (&nodes[i].region, &nodes[j].region);
                    let forward = *ri == a && *rj == b;
                    let backward = both && *ri == b && *rj == a;
                    if i != j && (forward || backward) {
                        r.keys.apply(&at, &mut links[i][j])?;
                    }
                }
            }
        }
        for ra in &regions {
            for rb in &regions {
                if ra < rb && !described.contains(&(ra.to_string(), rb.to_string())) {
                    return Err(format!(
                        "regions: no entry for the links between '{ra}' and '{rb}'; add \
                         {{a: {ra}, b: {rb}, delay_ms: ...}}"
                    ));
                }
            }
        }

        for (k, l) in raw.links.iter().enumerate() {
            let at = format!("links[{k}]");
            for (i, j) in l.pairs(&at, &nodes)? {
                l.keys.apply(&at, &mut links[i][j])?;
            }
        }

        // Events change the links as they are at that moment, in time order.
        let mut order: Vec<usize> = (0..raw.events.len()).collect();
        order.sort_by(|a, b| raw.events[*a].at_s.total_cmp(&raw.events[*b].at_s));
        let mut current = links.clone();
        let mut events = Vec::new();
        for k in order {
            let e = &raw.events[k];
            let at = format!("events[{k}]");
            if !(e.at_s.is_finite() && e.at_s >= 0.0) {
                return Err(format!("{at}: at_s = {} must be 0 or more seconds", e.at_s));
            }
            let mut changes = Vec::new();
            for (i, j) in e.pair.pairs(&at, &nodes)? {
                let before = current[i][j];
                e.pair.keys.apply(&at, &mut current[i][j])?;
                if before.bandwidth_mbps.is_none() != current[i][j].bandwidth_mbps.is_none() {
                    return Err(format!(
                        "{at}: an event can change bandwidth_mbps only on links that already have a cap \
                         (set one in defaults, regions or links)"
                    ));
                }
                changes.push((i, j, current[i][j]));
            }
            events.push(Event {
                at_s: e.at_s,
                changes,
            });
        }
        let mtu = raw.mtu.unwrap_or(DEFAULT_MTU);
        if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
            return Err(format!(
                "mtu {mtu} is out of range: use {MIN_MTU} to {MAX_MTU} (1500 is Ethernet's, 9000 jumbo frames)"
            ));
        }
        Ok(Topology {
            name: raw.name.unwrap_or_else(|| default_name.to_string()),
            nodes,
            links,
            events,
            mtu,
        })
    }
}

fn join(set: &BTreeSet<&str>) -> String {
    set.iter().copied().collect::<Vec<_>>().join(", ")
}

fn validate_nodes(raw: &[RawNode]) -> std::result::Result<Vec<Node>, String> {
    if raw.len() < 2 {
        return Err(format!(
            "nodes: a lab needs at least 2 nodes, got {}",
            raw.len()
        ));
    }
    if raw.len() > MAX_NODES {
        return Err(format!(
            "nodes: at most {MAX_NODES} nodes, got {}",
            raw.len()
        ));
    }
    let mut seen = BTreeSet::new();
    let mut nodes = Vec::with_capacity(raw.len());
    for (k, n) in raw.iter().enumerate() {
        let at = format!("nodes[{k}]");
        check_extra(&at, &n.extra)?;
        for (what, v) in [("name", &n.name), ("region", &n.region)] {
            // A DNS label: it becomes a hostname and part of a namespace name.
            if !netaware_model::labels::is_dns_label(v) {
                return Err(format!(
                    "{at}: {what} '{v}' must be lower-case letters, digits and '-' (at most 63, \
                     not starting or ending with '-')"
                ));
            }
        }
        if !seen.insert(n.name.clone()) {
            return Err(format!("{at}: node name '{}' is used twice", n.name));
        }
        nodes.push(Node {
            name: n.name.clone(),
            region: n.region.clone(),
        });
    }
    Ok(nodes)
}

fn check_extra(at: &str, extra: &BTreeMap<String, Value>) -> std::result::Result<(), String> {
    match extra.keys().find(|k| !k.starts_with(EXTENSION_PREFIX)) {
        Some(k) => Err(format!(
            "{at}: unknown key '{k}' (keys of your own must start with '{EXTENSION_PREFIX}')"
        )),
        None => Ok(()),
    }
}

#[derive(Debug, Deserialize)]
struct RawTopology {
    #[serde(default)]
    name: Option<String>,
    nodes: Vec<RawNode>,
    #[serde(default)]
    defaults: Option<RawDefaults>,
    #[serde(default)]
    regions: Vec<RawPair>,
    #[serde(default)]
    links: Vec<RawPair>,
    #[serde(default)]
    events: Vec<RawEvent>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(flatten)]
    extra: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
struct RawEvent {
    at_s: f64,
    #[serde(flatten)]
    pair: RawPair,
}

#[derive(Debug, Deserialize)]
struct RawNode {
    name: String,
    region: String,
    #[serde(flatten)]
    extra: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
struct RawDefaults {
    #[serde(flatten)]
    keys: RawKeys,
    #[serde(flatten)]
    extra: BTreeMap<String, Value>,
}

/// Link keys; each is optional so an override changes only what it names.
#[derive(Debug, Default, Deserialize)]
struct RawKeys {
    delay_ms: Option<f64>,
    jitter_ms: Option<f64>,
    loss: Option<f64>,
    bandwidth_mbps: Option<f64>,
}

impl RawKeys {
    fn apply(&self, at: &str, p: &mut LinkParams) -> std::result::Result<(), String> {
        let check = |key: &str, v: f64, ok: bool, rule: &str| {
            if ok && v.is_finite() {
                Ok(v)
            } else {
                Err(format!("{at}: {key} = {v} must be {rule}"))
            }
        };
        if let Some(v) = self.delay_ms {
            p.delay_ms = check(
                "delay_ms",
                v,
                (0.0..=MAX_DELAY_MS).contains(&v),
                "between 0 and 10000",
            )?;
        }
        if let Some(v) = self.jitter_ms {
            p.jitter_ms = check("jitter_ms", v, v >= 0.0, "0 or more")?;
        }
        if let Some(v) = self.loss {
            // 1 is a firewalled pair: nothing passes.
            p.loss = check(
                "loss",
                v,
                (0.0..=1.0).contains(&v),
                "a probability in [0, 1]",
            )?;
        }
        if let Some(v) = self.bandwidth_mbps {
            p.bandwidth_mbps = Some(check("bandwidth_mbps", v, v > 0.0, "greater than 0")?);
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
struct RawPair {
    a: Option<String>,
    b: Option<String>,
    from: Option<String>,
    to: Option<String>,
    #[serde(flatten)]
    keys: RawKeys,
    #[serde(flatten)]
    extra: BTreeMap<String, Value>,
}

impl RawPair {
    /// The directed (src, dst) node pairs this entry names; `*` is every
    /// other node, `a`/`b` both directions, `from`/`to` one.
    fn pairs(&self, at: &str, nodes: &[Node]) -> std::result::Result<Vec<(usize, usize)>, String> {
        check_extra(at, &self.extra)?;
        let (a, b, both) = self.ends(at)?;
        let n = nodes.len();
        let pick = |end: &str| -> std::result::Result<Vec<usize>, String> {
            if end == "*" {
                return Ok((0..n).collect());
            }
            nodes
                .iter()
                .position(|x| x.name == end)
                .map(|i| vec![i])
                .ok_or_else(|| format!("{at}: unknown node '{end}'"))
        };
        let (srcs, dsts) = (pick(&a)?, pick(&b)?);
        if a == b && a != "*" {
            return Err(format!(
                "{at}: a link needs two different nodes, got '{a}' twice"
            ));
        }
        let mut out = Vec::new();
        for &i in &srcs {
            for &j in &dsts {
                if i != j {
                    out.push((i, j));
                    if both {
                        out.push((j, i));
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// `(a, b, both_directions)`.
    fn ends(&self, at: &str) -> std::result::Result<(String, String, bool), String> {
        match (&self.a, &self.b, &self.from, &self.to) {
            (Some(a), Some(b), None, None) => Ok((a.clone(), b.clone(), true)),
            (None, None, Some(f), Some(t)) => Ok((f.clone(), t.clone(), false)),
            _ => Err(format!(
                "{at}: name both ends with either 'a' and 'b' (both directions) or 'from' and \
                 'to' (one direction)"
            )),
        }
    }
}

#[cfg(test)]
mod tests;
