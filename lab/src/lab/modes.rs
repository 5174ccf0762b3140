//! What a lab does once it is up: `run` (measure for a while and report),
//! `up` (a live table until Ctrl-C) and `bench` (place several ways and run
//! a real all-reduce on each set).

use std::collections::BTreeMap;
use std::time::Duration;

use netaware_model::labels::DEFAULT_PREFIX;
use netaware_proto::ProbeMethod;
use netaware_proto::v1::{PlaceRequest, ShapeLevel, WatchLinksRequest};
use tracing::warn;

use super::events::{self, EventSchedule};
use super::wait::Running;
use super::{BandwidthOptions, Manifest, human, methods};
use crate::bench::{self, BenchOptions, BenchReport, PlacementResult};
use crate::cluster::objects::{self, PodPlacement};
use crate::emulator::{Emulator, Lateness, summarize};
use crate::error::{Error, Result};
use crate::report::{self, Collector, KubernetesReport, Report, render_table};
use crate::sidecar::{PingMesh, UsageMeter};
use crate::topology::Topology;
use netaware_common::now_unix_us;

/// Node labels, by node name.
type NodeLabels = BTreeMap<String, BTreeMap<String, String>>;

/// The `run` mode: measure for `duration`, then assemble the report.
pub(super) async fn run(r: &mut Running<'_>, duration: Duration) -> Result<Report> {
    let (topo, opts) = (r.topo, r.opts);
    let mut watch = r
        .client
        .watch_links(WatchLinksRequest {
            method: ProbeMethod::Unspecified as i32,
            send_initial: false,
            ..Default::default()
        })
        .await?
        .into_inner();
    // Windows that began before every agent had its plan are partial: skip them.
    let from = now_unix_us();
    let to = from + u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
    let mut collector = Collector::new(from, to);
    // The last window starting before `to` ends one report interval
    // later and is sent after the loss timeout and a flush.
    let grace = opts.report_interval + opts.loss_timeout + Duration::from_secs(2);
    let started = tokio::time::Instant::now();
    let until = started + duration + grace;
    eprintln!(
        "measuring {} nodes for {} (results about {} later)...",
        topo.nodes.len(),
        human(duration),
        human(grace)
    );
    let pings = if opts.ping {
        Some(PingMesh::start(topo, opts.probe_interval, duration)?)
    } else {
        None
    };
    let mut usage = Some(UsageMeter::start(r.lab.network.agent_pids()));
    let measure_end = started + duration;
    let mut agents = Vec::new();
    let mut health = tokio::time::interval(Duration::from_secs(1));
    let mut labels_seen = NodeLabels::new();
    let mut label_changes = Vec::new();
    let mut schedule = EventSchedule::new(&topo.events, started);
    let mut applied = Vec::new();
    // Creating the --apply manifests, once every node has its groups.
    let mut placing: Option<tokio::task::JoinHandle<Result<Vec<PodPlacement>>>> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => break,
            _ = events::next_due(&schedule) => {
                while let Some(ev) = schedule.take(tokio::time::Instant::now()) {
                    applied.push(events::apply(r.lab, topo, ev, now_unix_us())?);
                }
            }
            _ = health.tick() => {
                r.check_children()?;
                if let Some(k) = &r.lab.kube {
                    // Sampled once a second: convergence times are within a second.
                    match read_labels(&k.client).await {
                        Ok(now) => {
                            label_changes.extend(report::label_changes(&labels_seen, &now, now_unix_us()));
                            labels_seen = now;
                        }
                        Err(e) => warn!(error = %e, "cannot read labels from the API server"),
                    }
                    if placing.is_none() && !opts.apply.is_empty() && grouped(topo, &labels_seen) {
                        placing = Some(tokio::spawn(place_manifests(k.client.clone(), opts.apply.clone())));
                    }
                }
                if let Some(u) = usage.as_mut() {
                    u.sample();
                }
                if tokio::time::Instant::now() >= measure_end
                    && let Some(u) = usage.take()
                {
                    agents = u.finish();
                }
            }
            m = watch.message() => match m? {
                Some(update) => {
                    if let Some(link) = update.link
                        && let Some(w) = link.latest.as_ref()
                    {
                        if link.disturbed {
                            collector.skip_disturbed(w);
                        } else if emulator_late(r.lab, topo, &link.src, w) {
                            collector.skip_emulator_late(&link.src, w);
                        } else {
                            collector.add(&link.src, w)?;
                        }
                    }
                }
                None => return Err(Error::Run("the aggregator ended the link watch".into())),
            },
        }
    }
    let mut report = collector.report(topo, duration.as_secs_f64(), &methods(opts));
    report.security = Some(r.lab.security.report());
    // Labels as the measuring period left them: the iperf3 comparison
    // below loads links the aggregator does not know of.
    if let Some(k) = &r.lab.kube {
        report.labels = read_labels(&k.client).await?;
        report.label_changes = label_changes;
        report.kubernetes = Some(KubernetesReport {
            mode: k.mode.into(),
            version: k.version.clone(),
        });
    }
    if !opts.apply.is_empty() {
        let task = placing.ok_or_else(|| {
            Error::Run(format!(
                "the aggregator did not label every node with its groups ({GROUP_LABEL}) within the run, \
                 so the --apply manifests were not created: measure longer (--for)"
            ))
        })?;
        report.pods = task
            .await
            .map_err(|e| Error::Run(format!("applying the manifests failed: {e}")))??;
    }
    let bandwidth = match (opts.iperf3, opts.bandwidth) {
        (true, Some(b)) => {
            eprintln!(
                "waiting until every pair's bandwidth is measured, then running iperf3 on each..."
            );
            r.bandwidth(b).await?
        }
        _ => r.matrix().await?.bandwidth,
    };
    report.bandwidth = report::bandwidth_report(topo, &bandwidth);
    if let (true, Some(b)) = (opts.iperf3, opts.bandwidth) {
        compare_iperf3(topo, &mut report.bandwidth, b).await?;
    }
    report.agents = agents;
    report.events = applied;
    if let Some(p) = pings {
        let results = tokio::task::spawn_blocking(move || p.finish())
            .await
            .map_err(|e| Error::Run(format!("ping collection failed: {e}")))??;
        report.attach_ping(&results);
    }
    Ok(report)
}

