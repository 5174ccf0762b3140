#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! The `netaware-agent` binary: settings errors, and probing on without ICMP.

use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_netaware-agent");

#[test]
fn a_bad_node_ip_from_the_environment_exits_64_naming_it() {
    let out = Command::new(BIN)
        .env("NODE_NAME", "n1")
        .env("NODE_IP", "not-an-ip")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NODE_IP"), "{err}");
}

#[test]
fn a_missing_node_name_exits_64() {
    let out = Command::new(BIN)
        .env_remove("NODE_NAME")
        .env("NODE_IP", "10.0.0.1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NODE_NAME"));
}

/// As an unprivileged user with unprivileged ICMP off (this machine's
/// `ping_group_range` is `1 0`), the agent says clearly that ICMP is disabled
/// and keeps running with its STAMP reflector.
#[test]
#[ignore = "needs root to run the agent as nobody: ./test.sh runs it as root"]
fn without_icmp_permission_the_agent_logs_why_and_keeps_probing_udp() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root to run the agent as nobody: run ./test.sh as root"
    );
    assert!(
        Command::new("setpriv").arg("--version").output().is_ok(),
        "setpriv is missing: apt-get install util-linux (./test.sh does)"
    );
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap_or_default();
    if range.split_whitespace().collect::<Vec<_>>() != ["1", "0"] {
        eprintln!("SKIPPED: unprivileged ICMP is allowed here ({range})");
        return;
    }
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
        .args([
            "--node-name",
            "n1",
            "--node-ip",
            "127.0.0.1",
            "--stamp-bind",
            "127.0.0.1",
        ])
        .args([
            "--stamp-port",
            &port.to_string(),
            "--aggregator",
            "http://127.0.0.1:1",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let still_running = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(still_running, "the agent exited early:\n{err}");
    assert!(err.contains("ICMP probing disabled"), "{err}");
    assert!(err.contains("STAMP reflector listening"), "{err}");
}
