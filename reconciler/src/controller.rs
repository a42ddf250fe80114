//! Wiring: the kube-runtime `Controller` over Databases and their owned children, with an
//! explicit concurrency limit, optionally gated by leader election.

use std::future::Future;
use std::sync::Arc;

use api::v1::Database;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::store::Writer;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;

use crate::context::Context;
use crate::desired::{
    COMPONENT_BACKUP, LABEL_COMPONENT, LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGED_BY,
};
use crate::leader::LeaderElector;
use crate::observe::{NameWriters, Writers};
use crate::reconcile::{error_policy, reconcile};

/// Scope and limits of one controller instance.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Only this namespace (`None` = all namespaces).
    pub namespace: Option<String>,
    /// At most this many reconciles at once (0 = unbounded, not recommended).
    pub concurrency: u16,
}

fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The Database an object of ours belongs to, from its instance label (backup Jobs belong to
/// the CronJob, pods to the StatefulSet, PVCs to nobody).
fn instance_owner<K: Resource>(obj: K) -> Option<ObjectRef<Database>> {
    let name = obj.labels().get(LABEL_INSTANCE)?.clone();
    let ns = obj.namespace()?;
    Some(ObjectRef::new(&name).within(&ns))
}

/// What a cache keeps of an object: nothing a plan does not read. managedFields keep only this
/// controller's entries (the rest is most of an object's size); Secrets lose their data (the
/// credentials are never needed after creation, and are not kept in memory), pods and Jobs
/// their spec (only metadata and status are read).
trait Trim {
    fn trim(&mut self) {}
}
impl Trim for StatefulSet {}
impl Trim for Service {}
impl Trim for ConfigMap {}
impl Trim for CronJob {}
impl Trim for PodDisruptionBudget {}
impl Trim for PersistentVolumeClaim {}
impl Trim for StorageClass {}
impl<K> Trim for PartialObjectMeta<K> {}
impl Trim for Secret {
    fn trim(&mut self) {
        self.data = None;
        self.string_data = None;
    }
}
impl Trim for Pod {
    fn trim(&mut self) {
        self.spec = None;
    }
}
impl Trim for Job {
    fn trim(&mut self) {
        self.spec = None;
    }
}

/// A watch that feeds `writer`'s cache (objects [`Trim`]med) and yields the objects it touched.
fn cached_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: Writer<K>,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()>
        + Trim
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    watcher(api, config)
        .default_backoff()
        .modify(|o: &mut K| {
            if let Some(m) = o.meta_mut().managed_fields.as_mut() {
                m.retain(|e| e.manager.as_deref() == Some(crate::FIELD_MANAGER));
            }
            o.trim();
        })
        .reflect(writer)
        .touched_objects()
}

