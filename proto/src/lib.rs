//! The netaware wire contract: message types and gRPC stubs for package
//! `netaware.v1`, generated at build time from `proto/netaware/v1/netaware.proto`,
//! and the codec of the RTT histograms the windows carry ([`histogram`]).
//!
//! The .proto file is the documentation of every message and field. The gRPC
//! stubs come with the default `grpc` feature; without it the crate has the
//! messages only (what the pure `netaware-model` crate uses).

#![allow(missing_docs, missing_debug_implementations)]

/// Package `netaware.v1`.
pub mod v1 {
    #![allow(
        clippy::all,
        clippy::pedantic,
        clippy::unwrap_used,
        clippy::expect_used
    )]
    include!(concat!(env!("OUT_DIR"), "/netaware.v1.rs"));
}

pub mod histogram;

/// The trait of every message (`encoded_len`, `encode`), so that users size
/// messages against [`limits`] with the prost this crate was built with.
pub use prost::Message;
pub use v1::ProbeMethod;

impl v1::ProbeMethod {
    /// Short lower-case name used in tables, JSON reports and CLI flags.
    pub fn short_name(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::StampUdp => "udp",
            Self::IcmpEcho => "icmp",
            Self::TcpThroughput => "tcp",
        }
    }

    /// Inverse of [`short_name`](Self::short_name).
    pub fn from_short_name(name: &str) -> Option<Self> {
        match name {
            "udp" => Some(Self::StampUdp),
            "icmp" => Some(Self::IcmpEcho),
            "tcp" => Some(Self::TcpThroughput),
            _ => None,
        }
    }
}

impl v1::GetMatrixResponse {
    /// The link from `src` to `dst` (the first method found), if measured.
    pub fn link(&self, src: &str, dst: &str) -> Option<&v1::LinkState> {
        self.links.iter().find(|l| l.src == src && l.dst == dst)
    }
}

/// Connections to the aggregator, for the agent and the CLI.
#[cfg(feature = "grpc")]
pub mod client {
    use std::path::Path;

    use tonic::metadata::{Ascii, MetadataValue};
    use tonic::service::interceptor::InterceptedService;
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

    use crate::v1::query_service_client::QueryServiceClient;

    /// A query client that sends a bearer token with every call.
    pub type QueryClient = QueryServiceClient<InterceptedService<Channel, Bearer>>;

    /// Adds `authorization: Bearer <token>` to every call (nothing without
    /// a token).
    #[derive(Clone, Default)]
    pub struct Bearer(Option<MetadataValue<Ascii>>);

    impl Bearer {
        /// The interceptor for `token`; an error if it cannot be a header.
        pub fn new(token: Option<&str>) -> Result<Self, String> {
            token
                .map(|t| {
                    format!("Bearer {}", t.trim())
                        .parse()
                        .map_err(|_| "the token holds characters a token cannot have".to_string())
                })
                .transpose()
                .map(Self)
        }
    }

    impl std::fmt::Debug for Bearer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(if self.0.is_some() {
                "Bearer(set)"
            } else {
                "Bearer(none)"
            })
        }
    }

    impl tonic::service::Interceptor for Bearer {
        fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
            if let Some(v) = &self.0 {
                r.metadata_mut().insert("authorization", v.clone());
            }
            Ok(r)
        }
    }

    /// An endpoint for `uri`. `https://` verifies the aggregator's
    /// certificate against the PEM bundle in `ca_file`, read now (call this
    /// for every connection and a renewed CA is picked up); `http://` is
    /// plain text. The host name in `uri` must be in the certificate.
    pub fn endpoint(uri: &str, ca_file: Option<&Path>) -> Result<Endpoint, String> {
        let endpoint = Endpoint::from_shared(uri.to_string())
            .map_err(|e| format!("'{uri}' is not a valid URI: {e}"))?;
        if !uri.starts_with("https://") {
            return Ok(endpoint);
        }
        let ca_file = ca_file.ok_or_else(|| {
            format!("'{uri}' is https: give the CA bundle that signed the aggregator's certificate (--ca-file)")
        })?;
        let pem = std::fs::read(ca_file)
            .map_err(|e| format!("cannot read the CA bundle {}: {e}", ca_file.display()))?;
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
            return Err(format!(
                "the CA bundle {} holds no PEM certificate",
                ca_file.display()
            ));
        }
        endpoint
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
            .map_err(|e| format!("TLS settings for '{uri}': {e}"))
    }
}

/// Port of `AgentService`, where agents connect to the aggregator.
pub const AGENT_PORT: u16 = 7400;
/// Port of `QueryService`, where the CLI connects to the aggregator.
pub const QUERY_PORT: u16 = 7401;

/// Audience of the ServiceAccount tokens agents present on `Session`: the
/// chart's projected token asks for it, the aggregator's TokenReview
/// requires it, so a token minted for another service is refused here.
pub const TOKEN_AUDIENCE: &str = "netaware";

/// Wire protocol version spoken by this crate (`Hello.protocol_version`).
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest encoded message each side sends and accepts, set explicitly on
/// every server and client so that a limit is a decision, not a library
/// default, and an error can name it.
pub mod limits {
    /// An agent's message (a report batch, a bandwidth result). The agent
    /// splits its batches below [`MAX_BATCH_BYTES`], so this leaves room.
    pub const MAX_AGENT_MESSAGE_BYTES: usize = 4 << 20;
    /// A report batch as the agent sends it: windows beyond this go into
    /// the next batch. A window is about 200 bytes, so this is thousands of
    /// windows, more than a minute of a large mesh.
    pub const MAX_BATCH_BYTES: usize = 1 << 20;
    /// The aggregator's message to an agent (a plan: about 80 bytes a peer,
    /// so 4 MiB holds a plan for 50,000 peers).
    pub const MAX_AGGREGATOR_MESSAGE_BYTES: usize = 4 << 20;
    /// A query request (Place names at most 10,000 nodes in each list).
    pub const MAX_QUERY_REQUEST_BYTES: usize = 4 << 20;
    /// A query answer (GetMatrix: about 130 bytes a link without its
    /// histogram, so 64 MiB is about 500,000 links, 700 nodes in full mesh
    /// with one method).
    pub const MAX_QUERY_RESPONSE_BYTES: usize = 64 << 20;
}
