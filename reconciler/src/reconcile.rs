//! The reconcile loop for one Database: guard, desired children, apply only what drifted,
//! storage growth, status. Deletion is handed to [`crate::cleanup`].

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::catalog::Catalog;
use api::v1::{Database, DatabaseStatus, CONDITION_DEGRADED};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, ObjectReference, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::backoff::BackoffTracker;
use crate::desired::{self, claim_storage};
use crate::drift;
use crate::error::{
    classify_finalizer_patch_error, is_already_exists, Error, FinalizerPatchFailure,
};
use crate::guard::{self, ObservedShape, Refusal};
use crate::metrics::Metrics;
use crate::ownership::{
    self, backup_pvc_is_ours, controlled_by, Conflict, Found, REASON_NAME_CONFLICT,
};
use crate::status::{self, Observation, Problem, WorkloadStatus};
use crate::{FIELD_MANAGER, FINALIZER};

pub const REASON_STORAGE_EXPANSION_NOT_ALLOWED: &str = "StorageExpansionNotAllowed";
pub const REASON_STORAGE_EXPANSION_PENDING: &str = "StorageExpansionPending";
pub const REASON_FINALIZER_UPDATE_DENIED: &str = "FinalizerUpdateDenied";

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
}

fn key(db: &Database) -> String {
    format!("{}/{}", db.namespace().unwrap_or_default(), db.name_any())
}

/// Entry point for the kube `Controller`: one reconcile with metrics, logging span, and the
/// transient/permanent error split.
pub async fn reconcile(db: Arc<Database>, ctx: Arc<Context>) -> Result<Action, Error> {
    // `database`, not `name`: JSON logs already use `name` for the span's own name.
    let span = info_span!(
        "reconcile",
        namespace = %db.namespace().unwrap_or_default(),
        database = %db.name_any(),
        generation = db.metadata.generation.unwrap_or(0),
    );
    async move {
        let started = Instant::now();
        ctx.metrics.in_flight.inc();
        let result = reconcile_inner(&db, &ctx).await;
        ctx.metrics.in_flight.dec();
        match result {
            Ok(action) => {
                ctx.backoff.reset(&key(&db));
                ctx.metrics.observe_reconcile("success", started.elapsed());
                debug!(?action, "reconciled");
                Ok(action)
            }
            Err(err) if err.is_permanent() => {
                ctx.metrics.observe_reconcile("error", started.elapsed());
                ctx.metrics.observe_error(err.metric_label());
                warn!(error = %err, label = err.metric_label(), "permanent reconcile error; not retrying soon");
                report_permanent_error(&db, &ctx, &err).await;
                ctx.backoff.reset(&key(&db));
                Ok(Action::requeue(ctx.settings.permanent_requeue))
            }
            Err(err @ Error::NameConflict(_)) => {
                ctx.metrics.observe_reconcile("error", started.elapsed());
                ctx.metrics.observe_error(err.metric_label());
                warn!(error = %err, "name conflict: leaving foreign objects alone; will retry with backoff");
                report_problem(&db, &ctx, REASON_NAME_CONFLICT, err.to_string()).await;
                Err(err)
            }
            Err(err) => {
                ctx.metrics.observe_reconcile("error", started.elapsed());
                ctx.metrics.observe_error(err.metric_label());
                warn!(error = %err, label = err.metric_label(), "transient reconcile error; will retry with backoff");
                Err(err)
            }
        }
    }
    .instrument(span)
    .await
}

