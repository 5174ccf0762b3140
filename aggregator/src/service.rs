//! gRPC handlers. They validate input, translate to [`Command`]s for the
//! state owner and translate the answers back; they hold no state. The
//! query side ([`query`]) computes its answers from a snapshot, on its own
//! tasks, within a deadline.

use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

use netaware_proto::v1::agent_message::Msg as AgentMsg;
use netaware_proto::v1::agent_service_server::AgentService;
use netaware_proto::v1::{AgentMessage, AggregatorMessage, Hello};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, info_span, warn};

use crate::auth::{self, Denied, Reviewer};
use crate::metrics::AuthMetrics;
use crate::refusals::RefusalLog;
use crate::state::{Command, StateHandle, Trust};
use netaware_model::validate;

pub use query::{INITIAL_CONCURRENCY, QUERY_CONCURRENCY, QueryLimits};

/// Outbound messages queued per agent session before it counts as stuck.
const SESSION_QUEUE: usize = 256;

/// How long a new session may take to send its Hello: a connection that
/// says nothing is closed instead of holding a stream for ever.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Both services share one handle to the state owner.
#[derive(Debug, Clone)]
pub struct Services {
    state: StateHandle,
    /// Node labels for Place's label selector (when watching Nodes).
    nodes: Option<crate::publish::NodeList>,
    /// Refused Hellos, logged at most once a minute per source.
    refusals: Arc<Mutex<RefusalLog>>,
    /// Reviews agent tokens; `None` with `--agent-auth none`.
    reviewer: Option<Arc<Reviewer>>,
    /// Authenticates and authorizes queries; `None` with `--query-auth none`.
    queriers: Option<Arc<auth::Queriers>>,
    auth_metrics: AuthMetrics,
    limits: QueryLimits,
    /// Slots of the costly queries, one pool per kind.
    matrix_slots: Arc<Semaphore>,
    place_slots: Arc<Semaphore>,
    /// Open WatchLinks streams, and those receiving their initial state.
    watchers: Arc<Semaphore>,
    initial_slots: Arc<Semaphore>,
    /// Prefix of the label keys GetNode shows (the publisher's).
    label_prefix: String,
}

impl Services {
    pub fn new(state: StateHandle) -> Self {
        Self::with_limits(state, QueryLimits::default())
    }

    /// Services whose queries keep to `limits`.
    pub fn with_limits(state: StateHandle, limits: QueryLimits) -> Self {
        Self {
            state,
            nodes: None,
            refusals: Arc::default(),
            reviewer: None,
            queriers: None,
            auth_metrics: AuthMetrics::default(),
            matrix_slots: Arc::new(Semaphore::new(QUERY_CONCURRENCY)),
            place_slots: Arc::new(Semaphore::new(QUERY_CONCURRENCY)),
            watchers: Arc::new(Semaphore::new(limits.max_watchers)),
            initial_slots: Arc::new(Semaphore::new(query::INITIAL_CONCURRENCY)),
            limits,
            label_prefix: netaware_model::labels::DEFAULT_PREFIX.to_string(),
        }
    }

    /// Show GetNode's labels with `prefix`, the one the publisher writes.
    pub fn with_label_prefix(mut self, prefix: String) -> Self {
        self.label_prefix = prefix;
        self
    }

    /// Require agent tokens, reviewed by `reviewer`; count refusals in `metrics`.
    pub fn with_agent_auth(
        mut self,
        reviewer: Option<Arc<Reviewer>>,
        metrics: AuthMetrics,
    ) -> Self {
        self.reviewer = reviewer;
        self.auth_metrics = metrics;
        self
    }

    /// Require a Kubernetes bearer token on queries, allowed by RBAC.
    pub fn with_query_auth(mut self, queriers: Option<Arc<auth::Queriers>>) -> Self {
        self.queriers = queriers;
        self
    }

    /// Whether the caller of `request` may do `access` (always, with
    /// `--query-auth none`); a refusal is counted, logged at most once a
    /// minute per source, and says what to do.
    async fn authorize<T>(&self, request: &Request<T>, access: auth::Access) -> Result<(), Status> {
        let Some(queriers) = &self.queriers else {
            return Ok(());
        };
        let source = request
            .remote_addr()
            .map_or_else(|| "unknown".to_string(), |a| a.ip().to_string());
        let denied = |d: Denied| {
            self.auth_metrics.query_refused(d.reason());
            self.refusals
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .warn(&source, "query", &d);
            d.status()
        };
        let token = match auth::bearer(request.metadata()) {
            Ok(t) => t,
            Err(Denied::NoToken) => {
                self.auth_metrics.query_refused("no_token");
                return Err(Status::unauthenticated(
                    "no bearer token: the CLI sends the token of the kubeconfig's current user, or --token",
                ));
            }
            Err(d) => return Err(denied(d)),
        };
        let now = Instant::now();
        tokio::time::timeout(HELLO_TIMEOUT, queriers.allow(token, access, now))
            .await
            .unwrap_or_else(|_| Err(Denied::Unavailable("the review took too long".into())))
            .map(|_| ())
            .map_err(denied)
    }

