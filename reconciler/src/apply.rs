//! Apply: carries out a [`Plan`](crate::plan::Plan). Every request the reconciler makes for a
//! Database that is not being deleted is made here, and only for what the plan says changed.
//!
//! Ownership is a hard line here too. A child the caches do not show is created with a POST,
//! never an apply: an apply creates or updates alike, so it would take over an object someone
//! created under the name since we looked, while a POST fails with 409. Only then is the object
//! read, to tell ours (labels edited away: restored) from a foreign one (a name conflict, left
//! alone). Applies over our own children carry the observed uid.

use std::fmt::Debug;

use api::v1::Database;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use tracing::{info, warn};

use crate::context::{publish, write_status, Context};
use crate::desired;
use crate::drift;
use crate::error::{
    classify_finalizer_patch_error, is_already_exists, is_not_found, Error, FinalizerPatchFailure,
};
use crate::ownership::{self, backup_pvc_is_ours, controlled_by, Conflict};
use crate::plan::{Actions, BackupStep, Child, PdbStep, PlannedEvent, SecretStep};
use crate::status;
use crate::{FIELD_MANAGER, FINALIZER};

/// What one write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Unchanged,
    Created,
    Updated,
}

/// Children written in this reconcile, for one summarising event each way.
#[derive(Debug, Default)]
struct Written {
    created: Vec<String>,
    updated: Vec<String>,
}

impl Written {
    fn note(&mut self, applied: Applied, kind: &str, name: &str) {
        match applied {
            Applied::Unchanged => {}
            Applied::Created => self.created.push(format!("{kind} {name}")),
            Applied::Updated => self.updated.push(format!("{kind} {name}")),
        }
    }
}

fn name_conflict(db: &Database, kind: &'static str, child: &str) -> Error {
    Error::NameConflict(ownership::conflict_message(
        &db.name_any(),
        &[Conflict {
            kind,
            name: child.to_owned(),
        }],
    ))
}

/// True for the refusals of an apply whose uid does not match the object under the name.
fn is_uid_mismatch(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 || (s.code == 422 && s.message.contains("metadata.uid")))
}

/// Makes one child match the plan: nothing if it already does, an apply guarded by the
/// observed uid if it is ours, a create-only apply if the caches show nothing. Returns what was
/// done and the object as the server now has it.
async fn apply_child<K>(
    db: &Database,
    ctx: &Context,
    kind: &'static str,
    child: &Child<K>,
) -> Result<(Applied, Option<K>), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug,
{
    if !child.needs_write() {
        return Ok((Applied::Unchanged, child.observed.clone()));
    }
    let name = child.desired.meta().name.clone().unwrap_or_default();
    let ns = child.desired.meta().namespace.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let (applied, observed) = match &child.observed {
        Some(o) => (Applied::Updated, o.clone()),
        None => match create_if_absent(ctx, &api, kind, &ns, &name, &child.desired).await? {
            Some(created) => return Ok((Applied::Created, Some(created))),
            // Something is under the name that the caches do not show: look at it.
            None => match api
                .get_opt(&name)
                .await
                .map_err(|e| Error::kube("get", kind, &ns, &name, e))?
            {
                Some(x) if controlled_by(x.meta(), db) => (Applied::Updated, x),
                Some(_) => return Err(name_conflict(db, kind, &name)),
                None => return Err(Error::Stale(format!("{kind} {ns}/{name}"))),
            },
        },
    };
    if let (Ok(d), Ok(o)) = (
        serde_json::to_value(&child.desired),
        serde_json::to_value(&observed),
    ) {
        info!(kind, child = %name, field = drift::first_difference(&d, &o).unwrap_or_default(), "child drifted from desired state");
    }
    adopt_created_fields(&api, kind, &ns, &name, &observed).await?;
    // Over an observed (ours) object the apply carries its uid: if the object under this name
    // was replaced since we read it, the server refuses instead of letting us take it over.
    let mut body = child.desired.clone();
    body.meta_mut().uid = observed.meta().uid.clone();
    let result = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|e| apply_error(e, kind, &ns, &name))?;
    ctx.expectations
        .wrote(kind, &ns, &name, result.meta().resource_version.as_deref());
    Ok((applied, Some(result)))
}

