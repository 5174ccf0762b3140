//! Prometheus metrics of the aggregator, served as text on `/metrics`.
//!
//! For now: the Node label writer's counters. (Probe and session metrics
//! join them with the deployment work.)

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tracing::{info, warn};

use crate::error::{Error, Result};

/// Counters of the Node label writer (cheap to clone: they share state).
#[derive(Debug, Clone, Default)]
pub struct WriterMetrics {
    /// Node patches sent and accepted.
    pub writes: Counter,
    /// Node reads or patches that failed.
    pub errors: Counter,
    /// Writes skipped because the node already carries the desired keys.
    pub skipped: Counter,
}

/// Everything `/metrics` shows.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub writer: WriterMetrics,
}

impl Metrics {
    pub fn new() -> Self {
        let writer = WriterMetrics::default();
        let mut registry = Registry::default();
        // Counter names get `_total` appended in the exposition.
        registry.register(
            "netaware_node_writes",
            "Node label patches accepted by the API server",
            writer.writes.clone(),
        );
        registry.register(
            "netaware_node_write_errors",
            "Node reads or label patches that failed",
            writer.errors.clone(),
        );
        registry.register(
            "netaware_node_writes_skipped",
            "Node label writes skipped because nothing changed",
            writer.skipped.clone(),
        );
        Self { registry, writer }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Bind the metrics endpoint (at start-up, so a port conflict is an error).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })?;
    info!(addr = %listener.local_addr().unwrap_or(addr), "metrics on /metrics");
    Ok(listener)
}

/// Serve `GET /metrics` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move {
                    let response = if req.uri().path() == "/metrics" {
                        let mut r = Response::new(Full::new(Bytes::from(metrics.encode())));
                        r.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static(
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            ),
                        );
                        r
                    } else {
                        let mut r = Response::new(Full::new(Bytes::from_static(
                            b"not found; try /metrics\n",
                        )));
                        *r.status_mut() = StatusCode::NOT_FOUND;
                        r
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_appear_with_help_type_and_total() {
        let m = Metrics::new();
        m.writer.writes.inc_by(3);
        m.writer.skipped.inc();
        let text = m.encode();
        assert!(
            text.contains("# TYPE netaware_node_writes counter"),
            "{text}"
        );
        assert!(text.contains("netaware_node_writes_total 3"), "{text}");
        assert!(
            text.contains("netaware_node_writes_skipped_total 1"),
            "{text}"
        );
        assert!(
            text.contains("netaware_node_write_errors_total 0"),
            "{text}"
        );
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
    }
}
