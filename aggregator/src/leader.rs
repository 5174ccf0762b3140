//! Leader election for more than one aggregator replica.
//!
//! Replicas compete for one `coordination.k8s.io/v1` Lease through
//! `kube-lease-manager`. Exactly one replica — the lease holder — keeps the
//! matrix, serves agents and queries, and writes Nodes. The others are
//! *followers*: they forward every agent and query connection, byte for byte,
//! to the leader (see [`crate::forward`]), so wherever the Service routes a
//! client, its data lands in the one matrix.
//!
//! Three rules keep it to one writer:
//! - The holder's identity carries its pod IP (`POD_NAME_NONCE@POD_IP`), so
//!   followers know where to forward without any other permission.
//! - A *fence*: the leader counts a renewal only when the API server accepted
//!   its PATCH of the lease, and steps down if none succeeded for
//!   `duration − grace/2` — before any other replica may take the lease
//!   (`duration` after the last renewal). The library alone would keep
//!   reporting "leader" while renewals fail (e.g. the replica is cut off from
//!   the API server but not from the agents).
//! - Losing the lease ends the process (the pod restarts as a follower with
//!   an empty matrix), as Kubernetes' own controllers do: no replica ever
//!   goes back from leader to follower with data the new leader lacks.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::error::{Error, Result};

pub const DEFAULT_LEASE_NAME: &str = "netaware-aggregator";
/// As Kubernetes' own controllers (kube-controller-manager: 15 s, renew 10 s).
pub const DEFAULT_LEASE_DURATION: &str = "15s";
pub const DEFAULT_LEASE_GRACE: &str = "5s";
/// How long shutdown waits for the lease to be released (then it just expires).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);
/// Letters in an identity's nonce.
const NONCE_LEN: usize = 8;

/// Election settings (validated by [`ElectionConfig::new`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionConfig {
    pub lease_name: String,
    pub namespace: String,
    pub identity: Identity,
    /// Whole seconds (the Lease API counts seconds).
    pub duration: Duration,
    /// Renew this long before the lease would expire; whole seconds, < duration.
    pub grace: Duration,
}

impl ElectionConfig {
    /// Check the lease timing; `names` are the settings' variables, for errors.
    pub fn new(
        lease_name: String,
        namespace: String,
        identity: Identity,
        duration: Duration,
        grace: Duration,
        names: (&'static str, &'static str),
    ) -> Result<Self> {
        let whole = |d: Duration, name: &'static str, min: u64| {
            if d.subsec_nanos() != 0 || d.as_secs() < min {
                Err(Error::Config {
                    name,
                    message: format!(
                        "{} must be a whole number of seconds, at least {min}s (the Lease API counts seconds)",
                        humantime::format_duration(d)
                    ),
                })
            } else {
                Ok(())
            }
        };
        whole(duration, names.0, 2)?;
        whole(grace, names.1, 1)?;
        if grace >= duration {
            return Err(Error::Config {
                name: names.1,
                message: format!(
                    "the grace period ({}) must be shorter than the lease duration ({}): the leader renews that long before the lease expires",
                    humantime::format_duration(grace),
                    humantime::format_duration(duration)
                ),
            });
        }
        Ok(Self {
            lease_name,
            namespace,
            identity,
            duration,
            grace,
        })
    }

    /// One field manager per replica: server-side apply then refuses a
    /// second replica's claim on a held lease (a conflict), which is the lock.
    /// The API limits a field manager to 128 bytes: a long pod name is cut.
    pub fn field_manager(&self) -> String {
        let pod: String = self.identity.pod.chars().take(100).collect();
        format!("netaware/{pod}_{}", self.identity.nonce)
    }

    /// The lease's URL path, as the client requests it.
    pub fn lease_path(&self) -> String {
        format!(
            "/apis/coordination.k8s.io/v1/namespaces/{}/leases/{}",
            self.namespace, self.lease_name
        )
    }

    pub fn fence(&self) -> Fence {
        Fence {
            duration: self.duration,
            grace: self.grace,
        }
    }
}

/// Who holds the lease: `POD_NONCE@IP`. The nonce differs on every start,
/// so a restarted container never mistakes its predecessor's lease for its
/// own; the IP tells followers where to forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub pod: String,
    pub nonce: String,
    pub address: IpAddr,
}

