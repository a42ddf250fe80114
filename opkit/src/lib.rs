//! What the operator's binaries (`admission`, `reconciler`) share, so each exists once:
//!
//! - [`duration`]: the one duration syntax of every flag (jiff's "friendly" format);
//! - [`health`]: the small plain-HTTP `/healthz`, `/readyz`, `/metrics` server;
//! - [`shutdown`]: the future that resolves on SIGTERM or Ctrl-C.
#![forbid(unsafe_code)]

pub mod duration;
pub mod health;
pub mod shutdown;

pub use duration::{format_duration, parse_duration, DurationError};