/// The `up` mode: redraw the latest window of every link until shutdown.
pub(super) async fn up(r: &mut Running<'_>) -> Result<()> {
    let (topo, opts) = (r.topo, r.opts);
    let mut tick = tokio::time::interval(opts.report_interval);
    let mut schedule = EventSchedule::new(&topo.events, tokio::time::Instant::now());
    // With a real control plane, say how to reach it (kubectl, --apply by hand).
    let kubernetes = r
        .lab
        .kube
        .as_ref()
        .and_then(|k| k.admin_kubeconfig.as_ref())
        .map(|p| format!("Kubernetes: export KUBECONFIG={}\n", p.display()))
        .unwrap_or_default();
    let ca = r
        .lab
        .security
        .ca()
        .map(|c| format!(" NETAWARE_CA_FILE={}", c.display()))
        .unwrap_or_default();
    let scheme = r.lab.security.scheme();
    let token = r
        .lab
        .security
        .query_token_file()
        .map(|f| format!(" NETAWARE_TOKEN=$(cat {})", f.display()))
        .unwrap_or_default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = events::next_due(&schedule) => {
                while let Some(ev) = schedule.take(tokio::time::Instant::now()) {
                    events::apply(r.lab, topo, ev, now_unix_us())?;
                }
                continue;
            }
        }
        r.check_children()?;
        // The table's percentiles come from the windows' histograms.
        let m = r.matrix_with_histograms().await?;
        let mut c = Collector::new(0, u64::MAX);
        for l in &m.links {
            if let Some(w) = l.latest.as_ref() {
                c.add(&l.src, w)?;
            }
        }
        let r = c.report(topo, opts.report_interval.as_secs_f64(), &methods(opts));
        // Clear the screen and redraw: a live table.
        netaware_common::print_stdout(&format!(
            "\x1b[2J\x1b[Hnetaware-lab up: {} ({} nodes) — latest {} window per link; Ctrl-C to stop\n\
             query API: export NETAWARE_QUERY={scheme}://127.0.0.1:{}{ca}{token} (try: netaware matrix)\n{kubernetes}\n{}",
            topo.name,
            topo.nodes.len(),
            human(opts.report_interval),
            opts.query_port,
            render_table(&r)
        ));
    }
}

