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
    Tls(Box<crate::tls::TlsError>),

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
    #[error(transparent)]
    CertGen(Box<certs::CertError>),

    /// The certificate manager could not create or adopt the certificate Secret.
    #[error("certificate management failed: {0}")]
    Certs(Box<certs::StoreError>),
}

// Boxed so every `Result<_, Error>` stays small.
impl From<crate::tls::TlsError> for Error {
    fn from(error: crate::tls::TlsError) -> Self {
        Error::Tls(Box::new(error))
    }
}

impl From<certs::CertError> for Error {
    fn from(error: certs::CertError) -> Self {
        Error::CertGen(Box::new(error))
    }
}

impl From<certs::StoreError> for Error {
    fn from(error: certs::StoreError) -> Self {
        Error::Certs(Box::new(error))
    }
}
