use super::*;
use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};
use std::collections::BTreeSet;

const NS: &str = "netaware";
const LEASE: &str = "netaware-aggregator";
const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/netaware/leases/netaware-aggregator";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn config(pod: &str, address: &str) -> ElectionConfig {
    ElectionConfig::new(
        LEASE.into(),
        NS.into(),
        Identity::new(pod, ip(address)),
        Duration::from_secs(15),
        Duration::from_secs(5),
        ("D", "G"),
    )
    .unwrap()
}

/// One request as the API server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: http::Method,
    path: String,
    query: BTreeSet<String>,
    content_type: String,
    body: Value,
}

impl Seen {
    fn line(&self) -> String {
        format!("{} {} {}", self.method, self.path, self.content_type)
    }
}

/// A Lease API over a tower-test mock: GET, POST, apply and strategic
/// merge PATCH with the real server's rules for what the library uses
/// (an apply that claims a lease another manager holds is a 409).
#[derive(Debug, Default)]
struct FakeLeases {
    spec: Option<serde_json::Map<String, Value>>,
    /// Manager that set holderIdentity.
    holder_manager: Option<String>,
    fail_patches: bool,
    seen: Vec<Seen>,
}

type Shared = Arc<Mutex<FakeLeases>>;

fn lease_json(spec: &serde_json::Map<String, Value>) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": LEASE, "namespace": NS, "resourceVersion": "1"},
               "spec": spec})
}

fn reply(code: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn failure(code: StatusCode, reason: &str) -> Response<Body> {
    reply(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "message": reason, "reason": reason, "code": code.as_u16()}),
    )
}

async fn answer(fake: &Shared, req: Request<Body>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query: BTreeSet<String> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|q| !q.is_empty())
        .map(String::from)
        .collect();
    let content_type = req
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let mut f = fake.lock().unwrap();
    f.seen.push(Seen {
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        content_type: content_type.clone(),
        body: body.clone(),
    });
    let manager = query
        .iter()
        .find_map(|q| q.strip_prefix("fieldManager="))
        .map(|m| m.replace("%2F", "/"));
    match (method, path.as_str()) {
        (http::Method::GET, PATH) => match &f.spec {
            Some(spec) => reply(StatusCode::OK, &lease_json(spec)),
            None => failure(StatusCode::NOT_FOUND, "NotFound"),
        },
        (http::Method::POST, "/apis/coordination.k8s.io/v1/namespaces/netaware/leases") => {
            if f.spec.is_some() {
                return failure(StatusCode::CONFLICT, "AlreadyExists");
            }
            assert_eq!(body["metadata"]["name"], LEASE);
            f.spec = Some(serde_json::Map::new());
            reply(StatusCode::CREATED, &lease_json(&serde_json::Map::new()))
        }
        (http::Method::PATCH, PATH) => {
            if f.fail_patches {
                return failure(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable");
            }
            let Some(mut spec) = f.spec.clone() else {
                return failure(StatusCode::NOT_FOUND, "NotFound");
            };
            let patch = body["spec"].as_object().cloned().unwrap_or_default();
            let claims = patch.get("holderIdentity").filter(|v| !v.is_null());
            if content_type == "application/apply-patch+yaml"
                && let Some(claim) = claims
                && spec.get("holderIdentity").is_some_and(|h| h != claim)
                && f.holder_manager != manager
            {
                return failure(StatusCode::CONFLICT, "Conflict");
            }
            for (k, v) in patch {
                if v.is_null() {
                    spec.remove(&k);
                } else {
                    spec.insert(k.clone(), v);
                }
                if k == "holderIdentity" {
                    f.holder_manager = manager.clone();
                }
            }
            let out = lease_json(&spec);
            f.spec = Some(spec);
            reply(StatusCode::OK, &out)
        }
        _ => failure(StatusCode::NOT_FOUND, "NotFound"),
    }
}

/// A lease client over the fake, observed by `log`, and the fake.
fn client(log: &RenewalLog, fake: &Shared) -> kube::Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let fake = fake.clone();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            send.send_response(answer(&fake, req).await);
        }
    });
    kube::Client::new(tower::Layer::layer(log, service), NS)
}

fn micro_time(t: SystemTime) -> Value {
    let ts = k8s_openapi::jiff::Timestamp::try_from(t).unwrap();
    serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        ts,
    ))
    .unwrap()
}

fn held_by(holder: &str, renewed: SystemTime) -> Shared {
    let mut spec = serde_json::Map::new();
    spec.insert("holderIdentity".into(), json!(holder));
    spec.insert("leaseDurationSeconds".into(), json!(15));
    spec.insert("renewTime".into(), micro_time(renewed));
    spec.insert("acquireTime".into(), micro_time(renewed));
    Arc::new(Mutex::new(FakeLeases {
        spec: Some(spec),
        holder_manager: Some("netaware/other".into()),
        ..Default::default()
    }))
}

struct Running {
    role: watch::Receiver<Role>,
    log: RenewalLog,
    stop: tokio::sync::oneshot::Sender<()>,
    done: tokio::task::JoinHandle<Result<()>>,
    identity: Identity,
}