/// The `bench` mode: measure, place several ways, run MPI on each set.
pub(super) async fn bench(r: &mut Running<'_>, b: &BenchOptions) -> Result<BenchReport> {
    let (topo, opts) = (r.topo, r.opts);
    let started = tokio::time::Instant::now();
    eprintln!(
        "measuring {} nodes (at least {}{})...",
        topo.nodes.len(),
        human(b.settle),
        if opts.bandwidth.is_some() {
            ", until every pair's bandwidth and every l1 group's concurrent share is tested"
        } else {
            ""
        }
    );
    r.rtt().await?;
    if let Some(bw) = opts.bandwidth {
        r.bandwidth(bw).await?;
        // Place counts on the group shares these find (shared bottlenecks).
        r.concurrent(bw).await?;
        // The tests disturbed every window of their ends: RTTs again.
        r.clean_rtt().await?;
    }
    while tokio::time::Instant::now() < started + b.settle {
        r.check_children()?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Two more recomputations, so groups and quality include everything.
    tokio::time::sleep(opts.report_interval * 2).await;

    let m = r.matrix().await?;
    let mut names: Vec<String> = topo.nodes.iter().map(|n| n.name.clone()).collect();
    names.sort();
    let placed = r
        .client
        .place(PlaceRequest {
            k: u32::try_from(b.k).unwrap_or(u32::MAX),
            allreduce_bytes: b.bytes,
            ..Default::default()
        })
        .await?
        .into_inner();
    let shaped = b.shape.is_some();
    // Ranks in name order, as a launcher gives them out (a shaped job's
    // shape-blind placements are run so).
    let by_name = |mut set: Vec<String>| -> Vec<String> {
        set.sort();
        set
    };
    let by_index = |set: Vec<usize>| -> Vec<String> {
        by_name(
            set.into_iter()
                .map(|i| topo.nodes[i].name.clone())
                .collect(),
        )
    };
    let mut sets: Vec<(String, Vec<String>)> = Vec::new();
    if let Some(shape) = &b.shape {
        let placed_shaped = r
            .client
            .place(PlaceRequest {
                allreduce_bytes: b.bytes,
                shape: shape
                    .levels()
                    .iter()
                    .map(|l| ShapeLevel {
                        name: l.name.clone(),
                        size: u32::try_from(l.size).unwrap_or(u32::MAX),
                        bytes: l.bytes.unwrap_or(0),
                    })
                    .collect(),
                ..Default::default()
            })
            .await?
            .into_inner();
        sets.push(("netaware-shaped".into(), placed_shaped.ranks));
    }
    sets.extend([
        ("netaware".into(), by_name(placed.nodes.clone())),
        (
            "latency-only".into(),
            by_name(bench::latency_only(&m, &names, b.k)?),
        ),
        ("spread".into(), by_index(bench::spread(topo, b.k))),
    ]);
    for r in 0..b.random_sets.max(1) {
        let name = if r == 0 {
            "random".to_string()
        } else {
            format!("random-{}", r + 1)
        };
        let seed = b.seed.wrapping_add(u64::from(r));
        sets.push((name, by_index(bench::random(topo.nodes.len(), b.k, seed))));
    }
    // Brute force knows sets, not rank orders.
    if let Some(best) = bench::optimal(topo, b.k).filter(|_| !shaped) {
        sets.push(("optimal".into(), by_index(best)));
    }
    let (program, launcher) = bench::prepare(&opts.log_dir.join("bench"))?;
    let (distinct, which) = bench::distinct_sets(
        &sets.iter().map(|(_, n)| n.clone()).collect::<Vec<_>>(),
        shaped,
    );
    for (name, nodes) in &sets {
        eprintln!("{name}: {}", nodes.join(" "));
    }
    // Every distinct set once per round, in the same order each round.
    let per_round = bench::iters_per_round(b.iters, b.rounds);
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); distinct.len()];
    // The emulator's lateness during each set's runs, all rounds.
    let mut late: Vec<Option<Lateness>> = vec![None; distinct.len()];
    // And the machine's CPU time during them.
    let mut cpu = vec![bench::CpuTimes::default(); distinct.len()];
    // The same job with no network between the ranks, in every round too.
    let mut host_ms = Vec::new();
    let round_opts = BenchOptions {
        iters: per_round,
        ..b.clone()
    };
    for round in 1..=b.rounds.max(1) {
        eprintln!(
            "round {round} of {}: {per_round} iterations on each of {} node sets and on this host",
            b.rounds,
            distinct.len()
        );
        let (o, p) = (round_opts.clone(), program.clone());
        let got = off_runtime(move || bench::run_host(&o, &p)).await?;
        host_ms.extend(got.iter_ms);
        for (((set, t), late), cpu) in distinct.iter().zip(&mut times).zip(&mut late).zip(&mut cpu)
        {
            let mark = r.lab.emulator.as_ref().and_then(Emulator::lateness_mark);
            let (o, p, l, ns) = (
                round_opts.clone(),
                program.clone(),
                launcher.clone(),
                set.clone(),
            );
            let got = off_runtime(move || bench::run_mpi(&ns, &o, &p, &l)).await?;
            if let Some(c) = got.cpu {
                cpu.add(c);
            }
            r.check_children()?;
            t.extend(got.iter_ms);
            if let Some(d) = r
                .lab
                .emulator
                .as_ref()
                .and_then(|e| e.lateness_since(mark.as_ref()))
            {
                match late {
                    Some(sum) => {
                        // Same bounds, so adding cannot fail.
                        let _ = sum.add(&d);
                    }
                    None => *late = Some(d),
                }
            }
        }
    }
    let results: Vec<PlacementResult> = sets
        .into_iter()
        .zip(which)
        .map(|((name, _), w)| {
            let nodes = distinct[w].clone();
            let idx: Vec<usize> = nodes.iter().filter_map(|n| topo.index_of(n)).collect();
            // Every set is predicted from the one matrix the placements
            // were chosen from, by Place's own model.
            let measured = bench::measured(&m, &nodes);
            let prediction = match &b.shape {
                Some(shape) => bench::predict_shaped(&m, &nodes, shape, b.bytes),
                None => bench::predict(&measured, b.k, b.bytes, b.algorithm),
            };
            let mut p = bench::placement_result(
                &name,
                nodes,
                bench::configured(topo, &idx),
                Some(measured),
                prediction,
                times[w].clone(),
            );
            p.emulator = late[w].as_ref().and_then(summarize);
            p.cpu_busy = cpu[w].busy_share();
            p
        })
        .collect();
    let host = bench::HostPart::new(host_ms, bench::wire_bytes(b), bench::forwarded_at_once(&m));
    let mut report = bench::report(topo, b, results).with_host(host);
    report.place_predicted_ms =
        (placed.predicted_allreduce_ms > 0.0).then_some(placed.predicted_allreduce_ms);
    Ok(report)
}

