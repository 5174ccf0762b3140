//! Who is on the other end of an agent `Session` (the review's S1).
//!
//! An agent presents the projected ServiceAccount token the kubelet
//! mounts into its pod (audience [`TOKEN_AUDIENCE`]). The API server
//! reviews it (`TokenReview`); we accept it only if it belongs to the
//! agent ServiceAccount and to a pod bound to a node, and the session may
//! then speak for that node only: the bar Kubernetes' NodeRestriction sets
//! for kubelets.
//!
//! The node comes from the `authentication.kubernetes.io/node-name` extra
//! that bound tokens carry from Kubernetes 1.30 (ServiceAccountTokenPodNodeInfo,
//! beta and on by default in 1.30 and 1.31, GA and always on from 1.32);
//! without it, from the pod the `pod-name` extra names (`pods get`, only
//! then). An answer is cached until the token expires, so an agent costs
//! one review per token, not one per reconnect.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use netaware_proto::TOKEN_AUDIENCE;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tonic::Status;
use tonic::metadata::MetadataMap;

/// `status.user.extra` keys of a pod-bound ServiceAccount token.
const EXTRA_NODE_NAME: &str = "authentication.kubernetes.io/node-name";
const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";

/// Longest token we send for review: a projected token is about 1 KiB;
/// anything near this is not one, and is refused without a review.
const MAX_TOKEN_BYTES: usize = 16 << 10;
/// An accepted answer is trusted at most this long, whatever the token's
/// own expiry says (an API server extending token lifetimes writes a year
/// there): the chart's tokens live 1 h.
const MAX_TRUST: Duration = Duration::from_secs(3600);
/// A refused token is not reviewed again for this long: a misconfigured
/// agent retrying every few seconds costs one review a minute.
const REFUSED_FOR: Duration = Duration::from_secs(60);
/// Reviews in flight at once; more wait (within the Hello timeout).
const MAX_CONCURRENT_REVIEWS: usize = 8;
/// Answers remembered; past this the expired ones go, then the refusals,
/// and a new answer is used without being cached.
const MAX_CACHED: usize = 16_384;

/// The ServiceAccount agents run as, `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
}

impl ServiceAccount {
    /// The user name Kubernetes gives this account's tokens.
    fn user(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }
}

impl std::fmt::Display for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl std::str::FromStr for ServiceAccount {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "'{s}' must be NAMESPACE/NAME of the agents' ServiceAccount, e.g. netaware/netaware-agent"
            )
        };
        let (namespace, name) = s.split_once('/').ok_or_else(bad)?;
        use netaware_model::labels::{is_dns_label, is_dns_subdomain};
        if !is_dns_label(namespace) || !is_dns_subdomain(name) {
            return Err(bad());
        }
        Ok(Self {
            namespace: namespace.into(),
            name: name.into(),
        })
    }
}

/// Why an agent session was refused. [`Denied::reason`] is the metric
/// label; the `Display` text goes back to the agent and into the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error(
        "no bearer token: the agent must send its projected ServiceAccount token (--token-file)"
    )]
    NoToken,
    #[error("the authorization metadata is not 'Bearer <token>' of at most 16 KiB")]
    Malformed,
    #[error("the API server did not accept the token: {0}")]
    Rejected(String),
    #[error(
        "the token is not for audience '{TOKEN_AUDIENCE}' (mount a projected token with that audience)"
    )]
    WrongAudience,
    #[error("the token belongs to '{user}', not to the agent ServiceAccount {expected}")]
    WrongServiceAccount { user: String, expected: String },
    #[error(
        "the token is not bound to a pod (a projected token is needed, not a Secret or TokenRequest without a pod)"
    )]
    NotPodBound,
    #[error("the token's pod {0}")]
    PodLookup(String),
    #[error("the token belongs to a pod on node '{token}', but the Hello speaks for '{hello}'")]
    NodeMismatch { token: String, hello: String },
    #[error("cannot review the token now: {0}")]
    Unavailable(String),
    #[error(
        "'{user}' may not {verb} {what}: bind it to the ClusterRole netaware-viewer (docs/install.md, Security)"
    )]
    Forbidden {
        user: String,
        verb: &'static str,
        what: &'static str,
    },
    #[error("node '{0}' is not among the cluster's Nodes (yet); retry once it is registered")]
    UnknownNode(String),
    #[error(
        "none of the probe addresses {given:?} is an InternalIP or ExternalIP of Node '{node}' (it has {own:?})"
    )]
    ForeignAddresses {
        node: String,
        given: Vec<String>,
        own: Vec<String>,
    },
}