fn start(fake: &Shared, cfg: ElectionConfig) -> Running {
    let log = RenewalLog::new(&cfg.lease_path());
    let (tx, role) = watch::channel(Role::Follower { leader: None });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let identity = cfg.identity.clone();
    let done = tokio::spawn(run(client(&log, fake), cfg, log.clone(), tx, async {
        let _ = stopped.await;
    }));
    Running {
        role,
        log,
        stop,
        done,
        identity,
    }
}

async fn wait_role(role: &mut watch::Receiver<Role>, want: Role) {
    let reached = tokio::time::timeout(Duration::from_secs(30), role.wait_for(|r| *r == want))
        .await
        .is_ok();
    assert!(reached, "role never became {want:?}: {:?}", *role.borrow());
}

#[tokio::test]
async fn a_lone_replica_creates_the_lease_takes_it_and_releases_it_on_shutdown() {
    let fake: Shared = Arc::default();
    let mut r = start(&fake, config("agg-0", "10.0.0.5"));
    wait_role(&mut r.role, Role::Leader).await;
    assert!(r.log.last().is_some(), "the claim counts as a renewal");
    r.stop.send(()).unwrap();
    r.done.await.unwrap().unwrap();
    let f = fake.lock().unwrap();
    let lines: Vec<String> = f.seen.iter().map(Seen::line).collect();
    let lease = format!("{PATH} ");
    assert_eq!(
        lines[..2],
        [
            format!("GET {lease}"),
            "POST /apis/coordination.k8s.io/v1/namespaces/netaware/leases application/json"
                .to_string(),
        ]
    );
    // The claim: a server-side apply of our identity, as our own field
    // manager (so a second claimant conflicts), without force.
    let claim = f
        .seen
        .iter()
        .find(|s| s.content_type == "application/apply-patch+yaml")
        .expect("an apply claims the lease");
    assert_eq!(claim.method, http::Method::PATCH);
    assert_eq!(claim.path, PATH);
    let manager = format!("fieldManager=netaware%2Fagg-0_{}", r.identity.nonce);
    assert_eq!(claim.query, BTreeSet::from([manager.clone()]));
    assert_eq!(claim.body["apiVersion"], "coordination.k8s.io/v1");
    assert_eq!(claim.body["kind"], "Lease");
    assert_eq!(claim.body["spec"]["holderIdentity"], r.identity.to_string());
    assert_eq!(claim.body["spec"]["leaseDurationSeconds"], 15);
    // Every write is a PATCH of our lease by our manager.
    for s in f.seen.iter().filter(|s| s.method != http::Method::GET) {
        if s.method == http::Method::PATCH {
            assert_eq!(s.path, PATH);
            assert!(s.query.contains(&manager), "{s:?}");
        }
    }
    // The last write releases it: the holder is cleared.
    let release = f
        .seen
        .iter()
        .rfind(|s| s.method == http::Method::PATCH)
        .unwrap();
    assert_eq!(
        release.content_type,
        "application/strategic-merge-patch+json"
    );
    assert_eq!(release.body["spec"]["holderIdentity"], Value::Null);
    assert!(f.spec.as_ref().unwrap().get("holderIdentity").is_none());
    // Nothing but the lease was touched.
    assert!(f.seen.iter().all(|s| {
        s.path
            .starts_with("/apis/coordination.k8s.io/v1/namespaces/netaware/leases")
    }));
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_cannot_renew_steps_down_before_anyone_may_take_over() {
    let fake: Shared = Arc::default();
    let cfg = config("agg-0", "10.0.0.5");
    let mut r = start(&fake, cfg.clone());
    wait_role(&mut r.role, Role::Leader).await;
    // The API server now refuses every write (or cannot be reached).
    fake.lock().unwrap().fail_patches = true;
    let last = r.log.last().unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), r.done)
        .await
        .expect("the leader must give up")
        .unwrap();
    let held_for = Instant::now() - last;
    assert!(matches!(out, Err(Error::LeadershipLost(_))), "{out:?}");
    assert_eq!(*r.role.borrow(), Role::Follower { leader: None });
    // It tried to renew (a grace period before expiry) and stopped
    // before the lease could pass to another replica.
    assert!(held_for >= cfg.duration - cfg.grace, "{held_for:?}");
    assert!(held_for < cfg.duration, "{held_for:?}");
    let renew_attempts = fake
        .lock()
        .unwrap()
        .seen
        .iter()
        .filter(|s| s.method == http::Method::PATCH)
        .count();
    assert!(
        renew_attempts >= 3,
        "claim, transition count, then renewals"
    );
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_lease_was_taken_steps_down() {
    let fake: Shared = Arc::default();
    let mut r = start(&fake, config("agg-0", "10.0.0.5"));
    wait_role(&mut r.role, Role::Leader).await;
    {
        let mut f = fake.lock().unwrap();
        let spec = f.spec.as_mut().unwrap();
        spec.insert("holderIdentity".into(), json!("agg-1_zzzz@10.0.0.6"));
        f.holder_manager = Some("netaware/agg-1_zzzz".into());
    }
    let out = tokio::time::timeout(Duration::from_secs(60), r.done)
        .await
        .expect("the leader must notice")
        .unwrap();
    match out {
        Err(Error::LeadershipLost(why)) => assert!(why.contains("another replica"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_follower_forwards_to_the_holder_and_leaves_a_held_lease_alone() {
    let fake = held_by("agg-1_abcd1234@10.0.0.7", SystemTime::now());
    let mut r = start(&fake, config("agg-0", "10.0.0.5"));
    wait_role(
        &mut r.role,
        Role::Follower {
            leader: Some(ip("10.0.0.7")),
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let f = fake.lock().unwrap();
    assert!(
        f.seen.iter().all(|s| s.method == http::Method::GET),
        "a follower must not write a held lease: {:?}",
        f.seen
    );
    assert_eq!(
        f.spec.as_ref().unwrap()["holderIdentity"],
        "agg-1_abcd1234@10.0.0.7"
    );
}

#[tokio::test]
async fn a_follower_takes_over_an_expired_lease() {
    let fake = held_by(
        "agg-1_abcd1234@10.0.0.7",
        SystemTime::now() - Duration::from_secs(60),
    );
    let mut r = start(&fake, config("agg-0", "10.0.0.5"));
    wait_role(&mut r.role, Role::Leader).await;
    assert_eq!(
        fake.lock().unwrap().spec.as_ref().unwrap()["holderIdentity"],
        r.identity.to_string()
    );
    r.stop.send(()).unwrap();
    r.done.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_forbidden_lease_is_a_clear_error() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((_, send)) = handle.next_request().await {
            send.send_response(failure(StatusCode::FORBIDDEN, "Forbidden"));
        }
    });
    let cfg = config("agg-0", "10.0.0.5");
    let log = RenewalLog::new(&cfg.lease_path());
    let (tx, _role) = watch::channel(Role::Follower { leader: None });
    let client = kube::Client::new(tower::Layer::layer(&log, service), NS);
    let err = run(client, cfg, log, tx, std::future::pending())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("netaware/netaware-aggregator"), "{err}");
    assert!(err.contains("Role must allow"), "{err}");
}

#[test]
fn identities_round_trip_and_foreign_ones_are_ignored() {
    let id = Identity::new("netaware-aggregator-7d9f-x2", ip("fd00::12"));
    assert_eq!(id.nonce.len(), NONCE_LEN);
    assert_eq!(Identity::parse(&id.to_string()), Some(id.clone()));
    assert_ne!(Identity::new("a", ip("10.0.0.1")).nonce, id.nonce);
    for bad in [
        "",
        "pod@10.0.0.1",
        "pod_x@not-an-ip",
        "_x@10.0.0.1",
        "pod_@10.0.0.1",
    ] {
        assert_eq!(Identity::parse(bad), None, "{bad}");
    }
}

#[test]
fn the_fence_falls_between_the_renewal_and_the_expiry() {
    let f = Fence {
        duration: Duration::from_secs(15),
        grace: Duration::from_secs(5),
    };
    let t0 = Instant::now();
    assert_eq!(f.valid_until(t0), t0 + Duration::from_millis(12_500));
    assert!(!f.expired(Some(t0), t0 + Duration::from_secs(12)));
    assert!(f.expired(Some(t0), t0 + Duration::from_millis(12_500)));
    assert!(f.expired(None, t0), "no renewal seen: not a leader");
}

#[test]
fn lease_timing_is_checked() {
    let id = Identity::new("p", ip("10.0.0.1"));
    let mk = |d: u64, g: u64| {
        ElectionConfig::new(
            "l".into(),
            "n".into(),
            id.clone(),
            Duration::from_millis(d),
            Duration::from_millis(g),
            ("DURATION", "GRACE"),
        )
    };
    assert!(mk(15_000, 5_000).is_ok());
    let e = mk(1_500, 1_000).unwrap_err().to_string();
    assert!(e.contains("DURATION") && e.contains("whole number"), "{e}");
    let e = mk(10_000, 10_000).unwrap_err().to_string();
    assert!(e.contains("GRACE") && e.contains("shorter"), "{e}");
    assert!(mk(10_000, 0).is_err());
}

#[test]
fn field_managers_differ_per_replica_and_fit_the_api_limit() {
    let a = config("agg-0", "10.0.0.5");
    let b = config("agg-0", "10.0.0.5");
    assert_ne!(a.field_manager(), b.field_manager(), "one per process");
    let long = config(&"p".repeat(253), "10.0.0.5");
    assert!(long.field_manager().len() <= 128);
}

#[test]
fn an_expired_lease_has_no_current_holder() {
    let now = SystemTime::now();
    let fake = held_by("agg-1_abcd1234@10.0.0.7", now);
    let spec = fake.lock().unwrap().spec.clone().unwrap();
    let lease: Lease = serde_json::from_value(lease_json(&spec)).unwrap();
    assert_eq!(
        current_holder(&lease, now + Duration::from_secs(14)).map(|h| h.address),
        Some(ip("10.0.0.7"))
    );
    assert_eq!(current_holder(&lease, now + Duration::from_secs(15)), None);
}
