//! Measurements taken beside the agents during a `run`, for benchmarks:
//! `ping` between every pair (run side by side with the agents), and each
//! agent's CPU time and peak resident memory from `/proc`.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde::Serialize;

use crate::emulator::data_ip;
use crate::error::{Error, Result};
use crate::netns::ns_name;
use crate::topology::Topology;

/// What `ping -q` reported for one pair.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PingSummary {
    pub avg_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub mdev_ms: f64,
    pub sent: u64,
    pub received: u64,
}

/// Parse the summary of `ping -q` (iputils).
pub fn parse_ping(output: &str) -> Option<PingSummary> {
    let counts = output.lines().find(|l| l.contains("packets transmitted"))?;
    let mut words = counts.split_whitespace();
    let sent = words.next()?.parse().ok()?;
    let received = counts
        .split(',')
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let rtt = output.lines().find(|l| l.contains("min/avg/max"))?;
    let values: Vec<f64> = rtt
        .split('=')
        .nth(1)?
        .split_whitespace()
        .next()?
        .split('/')
        .filter_map(|v| v.parse().ok())
        .collect();
    let [min_ms, avg_ms, max_ms, mdev_ms] = values[..] else {
        return None;
    };
    Some(PingSummary {
        avg_ms,
        min_ms,
        max_ms,
        mdev_ms,
        sent,
        received,
    })
}

/// `ping` from every node to every other node, started together.
#[derive(Debug)]
pub struct PingMesh {
    children: Vec<((String, String), Child)>,
}

impl PingMesh {
    /// Start one `ping -q -i INTERVAL -w SECONDS` per directed pair.
    pub fn start(topo: &Topology, interval: Duration, duration: Duration) -> Result<Self> {
        let mut children = Vec::new();
        for (i, a) in topo.nodes.iter().enumerate() {
            for (j, b) in topo.nodes.iter().enumerate() {
                if i == j {
                    continue;
                }
                let child = Command::new("ip")
                    .args(["netns", "exec", &ns_name(&a.name), "ping", "-q", "-n"])
                    .args(["-i", &format!("{:.3}", interval.as_secs_f64())])
                    .args(["-w", &duration.as_secs().max(1).to_string()])
                    .arg(data_ip(j).to_string())
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|e| {
                        Error::Run(format!("cannot start ping (install iputils-ping): {e}"))
                    })?;
                children.push(((a.name.clone(), b.name.clone()), child));
            }
        }
        Ok(Self { children })
    }

    /// Wait for every ping and parse their summaries.
    pub fn finish(self) -> Result<BTreeMap<(String, String), PingSummary>> {
        let mut out = BTreeMap::new();
        for (pair, child) in self.children {
            let o = child.wait_with_output()?;
            let text = String::from_utf8_lossy(&o.stdout);
            match parse_ping(&text) {
                Some(s) => {
                    out.insert(pair, s);
                }
                None => {
                    return Err(Error::Run(format!(
                        "ping {} -> {} printed no summary: {}{}",
                        pair.0,
                        pair.1,
                        text.trim(),
                        String::from_utf8_lossy(&o.stderr).trim()
                    )));
                }
            }
        }
        Ok(out)
    }
}

/// Port iperf3 listens on in the sender's namespace.
const IPERF3_PORT: u16 = 5201;

/// Run iperf3 from node `sender` to node `receiver` (server in the sender's
/// namespace, client in the receiver's with `-R`, so data flows the same
/// way as in netaware's test) with `streams` streams, omitting `omit_s` and
/// measuring `duration_s` seconds. Returns the receiver's Mbit/s.
pub fn iperf3(
    topo: &Topology,
    sender: usize,
    receiver: usize,
    streams: u32,
    omit_s: u64,
    duration_s: u64,
) -> Result<f64> {
    let ip = data_ip(sender).to_string();
    let mut server = Command::new("ip")
        .args(["netns", "exec", &ns_name(&topo.nodes[sender].name)])
        .args([
            "iperf3",
            "-s",
            "-1",
            "-B",
            &ip,
            "-p",
            &IPERF3_PORT.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::Run(format!("cannot start iperf3 (install iperf3): {e}")))?;
    // The server needs a moment to listen; the client retries a few times.
    let mut last = String::new();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        let o = Command::new("ip")
            .args(["netns", "exec", &ns_name(&topo.nodes[receiver].name)])
            .args([
                "iperf3",
                "-c",
                &ip,
                "-p",
                &IPERF3_PORT.to_string(),
                "-R",
                "-J",
            ])
            .args(["-P", &streams.to_string()])
            .args(["-O", &omit_s.to_string(), "-t", &duration_s.to_string()])
            .stdin(Stdio::null())
            .output()?;
        let text = String::from_utf8_lossy(&o.stdout);
        match parse_iperf3(&text) {
            Some(mbps) => {
                let _ = server.wait();
                return Ok(mbps);
            }
            None => last = text.chars().take(300).collect(),
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    Err(Error::Run(format!(
        "iperf3 {} -> {} failed: {last}",
        topo.nodes[sender].name, topo.nodes[receiver].name
    )))
}

/// Mbit/s received over the whole (non-omitted) test, from `iperf3 -J`.
pub fn parse_iperf3(json: &str) -> Option<f64> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    if v.get("error").is_some() {
        return None;
    }
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e6)
}