impl Identity {
    /// A fresh identity for this process.
    pub fn new(pod: &str, address: IpAddr) -> Self {
        let nonce: String = (0..NONCE_LEN)
            .map(|_| {
                let i = rand::random_range(0..36u32);
                char::from_digit(i, 36).unwrap_or('x')
            })
            .collect();
        Self {
            pod: pod.to_string(),
            nonce,
            address,
        }
    }

    /// Read a holder identity; `None` for one we did not write.
    pub fn parse(s: &str) -> Option<Self> {
        let (name, ip) = s.rsplit_once('@')?;
        let (pod, nonce) = name.rsplit_once('_')?;
        if pod.is_empty() || nonce.is_empty() {
            return None;
        }
        Some(Self {
            pod: pod.to_string(),
            nonce: nonce.to_string(),
            address: ip.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}_{}@{}", self.pod, self.nonce, self.address)
    }
}

/// This replica's part, as the servers and the publisher see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Holds the lease (or runs alone): serves, keeps the matrix, writes Nodes.
    Leader,
    /// Another replica holds the lease; connections go to `leader` if known.
    Follower { leader: Option<IpAddr> },
}

impl Role {
    /// Why `/readyz` says no, or `None` when ready: ready means a connection
    /// accepted now reaches the leader.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        match self {
            Role::Follower { leader: None } => {
                Some("follower: no replica holds the lease yet, nothing to forward to")
            }
            _ => None,
        }
    }
}

/// How long a renewal keeps this replica the leader, on its own clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub duration: Duration,
    pub grace: Duration,
}

impl Fence {
    /// Others may take the lease `duration` after our last renewal (by their
    /// clocks). We step down half a grace period before that: the library
    /// renews a full grace period before it, so a healthy leader never
    /// reaches this, and the other half allows for clock skew.
    pub fn valid_until(&self, renewed: Instant) -> Instant {
        renewed + self.term()
    }

    /// How long one renewal keeps us leader: `duration − grace/2`.
    pub fn term(&self) -> Duration {
        self.duration - self.grace / 2
    }

    /// Whether leadership renewed last at `renewed` (never: `None`) has run
    /// out at `now`.
    pub fn expired(&self, renewed: Option<Instant>, now: Instant) -> bool {
        renewed.is_none_or(|r| now >= self.valid_until(r))
    }
}

/// When the API server last accepted a PATCH of our lease (the time the
/// request was sent: the lease's renewTime is no later than that).
#[derive(Debug, Clone)]
pub struct RenewalLog {
    path: Arc<str>,
    last: Arc<Mutex<Option<Instant>>>,
}

impl RenewalLog {
    pub fn new(lease_path: &str) -> Self {
        Self {
            path: lease_path.into(),
            last: Arc::new(Mutex::new(None)),
        }
    }

    pub fn last(&self) -> Option<Instant> {
        self.last.lock().map(|l| *l).unwrap_or(None)
    }

    fn record(&self, sent: Instant) {
        if let Ok(mut l) = self.last.lock() {
            *l = Some(l.map_or(sent, |old| old.max(sent)));
        }
    }
}

impl<S> tower::Layer<S> for RenewalLog {
    type Service = ObserveRenewals<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ObserveRenewals {
            inner,
            log: self.clone(),
        }
    }
}

/// The lease client's HTTP service, wrapped to fill a [`RenewalLog`].
#[derive(Debug, Clone)]
pub struct ObserveRenewals<S> {
    inner: S,
    log: RenewalLog,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for ObserveRenewals<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let renewal = req.method() == http::Method::PATCH && req.uri().path() == &*self.log.path;
        let sent = Instant::now();
        let log = self.log.clone();
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            if renewal && response.status().is_success() {
                log.record(sent);
            }
            Ok(response)
        })
    }
}

/// The holder of `lease` if its term has not run out at `now`.
pub fn current_holder(lease: &Lease, now: SystemTime) -> Option<Identity> {
    let spec = lease.spec.as_ref()?;
    let holder = spec.holder_identity.as_deref()?;
    let renewed: SystemTime = spec.renew_time.as_ref()?.0.into();
    let duration = Duration::from_secs(u64::try_from(spec.lease_duration_seconds?).ok()?);
    if renewed + duration <= now {
        return None;
    }
    Identity::parse(holder)
}