    /// Count a refused session, log it (once a minute per source) and
    /// give the agent the status that says why.
    fn deny(&self, source: &str, denied: &Denied) -> Status {
        self.auth_metrics.refused(denied.reason());
        self.refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .warn(source, "session", denied);
        denied.status()
    }

    /// Keep only the Hello's probe addresses that are its Node's own (with
    /// `--agent-auth token`, which always watches the Nodes).
    async fn own_addresses(&self, hello: &mut Hello, source: &str) -> Result<(), Denied> {
        // Without authentication nothing a Hello says is trusted, its name
        // included, so checking its addresses would protect nothing.
        if self.reviewer.is_none() {
            return Ok(());
        }
        let Some(list) = &self.nodes else {
            return Ok(());
        };
        if !tokio::time::timeout(HELLO_TIMEOUT, list.ready())
            .await
            .unwrap_or(false)
        {
            return Err(Denied::Unavailable(
                "the aggregator has not loaded the cluster's Nodes yet".into(),
            ));
        }
        let node = list
            .store()
            .get(&kube::runtime::reflector::ObjectRef::new(&hello.node_name))
            .ok_or_else(|| Denied::UnknownNode(hello.node_name.clone()))?;
        let (kept, dropped) = auth::own_addresses(&node, &hello.probe_addresses)?;
        if !dropped.is_empty() {
            self.state.metrics().refused("probe_address");
            self.refusals
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .warn(
                    source,
                    "probe_address",
                    &format!(
                        "probe addresses {dropped:?} of node '{}' are not its Node's InternalIP/ExternalIP; peers will not probe them",
                        hello.node_name
                    ),
                );
        }
        hello.probe_addresses = kept;
        Ok(())
    }

    /// Answer label selectors from this store of Nodes.
    pub fn with_nodes(mut self, nodes: Option<crate::publish::NodeList>) -> Self {
        self.nodes = nodes;
        self
    }
}

#[tonic::async_trait]
impl AgentService for Services {
    type SessionStream = ReceiverStream<Result<AggregatorMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let remote = request.remote_addr();
        let source = remote.map_or_else(|| "unknown".to_string(), |a| a.ip().to_string());
        // No token, no Hello read: refused before anything else is spent.
        let token = match &self.reviewer {
            Some(_) => Some(
                auth::bearer(request.metadata())
                    .map_err(|d| self.deny(&source, &d))?
                    .to_string(),
            ),
            None => None,
        };
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "no Hello within {} s of opening the Session",
                    HELLO_TIMEOUT.as_secs()
                ))
            })??;
        let mut hello = match first {
            Some(AgentMessage {
                msg: Some(AgentMsg::Hello(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message of a Session must be a Hello",
                ));
            }
        };
        if let Err(r) = validate::hello(&hello) {
            self.state.metrics().refused("hello");
            self.refusals
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .warn(&source, "hello", &r);
            return Err(Status::invalid_argument(r.to_string()));
        }
        if hello.protocol_version != netaware_proto::PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "agent speaks protocol version {}, this aggregator speaks {}; upgrade the older side",
                hello.protocol_version,
                netaware_proto::PROTOCOL_VERSION
            )));
        }
        let trust = match (&self.reviewer, token) {
            (Some(reviewer), Some(token)) => {
                let agent = tokio::time::timeout(
                    HELLO_TIMEOUT,
                    reviewer.agent(&token, Instant::now(), unix_seconds()),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(Denied::Unavailable("the TokenReview took too long".into()))
                })
                .map_err(|d| self.deny(&source, &d))?;
                if agent.node != hello.node_name {
                    let d = Denied::NodeMismatch {
                        token: agent.node,
                        hello: hello.node_name.clone(),
                    };
                    return Err(self.deny(&source, &d));
                }
                Trust::Until(agent.valid_until)
            }
            _ => Trust::Unauthenticated,
        };
        self.own_addresses(&mut hello, &source)
            .await
            .map_err(|d| self.deny(&source, &d))?;
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let span = info_span!("session", node = %hello.node_name);
        let session = self.state.connect_as(hello, tx, trust).await?;
        let state = self.state.clone();
        // Forward the agent's reports until its stream ends, then say so.
        tokio::spawn(
            async move {
                loop {
                    let msg = match inbound.message().await {
                        Ok(Some(m)) => m.msg,
                        Ok(None) => break,
                        Err(e) => {
                            warn!(error = %e, "agent stream failed");
                            break;
                        }
                    };
                    let cmd = match msg {
                        Some(AgentMsg::Reports(batch)) => Command::Reports { session, batch },
                        Some(AgentMsg::BandwidthResult(result)) => {
                            Command::BandwidthResult { session, result }
                        }
                        Some(AgentMsg::BandwidthServed(served)) => {
                            Command::BandwidthServed { session, served }
                        }
                        Some(AgentMsg::Hello(_)) | None => {
                            warn!("ignoring an unexpected message (a second Hello?)");
                            continue;
                        }
                    };
                    if state.send(cmd).await.is_err() {
                        break;
                    }
                }
                let _ = state.send(Command::Disconnect { session }).await;
            }
            .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Wall-clock seconds, for the expiry JWTs carry.
fn unix_seconds() -> i64 {
    i64::try_from(netaware_common::now_unix_us() / 1_000_000).unwrap_or(i64::MAX)
}

mod query;
