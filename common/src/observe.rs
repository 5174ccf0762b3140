//! The small HTTP endpoint every binary serves for Kubernetes and
//! Prometheus: `/metrics` (Prometheus text exposition), `/healthz`
//! (liveness: the process serves requests and its main loop still runs)
//! and `/readyz` (readiness: the binary says it can do its job, e.g. the
//! agent has a plan).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tracing::warn;

/// Content type of OpenMetrics text, what `prometheus-client` writes; sent
/// to scrapers that ask for it (Prometheus does).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the classic Prometheus text format, sent to everyone
/// else (curl, `promtool check metrics`, older scrapers).
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// OpenMetrics text as classic Prometheus text (format 0.0.4): a counter's
/// HELP and TYPE name its `_total` series, and there is no `# EOF` or
/// `# UNIT`. Everything else is the same in both formats.
pub fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::BTreeSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{prefix}{name}_total {tail}"));
                } else {
                    out.push_str(line);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// When a loop last went round. A loop that stops going round (wedged in
/// a computation, dead-locked) makes `/healthz` fail, so the kubelet
/// restarts the process instead of leaving it up and useless.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    name: &'static str,
    last: Arc<std::sync::Mutex<Instant>>,
    max_silence: Duration,
}

impl Heartbeat {
    /// A heartbeat of the loop `name`, unhealthy after `max_silence`
    /// without a beat; it counts as beating at `now`.
    pub fn new(name: &'static str, max_silence: Duration, now: Instant) -> Self {
        Self {
            name,
            last: Arc::new(std::sync::Mutex::new(now)),
            max_silence,
        }
    }

    /// The loop went round at `now`.
    pub fn beat(&self, now: Instant) {
        if let Ok(mut l) = self.last.lock() {
            *l = now;
        }
    }

    /// Why the loop counts as wedged at `now`, or `None` while it beats.
    pub fn wedged(&self, now: Instant) -> Option<String> {
        let last = *self.last.lock().ok()?;
        let silent = now.saturating_duration_since(last);
        (silent > self.max_silence).then(|| {
            format!(
                "the {} has not gone round for {:.1} s (limit {} s)",
                self.name,
                silent.as_secs_f64(),
                self.max_silence.as_secs()
            )
        })
    }
}

/// Whether the binary is ready, with the reason shown on `/readyz`, and
/// the heartbeat `/healthz` checks.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    ready: Arc<AtomicBool>,
    why_not: Arc<std::sync::Mutex<String>>,
    heartbeat: Option<Heartbeat>,
}

impl Readiness {
    /// Not ready, for `why`.
    pub fn new(why: &str) -> Self {
        let r = Self::default();
        r.set_not_ready(why);
        r
    }

