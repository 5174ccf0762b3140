//! The lab's error type.

/// Everything that can go wrong in the lab library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("topology {path}: {message}")]
    Topology { path: String, message: String },
    #[error("{0}")]
    Preflight(String),
    #[error("command `{command}` failed: {message}")]
    Command { command: String, message: String },
    #[error("{0}")]
    Run(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("aggregator query: {0}")]
    Status(#[from] tonic::Status),
    #[error("aggregator connection: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error(transparent)]
    Histogram(#[from] netaware_proto::histogram::HistogramError),
    #[error("cannot merge the RTT histograms of one link: {0:?}")]
    HistogramMerge(hdrhistogram::AdditionError),
    #[error("placement: {0}")]
    Model(#[from] netaware_model::Error),
}

/// Result alias for the lab library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
