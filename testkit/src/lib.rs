//! Integration-test harness for the local Kubernetes control plane of `deploy/local`.
//!
//! Every integration test (admission, certs, reconciler) stands on this crate:
//!
//! * [`cluster()`] attaches to the running local cluster (the admin kubeconfig `.local/kubeconfig`
//!   at the repository root, or the file named by `DBOP_KUBECONFIG`), or starts one by running
//!   `deploy/local/up` once (that script holds a file lock, so parallel test binaries never start
//!   two clusters). The handle is shared by all tests of a binary.
//! * [`Cluster::namespace`] gives each test a fresh, uniquely named namespace with a
//!   [`kube::Client`]; it is deleted by [`TestNamespace::cleanup`] or, as a fallback, on drop.
//!   Namespaces carry the label `app.kubernetes.io/managed-by=testkit`, so leftovers can be
//!   removed with `kubectl delete ns -l app.kubernetes.io/managed-by=testkit`.
//! * [`wait_for`] and [`await_condition`] poll with a deadline and fail with a message that says
//!   what was awaited and what was last observed.
//! * When a wait times out, or a test panics while holding a [`TestNamespace`], the tails of the
//!   component logs in `.local/logs/` are printed to stderr (see [`dump_logs`]).
//!
//! Environment: `DBOP_KUBECONFIG` (use this cluster, never start one), `DBOP_LOG_TAIL_LINES`
//! (lines per log in dumps, default 40), `DBOP_KEEP_NAMESPACES=1` (keep namespaces for debugging).
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use kube::api::{Api, PostParams};
//! use testkit::{cluster, wait_for, NotYet};
//!
//! #[tokio::test]
//! async fn config_map_is_stored() {
//!     let ns = cluster().await.unwrap().namespace("configmap").await.unwrap();
//!     let cms: Api<ConfigMap> = ns.api();
//!     let mut cm = ConfigMap::default();
//!     cm.metadata.name = Some("demo".into());
//!     cms.create(&PostParams::default(), &cm).await.unwrap();
//!
//!     let stored = wait_for(Duration::from_secs(10), "ConfigMap demo to be readable", || async {
//!         cms.get_opt("demo").await?.ok_or_else(|| NotYet::new("absent"))
//!     })
//!     .await
//!     .unwrap();
//!     assert_eq!(stored.metadata.name.as_deref(), Some("demo"));
//!     ns.cleanup().await.unwrap();
//! }
//! # fn main() {}
//! ```
#![forbid(unsafe_code)]

mod cluster;
mod error;
mod logs;
mod namespace;
mod placement;
mod wait;

pub use cluster::{cluster, Cluster};
pub use error::Error;
pub use logs::dump_logs;
pub use namespace::{TestNamespace, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
pub use placement::{kwok_node_selector, kwok_tolerations, KWOK_NODE_LABEL};
pub use wait::{await_condition, wait_for, NotYet};