impl Denied {
    /// Every `reason` label, so the metrics can start each series at 0 (a
    /// dashboard's rate() then reads 0, not "no data"). A new variant goes
    /// here too.
    pub fn reasons() -> [&'static str; 12] {
        let none = String::new;
        [
            Self::NoToken,
            Self::Malformed,
            Self::Rejected(none()),
            Self::WrongAudience,
            Self::WrongServiceAccount {
                user: none(),
                expected: none(),
            },
            Self::NotPodBound,
            Self::PodLookup(none()),
            Self::NodeMismatch {
                token: none(),
                hello: none(),
            },
            Self::Unavailable(none()),
            Self::Forbidden {
                user: none(),
                verb: "",
                what: "",
            },
            Self::UnknownNode(none()),
            Self::ForeignAddresses {
                node: none(),
                given: Vec::new(),
                own: Vec::new(),
            },
        ]
        .map(|d| d.reason())
    }

    /// The `reason` label of `netaware_agent_sessions_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoToken => "no_token",
            Self::Malformed => "malformed_token",
            Self::Rejected(_) => "invalid_token",
            Self::WrongAudience => "wrong_audience",
            Self::WrongServiceAccount { .. } => "wrong_service_account",
            Self::NotPodBound => "not_pod_bound",
            Self::PodLookup(_) => "pod_lookup",
            Self::NodeMismatch { .. } => "node_mismatch",
            Self::Unavailable(_) => "review_unavailable",
            Self::UnknownNode(_) => "unknown_node",
            Self::ForeignAddresses { .. } => "foreign_address",
            Self::Forbidden { .. } => "forbidden",
        }
    }

    /// The gRPC status: who you are not proven (UNAUTHENTICATED), what you
    /// may not do (PERMISSION_DENIED), or try again (UNAVAILABLE).
    pub fn status(&self) -> Status {
        let msg = self.to_string();
        match self {
            Self::NoToken | Self::Malformed | Self::Rejected(_) | Self::WrongAudience => {
                Status::unauthenticated(msg)
            }
            Self::Unavailable(_) | Self::UnknownNode(_) => Status::unavailable(msg),
            Self::WrongServiceAccount { .. }
            | Self::NotPodBound
            | Self::PodLookup(_)
            | Self::NodeMismatch { .. }
            | Self::ForeignAddresses { .. }
            | Self::Forbidden { .. } => Status::permission_denied(msg),
        }
    }

    /// Whether the same token would get the same answer later (cached), or
    /// the cause may pass (an API server away, a pod not yet visible).
    fn lasting(&self) -> bool {
        !matches!(self, Self::Unavailable(_) | Self::PodLookup(_))
    }
}

/// The addresses of a Hello that peers may probe: those among the Node's
/// InternalIP and ExternalIP addresses (the review's S5: a Hello must not
/// aim every agent's probes and bandwidth tests at an address of its
/// choosing). The others are returned apart, to be counted and logged; if
/// none is the Node's, the Hello is refused.
pub fn own_addresses(
    node: &k8s_openapi::api::core::v1::Node,
    given: &[String],
) -> Result<(Vec<String>, Vec<String>), Denied> {
    let own: Vec<std::net::IpAddr> = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    let (kept, dropped): (Vec<String>, Vec<String>) = given
        .iter()
        .cloned()
        .partition(|a| a.parse().is_ok_and(|ip| own.contains(&ip)));
    if kept.is_empty() {
        return Err(Denied::ForeignAddresses {
            node: node.metadata.name.clone().unwrap_or_default(),
            given: given.to_vec(),
            own: own.iter().map(ToString::to_string).collect(),
        });
    }
    Ok((kept, dropped))
}

/// A reviewed agent: the node it may speak for, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub node: String,
    pub pod: String,
    /// The session is closed then, and the agent reconnects with the token
    /// the kubelet has rotated in meanwhile.
    pub valid_until: Instant,
}

