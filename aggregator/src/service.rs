//! gRPC handlers. They validate input, translate to [`Command`]s for the
//! state owner and translate the answers back; they hold no state.

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use netaware_proto::ProbeMethod;
use netaware_proto::v1::agent_message::Msg as AgentMsg;
use netaware_proto::v1::agent_service_server::AgentService;
use netaware_proto::v1::query_service_server::QueryService;
use netaware_proto::v1::{
    AgentMessage, AggregatorMessage, GetMatrixRequest, GetMatrixResponse, GetNodeRequest,
    GetNodeResponse, LinkUpdate, ListGroupsRequest, ListGroupsResponse, PlaceRequest,
    PlaceResponse, WatchLinksRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, info_span, warn};

use crate::refusals::RefusalLog;
use crate::state::{Command, StateHandle};
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::Store;
use netaware_model::Error as PlaceError;
use netaware_model::place::Query;
use netaware_model::validate;
use std::collections::BTreeMap;

/// Outbound messages queued per agent session before it counts as stuck.
const SESSION_QUEUE: usize = 256;

/// Both services share one handle to the state owner.
#[derive(Debug, Clone)]
pub struct Services {
    state: StateHandle,
    /// Node labels for Place's label selector (when watching Nodes).
    nodes: Option<Store<Node>>,
    /// Refused Hellos, logged at most once a minute per source.
    refusals: Arc<Mutex<RefusalLog>>,
}

impl Services {
    pub fn new(state: StateHandle) -> Self {
        Self {
            state,
            nodes: None,
            refusals: Arc::default(),
        }
    }

    /// Answer label selectors from this store of Nodes.
    pub fn with_nodes(mut self, nodes: Option<Store<Node>>) -> Self {
        self.nodes = nodes;
        self
    }
}

