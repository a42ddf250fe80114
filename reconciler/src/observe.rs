//! Observe: what exists for one Database, read from the watch caches the controller keeps
//! (the same watches that trigger reconciles), never from the API server. A reconcile that
//! changes nothing therefore makes no request at all.
//!
//! A cache can lag behind this process's own writes by a few milliseconds. [`Expectations`]
//! remembers the resourceVersion of each child we wrote, and a reconcile that finds a child's
//! cache behind it waits for the watch instead of acting on the stale copy (which would mean
//! creating twice, or re-applying what was just applied).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use api::v1::Database;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, store::Writer, ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};

use crate::desired::{self, claim_storage};
use crate::error::Error;
use crate::guard::ObservedShape;
use crate::ownership::{backup_pvc_is_ours, controlled_by, Conflict, Found};

/// Read halves of the watch caches.
#[derive(Clone)]
pub struct Stores {
    pub statefulsets: Store<StatefulSet>,
    pub services: Store<Service>,
    pub configmaps: Store<ConfigMap>,
    pub secrets: Store<Secret>,
    pub cronjobs: Store<CronJob>,
    pub pvcs: Store<PersistentVolumeClaim>,
    pub pods: Store<Pod>,
    pub jobs: Store<Job>,
    pub storage_classes: Store<StorageClass>,
    pub pdbs: Store<PodDisruptionBudget>,
    pub names: NameStores,
    /// Set once every cache had its initial list (one waiter on the stores' own readiness,
    /// which wakes only the last of several concurrent waiters).
    ready: std::sync::Arc<tokio::sync::OnceCell<bool>>,
}

/// Which names are taken, whoever took them: metadata-only caches of every object of the kinds
/// a Database's children have (the full caches above hold only objects with our label). A
/// child name the full cache lacks but this one has is looked at with one GET: it is ours with
/// its labels edited away, or someone else's (a conflict). Absent names need no request.
#[derive(Clone)]
pub struct NameStores {
    pub statefulsets: Store<PartialObjectMeta<StatefulSet>>,
    pub services: Store<PartialObjectMeta<Service>>,
    pub configmaps: Store<PartialObjectMeta<ConfigMap>>,
    pub secrets: Store<PartialObjectMeta<Secret>>,
    pub cronjobs: Store<PartialObjectMeta<CronJob>>,
    pub pvcs: Store<PartialObjectMeta<PersistentVolumeClaim>>,
    pub pdbs: Store<PartialObjectMeta<PodDisruptionBudget>>,
}

/// Write halves of [`NameStores`].
pub struct NameWriters {
    pub statefulsets: Writer<PartialObjectMeta<StatefulSet>>,
    pub services: Writer<PartialObjectMeta<Service>>,
    pub configmaps: Writer<PartialObjectMeta<ConfigMap>>,
    pub secrets: Writer<PartialObjectMeta<Secret>>,
    pub cronjobs: Writer<PartialObjectMeta<CronJob>>,
    pub pvcs: Writer<PartialObjectMeta<PersistentVolumeClaim>>,
    pub pdbs: Writer<PartialObjectMeta<PodDisruptionBudget>>,
}

/// Write halves, fed by the controller's watches.
pub struct Writers {
    pub statefulsets: Writer<StatefulSet>,
    pub services: Writer<Service>,
    pub configmaps: Writer<ConfigMap>,
    pub secrets: Writer<Secret>,
    pub cronjobs: Writer<CronJob>,
    pub pvcs: Writer<PersistentVolumeClaim>,
    pub pods: Writer<Pod>,
    pub jobs: Writer<Job>,
    pub storage_classes: Writer<StorageClass>,
    pub pdbs: Writer<PodDisruptionBudget>,
    pub names: NameWriters,
}

