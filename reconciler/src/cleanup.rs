//! Ordered cleanup behind the `example.com/database-cleanup` finalizer, carried out from the
//! plan [`crate::plan::plan_cleanup`] makes over the caches: status Terminating, the clients'
//! Service first (no new connections), then the StatefulSet (waiting until its pods are gone),
//! then the headless Service, backup CronJob, ConfigMap and Secret, then the PVCs only if the
//! Database asks for it. The finalizer goes only when all of that is done; while waiting,
//! status and events say what for. Every delete carries the uid it was planned for, so an
//! object replaced since it was observed is never deleted.

use std::time::Duration;

use api::v1::Database;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use tracing::info;

use crate::apply::{delete_guarded, publish_all, remove_finalizer};
use crate::context::{key, publish, write_status, Context};
use crate::error::Error;
use crate::observe::{look_up_unknown, observe};
use crate::plan::{self, Deletion, Stage};
use crate::status;
use crate::FINALIZER;

pub use crate::plan::{delete_pvcs_requested, pods_to_wait_for, REASON_CLEANUP_BLOCKED};

/// Issues one planned delete; true if it was issued.
async fn delete(ctx: &Context, ns: &str, d: &Deletion) -> Result<bool, Error> {
    let c = ctx.client.clone();
    let uid = d.uid.clone();
    match d.kind {
        "Service" => {
            delete_guarded(&Api::<Service>::namespaced(c, ns), d.kind, ns, &d.name, uid).await
        }
        "StatefulSet" => {
            delete_guarded(
                &Api::<StatefulSet>::namespaced(c, ns),
                d.kind,
                ns,
                &d.name,
                uid,
            )
            .await
        }
        "CronJob" => {
            delete_guarded(&Api::<CronJob>::namespaced(c, ns), d.kind, ns, &d.name, uid).await
        }
        "ConfigMap" => {
            delete_guarded(
                &Api::<ConfigMap>::namespaced(c, ns),
                d.kind,
                ns,
                &d.name,
                uid,
            )
            .await
        }
        "Secret" => {
            delete_guarded(&Api::<Secret>::namespaced(c, ns), d.kind, ns, &d.name, uid).await
        }
        "PersistentVolumeClaim" => {
            delete_guarded(
                &Api::<PersistentVolumeClaim>::namespaced(c, ns),
                d.kind,
                ns,
                &d.name,
                uid,
            )
            .await
        }
        _ => Ok(false),
    }
}

/// One pass of cleanup; returns when it has to wait or when the finalizer is gone.
pub async fn run(db: &Database, ctx: &Context) -> Result<Action, Error> {
    if !db.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let ns = db.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let name = db.name_any();
    let mut observed = observe(db, &ctx.stores);
    if !observed.unknown.is_empty() {
        look_up_unknown(db, &ctx.client, &mut observed).await?;
    }
    let plan = plan::plan_cleanup(
        db,
        &observed,
        ctx.settings.cleanup_timeout,
        Timestamp::now(),
    );

    let mut rest = Vec::new();
    for d in &plan.deletes {
        if !delete(ctx, &ns, d).await? {
            continue;
        }
        match d.stage {
            Stage::ClientService => {
                info!(child = %d.name, "cleanup: deleted client Service");
                publish(
                    ctx,
                    db,
                    EventType::Normal,
                    "ServiceDeleted",
                    "Cleanup",
                    format!(
                        "cleanup: deleted client Service {} to stop new connections",
                        d.name
                    ),
                )
                .await;
            }
            Stage::StatefulSet => {
                info!(child = %d.name, "cleanup: deleted StatefulSet");
                publish(
                    ctx,
                    db,
                    EventType::Normal,
                    "StatefulSetDeleted",
                    "Cleanup",
                    format!(
                        "cleanup: deleted StatefulSet {}; waiting for its pods to shut down",
                        d.name
                    ),
                )
                .await;
            }
            Stage::Rest => rest.push(format!("{} {}", d.kind, d.name)),
        }
    }
    if !rest.is_empty() {
        info!(deleted = ?rest, "cleanup: deleted children");
        publish(
            ctx,
            db,
            EventType::Normal,
            "ChildrenDeleted",
            "Cleanup",
            format!("cleanup: deleted {}", rest.join(", ")),
        )
        .await;
    }
    if let Some(observation) = &plan.waiting {
        publish_all(ctx, db, plan.event.as_slice()).await;
        let new = status::compute(db.status.as_ref(), observation, Timestamp::now());
        write_status(db, ctx, &new).await?;
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    if plan.remove_finalizer {
        remove_finalizer(db, ctx).await?;
        ctx.written_status.forget(&key(db));
        let kept = if delete_pvcs_requested(db) {
            "PVCs deleted"
        } else {
            "PVCs kept (set example.com/delete-pvcs-on-delete: \"true\" to delete them)"
        };
        info!(database = %name, kept, "cleanup complete; finalizer removed");
        publish(
            ctx,
            db,
            EventType::Normal,
            "CleanupComplete",
            "Cleanup",
            format!("cleanup complete; {kept}"),
        )
        .await;
    }
    Ok(Action::await_change())
}
