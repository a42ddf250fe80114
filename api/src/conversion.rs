//! Conversion between the served versions through the v1 hub (hub-and-spoke: every version
//! converts to and from v1 only).
//!
//! Older versions cannot hold every v1 field. Converting v1 down stashes the complete v1 spec as
//! JSON in the [`ANNOTATION_V1_SPEC`] annotation whenever the older shape would lose something;
//! converting up starts from the stash, lets every field the older version *does* have win (the
//! user may have edited them through the older version), and drops the annotation. So
//! v1 -> v1beta1 -> v1 and v1 -> v1alpha1 -> v1 are lossless. A stash that is not valid JSON is
//! ignored rather than failing the read (a failed conversion makes the object unreadable).
//!
//! Older -> v1 -> older is lossless too, except that v1alpha1 `backup: false` and an absent
//! `backup` both mean "no backups" and come back absent.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::core::ObjectMeta;
use serde_json::Value;

use crate::{v1, v1alpha1, v1beta1};

/// Annotation holding the v1 spec while an object is represented in an older version.
pub const ANNOTATION_V1_SPEC: &str = "example.com/v1-spec";
/// The API group.
pub const GROUP: &str = "example.com";
/// `apiVersion` of the hub.
pub const V1: &str = "example.com/v1";
/// `apiVersion` of v1beta1.
pub const V1BETA1: &str = "example.com/v1beta1";
/// `apiVersion` of v1alpha1.
pub const V1ALPHA1: &str = "example.com/v1alpha1";
/// Every served `apiVersion`, newest first.
pub const SERVED_VERSIONS: [&str; 3] = [V1, V1BETA1, V1ALPHA1];
/// The schedule a v1alpha1 `backup: true` means.
pub const V1ALPHA1_BACKUP_SCHEDULE: &str = "@daily";

