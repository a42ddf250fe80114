//! The spec with defaults applied and parsed, for the reconciler.
//!
//! [`resolve`] applies exactly the webhook's defaults (via [`crate::defaulting`], without the
//! production-namespace rule, which needs cluster context), re-checks every single-object rule of
//! [`crate::validation`] (the webhook can be bypassed), and returns concrete values. Transition
//! rules (no shrink, no downgrade) need the previous state; the reconciler compares against what
//! it observes in the cluster.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::catalog::Catalog;
use crate::defaulting::{default_patch, DefaultingContext};
use crate::quantity;
use crate::v1::{self, Engine};
use crate::validation::{self, parse_version, FieldError};

/// A fully specified Database spec.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedSpec {
    /// Engine.
    pub engine: Engine,
    /// Replica count (1..=10).
    pub replicas: i32,
    /// Engine version, supported by the catalog.
    pub version: semver::Version,
    /// Container image from the catalog.
    pub image: String,
    /// Volume size as written.
    pub storage_size: Quantity,
    /// Volume size in bytes.
    pub storage_bytes: u128,
    /// StorageClass; the cluster default when `None`.
    pub storage_class_name: Option<String>,
    /// Backup schedule (CronJob syntax, validated).
    pub backup_schedule: Option<String>,
    /// Container resources with default requests filled in.
    pub resources: Option<ResourceRequirements>,
    /// Engine configuration (validated; empty when unset).
    pub config: BTreeMap<String, String>,
    /// Pod placement (validated; every field `None` when unset), for the pod templates.
    pub scheduling: v1::Scheduling,
}

impl ResolvedSpec {
    /// The port the engine listens on.
    pub fn port(&self) -> i32 {
        self.engine.default_port()
    }
}

fn internal(message: String) -> Vec<FieldError> {
    vec![FieldError::new("spec", "", message)]
}

/// Resolves `db` against the catalog, or lists every field error that prevents it.
pub fn resolve(db: &v1::Database, catalog: &Catalog) -> Result<ResolvedSpec, Vec<FieldError>> {
    let mut raw = serde_json::to_value(db)
        .map_err(|e| internal(format!("cannot serialise the Database: {e}")))?;
    let patch = default_patch(&raw, catalog, &DefaultingContext::default());
    json_patch::patch(&mut raw, &patch)
        .map_err(|e| internal(format!("cannot apply defaults: {e}")))?;
    let defaulted: v1::Database = serde_json::from_value(raw)
        .map_err(|e| internal(format!("defaulted Database does not parse: {e}")))?;

    // Only warnings depend on "now"; a fixed instant keeps this pure.
    let verdict = validation::validate_at(&defaulted, None, catalog, Timestamp::UNIX_EPOCH);
    if !verdict.allowed() {
        return Err(verdict.errors);
    }
    let spec = defaulted.spec;
    let missing = |field: &str| internal(format!("{field} is missing after defaulting"));
    let engine = spec.engine.ok_or_else(|| missing("engine"))?;
    let replicas = spec.replicas.ok_or_else(|| missing("replicas"))?;
    let raw_version = spec.version.ok_or_else(|| missing("version"))?;
    let version = parse_version(&raw_version)
        .map_err(|m| vec![FieldError::new("spec.version", &raw_version, m)])?;
    let image = catalog.image(engine, &version).ok_or_else(|| {
        vec![FieldError::new(
            "spec.version",
            &raw_version,
            format!("{engine} {version} has no image in the catalog"),
        )]
    })?;
    let storage_size = spec.storage_size.ok_or_else(|| missing("storageSize"))?;
    let storage_bytes = quantity::parse_bytes(&storage_size).map_err(|e| {
        vec![FieldError::new(
            "spec.storageSize",
            &storage_size.0,
            e.to_string(),
        )]
    })?;
    Ok(ResolvedSpec {
        engine,
        replicas,
        version,
        image,
        storage_size,
        storage_bytes,
        storage_class_name: spec.storage_class_name,
        backup_schedule: spec.backup_schedule,
        resources: spec.resources,
        config: spec.config.unwrap_or_default(),
        scheduling: spec.scheduling.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::ObjectMeta;

    fn db(spec: v1::DatabaseSpec) -> v1::Database {
        v1::Database {
            metadata: ObjectMeta {
                name: Some("orders".into()),
                namespace: Some("shop".into()),
                ..Default::default()
            },
            spec,
            status: None,
        }
    }

    #[test]
    fn empty_spec_resolves_to_the_defaults() {
        let r = resolve(&db(v1::DatabaseSpec::default()), &Catalog::builtin()).unwrap();
        assert_eq!(r.engine, Engine::Postgres);
        assert_eq!(r.replicas, 1);
        assert_eq!(r.version.to_string(), "17.7.0");
        assert_eq!(r.image, "postgres:17.7");
        assert_eq!(r.storage_size.0, "10Gi");
        assert_eq!(r.storage_bytes, 10 << 30);
        assert_eq!(r.port(), 5432);
        let requests = r.resources.unwrap().requests.unwrap();
        assert_eq!(requests["cpu"].0, "100m");
        assert_eq!(requests["memory"].0, "256Mi");
        assert!(r.config.is_empty());
    }

    #[test]
    fn user_values_are_resolved_as_written() {
        let spec = v1::DatabaseSpec {
            engine: Some(Engine::Mysql),
            replicas: Some(3),
            version: Some("8.0.44".into()),
            storage_size: Some(Quantity("20480Mi".into())),
            storage_class_name: Some("fast".into()),
            backup_schedule: Some("@daily".into()),
            config: Some([("max_connections".to_string(), "500".to_string())].into()),
            ..Default::default()
        };
        let r = resolve(&db(spec), &Catalog::builtin()).unwrap();
        assert_eq!(
            (r.engine, r.replicas, r.image.as_str()),
            (Engine::Mysql, 3, "mysql:8.0.44")
        );
        assert_eq!(r.storage_bytes, 20 << 30);
        assert_eq!(r.port(), 3306);
        assert_eq!(r.config["max_connections"], "500");
    }

    #[test]
    fn invalid_specs_list_every_field_error() {
        let spec = v1::DatabaseSpec {
            replicas: Some(0),
            version: Some("5.7.0".into()),
            storage_size: Some(Quantity("lots".into())),
            ..Default::default()
        };
        let errors = resolve(&db(spec), &Catalog::builtin()).unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["spec.replicas", "spec.version", "spec.storageSize"]);
    }
}