/// A child we created with a POST has its fields under an `Update` entry of our manager; before
/// the first apply over it, that entry becomes our `Apply` entry (as if the object had been
/// applied), so the apply can drop fields we stop setting. Guarded by the resourceVersion we
/// observed. Done at the first drift, not at creation: most children never drift, so creating
/// costs one request.
async fn adopt_created_fields<K>(
    api: &Api<K>,
    kind: &'static str,
    ns: &str,
    name: &str,
    observed: &K,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let entries = observed
        .meta()
        .managed_fields
        .as_deref()
        .unwrap_or_default();
    if !entries.iter().any(|m| {
        m.manager.as_deref() == Some(FIELD_MANAGER) && m.operation.as_deref() == Some("Update")
    }) {
        return Ok(());
    }
    let upgraded: Vec<_> = entries
        .iter()
        .cloned()
        .map(|mut m| {
            if m.manager.as_deref() == Some(FIELD_MANAGER)
                && m.operation.as_deref() == Some("Update")
            {
                m.operation = Some("Apply".to_owned());
            }
            m
        })
        .collect();
    let patch = json!({"metadata": {
        "resourceVersion": observed.meta().resource_version,
        "managedFields": upgraded,
    }});
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        // Changed since we read it: look again.
        Err(kube::Error::Api(s)) if s.code == 409 => {
            Err(Error::Stale(format!("{kind} {ns}/{name}")))
        }
        Err(e) => {
            // Only field ownership is at stake: the apply co-owns the fields instead.
            warn!(kind, child = %name, error = %e, "could not record the created child's fields as applied");
            Ok(())
        }
    }
}

/// An apply guarded by a uid that found another object under the name is stale, not rejected:
/// the next reconcile looks again.
fn apply_error(e: kube::Error, kind: &'static str, ns: &str, name: &str) -> Error {
    if is_uid_mismatch(&e) {
        Error::Stale(format!("{kind} {ns}/{name}"))
    } else {
        Error::kube("apply", kind, ns, name, e)
    }
}

/// Creates `object` unless the name is taken; never overwrites. Returns the created object
/// (its resourceVersion remembered, so a cache that has not seen it yet waits), or `None` when
/// the name was taken.
async fn create_if_absent<K>(
    ctx: &Context,
    api: &Api<K>,
    kind: &'static str,
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
        Ok(created) => {
            ctx.expectations
                .wrote(kind, ns, name, created.meta().resource_version.as_deref());
            Ok(Some(created))
        }
        Err(e) if is_already_exists(&e) => Ok(None),
        Err(e) => Err(Error::kube("create", kind, ns, name, e)),
    }
}

/// Restores our Secret's labels and ownerReference (`meta_only` carries its uid as a
/// precondition), never its data. Returns the uid.
async fn restore_secret_metadata(
    ctx: &Context,
    api: &Api<Secret>,
    ns: &str,
    name: &str,
    meta_only: &Secret,
) -> Result<Option<String>, Error> {
    let result = api
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(meta_only),
        )
        .await
        .map_err(|e| apply_error(e, "Secret", ns, name))?;
    ctx.expectations.wrote(
        "Secret",
        ns,
        name,
        result.metadata.resource_version.as_deref(),
    );
    Ok(meta_only.metadata.uid.clone())
}

/// The credentials Secret: created once, data never rewritten. Returns its uid.
async fn credentials(
    db: &Database,
    ctx: &Context,
    actions: &Actions,
    written: &mut Written,
) -> Result<Option<String>, Error> {
    let ns = db.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let secret_name = desired::credentials_secret_name(&db.name_any());
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    match &actions.secret {
        SecretStep::Keep { uid } => Ok(uid.clone()),
        SecretStep::RestoreMetadata(meta_only) => {
            let uid = restore_secret_metadata(ctx, &api, &ns, &secret_name, meta_only).await?;
            written.note(Applied::Updated, "Secret", &secret_name);
            Ok(uid)
        }
        SecretStep::Create => {
            let secret = desired::desired_credentials_secret(
                db,
                &actions.resolved,
                &desired::generate_password(),
            )?;
            if let Some(created) =
                create_if_absent(ctx, &api, "Secret", &ns, &secret_name, &secret).await?
            {
                written.note(Applied::Created, "Secret", &secret_name);
                return Ok(created.metadata.uid);
            }
            // The name is taken by a Secret the caches do not show (its labels are gone, or it
            // is not ours): look at it.
            let existing = api
                .get_opt(&secret_name)
                .await
                .map_err(|e| Error::kube("get", "Secret", &ns, &secret_name, e))?;
            let recorded = actions
                .statefulset
                .observed
                .as_ref()
                .and_then(|s| s.annotations().get(desired::ANNOTATION_CREDENTIALS_UID))
                .cloned();
            match existing {
                Some(s) if crate::observe::secret_is_ours(&s, db, recorded.as_deref()) => {
                    let mut meta_only =
                        desired::desired_credentials_secret(db, &actions.resolved, "")?;
                    meta_only.data = None;
                    meta_only.type_ = None;
                    meta_only.metadata.uid = s.metadata.uid.clone();
                    let uid =
                        restore_secret_metadata(ctx, &api, &ns, &secret_name, &meta_only).await?;
                    written.note(Applied::Updated, "Secret", &secret_name);
                    Ok(uid)
                }
                Some(_) => Err(name_conflict(db, "Secret", &secret_name)),
                None => Err(Error::Stale(format!("Secret {ns}/{secret_name}"))),
            }
        }
    }
}

