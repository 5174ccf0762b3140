//! Just enough of W3C WebDriver to drive a headless Chromium through
//! chromedriver: open a page, run a script, find, click and type, take a
//! screenshot.
//!
//! Why not fantoccini: it brings the `webdriver` crate with http 0.2,
//! cookie 0.16, icu 1.5 and thiserror 1, a dozen second copies the
//! dependency policy (deny.toml) refuses, for the nine HTTP calls below.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::{Killed, free_port};

/// The key W3C WebDriver gives an element's id under.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A browser session, and the chromedriver serving it (killed on drop).
#[derive(Debug)]
pub struct Browser {
    port: u16,
    session: String,
    _driver: Killed,
}

/// An element of the page, by its WebDriver id.
#[derive(Debug)]
pub struct Element(String);

impl Browser {
    /// Start `driver` (chromedriver) on a free loopback port and open a
    /// headless `chromium` with a fresh profile under `profile`, with the
    /// flags a machine without the open internet needs (no background
    /// connections, nothing fetched at start).
    pub async fn start(chromium: &Path, driver: &Path, profile: &Path) -> Self {
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver.display()));
        let driver = Killed(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "chromedriver never listened");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1100,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let answer = call(port, Method::POST, "/session", Some(caps)).await;
        let session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session in {answer}"))
            .to_string();
        Self {
            port,
            session,
            _driver: driver,
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        call(self.port, method, &path, body).await
    }

    pub async fn goto(&self, url: &str) {
        self.call(Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// Run `js` (a function body; `return` gives the answer) in the page.
    pub async fn execute(&self, js: &str) -> Value {
        self.call(
            Method::POST,
            "/execute/sync",
            Some(json!({"script": js, "args": []})),
        )
        .await
    }

    /// The first element `css` selects; fails the test when none does.
    pub async fn find(&self, css: &str) -> Element {
        let v = self
            .call(
                Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        Element(
            v[ELEMENT]
                .as_str()
                .unwrap_or_else(|| panic!("{css}: {v}"))
                .into(),
        )
    }

    pub async fn click(&self, e: &Element) {
        let path = format!("/element/{}/click", e.0);
        self.call(Method::POST, &path, Some(json!({}))).await;
    }

    pub async fn clear(&self, e: &Element) {
        let path = format!("/element/{}/clear", e.0);
        self.call(Method::POST, &path, Some(json!({}))).await;
    }

    pub async fn type_text(&self, e: &Element, text: &str) {
        let path = format!("/element/{}/value", e.0);
        self.call(Method::POST, &path, Some(json!({"text": text})))
            .await;
    }

    /// The element's rendered text.
    pub async fn text(&self, e: &Element) -> String {
        let path = format!("/element/{}/text", e.0);
        let v = self.call(Method::GET, &path, None).await;
        v.as_str().unwrap_or_default().to_string()
    }

    /// The window as a PNG.
    pub async fn screenshot(&self) -> Vec<u8> {
        let v = self.call(Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("the screenshot is not base64: {e}"))
    }

    /// End the session (the browser quits).
    pub async fn close(self) {
        self.call(Method::DELETE, "", None).await;
    }
}

/// One WebDriver command: its `value`, or a failed test naming the error
/// chromedriver gave.
async fn call(port: u16, method: Method, path: &str, body: Option<Value>) -> Value {
    let what = format!("{method} {path}");
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("{what}: chromedriver: {e}"));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    tokio::spawn(conn);
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    // chromedriver refuses any Host but a local one.
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("127.0.0.1:{port}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let resp = sender
        .send_request(req)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{what}: {status} and not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    let value = v.get("value").cloned().unwrap_or(Value::Null);
    assert!(
        status.is_success(),
        "{what}: {status}: {} {}",
        value["error"],
        value["message"]
    );
    value
}