/// Requeue policy for transient errors: per-object exponential backoff with jitter.
pub fn error_policy(db: Arc<Database>, _err: &Error, ctx: Arc<Context>) -> Action {
    Action::requeue(ctx.backoff.next_delay(&key(&db)))
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

async fn report_permanent_error(db: &Database, ctx: &Context, err: &Error) {
    let reason = match (err, err.api_status().map(|s| s.code)) {
        (Error::FinalizerDenied { .. }, _) => REASON_FINALIZER_UPDATE_DENIED,
        (_, Some(403)) => "Forbidden",
        (_, Some(422)) => "Rejected",
        _ => "ReconcileFailed",
    };
    report_problem(db, ctx, reason, err.summary()).await;
}

/// Ready=False and Degraded=True with `reason`, and a Warning event when the message is new.
async fn report_problem(db: &Database, ctx: &Context, reason: &'static str, message: String) {
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
        warn!(error = %e, "failed to record permanent error in status");
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

/// Result of making one child match its desired state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Unchanged,
    Created,
    Updated,
}

/// Server-side applies `desired` only if `observed` does not already satisfy it.
pub async fn apply_if_drifted<K>(
    api: &Api<K>,
    desired: &K,
    observed: Option<&K>,
) -> Result<Applied, Error>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    if let Some(o) = observed {
        if drift::is_satisfied_by(desired, o) {
            return Ok(Applied::Unchanged);
        }
    }
    let name = desired.meta().name.clone().unwrap_or_default();
    let ns = desired.meta().namespace.clone().unwrap_or_default();
    if let (Some(o), Ok(d)) = (observed, serde_json::to_value(desired)) {
        if let Ok(o) = serde_json::to_value(o) {
            info!(
                kind = kind_name::<K>(),
                child = %name,
                field = drift::first_difference(&d, &o).unwrap_or_default(),
                "child drifted from desired state"
            );
        }
    }
    // Over an observed (ours) object the apply carries its uid: if the object under this name
    // was replaced since we read it, the server refuses (metadata.uid is immutable) instead of
    // letting us take the new one over.
    let mut body = desired.clone();
    if let Some(o) = observed {
        body.meta_mut().uid = o.meta().uid.clone();
    }
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|e| apply_error(e, kind_name::<K>(), &ns, &name, observed.is_some()))?;
    Ok(if observed.is_some() {
        Applied::Updated
    } else {
        Applied::Created
    })
}

/// An apply that carried a uid precondition and found another object under the name (409, or
/// 422 "metadata.uid: field is immutable") is stale, not rejected: the next reconcile looks again.
fn apply_error(e: kube::Error, kind: &'static str, ns: &str, name: &str, guarded: bool) -> Error {
    match &e {
        kube::Error::Api(s)
            if guarded
                && (s.code == 409 || (s.code == 422 && s.message.contains("metadata.uid"))) =>
        {
            Error::Stale(format!("{kind} {ns}/{name}"))
        }
        _ => Error::kube("apply", kind, ns, name, e),
    }
}

fn kind_name<K: Resource<DynamicType = ()>>() -> &'static str {
    // Kinds are static strings for k8s-openapi types; keep a small table for messages.
    match K::kind(&()).as_ref() {
        "StatefulSet" => "StatefulSet",
        "Service" => "Service",
        "ConfigMap" => "ConfigMap",
        "Secret" => "Secret",
        "CronJob" => "CronJob",
        "PersistentVolumeClaim" => "PersistentVolumeClaim",
        _ => "object",
    }
}

async fn get_opt<K>(api: &Api<K>, ns: &str, name: &str) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    api.get_opt(name)
        .await
        .map_err(|e| Error::kube("get", kind_name::<K>(), ns, name, e))
}

/// Creates `object` unless it exists; never overwrites (a concurrent create counts as
/// existing). Returns the created object if this call created it.
async fn create_if_absent<K>(
    api: &Api<K>,
    ns: &str,
    name: &str,
    object: &K,
) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
{
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    };
    match api.create(&pp, object).await {
        Ok(created) => Ok(Some(created)),
        Err(e) if is_already_exists(&e) => Ok(None),
        Err(e) => Err(Error::kube("create", kind_name::<K>(), ns, name, e)),
    }
}