/// Empty caches and the writers that fill them.
pub fn caches() -> (Stores, Writers) {
    let (statefulsets, w_sts) = reflector::store();
    let (services, w_svc) = reflector::store();
    let (configmaps, w_cm) = reflector::store();
    let (secrets, w_secret) = reflector::store();
    let (cronjobs, w_cj) = reflector::store();
    let (pvcs, w_pvc) = reflector::store();
    let (pods, w_pod) = reflector::store();
    let (jobs, w_job) = reflector::store();
    let (storage_classes, w_sc) = reflector::store();
    let (n_sts, nw_sts) = reflector::store();
    let (n_svc, nw_svc) = reflector::store();
    let (n_cm, nw_cm) = reflector::store();
    let (n_secret, nw_secret) = reflector::store();
    let (n_cj, nw_cj) = reflector::store();
    let (n_pvc, nw_pvc) = reflector::store();
    let (pdbs, w_pdb) = reflector::store();
    let (n_pdb, nw_pdb) = reflector::store();
    (
        Stores {
            statefulsets,
            services,
            configmaps,
            secrets,
            cronjobs,
            pvcs,
            pods,
            jobs,
            storage_classes,
            pdbs,
            names: NameStores {
                statefulsets: n_sts,
                services: n_svc,
                configmaps: n_cm,
                secrets: n_secret,
                cronjobs: n_cj,
                pvcs: n_pvc,
                pdbs: n_pdb,
            },
            ready: Default::default(),
        },
        Writers {
            statefulsets: w_sts,
            services: w_svc,
            configmaps: w_cm,
            secrets: w_secret,
            cronjobs: w_cj,
            pvcs: w_pvc,
            pods: w_pod,
            jobs: w_job,
            storage_classes: w_sc,
            pdbs: w_pdb,
            names: NameWriters {
                statefulsets: nw_sts,
                services: nw_svc,
                configmaps: nw_cm,
                secrets: nw_secret,
                cronjobs: nw_cj,
                pvcs: nw_pvc,
                pdbs: nw_pdb,
            },
        },
    )
}

impl Stores {
    /// Waits until every namespaced cache has had its initial list (false if a watch is gone
    /// for good). StorageClasses are not waited for: a namespace-scoped install may not be
    /// allowed to read them, and then no PVC is grown (status says why).
    pub async fn ready(&self) -> bool {
        *self.ready.get_or_init(|| self.wait_all()).await
    }

    async fn wait_all(&self) -> bool {
        self.statefulsets.wait_until_ready().await.is_ok()
            && self.services.wait_until_ready().await.is_ok()
            && self.configmaps.wait_until_ready().await.is_ok()
            && self.secrets.wait_until_ready().await.is_ok()
            && self.cronjobs.wait_until_ready().await.is_ok()
            && self.pvcs.wait_until_ready().await.is_ok()
            && self.pods.wait_until_ready().await.is_ok()
            && self.jobs.wait_until_ready().await.is_ok()
            && self.pdbs.wait_until_ready().await.is_ok()
            && self.names.pdbs.wait_until_ready().await.is_ok()
            && self.names.statefulsets.wait_until_ready().await.is_ok()
            && self.names.services.wait_until_ready().await.is_ok()
            && self.names.configmaps.wait_until_ready().await.is_ok()
            && self.names.secrets.wait_until_ready().await.is_ok()
            && self.names.cronjobs.wait_until_ready().await.is_ok()
            && self.names.pvcs.wait_until_ready().await.is_ok()
    }
}

fn cached<K>(store: &Store<K>, ns: &str, name: &str) -> Option<K>
where
    K: Resource<DynamicType = ()> + Clone,
{
    store
        .get(&ObjectRef::new(name).within(ns))
        .map(|k| K::clone(&k))
}

fn taken<K>(store: &Store<PartialObjectMeta<K>>, ns: &str, name: &str) -> bool
where
    K: Resource<DynamicType = ()> + Clone,
{
    store.get(&ObjectRef::new(name).within(ns)).is_some()
}

fn in_namespace<K>(store: &Store<K>, ns: &str, keep: impl Fn(&K) -> bool) -> Vec<K>
where
    K: Resource<DynamicType = ()> + Clone,
{
    let mut out: Vec<K> = store
        .state_filter(|k| k.meta().namespace.as_deref() == Some(ns) && keep(k))
        .into_iter()
        .map(|k| K::clone(&k))
        .collect();
    out.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
    out
}