    /// `/healthz` also fails while `heartbeat` is silent.
    pub fn with_heartbeat(mut self, heartbeat: Heartbeat) -> Self {
        self.heartbeat = Some(heartbeat);
        self
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn set_not_ready(&self, why: &str) {
        if let Ok(mut w) = self.why_not.lock() {
            *w = why.to_string();
        }
        self.ready.store(false, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn reason(&self) -> String {
        self.why_not.lock().map(|w| w.clone()).unwrap_or_default()
    }
}

/// Encode a registry as Prometheus text.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        warn!(error = %e, "cannot encode metrics");
    }
    out
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}

/// The response to one request at `now`; `accept` is the request's Accept
/// header.
pub fn respond(
    path: &str,
    accept: &str,
    registry: &Registry,
    ready: &Readiness,
    now: Instant,
) -> Response<Full<Bytes>> {
    match path {
        "/metrics" => {
            let (body, ctype) = if accept.contains("application/openmetrics-text") {
                (encode(registry), OPENMETRICS_CONTENT_TYPE)
            } else {
                (prometheus_text(&encode(registry)), PROMETHEUS_CONTENT_TYPE)
            };
            let mut r = text(StatusCode::OK, body);
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(ctype),
            );
            r
        }
        "/healthz" => match ready.heartbeat.as_ref().and_then(|h| h.wedged(now)) {
            None => text(StatusCode::OK, "ok\n".into()),
            Some(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("unhealthy: {why}\n"),
            ),
        },
        "/readyz" if ready.is_ready() => text(StatusCode::OK, "ready\n".into()),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", ready.reason()),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

/// Pause after a failed accept before the next one.
pub const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);
/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Connections served at once: a scraper or two and the kubelet's probes
/// need a handful ([`serve_http`] closes any past it).
pub const MAX_CONNECTIONS: usize = 64;

/// Serve the three paths on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, registry: Arc<Registry>, ready: Readiness) {
    serve_http(listener, MAX_CONNECTIONS, move |req| {
        let accept = req
            .headers()
            .get(hyper::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let r = respond(req.uri().path(), accept, &registry, &ready, Instant::now());
        std::future::ready(r)
    })
    .await;
}

/// Accept HTTP/1 connections on `listener` until the task is dropped and
/// answer every request with `answer`: at most `max_connections` at once
/// (past that a new connection is closed at once, so idle clients cannot
/// hold file descriptors and tasks without bound), and a client that
/// never finishes its request headers is dropped. A body may stream (the
/// view's live pair): its connection holds a slot until it ends.
pub async fn serve_http<F, Fut, B>(
    listener: tokio::net::TcpListener,
    max_connections: usize,
    answer: F,
) where
    F: Fn(Request<hyper::body::Incoming>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors and the like: retrying at once would
            // spin a core until the condition clears.
            tokio::time::sleep(ACCEPT_BACKOFF).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Dropping the stream closes it.
            continue;
        };
        let answer = answer.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req| {
                let r = answer(req);
                async move { Ok::<_, Infallible>(r.await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A metrics server on a loopback port: its address and its task.
    async fn start_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(
            listener,
            Arc::new(Registry::default()),
            Readiness::new("test"),
        ));
        (addr, server)
    }

    /// The review's S16: a client that sends half a request held its
    /// connection for ever (hyper had no timer).
    #[tokio::test]
    async fn a_client_that_never_finishes_its_headers_is_dropped() {
        let (addr, server) = start_server().await;
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(
            HEADER_READ_TIMEOUT + std::time::Duration::from_secs(5),
            c.read_to_end(&mut buf),
        )
        .await;
        server.abort();
        assert!(
            read.is_ok(),
            "the connection was still open after the header timeout"
        );
        assert!(started.elapsed() >= HEADER_READ_TIMEOUT - std::time::Duration::from_secs(1));
    }

    #[test]
    fn the_three_paths_answer_as_probes_expect() {
        let mut reg = Registry::default();
        let c: Counter = Counter::default();
        reg.register("netaware_things", "Things", c.clone());
        c.inc();
        let ready = Readiness::new("no plan from the aggregator yet");
        let now = Instant::now();
        let m = respond("/metrics", "", &reg, &ready, now);
        assert_eq!(m.status(), StatusCode::OK);
        assert_eq!(
            m.headers()[hyper::header::CONTENT_TYPE],
            PROMETHEUS_CONTENT_TYPE
        );
        let om = respond(
            "/metrics",
            "application/openmetrics-text",
            &reg,
            &ready,
            now,
        );
        assert_eq!(
            om.headers()[hyper::header::CONTENT_TYPE],
            OPENMETRICS_CONTENT_TYPE
        );
        assert!(encode(&reg).contains("netaware_things_total 1"));
        let r = |p: &str| respond(p, "", &reg, &ready, now).status();
        assert_eq!(r("/healthz"), StatusCode::OK);
        assert_eq!(r("/readyz"), StatusCode::SERVICE_UNAVAILABLE);
        ready.set_ready();
        assert_eq!(r("/readyz"), StatusCode::OK);
        ready.set_not_ready("aggregator session lost");
        assert!(!ready.is_ready());
        assert_eq!(ready.reason(), "aggregator session lost");
        assert_eq!(r("/x"), StatusCode::NOT_FOUND);
    }

    /// The review's S16: the `/metrics` port accepted every connection.
    /// Past `MAX_CONNECTIONS` held ones, a new connection is closed at
    /// once; one freed makes room again.
    #[tokio::test]
    async fn connections_past_the_cap_are_closed_at_once() {
        let (addr, server) = start_server().await;
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let closed = |mut c: tokio::net::TcpStream| async move {
            let mut buf = [0u8; 1];
            let read =
                tokio::time::timeout(std::time::Duration::from_secs(2), c.read(&mut buf)).await;
            matches!(read, Ok(Ok(0)) | Ok(Err(_)))
        };
        let extra = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(closed(extra).await, "the connection past the cap was kept");
        held.pop();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let mut room = tokio::net::TcpStream::connect(addr).await.unwrap();
        room.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        room.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        server.abort();
    }

    /// The review's E3f: a wedged state owner left `/healthz` at 200.
    #[test]
    fn healthz_fails_while_the_heartbeat_is_silent() {
        let reg = Registry::default();
        let t0 = Instant::now();
        let hb = Heartbeat::new("state owner", Duration::from_secs(15), t0);
        let ready = Readiness::new("x").with_heartbeat(hb.clone());
        let at = |s: u64| respond("/healthz", "", &reg, &ready, t0 + Duration::from_secs(s));
        assert_eq!(at(15).status(), StatusCode::OK);
        let wedged = at(16);
        assert_eq!(wedged.status(), StatusCode::SERVICE_UNAVAILABLE);
        hb.beat(t0 + Duration::from_secs(16));
        assert_eq!(at(20).status(), StatusCode::OK);
        assert_eq!(
            hb.wedged(t0 + Duration::from_secs(40)).unwrap(),
            "the state owner has not gone round for 24.0 s (limit 15 s)"
        );
    }

    #[test]
    fn openmetrics_counters_become_classic_total_families() {
        let om = "# HELP netaware_things Things.\n# TYPE netaware_things counter\n\
                  netaware_things_total 1\n# HELP netaware_up Up.\n# TYPE netaware_up gauge\n\
                  netaware_up 1\n# EOF\n";
        assert_eq!(
            prometheus_text(om),
            "# HELP netaware_things_total Things.\n# TYPE netaware_things_total counter\n\
             netaware_things_total 1\n# HELP netaware_up Up.\n# TYPE netaware_up gauge\n\
             netaware_up 1\n"
        );
    }
}
