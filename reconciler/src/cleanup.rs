//! Ordered cleanup behind the `example.com/database-cleanup` finalizer: status Terminating,
//! the clients' Service first (no new connections), then the StatefulSet (waiting until its
//! pods are gone), then the headless Service, backup CronJob, ConfigMap and Secret, then the
//! PVCs only if the Database asks for it. The finalizer goes only when all of that is done;
//! while waiting, status and events say what for.

use std::time::Duration;

use api::v1::Database;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::info;

use crate::desired;
use crate::error::{classify_finalizer_patch_error, is_not_found, Error, FinalizerPatchFailure};
use crate::ownership::controlled_by;
use crate::reconcile::{publish, write_status, Context};
use crate::status::{self, Observation, Problem, WorkloadStatus};
use crate::FINALIZER;

pub const REASON_CLEANUP_BLOCKED: &str = "CleanupBlocked";

/// True when the Database asks for its PVCs to be deleted with it.
pub fn delete_pvcs_requested(db: &Database) -> bool {
    db.annotations()
        .get(api::ANNOTATION_DELETE_PVCS)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

fn owned_by(obj: &impl Resource, db: &Database) -> bool {
    controlled_by(obj.meta(), db)
}

/// Pods cleanup waits for: those of a StatefulSet `<name>`, except pods whose controller is a
/// StatefulSet of that name that is not ours (a foreign workload's pods are not our business).
pub fn pods_to_wait_for<'a>(
    pods: &'a [Pod],
    sts_name: &str,
    foreign_sts_uid: Option<&str>,
) -> Vec<&'a Pod> {
    pods.iter()
        .filter(|p| {
            p.owner_references().iter().any(|r| {
                r.controller == Some(true)
                    && r.kind == "StatefulSet"
                    && r.name == sts_name
                    && Some(r.uid.as_str()) != foreign_sts_uid
            })
        })
        .collect()
}

/// Deletes `name` if it exists and is owned by `db`. Returns true if a delete was issued.
async fn delete_owned<K>(
    api: &Api<K>,
    db: &Database,
    kind: &'static str,
    ns: &str,
    name: &str,
) -> Result<bool, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let Some(obj) = api
        .get_opt(name)
        .await
        .map_err(|e| Error::kube("get", kind, ns, name, e))?
    else {
        return Ok(false);
    };
    if !owned_by(&obj, db) || obj.meta().deletion_timestamp.is_some() {
        return Ok(false);
    }
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(Error::kube("delete", kind, ns, name, e)),
    }
}