/// Adds the cleanup finalizer if missing (JSON patch guarded by resourceVersion).
async fn ensure_finalizer(db: &Database, ctx: &Context, ns: &str) -> Result<(), Error> {
    if db.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let name = db.name_any();
    let mut ops = vec![
        json!({"op": "test", "path": "/metadata/resourceVersion", "value": db.resource_version()}),
    ];
    if db.metadata.finalizers.is_none() {
        ops.push(json!({"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}));
    } else {
        ops.push(json!({"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER}));
    }
    let patch: json_patch::Patch =
        serde_json::from_value(json!(ops)).map_err(|source| Error::Serialize {
            kind: "finalizer patch",
            source,
        })?;
    let api: Api<Database> = Api::namespaced(ctx.client.clone(), ns);
    api.patch(
        &name,
        &crate::manager_patch_params(),
        &Patch::Json::<()>(patch),
    )
    .await
    .map_err(|e| match classify_finalizer_patch_error(&e) {
        // The `test` on resourceVersion failed: our cached copy is stale.
        FinalizerPatchFailure::Stale => Error::Stale(format!("Database {ns}/{name}")),
        FinalizerPatchFailure::Denied(message) => Error::FinalizerDenied {
            action: "adding",
            namespace: ns.to_owned(),
            name: name.clone(),
            message,
        },
        FinalizerPatchFailure::Other => Error::kube("add finalizer to", "Database", ns, &name, e),
    })?;
    info!("added cleanup finalizer");
    Ok(())
}

/// Reads engine/version/storage of what runs, for the destructive-change guard.
fn observed_shape(sts: Option<&StatefulSet>, pvcs: &[PersistentVolumeClaim]) -> ObservedShape {
    let annotations = sts.map(|s| s.annotations());
    let template = sts
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.volume_claim_templates.as_ref())
        .and_then(|t| {
            t.iter()
                .find(|c| c.metadata.name.as_deref() == Some(desired::DATA_VOLUME))
        });
    ObservedShape {
        engine: annotations.and_then(|a| a.get(desired::ANNOTATION_ENGINE).cloned()),
        version: annotations
            .and_then(|a| a.get(desired::ANNOTATION_VERSION))
            .and_then(|v| semver::Version::parse(v).ok()),
        storage_class: template
            .and_then(|t| t.spec.as_ref())
            .and_then(|s| s.storage_class_name.clone()),
        template_storage: template.and_then(claim_storage).cloned(),
        pvc_storage: pvcs
            .iter()
            .filter_map(|p| Some((p.name_any(), claim_storage(p)?.clone())))
            .collect(),
    }
}

/// Data PVCs of the StatefulSet (`data-<name>-<ordinal>`).
async fn data_pvcs(
    ctx: &Context,
    ns: &str,
    name: &str,
) -> Result<Vec<PersistentVolumeClaim>, Error> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    let prefix = format!("{}-{name}-", desired::DATA_VOLUME);
    let list = api
        .list(&ListParams::default().labels(&desired::selector_string(name)))
        .await
        .map_err(|e| Error::kube("list", "PersistentVolumeClaim", ns, name, e))?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| {
            p.name_any()
                .strip_prefix(&prefix)
                .is_some_and(|rest| rest.parse::<u32>().is_ok())
        })
        .collect())
}

/// The previous Degraded message, to emit warnings only when something new goes wrong.
fn previous_degraded_message(db: &Database) -> Option<String> {
    db.status
        .as_ref()
        .and_then(|s| status::find(s, CONDITION_DEGRADED))
        .filter(|c| c.status == "True")
        .map(|c| c.message.clone())
}

/// Every child name of one Database and what exists under it, classified by ownership.
struct Observed {
    statefulset: Found<StatefulSet>,
    pvcs: Vec<PersistentVolumeClaim>,
    secret: Found<Secret>,
    config: Found<ConfigMap>,
    /// Client Service `<name>`, then headless `<name>-headless`.
    services: [(String, Found<Service>); 2],
    cronjob: Found<CronJob>,
    /// Looked up only with a backup schedule (`Absent` otherwise).
    backup_pvc: Found<PersistentVolumeClaim>,
}

impl Observed {
    /// Objects under names this Database needs that are not ours. A CronJob that is not ours
    /// only conflicts when a schedule asks for ours; without one it is simply not our business.
    fn conflicts(&self, db: &Database) -> Vec<Conflict> {
        let name = db.name_any();
        let wants_backup = db.spec.backup_schedule.is_some();
        let mut out = Vec::new();
        for (svc_name, svc) in &self.services {
            if svc.is_foreign() {
                out.push(Conflict {
                    kind: "Service",
                    name: svc_name.clone(),
                });
            }
        }
        let rows = [
            (self.statefulset.is_foreign(), "StatefulSet", name.clone()),
            (
                self.config.is_foreign(),
                "ConfigMap",
                desired::config_map_name(&name),
            ),
            (
                self.secret.is_foreign(),
                "Secret",
                desired::credentials_secret_name(&name),
            ),
            (
                wants_backup && self.cronjob.is_foreign(),
                "CronJob",
                desired::backup_cronjob_name(&name),
            ),
            (
                self.backup_pvc.is_foreign(),
                "PersistentVolumeClaim",
                desired::backup_pvc_name(&name),
            ),
        ];
        for (foreign, kind, child) in rows {
            if foreign {
                out.push(Conflict { kind, name: child });
            }
        }
        out
    }
}

/// Reads every child name (a GET each; nothing is written here).
async fn observe(db: &Database, ctx: &Context, ns: &str, name: &str) -> Result<Observed, Error> {
    let client = &ctx.client;
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let statefulset = Found::classify(get_opt(&sts_api, ns, name).await?, |s| {
        controlled_by(&s.metadata, db)
    });
    // The Secret we created is ours even if its ownerReference was edited away: the
    // StatefulSet records its uid. A Secret created by anyone else has another uid.
    let credentials_uid = statefulset
        .ours()
        .and_then(|s| s.annotations().get(desired::ANNOTATION_CREDENTIALS_UID))
        .cloned();
    let secret_api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret_name = desired::credentials_secret_name(name);
    let secret = Found::classify(get_opt(&secret_api, ns, &secret_name).await?, |s| {
        controlled_by(&s.metadata, db)
            || (credentials_uid.is_some() && s.metadata.uid == credentials_uid)
    });
    let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let config = Found::classify(
        get_opt(&cm_api, ns, &desired::config_map_name(name)).await?,
        |c| controlled_by(&c.metadata, db),
    );
    let svc_api: Api<Service> = Api::namespaced(client.clone(), ns);
    let mut services = Vec::with_capacity(2);
    for svc_name in [name.to_owned(), desired::headless_service_name(name)] {
        let found = Found::classify(get_opt(&svc_api, ns, &svc_name).await?, |s| {
            controlled_by(&s.metadata, db)
        });
        services.push((svc_name, found));
    }
    let [client_svc, headless_svc]: [(String, Found<Service>); 2] = services
        .try_into()
        .map_err(|_| Error::MissingMetadata("name"))?;
    let cj_api: Api<CronJob> = Api::namespaced(client.clone(), ns);
    let cronjob = Found::classify(
        get_opt(&cj_api, ns, &desired::backup_cronjob_name(name)).await?,
        |c| controlled_by(&c.metadata, db),
    );
    let backup_pvc = if db.spec.backup_schedule.is_some() {
        let pvc_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
        Found::classify(
            get_opt(&pvc_api, ns, &desired::backup_pvc_name(name)).await?,
            |p| backup_pvc_is_ours(p, name),
        )
    } else {
        Found::Absent
    };
    // Data PVCs of a StatefulSet that is not ours are not ours either.
    let pvcs = if statefulset.is_foreign() {
        Vec::new()
    } else {
        data_pvcs(ctx, ns, name).await?
    };
    Ok(Observed {
        statefulset,
        pvcs,
        secret,
        config,
        services: [client_svc, headless_svc],
        cronjob,
        backup_pvc,
    })
}

async fn reconcile_inner(db: &Database, ctx: &Context) -> Result<Action, Error> {
    let ns = db.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let name = db.name_any();
    if db.metadata.deletion_timestamp.is_some() {
        return crate::cleanup::run(db, ctx).await;
    }
    ensure_finalizer(db, ctx, &ns).await?;

    let observed = observe(db, ctx, &ns, &name).await?;
    let conflicts = observed.conflicts(db);
    if !conflicts.is_empty() {
        return Err(Error::NameConflict(ownership::conflict_message(
            &name, &conflicts,
        )));
    }
    let sts_api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    let observed_sts = observed.statefulset.ours().cloned();
    let pvcs = observed.pvcs.clone();
    let shape = observed_shape(observed_sts.as_ref(), &pvcs);
    let prev_degraded = previous_degraded_message(db);

    // Guard: the API rules and destructive changes vs. what runs. Refused specs are not acted on.
    let resolved = match guard::check_spec(db, &ctx.catalog) {
        Ok(r) => r,
        Err(refusal) => {
            return refuse(db, ctx, refusal, observed_sts.as_ref(), None, prev_degraded).await
        }
    };
    let destructive = guard::destructive_changes(&resolved, &shape, &ctx.catalog);
    if !destructive.is_empty() {
        let refusal = Refusal {
            reason: guard::REASON_DESTRUCTIVE_CHANGE,
            message: format!("change not applied: {}", destructive.join("; ")),
        };
        return refuse(
            db,
            ctx,
            refusal,
            observed_sts.as_ref(),
            Some(&resolved),
            prev_degraded,
        )
        .await;
    }

    // Dependencies first: credentials and configuration, then Services, then the workload.
    // Every child below is absent or ours (a fresh GET just said so): applying cannot take
    // over a foreign object except one created in the milliseconds since.
    let credentials_uid =
        ensure_credentials(db, ctx, &ns, &name, &resolved, observed.secret.ours()).await?;

    let cm_api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let cm = desired::desired_configmap(db, &resolved)?;
    let cm_name = desired::config_map_name(&name);
    let applied = apply_if_drifted(&cm_api, &cm, observed.config.ours()).await?;
    announce(db, ctx, applied, "ConfigMap", &cm_name).await;

    let svc_api: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    for (svc, (_, found)) in desired::desired_services(db, &resolved)?
        .into_iter()
        .zip(observed.services.iter())
    {
        let svc_name = svc.name_any();
        let applied = apply_if_drifted(&svc_api, &svc, found.ours()).await?;
        announce(db, ctx, applied, "Service", &svc_name).await;
    }

    let mut sts = desired::desired_statefulset(db, &resolved)?;
    if let Some(uid) = credentials_uid {
        sts.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(desired::ANNOTATION_CREDENTIALS_UID.to_owned(), uid);
    }
    if let (Some(spec), Some(observed_templates)) = (
        sts.spec.as_mut(),
        observed_sts
            .as_ref()
            .and_then(|o| o.spec.as_ref())
            .and_then(|s| s.volume_claim_templates.clone()),
    ) {
        // volumeClaimTemplates are immutable: keep what exists; growth is done on the PVCs.
        spec.volume_claim_templates = Some(
            observed_templates
                .into_iter()
                .map(|mut t| {
                    t.status = None;
                    t.metadata = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                        name: t.metadata.name,
                        labels: t.metadata.labels,
                        annotations: t.metadata.annotations,
                        ..Default::default()
                    };
                    t
                })
                .collect(),
        );
    }
    // Stalled rollouts: detected only while the running template is the current one, and then
    // paused with a partition at the stuck pod until the template changes.
    let template_current = match (
        sts.spec.as_ref(),
        observed_sts.as_ref().and_then(|o| o.spec.as_ref()),
    ) {
        (Some(d), Some(o)) => drift::is_satisfied_by(&d.template, &o.template),
        _ => false,
    };
    let observed_pause = observed_sts.as_ref().and_then(|o| {
        let pod = o
            .annotations()
            .get(desired::ANNOTATION_ROLLOUT_PAUSED)?
            .clone();
        let partition = o
            .spec
            .as_ref()?
            .update_strategy
            .as_ref()?
            .rolling_update
            .as_ref()?
            .partition?;
        Some((pod, partition))
    });
    let stall = match observed_sts.as_ref().map(WorkloadStatus::from_statefulset) {
        Some(w)
            // Only once the StatefulSet controller has observed the current template: until
            // then updateRevision (and the pods labelled with it) may still be the old one.
            if template_current
                && w.observed_generation >= w.generation
                && w.update_revision.is_some()
                && (w.current_revision != w.update_revision || w.ready_replicas < w.replicas) =>
        {
            let pods = list_pods(ctx, &ns, &name).await?;
            status::stalled_pod(
                &pods,
                w.update_revision.as_deref(),
                ctx.settings.rollout_timeout,
                Timestamp::now(),
            )
        }
        _ => None,
    };
    let pause = status::rollout_pause(template_current, observed_pause.clone(), stall.as_ref());
    if let Some((pod, partition)) = &pause {
        if let Some(ru) = sts
            .spec
            .as_mut()
            .and_then(|s| s.update_strategy.as_mut())
            .and_then(|u| u.rolling_update.as_mut())
        {
            ru.partition = Some(*partition);
        }
        sts.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(desired::ANNOTATION_ROLLOUT_PAUSED.to_owned(), pod.clone());
        if observed_pause.is_none() {
            warn!(pod = %pod, partition, "rolling update stalled; pausing it");
            publish(
                ctx,
                db,
                EventType::Warning,
                "RolloutPaused",
                "RollingUpdate",
                format!("rolling update paused at pod {pod} (partition {partition}): it did not become Ready within {}s", ctx.settings.rollout_timeout.as_secs()),
            )
            .await;
        }
    }
    let stalled = match (&stall, &pause) {
        (Some(s), _) => Some(status::stall_message(s, ctx.settings.rollout_timeout)),
        (None, Some((pod, _))) => Some(status::paused_message(pod, ctx.settings.rollout_timeout)),
        _ => None,
    };

    let applied = apply_if_drifted(&sts_api, &sts, observed_sts.as_ref()).await?;
    if applied == Applied::Updated {
        let old_version = shape.version.as_ref().map(ToString::to_string);
        if old_version.as_deref() != Some(resolved.version.to_string().as_str()) {
            publish(
                ctx,
                db,
                EventType::Normal,
                "RollingUpdate",
                "UpdateStatefulSet",
                format!(
                    "rolling {name} from version {} to {} one pod at a time",
                    old_version.unwrap_or_else(|| "unknown".to_owned()),
                    resolved.version
                ),
            )
            .await;
        }
    }
    announce(db, ctx, applied, "StatefulSet", &name).await;
    // Re-read after a write so status reflects the new generation rather than the old one.
    let current_sts = if applied == Applied::Unchanged {
        observed_sts.clone()
    } else {
        get_opt(&sts_api, &ns, &name).await?
    };

    reconcile_backup(db, ctx, &ns, &name, &resolved, &observed).await?;

    let mut problems = grow_storage(db, ctx, &ns, &resolved, &pvcs).await?;

    // Status.
    let workload = current_sts.as_ref().map(WorkloadStatus::from_statefulset);
    if let Some(msg) = &stalled {
        if prev_degraded
            .as_deref()
            .is_none_or(|m| !m.contains(msg.as_str()))
        {
            publish(
                ctx,
                db,
                EventType::Warning,
                status::REASON_ROLLOUT_STALLED,
                "RollingUpdate",
                msg.clone(),
            )
            .await;
        }
    }
    let last_backup_time = if resolved.backup_schedule.is_some() {
        last_successful_backup(ctx, &ns, &name).await?
    } else {
        None
    };
    for p in &problems {
        if prev_degraded
            .as_deref()
            .is_none_or(|m| !m.contains(p.message.as_str()))
        {
            publish(
                ctx,
                db,
                EventType::Warning,
                p.reason,
                "ExpandStorage",
                p.message.clone(),
            )
            .await;
        }
    }
    let obs = Observation {
        generation: db.metadata.generation,
        desired_replicas: resolved.replicas,
        workload,
        refusal: None,
        stalled_rollout: stalled.clone(),
        problems: std::mem::take(&mut problems),
        endpoints: desired::endpoints(db, &resolved),
        last_backup_time,
        terminating: None,
    };
    let new = status::compute(db.status.as_ref(), &obs, Timestamp::now());
    let ready = status::find(&new, api::v1::CONDITION_READY).is_some_and(|c| c.status == "True");
    if write_status(db, ctx, &new).await? {
        info!(phase = ?new.phase, ready_replicas = new.ready_replicas, ready, "status updated");
    }
    Ok(if ready {
        Action::requeue(ctx.settings.ready_requeue)
    } else if stalled.is_some() {
        Action::requeue(ctx.settings.progress_requeue.max(Duration::from_secs(30)))
    } else {
        Action::requeue(ctx.settings.progress_requeue)
    })
}

async fn announce(db: &Database, ctx: &Context, applied: Applied, kind: &str, child: &str) {
    let (reason, verb) = match applied {
        Applied::Unchanged => return,
        Applied::Created => ("Created", "created"),
        Applied::Updated => ("Updated", "updated (drift or spec change)"),
    };
    info!(kind, child, verb, "applied child");
    publish(
        ctx,
        db,
        EventType::Normal,
        &format!("{kind}{reason}"),
        &format!("Apply{kind}"),
        format!("{kind} {child} {verb}"),
    )
    .await;
}

/// Refuses to act: records why in status (and an event when the reason is new).
async fn refuse(
    db: &Database,
    ctx: &Context,
    refusal: Refusal,
    sts: Option<&StatefulSet>,
    resolved: Option<&api::resolved::ResolvedSpec>,
    prev_degraded: Option<String>,
) -> Result<Action, Error> {
    if prev_degraded.as_deref() != Some(refusal.message.as_str()) {
        warn!(reason = refusal.reason, message = %refusal.message, "spec refused, not acting on it");
        publish(
            ctx,
            db,
            EventType::Warning,
            refusal.reason,
            "Reconcile",
            refusal.message.clone(),
        )
        .await;
    }
    let workload = sts.map(WorkloadStatus::from_statefulset);
    let desired_replicas = resolved
        .map(|r| r.replicas)
        .or_else(|| sts.and_then(|s| s.spec.as_ref()).and_then(|s| s.replicas))
        .unwrap_or(0);
    let obs = Observation {
        generation: db.metadata.generation,
        desired_replicas,
        workload,
        refusal: Some(refusal),
        endpoints: resolved
            .map(|r| desired::endpoints(db, r))
            .unwrap_or_default(),
        ..Default::default()
    };
    let new = status::compute(db.status.as_ref(), &obs, Timestamp::now());
    write_status(db, ctx, &new).await?;
    Ok(Action::requeue(ctx.settings.permanent_requeue))
}

/// Creates the credentials Secret once; never overwrites its data. Restores labels and the
/// ownerReference of *our* Secret (`existing`, already checked to be ours) if they were edited
/// away, without touching the data. Returns the Secret's uid.
async fn ensure_credentials(
    db: &Database,
    ctx: &Context,
    ns: &str,
    name: &str,
    resolved: &api::resolved::ResolvedSpec,
    existing: Option<&Secret>,
) -> Result<Option<String>, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let secret_name = desired::credentials_secret_name(name);
    match existing {
        Some(existing) => {
            let mut meta_only = desired::desired_credentials_secret(db, resolved, "")?;
            meta_only.data = None;
            meta_only.type_ = None;
            if !drift::is_satisfied_by(&meta_only, existing) {
                // The uid precondition makes the server refuse (409) if the Secret under this
                // name is no longer the one we checked.
                meta_only.metadata.uid = existing.metadata.uid.clone();
                api.patch(
                    &secret_name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&meta_only),
                )
                .await
                .map_err(|e| apply_error(e, "Secret", ns, &secret_name, true))?;
                announce(db, ctx, Applied::Updated, "Secret", &secret_name).await;
            }
            Ok(existing.metadata.uid.clone())
        }
        None => {
            let secret =
                desired::desired_credentials_secret(db, resolved, &desired::generate_password())?;
            match create_if_absent(&api, ns, &secret_name, &secret).await? {
                Some(created) => {
                    announce(db, ctx, Applied::Created, "Secret", &secret_name).await;
                    Ok(created.metadata.uid)
                }
                // Someone created it since we looked: the next reconcile classifies it.
                None => Err(Error::Stale(format!("Secret {ns}/{secret_name}"))),
            }
        }
    }
}

