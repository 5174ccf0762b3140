#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! The `netaware-aggregator` binary: settings errors and serving.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_netaware-aggregator");

#[test]
fn a_bad_setting_exits_64_naming_the_variable() {
    let out = Command::new(BIN)
        .env("NETAWARE_SMOOTHING", "2")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NETAWARE_SMOOTHING"), "{err}");
}

#[test]
fn a_port_in_use_is_reported_with_the_address() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let out = Command::new(BIN)
        .args(["--agent-listen", &addr, "--query-listen", "127.0.0.1:0"])
        // No API server here to review agent tokens.
        .args([
            "--agent-auth",
            "none",
            "--query-auth",
            "none",
            "--tls",
            "false",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&addr) && err.contains("cannot listen"),
        "{err}"
    );
}

#[test]
fn it_serves_until_sigterm_and_exits_cleanly() {
    let query = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut child = Command::new(BIN)
        .args([
            "--agent-listen",
            "127.0.0.1:0",
            "--query-listen",
            &query.to_string(),
            "--agent-auth",
            "none",
            "--query-auth",
            "none",
            "--tls",
            "false",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(query).is_err() {
        assert!(Instant::now() < deadline, "query port never opened");
        std::thread::sleep(Duration::from_millis(50));
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}