fn method_of(raw: i32) -> Result<ProbeMethod, Status> {
    ProbeMethod::try_from(raw)
        .map_err(|_| Status::invalid_argument(format!("unknown probe method {raw}")))
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl AgentService for Services {
    type SessionStream = ReceiverStream<Result<AggregatorMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let remote = request.remote_addr();
        let mut inbound = request.into_inner();
        let hello = match inbound.message().await? {
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

#[tonic::async_trait]
impl QueryService for Services {
    async fn get_matrix(
        &self,
        request: Request<GetMatrixRequest>,
    ) -> Result<Response<GetMatrixResponse>, Status> {
        let method = method_of(request.into_inner().method)?;
        let m = self.state.matrix(method).await?;
        Ok(Response::new(m))
    }

    async fn get_node(
        &self,
        request: Request<GetNodeRequest>,
    ) -> Result<Response<GetNodeResponse>, Status> {
        let name = request.into_inner().node_name;
        if name.is_empty() {
            return Err(Status::invalid_argument(
                "GetNodeRequest.node_name is empty",
            ));
        }
        let view = self
            .state
            .ask(|reply| Command::GetNode {
                name: name.clone(),
                reply,
            })
            .await?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "node '{name}' is unknown: no agent with that node name ever connected"
                ))
            })?;
        let Some(facts) = view.facts else {
            return Err(Status::unavailable(format!(
                "node '{name}' is known but its groups are not computed yet; try again after the next recomputation"
            )));
        };
        let f = facts.figures;
        Ok(Response::new(GetNodeResponse {
            status: Some(view.status),
            group_l1: facts.groups[0].clone(),
            group_l2: facts.groups[1].clone(),
            group_l3: facts.groups[2].clone(),
            quality: facts.quality,
            rtt_p50_us: f.map_or(0.0, |f| f.rtt_p50_us),
            rtt_p99_us: f.map_or(0.0, |f| f.rtt_p99_us),
            jitter_us: f.map_or(0.0, |f| f.jitter_us),
            loss_ppm: f.map_or(0.0, |f| f.loss_ppm),
            bandwidth_mbps: f.and_then(|f| f.bandwidth_mbps).unwrap_or(0.0),
            fresh: facts.fresh,
        }))
    }

    async fn list_groups(
        &self,
        _request: Request<ListGroupsRequest>,
    ) -> Result<Response<ListGroupsResponse>, Status> {
        let groups = self
            .state
            .ask(|reply| Command::ListGroups { reply })
            .await?
            .ok_or_else(|| {
                Status::unavailable(
                    "groups are not computed yet (no agent has reported); try again shortly",
                )
            })?;
        Ok(Response::new(ListGroupsResponse {
            groups: groups
                .into_iter()
                .map(|g| netaware_proto::v1::Group {
                    level: g.level,
                    id: g.id,
                    members: g.members,
                    max_rtt_us: g.max_rtt_us,
                })
                .collect(),
        }))
    }

    async fn place(
        &self,
        request: Request<PlaceRequest>,
    ) -> Result<Response<PlaceResponse>, Status> {
        let r = request.into_inner();
        let selector = if r.label_selector.trim().is_empty() {
            None
        } else {
            let filter = crate::selector::filter(&r.label_selector)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            Some(filter)
        };
        // Labels are copied only when a selector needs them.
        let labels = match (&selector, &self.nodes) {
            (Some(_), Some(store)) => Some(
                store
                    .state()
                    .iter()
                    .filter_map(|n| {
                        let name = n.metadata.name.clone()?;
                        Some((name, n.metadata.labels.clone().unwrap_or_default()))
                    })
                    .collect::<BTreeMap<_, _>>(),
            ),
            _ => None,
        };
        let query = Query {
            k: usize::try_from(r.k).unwrap_or(usize::MAX),
            include: r.include,
            exclude: r.exclude,
            selector,
            min_bandwidth_mbps: r.min_bandwidth_mbps,
            fresh_only: r.fresh_only,
            allreduce_bytes: r.allreduce_bytes,
            explain: r.explain,
        };
        let p = self
            .state
            .ask(|reply| Command::Place {
                query,
                labels,
                reply,
            })
            .await?
            .map_err(|e| match e {
                PlaceError::NoLabels => Status::failed_precondition(e.to_string()),
                e => Status::invalid_argument(e.to_string()),
            })?;
        Ok(Response::new(PlaceResponse {
            nodes: p.nodes,
            max_rtt_us: p.max_rtt_us,
            bottleneck_bandwidth_mbps: p.bottleneck_mbps.unwrap_or(0.0),
            predicted_allreduce_ms: p.predicted_allreduce_ms.unwrap_or(0.0),
            exclusions: p
                .exclusions
                .into_iter()
                .map(|(node_name, reason)| netaware_proto::v1::Exclusion { node_name, reason })
                .collect(),
            pairs: p.pairs,
            bandwidth_pairs_measured: p.bandwidth_pairs_measured,
        }))
    }

    type WatchLinksStream = BoxStream<LinkUpdate>;

    async fn watch_links(
        &self,
        request: Request<WatchLinksRequest>,
    ) -> Result<Response<Self::WatchLinksStream>, Status> {
        let req = request.into_inner();
        let method = method_of(req.method)?;
        let (initial, rx) = self
            .state
            .ask(|reply| Command::Watch {
                method,
                send_initial: req.send_initial,
                reply,
            })
            .await?;
        let wanted = move |m: i32| method == ProbeMethod::Unspecified || m == method as i32;
        let initial = tokio_stream::iter(
            initial
                .into_iter()
                .map(|link| Ok(LinkUpdate { link: Some(link) })),
        );
        let updates = BroadcastStream::new(rx).filter_map(move |r| match r {
            Ok(link) if wanted(link.method) => Some(Ok(LinkUpdate { link: Some(link) })),
            Ok(_) => None,
            Err(BroadcastStreamRecvError::Lagged(n)) => Some(Err(Status::resource_exhausted(
                format!("watcher fell {n} updates behind; watch again with send_initial"),
            ))),
        });
        // tonic ends the response after the first error, so a lagging watcher
        // gets one clear status and must resynchronise.
        Ok(Response::new(Box::pin(initial.chain(updates))))
    }
}
