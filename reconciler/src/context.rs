//! What every reconcile shares: the client, the catalog, the observation caches, metrics and
//! settings; and the two ways a reconcile speaks back to the user: status and events.

use std::sync::Arc;
use std::time::Duration;

use api::catalog::Catalog;
use api::v1::{Database, DatabaseStatus, CONDITION_DEGRADED};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::warn;

use crate::backoff::{BackoffPolicy, BackoffTracker};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::observe::{Expectations, Stores, Writers};
use crate::status::{self, Problem};
use crate::FIELD_MANAGER;

/// Tunables of the reconcile loop (all set from flags).
#[derive(Debug, Clone)]
pub struct Settings {
    /// An updated pod not Ready for this long stalls the rollout (Degraded).
    pub rollout_timeout: Duration,
    /// Cleanup still waiting after this long reports itself as blocked.
    pub cleanup_timeout: Duration,
    /// Requeue after a permanent error or refusal (the watch brings edits sooner).
    pub permanent_requeue: Duration,
    /// Periodic re-check of a Ready Database.
    pub ready_requeue: Duration,
    /// Re-check interval while something is progressing.
    pub progress_requeue: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            rollout_timeout: Duration::from_secs(300),
            cleanup_timeout: Duration::from_secs(300),
            permanent_requeue: Duration::from_secs(600),
            ready_requeue: Duration::from_secs(300),
            progress_requeue: Duration::from_secs(5),
        }
    }
}

/// Shared state of all reconciles.
pub struct Context {
    pub client: Client,
    pub catalog: Arc<Catalog>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    pub backoff: BackoffTracker,
    /// Status last written per object, to tell a lagging cache from a real difference.
    pub written_status: StatusMemo,
    /// The watch caches every reconcile reads its children from (no GET, no LIST).
    pub stores: Stores,
    /// The caches' write halves, taken by the controller that feeds them.
    pub writers: std::sync::Mutex<Option<Writers>>,
    /// Children this process wrote that the caches may not show yet.
    pub expectations: Expectations,
}

impl Context {
    /// A context with empty caches (filled once the controller runs).
    pub fn new(
        client: Client,
        catalog: Catalog,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        settings: Settings,
    ) -> Self {
        let (stores, writers) = crate::observe::caches();
        Context {
            client,
            catalog: Arc::new(catalog),
            recorder,
            metrics,
            settings,
            backoff: BackoffTracker::new(BackoffPolicy::default()),
            written_status: StatusMemo::default(),
            stores,
            writers: std::sync::Mutex::new(Some(writers)),
            expectations: Expectations::default(),
        }
    }
}

/// Remembers, per Database, the status we last wrote and the resourceVersion our write was
/// based on. A reconcile that still sees that same resourceVersion in the cache (the watch has
/// not delivered our own write yet) and computes the same status skips the redundant write.
#[derive(Debug, Default)]
pub struct StatusMemo {
    inner: std::sync::Mutex<std::collections::HashMap<String, (String, serde_json::Value)>>,
}

impl StatusMemo {
    /// True if `status` was already written on top of `resource_version`.
    pub fn already_written(
        &self,
        key: &str,
        resource_version: &str,
        status: &serde_json::Value,
    ) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .is_some_and(|(rv, v)| rv == resource_version && v == status)
    }

    pub fn remember(&self, key: String, resource_version: String, status: serde_json::Value) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            map.clear();
        }
        map.insert(key, (resource_version, status));
    }

    /// Forgets a deleted Database.
    pub fn forget(&self, key: &str) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

/// `namespace/name` of a Database.
pub fn key(db: &Database) -> String {
    format!("{}/{}", db.namespace().unwrap_or_default(), db.name_any())
}

/// Publishes an event for the Database; failures are logged, never fatal.
pub async fn publish(
    ctx: &Context,
    db: &Database,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let reference: ObjectReference = db.object_ref(&());
    let ev = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &reference).await {
        warn!(error = %e, reason, "failed to publish event");
    }
}

/// Ready=False and Degraded=True with `reason`, and a Warning event when the message is new.
pub async fn report_problem(db: &Database, ctx: &Context, reason: &'static str, message: String) {
    let prev = db.status.as_ref();
    let already = prev
        .and_then(|s| status::find(s, CONDITION_DEGRADED))
        .is_some_and(|c| c.status == "True" && c.message == message);
    if already {
        return;
    }
    publish(
        ctx,
        db,
        EventType::Warning,
        reason,
        "Reconcile",
        message.clone(),
    )
    .await;
    let new = status::with_problem(
        prev,
        db.metadata.generation,
        &Problem { reason, message },
        Timestamp::now(),
    );
    if let Err(e) = write_status(db, ctx, &new).await {
        warn!(error = %e, "failed to record the problem in status");
    }
}

/// Writes status with server-side apply, only when it differs from what is stored.
pub async fn write_status(
    db: &Database,
    ctx: &Context,
    new: &DatabaseStatus,
) -> Result<bool, Error> {
    let old = db.status.as_ref().map(serde_json::to_value);
    let new_value = serde_json::to_value(new).map_err(|source| Error::Serialize {
        kind: "DatabaseStatus",
        source,
    })?;
    if let Some(Ok(old)) = old {
        if old == new_value {
            return Ok(false);
        }
    }
    let rv = db.resource_version().unwrap_or_default();
    if ctx
        .written_status
        .already_written(&key(db), &rv, &new_value)
    {
        return Ok(false);
    }
    let ns = db.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let name = db.name_any();
    let api: Api<Database> = Api::namespaced(ctx.client.clone(), &ns);
    let body = json!({
        "apiVersion": Database::api_version(&()),
        "kind": Database::kind(&()),
        "metadata": { "name": name },
        "status": new_value,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|e| Error::kube("patch status of", "Database", &ns, &name, e))?;
    ctx.written_status
        .remember(key(db), rv, body["status"].clone());
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_memo_skips_only_while_the_cache_shows_the_version_written_on() {
        let memo = StatusMemo::default();
        let status = json!({"phase": "Running"});
        assert!(!memo.already_written("ns/db", "10", &status));
        memo.remember("ns/db".into(), "10".into(), status.clone());
        assert!(
            memo.already_written("ns/db", "10", &status),
            "cache still lags: skip"
        );
        assert!(
            !memo.already_written("ns/db", "11", &status),
            "cache moved on: compare for real"
        );
        assert!(
            !memo.already_written("ns/db", "10", &json!({"phase": "Pending"})),
            "different status: write"
        );
        assert!(!memo.already_written("ns/other", "10", &status));
    }
}
