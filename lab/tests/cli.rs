#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! `netaware-lab` refuses bad input with a clear error before it creates
//! anything. (The full lab run is the end-to-end test under tests/.)

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_netaware-lab");

fn lab(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn namespaces() -> String {
    Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

#[test]
fn a_missing_topology_file_is_named() {
    let out = lab(&["run", "/nonexistent/topo.yaml", "--for", "1s"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/topo.yaml") && err.contains("cannot read"),
        "{err}"
    );
}

#[test]
fn an_invalid_topology_names_the_key_and_creates_nothing() {
    let dir = std::env::temp_dir().join(format!("nwa-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        "nodes: [{name: a, region: r}, {name: b, region: r}]\ndefaults: {delay_ms: 1, speed: 3}\n",
    )
    .unwrap();
    let before = namespaces();
    let out = lab(&["run", path.to_str().unwrap(), "--for", "1s"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown key 'speed'"), "{err}");
    assert_eq!(namespaces(), before, "nothing may be created");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_bad_duration_exits_64() {
    let out = lab(&["run", "x.yaml", "--for", "soon"]);
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn not_root_is_a_clear_error_before_anything_is_created() {
    // setpriv (util-linux) drops to nobody; skip where it is missing.
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("setpriv not installed; skipping");
        return;
    }
    let topo = concat!(env!("CARGO_MANIFEST_DIR"), "/topologies/two-region.yaml");
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "run",
            topo,
            "--for",
            "1s",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if !nix::unistd::geteuid().is_root() {
        // Not root ourselves: setpriv cannot switch users; the plain run must fail the same way.
        let out = lab(&["run", topo, "--for", "1s"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("must run as root"), "{err}");
        return;
    }
    assert!(!out.status.success());
    assert!(err.contains("must run as root"), "{err}");
}