/// Carries out `actions` for `db`, writes its status, and says when to look again.
pub async fn act(db: &Database, ctx: &Context, mut actions: Actions) -> Result<Action, Error> {
    let mut written = Written::default();

    // Dependencies first: credentials and configuration, then Services, then the workload.
    let secret_uid = credentials(db, ctx, &actions, &mut written).await?;
    let (applied, _) = apply_child::<ConfigMap>(db, ctx, "ConfigMap", &actions.config).await?;
    written.note(
        applied,
        "ConfigMap",
        &desired::config_map_name(&db.name_any()),
    );
    for (i, svc) in actions.services.iter().enumerate() {
        let (applied, _) = apply_child::<Service>(db, ctx, "Service", svc).await?;
        written.note(applied, "Service", &svc.desired.name_any());
        if i == 0 {
            // The client Service exists now: clients can use the endpoints.
            actions.observation.endpoints = actions.endpoints.clone();
        }
    }
    if let Some(uid) = secret_uid {
        actions
            .statefulset
            .desired
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(desired::ANNOTATION_CREDENTIALS_UID.to_owned(), uid);
    }
    let (applied, sts) =
        apply_child::<StatefulSet>(db, ctx, "StatefulSet", &actions.statefulset).await?;
    written.note(applied, "StatefulSet", &db.name_any());
    if applied != Applied::Unchanged {
        // Status reflects the StatefulSet as written (its new generation), not the old copy.
        actions.observation.workload = sts.as_ref().map(status::WorkloadStatus::from_statefulset);
    }

    match &actions.pdb {
        PdbStep::Nothing => {}
        PdbStep::Apply(child) => {
            let (applied, _) = apply_child(db, ctx, "PodDisruptionBudget", child.as_ref()).await?;
            written.note(applied, "PodDisruptionBudget", &db.name_any());
        }
        PdbStep::Delete { uid } => {
            let ns = db.namespace().ok_or(Error::MissingMetadata("namespace"))?;
            let api: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
                Api::namespaced(ctx.client.clone(), &ns);
            if delete_guarded(
                &api,
                "PodDisruptionBudget",
                &ns,
                &db.name_any(),
                uid.clone(),
            )
            .await?
            {
                info!("deleted PodDisruptionBudget (one replica)");
            }
        }
    }
    backup(db, ctx, &actions.backup, &mut written).await?;
    grow(db, ctx, &actions).await?;

    if !written.created.is_empty() {
        info!(children = ?written.created, "created children");
        publish(
            ctx,
            db,
            EventType::Normal,
            "ChildrenCreated",
            "Apply",
            format!("created {}", written.created.join(", ")),
        )
        .await;
    }
    if !written.updated.is_empty() {
        info!(children = ?written.updated, "updated children");
        publish(
            ctx,
            db,
            EventType::Normal,
            "ChildrenUpdated",
            "Apply",
            format!(
                "updated {} (drift or spec change)",
                written.updated.join(", ")
            ),
        )
        .await;
    }
    publish_all(ctx, db, &actions.events).await;

    let new = status::compute(db.status.as_ref(), &actions.observation, Timestamp::now());
    let ready = status::find(&new, api::v1::CONDITION_READY).is_some_and(|c| c.status == "True");
    if write_status(db, ctx, &new).await? {
        info!(phase = ?new.phase, ready_replicas = new.ready_replicas, ready, "status updated");
    }
    Ok(Action::requeue(actions.requeue(&ctx.settings, ready)))
}

/// Publishes planned events in order.
pub async fn publish_all(ctx: &Context, db: &Database, events: &[PlannedEvent]) {
    for e in events {
        publish(ctx, db, e.type_, e.reason, e.action, e.note.clone()).await;
    }
}

