//! Publishing: after every recomputation, turn each node's facts into the
//! labels and annotation it should carry and hand them to a sink — the
//! Kubernetes API, or stdout for `--dry-run`.
//!
//! Writes are rate limited (token bucket: `qps`, `burst`), a node whose write
//! failed waits out an exponential backoff before it is tried again (so a
//! failing API server is not hammered and nothing else stops), and every
//! `resync` interval all nodes are written again whether or not they changed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use netaware_common::rate::RateLimiter;
use netaware_model::infer::Inferred;
use netaware_model::labels::{self, Desired};

use crate::kube_writer::{NodeWriter, apply_body};

/// Publisher settings.
#[derive(Debug, Clone)]
pub struct PublishConfig {
    /// Key prefix, e.g. `netaware.io/` (validated at start-up).
    pub prefix: String,
    /// Sustained writes per second.
    pub qps: f64,
    /// Writes allowed in a burst.
    pub burst: u32,
    /// Write every node again this often.
    pub resync: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Default for PublishConfig {
    fn default() -> Self {
        Self {
            prefix: labels::DEFAULT_PREFIX.to_string(),
            qps: 10.0,
            burst: 100,
            resync: Duration::from_secs(3600),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
        }
    }
}

/// Where desired keys go.
pub enum Sink {
    /// The Kubernetes API (boxed: the writer is large and there is one sink).
    Kube(Box<NodeWriter>),
    /// Print the apply patches as YAML and send nothing (`--dry-run`).
    DryRun(Box<dyn Write + Send>),
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sink::Kube(w) => f.debug_tuple("Kube").field(w).finish(),
            Sink::DryRun(_) => f.write_str("DryRun"),
        }
    }
}

/// The desired keys of every node in a recomputation.
pub fn desired_all(prefix: &str, inferred: &Inferred) -> BTreeMap<String, Desired> {
    let rfc3339 = |us: u64| {
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_micros(us))
            .to_string()
    };
    inferred
        .facts
        .iter()
        .filter_map(|(node, facts)| {
            // When the summary's content last changed, so an unchanged
            // summary is not rewritten at every recomputation.
            let since = match facts.summary_since_unix_us {
                0 => inferred.computed_unix_us,
                t => t,
            };
            match labels::desired(prefix, facts, &rfc3339(since)) {
                Ok(d) => Some((node.clone(), d)),
                Err(e) => {
                    warn!(%node, error = %e, "not publishing a node whose labels would be invalid");
                    None
                }
            }
        })
        .collect()
}

/// Whether the live Node carries every key of `d` with its value.
fn carries(node: &Node, d: &Desired) -> bool {
    let has = |live: &Option<BTreeMap<String, String>>, want: &BTreeMap<String, String>| {
        want.iter()
            .all(|(k, v)| live.as_ref().and_then(|l| l.get(k)) == Some(v))
    };
    has(&node.metadata.labels, &d.labels) && has(&node.metadata.annotations, &d.annotations)
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    until: Instant,
    delay: Duration,
}

/// The cluster's Nodes as the aggregator watches them: the store, and
/// whether its first list has arrived.
///
/// Readiness is our own signal, not `Store::wait_until_ready`: kube's
/// readiness future wakes only the last task that polled it, so with two
/// tasks waiting (the seeding and the Node-list feed) one waited for ever.
#[derive(Debug, Clone)]
pub struct NodeList {
    store: Store<Node>,
    ready: watch::Receiver<bool>,
}

impl NodeList {
    /// The Nodes (empty until the first list arrives).
    pub fn store(&self) -> &Store<Node> {
        &self.store
    }

    /// Whether the first list has arrived.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Wait for the first list; `false` if the watch ended before it.
    pub async fn ready(&self) -> bool {
        self.ready.clone().wait_for(|r| *r).await.is_ok()
    }
}

/// Watch Node objects (list, then watch, reconnecting with backoff) and keep
/// them in a store: the publisher writes only to nodes the cluster has.
pub fn watch_nodes(client: kube::Client) -> NodeList {
    let (reader, writer) = kube::runtime::reflector::store();
    let (ready_tx, ready) = watch::channel(false);
    let api: Api<Node> = Api::all(client);
    let stream = kube::runtime::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff();
    tokio::spawn(async move {
        futures_util::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                // The reflector has swapped the full list into the store.
                Ok(watcher::Event::InitDone) => {
                    ready_tx.send_replace(true);
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "watching Nodes failed; retrying"),
            }
        }
    });
    NodeList {
        store: reader,
        ready,
    }
}

