//! The aggregator's error type.

/// Everything that can go wrong in the aggregator library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid setting {name}: {message}")]
    Config { name: &'static str, message: String },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("Kubernetes client: {0}")]
    Kube(String),
    /// Leader election could not start or failed for good.
    #[error("leader election: {0}")]
    Election(String),
    /// This replica was the leader and no longer is; it must stop at once.
    #[error("lost leadership: {0}; exiting so this replica restarts as a follower")]
    LeadershipLost(String),
    /// A certificate or key that cannot be used; the message names the files.
    #[error("TLS: {0}")]
    Tls(String),
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Result alias for the aggregator library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