/// Run one blocking mpirun off the runtime's threads.
async fn off_runtime(
    run: impl FnOnce() -> Result<bench::MpiRun> + Send + 'static,
) -> Result<bench::MpiRun> {
    tokio::task::spawn_blocking(run)
        .await
        .map_err(|e| Error::Run(format!("mpirun task failed: {e}")))?
}

/// Run iperf3 on every measured pair, one after another, and attach it.
async fn compare_iperf3(
    topo: &Topology,
    rows: &mut [report::BandwidthReport],
    b: BandwidthOptions,
) -> Result<()> {
    for row in rows.iter_mut() {
        let (Some(i), Some(j)) = (topo.index_of(&row.sender), topo.index_of(&row.receiver)) else {
            continue;
        };
        let t = topo.clone();
        let mbps = tokio::task::spawn_blocking(move || {
            crate::sidecar::iperf3(&t, i, j, b.streams, b.omit.as_secs(), b.duration.as_secs())
        })
        .await
        .map_err(|e| Error::Run(format!("iperf3 task failed: {e}")))??;
        row.iperf3_mbps = Some(mbps);
        row.to_iperf3 = Some(row.measured_mbps / mbps);
    }
    Ok(())
}

/// Whether the emulator delivered packets between `src` and the window's
/// peer more than 1 ms late while the window's probes and their answers
/// were under way: from its start until its end plus its longest RTT (a
/// probe answered later than that is not in its figures).
fn emulator_late(
    lab: &super::Lab,
    topo: &Topology,
    src: &str,
    w: &netaware_proto::v1::LinkWindow,
) -> bool {
    let (Some(emulator), Some(a), Some(b)) = (
        lab.emulator.as_ref(),
        topo.index_of(src),
        topo.index_of(&w.peer),
    ) else {
        return false;
    };
    let answers_until = w.window_end_unix_us.saturating_add(w.rtt_max_ns / 1000);
    emulator.late_during(a, b, w.window_start_unix_us, answers_until)
}

