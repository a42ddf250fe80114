//! Errors of the `certs` crate: certificate material problems (parse, mismatch, generation) are
//! [`CertError`]; Kubernetes interaction problems are [`StoreError`].

use std::path::PathBuf;

/// A problem with certificate material: reading, parsing, validating or generating it.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A certificate or key file could not be read.
    #[error("failed to read {path}: {source}")]
    Read {
        /// The file that could not be read.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A certificate or key file could not be written.
    #[error("failed to write {path}: {source}")]
    Write {
        /// The file that could not be written.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The PEM text is malformed (bad base64, missing END line, ...).
    #[error("{what}: malformed PEM: {source}")]
    Pem {
        /// Where the PEM came from (a path or "in-memory certificate").
        what: String,
        /// The PEM decoder error.
        source: rustls::pki_types::pem::Error,
    },
    /// No `CERTIFICATE` block was found.
    #[error("{what}: no PEM CERTIFICATE block found")]
    NoCertificate {
        /// Where the PEM came from.
        what: String,
    },
    /// No private key block was found.
    #[error("{what}: no private key found (expected a PKCS#8, SEC1 or PKCS#1 PEM block)")]
    NoPrivateKey {
        /// Where the PEM came from.
        what: String,
    },
    /// The private key could not be loaded by the ring crypto provider.
    #[error("{what}: unsupported or invalid private key: {source}")]
    UnsupportedKey {
        /// Where the PEM came from.
        what: String,
        /// The rustls error.
        source: rustls::Error,
    },
    /// The private key is valid but belongs to a different certificate.
    #[error("{what}: the private key does not match the certificate's public key")]
    KeyMismatch {
        /// Where the PEM came from.
        what: String,
    },
    /// The DER inside a CERTIFICATE block is not a valid X.509 certificate.
    #[error("{what}: invalid X.509 certificate: {message}")]
    InvalidCertificate {
        /// Where the PEM came from.
        what: String,
        /// The parser's message.
        message: String,
    },
    /// The certificate's validity period ended before now.
    #[error("{what}: certificate expired at {not_after} (now {now})")]
    Expired {
        /// Where the PEM came from.
        what: String,
        /// End of validity.
        not_after: jiff::Timestamp,
        /// The time it was checked at.
        now: jiff::Timestamp,
    },
    /// The certificate's validity period starts after now (clock skew, or a wrong clock).
    #[error("{what}: certificate is not valid before {not_before} (now {now})")]
    NotYetValid {
        /// Where the PEM came from.
        what: String,
        /// Start of validity.
        not_before: jiff::Timestamp,
        /// The time it was checked at.
        now: jiff::Timestamp,
    },
    /// rcgen failed to build or sign a certificate.
    #[error("failed to generate certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A validity period does not fit in a timestamp.
    #[error("invalid validity period: {0}")]
    Validity(String),
}

/// Certificate timing flags that cannot work together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid certificate rotation flags: {}", problems.join("; "))]
pub struct PolicyError {
    /// Each problem, with how to fix it.
    pub problems: Vec<String>,
}

/// A problem talking to the Kubernetes API or with the state stored there.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A Kubernetes API call failed.
    #[error("failed to {action} {kind} {name}: {source}")]
    Kube {
        /// What we tried (get, create, replace, apply, ...).
        action: &'static str,
        /// Resource kind.
        kind: &'static str,
        /// Resource name (namespace/name when namespaced).
        name: String,
        /// The kube error.
        source: Box<kube::Error>,
    },
    /// Certificate material in the Secret or generated for it is unusable.
    #[error("certificate material for Secret {name}: {source}")]
    Material {
        /// Secret namespace/name.
        name: String,
        /// The certificate error.
        source: CertError,
    },
    /// The rotation flags cannot work together; nothing is written.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// No stable state within a bounded number of steps (e.g. another writer keeps winning).
    #[error("gave up converging Secret {name}: {attempts} writes lost to other writers without settling")]
    TooManyConflicts {
        /// Secret namespace/name.
        name: String,
        /// Attempts made.
        attempts: u32,
    },
}

impl StoreError {
    /// A short, stable label for metrics and log fields.
    pub fn metric_label(&self) -> &'static str {
        match self {
            StoreError::Kube { .. } => "kube",
            StoreError::Material { .. } => "material",
            StoreError::TooManyConflicts { .. } => "conflicts",
            StoreError::Policy(_) => "policy",
        }
    }
}
