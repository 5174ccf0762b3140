//! Building and tearing down the lab's network: one namespace per node with
//! a TUN device (data network, through the emulator) and a veth into a bridge
//! in the root namespace (control network, for the agents' gRPC sessions).
//!
//! ```text
//!   nwa-<node>: nwt<i> 10.77.0.<i+1>/24 ──fd──▶ emulator (this process)
//!               ctl0   10.78.0.<i+1>/24 ──veth nwv<i>──▶ bridge nwa-br0 10.78.0.254 (aggregator)
//! ```
//!
//! Everything is created under fixed names with the `nwa-`/`nwt`/`nwv`
//! prefixes and recorded as it is created, so teardown removes exactly what
//! exists, and a later run can find and remove what a crashed run left behind.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use tun_rs::{DeviceBuilder, SyncDevice};

use crate::emulator::data_ip;
use crate::error::{Error, Result};
use crate::topology::Topology;

/// Prefix of every namespace the lab creates.
pub const NS_PREFIX: &str = "nwa-";
/// The control-network bridge in the root namespace.
pub const BRIDGE: &str = "nwa-br0";
/// The bridge's address: where agents reach the aggregator.
pub const BRIDGE_IP: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 254);
/// Where the lab records its pid and children, to detect leftovers.
pub const STATE_DIR: &str = "/run/netaware-lab";
/// Interface-name prefixes of the lab's TUN and host-side veth devices.
const TUN_PREFIX: &str = "nwt";
const VETH_PREFIX: &str = "nwv";

/// Namespace of a node.
pub fn ns_name(node: &str) -> String {
    format!("{NS_PREFIX}{node}")
}

/// Control-network address of node `i`.
pub fn ctl_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 78, 0, u8::try_from(i + 1).unwrap_or(255))
}