/// What the review says, before the node is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Claims {
    pod: String,
    pod_uid: Option<String>,
    node: Option<String>,
}

/// The bearer token of a request's metadata.
pub fn bearer(metadata: &MetadataMap) -> Result<&str, Denied> {
    let value = metadata.get("authorization").ok_or(Denied::NoToken)?;
    let text = value.to_str().map_err(|_| Denied::Malformed)?;
    let token = text
        .strip_prefix("Bearer ")
        .map(str::trim)
        .ok_or(Denied::Malformed)?;
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err(Denied::Malformed);
    }
    Ok(token)
}

/// What the API server says of `token` for `audience` (its own audiences
/// when `None`).
async fn token_review(
    client: &kube::Client,
    token: &str,
    audience: Option<&str>,
) -> Result<TokenReviewStatus, Denied> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token.to_string(),
            audiences: audience.map(|a| vec![a.to_string()]),
        },
        ..TokenReview::default()
    };
    Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map(|r| r.status.unwrap_or_default())
        .map_err(|e| Denied::Unavailable(format!("TokenReview failed: {e}")))
}

/// Check a review's answer against the agent ServiceAccount.
fn claims(status: &TokenReviewStatus, expected: &ServiceAccount) -> Result<Claims, Denied> {
    if status.authenticated != Some(true) {
        let error = status.error.clone().unwrap_or_default();
        // The API server names a token minted for other audiences so; the
        // agent's operator needs that, not just "invalid".
        if error.contains("audience") {
            return Err(Denied::WrongAudience);
        }
        return Err(Denied::Rejected(if error.is_empty() {
            "not authenticated".into()
        } else {
            error
        }));
    }
    // An authenticator that ignores audiences answers without any: such a
    // token would be valid for the API server itself, not for us.
    if !status
        .audiences
        .as_ref()
        .is_some_and(|a| a.iter().any(|a| a == TOKEN_AUDIENCE))
    {
        return Err(Denied::WrongAudience);
    }
    let user = status.user.as_ref();
    let name = user.and_then(|u| u.username.clone()).unwrap_or_default();
    if name != expected.user() {
        return Err(Denied::WrongServiceAccount {
            user: name,
            expected: expected.to_string(),
        });
    }
    let extra = |key: &str| -> Option<String> {
        user?
            .extra
            .as_ref()?
            .get(key)?
            .first()
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let pod = extra(EXTRA_POD_NAME).ok_or(Denied::NotPodBound)?;
    Ok(Claims {
        pod,
        pod_uid: extra(EXTRA_POD_UID),
        node: extra(EXTRA_NODE_NAME),
    })
}

/// How long to trust a token, from its own `exp` (and the
/// `kubernetes.io.warnafter` an API server that extends lifetimes adds),
/// capped at [`MAX_TRUST`]. Only read after the API server accepted the
/// token, so the unverified payload is the server's.
fn trust_for(token: &str, now_unix: i64) -> Duration {
    let payload = token
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    let Some(payload) = payload else {
        return MAX_TRUST;
    };
    let exp = payload["exp"].as_i64();
    let warn = payload["kubernetes.io"]["warnafter"].as_i64();
    let until = match (exp, warn) {
        (Some(e), Some(w)) => e.min(w),
        (Some(t), None) | (None, Some(t)) => t,
        (None, None) => return MAX_TRUST,
    };
    let left = u64::try_from(until.saturating_sub(now_unix)).unwrap_or(0);
    Duration::from_secs(left).min(MAX_TRUST)
}

#[derive(Debug)]
struct Cached<T = Agent> {
    answer: Result<T, Denied>,
    until: Instant,
}

/// Answers by token digest (the tokens themselves are not kept).
#[derive(Debug, Default)]
struct Cache {
    answers: HashMap<[u8; 32], Cached>,
}

impl Cache {
    fn get(&mut self, key: &[u8; 32], now: Instant) -> Option<Result<Agent, Denied>> {
        match self.answers.get(key) {
            Some(c) if now < c.until => Some(c.answer.clone()),
            Some(_) => {
                self.answers.remove(key);
                None
            }
            None => None,
        }
    }

    fn put(&mut self, key: [u8; 32], answer: Result<Agent, Denied>, until: Instant, now: Instant) {
        if self.answers.len() >= MAX_CACHED {
            self.answers.retain(|_, c| now < c.until);
        }
        if self.answers.len() >= MAX_CACHED {
            self.answers.retain(|_, c| c.answer.is_ok());
        }
        if self.answers.len() < MAX_CACHED {
            self.answers.insert(key, Cached { answer, until });
        }
    }
}

/// Reviews agent tokens with the API server (needs `create tokenreviews`,
/// and `get pods` on clusters whose tokens carry no node name).
pub struct Reviewer {
    client: kube::Client,
    agents: ServiceAccount,
    cache: Mutex<Cache>,
    slots: Semaphore,
    reviews: prometheus_client::metrics::counter::Counter,
}

impl std::fmt::Debug for Reviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reviewer")
            .field("agents", &self.agents)
            .finish_non_exhaustive()
    }
}

