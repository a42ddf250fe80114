//! Errors the admission binary reports at its edges (startup, TLS material, listening).
//!
//! Request-path problems never become these: they are answered with an HTTP status or an
//! AdmissionReview denial by [`crate::router`] and [`crate::review`].

use std::path::PathBuf;

/// Startup and serving errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A TLS certificate or key file could not be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),

    /// The catalog replacement file could not be read or parsed.
    #[error("failed to load catalog from {path}: {message}")]
    Catalog { path: PathBuf, message: String },

    /// The listen address could not be bound.
    #[error("failed to listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },

    /// Kubernetes client configuration was requested but could not be loaded.
    #[error("failed to configure the Kubernetes client: {0}")]
    Kube(String),

    /// Generic I/O error with context.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// Certificate generation failed.
    #[error("failed to generate certificate: {0}")]
    CertGen(#[from] rcgen::Error),
}