/// Every child name of one Database and what exists under it, classified by ownership, plus
/// the objects status is computed from.
#[derive(Debug, Clone)]
pub struct Observed {
    pub statefulset: Found<StatefulSet>,
    /// Data PVCs `data-<name>-<ordinal>` (none when the StatefulSet is not ours).
    pub pvcs: Vec<PersistentVolumeClaim>,
    pub secret: Found<Secret>,
    pub config: Found<ConfigMap>,
    /// Client Service `<name>`, then headless `<name>-headless`.
    pub services: [(String, Found<Service>); 2],
    pub cronjob: Found<CronJob>,
    /// Looked at only with a backup schedule (`Absent` otherwise).
    pub backup_pvc: Found<PersistentVolumeClaim>,
    /// The PodDisruptionBudget `<name>`.
    pub pdb: Found<PodDisruptionBudget>,
    /// Pods of the Database's StatefulSet selector.
    pub pods: Vec<Pod>,
    /// Backup Jobs of this Database.
    pub backup_jobs: Vec<Job>,
    /// `allowVolumeExpansion` of the StorageClasses the data PVCs use (absent: no such class).
    pub expandable: BTreeMap<String, bool>,
    /// PVCs carrying our labels for this Database (data and backup), for cleanup.
    pub labelled_pvcs: Vec<PersistentVolumeClaim>,
    /// uid of the StatefulSet under our name when it is not ours (its pods are not ours).
    pub foreign_statefulset_uid: Option<String>,
    /// Child names that are taken by an object the full caches do not show (`Kind`, name):
    /// [`look_up_unknown`] classifies them.
    pub unknown: Vec<(&'static str, String)>,
}

impl Observed {
    /// Nothing exists (a Database seen for the first time).
    pub fn nothing(name: &str) -> Self {
        Observed {
            statefulset: Found::Absent,
            pvcs: Vec::new(),
            secret: Found::Absent,
            config: Found::Absent,
            services: [
                (name.to_owned(), Found::Absent),
                (desired::headless_service_name(name), Found::Absent),
            ],
            cronjob: Found::Absent,
            backup_pvc: Found::Absent,
            pdb: Found::Absent,
            pods: Vec::new(),
            backup_jobs: Vec::new(),
            expandable: BTreeMap::new(),
            labelled_pvcs: Vec::new(),
            foreign_statefulset_uid: None,
            unknown: Vec::new(),
        }
    }

    /// Objects under names this Database needs that are not ours. A CronJob that is not ours
    /// only conflicts when a schedule asks for ours; without one it is simply not our business.
    pub fn conflicts(&self, db: &Database) -> Vec<Conflict> {
        let name = db.name_any();
        let wants_backup = db.spec.backup_schedule.is_some();
        let wants_pdb = db.spec.replicas.unwrap_or(1) > 1;
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
            (
                wants_pdb && self.pdb.is_foreign(),
                "PodDisruptionBudget",
                name.clone(),
            ),
        ];
        for (foreign, kind, child) in rows {
            if foreign {
                out.push(Conflict { kind, name: child });
            }
        }
        out
    }

    /// Engine/version/storage of what runs, for the destructive-change guard.
    pub fn shape(&self) -> ObservedShape {
        let sts = self.statefulset.ours();
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
            pvc_storage: self
                .pvcs
                .iter()
                .filter_map(|p| Some((p.name_any(), claim_storage(p)?.clone())))
                .collect(),
        }
    }
}