/// CPU and memory of one agent over the measuring period.
#[derive(Debug, Clone, Serialize)]
pub struct AgentUsage {
    pub node: String,
    /// CPU time used divided by wall time, in percent of one core.
    pub cpu_percent: f64,
    /// Largest resident set size seen, MiB.
    pub rss_max_mib: f64,
}

/// user + system CPU time of a process, from /proc/PID/stat.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(100);
    Some(Duration::from_secs_f64(ticks as f64 / hz as f64))
}

/// Resident set size of a process in KiB, from /proc/PID/status.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Samples the agents' CPU time and memory.
#[derive(Debug)]
pub struct UsageMeter {
    start: std::time::Instant,
    agents: Vec<(String, u32, Duration, u64)>,
}

impl UsageMeter {
    /// Start measuring the given (node, pid) agents.
    pub fn start(agents: Vec<(String, u32)>) -> Self {
        let agents = agents
            .into_iter()
            .map(|(n, pid)| {
                let cpu = cpu_time(pid).unwrap_or_default();
                let rss = rss_kib(pid).unwrap_or(0);
                (n, pid, cpu, rss)
            })
            .collect();
        Self {
            start: std::time::Instant::now(),
            agents,
        }
    }

    /// Record the current memory of every agent (call periodically).
    pub fn sample(&mut self) {
        for (_, pid, _, rss) in &mut self.agents {
            *rss = (*rss).max(rss_kib(*pid).unwrap_or(0));
        }
    }

    /// Usage since `start`.
    pub fn finish(mut self) -> Vec<AgentUsage> {
        self.sample();
        let wall = self.start.elapsed().as_secs_f64().max(1e-9);
        self.agents
            .iter()
            .map(|(node, pid, cpu0, rss)| AgentUsage {
                node: node.clone(),
                cpu_percent: cpu_time(*pid).map_or(0.0, |c| {
                    c.saturating_sub(*cpu0).as_secs_f64() / wall * 100.0
                }),
                rss_max_mib: *rss as f64 / 1024.0,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iputils_summary_is_parsed() {
        let out = "PING 10.77.0.2 (10.77.0.2) 56(84) bytes of data.\n\n\
                   --- 10.77.0.2 ping statistics ---\n\
                   100 packets transmitted, 98 received, 2% packet loss, time 9903ms\n\
                   rtt min/avg/max/mdev = 5.031/5.097/5.169/0.038 ms\n";
        let s = parse_ping(out).unwrap();
        assert_eq!((s.sent, s.received), (100, 98));
        assert_eq!(
            (s.min_ms, s.avg_ms, s.max_ms, s.mdev_ms),
            (5.031, 5.097, 5.169, 0.038)
        );
        assert!(parse_ping("ping: connect: Network is unreachable").is_none());
    }

    #[test]
    fn iperf3_json_is_parsed() {
        let out = r#"{"start": {}, "intervals": [],
            "end": {"sum_sent": {"bits_per_second": 201000000.0},
                    "sum_received": {"bits_per_second": 193500000.0}}}"#;
        assert_eq!(parse_iperf3(out), Some(193.5));
        let err = r#"{"start": {}, "end": {}, "error": "unable to connect to server"}"#;
        assert_eq!(parse_iperf3(err), None);
        assert_eq!(parse_iperf3("iperf3: error"), None);
    }

    #[test]
    fn our_own_cpu_and_memory_are_readable() {
        let me = std::process::id();
        let mut m = UsageMeter::start(vec![("self".into(), me)]);
        // Burn a little CPU so the figure is above zero.
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_millis(200) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        assert!(x != 1);
        m.sample();
        let u = m.finish();
        assert!(u[0].cpu_percent > 10.0, "{:?}", u[0]);
        assert!(u[0].rss_max_mib > 1.0, "{:?}", u[0]);
    }
}
