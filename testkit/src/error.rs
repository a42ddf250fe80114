//! Errors of the test harness; every message says what failed and where to look.
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while attaching to the cluster, preparing a namespace or waiting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No ancestor of the test crate contains `deploy/local/up`.
    #[error("cannot find the repository root (a directory containing deploy/local/up) above {0}")]
    RepoRootNotFound(PathBuf),
    /// The kubeconfig could not be read or does not describe a usable cluster.
    #[error("failed to load kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// A client could not be built from the kubeconfig.
    #[error("failed to build a Kubernetes client from {path}: {source}")]
    Client {
        path: PathBuf,
        #[source]
        source: kube::Error,
    },
    /// The kubeconfig exists but the API server does not answer.
    #[error("the API server of {path} does not answer: {reason}")]
    Unreachable { path: PathBuf, reason: String },
    /// `deploy/local/up` could not be run or failed.
    #[error("`{command}` failed: {reason} (component logs: {log_dir})")]
    StartCluster {
        command: String,
        reason: String,
        log_dir: PathBuf,
    },
    /// An API call made by the harness itself failed.
    #[error("{context}: {source}")]
    Api {
        context: String,
        #[source]
        source: kube::Error,
    },
    /// A wait ran out of time.
    #[error("timed out after {waited:?} waiting for {what}; last observed: {last_observed}")]
    Timeout {
        what: String,
        waited: Duration,
        last_observed: String,
    },
}
