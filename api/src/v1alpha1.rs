//! `example.com/v1alpha1`: the first, experimental API shape (deprecated).
//!
//! Field mapping to v1 (from the design document's "API Versioning" section):
//!
//! | v1alpha1            | v1                 | conversion                                         |
//! |---------------------|--------------------|----------------------------------------------------|
//! | `size` (string)     | `replicas` (int)   | decimal string <-> integer                         |
//! | `dbVersion`         | `version`          | rename                                             |
//! | `storage` (string)  | `storageSize`      | rename                                             |
//! | `backup` (bool)     | `backupSchedule`   | `true` -> `@daily` unless the stash has a schedule |
//! | —                   | `engine`, `storageClassName`, `resources`, `config` | stashed in an annotation |
//!
//! There is no engine field: v1alpha1 objects without a stash convert to a v1 spec without an
//! engine, which defaulting turns into `postgres`.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::v1::{DatabaseStatus, Phase};

/// Desired state of a managed database (v1alpha1 shape).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "example.com",
    version = "v1alpha1",
    kind = "Database",
    plural = "databases",
    shortname = "db",
    namespaced,
    status = "DatabaseStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// Number of instances as a decimal string (`"3"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// Engine version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_version: Option<String>,
    /// Volume size per replica as a quantity string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// Whether daily backups are enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<bool>,
}
