//! The `Database` reconciler: turns a `Database` custom resource into running infrastructure
//! (credentials Secret, config ConfigMap, StatefulSet, Services, backup CronJob) and reports the
//! observed truth back into its status.
//!
//! Data flows one way: `watch caches -> observe -> plan -> apply -> status`. `observe` reads the
//! caches, `plan` (with `desired`, `engine`, `status`, `guard`, `drift`) is pure and table-tested,
//! and only `apply`, `cleanup`, `context`, `leader` and `controller` talk to the API server.
#![forbid(unsafe_code)]

pub mod apply;
pub mod backoff;
pub mod cleanup;
pub mod client;
pub mod context;
pub mod controller;
pub mod desired;
pub mod drift;
pub mod engine;
pub mod error;
pub mod guard;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod ownership;
pub mod plan;
pub mod reconcile;
pub mod status;

pub use error::Error;

/// The one field manager used for every server-side apply this controller makes.
pub const FIELD_MANAGER: &str = "db-operator";
/// Finalizer that drives ordered cleanup when a Database is deleted.
pub const FINALIZER: &str = "example.com/database-cleanup";

/// Patch parameters for the (non-apply) patches this controller makes: same field manager.
pub fn manager_patch_params() -> kube::api::PatchParams {
    kube::api::PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    }
}
