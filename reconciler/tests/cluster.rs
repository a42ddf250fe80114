//! Integration tests against the real local control plane (deploy/local, kwok makes pods Running
//! and Ready). Each test gets a fresh namespace and runs its own controller in-process, scoped to
//! that namespace, so tests run in parallel without seeing each other.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use api::catalog::Catalog;
use api::v1::{
    Database, DatabaseSpec, Engine, Phase, Scheduling, CONDITION_DEGRADED, CONDITION_READY,
};
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use reconciler::client::{build_client, WriteLog};
use reconciler::controller::{run_controller, run_with_leader_election, Scope};
use reconciler::leader::{LeaderElector, LeaseSettings};
use reconciler::metrics::Metrics;
use reconciler::reconcile::{Context, Settings};
use reconciler::FINALIZER;
use serde::de::DeserializeOwned;
use serde_json::json;
use testkit::{cluster, wait_for, NotYet, TestNamespace};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(120);

/// One in-process controller replica.
struct Replica {
    task: JoinHandle<()>,
    stop: Option<oneshot::Sender<()>>,
    writes: WriteLog,
    metrics: Arc<Metrics>,
    namespace: String,
}

impl Drop for Replica {
    /// A failed test never reaches `teardown`: release our finalizers so the namespace testkit
    /// deletes does not hang in Terminating forever.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let ns = self.namespace.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(cluster) = cluster().await else { return };
                let Ok(client) = cluster.client() else { return };
                let dbs: Api<Database> = Api::namespaced(client, &ns);
                let Ok(list) = dbs.list(&ListParams::default()).await else {
                    return;
                };
                for db in list.items {
                    let _ = dbs
                        .patch(
                            &db.name_any(),
                            &PatchParams::default(),
                            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
                        )
                        .await;
                }
            });
        })
        .join();
    }
}

impl Replica {
    /// Writes excluding Lease renewals (those are leader-election traffic, not reconcile work).
    fn work_writes(&self) -> Vec<String> {
        self.writes
            .entries()
            .into_iter()
            .filter(|w| !w.contains("/leases/") && !w.ends_with("/leases"))
            .collect()
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
        self.task.abort();
    }
}

fn context(
    client: Client,
    identity: &str,
    metrics: Arc<Metrics>,
    settings: Settings,
    catalog: Catalog,
) -> Arc<Context> {
    Arc::new(Context::new(
        client.clone(),
        catalog,
        Recorder::new(
            client,
            Reporter {
                controller: "db-operator".into(),
                instance: Some(identity.to_owned()),
            },
        ),
        metrics,
        settings,
    ))
}

/// Settings for tests: quick re-checks while progressing.
fn settings(rollout_timeout: Duration, cleanup_timeout: Duration) -> Settings {
    Settings {
        rollout_timeout,
        cleanup_timeout,
        progress_requeue: Duration::from_secs(2),
        ..Settings::default()
    }
}

/// Test settings with generous (300 s) rollout and cleanup timeouts.
fn default_settings() -> Settings {
    settings(Duration::from_secs(300), Duration::from_secs(300))
}

/// A controller scope covering only the test namespace.
fn scope_for(ns: &TestNamespace) -> Scope {
    Scope {
        namespace: Some(ns.name().to_owned()),
        concurrency: 4,
    }
}

async fn new_client(metrics: &Arc<Metrics>) -> (Client, WriteLog) {
    new_client_as(metrics, None).await
}

/// A client for the controller; `Some((ns, sa))` makes it act as that ServiceAccount.
async fn new_client_as(
    metrics: &Arc<Metrics>,
    service_account: Option<(&str, &str)>,
) -> (Client, WriteLog) {
    let mut config = cluster().await.unwrap().config().clone();
    if let Some((ns, sa)) = service_account {
        config.auth_info.impersonate = Some(format!("system:serviceaccount:{ns}:{sa}"));
        config.auth_info.impersonate_groups = Some(vec![
            "system:serviceaccounts".to_owned(),
            format!("system:serviceaccounts:{ns}"),
        ]);
    }
    let writes = WriteLog::new(Some(metrics.clone()));
    (build_client(config, 100, writes.clone()).unwrap(), writes)
}

/// Starts a controller (no leader election) scoped to `ns`.
async fn start_controller(ns: &TestNamespace) -> Replica {
    start_controller_with(ns, default_settings(), Catalog::builtin()).await
}

async fn start_controller_with(
    ns: &TestNamespace,
    settings: Settings,
    catalog: Catalog,
) -> Replica {
    start_controller_as(ns, settings, catalog, None).await
}

async fn start_controller_as(
    ns: &TestNamespace,
    settings: Settings,
    catalog: Catalog,
    service_account: Option<&str>,
) -> Replica {
    let metrics = Arc::new(Metrics::new());
    let (client, writes) = new_client_as(&metrics, service_account.map(|sa| (ns.name(), sa))).await;
    let ctx = context(client, "test", metrics.clone(), settings, catalog);
    let (tx, rx) = oneshot::channel();
    let scope = scope_for(ns);
    let task = tokio::spawn(run_controller(ctx, scope, async {
        let _ = rx.await;
    }));
    Replica {
        task,
        stop: Some(tx),
        writes,
        metrics,
        namespace: ns.name().to_owned(),
    }
}

/// Starts a replica that campaigns for `lease` before reconciling.
async fn start_elected_replica(ns: &TestNamespace, identity: &str, lease: &str) -> Replica {
    start_elected_replica_with(ns, identity, lease, LeaseDelay::default()).await
}

/// Like [`start_elected_replica`], with every Lease request of this replica delayed by
/// `delay` (settable while it runs). Leases go through their own client, as in `main`.
async fn start_elected_replica_with(
    ns: &TestNamespace,
    identity: &str,
    lease: &str,
    delay: LeaseDelay,
) -> Replica {
    let metrics = Arc::new(Metrics::new());
    let (client, writes) = new_client(&metrics).await;
    let config = cluster().await.unwrap().config().clone();
    let lease_client = kube::client::ClientBuilder::try_from(config)
        .unwrap()
        .with_layer(&reconciler::client::WriteLogLayer::new(writes.clone()))
        .with_layer(&delay.layer())
        .build();
    let ctx = context(
        client,
        identity,
        metrics.clone(),
        default_settings(),
        Catalog::builtin(),
    );
    let elector = LeaderElector::new(
        lease_client,
        LeaseSettings {
            name: lease.to_owned(),
            namespace: ns.name().to_owned(),
            identity: identity.to_owned(),
            lease_duration: Duration::from_secs(4),
            renew_deadline: Duration::from_secs(3),
            retry_period: Duration::from_millis(500),
        },
    );
    let (tx, rx) = oneshot::channel();
    let scope = scope_for(ns);
    let task = tokio::spawn(async move {
        run_with_leader_election(ctx, scope, elector, async {
            let _ = rx.await;
        })
        .await;
    });
    Replica {
        task,
        stop: Some(tx),
        writes,
        metrics,
        namespace: ns.name().to_owned(),
    }
}

/// A future run before a request is sent; `None`: send it at once.
type Hook = Arc<dyn Fn(&http::Method, &str) -> Option<BoxFuture<'static, ()>> + Send + Sync>;

/// Tower layer that runs a hook's future (given the method and path) before sending each
/// request: a slow path to the API server, another writer racing the controller. The inner
/// stack is not `Clone` (kube boxes it), so requests take turns through a mutex: fine for a
/// test's traffic.
#[derive(Clone)]
struct BeforeRequest(Hook);

impl<S> tower::Layer<S> for BeforeRequest {
    type Service = Hooked<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Hooked {
            inner: Arc::new(tokio::sync::Mutex::new(inner)),
            hook: self.0.clone(),
        }
    }
}

#[derive(Clone)]
struct Hooked<S> {
    inner: Arc<tokio::sync::Mutex<S>>,
    hook: Hook,
}

impl<S, B> tower::Service<http::Request<B>> for Hooked<S>
where
    S: tower::Service<http::Request<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        use tower::ServiceExt;
        let inner = self.inner.clone();
        let before = (self.hook)(req.method(), req.uri().path());
        Box::pin(async move {
            if let Some(before) = before {
                before.await;
            }
            let mut svc = inner.lock().await;
            svc.ready().await?.call(req).await
        })
    }
}

/// Holds every request for the current delay (milliseconds, 0 = none): a slow or partitioned
/// path to the API server, for Lease requests only.
#[derive(Clone, Default)]
struct LeaseDelay(Arc<std::sync::atomic::AtomicU64>);