impl Reviewer {
    pub fn new(
        client: kube::Client,
        agents: ServiceAccount,
        reviews: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        Self {
            client,
            agents,
            cache: Mutex::default(),
            slots: Semaphore::new(MAX_CONCURRENT_REVIEWS),
            reviews,
        }
    }

    /// The agent `token` belongs to: from the cache, else reviewed now.
    pub async fn agent(&self, token: &str, now: Instant, now_unix: i64) -> Result<Agent, Denied> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(answer) = self.cache().get(&key, now) {
            return answer;
        }
        let answer = self.review(token, now, now_unix).await;
        let until = match &answer {
            Ok(a) => Some(a.valid_until),
            Err(d) if d.lasting() => Some(now + REFUSED_FOR),
            Err(_) => None,
        };
        if let Some(until) = until {
            self.cache().put(key, answer.clone(), until, now);
        }
        answer
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn review(&self, token: &str, now: Instant, now_unix: i64) -> Result<Agent, Denied> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| Denied::Unavailable("shutting down".into()))?;
        self.reviews.inc();
        let status = token_review(&self.client, token, Some(TOKEN_AUDIENCE)).await?;
        let claims = claims(&status, &self.agents)?;
        let node = match claims.node {
            Some(node) => node,
            None => {
                self.node_of_pod(&claims.pod, claims.pod_uid.as_deref())
                    .await?
            }
        };
        let trust = trust_for(token, now_unix);
        // One line per token (an hour at most): what reviews cost is
        // countable from the log too.
        tracing::info!(%node, pod = %claims.pod, trusted_s = trust.as_secs(), "agent token reviewed");
        Ok(Agent {
            node,
            pod: claims.pod,
            valid_until: now + trust,
        })
    }

    /// The node of the agent pod `name` (clusters whose tokens carry no
    /// node name), checking it is the very pod the token was issued to.
    async fn node_of_pod(&self, name: &str, uid: Option<&str>) -> Result<String, Denied> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), &self.agents.namespace);
        let pod = pods
            .get_opt(name)
            .await
            .map_err(|e| {
                Denied::PodLookup(format!(
                    "{}/{name} cannot be read ({e}); this cluster's tokens carry no node name, so the chart needs agent.auth.podLookup=true",
                    self.agents.namespace
                ))
            })?
            .ok_or_else(|| Denied::PodLookup(format!("{}/{name} does not exist", self.agents.namespace)))?;
        if uid.is_some() && pod.metadata.uid.as_deref() != uid {
            return Err(Denied::PodLookup(format!(
                "{}/{name} is another pod than the token's (uid differs)",
                self.agents.namespace
            )));
        }
        pod.spec
            .and_then(|s| s.node_name)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                Denied::PodLookup(format!(
                    "{}/{name} is not scheduled to a node",
                    self.agents.namespace
                ))
            })
    }
}

/// What a query asks to do, as Kubernetes authorization sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// GetMatrix, GetNode, ListGroups, WatchLinks: `get` on `nodes` (the
    /// matrix describes Nodes; whoever may read them may read it).
    Read,
    /// Place: `create` on the non-resource URL [`PLACE_PATH`].
    Place,
}

