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
    #[error("measurement: {0}")]
    Agent(#[from] netaware_agent::Error),
}

/// Result alias for the lab library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