/// The label every node has once the aggregator has placed it in groups;
/// the lab creates `--apply` manifests after that.
const GROUP_LABEL: &str = "group-l2";

/// Every topology node carries [`GROUP_LABEL`].
fn grouped(topo: &Topology, labels: &NodeLabels) -> bool {
    let key = format!("{DEFAULT_PREFIX}{GROUP_LABEL}");
    topo.nodes
        .iter()
        .all(|n| labels.get(&n.name).is_some_and(|l| l.contains_key(&key)))
}

/// How long the scheduler may take to bind the applied manifests' pods.
const BIND_TIMEOUT: Duration = Duration::from_secs(60);

/// Create every manifest, then wait until their pods are bound (or the
/// scheduler has had [`BIND_TIMEOUT`]): where every pod went.
async fn place_manifests(
    client: kube::Client,
    manifests: Vec<Manifest>,
) -> Result<Vec<PodPlacement>> {
    let mut expected = 0;
    for m in &manifests {
        let done = objects::apply(&client, &m.objects, "netaware-lab", "default").await?;
        eprintln!("applied {}: {}", m.path.display(), done.join(", "));
        expected += objects::expected_pods(&m.objects);
    }
    objects::wait_bound(&client, expected, BIND_TIMEOUT).await
}

/// Our labels on every Node the API server has (the double or a real one).
async fn read_labels(client: &kube::Client) -> Result<NodeLabels> {
    let req = http::Request::get("/api/v1/nodes")
        .body(Vec::new())
        .map_err(|e| Error::Run(e.to_string()))?;
    let list: serde_json::Value = client
        .request(req)
        .await
        .map_err(|e| Error::Run(format!("listing Nodes: {e}")))?;
    node_labels(&list, DEFAULT_PREFIX)
}

/// The labels under `prefix` of every Node in a NodeList.
fn node_labels(list: &serde_json::Value, prefix: &str) -> Result<NodeLabels> {
    let items = list["items"]
        .as_array()
        .ok_or_else(|| Error::Run("the API server double's node list has no items".into()))?;
    let mut out = NodeLabels::new();
    for item in items {
        let Some(name) = item["metadata"]["name"].as_str() else {
            continue;
        };
        let labels: BTreeMap<String, String> = item["metadata"]["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.starts_with(prefix))
            .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
            .collect();
        out.insert(name.to_string(), labels);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_our_labels_are_kept_and_every_node_is_listed() {
        let list = json!({"kind": "NodeList", "items": [
            {"metadata": {"name": "dj-1", "labels": {
                "netaware.io/group-l1": "g1",
                "kubernetes.io/hostname": "dj-1",
                "netaware.io/quality": "85"}}},
            {"metadata": {"name": "dj-2"}},
            {"metadata": {"labels": {"netaware.io/x": "nameless"}}},
        ]});
        let got = node_labels(&list, "netaware.io/").unwrap();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(
            got["dj-1"],
            BTreeMap::from([
                ("netaware.io/group-l1".to_string(), "g1".to_string()),
                ("netaware.io/quality".to_string(), "85".to_string()),
            ])
        );
        assert!(got["dj-2"].is_empty());
    }

    #[test]
    fn a_body_that_is_not_a_node_list_is_an_error() {
        let e = node_labels(&json!({"kind": "Status", "code": 500}), "netaware.io/").unwrap_err();
        assert!(e.to_string().contains("no items"), "{e}");
    }
}