/// The non-resource URL whose `create` permits Place.
pub const PLACE_PATH: &str = "/netaware/place";

impl Access {
    fn verb(self) -> &'static str {
        match self {
            Self::Read => "get",
            Self::Place => "create",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Self::Read => "nodes (the matrix, nodes and groups)",
            Self::Place => "/netaware/place (Place)",
        }
    }

    fn attributes(self) -> SubjectAccessReviewSpec {
        let mut spec = SubjectAccessReviewSpec::default();
        match self {
            Self::Read => {
                spec.resource_attributes = Some(ResourceAttributes {
                    verb: Some("get".into()),
                    resource: Some("nodes".into()),
                    ..ResourceAttributes::default()
                });
            }
            Self::Place => {
                spec.non_resource_attributes = Some(NonResourceAttributes {
                    verb: Some("create".into()),
                    path: Some(PLACE_PATH.into()),
                });
            }
        }
        spec
    }
}

/// How long a query's answer (allowed or not) is reused: short, so a
/// revoked binding takes effect soon, long enough that a CLI command's
/// few calls cost one review.
const QUERY_ANSWER_FOR: Duration = Duration::from_secs(30);

/// Query answers (the user, or why not) by token digest and access.
type QueryAnswers = HashMap<([u8; 32], Access), Cached<String>>;

/// Authenticates queries with the API server (TokenReview of a Kubernetes
/// credential, as kubectl sends it) and authorizes them
/// (SubjectAccessReview); needs `create` on both.
pub struct Queriers {
    client: kube::Client,
    cache: Mutex<QueryAnswers>,
    slots: Semaphore,
    reviews: prometheus_client::metrics::counter::Counter,
}

impl std::fmt::Debug for Queriers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queriers").finish_non_exhaustive()
    }
}

impl Queriers {
    pub fn new(
        client: kube::Client,
        reviews: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        Self {
            client,
            cache: Mutex::default(),
            slots: Semaphore::new(MAX_CONCURRENT_REVIEWS),
            reviews,
        }
    }

    /// The user `token` belongs to, if it may do `access`.
    pub async fn allow(&self, token: &str, access: Access, now: Instant) -> Result<String, Denied> {
        let key = (<[u8; 32]>::from(Sha256::digest(token.as_bytes())), access);
        {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            match cache.get(&key) {
                Some(c) if now < c.until => return c.answer.clone(),
                Some(_) => {
                    cache.remove(&key);
                }
                None => {}
            }
        }
        let answer = self.review(token, access).await;
        if !matches!(answer, Err(Denied::Unavailable(_))) {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= MAX_CACHED {
                cache.retain(|_, c| now < c.until);
            }
            if cache.len() < MAX_CACHED {
                cache.insert(
                    key,
                    Cached {
                        answer: answer.clone(),
                        until: now + QUERY_ANSWER_FOR,
                    },
                );
            }
        }
        answer
    }

    async fn review(&self, token: &str, access: Access) -> Result<String, Denied> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| Denied::Unavailable("shutting down".into()))?;
        self.reviews.inc();
        // No audience: the token is a Kubernetes credential (what kubectl
        // sends), valid for the API server's own audiences.
        let status = token_review(&self.client, token, None).await?;
        if status.authenticated != Some(true) {
            return Err(Denied::Rejected(
                status
                    .error
                    .filter(|e| !e.is_empty())
                    .unwrap_or_else(|| "not authenticated".into()),
            ));
        }
        let user = status.user.unwrap_or_default();
        let name = user.username.clone().unwrap_or_default();
        let mut spec = access.attributes();
        spec.user = user.username;
        spec.groups = user.groups;
        spec.uid = user.uid;
        spec.extra = user.extra;
        let sar = SubjectAccessReview {
            spec,
            ..SubjectAccessReview::default()
        };
        let allowed = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &sar)
            .await
            .map_err(|e| Denied::Unavailable(format!("SubjectAccessReview failed: {e}")))?
            .status
            .is_some_and(|s| s.allowed);
        if !allowed {
            return Err(Denied::Forbidden {
                user: name,
                verb: access.verb(),
                what: access.what(),
            });
        }
        Ok(name)
    }
}

#[cfg(test)]
mod tests;