/// Run a command; its stderr becomes the error message.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let cmd = || format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Command {
            command: cmd(),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            command: cmd(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Run `tc -n NS -batch -` with the given lines.
fn tc_batch(ns: &str, lines: &str) -> Result<()> {
    let command = format!("tc -n {ns} -batch -");
    let fail = |message: String| Error::Command {
        command: command.clone(),
        message,
    };
    let mut child = Command::new("tc")
        .args(["-n", ns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(lines.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

/// Checks done before anything is created: root, /dev/net/tun, the tools.
pub fn preflight() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::Preflight(
            "netaware-lab must run as root: it creates network namespaces, TUN devices and a \
             bridge (try: sudo netaware-lab ...)"
                .into(),
        ));
    }
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        return Err(Error::Preflight(format!(
            "cannot open /dev/net/tun ({e}): load the tun module (modprobe tun) or, in a \
             container, pass the device through (--device /dev/net/tun)"
        )));
    }
    for (tool, package) in [
        ("ip", "iproute2"),
        ("tc", "iproute2"),
        ("unshare", "util-linux"),
    ] {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
        if !found {
            return Err(Error::Preflight(format!(
                "'{tool}' is not installed (Debian package {package})"
            )));
        }
    }
    Ok(())
}

fn pid_file() -> PathBuf {
    Path::new(STATE_DIR).join("lab.pid")
}

fn aggregator_pid_file() -> PathBuf {
    Path::new(STATE_DIR).join("aggregator.pid")
}

fn apiserver_pid_file() -> PathBuf {
    Path::new(STATE_DIR).join("apiserver.pid")
}

/// "name pid" lines of a real control plane's processes.
fn kubernetes_pid_file() -> PathBuf {
    Path::new(STATE_DIR).join("kubernetes.pids")
}

/// Remember a real control plane's processes, so a lab killed before it
/// could stop them (SIGKILL, a crash) has them stopped by the next one.
pub fn note_control_plane(pids: &[(&str, u32)]) -> Result<()> {
    std::fs::create_dir_all(STATE_DIR)?;
    let text: String = pids.iter().map(|(n, p)| format!("{n} {p}\n")).collect();
    std::fs::write(kubernetes_pid_file(), text)?;
    Ok(())
}

/// Names of the lab's own helper processes (not agents).
pub const AGGREGATOR: &str = "aggregator";
pub const APISERVER: &str = "apiserver";

/// The command name of a live process, if it exists.
fn process_name(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn kill(pid: i32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
}

fn lab_namespaces() -> Vec<String> {
    run("ip", &["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(NS_PREFIX))
        .map(str::to_string)
        .collect()
}

fn lab_links() -> Vec<String> {
    run("ip", &["-o", "link", "show"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .filter(|n| n == BRIDGE || n.starts_with(TUN_PREFIX) || n.starts_with(VETH_PREFIX))
        .collect()
}

/// Stop every process inside a namespace (TERM, then KILL after a grace period).
fn kill_namespace_processes(ns: &str) {
    let pids = |ns: &str| -> Vec<i32> {
        run("ip", &["netns", "pids", ns])
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    let first = pids(ns);
    if first.is_empty() {
        return;
    }
    for p in &first {
        kill(*p, nix::sys::signal::Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && !pids(ns).is_empty() {
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in pids(ns) {
        kill(p, nix::sys::signal::Signal::SIGKILL);
    }
}

/// Refuse to run beside a live lab; remove what a crashed run left behind.
pub fn clean_leftovers() -> Result<()> {
    let me = std::process::id();
    if let Some(pid) = read_pid(&pid_file())
        && u32::try_from(pid).is_ok_and(|p| p != me)
        && process_name(pid).is_some_and(|n| n.starts_with("netaware-lab"))
    {
        return Err(Error::Preflight(format!(
            "another netaware-lab is running (pid {pid}); stop it with Ctrl-C or `kill {pid}` \
             and run again"
        )));
    }
    let mut removed = Vec::new();
    // /proc/PID/comm holds at most 15 characters of the command name.
    for (file, comm) in [
        (aggregator_pid_file(), "netaware-aggreg"),
        (apiserver_pid_file(), "netaware-apiser"),
    ] {
        if let Some(pid) = read_pid(&file)
            && process_name(pid).is_some_and(|n| n.starts_with(comm))
        {
            kill(pid, nix::sys::signal::Signal::SIGKILL);
            removed.push(format!("{comm} process {pid}"));
        }
    }
    let noted = std::fs::read_to_string(kubernetes_pid_file()).unwrap_or_default();
    for (name, pid) in noted.lines().filter_map(|l| l.split_once(' ')) {
        let Ok(pid) = pid.parse() else { continue };
        // The pid may belong to something else by now: only a process of
        // that name (comm is cut to 15 characters) is killed.
        if process_name(pid).is_some_and(|comm| !comm.is_empty() && name.starts_with(&comm)) {
            kill(pid, nix::sys::signal::Signal::SIGKILL);
            removed.push(format!("{name} process {pid}"));
        }
    }
    let _ = std::fs::remove_file(kubernetes_pid_file());
    for ns in lab_namespaces() {
        kill_namespace_processes(&ns);
        run("ip", &["netns", "del", &ns])?;
        removed.push(format!("namespace {ns}"));
    }
    for link in lab_links() {
        // A veth may vanish with its peer's namespace just before we get to it.
        if run("ip", &["link", "del", &link]).is_ok() {
            removed.push(format!("link {link}"));
        }
    }
    if !removed.is_empty() {
        warn!(removed = %removed.join(", "), "removed leftovers of an earlier lab run");
    }
    Ok(())
}

/// The lab's network; dropping it removes everything it created.
#[derive(Default)]
pub struct Network {
    namespaces: Vec<String>,
    bridge: bool,
    tuns: Vec<Arc<SyncDevice>>,
    children: Vec<(String, Child)>,
    state_written: bool,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("namespaces", &self.namespaces)
            .field("bridge", &self.bridge)
            .field("tuns", &self.tuns.len())
            .field("children", &self.children.len())
            .finish()
    }
}

impl Network {
    /// Create namespaces, devices, addresses and bandwidth caps for `topo`.
    /// On error, whatever was created is removed when the value is dropped.
    pub fn build(topo: &Topology) -> Result<Self> {
        let mut net = Network::default();
        std::fs::create_dir_all(STATE_DIR)?;
        std::fs::write(pid_file(), std::process::id().to_string())?;
        net.state_written = true;

        run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
        net.bridge = true;
        run(
            "ip",
            &["addr", "add", &format!("{BRIDGE_IP}/24"), "dev", BRIDGE],
        )?;
        run("ip", &["link", "set", BRIDGE, "up"])?;

        for (i, node) in topo.nodes.iter().enumerate() {
            let ns = ns_name(&node.name);
            run("ip", &["netns", "add", &ns])?;
            net.namespaces.push(ns.clone());
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;

            // The TUN device is created here and moved: its open fd keeps
            // working from the root namespace, where the emulator runs.
            let tun_name = format!("{TUN_PREFIX}{i}");
            let dev = DeviceBuilder::new()
                .name(&tun_name)
                .packet_information(false)
                // Segmentation offload, as a NIC offers it: the emulator
                // forwards 64 KiB frames of bulk TCP (emulator/frame.rs).
                .offload(true)
                .build_sync()
                .map_err(|e| Error::Command {
                    command: format!("create TUN device {tun_name}"),
                    message: e.to_string(),
                })?;
            net.tuns.push(Arc::new(dev));
            run("ip", &["link", "set", &tun_name, "netns", &ns])?;
            let data = format!("{}/24", data_ip(i));
            run("ip", &["-n", &ns, "addr", "add", &data, "dev", &tun_name])?;
            run(
                "ip",
                &[
                    "-n",
                    &ns,
                    "link",
                    "set",
                    &tun_name,
                    "mtu",
                    &topo.mtu.to_string(),
                    "up",
                ],
            )?;

            let veth = format!("{VETH_PREFIX}{i}");
            run(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "ctl0", "netns", &ns,
                ],
            )?;
            run("ip", &["link", "set", &veth, "master", BRIDGE, "up"])?;
            let ctl = format!("{}/24", ctl_ip(i));
            run("ip", &["-n", &ns, "addr", "add", &ctl, "dev", "ctl0"])?;
            run("ip", &["-n", &ns, "link", "set", "ctl0", "up"])?;

            net.shape(topo, i, &ns, &tun_name)?;
        }
        info!(nodes = topo.nodes.len(), "lab network built");
        Ok(net)
    }

    /// Bandwidth caps with htb: one class per capped destination, selected
    /// by a u32 filter on the destination address. Unclassified traffic
    /// (and uncapped links) goes to a class with no practical limit.
    fn shape(&self, topo: &Topology, i: usize, ns: &str, dev: &str) -> Result<()> {
        let mut lines = format!(
            "qdisc add dev {dev} root handle 1: htb default 1\n\
             class add dev {dev} parent 1: classid 1:1 htb rate 100gbit\n"
        );
        let mut any = false;
        for j in 0..topo.nodes.len() {
            if j == i {
                continue;
            }
            if let Some(bw) = topo.link(i, j).bandwidth_mbps {
                any = true;
                let class = format!("1:{:x}", 16 + j);
                let kbit = (bw * 1000.0).round().max(1.0);
                lines.push_str(&format!(
                    "class add dev {dev} parent 1: classid {class} htb rate {kbit}kbit ceil {kbit}kbit\n\
                     filter add dev {dev} parent 1: protocol ip prio 1 u32 match ip dst {}/32 flowid {class}\n",
                    data_ip(j)
                ));
            }
        }
        if any {
            tc_batch(ns, &lines)?;
        }
        Ok(())
    }

    /// Change the rate cap of the capped link `src -> dst` (live events).
    pub fn set_bandwidth(&self, topo: &Topology, src: usize, dst: usize, mbps: f64) -> Result<()> {
        let ns = ns_name(&topo.nodes[src].name);
        let dev = format!("{TUN_PREFIX}{src}");
        let class = format!("1:{:x}", 16 + dst);
        let rate = format!("{}kbit", (mbps * 1000.0).round().max(1.0));
        run(
            "tc",
            &[
                "-n", &ns, "class", "change", "dev", &dev, "parent", "1:", "classid", &class,
                "htb", "rate", &rate, "ceil", &rate,
            ],
        )?;
        Ok(())
    }

    /// The TUN devices, by node index, for the emulator.
    pub fn tun_devices(&self) -> Vec<Arc<SyncDevice>> {
        self.tuns.clone()
    }

    /// Keep a child process to stop at teardown.
    pub fn adopt(&mut self, name: &str, child: Child) {
        let pid_file = match name {
            AGGREGATOR => Some(aggregator_pid_file()),
            APISERVER => Some(apiserver_pid_file()),
            _ => None,
        };
        if let Some(f) = pid_file {
            let _ = std::fs::write(f, child.id().to_string());
        }
        self.children.push((name.to_string(), child));
    }

    /// (name, pid) of every child except the aggregator: the agents.
    pub fn agent_pids(&self) -> Vec<(String, u32)> {
        self.children
            .iter()
            .filter(|(name, _)| name != AGGREGATOR && name != APISERVER)
            .map(|(name, c)| (name.clone(), c.id()))
            .collect()
    }

    /// Children that exited on their own, with their status.
    pub fn exited_children(&mut self) -> Vec<String> {
        self.children
            .iter_mut()
            .filter_map(|(name, c)| match c.try_wait() {
                Ok(Some(status)) => Some(format!("{name} ({status})")),
                _ => None,
            })
            .collect()
    }

    /// Remove everything; safe to call more than once.
    pub fn teardown(&mut self) {
        for (_, child) in &mut self.children {
            if let Ok(pid) = i32::try_from(child.id()) {
                kill(pid, nix::sys::signal::Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for (name, child) in &mut self.children {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        warn!(%name, "did not stop in time; killing");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        self.children.clear();
        // Delete the veth pairs ourselves: deleting a namespace removes its
        // end asynchronously (later still when it held busy TCP sockets, as
        // after bandwidth tests), which would leave `nwv*` behind a while.
        for veth in lab_links()
            .into_iter()
            .filter(|n| n.starts_with(VETH_PREFIX))
        {
            if let Err(e) = run("ip", &["link", "del", &veth]) {
                warn!(error = %e, "teardown: cannot remove a veth");
            }
        }
        let existing: BTreeSet<String> = lab_namespaces().into_iter().collect();
        for ns in self.namespaces.drain(..) {
            if existing.contains(&ns) {
                kill_namespace_processes(&ns);
                if let Err(e) = run("ip", &["netns", "del", &ns]) {
                    warn!(error = %e, "teardown: cannot remove namespace");
                }
            }
        }
        // Closing the fds removes the (non-persistent) TUN devices.
        self.tuns.clear();
        if self.bridge {
            if let Err(e) = run("ip", &["link", "del", BRIDGE]) {
                warn!(error = %e, "teardown: cannot remove the bridge");
            }
            self.bridge = false;
        }
        if self.state_written {
            let _ = std::fs::remove_file(aggregator_pid_file());
            let _ = std::fs::remove_file(apiserver_pid_file());
            let _ = std::fs::remove_file(kubernetes_pid_file());
            let _ = std::fs::remove_file(pid_file());
            self.state_written = false;
        }
        debug!("lab network removed");
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.teardown();
    }
}