/// Backup CronJob (and its volume) when scheduled; removes the CronJob when not.
async fn reconcile_backup(
    db: &Database,
    ctx: &Context,
    ns: &str,
    name: &str,
    resolved: &api::resolved::ResolvedSpec,
    observed: &Observed,
) -> Result<(), Error> {
    let cj_api: Api<CronJob> = Api::namespaced(ctx.client.clone(), ns);
    let cj_name = desired::backup_cronjob_name(name);
    let observed_cj = observed.cronjob.ours();
    match desired::desired_backup_cronjob(db, resolved)? {
        Some(cj) => {
            if let Some(pvc) = desired::desired_backup_pvc(db, resolved)? {
                let pvc_api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
                let pvc_name = desired::backup_pvc_name(name);
                // Looked up first so an idle reconcile makes no write, not even a refused create.
                if matches!(observed.backup_pvc, Found::Absent)
                    && create_if_absent(&pvc_api, ns, &pvc_name, &pvc)
                        .await?
                        .is_some()
                {
                    announce(
                        db,
                        ctx,
                        Applied::Created,
                        "PersistentVolumeClaim",
                        &pvc_name,
                    )
                    .await;
                }
            }
            let applied = apply_if_drifted(&cj_api, &cj, observed_cj).await?;
            announce(db, ctx, applied, "CronJob", &cj_name).await;
        }
        None => {
            if observed_cj.is_some() {
                match cj_api.delete(&cj_name, &DeleteParams::background()).await {
                    Ok(_) => {
                        info!(child = %cj_name, "deleted backup CronJob (backupSchedule unset)");
                        publish(
                            ctx,
                            db,
                            EventType::Normal,
                            "CronJobDeleted",
                            "DeleteCronJob",
                            format!("CronJob {cj_name} deleted: spec.backupSchedule is unset"),
                        )
                        .await;
                    }
                    Err(e) if crate::error::is_not_found(&e) => {}
                    Err(e) => return Err(Error::kube("delete", "CronJob", ns, &cj_name, e)),
                }
            }
        }
    }
    Ok(())
}

