#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! Two real aggregator replicas elect a leader through a Lease on the
//! API-server double. Agents and the CLI talk to the follower; their data
//! reaches the one leader, which alone writes Nodes. When the leader dies,
//! the follower takes over; when it stops cleanly, it releases the lease.
//!
//! The replicas listen on 127.0.0.2 and 127.0.0.3 with the same ports, as
//! pods of one Deployment do on their own IPs.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use netaware_e2e::apiserver::ApiServerDouble;
use netaware_e2e::{Killed, binary, free_port, http_get, sigterm};

const NS: &str = "netaware";
const LEASE: &str = "netaware-aggregator";

fn eventually<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One aggregator replica: its IP doubles as its pod IP and its token.
struct Replica {
    ip: &'static str,
    proc: Option<Killed>,
    _kubeconfig: tempfile_path::TempPath,
}

mod tempfile_path {
    /// A file removed when dropped.
    pub struct TempPath(pub std::path::PathBuf);
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

struct Ports {
    agent: u16,
    query: u16,
    metrics: u16,
}

fn start_replica(double: &ApiServerDouble, ip: &'static str, p: &Ports) -> Replica {
    let path = std::env::temp_dir().join(format!(
        "netaware-le-{}-{ip}.kubeconfig",
        std::process::id()
    ));
    std::fs::write(&path, double.kubeconfig_with_token(ip)).unwrap();
    let child = Command::new(binary("netaware-aggregator"))
        .args(["--agent-listen", &format!("{ip}:{}", p.agent)])
        .args(["--query-listen", &format!("{ip}:{}", p.query)])
        .args(["--metrics-listen", &format!("{ip}:{}", p.metrics)])
        .args(["--kubeconfig", path.to_str().unwrap()])
        .args(["--leader-election", "true", "--pod-ip", ip])
        .args(["--pod-name", &format!("agg-{ip}"), "--pod-namespace", NS])
        .args(["--lease-duration", "3s", "--lease-grace", "1s"])
        .args(["--report-interval", "1s", "--recompute-interval", "1s"])
        .args(["--bandwidth-tests", "false"])
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Replica {
        ip,
        proc: Some(Killed(child)),
        _kubeconfig: tempfile_path::TempPath(path),
    }
}

fn is_leader(r: &Replica, p: &Ports) -> Option<bool> {
    let (_, body) = http_get(r.ip, p.metrics, "/metrics")?;
    // The sample line, not the HELP text (which mentions "netaware_leader 1").
    match body
        .lines()
        .find_map(|l| l.strip_prefix("netaware_leader "))?
    {
        "1" => Some(true),
        "0" => Some(false),
        _ => None,
    }
}

fn ready(r: &Replica, p: &Ports) -> bool {
    http_get(r.ip, p.metrics, "/readyz").is_some_and(|(s, _)| s == 200)
}

fn start_agent(name: &str, ip: &str, aggregator: &str) -> Killed {
    Killed(
        Command::new(binary("netaware-agent"))
            .args(["--node-name", name, "--node-ip", ip])
            .args(["--stamp-bind", ip, "--stamp-port", &free_port().to_string()])
            .args(["--bandwidth-port", "0", "--icmp", "false"])
            .args(["--metrics-listen", &format!("{ip}:{}", free_port())])
            .args(["--aggregator", aggregator])
            .args(["--backoff-max", "1s"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn cli_nodes(endpoint: &str) -> Output {
    Command::new(binary("netaware"))
        .args(["--aggregator", endpoint, "nodes"])
        .output()
        .unwrap()
}

/// Node writes (PATCH /api/v1/nodes/...) sent with `token`.
fn node_writes_by(double: &ApiServerDouble, token: &str) -> usize {
    double
        .requests_by()
        .iter()
        .filter(|(t, line)| t == token && line.starts_with("PATCH /api/v1/nodes/"))
        .count()
}

/// Lease requests other than GET sent with `token`.
fn lease_writes_by(double: &ApiServerDouble, token: &str) -> usize {
    double
        .requests_by()
        .iter()
        .filter(|(t, line)| t == token && line.contains("/leases") && !line.starts_with("GET"))
        .count()
}

fn holder(double: &ApiServerDouble) -> Option<String> {
    double
        .lease_spec(NS, LEASE)?
        .get("holderIdentity")?
        .as_str()
        .map(String::from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_writes_followers_forward_and_a_follower_takes_over() {
    let double = ApiServerDouble::start(&["n1", "n2"]).await.unwrap();
    let ports = Ports {
        agent: free_port(),
        query: free_port(),
        metrics: free_port(),
    };
    let mut a = start_replica(&double, "127.0.0.2", &ports);
    let mut b = start_replica(&double, "127.0.0.3", &ports);

    // Exactly one leader; both ready (the follower knows where to forward).
    let (leader_is_a, _) = eventually("one leader, both ready", Duration::from_secs(30), || {
        let (la, lb) = (is_leader(&a, &ports)?, is_leader(&b, &ports)?);
        (la != lb && ready(&a, &ports) && ready(&b, &ports)).then_some((la, lb))
    });
    let (leader, follower) = if leader_is_a {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let held = holder(&double).expect("the lease has a holder");
    // Both replicas may have tried to create and claim the lease at start
    // (one got a conflict); from now on the follower must only read it.
    let follower_lease_writes = lease_writes_by(&double, follower.ip);
    assert!(held.ends_with(&format!("@{}", leader.ip)), "{held}");

    // Agents connect to the follower only; their data reaches the leader.
    let via_follower = |port: u16| format!("http://{}:{port}", follower.ip);
    let _n1 = start_agent("n1", "127.0.0.11", &via_follower(ports.agent));
    let _n2 = start_agent("n2", "127.0.0.12", &via_follower(ports.agent));
    eventually("labels on both nodes", Duration::from_secs(40), || {
        ["n1", "n2"]
            .iter()
            .all(|n| {
                double
                    .labels(n)
                    .is_some_and(|l| l.keys().any(|k| k.starts_with("netaware.io/")))
            })
            .then_some(())
    });
    assert!(node_writes_by(&double, leader.ip) > 0);
    assert_eq!(
        node_writes_by(&double, follower.ip),
        0,
        "a follower must never write Nodes"
    );
    // Once the lease was held, the follower only read it.
    assert_eq!(
        lease_writes_by(&double, follower.ip),
        follower_lease_writes,
        "a follower must not write a held lease"
    );
    // A query through the follower is answered by the leader's matrix.
    let out = cli_nodes(&via_follower(ports.query));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("n1") && text.contains("n2"), "{text}");

    // The leader dies without releasing the lease: the follower takes
    // over once it expires, the agents reconnect, and it writes.
    let dead = leader.proc.take().unwrap();
    drop(dead);
    let writes_before = node_writes_by(&double, follower.ip);
    eventually("the follower to lead", Duration::from_secs(30), || {
        is_leader(follower, &ports).filter(|l| *l)
    });
    assert!(
        holder(&double)
            .unwrap()
            .ends_with(&format!("@{}", follower.ip))
    );
    eventually(
        "the new leader to write Nodes",
        Duration::from_secs(40),
        || (node_writes_by(&double, follower.ip) > writes_before).then_some(()),
    );
    let out = cli_nodes(&via_follower(ports.query));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("n1") && text.contains("n2"), "{text}");

    // A clean stop releases the lease at once.
    let mut p = follower.proc.take().unwrap();
    sigterm(&p.0);
    let status = eventually("the replica to exit", Duration::from_secs(20), || {
        p.0.try_wait().unwrap()
    });
    assert!(status.success(), "{status:?}");
    assert_eq!(holder(&double), None, "the lease was not released");
}
