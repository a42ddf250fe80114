//! `example.com/v1`: the hub and storage version of the `Database` custom resource.
//!
//! Every spec field is optional on the wire because the mutating webhook fills the defaults
//! (see [`crate::defaulting`]); code that needs concrete values should go through
//! [`crate::resolved::resolve`] instead of unwrapping fields itself.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition type: the database accepts connections on every desired replica.
pub const CONDITION_READY: &str = "Ready";
/// Condition type: at least one replica accepts connections.
pub const CONDITION_AVAILABLE: &str = "Available";
/// Condition type: the operator is rolling out a change.
pub const CONDITION_PROGRESSING: &str = "Progressing";
/// Condition type: running with reduced capacity or a refused change.
pub const CONDITION_DEGRADED: &str = "Degraded";
/// Condition type (only with `spec.backupSchedule`): the most recent backup run failed.
pub const CONDITION_BACKUP_FAILED: &str = "BackupFailed";

/// Desired state of a managed database.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "example.com",
    version = "v1",
    kind = "Database",
    plural = "databases",
    shortname = "db",
    namespaced,
    status = "DatabaseStatus",
    doc = "A managed PostgreSQL or MySQL database.",
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".spec.replicas"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".spec.version"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// Database engine. Cannot change after creation. Defaults to `postgres`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<Engine>,
    /// Number of database instances, 1 to 10. Defaults to 1 (3 in production namespaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Engine version as `x.y.z`. Defaults to the catalog default for the engine. Never goes down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Size of each replica's volume as a Kubernetes quantity (at least `1Gi`). Never shrinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_size: Option<Quantity>,
    /// StorageClass for the volumes; the cluster default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Backup schedule in Kubernetes CronJob syntax (five fields or an `@` macro).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_schedule: Option<String>,
    /// Compute resources for each database container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Engine configuration parameters (at most 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<BTreeMap<String, String>>,
    /// Where the database pods (and the backup Job's pods) may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<Scheduling>,
}

/// Pod placement, copied as written into the StatefulSet's and the backup Job's pod templates.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Scheduling {
    /// Labels a node must carry for the pods to be scheduled there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Node affinity, pod affinity and pod anti-affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// How the replicas spread across topology domains (zones, nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
}

/// Supported database engines.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// PostgreSQL.
    Postgres,
    /// MySQL.
    Mysql,
}

impl Engine {
    /// All engines, in a stable order.
    pub const ALL: [Engine; 2] = [Engine::Postgres, Engine::Mysql];

    /// The port the engine listens on inside the pod.
    pub fn default_port(&self) -> i32 {
        match self {
            Engine::Postgres => 5432,
            Engine::Mysql => 3306,
        }
    }

    /// The wire name (`postgres`, `mysql`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Mysql => "mysql",
        }
    }

    /// The other engine; used for "did you mean" hints.
    pub fn other(&self) -> Engine {
        match self {
            Engine::Postgres => Engine::Mysql,
            Engine::Mysql => Engine::Postgres,
        }
    }
}

impl std::str::FromStr for Engine {
    type Err = String;

    /// Parses the wire name (`postgres`, `mysql`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Engine::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| format!("unknown engine {s:?}; use postgres or mysql"))
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Observed state, written only by the reconciler through the status subresource.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseStatus {
    /// Ready, Available, Progressing, Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Replicas that pass their readiness probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// High-level summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// When the most recent backup succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_time: Option<Time>,
    /// Connection endpoints (`host:port`) for clients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// Human-readable explanation of the current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The version the pods run: set when every pod runs the StatefulSet's current template;
    /// during a rolling update it stays the version the update started from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The data volumes as their PVCs report them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageStatus>,
}

/// Storage as the data PVCs report it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageStatus {
    /// The smallest capacity a data PVC reports (`status.capacity.storage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<String>,
    /// A data PVC asks for more than it has yet (a resize is under way or waiting).
    #[serde(default)]
    pub resize_pending: bool,
}

/// High-level lifecycle phase.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum Phase {
    /// Accepted, children not ready yet.
    Pending,
    /// Serving.
    Running,
    /// Cannot make progress without user action.
    Failed,
    /// Being deleted.
    Terminating,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Failed => "Failed",
            Phase::Terminating => "Terminating",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_and_phase_use_their_wire_names() {
        for e in Engine::ALL {
            assert_eq!(serde_json::to_value(e).unwrap(), e.to_string());
            assert_eq!(e.to_string().parse::<Engine>(), Ok(e));
        }
        assert!("oracle".parse::<Engine>().is_err());
        assert_eq!(
            (
                Engine::Postgres.default_port(),
                Engine::Mysql.default_port()
            ),
            (5432, 3306)
        );
        for p in [
            Phase::Pending,
            Phase::Running,
            Phase::Failed,
            Phase::Terminating,
        ] {
            assert_eq!(serde_json::to_value(p).unwrap(), p.to_string());
        }
    }

    #[test]
    fn absent_fields_are_not_serialised() {
        let spec = DatabaseSpec {
            replicas: Some(2),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(spec).unwrap(),
            serde_json::json!({"replicas": 2})
        );
        assert_eq!(
            serde_json::to_value(DatabaseStatus::default()).unwrap(),
            serde_json::json!({})
        );
    }
}
