//! The spec with defaults applied and parsed, for the reconciler. (Work in progress.)

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::catalog::Catalog;
use crate::v1::{self, Engine};
use crate::validation::FieldError;

/// A fully specified Database spec.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedSpec {
    /// Engine.
    pub engine: Engine,
    /// Replica count.
    pub replicas: i32,
    /// Engine version.
    pub version: semver::Version,
    /// Container image from the catalog.
    pub image: String,
    /// Volume size as written.
    pub storage_size: Quantity,
    /// Volume size in bytes.
    pub storage_bytes: u128,
    /// StorageClass.
    pub storage_class_name: Option<String>,
    /// Backup schedule.
    pub backup_schedule: Option<String>,
    /// Container resources.
    pub resources: Option<ResourceRequirements>,
    /// Engine configuration.
    pub config: BTreeMap<String, String>,
}

/// Resolves `db` against the catalog.
pub fn resolve(db: &v1::Database, catalog: &Catalog) -> Result<ResolvedSpec, Vec<FieldError>> {
    let _ = (db, catalog);
    Err(Vec::new())
}
