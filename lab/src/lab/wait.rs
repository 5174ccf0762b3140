//! Waiting for the lab to get somewhere: the query API up, every agent
//! connected, every pair measured, every pair's bandwidth tested. Each wait
//! polls the aggregator's matrix and checks the lab's processes between
//! polls, so a crashed agent fails the run at once instead of at a
//! deadline. What counts as progress is a pure function of one matrix.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use netaware_model::bandwidth::{MIN_RING_MEMBERS, ring_members};
use netaware_proto::ProbeMethod;
use netaware_proto::v1::query_service_client::QueryServiceClient;
use netaware_proto::v1::{
    BandwidthState, ConcurrentTest, GetMatrixRequest, GetMatrixResponse, Group, ListGroupsRequest,
};
use tracing::warn;

use super::{BandwidthOptions, CONNECT_DEADLINE, Lab, Options, human};
use crate::error::{Error, Result};
use crate::topology::Topology;

/// How often the matrix is polled while waiting for agents.
const CONNECT_POLL: Duration = Duration::from_millis(200);
/// How often the matrix is polled while waiting for measurements.
const MEASURE_POLL: Duration = Duration::from_millis(500);
/// How long the query API may take to come up.
const QUERY_DEADLINE: Duration = Duration::from_secs(10);

/// A lab whose aggregator answers queries: what the waits and the modes
/// work on.
#[derive(Debug)]
pub(super) struct Running<'a> {
    pub lab: &'a mut Lab,
    pub client: netaware_proto::client::QueryClient,
    pub topo: &'a Topology,
    pub opts: &'a Options,
}

/// Fail if a process of the lab has exited.
pub(super) fn check_children(lab: &mut Lab, opts: &Options) -> Result<()> {
    let exited = lab.network.exited_children();
    if exited.is_empty() {
        return Ok(());
    }
    Err(Error::Run(format!(
        "exited unexpectedly: {}; see the logs in {}",
        exited.join(", "),
        opts.log_dir.display()
    )))
}