/// Why an object could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum ConversionError {
    /// The apiVersion is not one we serve.
    #[error("unsupported apiVersion {0:?}; served versions are example.com/v1, example.com/v1beta1, example.com/v1alpha1")]
    UnsupportedVersion(String),
    /// The object is not a Database.
    #[error("cannot convert kind {0:?}; only Database objects are converted")]
    WrongKind(String),
    /// The object does not deserialize as its declared version.
    #[error("object is not a valid {api_version} Database: {source}")]
    Malformed {
        /// Declared version.
        api_version: String,
        /// Cause.
        source: serde_json::Error,
    },
    /// A field cannot be represented in the target version.
    #[error("{path}: {message}")]
    InvalidField {
        /// Field path in the source object.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// Converts a whole object (any served version) to `desired_api_version` (`"example.com/v1"`,
/// `"example.com/v1beta1"` or `"example.com/v1alpha1"`). Converting to the object's own version
/// returns it unchanged.
pub fn convert(object: Value, desired_api_version: &str) -> Result<Value, ConversionError> {
    if !SERVED_VERSIONS.contains(&desired_api_version) {
        return Err(ConversionError::UnsupportedVersion(
            desired_api_version.to_string(),
        ));
    }
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if kind != "Database" {
        return Err(ConversionError::WrongKind(kind.to_string()));
    }
    let source = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if source == desired_api_version {
        return Ok(object);
    }
    let malformed = |source: serde_json::Error, api_version: &str| ConversionError::Malformed {
        api_version: api_version.to_string(),
        source,
    };
    let hub: v1::Database = match source.as_str() {
        V1 => serde_json::from_value(object).map_err(|e| malformed(e, V1))?,
        V1BETA1 => {
            v1beta1_to_v1(serde_json::from_value(object).map_err(|e| malformed(e, V1BETA1))?)
        }
        V1ALPHA1 => {
            v1alpha1_to_v1(serde_json::from_value(object).map_err(|e| malformed(e, V1ALPHA1))?)?
        }
        other => return Err(ConversionError::UnsupportedVersion(other.to_string())),
    };
    let out = match desired_api_version {
        V1 => serde_json::to_value(hub),
        V1BETA1 => serde_json::to_value(v1_to_v1beta1(hub)),
        _ => serde_json::to_value(v1_to_v1alpha1(hub)),
    };
    out.map_err(|e| malformed(e, desired_api_version))
}

/// Takes the stash out of the annotations, dropping an emptied map.
fn take_stash(meta: &mut ObjectMeta) -> Option<v1::DatabaseSpec> {
    let annotations = meta.annotations.as_mut()?;
    let raw = annotations.remove(ANNOTATION_V1_SPEC);
    if annotations.is_empty() {
        meta.annotations = None;
    }
    serde_json::from_str(&raw?).ok()
}

fn put_stash(meta: &mut ObjectMeta, spec: &v1::DatabaseSpec) {
    if let Ok(json) = serde_json::to_string(spec) {
        meta.annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(ANNOTATION_V1_SPEC.to_string(), json);
    }
}

/// v1beta1 -> v1.
pub fn v1beta1_to_v1(db: v1beta1::Database) -> v1::Database {
    let mut metadata = db.metadata;
    let stash = take_stash(&mut metadata).unwrap_or_default();
    let s = db.spec;
    v1::Database {
        metadata,
        spec: v1::DatabaseSpec {
            engine: s.engine,
            replicas: s.replicas,
            version: s.version,
            storage_size: s.storage_size,
            storage_class_name: stash.storage_class_name,
            backup_schedule: s.backup_schedule,
            resources: s.resources,
            config: stash.config,
            scheduling: stash.scheduling,
        },
        status: db.status,
    }
}

/// v1 -> v1beta1 (stashes the v1 spec when `storageClassName`, `config` or `scheduling` is set).
pub fn v1_to_v1beta1(db: v1::Database) -> v1beta1::Database {
    let mut metadata = db.metadata;
    let s = db.spec;
    if s.storage_class_name.is_some() || s.config.is_some() || s.scheduling.is_some() {
        put_stash(&mut metadata, &s);
    }
    v1beta1::Database {
        metadata,
        spec: v1beta1::DatabaseSpec {
            engine: s.engine,
            replicas: s.replicas,
            version: s.version,
            storage_size: s.storage_size,
            backup_schedule: s.backup_schedule,
            resources: s.resources,
        },
        status: db.status,
    }
}

/// v1alpha1 -> v1. Fails only when `size` is not a whole number.
pub fn v1alpha1_to_v1(db: v1alpha1::Database) -> Result<v1::Database, ConversionError> {
    let mut metadata = db.metadata;
    let stash = take_stash(&mut metadata).unwrap_or_default();
    let s = db.spec;
    let replicas = match s.size.as_deref() {
        None => None,
        Some(size) => {
            Some(
                size.trim()
                    .parse::<i32>()
                    .map_err(|_| ConversionError::InvalidField {
                        path: "spec.size".into(),
                        message: format!("{size:?} is not a whole number of replicas"),
                    })?,
            )
        }
    };
    let backup_schedule = match s.backup {
        Some(true) => Some(
            stash
                .backup_schedule
                .clone()
                .unwrap_or_else(|| V1ALPHA1_BACKUP_SCHEDULE.to_string()),
        ),
        _ => None,
    };
    Ok(v1::Database {
        metadata,
        spec: v1::DatabaseSpec {
            engine: stash.engine,
            replicas,
            version: s.db_version,
            storage_size: s.storage.map(Quantity),
            storage_class_name: stash.storage_class_name,
            backup_schedule,
            resources: stash.resources,
            config: stash.config,
            scheduling: stash.scheduling,
        },
        status: db.status,
    })
}

/// v1 -> v1alpha1 (stashes the v1 spec when v1alpha1 cannot carry all of it).
pub fn v1_to_v1alpha1(db: v1::Database) -> v1alpha1::Database {
    let mut metadata = db.metadata;
    let s = db.spec;
    let alpha = v1alpha1::DatabaseSpec {
        size: s.replicas.map(|r| r.to_string()),
        db_version: s.version.clone(),
        storage: s.storage_size.as_ref().map(|q| q.0.clone()),
        backup: s.backup_schedule.as_ref().map(|_| true),
    };
    let representable = s.engine.is_none()
        && s.storage_class_name.is_none()
        && s.resources.is_none()
        && s.config.is_none()
        && s.scheduling.is_none()
        && s.backup_schedule
            .as_deref()
            .is_none_or(|b| b == V1ALPHA1_BACKUP_SCHEDULE);
    if !representable {
        put_stash(&mut metadata, &s);
    }
    v1alpha1::Database {
        metadata,
        spec: alpha,
        status: db.status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn full_v1() -> Value {
        json!({
            "apiVersion": "example.com/v1",
            "kind": "Database",
            "metadata": {
                "name": "orders", "namespace": "shop", "uid": "1234", "resourceVersion": "42",
                "generation": 3, "labels": {"team": "shop"},
                "annotations": {"example.com/delete-pvcs-on-delete": "true"},
                "finalizers": ["example.com/cleanup"]
            },
            "spec": {
                "engine": "mysql", "replicas": 3, "version": "8.4.7", "storageSize": "20Gi",
                "storageClassName": "fast", "backupSchedule": "0 2 * * *",
                "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
                "config": {"max_connections": "500"},
                "scheduling": scheduling()
            },
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "AllReplicasReady", "message": "3/3 ready", "lastTransitionTime": "2026-11-29T10:00:00Z", "observedGeneration": 3}],
                "readyReplicas": 3, "observedGeneration": 3, "phase": "Running",
                "lastBackupTime": "2026-11-29T02:00:00Z", "endpoints": ["orders.shop.svc:3306"], "message": "ok"
            }
        })
    }

    /// Every `spec.scheduling` field, with nested values.
    fn scheduling() -> Value {
        json!({
            "nodeSelector": {"kubernetes.io/os": "linux", "disktype": "ssd"},
            "tolerations": [
                {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"},
                {"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoExecute", "tolerationSeconds": 300}
            ],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a", "b"]}]}
                    ]},
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 50, "preference": {"matchExpressions": [{"key": "disktype", "operator": "Exists"}]}}
                    ]
                },
                "podAntiAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": {
                        "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "orders"}},
                        "topologyKey": "kubernetes.io/hostname"
                    }}]
                }
            },
            "topologySpreadConstraints": [{
                "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "orders"}},
                "matchLabelKeys": ["controller-revision-hash"]
            }]
        })
    }

    #[test]
    fn scheduling_alone_is_stashed_by_both_older_versions_and_comes_back_whole() {
        let original = with_spec(
            minimal_v1(),
            json!({"replicas": 1, "scheduling": scheduling()}),
        );
        for via in [V1BETA1, V1ALPHA1] {
            let down = convert(original.clone(), via).unwrap();
            assert!(down["spec"].get("scheduling").is_none(), "{via}: {down:#}");
            let stash: Value = serde_json::from_str(
                down["metadata"]["annotations"][ANNOTATION_V1_SPEC]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(stash["scheduling"], original["spec"]["scheduling"], "{via}");
            assert_eq!(convert(down, V1).unwrap(), original, "via {via}");
        }
    }

    fn minimal_v1() -> Value {
        json!({"apiVersion": "example.com/v1", "kind": "Database", "metadata": {"name": "m"}, "spec": {"replicas": 1, "version": "17.7.0", "storageSize": "10Gi"}})
    }

    fn with_spec(mut v: Value, spec: Value) -> Value {
        v["spec"] = spec;
        v
    }

    #[test]
    fn v1_round_trips_through_every_version_without_loss() {
        let objects = [
            full_v1(),
            minimal_v1(),
            with_spec(full_v1(), json!({"backupSchedule": "@daily"})),
            with_spec(
                full_v1(),
                json!({"backupSchedule": "*/30 * * * *", "replicas": 2}),
            ),
            with_spec(full_v1(), json!({})),
            with_spec(minimal_v1(), json!({"config": {}})),
        ];
        for original in objects {
            for via in [V1BETA1, V1ALPHA1] {
                let down = convert(original.clone(), via).unwrap();
                assert_eq!(down["apiVersion"], via);
                let back = convert(down.clone(), V1).unwrap();
                assert_eq!(back, original, "via {via}; intermediate {down:#}");
            }
        }
    }

    #[test]
    fn older_versions_round_trip_through_the_hub() {
        let beta = json!({"apiVersion": "example.com/v1beta1", "kind": "Database", "metadata": {"name": "b"},
            "spec": {"engine": "postgres", "replicas": 2, "version": "16.4.0", "storageSize": "5Gi", "backupSchedule": "@hourly",
                     "resources": {"requests": {"cpu": "1"}}}});
        let alpha = json!({"apiVersion": "example.com/v1alpha1", "kind": "Database", "metadata": {"name": "a"},
            "spec": {"size": "3", "dbVersion": "15.2.0", "storage": "8Gi", "backup": true},
            "status": {"phase": "Pending"}});
        for original in [beta, alpha] {
            let from = original["apiVersion"].as_str().unwrap().to_string();
            for via in SERVED_VERSIONS {
                let there = convert(original.clone(), via).unwrap();
                assert_eq!(convert(there, &from).unwrap(), original, "{from} via {via}");
            }
        }
    }

    #[test]
    fn v1alpha1_fields_map_to_v1_as_documented() {
        let alpha = json!({"apiVersion": "example.com/v1alpha1", "kind": "Database", "metadata": {"name": "a"},
            "spec": {"size": "3", "dbVersion": "15.2.0", "storage": "8Gi", "backup": true}});
        let v1 = convert(alpha, V1).unwrap();
        assert_eq!(
            v1["spec"],
            json!({"replicas": 3, "version": "15.2.0", "storageSize": "8Gi", "backupSchedule": "@daily"})
        );
        let off = json!({"apiVersion": "example.com/v1alpha1", "kind": "Database", "metadata": {"name": "a"}, "spec": {"backup": false}});
        assert_eq!(convert(off, V1).unwrap()["spec"], json!({}));
    }

    #[test]
    fn stash_is_written_only_when_the_older_version_would_lose_data() {
        let down = convert(minimal_v1(), V1BETA1).unwrap();
        assert!(down["metadata"].get("annotations").is_none());
        let down = convert(minimal_v1(), V1ALPHA1).unwrap();
        assert!(down["metadata"].get("annotations").is_none());
        let down = convert(full_v1(), V1BETA1).unwrap();
        assert!(down["metadata"]["annotations"][ANNOTATION_V1_SPEC].is_string());
        assert_eq!(
            down["metadata"]["annotations"]["example.com/delete-pvcs-on-delete"],
            "true"
        );
    }

    #[test]
    fn edits_made_through_an_older_version_win_over_the_stash() {
        let mut down = convert(full_v1(), V1BETA1).unwrap();
        down["spec"]["replicas"] = json!(5);
        down["spec"]
            .as_object_mut()
            .unwrap()
            .remove("backupSchedule");
        let back = convert(down, V1).unwrap();
        assert_eq!(back["spec"]["replicas"], 5);
        assert!(back["spec"].get("backupSchedule").is_none());
        assert_eq!(back["spec"]["storageClassName"], "fast");
        assert_eq!(back["spec"]["config"], json!({"max_connections": "500"}));
    }

    #[test]
    fn a_corrupt_stash_is_ignored_not_fatal() {
        let mut down = convert(full_v1(), V1BETA1).unwrap();
        down["metadata"]["annotations"][ANNOTATION_V1_SPEC] = json!("{not json");
        let back = convert(down, V1).unwrap();
        assert_eq!(back["spec"]["replicas"], 3);
        assert!(back["spec"].get("config").is_none());
        assert!(back["metadata"]["annotations"]
            .get(ANNOTATION_V1_SPEC)
            .is_none());
    }

    #[test]
    fn bad_requests_are_errors_not_panics() {
        let cases = [
            (minimal_v1(), "example.com/v2", "unsupported apiVersion"),
            (
                with_spec(minimal_v1(), json!({"replicas": "three"})),
                V1BETA1,
                "not a valid example.com/v1 Database",
            ),
            (
                json!({"apiVersion": "example.com/v1", "kind": "Pod"}),
                V1BETA1,
                "only Database",
            ),
            (
                json!({"apiVersion": "example.com/v9", "kind": "Database", "metadata": {}, "spec": {}}),
                V1,
                "unsupported apiVersion \"example.com/v9\"",
            ),
            (
                json!({"apiVersion": "example.com/v1alpha1", "kind": "Database", "metadata": {}, "spec": {"size": "many"}}),
                V1,
                "spec.size",
            ),
        ];
        for (obj, to, fragment) in cases {
            let e = convert(obj, to).expect_err(fragment).to_string();
            assert!(e.contains(fragment), "{e}");
        }
    }

    fn arb_spec() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let opt = |s: BoxedStrategy<Value>| prop::option::of(s);
        (
            opt(prop_oneof![Just(json!("postgres")), Just(json!("mysql"))].boxed()),
            opt((1i32..=10).prop_map(Value::from).boxed()),
            opt("[0-9]{1,2}\\.[0-9]{1,2}\\.[0-9]"
                .prop_map(Value::from)
                .boxed()),
            opt("[1-9][0-9]{0,2}(Gi|Mi|G)".prop_map(Value::from).boxed()),
            opt("[a-z]{1,8}".prop_map(Value::from).boxed()),
            opt(prop_oneof![
                Just(json!("@daily")),
                Just(json!("0 2 * * *")),
                Just(json!("@hourly"))
            ]
            .boxed()),
            opt(Just(json!({"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}})).boxed()),
            opt(
                prop::collection::btree_map("[a-z_]{1,10}", "[a-z0-9]{0,5}", 0..4)
                    .prop_map(|m| json!(m))
                    .boxed(),
            ),
            opt(prop_oneof![
                Just(json!({})),
                Just(json!({"nodeSelector": {"disktype": "ssd"}})),
                Just(json!({"tolerations": [{"operator": "Exists"}]})),
                Just(json!({"affinity": {"podAntiAffinity": {}}, "topologySpreadConstraints": []})),
            ]
            .boxed()),
        )
            .prop_map(
                |(
                    engine,
                    replicas,
                    version,
                    size,
                    class,
                    schedule,
                    resources,
                    config,
                    scheduling,
                )| {
                    let mut m = serde_json::Map::new();
                    for (k, v) in [
                        ("engine", engine),
                        ("replicas", replicas),
                        ("version", version),
                        ("storageSize", size),
                        ("storageClassName", class),
                        ("backupSchedule", schedule),
                        ("resources", resources),
                        ("config", config),
                        ("scheduling", scheduling),
                    ] {
                        if let Some(v) = v {
                            m.insert(k.into(), v);
                        }
                    }
                    Value::Object(m)
                },
            )
    }

    proptest::proptest! {
        #[test]
        fn any_v1_object_round_trips_through_every_older_version(
            spec in arb_spec(),
            annotations in proptest::option::of(proptest::collection::btree_map("[a-z]{1,5}/[a-z]{1,5}", "[a-z]{0,5}", 1..3)),
        ) {
            let mut original = with_spec(minimal_v1(), spec);
            if let Some(a) = annotations {
                original["metadata"]["annotations"] = json!(a);
            }
            for via in [V1BETA1, V1ALPHA1] {
                let down = convert(original.clone(), via).unwrap();
                proptest::prop_assert_eq!(&convert(down, V1).unwrap(), &original, "via {}", via);
            }
        }
    }

    #[test]
    fn converting_to_the_same_version_returns_the_object_unchanged() {
        let obj = with_spec(minimal_v1(), json!({"unknownField": 1}));
        assert_eq!(convert(obj.clone(), V1).unwrap(), obj);
    }
}
