//! Certificates for the admission webhook: generate a CA and serving certificate
//! ([`generate`]), read PEM certificates and keys ([`pem`]), serve them through a hot-swappable rustls resolver ([`resolver`]), store them
//! in a Secret with a single-writer protocol ([`store`]), decide rotations ([`rotation`]),
//! inject the CA bundle into webhook configurations and the CRD ([`inject`]), and run it all
//! ([`manager`]).
#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod generate;
pub mod inject;
pub mod manager;
pub mod metrics;
pub mod pem;
pub mod resolver;
pub mod rotation;
pub mod store;

pub use config::CertConfig;
pub use error::{CertError, PolicyError, StoreError};
pub use manager::{CertManager, Readiness};
pub use metrics::CertMetrics;
pub use resolver::{ReloadOutcome, ReloadingResolver};