/// Connect to the aggregator's query API, waiting for it to come up.
pub(super) async fn connect_query(
    lab: &mut Lab,
    opts: &Options,
) -> Result<netaware_proto::client::QueryClient> {
    let url = format!("{}://127.0.0.1:{}", lab.security.scheme(), opts.query_port);
    let endpoint = netaware_proto::client::endpoint(&url, lab.security.ca()).map_err(Error::Run)?;
    let bearer = netaware_proto::client::Bearer::new(lab.security.query_token()?.as_deref())
        .map_err(Error::Run)?;
    let deadline = tokio::time::Instant::now() + QUERY_DEADLINE;
    loop {
        match endpoint.connect().await {
            Ok(ch) => {
                return Ok(QueryServiceClient::with_interceptor(ch, bearer)
                    .max_decoding_message_size(netaware_proto::limits::MAX_QUERY_RESPONSE_BYTES));
            }
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(Error::Run(format!(
                    "the aggregator's query API at {url} did not come up: {e}; see {}",
                    opts.log_dir.join("aggregator.log").display()
                )));
            }
            Err(_) => {
                check_children(lab, opts)?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Nodes of the topology without a connected agent in `m`.
pub(super) fn missing_agents<'t>(topo: &'t Topology, m: &GetMatrixResponse) -> Vec<&'t str> {
    topo.nodes
        .iter()
        .map(|n| n.name.as_str())
        .filter(|n| !m.nodes.iter().any(|s| s.node_name == *n && s.connected))
        .collect()
}

/// Directed pairs with smoothed UDP figures from at least two windows.
pub(super) fn udp_pairs_measured(m: &GetMatrixResponse) -> usize {
    m.links
        .iter()
        .filter(|l| l.method == ProbeMethod::StampUdp as i32 && l.windows_total >= 2)
        .count()
}

/// Directed pairs whose smoothed UDP RTT is known: at least one window
/// that no bandwidth test disturbed (what `Place` and the bench read; a
/// link whose every window overlapped a test has none yet).
pub(super) fn udp_pairs_clean(m: &GetMatrixResponse) -> usize {
    m.links
        .iter()
        .filter(|l| {
            l.method == ProbeMethod::StampUdp as i32
                && l.windows_total > l.disturbed_windows_total
                && l.smoothed.as_ref().is_some_and(|s| s.rtt_known)
        })
        .count()
}

/// Unordered pairs with at least one bandwidth result (either direction).
pub(super) fn bandwidth_pairs_tested(bandwidth: &[BandwidthState]) -> usize {
    bandwidth
        .iter()
        .map(|s| {
            if s.sender < s.receiver {
                (s.sender.as_str(), s.receiver.as_str())
            } else {
                (s.receiver.as_str(), s.sender.as_str())
            }
        })
        .collect::<BTreeSet<_>>()
        .len()
}

/// The l1 groups the aggregator still has to test concurrently (the
/// members [`ring_members`] takes), as sorted member lists: those with a
/// member in no test of `tested`. As in the scheduler, a node counts as
/// tested whatever group it was tested in: groups change for a while under
/// load, and a changed list of tested members starts no new test.
pub(super) fn rings_untested(groups: &[Group], tested: &[ConcurrentTest]) -> Vec<Vec<String>> {
    let done: BTreeSet<&str> = tested
        .iter()
        .flat_map(|c| c.members.iter().map(String::as_str))
        .collect();
    groups
        .iter()
        .filter(|g| g.level == 1)
        .filter_map(|g| ring_members(g.members.iter().cloned()))
        .filter(|m| m.iter().any(|n| !done.contains(n.as_str())))
        .collect()
}

impl Running<'_> {
    /// Fail if a process of the lab has exited.
    pub fn check_children(&mut self) -> Result<()> {
        check_children(self.lab, self.opts)
    }

    /// The whole matrix, every method.
    pub async fn matrix(&mut self) -> Result<GetMatrixResponse> {
        self.get_matrix(false).await
    }

    /// The matrix with every window's RTT histogram (what percentiles are
    /// computed from; the aggregator leaves them out unless asked).
    pub async fn matrix_with_histograms(&mut self) -> Result<GetMatrixResponse> {
        self.get_matrix(true).await
    }

    async fn get_matrix(&mut self, include_histograms: bool) -> Result<GetMatrixResponse> {
        Ok(self
            .client
            .get_matrix(GetMatrixRequest {
                method: ProbeMethod::Unspecified as i32,
                include_histograms,
                ..Default::default()
            })
            .await?
            .into_inner())
    }

    /// Poll the matrix every `every` until `progress` says done (`Ok`) or
    /// `deadline` passes, which returns `progress`'s last `Err` (what is
    /// still missing). The lab's processes are checked between polls.
    async fn poll<T, E>(
        &mut self,
        deadline: tokio::time::Instant,
        every: Duration,
        mut progress: impl FnMut(GetMatrixResponse) -> std::result::Result<T, E>,
    ) -> Result<std::result::Result<T, E>> {
        loop {
            match progress(self.matrix().await?) {
                Ok(done) => return Ok(Ok(done)),
                Err(missing) if tokio::time::Instant::now() >= deadline => return Ok(Err(missing)),
                Err(_) => {}
            }
            self.check_children()?;
            tokio::time::sleep(every).await;
        }
    }

    /// Wait until every node's agent is connected.
    pub async fn connected(&mut self) -> Result<()> {
        let topo = self.topo;
        let deadline = tokio::time::Instant::now() + CONNECT_DEADLINE;
        let polled = self
            .poll(deadline, CONNECT_POLL, |m| {
                let missing: Vec<String> = missing_agents(topo, &m)
                    .into_iter()
                    .map(String::from)
                    .collect();
                if missing.is_empty() {
                    Ok(())
                } else {
                    Err(missing)
                }
            })
            .await?;
        polled.map_err(|missing| {
            Error::Run(format!(
                "agents not connected after {}: {}; see their logs in {}",
                human(CONNECT_DEADLINE),
                missing.join(", "),
                self.opts.log_dir.display()
            ))
        })
    }

    /// Wait until every directed pair has sent at least two UDP windows.
    pub async fn rtt(&mut self) -> Result<()> {
        let n = self.topo.nodes.len();
        let want = n * (n - 1);
        let deadline =
            tokio::time::Instant::now() + self.opts.report_interval * 10 + CONNECT_DEADLINE;
        let polled = self
            .poll(deadline, MEASURE_POLL, |m| {
                let have = udp_pairs_measured(&m);
                if have >= want { Ok(()) } else { Err(have) }
            })
            .await?;
        polled.map_err(|have| {
            Error::Run(format!(
                "only {have} of {want} directed pairs measured in time; see the logs in {}",
                self.opts.log_dir.display()
            ))
        })
    }

    /// Wait until every directed pair has a smoothed RTT from windows no
    /// bandwidth test disturbed: while the tests run, a link whose every
    /// window overlapped one has none, and `Place` would leave its pair
    /// out (or estimate it). For after the tests; past the deadline it
    /// warns and goes on with what there is.
    pub async fn clean_rtt(&mut self) -> Result<()> {
        let n = self.topo.nodes.len();
        let want = n * (n - 1);
        let deadline = tokio::time::Instant::now() + self.opts.report_interval * 10;
        let polled = self
            .poll(deadline, MEASURE_POLL, |m| {
                let have = udp_pairs_clean(&m);
                if have >= want { Ok(()) } else { Err(have) }
            })
            .await?;
        if let Err(have) = polled {
            warn!(
                have,
                want,
                "not every pair has an RTT from undisturbed windows yet; placing with those that do"
            );
        }
        Ok(())
    }

    /// Wait until every l1 group the aggregator tests concurrently has its
    /// test (or a deadline sized for one test per group). Past the
    /// deadline it warns: those groups' pairs keep their pairwise figures.
    pub async fn concurrent(&mut self, b: BandwidthOptions) -> Result<()> {
        let per_test = b.omit + b.duration + Duration::from_secs(3);
        let groups = self.topo.nodes.len().div_ceil(MIN_RING_MEMBERS);
        let deadline = tokio::time::Instant::now()
            + per_test * u32::try_from(groups + 1).unwrap_or(u32::MAX)
            + self.opts.report_interval * 3
            + Duration::from_secs(30);
        loop {
            let groups = self
                .client
                .list_groups(ListGroupsRequest {})
                .await
                .map_err(|e| Error::Run(format!("ListGroups failed: {e}")))?
                .into_inner()
                .groups;
            let missing = rings_untested(&groups, &self.matrix().await?.concurrent);
            if missing.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let names: Vec<String> = missing.iter().map(|m| m.join(",")).collect();
                warn!(
                    groups = %names.join(" "),
                    "these groups were not tested concurrently in time; their pairs keep their pairwise bandwidth"
                );
                return Ok(());
            }
            self.check_children()?;
            tokio::time::sleep(MEASURE_POLL).await;
        }
    }

    /// Wait until every unordered pair has a bandwidth result (or a deadline
    /// sized for the number of tests), then return the latest results. Past
    /// the deadline it warns and returns what there is.
    pub async fn bandwidth(&mut self, b: BandwidthOptions) -> Result<Vec<BandwidthState>> {
        let n = self.topo.nodes.len();
        let pairs = n * (n - 1) / 2;
        let per_test = b.omit + b.duration + Duration::from_secs(3);
        // Concurrent tests of the groups run alone, between the pair tests.
        let rings = n.div_ceil(MIN_RING_MEMBERS);
        let rounds =
            u32::try_from(pairs.div_ceil(b.concurrency.max(1)) + rings).unwrap_or(u32::MAX);
        let deadline = tokio::time::Instant::now() + per_test * rounds + Duration::from_secs(30);
        let polled = self
            .poll(deadline, MEASURE_POLL, |m| {
                let tested = bandwidth_pairs_tested(&m.bandwidth);
                if tested >= pairs {
                    Ok(m.bandwidth)
                } else {
                    Err((tested, m.bandwidth))
                }
            })
            .await?;
        Ok(polled.unwrap_or_else(|(measured, bandwidth)| {
            warn!(
                measured,
                pairs, "not every pair's bandwidth was measured in time; comparing those that were"
            );
            bandwidth
        }))
    }
}

/// Wait until `path` exists and has content; return it.
pub(super) fn for_file(path: &Path, timeout: Duration) -> Result<String> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && !s.trim().is_empty()
        {
            return Ok(s);
        }
        if std::time::Instant::now() >= deadline {
            return Err(Error::Run(format!(
                "{} did not appear within {}",
                path.display(),
                human(timeout)
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests;
