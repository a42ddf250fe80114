//! Wiring: the kube-runtime `Controller` over Databases and their owned children, with an
//! explicit concurrency limit, optionally gated by leader election.

use std::future::Future;
use std::sync::Arc;

use api::v1::Database;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;

use crate::desired::{
    COMPONENT_BACKUP, LABEL_COMPONENT, LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGED_BY,
};
use crate::leader::LeaderElector;
use crate::reconcile::{error_policy, reconcile, Context};

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

/// The Database a backup Job belongs to, from its instance label.
fn backup_job_owner(job: Job) -> Option<ObjectRef<Database>> {
    let name = job.labels().get(LABEL_INSTANCE)?.clone();
    let ns = job.namespace()?;
    Some(ObjectRef::new(&name).within(&ns))
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
    info!(namespace = ?scope.namespace, concurrency = scope.concurrency, "starting Database controller");
    Controller::new(api::<Database>(&client, ns), watcher::Config::default())
        .owns(api::<StatefulSet>(&client, ns), children.clone())
        .owns(api::<Service>(&client, ns), children.clone())
        .owns(api::<ConfigMap>(&client, ns), children.clone())
        .owns(api::<Secret>(&client, ns), children.clone())
        .owns(api::<CronJob>(&client, ns), children.clone())
        // Backup Jobs belong to the CronJob, not the Database: map them by label so a finished
        // backup updates status.lastBackupTime right away.
        .watches(
            api::<Job>(&client, ns),
            children.labels(&format!(
                "{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_COMPONENT}={COMPONENT_BACKUP}"
            )),
            backup_job_owner,
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
