//! The agent's error type.

/// Everything that can go wrong in the agent library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid setting {name}: {message}")]
    Config { name: &'static str, message: String },
    #[error("malformed packet: {0}")]
    Packet(String),
    #[error(transparent)]
    Histogram(#[from] netaware_proto::histogram::HistogramError),
    #[error("cannot bind the STAMP reflector to {addr}: {source}")]
    BindReflector {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "cannot bind the bandwidth-test server to {addr}: {source} (another process on the port? set NETAWARE_BANDWIDTH_PORT, or 0 to turn tests off)"
    )]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("aggregator connection: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("aggregator session: {0}")]
    Status(#[from] tonic::Status),
    #[error("aggregator closed the session: {0}")]
    SessionClosed(String),
}

/// Result alias for the agent library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