/// Publish every recomputation from `inferred` until the sender is dropped.
/// With `nodes`, only nodes present in that store are written; the others
/// wait (and are written within a second of appearing).
pub async fn run(
    cfg: PublishConfig,
    mut sink: Sink,
    mut inferred: watch::Receiver<Option<Arc<Inferred>>>,
    nodes: Option<Store<Node>>,
) {
    let mut limiter = RateLimiter::new(cfg.qps, cfg.burst, Instant::now());
    let mut backoff: HashMap<String, Backoff> = HashMap::new();
    let mut printed: HashMap<String, Desired> = HashMap::new();
    let mut resync = tokio::time::interval_at(Instant::now() + cfg.resync, cfg.resync);
    let mut retry = tokio::time::interval(Duration::from_secs(1));
    let mut desired: BTreeMap<String, Desired> = BTreeMap::new();
    // Nodes to look at: all of them after a recomputation or a resync; a
    // node whose write failed stays until it succeeds. The retry tick only
    // revisits these, so an unchanged node is skipped (and counted) once per
    // recomputation, not once per tick.
    let mut dirty: BTreeSet<String> = BTreeSet::new();
    loop {
        tokio::select! {
            changed = inferred.changed() => {
                if changed.is_err() {
                    return;
                }
                let latest = inferred.borrow_and_update().clone();
                if let Some(i) = latest {
                    desired = desired_all(&cfg.prefix, &i);
                    dirty = desired.keys().cloned().collect();
                }
            }
            _ = resync.tick() => {
                info!(nodes = desired.len(), "periodic resync: writing every node again");
                if let Sink::Kube(w) = &mut sink {
                    w.forget();
                }
                printed.clear();
                dirty = desired.keys().cloned().collect();
            }
            // Nodes in backoff are retried as their time comes.
            _ = retry.tick() => {}
        }
        let pending: Vec<String> = dirty.iter().cloned().collect();
        for node in pending {
            let Some(d) = desired.get(&node) else {
                dirty.remove(&node);
                continue;
            };
            let now = Instant::now();
            if backoff.get(&node).is_some_and(|b| b.until > now) {
                continue;
            }
            match &mut sink {
                Sink::DryRun(out) => {
                    if printed.get(&node) != Some(d) {
                        let yaml =
                            serde_norway::to_string(&apply_body(&node, d)).unwrap_or_default();
                        // A header, the YAML and an empty line: readers
                        // (`netaware-lab scale`) take the empty line as
                        // the patch's end.
                        let _ = writeln!(
                            out,
                            "# PATCH /api/v1/nodes/{node}?fieldManager={}&force=true (dry run)\n---\n{yaml}",
                            crate::kube_writer::FIELD_MANAGER
                        );
                        let _ = out.flush();
                        printed.insert(node.clone(), d.clone());
                    }
                    dirty.remove(&node);
                }
                Sink::Kube(w) => {
                    let live = nodes.as_ref().map(|s| s.get(&ObjectRef::new(&node)));
                    if matches!(live, Some(None)) {
                        // Not a Node of this cluster (yet): never create one.
                        continue;
                    }
                    let mut d = d.clone();
                    if let Some(Some(n)) = &live {
                        let current = n.metadata.labels.clone().unwrap_or_default();
                        labels::keep_last_known(&cfg.prefix, &mut d, &current);
                        if !carries(n, &d) {
                            // Drift (a key of ours changed by someone else,
                            // e.g. through nodes/status): write, whatever we
                            // remember writing.
                            w.forget_node(&node);
                        }
                    }
                    let d = &d;
                    // An unchanged node is skipped (and counted) by the
                    // writer itself; only a real write spends a token.
                    if !w.is_current(&node, d)
                        && let Err(wait) = limiter.try_take(now)
                    {
                        tokio::time::sleep(wait).await;
                        let _ = limiter.try_take(Instant::now());
                    }
                    match w.write(&node, d).await {
                        Ok(_) => {
                            backoff.remove(&node);
                            dirty.remove(&node);
                        }
                        Err(e) => {
                            let delay = backoff.get(&node).map_or(cfg.backoff_initial, |b| {
                                (b.delay * 2).min(cfg.backoff_max)
                            });
                            let not_found = matches!(&e, kube::Error::Api(s) if s.code == 404);
                            let delay = if not_found { cfg.backoff_max } else { delay };
                            if not_found {
                                warn!(%node, "no Node object with this name: is the agent's NODE_NAME the Kubernetes node name?");
                            }
                            backoff.insert(
                                node.clone(),
                                Backoff {
                                    until: Instant::now() + delay,
                                    delay,
                                },
                            );
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
