//! Helpers for the end-to-end tests: where the workspace's binaries are, and
//! whether this process may build a lab.

pub mod apiserver;
pub mod k8s;
pub mod webdriver;

use std::path::{Path, PathBuf};

/// The directory cargo put the workspace's binaries in (`target/<profile>`):
/// the test executable lives in its `deps/` subdirectory.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Path of a workspace binary; panics with a fix when it is not built.
pub fn binary(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} is not built; run `cargo build --workspace` (or `cargo test --workspace`, which builds every binary)",
        p.display()
    );
    p
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Fail unless we are root. The lab tests are `#[ignore]`d, so a plain
/// `cargo test` leaves them out and says so; asked for explicitly
/// (`--include-ignored`, as `./test.sh` does as root), they must not pass
/// without running.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test builds a lab of network namespaces and needs root: run ./test.sh as root"
    );
}

/// A TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(17401)
}

/// `GET path` on ip:port over plain HTTP/1.1: (status, body), or `None` when
/// nothing answers.
pub fn http_get(ip: &str, port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect((ip, port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// A child process killed (and reaped) when dropped, so a failing test
/// leaves nothing running.
#[derive(Debug)]
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The aggregator's flags for a test whose agents and clients carry no
/// tokens: no agent or query authentication, said explicitly, and so no
/// TLS (the aggregator refuses plain text with either on).
pub const UNAUTHENTICATED: [&str; 6] = [
    "--agent-auth",
    "none",
    "--query-auth",
    "none",
    "--tls",
    "false",
];

/// The aggregator binary with its agent, query and metrics ports on
/// loopback.
pub fn aggregator_command(agent: u16, query: u16, metrics: u16) -> std::process::Command {
    let mut cmd = std::process::Command::new(binary("netaware-aggregator"));
    cmd.args(["--agent-listen", &format!("127.0.0.1:{agent}")])
        .args(["--query-listen", &format!("127.0.0.1:{query}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")]);
    cmd
}

/// Start the aggregator binary on loopback: agent, query and metrics ports
/// given, no Kubernetes (and so [`UNAUTHENTICATED`]), 1 s report windows,
/// plus `extra` flags.
pub fn spawn_aggregator(agent: u16, query: u16, metrics: u16, extra: &[&str]) -> Killed {
    Killed(
        aggregator_command(agent, query, metrics)
            .args(["--kubernetes", "off"])
            .args(UNAUTHENTICATED)
            .args(["--report-interval", "1s"])
            .args(extra)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start netaware-aggregator: {e}")),
    )
}

/// Ask `child` to stop cleanly (SIGTERM), as Kubernetes does.
pub fn sigterm(child: &std::process::Child) {
    let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
    if let Err(e) = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    ) {
        panic!("cannot signal process {pid}: {e}");
    }
}

/// A finished `netaware-lab run`.
#[derive(Debug)]
pub struct LabRun {
    /// The JSON report.
    pub report: serde_json::Value,
    /// What the lab printed.
    pub stdout: String,
    /// Where the report and logs are: removed when the test passes, kept
    /// when it fails.
    pub dir: Scratch,
}

/// A test's working directory (logs, etcd's data, reports). It is removed
/// when the test passes and kept, named on stderr, when it fails, so the
/// logs of a failure can be read. Removing it matters: an etcd alone
/// preallocates 64 MB of write-ahead log, and a test suite that leaves
/// every control plane behind fills a CI disk within a few runs.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    /// A new, empty directory `<tmp>/netaware-<name>-<pid>` (one left by an
    /// earlier run of the same process id is removed first).
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("netaware-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} for its logs", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Run `netaware-lab run TOPOLOGY --for DURATION` (a file under
/// `lab/topologies/`) with a fresh query port and log directory; panics with
/// the lab's output when it fails.
pub fn run_lab(topology: &str, duration: &str, extra: &[&str]) -> LabRun {
    let name = topology.trim_end_matches(".yaml");
    let dir = Scratch::new(&format!("e2e-{name}"));
    let json = dir.path().join("report.json");
    let topology = repo_root().join("lab/topologies").join(topology);
    let out = std::process::Command::new(binary("netaware-lab"))
        .arg("run")
        .arg(&topology)
        .args(["--for", duration])
        .arg("--json")
        .arg(&json)
        .args(["--query-port", &free_port().to_string()])
        .arg("--log-dir")
        .arg(dir.path().join("logs"))
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("cannot run netaware-lab: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "lab failed (logs kept in {}):\n{}\n{stdout}",
        dir.path().display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read(&json).unwrap_or_else(|e| panic!("{}: {e}", json.display()));
    let report = serde_json::from_slice(&text).unwrap_or_else(|e| panic!("report: {e}"));
    LabRun {
        report,
        stdout,
        dir,
    }
}

/// Two-sided 99 % bound on the number of lost packets out of `n` with loss
/// probability `p` (normal approximation of the binomial, z = 2.576).
pub fn binomial_99(n: u64, p: f64) -> (f64, f64) {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    let half = 2.576 * sd;
    ((mean - half).max(0.0), mean + half)
}

/// Render the Helm chart with Helm's own engine (`charts/check.py`, which
/// also lints it) into a directory of its own (`tag`: tests run in
/// parallel): one `<case>.jsonl` of rendered objects per values case.
/// `None`, after a loud `SKIPPED`, when helm-python-sdk is missing outside
/// CI (`./test.sh` installs it; in CI a missing SDK fails the test).
pub fn render_chart(tag: &str) -> Option<PathBuf> {
    let dir = std::env::temp_dir().join(format!("netaware-chart-{}-{tag}", std::process::id()));
    // ./test.sh points this at a virtualenv with helm-python-sdk.
    let python = std::env::var_os("NETAWARE_PYTHON").unwrap_or_else(|| "python3".into());
    let out = std::process::Command::new(python)
        .arg(repo_root().join("charts/check.py"))
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| panic!("python3 is needed to render the chart: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(3) && std::env::var_os("CI").is_none() {
        eprintln!("SKIPPED: {stderr}");
        return None;
    }
    assert!(
        out.status.success(),
        "charts/check.py failed:\n{}{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    Some(dir)
}

/// Write to `path` a kubeconfig with a token user whose API server
/// (127.0.0.1:1) never answers: enough for a binary to build its client and
/// check its settings, which is all a start-up refusal test needs.
pub fn unreachable_kubeconfig(path: &std::path::Path) {
    std::fs::write(
        path,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n\
         users: [{name: u, user: {token: x}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n\
         current-context: c\n",
    )
    .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}
