//! `netaware ui`: the measured network for a browser, served on this
//! machine only.
//!
//! Like `kubectl proxy`, the CLI serves the answers itself, on loopback,
//! and asks the aggregator with the user's own address, CA and token: the
//! aggregator opens no new port, and the token never reaches the browser.
//! Every request is checked before anything is asked ([`route`]): GET
//! only, a Host header that names this loopback address (a page of
//! another site whose name resolves to 127.0.0.1 must not read the
//! network's layout: DNS rebinding), known paths, a bounded query.
//! The JSON answers are the CLI's own `-o json` renderings, so the page
//! and scripts read one format.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use netaware_proto::ProbeMethod;
use netaware_proto::v1::{GetNodeRequest, PlaceRequest, WatchLinksRequest};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::matrix::link_json;
use crate::nodes::nodes_json;
use crate::place::place_json;
use crate::{Error, Target, connect};

mod view;
use view::{Answer, ViewCache};

/// Where the view is served unless `--listen` says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7480";
/// Longest query string accepted (a label selector and two numbers).
const MAX_QUERY_BYTES: usize = 2_048;
/// Longest node name or group id a query may give (a DNS subdomain).
const MAX_NAME_BYTES: usize = 253;
/// Most nodes a placement may ask for from the page.
const MAX_PLACE_K: u32 = 100_000;
/// Connections served at once: one person's browser opens a handful (and
/// one more for the pair it shows live).
const MAX_CONNECTIONS: usize = 32;
/// A comment line on a quiet live stream this often, so a closed tab is
/// noticed (the write fails) and its watch on the aggregator ends.
const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(15);
/// Events of a live stream waiting for a slow browser; past it the
/// aggregator's watch is not read, and the aggregator drops it.
const LIVE_QUEUE: usize = 64;
/// How long a browser waits before reconnecting a live stream that ended.
const RETRY_MS: u32 = 3_000;

/// What every answer is: a whole body, or the events of a live stream.
type Body = BoxBody<Bytes, std::convert::Infallible>;

/// The page, its script and its style, compiled in: no toolchain at build
/// time, nothing fetched from elsewhere at run time.
const PAGE: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");
/// The page may load only what this server serves, and nobody may frame it.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// What a checked request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The page itself, its script or its style.
    Asset(Asset),
    /// Nodes, groups, l1 × l1 cells and (on up to 150 nodes) every link
    /// (UDP probes) in one answer.
    View,
    /// The links between the members of two groups of one level (1 to
    /// 3): a zoom.
    Pairs { a: String, b: String, level: u32 },
    /// One node's labels, quality and the figures behind it.
    Node(String),
    /// Both directions of a pair, every method, as windows arrive
    /// (Server-Sent Events from `WatchLinks`).
    Watch { a: String, b: String },
    /// A placement of `k` nodes.
    Place(PlaceQuery),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asset {
    Page,
    Script,
    Style,
}

impl Asset {
    fn body_and_type(self) -> (&'static str, &'static str) {
        match self {
            Self::Page => (PAGE, "text/html; charset=utf-8"),
            Self::Script => (SCRIPT, "text/javascript; charset=utf-8"),
            Self::Style => (STYLE, "text/css; charset=utf-8"),
        }
    }
}

/// `/api/place`'s query: `k`, and optionally `selector` (kubectl -l
/// syntax) and `bytes` (all-reduce size for the prediction, e.g. `8MiB`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceQuery {
    pub k: u32,
    pub selector: Option<String>,
    pub bytes: Option<u64>,
}

/// A refused request: its status and what to tell the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub why: String,
}

fn refuse(status: StatusCode, why: impl Into<String>) -> Refusal {
    Refusal {
        status,
        why: why.into(),
    }
}

/// Check a request against the address the view is served on, and say
/// what it asks for.
pub fn route<B>(req: &Request<B>, served: SocketAddr) -> Result<Route, Refusal> {
    if req.method() != Method::GET {
        return Err(refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET: the view reads, it never changes anything",
        ));
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !host_is_ours(host, served) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            format!(
                "Host {host:?} is not this view's address: open http://{served}/ as `netaware ui` printed"
            ),
        ));
    }
    let query = req.uri().query().unwrap_or("");
    if query.len() > MAX_QUERY_BYTES {
        return Err(refuse(
            StatusCode::URI_TOO_LONG,
            format!("query longer than {MAX_QUERY_BYTES} bytes"),
        ));
    }
    match req.uri().path() {
        "/" => Ok(Route::Asset(Asset::Page)),
        "/app.js" => Ok(Route::Asset(Asset::Script)),
        "/app.css" => Ok(Route::Asset(Asset::Style)),
        "/api/view" => Ok(Route::View),
        "/api/pairs" => {
            let a = one_name(query, "a")?;
            let b = one_name(query, "b")?;
            let level = match name_param(query, "level")?.as_deref() {
                None | Some("1") => 1,
                Some("2") => 2,
                Some("3") => 3,
                Some(l) => {
                    return Err(refuse(
                        StatusCode::BAD_REQUEST,
                        format!("level={l:?}: 1, 2 or 3"),
                    ));
                }
            };
            Ok(Route::Pairs { a, b, level })
        }
        "/api/node" => one_name(query, "name").map(Route::Node),
        "/api/watch" => {
            let a = one_name(query, "a")?;
            let b = one_name(query, "b")?;
            Ok(Route::Watch { a, b })
        }
        "/api/place" => parse_place(query).map(Route::Place),
        other => Err(refuse(
            StatusCode::NOT_FOUND,
            format!(
                "no {other}: the view is at /, its answers at /api/view, /api/pairs?a=G&b=H, \
                 /api/node?name=N, /api/watch?a=N&b=M and /api/place?k=N"
            ),
        )),
    }
}

