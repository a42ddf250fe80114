//! The admission server for `example.com` Databases: AdmissionReview in, decision out.
//!
//! This crate is a thin HTTPS adapter over the rules in the `api` crate. The layers, from the
//! wire inwards:
//!
//! - [`server`]: TCP accept loop, TLS (through a swappable `ResolvesServerCert`), HTTP/1.1 and
//!   HTTP/2 via ALPN, connection-level timeouts and graceful shutdown.
//! - [`router`]: method/path/content-type/body-size checks and request timeouts; maps every
//!   input to a status code, never panics.
//! - [`review`] and [`conversion`]: decode AdmissionReview / ConversionReview bodies, call the
//!   `api` rules, encode the responses.
//! - [`metrics`], [`namespaces`], [`logging`]: observability and the namespace cache that feeds
//!   the production-replicas default.
//!
//! The binary (`src/main.rs`) adds the `serve`, `check` and `dev-cert` subcommands.
#![forbid(unsafe_code)]

pub mod catalog_view;
pub mod check;
pub mod cli;
pub mod conversion;
pub mod devcert;
pub mod error;
pub mod fuzzing;
pub mod logging;
pub mod metrics;
pub mod namespaces;
pub mod review;
pub mod router;
pub mod server;
pub mod tls;

pub use error::Error;
pub use router::{Admission, Limits};
pub use server::{serve, ServerHandle};