async fn list_pods(ctx: &Context, ns: &str, name: &str) -> Result<Vec<Pod>, Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    api.list(&ListParams::default().labels(&desired::selector_string(name)))
        .await
        .map(|l| l.items)
        .map_err(|e| Error::kube("list", "Pod", ns, name, e))
}

/// Completion time of the newest successful backup Job.
async fn last_successful_backup(
    ctx: &Context,
    ns: &str,
    name: &str,
) -> Result<Option<Time>, Error> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let selector = format!(
        "{}={name},{}={}",
        desired::LABEL_INSTANCE,
        desired::LABEL_COMPONENT,
        desired::COMPONENT_BACKUP
    );
    let jobs = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| Error::kube("list", "Job", ns, name, e))?;
    Ok(jobs
        .items
        .iter()
        .filter_map(|j| j.status.as_ref())
        .filter(|s| s.succeeded.unwrap_or(0) > 0)
        .filter_map(|s| s.completion_time.clone())
        .max_by_key(|t| t.0))
}

/// Grows data PVCs to `spec.storageSize` where the StorageClass allows expansion. Returns the
/// problems that prevented it (never shrinks: the guard refused that already).
async fn grow_storage(
    db: &Database,
    ctx: &Context,
    ns: &str,
    resolved: &api::resolved::ResolvedSpec,
    pvcs: &[PersistentVolumeClaim],
) -> Result<Vec<Problem>, Error> {
    let mut problems = Vec::new();
    let want = resolved.storage_bytes;
    let pvc_api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    let sc_api: Api<StorageClass> = Api::all(ctx.client.clone());
    for pvc in pvcs {
        let pvc_name = pvc.name_any();
        let Some(have_q) = claim_storage(pvc) else {
            continue;
        };
        let Ok(have) = api::quantity::parse_bytes(have_q) else {
            continue;
        };
        if have >= want {
            continue;
        }
        let class = pvc.spec.as_ref().and_then(|s| s.storage_class_name.clone());
        let expandable = match &class {
            Some(c) => sc_api
                .get_opt(c)
                .await
                .map_err(|e| Error::kube("get", "StorageClass", "", c, e))?
                .and_then(|sc| sc.allow_volume_expansion)
                .unwrap_or(false),
            None => false,
        };
        if !expandable {
            problems.push(Problem {
                reason: REASON_STORAGE_EXPANSION_NOT_ALLOWED,
                message: format!(
                    "cannot grow PVC {pvc_name} from {} to {}: StorageClass {} does not allow volume expansion (allowVolumeExpansion is not true); keep spec.storageSize at {} or use a class that allows expansion",
                    have_q.0,
                    resolved.storage_size.0,
                    class.as_deref().unwrap_or("<none>"),
                    have_q.0
                ),
            });
            continue;
        }
        let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        if !bound {
            problems.push(Problem {
                reason: REASON_STORAGE_EXPANSION_PENDING,
                message: format!(
                    "PVC {pvc_name} is not bound yet; it will be grown to {} once bound",
                    resolved.storage_size.0
                ),
            });
            continue;
        }
        let patch =
            json!({"spec": {"resources": {"requests": {"storage": resolved.storage_size.0}}}});
        pvc_api
            .patch(
                &pvc_name,
                &crate::manager_patch_params(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|e| Error::kube("expand", "PersistentVolumeClaim", ns, &pvc_name, e))?;
        info!(pvc = %pvc_name, from = %have_q.0, to = %resolved.storage_size.0, "expanded PVC");
        publish(
            ctx,
            db,
            EventType::Normal,
            "StorageExpanded",
            "ExpandStorage",
            format!(
                "PVC {pvc_name} storage request grown from {} to {}",
                have_q.0, resolved.storage_size.0
            ),
        )
        .await;
    }
    Ok(problems)
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