/// One pass of cleanup; returns when it has to wait or when the finalizer is gone.
pub async fn run(db: &Database, ctx: &Context) -> Result<Action, Error> {
    if !db.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let ns = db.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let name = db.name_any();
    let client = ctx.client.clone();
    let svc_api: Api<Service> = Api::namespaced(client.clone(), &ns);
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let cj_api: Api<CronJob> = Api::namespaced(client.clone(), &ns);
    let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let secret_api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let pvc_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);

    // 1. Stop new connections.
    if delete_owned(&svc_api, db, "Service", &ns, &name).await? {
        info!(child = %name, "cleanup: deleted client Service");
        publish(
            ctx,
            db,
            EventType::Normal,
            "ServiceDeleted",
            "Cleanup",
            format!("cleanup: deleted client Service {name} to stop new connections"),
        )
        .await;
    }

    // 2. The StatefulSet, and wait for its pods to be gone.
    let sts = sts_api
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube("get", "StatefulSet", &ns, &name, e))?;
    if delete_owned(&sts_api, db, "StatefulSet", &ns, &name).await? {
        info!(child = %name, "cleanup: deleted StatefulSet");
        publish(
            ctx,
            db,
            EventType::Normal,
            "StatefulSetDeleted",
            "Cleanup",
            format!("cleanup: deleted StatefulSet {name}; waiting for its pods to shut down"),
        )
        .await;
    }
    let all_pods = pod_api
        .list(&ListParams::default().labels(&desired::selector_string(&name)))
        .await
        .map_err(|e| Error::kube("list", "Pod", &ns, &name, e))?
        .items;
    let foreign_sts_uid = sts
        .as_ref()
        .filter(|s| !owned_by(*s, db))
        .and_then(|s| s.metadata.uid.as_deref());
    let pods = pods_to_wait_for(&all_pods, &name, foreign_sts_uid);
    let sts_still_there = sts.as_ref().is_some_and(|s| owned_by(s, db))
        && sts_api
            .get_opt(&name)
            .await
            .map_err(|e| Error::kube("get", "StatefulSet", &ns, &name, e))?
            .is_some_and(|s| owned_by(&s, db));
    let sts = sts.as_ref().filter(|s| owned_by(*s, db));
    if sts_still_there || !pods.is_empty() {
        let waiting = format!(
            "cleanup: waiting for StatefulSet {name} and its {} pod(s) to terminate",
            pods.len()
        );
        return wait(db, ctx, sts, waiting).await;
    }

    // 3. The rest of the children.
    let headless = desired::headless_service_name(&name);
    let cronjob = desired::backup_cronjob_name(&name);
    let config = desired::config_map_name(&name);
    let secret = desired::credentials_secret_name(&name);
    let mut deleted = Vec::new();
    if delete_owned(&svc_api, db, "Service", &ns, &headless).await? {
        deleted.push(format!("Service {headless}"));
    }
    if delete_owned(&cj_api, db, "CronJob", &ns, &cronjob).await? {
        deleted.push(format!("CronJob {cronjob}"));
    }
    if delete_owned(&cm_api, db, "ConfigMap", &ns, &config).await? {
        deleted.push(format!("ConfigMap {config}"));
    }
    if delete_owned(&secret_api, db, "Secret", &ns, &secret).await? {
        deleted.push(format!("Secret {secret}"));
    }

    // 4. PVCs only on request; they are not owned, so match them by our labels.
    if delete_pvcs_requested(db) {
        let selector = format!(
            "{}={name},{}={}",
            desired::LABEL_INSTANCE,
            desired::LABEL_MANAGED_BY,
            desired::MANAGED_BY
        );
        let pvcs = pvc_api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| Error::kube("list", "PersistentVolumeClaim", &ns, &name, e))?
            .items;
        for pvc in pvcs
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
        {
            let pvc_name = pvc.name_any();
            match pvc_api.delete(&pvc_name, &DeleteParams::background()).await {
                Ok(_) => deleted.push(format!("PersistentVolumeClaim {pvc_name}")),
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    return Err(Error::kube(
                        "delete",
                        "PersistentVolumeClaim",
                        &ns,
                        &pvc_name,
                        e,
                    ))
                }
            }
        }
    }
    if !deleted.is_empty() {
        info!(deleted = ?deleted, "cleanup: deleted children");
        publish(
            ctx,
            db,
            EventType::Normal,
            "ChildrenDeleted",
            "Cleanup",
            format!("cleanup: deleted {}", deleted.join(", ")),
        )
        .await;
    }

    // 5. Done: release the Database.
    remove_finalizer(db, ctx, &ns, &name).await?;
    let kept = if delete_pvcs_requested(db) {
        "PVCs deleted"
    } else {
        "PVCs kept (set example.com/delete-pvcs-on-delete: \"true\" to delete them)"
    };
    info!(kept, "cleanup complete; finalizer removed");
    publish(
        ctx,
        db,
        EventType::Normal,
        "CleanupComplete",
        "Cleanup",
        format!("cleanup complete; {kept}"),
    )
    .await;
    Ok(Action::await_change())
}