impl LeaseDelay {
    fn set(&self, delay: Duration) {
        self.0.store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    fn layer(&self) -> BeforeRequest {
        let delay = self.0.clone();
        BeforeRequest(Arc::new(move |_, _| {
            let d = Duration::from_millis(delay.load(Ordering::SeqCst));
            (!d.is_zero()).then(|| Box::pin(tokio::time::sleep(d)) as BoxFuture<'static, ()>)
        }))
    }
}

/// Another writer racing the controller: runs `action` once, just before the first request
/// that `matches` (method, path), then lets that request through.
#[derive(Clone)]
struct RaceBefore {
    matches: fn(&http::Method, &str) -> bool,
    action: Arc<std::sync::Mutex<Option<BoxFuture<'static, ()>>>>,
    fired: Arc<AtomicBool>,
}

impl RaceBefore {
    fn new(
        matches: fn(&http::Method, &str) -> bool,
        action: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> RaceBefore {
        RaceBefore {
            matches,
            action: Arc::new(std::sync::Mutex::new(Some(Box::pin(action)))),
            fired: Arc::new(AtomicBool::new(false)),
        }
    }

    fn layer(&self) -> BeforeRequest {
        let race = self.clone();
        BeforeRequest(Arc::new(move |method, path| {
            if !(race.matches)(method, path) {
                return None;
            }
            let action = race.action.lock().ok()?.take()?;
            let fired = race.fired.clone();
            Some(Box::pin(async move {
                action.await;
                fired.store(true, Ordering::SeqCst);
            }))
        }))
    }
}

async fn setup(prefix: &str) -> TestNamespace {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn")),
        )
        .with_test_writer()
        .try_init();
    let cluster = cluster().await.unwrap();
    cluster
        .install_crd(&api::crd::crd(), "reconciler-tests")
        .await
        .unwrap();
    cluster.namespace(prefix).await.unwrap()
}

/// Deletes every Database while the controller still runs (so finalizers are honoured), then
/// stops the controller and removes the namespace.
async fn teardown(ns: TestNamespace, replica: Replica) {
    let dbs: Api<Database> = ns.api();
    let _ = dbs
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await;
    let _ = wait_for(Duration::from_secs(90), "Databases to be gone", || async {
        let n = dbs.list(&ListParams::default()).await?.items.len();
        if n == 0 {
            Ok(())
        } else {
            Err(NotYet::new(format!("{n} left")))
        }
    })
    .await;
    replica.stop().await;
    ns.cleanup().await.unwrap();
}

fn spec(engine: Engine, replicas: i32, version: &str, storage: &str) -> DatabaseSpec {
    DatabaseSpec {
        engine: Some(engine),
        replicas: Some(replicas),
        version: Some(version.to_owned()),
        storage_size: Some(Quantity(storage.to_owned())),
        // Nothing here needs a running server: the pods go to kwok's fake nodes.
        scheduling: Some(kwok_scheduling()),
        ..Default::default()
    }
}

/// Pods on kwok's fake nodes (tainted, so only pods that tolerate them land there).
fn kwok_scheduling() -> Scheduling {
    Scheduling {
        node_selector: Some(testkit::kwok_node_selector()),
        tolerations: Some(testkit::kwok_tolerations()),
        ..Default::default()
    }
}

async fn create_db(ns: &TestNamespace, name: &str, spec: DatabaseSpec) -> Database {
    let dbs: Api<Database> = ns.api();
    dbs.create(&PostParams::default(), &Database::new(name, spec))
        .await
        .unwrap()
}

/// Applies a JSON merge patch to the namespaced object `name` of kind `K`.
async fn merge_patch<K>(ns: &TestNamespace, name: &str, patch: serde_json::Value) -> K
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    <K as Resource>::DynamicType: Default,
{
    ns.api::<K>()
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap()
}

/// Whether the namespaced object `name` of kind `K` exists.
async fn exists<K>(ns: &TestNamespace, name: &str) -> bool
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    <K as Resource>::DynamicType: Default,
{
    ns.api::<K>().get_opt(name).await.unwrap().is_some()
}

async fn patch_spec(ns: &TestNamespace, name: &str, spec: serde_json::Value) {
    merge_patch::<Database>(ns, name, json!({ "spec": spec })).await;
}

fn condition<'a>(
    db: &'a Database,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    db.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// The status of condition `type_` ("True"/"False"/...), if the condition is present.
fn condition_status<'a>(db: &'a Database, type_: &str) -> Option<&'a str> {
    condition(db, type_).map(|c| c.status.as_str())
}

/// The message of the Degraded condition, which must be present.
fn degraded_message(db: &Database) -> String {
    condition(db, CONDITION_DEGRADED).unwrap().message.clone()
}

fn describe(db: &Database) -> String {
    serde_json::to_string(&db.status).unwrap_or_default()
}

/// Polls Database `name` (up to [`WAIT`]) until `done` holds for it, and returns it.
async fn wait_for_database(
    ns: &TestNamespace,
    name: &str,
    what: &str,
    done: impl Fn(&Database) -> bool,
) -> Database {
    let dbs: Api<Database> = ns.api();
    wait_for(WAIT, what, || async {
        let db = dbs.get(name).await?;
        if done(&db) {
            Ok(db)
        } else {
            Err(NotYet::new(describe(&db)))
        }
    })
    .await
    .unwrap()
}

/// Waits (up to [`WAIT`]) until Database `name` no longer exists.
async fn wait_database_gone(ns: &TestNamespace, name: &str, what: &str) {
    let dbs: Api<Database> = ns.api();
    wait_for(WAIT, what, || async {
        match dbs.get_opt(name).await? {
            None => Ok(()),
            Some(db) => Err(NotYet::new(describe(&db))),
        }
    })
    .await
    .unwrap();
}

/// Waits until the Database is Ready for its current generation with `replicas` ready.
async fn wait_ready(ns: &TestNamespace, name: &str, replicas: i32) -> Database {
    wait_for_database(
        ns,
        name,
        &format!("Database {name} Ready with {replicas} replicas"),
        |db| {
            let s = db.status.clone().unwrap_or_default();
            condition_status(db, CONDITION_READY) == Some("True")
                && s.ready_replicas == Some(replicas)
                && s.observed_generation == db.metadata.generation
                && s.phase == Some(Phase::Running)
        },
    )
    .await
}

/// Waits until the Database is Degraded with `reason` for its current generation.
async fn wait_degraded(ns: &TestNamespace, name: &str, reason: &str) -> Database {
    wait_for_database(
        ns,
        name,
        &format!("Database {name} Degraded with reason {reason}"),
        |db| {
            condition(db, CONDITION_DEGRADED)
                .is_some_and(|c| c.status == "True" && c.reason == reason)
                && db.status.as_ref().and_then(|s| s.observed_generation) == db.metadata.generation
        },
    )
    .await
}

fn owned_by(obj: &impl Resource, db: &Database) -> bool {
    obj.meta().owner_references.iter().flatten().any(|r| {
        Some(&r.uid) == db.metadata.uid.as_ref()
            && r.controller == Some(true)
            && r.kind == "Database"
    })
}

/// Whether the pod reports condition Ready=True.
fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The `partition` of the StatefulSet's rolling update strategy, if set.
fn rollout_partition(sts: &StatefulSet) -> Option<i32> {
    sts.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.partition)
}

/// Selects the database pods / data PVCs of Database `name`.
fn database_selector(name: &str) -> ListParams {
    ListParams::default().labels(&format!(
        "app.kubernetes.io/instance={name},app.kubernetes.io/component=database"
    ))
}

fn image_of_pod(p: &Pod) -> String {
    p.spec
        .as_ref()
        .map(|s| s.containers[0].image.clone().unwrap_or_default())
        .unwrap_or_default()
}

async fn pods(ns: &TestNamespace, name: &str) -> Vec<Pod> {
    let api: Api<Pod> = ns.api();
    api.list(&database_selector(name)).await.unwrap().items
}

