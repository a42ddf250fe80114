//! Certificates for the admission webhook: generate a CA and serving certificate
//! ([`generate`]), serve them through a hot-swappable rustls resolver ([`resolver`]), store them
//! in a Secret with a single-writer protocol ([`store`]), decide rotations ([`rotation`]),
//! inject the CA bundle into webhook configurations and the CRD ([`inject`]), and run it all
//! ([`manager`]).
#![forbid(unsafe_code)]

pub mod error;
pub mod generate;
pub mod inject;
pub mod resolver;
pub mod rotation;
pub mod store;

pub use error::{CertError, StoreError};
pub use resolver::{ReloadOutcome, ReloadingResolver};