/// Records what cleanup waits for; past the cleanup timeout it reports itself as blocked.
async fn wait(
    db: &Database,
    ctx: &Context,
    sts: Option<&StatefulSet>,
    waiting: String,
) -> Result<Action, Error> {
    let deleting_since = db.metadata.deletion_timestamp.as_ref().map(|t| t.0);
    let waited = deleting_since
        .map(|t| Timestamp::now().duration_since(t).as_secs().max(0) as u64)
        .unwrap_or(0);
    let blocked = waited >= ctx.settings.cleanup_timeout.as_secs();
    let mut problems = Vec::new();
    if blocked {
        let message = format!(
            "cleanup blocked: still {} after more than {}s; check the pods' finalizers and node status",
            waiting.trim_start_matches("cleanup: "),
            ctx.settings.cleanup_timeout.as_secs()
        );
        let already = db
            .status
            .as_ref()
            .and_then(|s| s.message.as_deref())
            .is_some_and(|m| m == message);
        if !already {
            publish(
                ctx,
                db,
                EventType::Warning,
                REASON_CLEANUP_BLOCKED,
                "Cleanup",
                message.clone(),
            )
            .await;
        }
        problems.push(Problem {
            reason: REASON_CLEANUP_BLOCKED,
            message,
        });
    }
    let message = problems.first().map_or(waiting, |p| p.message.clone());
    let obs = Observation {
        generation: db.metadata.generation,
        desired_replicas: sts
            .and_then(|s| s.spec.as_ref())
            .and_then(|s| s.replicas)
            .unwrap_or(0),
        workload: sts.map(WorkloadStatus::from_statefulset),
        problems,
        endpoints: Vec::new(),
        terminating: Some(message),
        ..Default::default()
    };
    let new = status::compute(db.status.as_ref(), &obs, Timestamp::now());
    write_status(db, ctx, &new).await?;
    Ok(Action::requeue(Duration::from_secs(2)))
}

async fn remove_finalizer(db: &Database, ctx: &Context, ns: &str, name: &str) -> Result<(), Error> {
    let Some(idx) = db.finalizers().iter().position(|f| f == FINALIZER) else {
        return Ok(());
    };
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": format!("/metadata/finalizers/{idx}"), "value": FINALIZER},
        {"op": "remove", "path": format!("/metadata/finalizers/{idx}")},
    ]))
    .map_err(|source| Error::Serialize {
        kind: "finalizer patch",
        source,
    })?;
    let api: Api<Database> = Api::namespaced(ctx.client.clone(), ns);
    match api
        .patch(
            name,
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
                namespace: ns.to_owned(),
                name: name.to_owned(),
                message,
            }),
            FinalizerPatchFailure::Other => Err(Error::kube(
                "remove finalizer from",
                "Database",
                ns,
                name,
                e,
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::tests::{db, spec};
    use std::collections::BTreeMap;

    fn pod(name: &str, owner: Option<(&str, &str, &str)>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.to_owned());
        p.metadata.owner_references = owner.map(|(kind, n, uid)| {
            vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: kind.into(),
                    name: n.into(),
                    uid: uid.into(),
                    controller: Some(true),
                    ..Default::default()
                },
            ]
        });
        p
    }

    #[test]
    fn cleanup_waits_only_for_pods_of_our_statefulset() {
        let pods = [
            pod("ours-0", Some(("StatefulSet", "orders", "our-sts"))),
            pod("foreign-0", Some(("StatefulSet", "orders", "foreign-sts"))),
            pod("other-sts-0", Some(("StatefulSet", "billing", "b"))),
            pod("bare", None),
        ];
        let names = |v: Vec<&Pod>| v.iter().map(|p| p.name_any()).collect::<Vec<_>>();
        let rows = [
            (
                "no_foreign_statefulset_waits_for_all_of_orders",
                None,
                vec!["ours-0", "foreign-0"],
            ),
            (
                "a_foreign_statefulsets_pods_do_not_block",
                Some("foreign-sts"),
                vec!["ours-0"],
            ),
        ];
        for (name, foreign, want) in rows {
            assert_eq!(
                names(pods_to_wait_for(&pods, "orders", foreign)),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn pvcs_are_kept_unless_the_annotation_says_true() {
        let rows = [
            ("no_annotation_keeps_pvcs", None, false),
            ("true_deletes_pvcs", Some("true"), true),
            ("true_is_case_insensitive", Some("True"), true),
            ("false_keeps_pvcs", Some("false"), false),
            ("garbage_keeps_pvcs", Some("yes"), false),
        ];
        for (name, value, expected) in rows {
            let mut d = db("orders", spec(api::v1::Engine::Postgres, 1));
            if let Some(v) = value {
                d.metadata.annotations = Some(BTreeMap::from([(
                    api::ANNOTATION_DELETE_PVCS.to_owned(),
                    v.to_owned(),
                )]));
            }
            assert_eq!(delete_pvcs_requested(&d), expected, "{name}");
        }
    }
}
