#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! TLS on the aggregator's gRPC ports (the review's S15), with the real
//! binaries: the agent and the CLI check the certificate against the CA
//! they are given, plain text and strangers' CAs get nowhere, and a
//! certificate replaced on disk is served to new connections without a
//! restart while open sessions carry on.

mod fake;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fake::{Aggregator, spawn_tls};
use netaware_e2e::{Killed, Scratch, binary, free_port};
use netaware_lab::cluster::serving_certificate;
use netaware_proto::v1::GetMatrixRequest;

/// Whether a query over TLS checked against `ca` succeeds.
async fn query_with(agg: &Aggregator, ca: &std::path::Path) -> Result<(), String> {
    let endpoint = netaware_proto::client::endpoint(&agg.url(agg.query), Some(ca))?;
    let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
    netaware_proto::v1::query_service_client::QueryServiceClient::new(channel)
        .get_matrix(GetMatrixRequest::default())
        .await
        .map(|_| ())
        .map_err(|s| format!("{s:?}"))
}

fn agent(agg: &Aggregator, ca: &std::path::Path) -> Killed {
    let ip = "127.0.2.1";
    Killed(
        Command::new(binary("netaware-agent"))
            .args(["--node-name", "t1", "--node-ip", ip])
            .args(["--stamp-port", &free_port().to_string()])
            .args(["--bandwidth-port", "0", "--icmp", "false"])
            .args(["--metrics-listen", &format!("{ip}:{}", free_port())])
            .args(["--aggregator", &agg.url(agg.agent)])
            .args(["--ca-file", ca.to_str().unwrap()])
            .args(["--backoff-max", "1s"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_and_the_cli_trust_only_the_given_ca_and_a_renewed_certificate_is_served() {
    let scratch = Scratch::new("tls-rotate");
    let dir = scratch.path();
    let (pki, _) = serving_certificate(&dir.join("one"), &["127.0.0.1"]).unwrap();
    let agg = spawn_tls(&pki.cert, &pki.key, &pki.ca);

    // The real agent, over TLS.
    let _agent = agent(&agg, &pki.ca);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = agg.matrix().await;
        if m.nodes.iter().any(|n| n.node_name == "t1" && n.connected) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent never connected over TLS"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The CLI: with the CA it reads; without, it says what is missing.
    let cli = |args: &[&str]| {
        Command::new(binary("netaware"))
            .args(["--aggregator", &agg.url(agg.query)])
            .args(args)
            .arg("matrix")
            .output()
            .unwrap()
    };
    let ok = cli(&["--ca-file", pki.ca.to_str().unwrap()]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let missing = cli(&[]);
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("--ca-file"), "{err}");

    // Plain text to the TLS port gets no answer.
    let plain = fake::query_client_plain(agg.query).await;
    assert!(plain.is_err(), "a plain-text query was answered");

    // A certificate of another CA in place of the served one: after the
    // reload, only clients of the new CA get through, and the agent's open
    // session carries on.
    let (other, _) = serving_certificate(&dir.join("two"), &["127.0.0.1"]).unwrap();
    assert!(
        query_with(&agg, &other.ca).await.is_err(),
        "a stranger's CA"
    );
    std::fs::copy(&other.key, &pki.key).unwrap();
    std::fs::copy(&other.cert, &pki.cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(25);
    while query_with(&agg, &other.ca).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was not served within 25 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let old = query_with(&agg, &pki.ca).await.unwrap_err();
    assert!(
        old.to_lowercase().contains("certificate") || old.contains("invalid peer"),
        "{old}"
    );
    let m = agg.matrix_with_ca(&other.ca).await;
    assert!(
        m.nodes.iter().any(|n| n.node_name == "t1" && n.connected),
        "the open session survived the renewal: {m:?}"
    );
}

/// Settings that would put a token on the wire in clear text, or TLS
/// without what it needs, stop the binaries at start, naming the variable.
#[test]
fn tokens_never_travel_in_clear_text() {
    let run = |bin: &str, args: &[&str]| {
        let out = Command::new(binary(bin))
            .args(args)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bin} {args:?} started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let agent = |extra: &[&str]| {
        let mut a = vec!["--node-name", "n", "--node-ip", "127.0.0.1"];
        a.extend_from_slice(extra);
        run("netaware-agent", &a)
    };
    let e = agent(&["--aggregator", "http://a:7400", "--token-file", "/t"]);
    assert!(
        e.contains("NETAWARE_AGGREGATOR") && e.contains("https://"),
        "{e}"
    );
    let e = agent(&["--aggregator", "https://a:7400"]);
    assert!(e.contains("NETAWARE_CA_FILE"), "{e}");

    let e = run(
        "netaware-aggregator",
        &[
            "--kubernetes",
            "off",
            "--agent-auth",
            "none",
            "--query-auth",
            "none",
        ],
    );
    assert!(
        e.contains("NETAWARE_TLS_CERT") && e.contains("--tls false"),
        "{e}"
    );
    // Token authentication (the default) over plain text: refused.
    let scratch = Scratch::new("tls-clear");
    let dir = scratch.path();
    let kubeconfig = dir.join("kubeconfig");
    netaware_e2e::unreachable_kubeconfig(&kubeconfig);
    let e = run(
        "netaware-aggregator",
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--agent-service-account",
            "netaware/netaware-agent",
            "--tls",
            "false",
        ],
    );
    assert!(
        e.contains("NETAWARE_TLS") && e.contains("clear text"),
        "{e}"
    );
}

/// The certificate the chart generates at install works with our
/// binaries: the CLI through a port-forward (`https://localhost`, here the
/// aggregator on 127.0.0.1) trusts it with the Secret's `ca.crt`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_generated_certificate_is_served_and_trusted() {
    use k8s_openapi::api::core::v1::Secret;
    let Some(rendered) = netaware_e2e::render_chart("tls") else {
        return;
    };
    let text = std::fs::read_to_string(rendered.join("default.jsonl")).unwrap();
    let secret: Secret = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|d| d["object"]["kind"] == "Secret")
        .map(|d| serde_json::from_value(d["object"].clone()).unwrap())
        .expect("the chart renders its TLS Secret");
    let data = secret.data.unwrap();
    let scratch = Scratch::new("tls-chart");
    let dir = scratch.path();
    for key in ["ca.crt", "tls.crt", "tls.key"] {
        std::fs::write(dir.join(key), &data[key].0).unwrap();
    }
    let agg = spawn_tls(
        &dir.join("tls.crt"),
        &dir.join("tls.key"),
        &dir.join("ca.crt"),
    );
    let out = Command::new(binary("netaware"))
        .args(["--aggregator", &format!("https://localhost:{}", agg.query)])
        .args(["--ca-file", dir.join("ca.crt").to_str().unwrap()])
        .args(["matrix", "-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(query_with(&agg, &dir.join("ca.crt")).await.is_ok());
    let _ = std::fs::remove_dir_all(&rendered);
}