/// Whether `host` (a Host header) names the loopback address served on:
/// its own IP and port, or `localhost` with the port.
fn host_is_ours(host: &str, served: SocketAddr) -> bool {
    let port = served.port();
    let ip = match served.ip() {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    };
    // Browsers leave the default port out.
    let bare = port == 80 && (host == ip || host == "localhost");
    bare || host == served.to_string() || host == format!("localhost:{port}")
}

/// The value of `key` in `query`, which must be there.
fn one_name(query: &str, key: &str) -> Result<String, Refusal> {
    name_param(query, key)?
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, format!("{key} is missing")))
}

/// The value of `key` in `query`, if given: at most once, not empty, a
/// name's length, no control characters.
fn name_param(query: &str, key: &str) -> Result<Option<String>, Refusal> {
    let bad = |why: String| refuse(StatusCode::BAD_REQUEST, why);
    let mut found = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if k != key {
            continue;
        }
        if found.is_some() {
            return Err(bad(format!("{key} given twice: give it once")));
        }
        if v.is_empty() || v.len() > MAX_NAME_BYTES || v.chars().any(char::is_control) {
            return Err(bad(format!(
                "{key}={v:?}: a node name or group id of 1 to {MAX_NAME_BYTES} characters"
            )));
        }
        found = Some(v.into_owned());
    }
    Ok(found)
}

fn parse_place(query: &str) -> Result<PlaceQuery, Refusal> {
    let bad = |why: String| refuse(StatusCode::BAD_REQUEST, why);
    let (mut k, mut selector, mut bytes) = (None, None, None);
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "k" => {
                let n: u32 = value
                    .parse()
                    .map_err(|_| bad(format!("k={value:?}: give a whole number of nodes")))?;
                if !(1..=MAX_PLACE_K).contains(&n) {
                    return Err(bad(format!("k={n}: between 1 and {MAX_PLACE_K}")));
                }
                k = Some(n);
            }
            "selector" if !value.is_empty() => selector = Some(value.into_owned()),
            "selector" => {}
            "bytes" if !value.is_empty() => {
                let b = netaware_common::parse_bytes(&value)
                    .map_err(|e| bad(format!("bytes={value:?}: {e}")))?;
                bytes = Some(b);
            }
            "bytes" => {}
            other => {
                return Err(bad(format!(
                    "unknown parameter {other:?}: /api/place takes k, selector and bytes"
                )));
            }
        }
    }
    let k = k.ok_or_else(|| bad("k is missing: /api/place?k=4".into()))?;
    Ok(PlaceQuery { k, selector, bytes })
}

/// The request `Place` gets for a page's query (with the explanation, as
/// `netaware place --explain` asks).
fn place_request(q: &PlaceQuery) -> PlaceRequest {
    PlaceRequest {
        k: q.k,
        label_selector: q.selector.clone().unwrap_or_default(),
        allreduce_bytes: q.bytes.unwrap_or(0),
        explain: true,
        ..PlaceRequest::default()
    }
}

/// One node as `netaware nodes -o json` prints it.
async fn node(target: &Target, name: &str) -> Result<Value, Error> {
    let n = connect(target)
        .await?
        .get_node(GetNodeRequest {
            node_name: name.to_string(),
        })
        .await?
        .into_inner();
    Ok(nodes_json(&[n])[0].clone())
}

async fn place(target: &Target, q: &PlaceQuery) -> Result<Value, Error> {
    let p = connect(target)
        .await?
        .place(place_request(q))
        .await?
        .into_inner();
    Ok(place_json(&p, q.bytes))
}

/// The answer to a routed request: the page's parts, the kept view, or
/// what the aggregator said.
async fn answer(target: &Arc<Target>, view: &ViewCache, r: Route) -> Response<Body> {
    let (status, v) = match &r {
        Route::Asset(a) => return asset(*a),
        Route::Watch { a, b } => return live(target.clone(), a.clone(), b.clone()),
        Route::View => {
            let kept = view.get(Instant::now()).await;
            return json_response(kept.0, &kept.1);
        }
        Route::Pairs { a, b, level } => as_answer(view::pairs(target, a, b, *level).await),
        Route::Node(name) => as_answer(node(target, name).await),
        Route::Place(q) => as_answer(place(target, q).await),
    };
    json_response(status, &v)
}

