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
mod tests;