/// Reads everything about `db` from the caches (no request is made).
pub fn observe(db: &Database, stores: &Stores) -> Observed {
    let ns = db.namespace().unwrap_or_default();
    let name = db.name_any();
    let cached_sts = cached(&stores.statefulsets, &ns, &name);
    let foreign_statefulset_uid = cached_sts
        .as_ref()
        .filter(|s| !controlled_by(&s.metadata, db))
        .and_then(|s| s.metadata.uid.clone());
    let statefulset = Found::classify(cached_sts, |s| controlled_by(&s.metadata, db));
    // The Secret we created is ours even if its ownerReference was edited away: the
    // StatefulSet records its uid. A Secret created by anyone else has another uid.
    let credentials_uid = statefulset
        .ours()
        .and_then(|s| s.annotations().get(desired::ANNOTATION_CREDENTIALS_UID))
        .cloned();
    let secret = Found::classify(
        cached(
            &stores.secrets,
            &ns,
            &desired::credentials_secret_name(&name),
        ),
        |s| secret_is_ours(s, db, credentials_uid.as_deref()),
    );
    let config = Found::classify(
        cached(&stores.configmaps, &ns, &desired::config_map_name(&name)),
        |c| controlled_by(&c.metadata, db),
    );
    let service = |svc_name: String| {
        let found = Found::classify(cached(&stores.services, &ns, &svc_name), |s| {
            controlled_by(&s.metadata, db)
        });
        (svc_name, found)
    };
    let services = [
        service(name.clone()),
        service(desired::headless_service_name(&name)),
    ];
    let cronjob = Found::classify(
        cached(&stores.cronjobs, &ns, &desired::backup_cronjob_name(&name)),
        |c| controlled_by(&c.metadata, db),
    );
    let pdb = Found::classify(cached(&stores.pdbs, &ns, &name), |p| {
        controlled_by(&p.metadata, db)
    });
    let backup_pvc = if db.spec.backup_schedule.is_some() {
        Found::classify(
            cached(&stores.pvcs, &ns, &desired::backup_pvc_name(&name)),
            |p| backup_pvc_is_ours(p, &name),
        )
    } else {
        Found::Absent
    };
    // Data PVCs of a StatefulSet that is not ours are not ours either.
    let prefix = format!("{}-{name}-", desired::DATA_VOLUME);
    let pvcs = if statefulset.is_foreign() {
        Vec::new()
    } else {
        in_namespace(&stores.pvcs, &ns, |p| {
            has_labels(p.labels(), &desired::selector_labels(&name))
                && p.name_any()
                    .strip_prefix(&prefix)
                    .is_some_and(|rest| rest.parse::<u32>().is_ok())
        })
    };
    let expandable = pvcs
        .iter()
        .filter_map(|p| p.spec.as_ref()?.storage_class_name.clone())
        .filter_map(|class| {
            let sc = stores.storage_classes.get(&ObjectRef::new(&class))?;
            Some((class, sc.allow_volume_expansion.unwrap_or(false)))
        })
        .collect();
    let pods = in_namespace(&stores.pods, &ns, |p| {
        has_labels(p.labels(), &desired::selector_labels(&name))
    });
    let backup_jobs = in_namespace(&stores.jobs, &ns, |j| {
        let l = j.labels();
        l.get(desired::LABEL_INSTANCE).map(String::as_str) == Some(name.as_str())
            && l.get(desired::LABEL_COMPONENT).map(String::as_str)
                == Some(desired::COMPONENT_BACKUP)
    });
    let labelled_pvcs = in_namespace(&stores.pvcs, &ns, |p| {
        let l = p.labels();
        l.get(desired::LABEL_INSTANCE).map(String::as_str) == Some(name.as_str())
            && l.get(desired::LABEL_MANAGED_BY).map(String::as_str) == Some(desired::MANAGED_BY)
    });
    let n = &stores.names;
    let wants_backup = db.spec.backup_schedule.is_some();
    let secret_name = desired::credentials_secret_name(&name);
    let config_name = desired::config_map_name(&name);
    let cronjob_name = desired::backup_cronjob_name(&name);
    let backup_pvc_name = desired::backup_pvc_name(&name);
    let wants_pdb = db.spec.replicas.unwrap_or(1) > 1;
    let candidates: [(bool, bool, &'static str, &String); 8] = [
        (
            wants_pdb && matches!(pdb, Found::Absent),
            taken(&n.pdbs, &ns, &name),
            "PodDisruptionBudget",
            &name,
        ),
        (
            matches!(statefulset, Found::Absent),
            taken(&n.statefulsets, &ns, &name),
            "StatefulSet",
            &name,
        ),
        (
            matches!(secret, Found::Absent),
            taken(&n.secrets, &ns, &secret_name),
            "Secret",
            &secret_name,
        ),
        (
            matches!(config, Found::Absent),
            taken(&n.configmaps, &ns, &config_name),
            "ConfigMap",
            &config_name,
        ),
        (
            matches!(services[0].1, Found::Absent),
            taken(&n.services, &ns, &services[0].0),
            "Service",
            &services[0].0,
        ),
        (
            matches!(services[1].1, Found::Absent),
            taken(&n.services, &ns, &services[1].0),
            "Service",
            &services[1].0,
        ),
        (
            wants_backup && matches!(cronjob, Found::Absent),
            taken(&n.cronjobs, &ns, &cronjob_name),
            "CronJob",
            &cronjob_name,
        ),
        (
            wants_backup && matches!(backup_pvc, Found::Absent),
            taken(&n.pvcs, &ns, &backup_pvc_name),
            "PersistentVolumeClaim",
            &backup_pvc_name,
        ),
    ];
    let unknown = candidates
        .into_iter()
        .filter(|(absent, taken, _, _)| *absent && *taken)
        .map(|(_, _, kind, child)| (kind, child.clone()))
        .collect();
    Observed {
        unknown,
        pdb,
        statefulset,
        pvcs,
        secret,
        config,
        services,
        cronjob,
        backup_pvc,
        pods,
        backup_jobs,
        expandable,
        labelled_pvcs,
        foreign_statefulset_uid,
    }
}

async fn get<K>(
    client: &Client,
    kind: &'static str,
    ns: &str,
    name: &str,
) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| Error::kube("get", kind, ns, name, e))
}

