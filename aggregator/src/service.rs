//! gRPC handlers. They validate input, translate to [`Command`]s for the
//! state owner and translate the answers back; they hold no state. The
//! query side ([`query`]) computes its answers from a snapshot, on its own
//! tasks, within a deadline.

use std::sync::{Arc, Mutex};

use std::time::Duration;

use netaware_proto::v1::agent_message::Msg as AgentMsg;
use netaware_proto::v1::agent_service_server::AgentService;
use netaware_proto::v1::{AgentMessage, AggregatorMessage};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, info_span, warn};

use crate::refusals::RefusalLog;
use crate::state::{Command, StateHandle};
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
    limits: QueryLimits,
    /// Slots of the costly queries, one pool per kind.
    matrix_slots: Arc<Semaphore>,
    place_slots: Arc<Semaphore>,
    /// Open WatchLinks streams, and those receiving their initial state.
    watchers: Arc<Semaphore>,
    initial_slots: Arc<Semaphore>,
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
            matrix_slots: Arc::new(Semaphore::new(QUERY_CONCURRENCY)),
            place_slots: Arc::new(Semaphore::new(QUERY_CONCURRENCY)),
            watchers: Arc::new(Semaphore::new(limits.max_watchers)),
            initial_slots: Arc::new(Semaphore::new(query::INITIAL_CONCURRENCY)),
            limits,
        }
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
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "no Hello within {} s of opening the Session",
                    HELLO_TIMEOUT.as_secs()
                ))
            })??;
        let hello = match first {
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
            let source = remote.map_or_else(|| "unknown".to_string(), |a| a.ip().to_string());
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
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let span = info_span!("session", node = %hello.node_name);
        let session = self.state.connect(hello, tx).await?;
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

mod query;