/// Runs the controller until `shutdown` resolves.
pub async fn run_controller(
    ctx: Arc<Context>,
    scope: Scope,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let ns = scope.namespace.as_deref();
    // Children are watched by our label only: a smaller cache, and a child whose label was
    // edited away shows up as deleted, which triggers the owner's reconcile all the same.
    let children = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
    let Some(Writers {
        statefulsets,
        services,
        configmaps,
        secrets,
        cronjobs,
        pdbs,
        pvcs,
        pods,
        jobs,
        storage_classes,
        names:
            NameWriters {
                statefulsets: names_statefulsets,
                services: names_services,
                configmaps: names_configmaps,
                secrets: names_secrets,
                cronjobs: names_cronjobs,
                pvcs: names_pvcs,
                pdbs: names_pdbs,
            },
    }) = ctx.writers.lock().unwrap_or_else(|p| p.into_inner()).take()
    else {
        warn!("the controller's caches are already fed by another controller; not starting");
        return;
    };
    info!(namespace = ?scope.namespace, concurrency = scope.concurrency, "starting Database controller");
    let backup_jobs = children.clone().labels(&format!(
        "{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_COMPONENT}={COMPONENT_BACKUP}"
    ));
    let controller = Controller::new(api::<Database>(&client, ns), watcher::Config::default());
    let databases = controller.store();
    let metrics = ctx.metrics.clone();
    // Databases by phase, from the controller's own cache (no request).
    let _phases = AbortOnDrop(tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            let state = databases.state();
            metrics.set_phases(
                state
                    .iter()
                    .map(|d| d.status.as_ref().and_then(|s| s.phase)),
            );
        }
    }));
    controller
        .owns_stream(cached_watch(
            api::<StatefulSet>(&client, ns),
            children.clone(),
            statefulsets,
        ))
        .owns_stream(cached_watch(
            api::<Service>(&client, ns),
            children.clone(),
            services,
        ))
        .owns_stream(cached_watch(
            api::<ConfigMap>(&client, ns),
            children.clone(),
            configmaps,
        ))
        .owns_stream(cached_watch(
            api::<Secret>(&client, ns),
            children.clone(),
            secrets,
        ))
        .owns_stream(cached_watch(
            api::<CronJob>(&client, ns),
            children.clone(),
            cronjobs,
        ))
        .owns_stream(cached_watch(
            api::<PodDisruptionBudget>(&client, ns),
            children.clone(),
            pdbs,
        ))
        // Pods (readiness, crashes), PVCs (capacity, resize) and backup Jobs (status
        // lastBackupTime) are not owned by the Database: mapped to it by their instance label.
        .watches_stream(
            cached_watch(api::<Pod>(&client, ns), children.clone(), pods),
            instance_owner,
        )
        .watches_stream(
            cached_watch(
                api::<PersistentVolumeClaim>(&client, ns),
                children.clone(),
                pvcs,
            ),
            instance_owner,
        )
        .watches_stream(
            cached_watch(api::<Job>(&client, ns), backup_jobs, jobs),
            instance_owner,
        )
        // Which names are taken (metadata only, every object of the kinds): only feed caches.
        .watches_stream(
            cached_watch(
                api::<PartialObjectMeta<StatefulSet>>(&client, ns),
                watcher::Config::default(),
                names_statefulsets,
            ),
            |_| None,
        )
        .watches_stream(
            cached_watch(
                api::<PartialObjectMeta<Service>>(&client, ns),
                watcher::Config::default(),
                names_services,
            ),
            |_| None,
        )
        .watches_stream(
            cached_watch(
                api::<PartialObjectMeta<ConfigMap>>(&client, ns),
                watcher::Config::default(),
                names_configmaps,
            ),
            |_| None,
        )
        .watches_stream(
            cached_watch(
                api::<PartialObjectMeta<Secret>>(&client, ns),
                watcher::Config::default(),
                names_secrets,
            ),
            |_| None,
        )
        .watches_stream(
            cached_watch(
                api::<PartialObjectMeta<CronJob>>(&client, ns),
                watcher::Config::default(),
                names_cronjobs,
            ),
            |_| None,
        )
        .watches_stream(
            cached_watch(
                api::<PartialObjectMeta<PodDisruptionBudget>>(&client, ns),
                watcher::Config::default(),
                names_pdbs,
            ),
            |_| None,
        )
        .watches_stream(
            cached_watch(
                api::<PartialObjectMeta<PersistentVolumeClaim>>(&client, ns),
                watcher::Config::default(),
                names_pvcs,
            ),
            |_| None,
        )
        // StorageClasses only feed their cache (whether a PVC may grow).
        .watches_stream(
            cached_watch(
                Api::<StorageClass>::all(client.clone()),
                watcher::Config::default(),
                storage_classes,
            ),
            |_| None::<ObjectRef<Database>>,
        )
        .with_config(ControllerConfig::default().concurrency(scope.concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, action)) => debug!(object = %obj, ?action, "reconcile finished"),
                Err(kube::runtime::controller::Error::ObjectNotFound(obj)) => {
                    debug!(object = %obj, "object gone before reconcile")
                }
                Err(e) => warn!(error = %e, "controller stream error"),
            }
        })
        .await;
    info!("Database controller stopped");
}

/// Aborts the task when dropped, so dropping (or aborting) the future that owns it stops the
/// campaign and the controller too: a killed replica must stop renewing and reconciling.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why a replica stopped reconciling.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    Shutdown,
    LostLeadership,
}

/// Campaigns for leadership and runs the controller only while leading. Returns
/// `LostLeadership` if the Lease was lost (the process should exit and be restarted so no two
/// replicas ever act at once), or `Shutdown` when `shutdown` fires.
pub async fn run_with_leader_election(
    ctx: Arc<Context>,
    scope: Scope,
    elector: LeaderElector,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Stopped {
    let (tx, mut rx) = watch::channel(false);
    let identity = elector.identity().to_owned();
    let metrics = Some(ctx.metrics.clone());
    let campaign = AbortOnDrop(tokio::spawn(elector.run(tx, metrics)));
    tokio::pin!(shutdown);
    info!(%identity, "waiting for leadership");
    loop {
        tokio::select! {
            _ = &mut shutdown => return Stopped::Shutdown,
            changed = rx.changed() => {
                if changed.is_err() { return Stopped::LostLeadership; }
                if *rx.borrow() { break; }
            }
        }
    }
    info!(%identity, "leading: starting controller");
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut stop_rx2 = stop_rx.clone();
    let mut controller = AbortOnDrop(tokio::spawn(run_controller(
        ctx.clone(),
        scope,
        async move {
            let _ = stop_rx2.wait_for(|s| *s).await;
        },
    )));
    let outcome = loop {
        tokio::select! {
            _ = &mut shutdown => break Stopped::Shutdown,
            changed = rx.changed() => {
                if changed.is_err() || !*rx.borrow() { break Stopped::LostLeadership; }
            }
        }
    };
    drop(stop_rx);
    let _ = stop_tx.send(true);
    if outcome == Stopped::LostLeadership {
        // Stop immediately: another replica may already be acting.
        controller.0.abort();
    } else {
        let _ = (&mut controller.0).await;
    }
    drop(campaign);
    ctx.metrics.leader.set(0);
    outcome
}