/// Reads the [`Observed::unknown`] names (one GET each; the only reads a reconcile makes, and
/// only while a name is taken by an object without our label) and classifies what is there.
pub async fn look_up_unknown(
    db: &Database,
    client: &Client,
    observed: &mut Observed,
) -> Result<(), Error> {
    let ns = db.namespace().unwrap_or_default();
    let name = db.name_any();
    for (kind, child) in std::mem::take(&mut observed.unknown) {
        match kind {
            "StatefulSet" => {
                let found = get::<StatefulSet>(client, kind, &ns, &child).await?;
                observed.foreign_statefulset_uid = found
                    .as_ref()
                    .filter(|s| !controlled_by(&s.metadata, db))
                    .and_then(|s| s.metadata.uid.clone());
                observed.statefulset = Found::classify(found, |s| controlled_by(&s.metadata, db));
            }
            "Secret" => {
                let recorded = observed
                    .statefulset
                    .ours()
                    .and_then(|s| s.annotations().get(desired::ANNOTATION_CREDENTIALS_UID))
                    .cloned();
                observed.secret = Found::classify(get(client, kind, &ns, &child).await?, |s| {
                    secret_is_ours(s, db, recorded.as_deref())
                });
            }
            "ConfigMap" => {
                observed.config = Found::classify(get(client, kind, &ns, &child).await?, |c| {
                    controlled_by(&c.metadata, db)
                });
            }
            "Service" => {
                let found =
                    Found::classify(get(client, kind, &ns, &child).await?, |s: &Service| {
                        controlled_by(&s.metadata, db)
                    });
                if let Some(slot) = observed.services.iter_mut().find(|(n, _)| *n == child) {
                    slot.1 = found;
                }
            }
            "CronJob" => {
                observed.cronjob = Found::classify(get(client, kind, &ns, &child).await?, |c| {
                    controlled_by(&c.metadata, db)
                });
            }
            "PodDisruptionBudget" => {
                observed.pdb = Found::classify(get(client, kind, &ns, &child).await?, |p| {
                    controlled_by(&p.metadata, db)
                });
            }
            "PersistentVolumeClaim" => {
                observed.backup_pvc = Found::classify(get(client, kind, &ns, &child).await?, |p| {
                    backup_pvc_is_ours(p, &name)
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// Ours: controlled by the Database, or the Secret whose uid our StatefulSet recorded.
pub fn secret_is_ours(secret: &Secret, db: &Database, credentials_uid: Option<&str>) -> bool {
    controlled_by(&secret.metadata, db)
        || (credentials_uid.is_some() && secret.metadata.uid.as_deref() == credentials_uid)
}

fn has_labels(labels: &BTreeMap<String, String>, want: &BTreeMap<String, String>) -> bool {
    want.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// How long a write of ours may go unseen by the caches before they are trusted again (the
/// object may really have been deleted or replaced since).
const EXPECTATION_TTL: Duration = Duration::from_secs(10);

/// Children this process wrote, by `Kind/namespace/name`, with the resourceVersion the write
/// returned: until the cache shows that version (or a later one), the cache is behind.
#[derive(Debug, Default)]
pub struct Expectations {
    inner: Mutex<HashMap<String, (String, Instant)>>,
}

fn expectation_key(kind: &str, ns: &str, name: &str) -> String {
    format!("{kind}/{ns}/{name}")
}

impl Expectations {
    /// Records a write that returned `resource_version`.
    pub fn wrote(&self, kind: &str, ns: &str, name: &str, resource_version: Option<&str>) {
        let Some(rv) = resource_version else { return };
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 50_000 {
            map.retain(|_, (_, at)| at.elapsed() < EXPECTATION_TTL);
        }
        map.insert(
            expectation_key(kind, ns, name),
            (rv.to_owned(), Instant::now()),
        );
    }

    /// True while the cached copy (`cached_rv`, `None` when absent) is older than our write.
    pub fn behind(&self, kind: &str, ns: &str, name: &str, cached_rv: Option<&str>) -> bool {
        let key = expectation_key(kind, ns, name);
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Some((want, at)) = map.get(&key) else {
            return false;
        };
        let caught_up = match cached_rv {
            None => false,
            // resourceVersions are opaque; etcd's are integers, and an equal one is always ours.
            Some(have) => {
                have == want
                    || matches!((have.parse::<u64>(), want.parse::<u64>()), (Ok(h), Ok(w)) if h >= w)
            }
        };
        if caught_up || at.elapsed() >= EXPECTATION_TTL {
            map.remove(&key);
            return false;
        }
        true
    }

    /// The children of `observed` whose cache is behind our writes (`Kind name` each).
    pub fn lagging(&self, db: &Database, observed: &Observed) -> Vec<String> {
        let ns = db.namespace().unwrap_or_default();
        let name = db.name_any();
        let rv = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            m.resource_version.clone()
        };
        let mut rows: Vec<(&str, String, Option<String>)> = vec![
            (
                "StatefulSet",
                name.clone(),
                observed.statefulset.ours().and_then(|s| rv(&s.metadata)),
            ),
            (
                "Secret",
                desired::credentials_secret_name(&name),
                observed.secret.ours().and_then(|s| rv(&s.metadata)),
            ),
            (
                "ConfigMap",
                desired::config_map_name(&name),
                observed.config.ours().and_then(|s| rv(&s.metadata)),
            ),
            (
                "CronJob",
                desired::backup_cronjob_name(&name),
                observed.cronjob.ours().and_then(|s| rv(&s.metadata)),
            ),
            (
                "PodDisruptionBudget",
                name.clone(),
                observed.pdb.ours().and_then(|s| rv(&s.metadata)),
            ),
        ];
        for (svc_name, found) in &observed.services {
            rows.push((
                "Service",
                svc_name.clone(),
                found.ours().and_then(|s| rv(&s.metadata)),
            ));
        }
        for pvc in &observed.pvcs {
            rows.push(("PersistentVolumeClaim", pvc.name_any(), rv(&pvc.metadata)));
        }
        rows.into_iter()
            .filter(|(kind, child, have)| self.behind(kind, &ns, child, have.as_deref()))
            .map(|(kind, child, _)| format!("{kind} {child}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_is_behind_until_it_shows_our_write_or_a_later_one() {
        let e = Expectations::default();
        assert!(!e.behind("Service", "ns", "a", None), "nothing written");
        e.wrote("Service", "ns", "a", Some("100"));
        assert!(e.behind("Service", "ns", "a", None), "not in the cache yet");
        assert!(e.behind("Service", "ns", "a", Some("99")), "older copy");
        assert!(!e.behind("Service", "ns", "a", Some("100")), "caught up");
        assert!(
            !e.behind("Service", "ns", "a", None),
            "forgotten once caught up: an absent object is now really absent"
        );
        e.wrote("Service", "ns", "b", Some("7"));
        assert!(!e.behind("Service", "ns", "b", Some("12")), "later version");
        e.wrote("Service", "ns", "c", Some("opaque"));
        assert!(e.behind("Service", "ns", "c", Some("other")));
        assert!(!e.behind("Service", "ns", "c", Some("opaque")));
        assert!(!e.behind("ConfigMap", "ns", "a", None), "kinds are apart");
    }
}