/// The backup CronJob and its volume, or the CronJob's removal.
async fn backup(
    db: &Database,
    ctx: &Context,
    step: &BackupStep,
    written: &mut Written,
) -> Result<(), Error> {
    let ns = db.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let name = db.name_any();
    match step {
        BackupStep::Nothing => Ok(()),
        BackupStep::Scheduled {
            create_pvc,
            cronjob,
        } => {
            if let Some(pvc) = create_pvc {
                let pvc_name = desired::backup_pvc_name(&name);
                let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
                match create_if_absent(ctx, &api, "PersistentVolumeClaim", &ns, &pvc_name, pvc)
                    .await?
                {
                    Some(_) => {
                        written.note(Applied::Created, "PersistentVolumeClaim", &pvc_name);
                    }
                    None => {
                        let existing = api.get_opt(&pvc_name).await.map_err(|e| {
                            Error::kube("get", "PersistentVolumeClaim", &ns, &pvc_name, e)
                        })?;
                        if existing.is_some_and(|p| !backup_pvc_is_ours(&p, &name)) {
                            return Err(name_conflict(db, "PersistentVolumeClaim", &pvc_name));
                        }
                    }
                }
            }
            let (applied, _) = apply_child::<CronJob>(db, ctx, "CronJob", cronjob).await?;
            written.note(applied, "CronJob", &desired::backup_cronjob_name(&name));
            Ok(())
        }
        BackupStep::DeleteCronJob { uid } => {
            let cj_name = desired::backup_cronjob_name(&name);
            let api: Api<CronJob> = Api::namespaced(ctx.client.clone(), &ns);
            if delete_guarded(&api, "CronJob", &ns, &cj_name, uid.clone()).await? {
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
            Ok(())
        }
    }
}

/// Grows the PVCs the plan says to grow.
async fn grow(db: &Database, ctx: &Context, actions: &Actions) -> Result<(), Error> {
    let ns = db.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    for g in &actions.growth {
        let patch = json!({"spec": {"resources": {"requests": {"storage": g.to}}}});
        let result = api
            .patch(
                &g.pvc,
                &crate::manager_patch_params(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|e| Error::kube("expand", "PersistentVolumeClaim", &ns, &g.pvc, e))?;
        ctx.expectations.wrote(
            "PersistentVolumeClaim",
            &ns,
            &g.pvc,
            result.metadata.resource_version.as_deref(),
        );
        info!(pvc = %g.pvc, from = %g.from, to = %g.to, "expanded PVC");
        publish(
            ctx,
            db,
            EventType::Normal,
            "StorageExpanded",
            "ExpandStorage",
            format!(
                "PVC {} storage request grown from {} to {}",
                g.pvc, g.from, g.to
            ),
        )
        .await;
    }
    Ok(())
}

/// Deletes `name` only if it still has `uid` (a replaced object is left alone). Returns true
/// if a delete was issued.
pub async fn delete_guarded<K>(
    api: &Api<K>,
    kind: &'static str,
    ns: &str,
    name: &str,
    uid: Option<String>,
) -> Result<bool, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let Some(uid) = uid else {
        // Without a uid there is nothing to guard the delete with: leave it.
        warn!(kind, child = %name, "not deleting an object without a uid");
        return Ok(false);
    };
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        // The uid precondition failed: the object under this name is another one now.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(Error::kube("delete", kind, ns, name, e)),
    }
}

/// Adds the cleanup finalizer if missing (JSON patch guarded by resourceVersion).
pub async fn ensure_finalizer(db: &Database, ctx: &Context) -> Result<(), Error> {
    if db.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let ns = db.namespace().ok_or(Error::MissingMetadata("namespace"))?;
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
    let api: Api<Database> = Api::namespaced(ctx.client.clone(), &ns);
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
            namespace: ns.clone(),
            name: name.clone(),
            message,
        },
        FinalizerPatchFailure::Other => Error::kube("add finalizer to", "Database", &ns, &name, e),
    })?;
    info!("added cleanup finalizer");
    Ok(())
}

/// Removes the cleanup finalizer (JSON patch guarded by the finalizer's index).
pub async fn remove_finalizer(db: &Database, ctx: &Context) -> Result<(), Error> {
    let Some(idx) = db.finalizers().iter().position(|f| f == FINALIZER) else {
        return Ok(());
    };
    let ns = db.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let name = db.name_any();
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": format!("/metadata/finalizers/{idx}"), "value": FINALIZER},
        {"op": "remove", "path": format!("/metadata/finalizers/{idx}")},
    ]))
    .map_err(|source| Error::Serialize {
        kind: "finalizer patch",
        source,
    })?;
    let api: Api<Database> = Api::namespaced(ctx.client.clone(), &ns);
    match api
        .patch(
            &name,
            &crate::manager_patch_params(),
            &Patch::Json::<()>(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => match classify_finalizer_patch_error(&e) {
            // The `test` on the finalizer's index failed: the list changed since we read it.
            FinalizerPatchFailure::Stale => Err(Error::Stale(format!("Database {ns}/{name}"))),
            FinalizerPatchFailure::Denied(message) => Err(Error::FinalizerDenied {
                action: "removing",
                namespace: ns,
                name,
                message,
            }),
            FinalizerPatchFailure::Other => Err(Error::kube(
                "remove finalizer from",
                "Database",
                &ns,
                &name,
                e,
            )),
        },
    }
}
