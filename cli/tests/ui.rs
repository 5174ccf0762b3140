#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! `netaware ui` against a real aggregator query service on loopback: the
//! binary prints its URL, serves the page and the JSON answers the page
//! reads, and refuses what it must (another Host, an address off this
//! machine). What the page draws is tested in a browser (tests/e2e).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command as Process, Stdio};

mod common;
use common::run;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_netaware");
const NODES: [&str; 4] = ["east-1", "east-2", "west-1", "west-2"];

fn rtt_us(a: &str, b: &str) -> u64 {
    if a.split('-').next() == b.split('-').next() {
        300
    } else {
        8_000
    }
}

/// An aggregator whose four nodes measured each other: two regions.
async fn cluster() -> String {
    common::measured(&NODES, rtt_us).await
}

/// GET `path` from the view with this Host header: status and body.
fn get(port: u16, path: &str, host: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_view_serves_the_page_and_the_answers_it_reads() {
    let url = cluster().await;
    let mut child = Killed(
        Process::new(BIN)
            .args(["ui", "--listen", "127.0.0.1:0", "--aggregator", &url])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // "netaware ui: http://127.0.0.1:PORT/ (asking …; Ctrl-C to stop)"
    let at = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string();
    assert!(line.contains(&url), "says which aggregator it asks: {line}");
    let port: u16 = at.rsplit(':').next().unwrap().parse().unwrap();
    let fetch = move |path: &'static str, host: String| {
        tokio::task::spawn_blocking(move || get(port, path, &host))
    };
    let fetch_owned = move |path: String, host: String| {
        tokio::task::spawn_blocking(move || get(port, &path, &host))
    };

    let (status, page) = fetch("/", at.clone()).await.unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("<script src=\"/app.js\""), "{page}");

    let (status, body) = fetch("/api/view", at.clone()).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, NODES);
    let links = v["matrix"]["links"].as_array().unwrap();
    assert_eq!(links.len(), 12, "every ordered pair");
    let across = links
        .iter()
        .find(|l| l["src"] == "east-1" && l["dst"] == "west-2")
        .unwrap();
    assert_eq!(across["smoothed"]["rtt_p50_us"].as_f64().unwrap(), 8_000.0);
    let l1: Vec<&Value> = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["level"] == 1)
        .collect();
    assert_eq!(l1.len(), 2, "east and west: {l1:?}");
    assert_eq!(v["kind"], "nodes", "four nodes are drawn pair by pair");
    // l1 × l1 cells: the median and largest RTT of each group pair.
    let group_of = |n: &str| {
        l1.iter()
            .find(|g| g["members"].as_array().unwrap().iter().any(|m| m == n))
            .map(|g| g["id"].as_str().unwrap().to_string())
            .unwrap()
    };
    let (east, west) = (group_of("east-1"), group_of("west-1"));
    let cells = v["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 4, "{cells:?}");
    let cell = cells
        .iter()
        .find(|c| c["src"] == east.as_str() && c["dst"] == west.as_str())
        .unwrap();
    assert_eq!(cell["pairs"], 4);
    assert_eq!(cell["measured"], 4);
    assert_eq!(cell["rtt_p50_us"]["median"], 8_000.0);

    // A zoom into two groups: the links among their members.
    let (status, body) = fetch_owned(format!("/api/pairs?a={east}&b={west}"), at.clone())
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let z: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(z["links"].as_array().unwrap().len(), 12);
    let (status, body) = fetch("/api/pairs?a=nowhere&b=west", at.clone())
        .await
        .unwrap();
    assert_eq!(status, 404, "{body}");
    let e: Value = serde_json::from_str(&body).unwrap();
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .starts_with("no l1 group \"nowhere\""),
        "{body}"
    );

    // A node's figures, asked when the page shows them.
    let (status, body) = fetch("/api/node?name=west-2", at.clone()).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let n: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(n["name"], "west-2");
    assert_eq!(n["group_l1"], west.as_str());
    assert_eq!(n["rtt_p50_us"], 300.0, "the median to its group's peers");
    // Its labels as the publisher writes them: keys with the prefix,
    // figures as integer strings.
    assert_eq!(n["labels"]["netaware.io/group-l1"], west.as_str(), "{n}");
    assert_eq!(n["labels"]["netaware.io/rtt-p50-us"], "300", "{n}");
    assert_eq!(n["labels"]["netaware.io/fresh"], "true", "{n}");

    let (status, body) = fetch("/api/place?k=2", at.clone()).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let p: Value = serde_json::from_str(&body).unwrap();
    let chosen: Vec<&str> = p["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(chosen.len(), 2);
    assert_eq!(
        chosen[0].split('-').next(),
        chosen[1].split('-').next(),
        "one region: {chosen:?}"
    );

    // A pair live: its current links both ways first, as events.
    let events = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        write!(
            s,
            "GET /api/watch?a=east-1&b=west-2 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        while text.matches("event: link").count() < 2 {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "the stream ended: {text}");
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        text
    })
    .await
    .unwrap();
    assert!(events.contains("text/event-stream"), "{events}");
    assert!(events.contains("retry: 3000"), "{events}");
    assert!(events.contains(r#""src":"east-1""#), "{events}");
    assert!(events.contains(r#""src":"west-2""#), "{events}");
    assert!(
        !events.contains(r#""dst":"east-2""#),
        "only the pair: {events}"
    );

    // The aggregator's refusal of a question is the user's to fix: 400.
    let (status, body) = fetch("/api/place?k=9", at.clone()).await.unwrap();
    assert_eq!(status, 400, "{body}");
    let (status, body) = fetch("/api/view", format!("rebound.example:{port}"))
        .await
        .unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("not this view's address"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_address_off_this_machine_is_refused() {
    let out = run(&[
        "ui",
        "--listen",
        "0.0.0.0:0",
        "--aggregator",
        "http://127.0.0.1:1",
    ])
    .await;
    assert_eq!(out.status.code(), Some(netaware_common::EXIT_USAGE));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a loopback address"), "{err}");
}