/// Take part in the election until `shutdown` (then release the lease and
/// return `Ok`) or until leadership is lost (`Err(LeadershipLost)`: the
/// caller must stop serving and writing at once). `client` must be wrapped
/// with `log` ([`RenewalLog`] is a tower layer); `role` is kept current.
pub async fn run(
    client: kube::Client,
    cfg: ElectionConfig,
    log: RenewalLog,
    role: watch::Sender<Role>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let lease_ref = format!("{}/{}", cfg.namespace, cfg.lease_name);
    let manager = LeaseManagerBuilder::new(client.clone(), &cfg.lease_name)
        .with_namespace(&cfg.namespace)
        .with_identity(cfg.identity.to_string())
        .with_field_manager(cfg.field_manager())
        .with_duration(cfg.duration.as_secs())
        .with_grace(cfg.grace.as_secs())
        .build()
        .await
        .map_err(|e| {
            Error::Election(format!(
                "cannot read or create the Lease {lease_ref}: {e} (the aggregator's Role must allow get and patch on this lease and create on leases)"
            ))
        })?;
    info!(lease = %lease_ref, identity = %cfg.identity, "taking part in leader election");
    let (mut held, task) = manager.watch().await;
    let leases: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let fence = cfg.fence();
    // Followers look up the holder this often (one GET each).
    let mut lookup = tokio::time::interval(cfg.grace);
    lookup.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut leading = false;
    loop {
        // A leader that never saw a successful renewal has nothing to stand
        // on: its deadline is now.
        let deadline = leading.then(|| {
            log.last()
                .map_or_else(Instant::now, |r| fence.valid_until(r))
        });
        tokio::select! {
            () = &mut shutdown => {
                role.send_replace(Role::Follower { leader: None });
                // Dropping the receiver makes the manager release the lease,
                // so a successor need not wait for it to expire.
                drop(held);
                match tokio::time::timeout(RELEASE_TIMEOUT, task).await {
                    Ok(Ok(Ok(_))) => info!(lease = %lease_ref, "lease released"),
                    Ok(Ok(Err(e))) => warn!(lease = %lease_ref, error = %e, "releasing the lease failed; it expires by itself"),
                    Ok(Err(e)) => warn!(error = %e, "the election task failed"),
                    Err(_) => warn!(lease = %lease_ref, "releasing the lease timed out; it expires by itself"),
                }
                return Ok(());
            }
            changed = held.changed() => {
                if changed.is_err() {
                    // The manager only stops on an error it cannot retry.
                    let why = match task.await {
                        Ok(Err(e)) => e.to_string(),
                        Ok(Ok(_)) => "the election task stopped".to_string(),
                        Err(e) => e.to_string(),
                    };
                    role.send_replace(Role::Follower { leader: None });
                    return Err(Error::Election(why));
                }
                let holds = *held.borrow_and_update();
                if holds && !leading {
                    leading = true;
                    role.send_replace(Role::Leader);
                    info!(lease = %lease_ref, identity = %cfg.identity, "this replica is now the leader");
                } else if !holds && leading {
                    return Err(step_down(&role, format!("another replica took the lease {lease_ref}")));
                }
            }
            () = sleep_until_some(deadline) => {
                let now = Instant::now();
                if fence.expired(log.last(), now) {
                    return Err(step_down(&role, format!(
                        "the lease {lease_ref} was not renewed within {} (cannot reach the API server?)",
                        humantime::format_duration(fence.term())
                    )));
                }
            }
            _ = lookup.tick(), if !leading => {
                let leader = match leases.get_opt(&cfg.lease_name).await {
                    Ok(Some(lease)) => current_holder(&lease, SystemTime::now())
                        .filter(|h| *h != cfg.identity)
                        .map(|h| h.address),
                    Ok(None) => None,
                    Err(e) => {
                        warn!(lease = %lease_ref, error = %e, "cannot read the lease to find the leader");
                        None
                    }
                };
                // Only a follower's target changes here.
                role.send_if_modified(|r| match r {
                    Role::Follower { leader: l } if *l != leader => {
                        info!(?leader, "leader to forward to");
                        *l = leader;
                        true
                    }
                    _ => false,
                });
            }
        }
    }
}

/// Stop leading at once: followers' role for the servers and publisher, and
/// the error that ends the process.
fn step_down(role: &watch::Sender<Role>, why: String) -> Error {
    role.send_replace(Role::Follower { leader: None });
    error!(%why, "stepping down");
    Error::LeadershipLost(why)
}

/// Sleep until `at`; never return without one (a follower has no deadline).
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::{Value, json};
    use std::collections::BTreeSet;

    const NS: &str = "netaware";
    const LEASE: &str = "netaware-aggregator";
    const PATH: &str =
        "/apis/coordination.k8s.io/v1/namespaces/netaware/leases/netaware-aggregator";

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
}