/// Pokes the Database (an annotation: no generation change) so the controller reconciles it,
/// and waits until at least one more reconcile has run.
async fn poke_and_settle(ns: &TestNamespace, name: &str, replica: &Replica, token: &str) {
    let before = replica.metrics.reconcile_count();
    merge_patch::<Database>(
        ns,
        name,
        json!({"metadata": {"annotations": {"test/poke": token}}}),
    )
    .await;
    wait_for(
        Duration::from_secs(30),
        "a reconcile after the poke",
        || async {
            let now = replica.metrics.reconcile_count();
            if now > before {
                Ok(())
            } else {
                Err(NotYet::new(format!("reconciles {now}")))
            }
        },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// Two pokes in a row: the second reconcile, with nothing to change, makes no API request of
/// any verb (reads included: the children come from the watch caches).
async fn assert_idle_reconcile_makes_no_request(ns: &TestNamespace, name: &str, replica: &Replica) {
    poke_and_settle(ns, name, replica, "1").await;
    let before = replica.writes.requests();
    let reconciles = replica.metrics.reconcile_count();
    poke_and_settle(ns, name, replica, "2").await;
    let after = replica.writes.requests();
    assert!(
        replica.metrics.reconcile_count() > reconciles,
        "no reconcile ran"
    );
    assert_eq!(
        after.len(),
        before.len(),
        "idle reconcile made requests: {:?}",
        &after[before.len().min(after.len())..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_becomes_ready_with_owned_children_and_idle_reconcile_makes_no_request() {
    let ns = setup("rec-ready").await;
    let replica = start_controller(&ns).await;
    let catalog = Catalog::builtin();
    // Quantities the API server canonicalises ("0.5" is stored as "500m") must not look like drift.
    let mut s = spec(Engine::Postgres, 2, "16.4.0", "1Gi");
    s.resources = Some(
        serde_json::from_value(json!({"requests": {"cpu": "0.5", "memory": "256Mi"}})).unwrap(),
    );
    create_db(&ns, "orders", s).await;
    let db = wait_ready(&ns, "orders", 2).await;
    let status = db.status.clone().unwrap();
    assert_eq!(
        status.endpoints,
        vec![format!("orders.{}.svc:5432", ns.name())]
    );
    assert!(db.finalizers().iter().any(|f| f == FINALIZER));
    for c in [CONDITION_READY, "Available"] {
        assert_eq!(condition_status(&db, c), Some("True"), "{c}");
    }
    assert_eq!(condition_status(&db, "Progressing"), Some("False"));
    assert_eq!(condition_status(&db, CONDITION_DEGRADED), Some("False"));

    // Children: all owned by the Database, all correct.
    let sts: StatefulSet = ns.api::<StatefulSet>().get("orders").await.unwrap();
    assert!(owned_by(&sts, &db));
    let sts_spec = sts.spec.clone().unwrap();
    let want_image = catalog
        .image(Engine::Postgres, &semver::Version::parse("16.4.0").unwrap())
        .unwrap();
    let pod_spec = sts_spec.template.spec.clone().unwrap();
    assert_eq!(
        pod_spec.containers[0].image.as_deref(),
        Some(want_image.as_str())
    );
    assert_eq!(sts_spec.replicas, Some(2));
    assert_eq!(sts_spec.service_name.as_deref(), Some("orders-headless"));
    assert!(pod_spec.containers[0].readiness_probe.is_some());
    // No affinity in spec.scheduling: the replicas prefer separate nodes.
    let spread = pod_spec
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|terms| {
            terms
                .iter()
                .map(|t| t.pod_affinity_term.topology_key.clone())
                .collect::<Vec<_>>()
        });
    assert_eq!(spread, Some(vec!["kubernetes.io/hostname".to_owned()]));
    assert_eq!(
        pod_spec
            .security_context
            .as_ref()
            .and_then(|s| s.run_as_non_root),
        Some(true)
    );
    let vct = &sts_spec.volume_claim_templates.unwrap()[0];
    assert_eq!(
        vct.spec
            .as_ref()
            .unwrap()
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"],
        Quantity("1Gi".into())
    );
    let svc: Service = ns.api::<Service>().get("orders").await.unwrap();
    assert!(owned_by(&svc, &db));
    let headless: Service = ns.api::<Service>().get("orders-headless").await.unwrap();
    assert!(owned_by(&headless, &db));
    assert_eq!(headless.spec.unwrap().cluster_ip.as_deref(), Some("None"));
    let cm: ConfigMap = ns.api::<ConfigMap>().get("orders-config").await.unwrap();
    assert!(owned_by(&cm, &db));
    assert!(cm.data.unwrap()["postgresql.conf"].contains("listen_addresses = '*'"));
    let secret: Secret = ns.api::<Secret>().get("orders-credentials").await.unwrap();
    assert!(owned_by(&secret, &db));
    let password = secret.data.clone().unwrap()["password"].clone();
    assert_eq!(password.0.len(), 32);
    assert!(
        !exists::<CronJob>(&ns, "orders-backup").await,
        "no schedule, no CronJob"
    );

    // Idle: a reconcile with nothing to change makes zero writes.
    assert_idle_reconcile_makes_no_request(&ns, "orders", &replica).await;

    // Drift: a child deleted by hand comes back; a hand edit is reverted.
    let old_uid = svc.metadata.uid.clone();
    ns.api::<Service>()
        .delete("orders", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(WAIT, "client Service to be recreated", || async {
        match ns.api::<Service>().get_opt("orders").await? {
            Some(s) if s.metadata.uid != old_uid && s.metadata.deletion_timestamp.is_none() => {
                Ok(())
            }
            other => Err(NotYet::new(format!("{:?}", other.map(|s| s.metadata.uid)))),
        }
    })
    .await
    .unwrap();
    merge_patch::<ConfigMap>(
        &ns,
        "orders-config",
        json!({"data": {"postgresql.conf": "hacked"}}),
    )
    .await;
    merge_patch::<StatefulSet>(&ns, "orders", json!({"spec": {"replicas": 5}})).await;
    wait_for(
        WAIT,
        "ConfigMap and StatefulSet edits to be reverted",
        || async {
            let cm = ns.api::<ConfigMap>().get("orders-config").await?;
            let sts = ns.api::<StatefulSet>().get("orders").await?;
            let conf = cm
                .data
                .unwrap_or_default()
                .get("postgresql.conf")
                .cloned()
                .unwrap_or_default();
            let replicas = sts.spec.and_then(|s| s.replicas);
            if conf.contains("listen_addresses") && replicas == Some(2) {
                Ok(())
            } else {
                Err(NotYet::new(format!("conf={conf:?} replicas={replicas:?}")))
            }
        },
    )
    .await
    .unwrap();
    // A Secret stripped of our label (so it drops out of the filtered watch) and owner is
    // re-labelled and re-owned, and its password is left alone.
    merge_patch::<Secret>(
        &ns,
        "orders-credentials",
        json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": null}, "ownerReferences": null}}),
    )
    .await;
    wait_for(WAIT, "Secret label and owner to be restored", || async {
        let s = ns.api::<Secret>().get("orders-credentials").await?;
        if owned_by(&s, &db)
            && s.labels()
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str)
                == Some("db-operator")
        {
            Ok(())
        } else {
            Err(NotYet::new(format!(
                "{:?} {:?}",
                s.metadata.labels, s.metadata.owner_references
            )))
        }
    })
    .await
    .unwrap();
    // The Secret was never regenerated.
    let secret: Secret = ns.api::<Secret>().get("orders-credentials").await.unwrap();
    assert_eq!(secret.data.unwrap()["password"], password);
    wait_ready(&ns, "orders", 2).await;

    teardown(ns, replica).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_follows_spec_replicas() {
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    let ns = setup("rec-scale").await;
    let replica = start_controller(&ns).await;
    create_db(&ns, "inventory", spec(Engine::Mysql, 1, "8.4.0", "1Gi")).await;
    let db = wait_ready(&ns, "inventory", 1).await;
    assert!(
        !exists::<PodDisruptionBudget>(&ns, "inventory").await,
        "one replica: no PodDisruptionBudget (it would block every drain)"
    );
    patch_spec(&ns, "inventory", json!({"replicas": 3})).await;
    wait_ready(&ns, "inventory", 3).await;
    assert_eq!(pods(&ns, "inventory").await.len(), 3);
    // More than one replica: a drain may take one database pod at a time.
    let pdb: PodDisruptionBudget = ns.api().get("inventory").await.unwrap();
    assert!(owned_by(&pdb, &db));
    assert_eq!(
        pdb.spec.and_then(|s| s.max_unavailable),
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    patch_spec(&ns, "inventory", json!({"replicas": 1})).await;
    wait_ready(&ns, "inventory", 1).await;
    wait_for(WAIT, "scale-down to leave one pod", || async {
        let n = pods(&ns, "inventory").await.len();
        if n == 1 {
            Ok(())
        } else {
            Err(NotYet::new(format!("{n} pods")))
        }
    })
    .await
    .unwrap();
    wait_for(
        WAIT,
        "the PodDisruptionBudget to go at one replica",
        || async {
            if exists::<PodDisruptionBudget>(&ns, "inventory").await {
                Err(NotYet::new("still there"))
            } else {
                Ok(())
            }
        },
    )
    .await
    .unwrap();
    teardown(ns, replica).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_upgrade_and_config_change_roll_pods_one_at_a_time() {
    let ns = setup("rec-roll").await;
    let replica = start_controller(&ns).await;
    let catalog = Catalog::builtin();
    create_db(&ns, "ledger", spec(Engine::Postgres, 3, "16.4.0", "1Gi")).await;
    wait_ready(&ns, "ledger", 3).await;

    let new_image = catalog
        .image(Engine::Postgres, &semver::Version::parse("17.2.0").unwrap())
        .unwrap();
    // Sample the pods during the rollout: never more than one pod down at a time.
    // Watch every pod event during the rollout (kwok makes pods Ready within milliseconds, so
    // polling could miss the intermediate states): never more than one pod down, and old and
    // new versions side by side at some point (one pod at a time, not all at once).
    let worst_unavailable = Arc::new(AtomicUsize::new(0));
    let saw_mixed_versions = Arc::new(AtomicBool::new(false));
    let observer = {
        let api: Api<Pod> = ns.api();
        let new_image = new_image.clone();
        let worst = worst_unavailable.clone();
        let mixed = saw_mixed_versions.clone();
        tokio::spawn(async move {
            use futures::StreamExt;
            use kube::runtime::watcher::{watcher, Config as WatcherConfig, Event as WatchEvent};
            let mut state: BTreeMap<String, (String, bool)> = BTreeMap::new();
            let cfg = WatcherConfig::default()
                .labels("app.kubernetes.io/instance=ledger,app.kubernetes.io/component=database");
            let mut stream = watcher(api, cfg).boxed();
            let mut synced = false;
            while let Some(ev) = stream.next().await {
                let Ok(ev) = ev else { continue };
                match ev {
                    WatchEvent::Apply(p) | WatchEvent::InitApply(p) => {
                        let ready = p.metadata.deletion_timestamp.is_none() && pod_ready(&p);
                        state.insert(p.name_any(), (image_of_pod(&p), ready));
                    }
                    WatchEvent::Delete(p) => {
                        state.remove(&p.name_any());
                    }
                    WatchEvent::Init => state.clear(),
                    WatchEvent::InitDone => synced = true,
                }
                if !synced {
                    continue;
                }
                let ready = state.values().filter(|(_, r)| *r).count();
                worst.fetch_max(3usize.saturating_sub(ready), Ordering::Relaxed);
                let new = state.values().filter(|(i, _)| *i == new_image).count();
                if new > 0 && new < state.len() {
                    mixed.store(true, Ordering::Relaxed);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    patch_spec(&ns, "ledger", json!({"version": "17.2.0"})).await;
    wait_for(WAIT, "every pod to run the new image", || async {
        let ps = pods(&ns, "ledger").await;
        let ready = ps
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| pod_ready(p))
            .count();
        let new = ps.iter().filter(|p| image_of_pod(p) == new_image).count();
        if new == 3 && ps.len() == 3 && ready == 3 {
            Ok(())
        } else {
            Err(NotYet::new(format!("{new}/3 updated, {ready} ready")))
        }
    })
    .await
    .unwrap();
    observer.abort();
    let worst_unavailable = worst_unavailable.load(Ordering::Relaxed);
    assert!(
        worst_unavailable <= 1,
        "at most one pod may be down during the rollout, saw {worst_unavailable}"
    );
    assert!(
        saw_mixed_versions.load(Ordering::Relaxed),
        "pods were replaced one by one, not all at once"
    );
    wait_ready(&ns, "ledger", 3).await;

    // A config change rolls the pods too (the pod template carries the config hash).
    let sts: StatefulSet = ns.api::<StatefulSet>().get("ledger").await.unwrap();
    let hash_of = |s: &StatefulSet| {
        s.spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()["example.com/config-hash"]
            .clone()
    };
    let old_hash = hash_of(&sts);
    let old_revision = sts.status.as_ref().and_then(|s| s.update_revision.clone());
    patch_spec(&ns, "ledger", json!({"config": {"max_connections": "250"}})).await;
    let sts = wait_for(WAIT, "new config hash on the pod template", || async {
        let s = ns.api::<StatefulSet>().get("ledger").await?;
        if hash_of(&s) != old_hash {
            Ok(s)
        } else {
            Err(NotYet::new("same hash"))
        }
    })
    .await
    .unwrap();
    let cm: ConfigMap = ns.api::<ConfigMap>().get("ledger-config").await.unwrap();
    assert!(cm.data.unwrap()["postgresql.conf"].contains("max_connections = '250'"));
    let _ = sts;
    wait_for(WAIT, "all pods on the new revision", || async {
        let s = ns.api::<StatefulSet>().get("ledger").await?;
        let st = s.status.unwrap_or_default();
        let rev = st.update_revision.clone();
        let ps = pods(&ns, "ledger").await;
        let on_new = ps
            .iter()
            .filter(|p| p.labels().get("controller-revision-hash") == rev.as_ref())
            .count();
        if rev != old_revision && on_new == 3 && st.updated_replicas == Some(3) {
            Ok(())
        } else {
            Err(NotYet::new(format!("{on_new}/3 pods on {rev:?}")))
        }
    })
    .await
    .unwrap();
    wait_ready(&ns, "ledger", 3).await;
    teardown(ns, replica).await;
}

async fn pvc_sizes(ns: &TestNamespace, name: &str) -> Vec<String> {
    let api: Api<PersistentVolumeClaim> = ns.api();
    let mut out: Vec<(String, String)> = api
        .list(&database_selector(name))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| {
            let size = p
                .spec
                .as_ref()
                .unwrap()
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["storage"]
                .0
                .clone();
            (p.name_any(), size)
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, s)| s).collect()
}

async fn wait_pvcs_bound(ns: &TestNamespace, name: &str, n: usize) {
    let api: Api<PersistentVolumeClaim> = ns.api();
    wait_for(WAIT, "data PVCs to be Bound", || async {
        let l = api.list(&database_selector(name)).await?;
        let bound = l
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
            .count();
        if bound == n {
            Ok(())
        } else {
            Err(NotYet::new(format!("{bound}/{n} bound")))
        }
    })
    .await
    .unwrap();
}

/// Waits (up to [`WAIT`]) until the data PVC sizes of Database `name` (sorted by PVC name)
/// satisfy `done`.
async fn wait_pvc_sizes(
    ns: &TestNamespace,
    name: &str,
    what: &str,
    done: impl Fn(&[String]) -> bool,
) {
    wait_for(WAIT, what, || async {
        let sizes = pvc_sizes(ns, name).await;
        if done(&sizes) {
            Ok(())
        } else {
            Err(NotYet::new(format!("{sizes:?}")))
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_grows_pvcs_refuses_shrink_and_explains_a_class_without_expansion() {
    let ns = setup("rec-storage").await;
    let replica = start_controller(&ns).await;
    create_db(&ns, "media", spec(Engine::Postgres, 2, "16.4.0", "1Gi")).await;
    wait_ready(&ns, "media", 2).await;
    wait_pvcs_bound(&ns, "media", 2).await;

    patch_spec(&ns, "media", json!({"storageSize": "2Gi"})).await;
    wait_pvc_sizes(&ns, "media", "both PVCs to request 2Gi", |sizes| {
        sizes == ["2Gi", "2Gi"]
    })
    .await;

    // The API server's own rules forbid shrinking spec.storageSize, but what runs can still be
    // bigger than the spec (a PVC grown by hand). Acting would shrink it: the reconciler refuses
    // and applies nothing of that generation.
    merge_patch::<PersistentVolumeClaim>(
        &ns,
        "data-media-0",
        json!({"spec": {"resources": {"requests": {"storage": "3Gi"}}}}),
    )
    .await;
    patch_spec(&ns, "media", json!({"replicas": 3})).await;
    let db = wait_degraded(&ns, "media", "DestructiveChangeRefused").await;
    let msg = degraded_message(&db);
    assert!(msg.contains("cannot shrink from 3Gi to 2Gi"), "{msg}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(pvc_sizes(&ns, "media").await, vec!["3Gi", "2Gi"]);
    let sts: StatefulSet = ns.api::<StatefulSet>().get("media").await.unwrap();
    assert_eq!(
        sts.spec.unwrap().replicas,
        Some(2),
        "a refused spec is not partially applied"
    );
    // Raising the spec to what exists lifts the refusal; the smaller PVC grows to match.
    patch_spec(&ns, "media", json!({"storageSize": "3Gi"})).await;
    wait_ready(&ns, "media", 3).await;
    wait_pvc_sizes(&ns, "media", "every PVC to request 3Gi", |sizes| {
        sizes.len() == 3 && sizes.iter().take(2).all(|s| s == "3Gi")
    })
    .await;

    // A class that forbids expansion: a clear condition, PVCs untouched.
    let sc_name = format!("noexpand-{}", ns.name());
    let scs: Api<StorageClass> = Api::all(ns.client());
    let sc: StorageClass = serde_json::from_value(json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": sc_name},
        "provisioner": "kubernetes.io/host-path",
        "volumeBindingMode": "Immediate",
        "allowVolumeExpansion": false
    }))
    .unwrap();
    scs.create(&PostParams::default(), &sc).await.unwrap();
    let mut s = spec(Engine::Postgres, 1, "16.4.0", "1Gi");
    s.storage_class_name = Some(sc_name.clone());
    create_db(&ns, "fixed", s).await;
    wait_ready(&ns, "fixed", 1).await;
    wait_pvcs_bound(&ns, "fixed", 1).await;
    patch_spec(&ns, "fixed", json!({"storageSize": "3Gi"})).await;
    let db = wait_degraded(&ns, "fixed", "StorageExpansionNotAllowed").await;
    let msg = degraded_message(&db);
    assert!(
        msg.contains(&sc_name) && msg.contains("does not allow volume expansion"),
        "{msg}"
    );
    assert_eq!(pvc_sizes(&ns, "fixed").await, vec!["1Gi"]);

    teardown(ns, replica).await;
    let _ = scs.delete(&sc_name, &DeleteParams::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_spec_bypassing_admission_is_refused_with_a_condition() {
    let ns = setup("rec-invalid").await;
    // The reconciler's catalog no longer supports PostgreSQL 14 while the API server (and any
    // admission webhook, which uses the built-in catalog) still accepts it: exactly the spec that
    // slipped past admission and must not be acted on.
    let builtin = api::catalog::BUILTIN_CATALOG_YAML;
    let line_14 = "      - line: \"14\"\n        minimum: \"14.0.0\"\n";
    let edge_14 = "      - { from: \"14\", to: \"15\" }\n";
    assert!(
        builtin.contains(line_14) && builtin.contains(edge_14),
        "catalog format changed"
    );
    let without_14: String = builtin
        .replace(edge_14, "")
        .lines()
        .scan(false, |skipping, l| {
            if l == "      - line: \"14\"" {
                *skipping = true;
                return Some(None);
            }
            if *skipping && l.starts_with("        ") {
                return Some(None);
            }
            *skipping = false;
            Some(Some(l))
        })
        .flatten()
        .collect::<Vec<_>>()
        .join("\n");
    let catalog = Catalog::from_yaml(&without_14).unwrap();
    assert!(!catalog.supports(Engine::Postgres, &semver::Version::parse("14.5.0").unwrap()));
    let replica = start_controller_with(&ns, default_settings(), catalog).await;
    create_db(&ns, "legacy", spec(Engine::Postgres, 1, "14.5.0", "1Gi")).await;
    let db = wait_degraded(&ns, "legacy", "InvalidSpec").await;
    let ready = condition(&db, CONDITION_READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "InvalidSpec")
    );
    assert!(ready.message.contains("spec.version"), "{}", ready.message);
    assert_eq!(db.status.as_ref().unwrap().phase, Some(Phase::Failed));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !exists::<StatefulSet>(&ns, "legacy").await,
        "nothing acted on"
    );
    assert!(!exists::<Secret>(&ns, "legacy-credentials").await);
    // Refusing does not hot-loop: a few seconds add no further writes.
    let n = replica.writes.len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(replica.writes.len(), n, "{:?}", replica.writes.entries());
    // Fixing the spec lets it proceed.
    patch_spec(&ns, "legacy", json!({"version": "15.8.0"})).await;
    wait_ready(&ns, "legacy", 1).await;
    teardown(ns, replica).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_cleans_up_in_order_and_honours_the_pvc_annotation() {
    let ns = setup("rec-delete").await;
    let replica = start_controller(&ns).await;
    let mut keep = spec(Engine::Postgres, 2, "16.4.0", "1Gi");
    keep.backup_schedule = Some("0 3 * * *".into());
    create_db(&ns, "keep", keep).await;
    let dbs: Api<Database> = ns.api();
    let mut purge = Database::new("purge", spec(Engine::Mysql, 1, "8.4.0", "1Gi"));
    purge.metadata.annotations = Some(BTreeMap::from([(
        api::ANNOTATION_DELETE_PVCS.to_owned(),
        "true".to_owned(),
    )]));
    dbs.create(&PostParams::default(), &purge).await.unwrap();
    wait_ready(&ns, "keep", 2).await;
    wait_ready(&ns, "purge", 1).await;
    assert!(exists::<CronJob>(&ns, "keep-backup").await);

    for name in ["keep", "purge"] {
        dbs.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for name in ["keep", "purge"] {
        wait_database_gone(
            &ns,
            name,
            &format!("Database {name} to be gone (finalizer released)"),
        )
        .await;
    }
    for name in ["keep", "purge"] {
        assert!(!exists::<StatefulSet>(&ns, name).await);
        assert!(!exists::<Service>(&ns, name).await);
        assert!(!exists::<ConfigMap>(&ns, &format!("{name}-config")).await);
        assert!(!exists::<Secret>(&ns, &format!("{name}-credentials")).await);
        assert!(pods(&ns, name).await.is_empty());
    }
    assert!(!exists::<CronJob>(&ns, "keep-backup").await);
    let live_pvcs = |name: &'static str| {
        let api: Api<PersistentVolumeClaim> = ns.api();
        async move {
            api.list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={name}")))
                .await
                .unwrap()
                .items
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .count()
        }
    };
    assert_eq!(
        live_pvcs("keep").await,
        3,
        "2 data PVCs + the backup PVC are kept"
    );
    assert_eq!(
        live_pvcs("purge").await,
        0,
        "annotated Database's PVCs are deleted"
    );

    // Order, from the events: client Service, then StatefulSet, then the rest.
    let events: Api<K8sEvent> = ns.api();
    let mut evs: Vec<K8sEvent> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("keep"))
        .filter(|e| e.action.as_deref() == Some("Cleanup"))
        .collect();
    evs.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    let reasons: Vec<String> = evs.iter().filter_map(|e| e.reason.clone()).collect();
    let pos = |r: &str| {
        reasons
            .iter()
            .position(|x| x == r)
            .unwrap_or_else(|| panic!("no {r} in {reasons:?}"))
    };
    assert!(
        pos("ServiceDeleted") < pos("StatefulSetDeleted"),
        "{reasons:?}"
    );
    assert!(
        pos("StatefulSetDeleted") < pos("ChildrenDeleted"),
        "{reasons:?}"
    );
    assert!(
        pos("ChildrenDeleted") < pos("CleanupComplete"),
        "{reasons:?}"
    );

    teardown(ns, replica).await;
}

/// The current holder of Lease `lease`, if any (and if it can be read).
async fn lease_holder(leases: &Api<Lease>, lease: &str) -> Option<String> {
    leases
        .get_opt(lease)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

/// Waits (up to 30 s) until `identity` holds Lease `lease`.
async fn wait_for_leader(leases: &Api<Lease>, lease: &str, identity: &str, what: &str) {
    wait_for(Duration::from_secs(30), what, || async {
        match lease_holder(leases, lease).await {
            Some(h) if h == identity => Ok(()),
            other => Err(NotYet::new(format!("{other:?}"))),
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_hands_over_to_the_follower_without_duplicate_work() {
    let ns = setup("rec-leader").await;
    let lease = "db-operator-test";
    let a = start_elected_replica(&ns, "replica-a", lease).await;
    let leases: Api<Lease> = ns.api();
    wait_for_leader(&leases, lease, "replica-a", "replica-a to lead").await;
    let b = start_elected_replica(&ns, "replica-b", lease).await;
    create_db(&ns, "billing", spec(Engine::Postgres, 1, "16.4.0", "1Gi")).await;
    wait_ready(&ns, "billing", 1).await;
    assert!(!a.work_writes().is_empty(), "the leader did the work");
    assert!(
        b.work_writes().is_empty(),
        "the follower did nothing: {:?}",
        b.work_writes()
    );
    assert_eq!(
        lease_holder(&leases, lease).await.as_deref(),
        Some("replica-a")
    );

    // Kill the leader: no graceful release, the Lease must expire.
    a.task.abort();
    wait_for_leader(&leases, lease, "replica-b", "replica-b to take over").await;
    // The new leader reconciles the converged Database without redoing anything.
    wait_for(
        Duration::from_secs(30),
        "replica-b to reconcile",
        || async {
            if b.metrics.reconcile_count() > 0 {
                Ok(())
            } else {
                Err(NotYet::new("no reconcile yet"))
            }
        },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        b.work_writes().is_empty(),
        "takeover redid work: {:?}",
        b.work_writes()
    );
    // And it continues: a spec change is acted on by the new leader.
    patch_spec(&ns, "billing", json!({"replicas": 2})).await;
    wait_ready(&ns, "billing", 2).await;
    assert!(!b.work_writes().is_empty());
    teardown(ns, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_stuck_on_an_unready_pod_is_reported_degraded_and_goes_no_further() {
    let ns = setup("rec-stall").await;
    let replica = start_controller_with(
        &ns,
        settings(Duration::from_secs(5), Duration::from_secs(300)),
        Catalog::builtin(),
    )
    .await;
    create_db(&ns, "stuck", spec(Engine::Postgres, 3, "16.4.0", "1Gi")).await;
    wait_ready(&ns, "stuck", 3).await;
    let before: StatefulSet = ns.api::<StatefulSet>().get("stuck").await.unwrap();
    let old_revision = before.status.and_then(|s| s.update_revision).unwrap();
    // More CPU than any node has: the first updated pod can never be scheduled, so never Ready.
    patch_spec(
        &ns,
        "stuck",
        json!({"resources": {"requests": {"cpu": "100"}, "limits": {"cpu": "100"}}}),
    )
    .await;
    let db = wait_degraded(&ns, "stuck", "RolloutStalled").await;
    let msg = degraded_message(&db);
    // "has not become Ready for Ns" while the stall is observed, "did not become Ready within
    // 5s" once the pause holds (until the StatefulSet controller observes the paused spec, the
    // stall is not re-evaluated): either names the pod and says why the rollout stopped.
    assert!(
        msg.contains("stuck-2") && msg.contains("become Ready"),
        "{msg}"
    );
    assert_eq!(
        condition(&db, "Progressing").map(|c| (c.status.as_str(), c.reason.as_str())),
        Some(("False", "RolloutStalled"))
    );
    // Only the highest ordinal was touched; the others still run the old revision.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ps = pods(&ns, "stuck").await;
    let on_old = ps
        .iter()
        .filter(|p| p.labels().get("controller-revision-hash") == Some(&old_revision))
        .count();
    assert_eq!(
        on_old, 2,
        "the rollout must not continue past the stuck pod"
    );
    // Paused explicitly with a partition at the stuck pod, so it stays paused even if that pod
    // turns Ready later.
    let sts: StatefulSet = ns.api::<StatefulSet>().get("stuck").await.unwrap();
    assert_eq!(rollout_partition(&sts), Some(2));
    assert_eq!(
        sts.annotations()
            .get("example.com/rollout-paused-at")
            .map(String::as_str),
        Some("stuck-2")
    );
    // Changing the template (reverting the resources) lifts the pause.
    patch_spec(&ns, "stuck", json!({"resources": null})).await;
    wait_for(WAIT, "the pause to be lifted", || async {
        let sts = ns.api::<StatefulSet>().get("stuck").await?;
        let partition = rollout_partition(&sts);
        let marked = sts
            .annotations()
            .contains_key("example.com/rollout-paused-at");
        if partition == Some(0) && !marked {
            Ok(())
        } else {
            Err(NotYet::new(format!(
                "partition {partition:?}, marked {marked}"
            )))
        }
    })
    .await
    .unwrap();
    teardown(ns, replica).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_schedule_creates_cronjob_reports_last_backup_and_unset_removes_it() {
    let ns = setup("rec-backup").await;
    let replica = start_controller(&ns).await;
    let mut s = spec(Engine::Mysql, 1, "8.4.0", "1Gi");
    s.backup_schedule = Some("*/30 * * * *".into());
    let db = create_db(&ns, "shop", s).await;
    wait_ready(&ns, "shop", 1).await;
    let cj: CronJob = ns.api::<CronJob>().get("shop-backup").await.unwrap();
    let db = ns.api::<Database>().get(&db.name_any()).await.unwrap();
    assert!(owned_by(&cj, &db));
    let cmd = cj
        .spec
        .job_template
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .command
        .clone()
        .unwrap()
        .join(" ");
    assert!(cmd.contains("mysqldump"), "{cmd}");
    assert!(exists::<PersistentVolumeClaim>(&ns, "shop-backups").await);
    // Idle with a CronJob and a MySQL config too: zero writes.
    assert_idle_reconcile_makes_no_request(&ns, "shop", &replica).await;

    // Run one backup now, as `kubectl create job --from=cronjob/shop-backup` would.
    let template = cj.spec.job_template.clone();
    let job = Job {
        metadata: kube::api::ObjectMeta {
            name: Some("shop-backup-manual".into()),
            labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
            owner_references: Some(vec![cj.controller_owner_ref(&()).unwrap()]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    };
    ns.api::<Job>()
        .create(&PostParams::default(), &job)
        .await
        .unwrap();
    wait_for_database(
        &ns,
        "shop",
        "status.lastBackupTime from the finished Job",
        |db| {
            db.status
                .as_ref()
                .is_some_and(|s| s.last_backup_time.is_some())
        },
    )
    .await;

    patch_spec(&ns, "shop", json!({"backupSchedule": null})).await;
    wait_for(
        WAIT,
        "CronJob removed once backupSchedule is unset",
        || async {
            match ns.api::<CronJob>().get_opt("shop-backup").await? {
                None => Ok(()),
                Some(c) if c.metadata.deletion_timestamp.is_some() => Ok(()),
                Some(_) => Err(NotYet::new("still there")),
            }
        },
    )
    .await
    .unwrap();
    teardown(ns, replica).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_that_cannot_finish_says_why_and_keeps_the_finalizer() {
    let ns = setup("rec-blocked").await;
    let replica = start_controller_with(
        &ns,
        settings(Duration::from_secs(300), Duration::from_secs(3)),
        Catalog::builtin(),
    )
    .await;
    create_db(&ns, "sticky", spec(Engine::Postgres, 1, "16.4.0", "1Gi")).await;
    wait_ready(&ns, "sticky", 1).await;
    // A pod that cannot go away (someone else's finalizer on it).
    merge_patch::<Pod>(
        &ns,
        "sticky-0",
        json!({"metadata": {"finalizers": ["example.com/test-hold"]}}),
    )
    .await;
    let dbs: Api<Database> = ns.api();
    dbs.delete("sticky", &DeleteParams::default())
        .await
        .unwrap();
    let db = wait_for_database(&ns, "sticky", "cleanup to report itself blocked", |db| {
        condition(db, CONDITION_DEGRADED).is_some_and(|c| c.reason == "CleanupBlocked")
    })
    .await;
    let status = db.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Terminating));
    assert!(
        status
            .message
            .clone()
            .unwrap_or_default()
            .contains("pod(s) to terminate"),
        "{status:?}"
    );
    assert!(
        db.finalizers().iter().any(|f| f == FINALIZER),
        "finalizer kept while cleanup is incomplete"
    );
    assert!(
        !exists::<Service>(&ns, "sticky").await,
        "client Service went first"
    );
    let events: Api<K8sEvent> = ns.api();
    let warned = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .any(|e| {
            e.reason.as_deref() == Some("CleanupBlocked") && e.type_.as_deref() == Some("Warning")
        });
    assert!(warned, "a Warning event explains the blocked cleanup");
    // Once the obstacle is gone, cleanup completes and the Database goes away.
    merge_patch::<Pod>(&ns, "sticky-0", json!({"metadata": {"finalizers": null}})).await;
    wait_database_gone(&ns, "sticky", "Database sticky to be gone").await;
    teardown(ns, replica).await;
}

/// The namespaced permissions the reconciler needs (what the deploy RBAC must grant), as
/// `(apiGroup, resources, verbs)`. StorageClasses (cluster-scoped, `get`) are only needed for
/// storage growth and are not exercised here.
const RECONCILER_RULES: &[(&str, &[&str], &[&str])] = &[
    (
        "example.com",
        &["databases"],
        &["get", "list", "watch", "patch"],
    ),
    ("example.com", &["databases/status"], &["get", "patch"]),
    (
        "apps",
        &["statefulsets"],
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    (
        "",
        &["services", "configmaps", "secrets"],
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    (
        "",
        &["persistentvolumeclaims"],
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    ("", &["pods"], &["get", "list", "watch"]),
    (
        "batch",
        &["cronjobs"],
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    ("batch", &["jobs"], &["get", "list", "watch"]),
    (
        "policy",
        &["poddisruptionbudgets"],
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    ("events.k8s.io", &["events"], &["create", "patch"]),
    (
        "coordination.k8s.io",
        &["leases"],
        &["get", "create", "update"],
    ),
];

/// Creates ServiceAccount `sa` bound to a Role with `rules`.
async fn grant(ns: &TestNamespace, sa: &str, rules: &[(&str, &[&str], &[&str])]) {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let pp = PostParams::default();
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": sa}})).unwrap();
    ns.api::<ServiceAccount>()
        .create(&pp, &account)
        .await
        .unwrap();
    let rules: Vec<serde_json::Value> = rules
        .iter()
        .map(|(g, r, v)| json!({"apiGroups": [g], "resources": r, "verbs": v}))
        .collect();
    let role: Role =
        serde_json::from_value(json!({"metadata": {"name": sa}, "rules": rules})).unwrap();
    ns.api::<Role>().create(&pp, &role).await.unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": sa},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns.name()}]
    }))
    .unwrap();
    ns.api::<RoleBinding>().create(&pp, &binding).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_rbac_is_enough_for_the_whole_lifecycle() {
    let ns = setup("rec-rbac").await;
    grant(&ns, "reconciler", RECONCILER_RULES).await;
    let replica = start_controller_as(
        &ns,
        default_settings(),
        Catalog::builtin(),
        Some("reconciler"),
    )
    .await;
    let mut s = spec(Engine::Postgres, 1, "16.4.0", "1Gi");
    s.backup_schedule = Some("0 4 * * *".into());
    create_db(&ns, "payroll", s).await;
    wait_ready(&ns, "payroll", 1).await;
    patch_spec(&ns, "payroll", json!({"replicas": 2})).await;
    wait_ready(&ns, "payroll", 2).await;
    assert_eq!(
        replica
            .metrics
            .errors
            .get_or_create(&reconciler::metrics::ErrorLabels {
                error: "forbidden".into()
            })
            .get(),
        0
    );
    teardown(ns, replica).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_is_a_permanent_error_with_a_condition_and_no_hot_loop() {
    let ns = setup("rec-forbidden").await;
    // Everything except writing StatefulSets.
    let rules: Vec<(&str, &[&str], &[&str])> = RECONCILER_RULES
        .iter()
        .map(|(g, r, v)| {
            if *g == "apps" {
                (*g, *r, &["get", "list", "watch"][..])
            } else {
                (*g, *r, *v)
            }
        })
        .collect();
    grant(&ns, "limited", &rules).await;
    let replica =
        start_controller_as(&ns, default_settings(), Catalog::builtin(), Some("limited")).await;
    create_db(&ns, "audit", spec(Engine::Postgres, 1, "16.4.0", "1Gi")).await;
    let db = wait_degraded(&ns, "audit", "Forbidden").await;
    let msg = degraded_message(&db);
    assert!(
        msg.contains("StatefulSet") && msg.contains("forbidden"),
        "{msg}"
    );
    let reconciles = replica.metrics.reconcile_count();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let later = replica.metrics.reconcile_count();
    assert!(
        later <= reconciles + 2,
        "permanent error must not hot-loop: {reconciles} -> {later}"
    );
    // Admin cleanup: the limited account may not delete the StatefulSet it never created; the
    // Database is deleted through the same controller.
    teardown(ns, replica).await;
}

/// The object as the API server stores it, for byte-for-byte comparisons.
async fn raw<K>(ns: &TestNamespace, name: &str) -> serde_json::Value
where
    K: Resource<Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + serde::Serialize,
    <K as Resource>::DynamicType: Default,
{
    serde_json::to_value(ns.api::<K>().get(name).await.unwrap()).unwrap()
}

/// Warning events with `reason` about Database `name`.
async fn warnings(ns: &TestNamespace, name: &str, reason: &str) -> Vec<K8sEvent> {
    let events: Api<K8sEvent> = ns.api();
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.type_.as_deref() == Some("Warning")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .collect()
}

/// Waits for the Database to report a NameConflict naming each of `children` ("Kind name").
async fn wait_name_conflict(ns: &TestNamespace, name: &str, children: &[&str]) -> Database {
    let db = wait_degraded(ns, name, "NameConflict").await;
    let ready = condition(&db, CONDITION_READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "NameConflict")
    );
    for child in children {
        assert!(
            ready.message.contains(child),
            "message names {child}: {}",
            ready.message
        );
    }
    wait_for(WAIT, "a NameConflict Warning event", || async {
        if warnings(ns, name, "NameConflict").await.is_empty() {
            Err(NotYet::new("no event yet"))
        } else {
            Ok(())
        }
    })
    .await
    .unwrap();
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_service_and_configmap_are_never_touched_and_survive_deletion() {
    let ns = setup("rec-conflict").await;
    // The scenario: a user's Service `shop` (port 80) and ConfigMap `shop-config`.
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "shop", "labels": {"team": "web"}},
        "spec": {"selector": {"app": "shop-web"}, "ports": [{"name": "http", "port": 80}]}
    }))
    .unwrap();
    ns.api::<Service>()
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "shop-config"},
        "data": {"settings.ini": "theme = dark"}
    }))
    .unwrap();
    ns.api::<ConfigMap>()
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    let svc_before = raw::<Service>(&ns, "shop").await;
    let cm_before = raw::<ConfigMap>(&ns, "shop-config").await;

    let replica = start_controller(&ns).await;
    create_db(&ns, "shop", spec(Engine::Postgres, 1, "16.4.0", "1Gi")).await;
    wait_name_conflict(&ns, "shop", &["Service shop", "ConfigMap shop-config"]).await;

    // Retried with backoff, not in a hot loop, and nothing is created or changed meanwhile.
    let before = replica.metrics.reconcile_count();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let retries = replica.metrics.reconcile_count() - before;
    assert!(
        (1..=6).contains(&retries),
        "{retries} reconciles in 8 s: expected a few retries with backoff"
    );
    assert_eq!(raw::<Service>(&ns, "shop").await, svc_before);
    assert_eq!(raw::<ConfigMap>(&ns, "shop-config").await, cm_before);
    for (exists, what) in [
        (exists::<StatefulSet>(&ns, "shop").await, "StatefulSet shop"),
        (exists::<Secret>(&ns, "shop-credentials").await, "Secret"),
        (
            exists::<Service>(&ns, "shop-headless").await,
            "headless Service",
        ),
    ] {
        assert!(!exists, "{what} created despite the conflict");
    }

    // Deleting the Database deletes neither.
    ns.api::<Database>()
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    wait_database_gone(&ns, "shop", "Database shop to be deleted").await;
    assert_eq!(raw::<Service>(&ns, "shop").await, svc_before);
    assert_eq!(raw::<ConfigMap>(&ns, "shop-config").await, cm_before);
    teardown(ns, replica).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_credentials_secret_is_not_adopted_and_removing_it_lets_the_database_proceed() {
    let ns = setup("rec-conflict-secret").await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "pay-credentials"},
        "stringData": {"password": "the user's own password"}
    }))
    .unwrap();
    ns.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let before = raw::<Secret>(&ns, "pay-credentials").await;
    let replica = start_controller(&ns).await;
    create_db(&ns, "pay", spec(Engine::Postgres, 1, "16.4.0", "1Gi")).await;
    wait_name_conflict(&ns, "pay", &["Secret pay-credentials"]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(raw::<Secret>(&ns, "pay-credentials").await, before);
    assert!(!exists::<StatefulSet>(&ns, "pay").await);

    // The user resolves the conflict; the operator proceeds by itself with a Secret of its own.
    ns.api::<Secret>()
        .delete("pay-credentials", &DeleteParams::default())
        .await
        .unwrap();
    let db = wait_ready(&ns, "pay", 1).await;
    let ours: Secret = ns.api::<Secret>().get("pay-credentials").await.unwrap();
    assert!(owned_by(&ours, &db));
    let password = ours.data.unwrap()["password"].clone();
    assert_eq!(password.0.len(), 32, "a generated password, not the user's");
    teardown(ns, replica).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_statefulset_is_left_alone_and_its_pods_do_not_block_deletion() {
    let ns = setup("rec-conflict-sts").await;
    // A user's StatefulSet `cart` whose pods even carry the labels our selector uses.
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "cart"},
        "spec": {
            "replicas": 1,
            "serviceName": "cart-users",
            "selector": {"matchLabels": {"app.kubernetes.io/instance": "cart", "app.kubernetes.io/component": "database"}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/instance": "cart", "app.kubernetes.io/component": "database"}},
                "spec": {"containers": [{"name": "app", "image": "example.com/cart:1"}]}
            }
        }
    }))
    .unwrap();
    ns.api::<StatefulSet>()
        .create(&PostParams::default(), &sts)
        .await
        .unwrap();
    wait_for(WAIT, "the foreign StatefulSet's pod", || async {
        let n = pods(&ns, "cart").await.len();
        if n == 1 {
            Ok(())
        } else {
            Err(NotYet::new(format!("{n} pods")))
        }
    })
    .await
    .unwrap();
    let sts_before = ns.api::<StatefulSet>().get("cart").await.unwrap();
    let replica = start_controller(&ns).await;
    create_db(&ns, "cart", spec(Engine::Postgres, 1, "16.4.0", "1Gi")).await;
    wait_name_conflict(&ns, "cart", &["StatefulSet cart"]).await;

    ns.api::<Database>()
        .delete("cart", &DeleteParams::default())
        .await
        .unwrap();
    // Cleanup finishes although the foreign pod is Running, and deletes none of it.
    wait_database_gone(&ns, "cart", "Database cart to be deleted").await;
    let sts_after = ns.api::<StatefulSet>().get("cart").await.unwrap();
    assert_eq!(sts_after.metadata.uid, sts_before.metadata.uid);
    // Its status moves with its pod (the StatefulSet controller); spec and metadata must not,
    // and no field may be managed by us.
    assert_eq!(sts_after.spec, sts_before.spec, "spec modified");
    assert_eq!(sts_after.metadata.labels, sts_before.metadata.labels);
    assert_eq!(
        sts_after.metadata.annotations,
        sts_before.metadata.annotations
    );
    assert_eq!(
        sts_after.metadata.owner_references,
        sts_before.metadata.owner_references
    );
    assert_eq!(
        sts_after.metadata.generation,
        sts_before.metadata.generation
    );
    assert!(
        sts_after
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .all(|m| m.manager.as_deref() != Some("db-operator")),
        "db-operator manages fields of the foreign StatefulSet"
    );
    let left = pods(&ns, "cart").await;
    assert_eq!(left.len(), 1, "the foreign pod is still there");
    assert!(left[0].metadata.deletion_timestamp.is_none());
    teardown(ns, replica).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_and_backup_pods_mount_no_token_and_have_a_read_only_root() {
    let ns = setup("rec-hardening").await;
    let replica = start_controller(&ns).await;
    let mut s = spec(Engine::Postgres, 1, "16.4.0", "1Gi");
    s.backup_schedule = Some("0 3 * * *".to_owned());
    create_db(&ns, "vault", s).await;
    wait_ready(&ns, "vault", 1).await;
    let sts: StatefulSet = ns.api::<StatefulSet>().get("vault").await.unwrap();
    let cj: CronJob = ns.api::<CronJob>().get("vault-backup").await.unwrap();
    let pod = sts.spec.unwrap().template.spec.unwrap();
    let backup = cj.spec.job_template.spec.unwrap().template.spec.unwrap();
    for (what, p) in [("database", pod), ("backup", backup)] {
        assert_eq!(p.automount_service_account_token, Some(false), "{what}");
        let c = &p.containers[0];
        assert_eq!(
            c.security_context
                .as_ref()
                .and_then(|s| s.read_only_root_filesystem),
            Some(true),
            "{what}"
        );
        let tmp = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == "/tmp")
            .unwrap_or_else(|| panic!("{what}: no /tmp mount"));
        let vol = p
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == tmp.name)
            .unwrap();
        assert!(vol.empty_dir.is_some(), "{what}: /tmp is an emptyDir");
    }
    // And the pods the StatefulSet made carry it too.
    let running = pods(&ns, "vault").await;
    assert_eq!(
        running[0]
            .spec
            .as_ref()
            .and_then(|s| s.automount_service_account_token),
        Some(false)
    );
    teardown(ns, replica).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_that_cannot_renew_stops_writing_before_the_follower_takes_over() {
    let ns = setup("rec-renew").await;
    let lease = "db-operator-renew";
    let delay_a = LeaseDelay::default();
    let a = start_elected_replica_with(&ns, "replica-a", lease, delay_a.clone()).await;
    let leases: Api<Lease> = ns.api();
    wait_for_leader(&leases, lease, "replica-a", "replica-a to lead").await;
    let b = start_elected_replica(&ns, "replica-b", lease).await;
    create_db(&ns, "ticker", spec(Engine::Postgres, 1, "16.4.0", "1Gi")).await;
    wait_ready(&ns, "ticker", 1).await;

    // Keep the leader busy: every 200 ms a hand edit it reverts (a write each time).
    let stop_edits = Arc::new(AtomicBool::new(false));
    let edits = {
        let stop = stop_edits.clone();
        let cms: Api<ConfigMap> = ns.api();
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let _ = cms
                    .patch(
                        "ticker-config",
                        &PatchParams::default(),
                        &Patch::Merge(json!({"data": {"postgresql.conf": format!("edit {i}")}})),
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!a.work_writes().is_empty());
    // The leader's path to the Lease becomes slow: each request hangs for 30 s.
    let cut = std::time::SystemTime::now();
    delay_a.set(Duration::from_secs(30));
    wait_for_leader(&leases, lease, "replica-b", "replica-b to take over").await;
    wait_for(Duration::from_secs(30), "replica-b to write", || async {
        if b.work_writes().is_empty() {
            Err(NotYet::new("no write yet"))
        } else {
            Ok(())
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_edits.store(true, Ordering::SeqCst);
    let _ = edits.await;

    let work = |r: &Replica| -> Vec<std::time::SystemTime> {
        r.writes
            .timed_entries()
            .into_iter()
            .filter(|(_, w)| !w.contains("/leases"))
            .map(|(t, _)| t)
            .collect()
    };
    let a_last = work(&a).into_iter().max().unwrap();
    let b_first = work(&b).into_iter().min().unwrap();
    let ms = |t: std::time::SystemTime| {
        t.duration_since(cut)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_else(|e| -(e.duration().as_millis() as i64))
    };
    assert!(
        a_last < b_first,
        "old leader's last write at +{} ms, new leader's first at +{} ms (after the Lease was cut)",
        ms(a_last),
        ms(b_first)
    );
    // The old leader stopped by itself (its campaign reported the lost Lease).
    assert!(a.task.is_finished(), "the old leader is still running");
    // It stopped within the renew deadline (3 s), before the Lease (4 s) expired.
    assert!(
        ms(a_last) < 3_500,
        "old leader wrote until +{} ms",
        ms(a_last)
    );
    teardown(ns, b).await;
    a.stop().await;
}

// ---------------------------------------------------------------------------------------------
// On the real node (kubelet + containerd, deploy/local/node): the database server really runs,
// from the images deploy/local/images built and the node imported. These Databases carry no
// placement, so they land on the real node as users' Databases do.

/// The local cluster's catalog: PostgreSQL 15 and 17 from the locally built images.
fn local_catalog() -> Catalog {
    Catalog::from_yaml(include_str!("../../deploy/local/catalog.yaml")).unwrap()
}

/// PostgreSQL 17 (the local catalog's default), one replica, no placement.
fn real_postgres() -> DatabaseSpec {
    DatabaseSpec {
        scheduling: None,
        ..spec(Engine::Postgres, 1, "17.12.0", "1Gi")
    }
}

/// psql of the local PostgreSQL 17 image (Debian's versioned path: no pg_wrapper needed).
const PSQL: &str = "/usr/lib/postgresql/17/bin/psql";

/// Runs kubectl against the test cluster; its output trimmed.
async fn kubectl(args: &[&str]) -> Result<String, String> {
    let out = cluster().await.unwrap().kubectl(args).await?;
    Ok(out.trim().to_owned())
}

/// The `username`, `password` and `database` keys of `<name>-credentials`.
async fn credentials(ns: &TestNamespace, name: &str) -> (String, String, String) {
    let secret: Secret = ns.api().get(&format!("{name}-credentials")).await.unwrap();
    let data = secret.data.unwrap_or_default();
    let key = |k: &str| {
        String::from_utf8(
            data.get(k)
                .unwrap_or_else(|| panic!("credentials Secret has no key {k}"))
                .0
                .clone(),
        )
        .unwrap()
    };
    (key("username"), key("password"), key("database"))
}

/// `psql -tAc sql` inside pod `<name>-0`, over TCP with the credentials Secret's password.
async fn psql_in_pod(ns: &TestNamespace, name: &str, sql: &str) -> Result<String, String> {
    let (user, password, database) = credentials(ns, name).await;
    let args = [
        "exec",
        "-n",
        ns.name(),
        &format!("{name}-0"),
        "-c",
        "postgres",
        "--",
        "env",
        &format!("PGPASSWORD={password}"),
        PSQL,
        "-h",
        "127.0.0.1",
        "-U",
        &user,
        "-d",
        &database,
        "-v",
        "ON_ERROR_STOP=1",
        "-tAc",
        sql,
    ];
    kubectl(&args).await
}

/// Asserts that pod `<name>-0` runs on a real node (not one of kwok's) and returns the node.
async fn assert_on_real_node(ns: &TestNamespace, name: &str) -> String {
    use k8s_openapi::api::core::v1::Node;
    let pod: Pod = ns.api().get(&format!("{name}-0")).await.unwrap();
    let node_name = pod
        .spec
        .and_then(|s| s.node_name)
        .expect("the pod is scheduled");
    let nodes: Api<Node> = Api::all(ns.client());
    let node = nodes.get(&node_name).await.unwrap();
    let labels = node.metadata.labels.unwrap_or_default();
    assert_ne!(
        labels.get(testkit::KWOK_NODE_LABEL.0).map(String::as_str),
        Some(testkit::KWOK_NODE_LABEL.1),
        "{name}-0 landed on kwok node {node_name}: is the real node up (DBOP_REAL_NODE=off)?"
    );
    node_name
}

/// A Database with no placement runs on the real node: psql inside its pod answers with the
/// generated credentials, a Job pod reaches it through `<name>.<ns>.svc`, and a `spec.config`
/// change is what the running server reports after the rollout.
#[tokio::test]
async fn postgres_on_the_real_node_answers_psql_serves_its_service_and_applies_config() {
    let ns = setup("real").await;
    let replica = start_controller_with(&ns, default_settings(), local_catalog()).await;
    create_db(&ns, "pg", real_postgres()).await;
    wait_ready(&ns, "pg", 1).await;
    assert_on_real_node(&ns, "pg").await;

    // select 1 inside the pod, with the credentials from pg-credentials.
    let answer = psql_in_pod(&ns, "pg", "select 1").await.unwrap();
    assert_eq!(answer, "1");
    let version = psql_in_pod(&ns, "pg", "show server_version").await.unwrap();
    assert!(version.starts_with("17.12"), "server_version {version}");

    // A Job pod resolves the Service's DNS name and connects through the ClusterIP.
    let (user, _, database) = credentials(&ns, "pg").await;
    let host = format!("pg.{}.svc", ns.name());
    let job: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "client"},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "psql",
                "image": "localhost/db-operator/postgres:17.12",
                "imagePullPolicy": "Never",
                "command": [PSQL],
                "args": ["-h", host, "-U", user, "-d", database, "-v", "ON_ERROR_STOP=1",
                         "-tAc", "select 'through ' || current_database()"],
                "env": [
                    {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": "pg-credentials", "key": "password"}}},
                    {"name": "PGCONNECT_TIMEOUT", "value": "10"},
                ],
            }],
        }}},
    }))
    .unwrap();
    let jobs: Api<Job> = ns.api();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let outcome = wait_for(WAIT, "Job client to finish", || async {
        let j = jobs.get("client").await?;
        let s = j.status.unwrap_or_default();
        match (s.succeeded.unwrap_or(0), s.failed.unwrap_or(0)) {
            (0, 0) => Err(NotYet::new("running")),
            (_, 0) => Ok(true),
            _ => Ok(false),
        }
    })
    .await
    .unwrap();
    let logs = kubectl(&["logs", "-n", ns.name(), "job/client"])
        .await
        .unwrap_or_else(|e| e);
    assert!(outcome, "the Job failed: {logs}");
    assert_eq!(logs, format!("through {database}"));

    // A config change reaches the running server (the ConfigMap's hash rolls the pod).
    patch_spec(&ns, "pg", json!({"config": {"work_mem": "8MB"}})).await;
    wait_for(WAIT, "SHOW work_mem to report 8MB", || async {
        match psql_in_pod(&ns, "pg", "show work_mem").await {
            Ok(v) if v == "8MB" => Ok(()),
            Ok(v) => Err(NotYet::new(format!("work_mem {v}"))),
            Err(e) => Err(NotYet::new(e)),
        }
    })
    .await
    .unwrap();
    wait_ready(&ns, "pg", 1).await;
    teardown(ns, replica).await;
}

/// The readiness probe really gates: a server that exits at start (huge_pages=on on a machine
/// with no huge pages reserved) never becomes Ready, and the Database says why.
#[tokio::test]
async fn a_server_that_cannot_start_is_degraded_with_its_error_and_never_ready() {
    let ns = setup("real-bad").await;
    let replica = start_controller_with(
        &ns,
        settings(Duration::from_secs(20), Duration::from_secs(300)),
        local_catalog(),
    )
    .await;
    let mut s = real_postgres();
    s.config = Some([("huge_pages".to_owned(), "on".to_owned())].into());
    create_db(&ns, "broken", s).await;
    let db = wait_degraded(&ns, "broken", "RolloutStalled").await;
    assert_on_real_node(&ns, "broken").await;
    let message = condition(&db, CONDITION_DEGRADED).unwrap().message.clone();
    assert!(
        message.contains("container postgres:") && message.contains("last exit code"),
        "the condition names the crashing container and its exit: {message}"
    );
    assert!(
        message.to_lowercase().contains("huge"),
        "the condition quotes the server's own error: {message}"
    );
    assert_eq!(condition_status(&db, CONDITION_READY), Some("False"));
    let pod: Pod = ns.api().get("broken-0").await.unwrap();
    assert!(
        !pod_ready(&pod),
        "the pod of a server that cannot start is not Ready"
    );
    teardown(ns, replica).await;
}
/// The window between looking and creating: a Service that someone else creates after the
/// controller found the name free, just before its write, is not taken over.
#[tokio::test]
async fn a_service_created_by_someone_else_after_the_look_is_not_taken_over() {
    let ns = setup("rec-race").await;
    let names = ["shop", "shop-headless"];
    let foreign = |name: &str| -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"team": "web"}},
            "spec": {"selector": {"app": "shop-web"}, "ports": [{"name": "http", "port": 80}]}
        }))
        .unwrap()
    };
    let services: Api<Service> = ns.api();
    let race = {
        let services = services.clone();
        let created: Vec<Service> = names.iter().map(|n| foreign(n)).collect();
        RaceBefore::new(
            |method, path| {
                (method == http::Method::POST || method == http::Method::PATCH)
                    && path.contains("/services")
            },
            async move {
                for svc in &created {
                    let _ = services.create(&PostParams::default(), svc).await;
                }
            },
        )
    };
    let metrics = Arc::new(Metrics::new());
    let writes = WriteLog::new(Some(metrics.clone()));
    let client = kube::client::ClientBuilder::try_from(cluster().await.unwrap().config().clone())
        .unwrap()
        .with_layer(&reconciler::client::WriteLogLayer::new(writes.clone()))
        .with_layer(&race.layer())
        .build();
    let ctx = context(
        client,
        "test",
        metrics.clone(),
        default_settings(),
        Catalog::builtin(),
    );
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(run_controller(ctx, scope_for(&ns), async {
        let _ = rx.await;
    }));
    let replica = Replica {
        task,
        stop: Some(tx),
        writes,
        metrics,
        namespace: ns.name().to_owned(),
    };
    create_db(&ns, "shop", spec(Engine::Postgres, 1, "16.4.0", "1Gi")).await;
    wait_name_conflict(&ns, "shop", &["Service shop"]).await;
    assert!(race.fired.load(Ordering::SeqCst), "the racing writer ran");
    for name in names {
        let svc = services.get(name).await.unwrap();
        assert!(
            svc.metadata.owner_references.unwrap_or_default().is_empty(),
            "Service {name} was adopted"
        );
        let ports: Vec<i32> = svc
            .spec
            .and_then(|s| s.ports)
            .unwrap_or_default()
            .iter()
            .map(|p| p.port)
            .collect();
        assert_eq!(ports, [80], "Service {name} was changed");
        assert_eq!(
            svc.metadata
                .labels
                .unwrap_or_default()
                .get("team")
                .map(String::as_str),
            Some("web")
        );
    }
    ns.api::<Database>()
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    wait_database_gone(&ns, "shop", "Database shop deleted").await;
    for name in names {
        assert!(
            services.get_opt(name).await.unwrap().is_some(),
            "deleting the Database deleted the foreign Service {name}"
        );
    }
    teardown(ns, replica).await;
}

/// A policy of the cluster that freezes finalizers (a ValidatingAdmissionPolicy, evaluated in
/// the API server itself): the controller's finalizer patch is denied, and the Database says
/// so with the policy's message, instead of retrying as if the object were stale.
#[tokio::test]
async fn a_denied_finalizer_update_is_reported_as_such() {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let ns = setup("rec-fin-denied").await;
    let client = ns.client();
    let resource = |kind: &str| {
        ApiResource::from_gvk(&GroupVersionKind::gvk(
            "admissionregistration.k8s.io",
            "v1",
            kind,
        ))
    };
    let (policy_ar, binding_ar) = (
        resource("ValidatingAdmissionPolicy"),
        resource("ValidatingAdmissionPolicyBinding"),
    );
    let policies: Api<DynamicObject> = Api::all_with(client.clone(), &policy_ar);
    let bindings: Api<DynamicObject> = Api::all_with(client.clone(), &binding_ar);
    let name = format!("freeze-finalizers-{}", ns.name());
    let policy: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["example.com"], "apiVersions": ["*"],
                "operations": ["UPDATE"], "resources": ["databases"],
            }]},
            "validations": [{
                "expression": format!(
                    "!has(object.metadata.finalizers) || !object.metadata.finalizers.exists(f, f == '{FINALIZER}')"
                ),
                "message": "finalizers are frozen in this namespace",
            }],
        },
    }))
    .unwrap();
    let binding: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": ns.name(),
            }}},
        },
    }))
    .unwrap();
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    // The API server picks policies up from its informer: wait until one really denies.
    let dbs: Api<Database> = ns.api();
    create_db(&ns, "probe", spec(Engine::Postgres, 1, "16.4.0", "1Gi")).await;
    wait_for(WAIT, "the policy to deny a finalizer update", || async {
        let patch = json!({"metadata": {"finalizers": [FINALIZER]}});
        match dbs
            .patch("probe", &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Err(kube::Error::Api(s)) if s.message.contains("finalizers are frozen") => Ok(()),
            Ok(_) => {
                let undo = json!({"metadata": {"finalizers": null}});
                dbs.patch("probe", &PatchParams::default(), &Patch::Merge(&undo))
                    .await?;
                Err(NotYet::new("policy not active yet"))
            }
            Err(e) => Err(NotYet::new(e.to_string())),
        }
    })
    .await
    .unwrap();

    let replica = start_controller(&ns).await;
    create_db(&ns, "frozen", spec(Engine::Postgres, 1, "16.4.0", "1Gi")).await;
    let db = wait_degraded(&ns, "frozen", "FinalizerUpdateDenied").await;
    let ready = condition(&db, CONDITION_READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "FinalizerUpdateDenied")
    );
    assert!(
        ready
            .message
            .contains("finalizers are frozen in this namespace"),
        "the condition quotes the policy: {}",
        ready.message
    );
    assert!(
        !exists::<StatefulSet>(&ns, "frozen").await,
        "nothing is created without the cleanup finalizer in place"
    );
    let _ = bindings.delete(&name, &DeleteParams::default()).await;
    let _ = policies.delete(&name, &DeleteParams::default()).await;
    teardown(ns, replica).await;
}
