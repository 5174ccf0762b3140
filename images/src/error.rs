//! The image builder's error type.

/// Everything that can go wrong building or checking an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("OCI document: {0}")]
    Oci(#[from] oci_spec::OciSpecError),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The image is not what the spec says; the message says how.
    #[error("image {image}: {problem}")]
    Check { image: String, problem: String },
}

/// Result alias for the image builder.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach the path to an I/O error.
pub(crate) fn io(path: impl Into<std::path::PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}
