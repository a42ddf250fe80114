//! `example.com/v1beta1`: the previous API shape, kept so old manifests keep working.
//!
//! Compared with v1 it has no `storageClassName` and no `config`. Converting v1 to v1beta1 stashes
//! the v1 spec in the [`crate::conversion::ANNOTATION_V1_SPEC`] annotation so that v1 -> v1beta1 ->
//! v1 is lossless (see [`crate::conversion`]).

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::v1::{DatabaseStatus, Engine, Phase};

/// Desired state of a managed database (v1beta1 shape).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "example.com",
    version = "v1beta1",
    kind = "Database",
    plural = "databases",
    shortname = "db",
    namespaced,
    status = "DatabaseStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// Database engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<Engine>,
    /// Number of database instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Engine version as `x.y.z`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Volume size per replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_size: Option<Quantity>,
    /// Backup schedule in CronJob syntax.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_schedule: Option<String>,
    /// Compute resources per container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}