/// JSON, or the aggregator's error as a 502 the page shows (and retries:
/// a restarting aggregator comes back).
fn as_answer(got: Result<Value, Error>) -> Answer {
    match got {
        Ok(v) => (StatusCode::OK, v),
        Err(Error::Status(s)) => match refused_question(s.code()) {
            // The aggregator answered, and refused the question: its
            // message says what to change.
            Some(status) => (status, json!({"error": s.message()})),
            None => (StatusCode::BAD_GATEWAY, json!({"error": s.to_string()})),
        },
        Err(e) => (StatusCode::BAD_GATEWAY, json!({"error": e.to_string()})),
    }
}

/// The HTTP status of a question the aggregator refused, `None` when it
/// could not answer at all (the page then says it is down and retries).
fn refused_question(code: tonic::Code) -> Option<StatusCode> {
    use tonic::Code;
    Some(match code {
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        _ => return None,
    })
}

/// The links between `a` and `b` as they change: an event `link` for each
/// (its JSON as `netaware matrix -o json` prints a link), the current ones
/// first; an event `failed` when the aggregator cannot be asked or ends
/// the watch, after which the stream ends and the browser reconnects.
fn live(target: Arc<Target>, a: String, b: String) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(LIVE_QUEUE);
    tokio::spawn(async move {
        let send = |text: String| tx.send(Ok(Frame::data(Bytes::from(text))));
        if send(format!("retry: {RETRY_MS}\n\n")).await.is_err() {
            return;
        }
        let why = match watch_pair(&target, &a, &b, &tx).await {
            Ok(()) => return, // the browser went away
            Err(e) => e,
        };
        let _ = send(format!(
            "event: failed\ndata: {}\n\n",
            json!({"error": why.to_string()})
        ))
        .await;
    });
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    response(StatusCode::OK, "text/event-stream", BodyExt::boxed(body))
}

/// Forward the pair's updates into `tx` until the browser goes away
/// (`Ok`) or the aggregator fails or ends the watch (`Err`).
async fn watch_pair(
    target: &Target,
    a: &str,
    b: &str,
    tx: &mpsc::Sender<Result<Frame<Bytes>, std::convert::Infallible>>,
) -> Result<(), Error> {
    let mut updates = connect(target)
        .await?
        .watch_links(WatchLinksRequest {
            method: ProbeMethod::Unspecified as i32,
            send_initial: true,
            nodes: vec![a.to_string(), b.to_string()],
        })
        .await?
        .into_inner();
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    loop {
        let text = tokio::select! {
            m = updates.message() => match m? {
                Some(u) => match u.link {
                    Some(l) if (l.src == a && l.dst == b) || (l.src == b && l.dst == a) => {
                        format!("event: link\ndata: {}\n\n", link_json(&l))
                    }
                    _ => continue,
                },
                None => {
                    return Err(Error::Status(tonic::Status::unavailable(
                        "the aggregator ended the watch",
                    )));
                }
            },
            _ = keepalive.tick() => ": keep-alive\n\n".to_string(),
            // The browser closed the stream: stop watching at once.
            () = tx.closed() => return Ok(()),
        };
        if tx.send(Ok(Frame::data(Bytes::from(text)))).await.is_err() {
            return Ok(());
        }
    }
}

/// Every answer: the network's layout is not for caches, nor for other
/// origins' scripts to sniff as something else.
fn response(status: StatusCode, ctype: &'static str, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn asset(a: Asset) -> Response<Body> {
    let (body, ctype) = a.body_and_type();
    let body = Full::new(Bytes::from_static(body.as_bytes())).boxed();
    let mut r = response(StatusCode::OK, ctype, body);
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    r
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let body = Full::new(Bytes::from(format!("{v:#}\n"))).boxed();
    response(status, "application/json", body)
}

/// Respond to one request.
async fn respond<B>(
    target: &Arc<Target>,
    view: &ViewCache,
    served: SocketAddr,
    req: &Request<B>,
) -> Response<Body> {
    match route(req, served) {
        Ok(r) => answer(target, view, r).await,
        Err(no) => json_response(no.status, &json!({"error": no.why})),
    }
}

/// Refuse an address off this machine: the view answers with the user's
/// credentials, so anyone who can reach it reads what they may read.
pub fn check_listen(addr: SocketAddr) -> Result<(), Error> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(Error::Listen(format!(
            "{addr} is not a loopback address: the view answers with your credentials, so it \
             is served on this machine only (give 127.0.0.1:PORT; to look from elsewhere, \
             forward the port over ssh)"
        )))
    }
}

/// Serve the view on `listener` until the task is dropped (as the
/// binaries serve their metrics: bounded connections, header timeout).
pub async fn serve(listener: tokio::net::TcpListener, target: Target) {
    let Ok(served) = listener.local_addr() else {
        return;
    };
    let target = Arc::new(target);
    let view = ViewCache::new(target.clone());
    // Ask at once: the page opens on an answer already there.
    view.refresh();
    netaware_common::observe::serve_http(listener, MAX_CONNECTIONS, move |req| {
        let (target, view) = (target.clone(), view.clone());
        async move { respond(&target, &view, served, &req).await }
    })
    .await;
}

#[cfg(test)]
mod tests;
