//! Desired children of a Database, as pure functions of the Database and its resolved spec.
//!
//! Every child carries the common `app.kubernetes.io/*` labels and a controller ownerReference
//! to its Database, so drift on it re-triggers the reconcile and garbage collection follows the
//! owner. Nothing here talks to the API server.

use std::collections::BTreeMap;

use api::resolved::ResolvedSpec;
use api::v1::Database;
use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy,
    StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource,
    PodSecurityContext, PodSpec, PodTemplateSpec, SeccompProfile, Secret, SecurityContext, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use kube::{Resource, ResourceExt};
use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};

use crate::engine;
use crate::Error;

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const MANAGED_BY: &str = "db-operator";

/// Pod-template annotation holding the sha256 of the rendered configuration: a config change
/// changes the template and so rolls the pods.
pub const ANNOTATION_CONFIG_HASH: &str = "example.com/config-hash";
/// StatefulSet annotations recording what it runs, read back by the destructive-change guard.
pub const ANNOTATION_ENGINE: &str = "example.com/engine";
pub const ANNOTATION_VERSION: &str = "example.com/version";
/// StatefulSet annotation naming the pod a stalled rollout is paused at (with the partition).
pub const ANNOTATION_ROLLOUT_PAUSED: &str = "example.com/rollout-paused-at";
/// StatefulSet annotation recording the uid of the credentials Secret this operator created:
/// that Secret stays ours even if its ownerReference is edited away; any other is foreign.
pub const ANNOTATION_CREDENTIALS_UID: &str = "example.com/credentials-secret-uid";

pub const COMPONENT_DATABASE: &str = "database";
pub const COMPONENT_CONFIG: &str = "config";
pub const COMPONENT_CREDENTIALS: &str = "credentials";
pub const COMPONENT_BACKUP: &str = "backup";

/// Name of the StatefulSet's volumeClaimTemplate; PVCs are `data-<name>-<ordinal>`.
pub const DATA_VOLUME: &str = "data";
const CONFIG_VOLUME: &str = "config";
const BACKUP_VOLUME: &str = "backup";
/// emptyDir for `/tmp` (both pods run with a read-only root filesystem).
const TMP_VOLUME: &str = "tmp";
/// emptyDir for the server's socket/pid directory.
const RUN_VOLUME: &str = "run";

/// Long enough for a clean shutdown checkpoint / InnoDB flush.
pub const TERMINATION_GRACE_SECONDS: i64 = 90;

pub fn credentials_secret_name(db: &str) -> String {
    format!("{db}-credentials")
}
pub fn config_map_name(db: &str) -> String {
    format!("{db}-config")
}
pub fn headless_service_name(db: &str) -> String {
    format!("{db}-headless")
}
pub fn backup_cronjob_name(db: &str) -> String {
    format!("{db}-backup")
}
pub fn backup_pvc_name(db: &str) -> String {
    format!("{db}-backups")
}

/// Labels every child carries.
pub fn common_labels(
    db: &str,
    resolved: &ResolvedSpec,
    component: &str,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            LABEL_NAME.to_owned(),
            engine::short_name(&resolved.engine).to_owned(),
        ),
        (LABEL_INSTANCE.to_owned(), db.to_owned()),
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
        (LABEL_COMPONENT.to_owned(), component.to_owned()),
    ])
}

/// The StatefulSet's (immutable) selector: stable across engine/version changes.
pub fn selector_labels(db: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_INSTANCE.to_owned(), db.to_owned()),
        (LABEL_COMPONENT.to_owned(), COMPONENT_DATABASE.to_owned()),
    ])
}

/// `k=v,k=v` form of [`selector_labels`] for list calls.
pub fn selector_string(db: &str) -> String {
    selector_labels(db)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Name, namespace and controller reference shared by all children of one Database.
struct Parent {
    name: String,
    namespace: String,
    owner: OwnerReference,
}

fn parent(db: &Database) -> Result<Parent, Error> {
    let namespace = db.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let owner = db
        .controller_owner_ref(&())
        .ok_or(Error::MissingMetadata("uid"))?;
    Ok(Parent {
        name: db.name_any(),
        namespace,
        owner,
    })
}

fn meta(p: &Parent, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(p.namespace.clone()),
        labels: Some(labels),
        owner_references: Some(vec![p.owner.clone()]),
        ..Default::default()
    }
}

/// The configuration file contents keyed by file name, as stored in the ConfigMap.
pub fn config_data(resolved: &ResolvedSpec) -> BTreeMap<String, String> {
    let (_, file) = engine::config_mount(&resolved.engine);
    BTreeMap::from([(
        file.to_owned(),
        engine::render_config(&resolved.engine, &resolved.config),
    )])
}

/// sha256 over the ConfigMap data (keys sorted), hex encoded.
pub fn config_hash(data: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for (k, v) in data {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

pub fn desired_configmap(db: &Database, resolved: &ResolvedSpec) -> Result<ConfigMap, Error> {
    let p = parent(db)?;
    Ok(ConfigMap {
        metadata: meta(
            &p,
            config_map_name(&p.name),
            common_labels(&p.name, resolved, COMPONENT_CONFIG),
        ),
        data: Some(config_data(resolved)),
        ..Default::default()
    })
}

/// A fresh random password (32 alphanumerics, ~190 bits).
pub fn generate_password() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

/// The credentials Secret. Only ever *created* (never applied over an existing one), so the
/// password passed here is used exactly once.
pub fn desired_credentials_secret(
    db: &Database,
    resolved: &ResolvedSpec,
    password: &str,
) -> Result<Secret, Error> {
    let p = parent(db)?;
    let database_name: String = p
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    Ok(Secret {
        metadata: meta(
            &p,
            credentials_secret_name(&p.name),
            common_labels(&p.name, resolved, COMPONENT_CREDENTIALS),
        ),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([
            (
                engine::SECRET_KEY_USERNAME.to_owned(),
                ByteString(engine::admin_username(&resolved.engine).as_bytes().to_vec()),
            ),
            (
                engine::SECRET_KEY_PASSWORD.to_owned(),
                ByteString(password.as_bytes().to_vec()),
            ),
            (
                engine::SECRET_KEY_DATABASE.to_owned(),
                ByteString(database_name.into_bytes()),
            ),
        ])),
        ..Default::default()
    })
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(Default::default()),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        ..Default::default()
    }
}

/// What every pod of a Database shares, server and backup alike: the user's placement, the
/// non-root security context, no service links, and no ServiceAccount token (a database server
/// or dump has no business with the Kubernetes API).
fn pod_base(scheduling: &api::v1::Scheduling) -> PodSpec {
    PodSpec {
        node_selector: scheduling.node_selector.clone(),
        tolerations: scheduling.tolerations.clone(),
        affinity: scheduling.affinity.clone(),
        topology_spread_constraints: scheduling.topology_spread_constraints.clone(),
        security_context: Some(pod_security_context()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        ..Default::default()
    }
}

fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(engine::RUN_AS_USER),
        run_as_group: Some(engine::RUN_AS_USER),
        fs_group: Some(engine::RUN_AS_USER),
        fs_group_change_policy: Some("OnRootMismatch".to_owned()),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        // Everything the engines write goes to the data volume or an emptyDir below.
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One ReadWriteOnce volume of `spec.storageSize` in `spec.storageClassName`: the data volumes
/// and the backup volume are sized alike.
fn claim_spec(resolved: &ResolvedSpec) -> PersistentVolumeClaimSpec {
    PersistentVolumeClaimSpec {
        access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
        storage_class_name: resolved.storage_class_name.clone(),
        resources: Some(VolumeResourceRequirements {
            requests: Some(BTreeMap::from([(
                "storage".to_owned(),
                resolved.storage_size.clone(),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The data volumeClaimTemplate for a fresh StatefulSet. (On an existing StatefulSet the
/// reconciler keeps the observed template: volumeClaimTemplates are immutable.)
pub fn data_claim_template(db: &str, resolved: &ResolvedSpec) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_owned()),
            labels: Some(common_labels(db, resolved, COMPONENT_DATABASE)),
            ..Default::default()
        },
        spec: Some(claim_spec(resolved)),
        ..Default::default()
    }
}

pub fn desired_statefulset(db: &Database, resolved: &ResolvedSpec) -> Result<StatefulSet, Error> {
    let p = parent(db)?;
    let eng = &resolved.engine;
    let short = engine::short_name(eng);
    let labels = common_labels(&p.name, resolved, COMPONENT_DATABASE);
    let (config_dir, _) = engine::config_mount(eng);
    let hash = config_hash(&config_data(resolved));

    let mut meta = meta(&p, p.name.clone(), labels.clone());
    meta.annotations = Some(BTreeMap::from([
        (ANNOTATION_ENGINE.to_owned(), short.to_owned()),
        (ANNOTATION_VERSION.to_owned(), resolved.version.to_string()),
    ]));

    let args = engine::container_args(eng);
    let container = Container {
        name: short.to_owned(),
        image: Some(resolved.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        args: if args.is_empty() { None } else { Some(args) },
        ports: Some(vec![ContainerPort {
            name: Some(short.to_owned()),
            container_port: engine::port(eng),
            protocol: Some("TCP".to_owned()),
            ..Default::default()
        }]),
        env: Some(engine::server_env(eng, &credentials_secret_name(&p.name))),
        resources: resolved.resources.clone(),
        readiness_probe: Some(engine::readiness_probe(eng)),
        liveness_probe: Some(engine::liveness_probe(eng)),
        // A server that exits at start leaves its last log lines (the FATAL) as the termination
        // message, which the status quotes when the rollout stalls.
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        volume_mounts: Some(vec![
            VolumeMount {
                name: DATA_VOLUME.to_owned(),
                mount_path: engine::data_mount_path(eng).to_owned(),
                ..Default::default()
            },
            VolumeMount {
                name: CONFIG_VOLUME.to_owned(),
                mount_path: config_dir.to_owned(),
                read_only: Some(true),
                ..Default::default()
            },
            mount(TMP_VOLUME, "/tmp"),
            mount(RUN_VOLUME, engine::run_dir(eng)),
        ]),
        security_context: Some(container_security_context()),
        ..Default::default()
    };

    Ok(StatefulSet {
        metadata: meta,
        spec: Some(StatefulSetSpec {
            replicas: Some(resolved.replicas),
            service_name: Some(headless_service_name(&p.name)),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&p.name)),
                ..Default::default()
            },
            pod_management_policy: Some("OrderedReady".to_owned()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".to_owned()),
                // One pod at a time, highest ordinal first; the StatefulSet controller waits
                // for each updated pod to be Ready before moving on.
                // (maxUnavailable is left unset: it defaults to 1 and is feature-gated.)
                rolling_update: Some(RollingUpdateStatefulSetStrategy {
                    partition: Some(0),
                    max_unavailable: None,
                }),
            }),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".to_owned()),
                    when_scaled: Some("Retain".to_owned()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(BTreeMap::from([(ANNOTATION_CONFIG_HASH.to_owned(), hash)])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
                    containers: vec![container],
                    volumes: Some(vec![
                        Volume {
                            name: CONFIG_VOLUME.to_owned(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: config_map_name(&p.name),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        empty_dir(TMP_VOLUME),
                        empty_dir(RUN_VOLUME),
                    ]),
                    affinity: Some(
                        resolved
                            .scheduling
                            .affinity
                            .clone()
                            .unwrap_or_else(|| default_affinity(&p.name)),
                    ),
                    ..pod_base(&resolved.scheduling)
                }),
            },
            volume_claim_templates: Some(vec![data_claim_template(&p.name, resolved)]),
            ..Default::default()
        }),
        status: None,
    })
}

/// With more than one replica, a PodDisruptionBudget `<name>` that lets voluntary disruptions
/// (node drains) take at most one database pod at a time; none for a single replica (it would
/// block every drain).
pub fn desired_pdb(
    db: &Database,
    resolved: &ResolvedSpec,
) -> Result<Option<k8s_openapi::api::policy::v1::PodDisruptionBudget>, Error> {
    use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
    if resolved.replicas <= 1 {
        return Ok(None);
    }
    let p = parent(db)?;
    Ok(Some(PodDisruptionBudget {
        metadata: meta(
            &p,
            p.name.clone(),
            common_labels(&p.name, resolved, COMPONENT_DATABASE),
        ),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&p.name)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }))
}

/// Without an affinity in `spec.scheduling`: prefer one database pod per node, so a node's loss
/// takes one replica (preferred, not required, so a small cluster still runs every replica).
fn default_affinity(name: &str) -> k8s_openapi::api::core::v1::Affinity {
    use k8s_openapi::api::core::v1::{
        Affinity, PodAffinityTerm, PodAntiAffinity, WeightedPodAffinityTerm,
    };
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        topology_key: "kubernetes.io/hostname".to_owned(),
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector_labels(name)),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Client Service `<name>` and the StatefulSet's governing headless Service `<name>-headless`.
pub fn desired_services(db: &Database, resolved: &ResolvedSpec) -> Result<[Service; 2], Error> {
    let p = parent(db)?;
    let short = engine::short_name(&resolved.engine);
    let ports = vec![ServicePort {
        name: Some(short.to_owned()),
        port: engine::port(&resolved.engine),
        target_port: Some(IntOrString::String(short.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..Default::default()
    }];
    let labels = common_labels(&p.name, resolved, COMPONENT_DATABASE);
    let client = Service {
        metadata: meta(&p, p.name.clone(), labels.clone()),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(selector_labels(&p.name)),
            ports: Some(ports.clone()),
            ..Default::default()
        }),
        status: None,
    };
    let headless = Service {
        metadata: meta(&p, headless_service_name(&p.name), labels),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            selector: Some(selector_labels(&p.name)),
            ports: Some(ports),
            publish_not_ready_addresses: Some(true),
            ..Default::default()
        }),
        status: None,
    };
    Ok([client, headless])
}

/// The PVC backups are written to (kept like the data PVCs; only created with a schedule).
pub fn desired_backup_pvc(
    db: &Database,
    resolved: &ResolvedSpec,
) -> Result<Option<PersistentVolumeClaim>, Error> {
    if resolved.backup_schedule.is_none() {
        return Ok(None);
    }
    let p = parent(db)?;
    Ok(Some(PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(backup_pvc_name(&p.name)),
            namespace: Some(p.namespace.clone()),
            labels: Some(common_labels(&p.name, resolved, COMPONENT_BACKUP)),
            // Not owned: like the data PVCs, backups outlive the Database unless the
            // delete-pvcs annotation asks otherwise.
            ..Default::default()
        },
        spec: Some(claim_spec(resolved)),
        status: None,
    }))
}

/// The backup CronJob when `spec.backupSchedule` is set, `None` when it must not exist.
pub fn desired_backup_cronjob(
    db: &Database,
    resolved: &ResolvedSpec,
) -> Result<Option<CronJob>, Error> {
    let Some(schedule) = resolved.backup_schedule.clone() else {
        return Ok(None);
    };
    let p = parent(db)?;
    let eng = &resolved.engine;
    let labels = common_labels(&p.name, resolved, COMPONENT_BACKUP);
    let container = Container {
        name: "backup".to_owned(),
        image: Some(resolved.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        command: Some(vec![
            "sh".to_owned(),
            "-c".to_owned(),
            engine::dump_command(eng, &p.name),
        ]),
        env: Some(engine::backup_env(eng, &credentials_secret_name(&p.name))),
        volume_mounts: Some(vec![
            mount(BACKUP_VOLUME, engine::BACKUP_MOUNT_PATH),
            mount(TMP_VOLUME, "/tmp"),
        ]),
        security_context: Some(container_security_context()),
        ..Default::default()
    };
    Ok(Some(CronJob {
        metadata: meta(&p, backup_cronjob_name(&p.name), labels.clone()),
        spec: CronJobSpec {
            schedule,
            concurrency_policy: Some("Forbid".to_owned()),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(1),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    ..Default::default()
                }),
                spec: Some(JobSpec {
                    backoff_limit: Some(2),
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(labels),
                            ..Default::default()
                        }),
                        spec: Some(PodSpec {
                            restart_policy: Some("OnFailure".to_owned()),
                            containers: vec![container],
                            volumes: Some(vec![
                                Volume {
                                    name: BACKUP_VOLUME.to_owned(),
                                    persistent_volume_claim: Some(
                                        PersistentVolumeClaimVolumeSource {
                                            claim_name: backup_pvc_name(&p.name),
                                            read_only: Some(false),
                                        },
                                    ),
                                    ..Default::default()
                                },
                                empty_dir(TMP_VOLUME),
                            ]),
                            ..pod_base(&resolved.scheduling)
                        }),
                    },
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        status: None,
    }))
}

/// Client endpoints reported in status: `<name>.<ns>.svc:<port>`.
pub fn endpoints(db: &Database, resolved: &ResolvedSpec) -> Vec<String> {
    let ns = db.namespace().unwrap_or_default();
    vec![format!(
        "{}.{}.svc:{}",
        db.name_any(),
        ns,
        engine::port(&resolved.engine)
    )]
}

/// Storage request of a claim, if it has one.
pub fn claim_storage(pvc: &PersistentVolumeClaim) -> Option<&Quantity> {
    pvc.spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use api::catalog::Catalog;
    use api::v1::DatabaseSpec;

    pub(crate) fn db(name: &str, spec: DatabaseSpec) -> Database {
        let mut db = Database::new(name, spec);
        db.metadata.namespace = Some("shop".to_owned());
        db.metadata.uid = Some("0b6b2a4e-1111-2222-3333-444455556666".to_owned());
        db.metadata.generation = Some(1);
        db
    }

    pub(crate) fn spec(engine: api::v1::Engine, replicas: i32) -> DatabaseSpec {
        DatabaseSpec {
            engine: Some(engine),
            replicas: Some(replicas),
            storage_size: Some(Quantity("10Gi".to_owned())),
            ..Default::default()
        }
    }

    pub(crate) fn resolved(db: &Database) -> ResolvedSpec {
        api::resolved::resolve(db, &Catalog::builtin()).expect("spec resolves")
    }

    #[test]
    fn replicas_spread_over_nodes_by_default_and_a_pdb_guards_more_than_one() {
        let single = db("orders", spec(api::v1::Engine::Postgres, 1));
        assert!(desired_pdb(&single, &resolved(&single)).unwrap().is_none());
        let three = db("orders", spec(api::v1::Engine::Postgres, 3));
        let pdb = desired_pdb(&three, &resolved(&three))
            .unwrap()
            .expect("a PDB");
        let pdb_spec = pdb.spec.unwrap();
        assert_eq!(pdb_spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(
            pdb_spec.selector.unwrap().match_labels,
            Some(selector_labels("orders"))
        );
        assert_eq!(pdb.metadata.owner_references.unwrap()[0].kind, "Database");
        let sts = desired_statefulset(&three, &resolved(&three)).unwrap();
        let affinity = sts.spec.unwrap().template.spec.unwrap().affinity.unwrap();
        let term = &affinity
            .pod_anti_affinity
            .unwrap()
            .preferred_during_scheduling_ignored_during_execution
            .unwrap()[0];
        assert_eq!(
            term.pod_affinity_term.topology_key,
            "kubernetes.io/hostname"
        );
        assert_eq!(
            term.pod_affinity_term
                .label_selector
                .as_ref()
                .unwrap()
                .match_labels,
            Some(selector_labels("orders"))
        );
    }

    #[test]
    fn scheduling_is_copied_into_the_database_and_backup_pod_templates() {
        let scheduling: api::v1::Scheduling = serde_json::from_value(serde_json::json!({
            "nodeSelector": {"disktype": "ssd"},
            "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100,
                "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname"}}]}},
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway"}]
        }))
        .unwrap();
        let mut s = spec(api::v1::Engine::Postgres, 3);
        s.backup_schedule = Some("@daily".to_owned());
        s.scheduling = Some(scheduling.clone());
        let d = db("orders", s);
        let r = resolved(&d);
        let sts = desired_statefulset(&d, &r).unwrap();
        let cron = desired_backup_cronjob(&d, &r).unwrap().unwrap();
        let job_pod = cron.spec.job_template.spec.unwrap().template.spec.unwrap();
        for pod in [sts.spec.unwrap().template.spec.unwrap(), job_pod] {
            assert_eq!(pod.node_selector, scheduling.node_selector);
            assert_eq!(pod.tolerations, scheduling.tolerations);
            assert_eq!(pod.affinity, scheduling.affinity);
            assert_eq!(
                pod.topology_spread_constraints,
                scheduling.topology_spread_constraints
            );
        }
        // without spec.scheduling the pod templates carry no placement but the default spread
        let plain = db("plain", spec(api::v1::Engine::Postgres, 1));
        let pod = desired_statefulset(&plain, &resolved(&plain))
            .unwrap()
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        assert!(pod.node_selector.is_none() && pod.tolerations.is_none());
        assert!(pod.topology_spread_constraints.is_none());
        assert_eq!(pod.affinity, Some(default_affinity("plain")));
    }

    #[test]
    fn statefulset_runs_catalog_image_with_probes_storage_and_owner() {
        let d = db("orders", spec(api::v1::Engine::Postgres, 3));
        let r = resolved(&d);
        let sts = desired_statefulset(&d, &r).unwrap();
        let spec = sts.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.service_name.as_deref(), Some("orders-headless"));
        let pod = spec.template.spec.as_ref().unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some(r.image.as_str()));
        assert!(c.readiness_probe.is_some() && c.liveness_probe.is_some());
        assert_eq!(pod.termination_grace_period_seconds, Some(90));
        let sc = pod.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.fs_group, Some(999));
        let vct = &spec.volume_claim_templates.as_ref().unwrap()[0];
        assert_eq!(claim_storage(vct), Some(&Quantity("10Gi".to_owned())));
        let owner = &sts.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.kind, "Database");
        assert_eq!(owner.controller, Some(true));
        let labels = sts.metadata.labels.as_ref().unwrap();
        for key in [
            LABEL_NAME,
            LABEL_INSTANCE,
            LABEL_MANAGED_BY,
            LABEL_COMPONENT,
        ] {
            assert!(labels.contains_key(key), "missing {key}");
        }
        assert_eq!(
            spec.update_strategy.as_ref().unwrap().type_.as_deref(),
            Some("RollingUpdate")
        );
    }

    #[test]
    fn config_change_changes_pod_template_hash() {
        let d1 = db("orders", spec(api::v1::Engine::Postgres, 1));
        let mut s2 = spec(api::v1::Engine::Postgres, 1);
        s2.config = Some(BTreeMap::from([(
            "max_connections".to_owned(),
            "300".to_owned(),
        )]));
        let d2 = db("orders", s2);
        let hash = |d: &Database| {
            desired_statefulset(d, &resolved(d))
                .unwrap()
                .spec
                .unwrap()
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap()[ANNOTATION_CONFIG_HASH]
                .clone()
        };
        assert_ne!(hash(&d1), hash(&d2));
        assert_eq!(hash(&d1), hash(&d1.clone()), "hash is deterministic");
    }

    #[test]
    fn headless_service_publishes_not_ready_addresses() {
        let d = db("orders", spec(api::v1::Engine::Mysql, 1));
        let [client, headless] = desired_services(&d, &resolved(&d)).unwrap();
        assert_eq!(client.metadata.name.as_deref(), Some("orders"));
        assert_eq!(
            client.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port,
            3306
        );
        let hs = headless.spec.unwrap();
        assert_eq!(hs.cluster_ip.as_deref(), Some("None"));
        assert_eq!(hs.publish_not_ready_addresses, Some(true));
    }

    /// Paths each pod's container can write: its volume mounts that are not read-only.
    fn writable_mounts(pod: &PodSpec) -> Vec<String> {
        let mut out: Vec<String> = pod.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .filter(|m| m.read_only != Some(true))
            .map(|m| m.mount_path.clone())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn database_and_backup_pods_get_no_token_and_a_read_only_root() {
        let mut s = spec(api::v1::Engine::Postgres, 1);
        s.backup_schedule = Some("0 3 * * *".to_owned());
        let pg = db("orders", s.clone());
        s.engine = Some(api::v1::Engine::Mysql);
        let my = db("orders", s);
        let pod_of_sts = |d: &Database| {
            desired_statefulset(d, &resolved(d))
                .unwrap()
                .spec
                .unwrap()
                .template
                .spec
                .unwrap()
        };
        let pod_of_backup = |d: &Database| {
            desired_backup_cronjob(d, &resolved(d))
                .unwrap()
                .unwrap()
                .spec
                .job_template
                .spec
                .unwrap()
                .template
                .spec
                .unwrap()
        };
        // (behaviour, pod, the only paths it may write)
        let rows = [
            (
                "postgres_server_writes_data_socket_dir_and_tmp",
                pod_of_sts(&pg),
                vec!["/tmp", "/var/lib/postgresql/data", "/var/run/postgresql"],
            ),
            (
                "mysql_server_writes_data_socket_dir_and_tmp",
                pod_of_sts(&my),
                vec!["/tmp", "/var/lib/mysql", "/var/run/mysqld"],
            ),
            (
                "postgres_backup_writes_backup_volume_and_tmp",
                pod_of_backup(&pg),
                vec!["/backup", "/tmp"],
            ),
            (
                "mysql_backup_writes_backup_volume_and_tmp",
                pod_of_backup(&my),
                vec!["/backup", "/tmp"],
            ),
        ];
        for (name, pod, writable) in rows {
            assert_eq!(pod.automount_service_account_token, Some(false), "{name}");
            let sc = pod.containers[0].security_context.as_ref().unwrap();
            assert_eq!(sc.read_only_root_filesystem, Some(true), "{name}");
            assert_eq!(writable_mounts(&pod), writable, "{name}");
            // Every writable path other than the PVC is an emptyDir of the pod.
            for m in pod.containers[0].volume_mounts.iter().flatten() {
                let vol = pod.volumes.iter().flatten().find(|v| v.name == m.name);
                assert!(
                    vol.is_some() || m.name == DATA_VOLUME,
                    "{name}: mount {} has no volume",
                    m.name
                );
            }
        }
    }

    #[test]
    fn backup_cronjob_exists_only_with_a_schedule() {
        let d = db("orders", spec(api::v1::Engine::Postgres, 1));
        assert!(desired_backup_cronjob(&d, &resolved(&d)).unwrap().is_none());
        let mut s = spec(api::v1::Engine::Postgres, 1);
        s.backup_schedule = Some("0 3 * * *".to_owned());
        let d = db("orders", s);
        let cj = desired_backup_cronjob(&d, &resolved(&d)).unwrap().unwrap();
        let cjs = cj.spec;
        assert_eq!(cjs.schedule, "0 3 * * *");
        let pod = cjs.job_template.spec.unwrap().template.spec.unwrap();
        let cmd = pod.containers[0].command.clone().unwrap().join(" ");
        assert!(cmd.contains("pg_dumpall"), "{cmd}");
        assert_eq!(
            pod.volumes.unwrap()[0]
                .persistent_volume_claim
                .as_ref()
                .map(|p| p.claim_name.clone()),
            Some("orders-backups".to_owned())
        );
    }

    #[test]
    fn secret_holds_generated_password_and_is_owned() {
        let d = db("orders", spec(api::v1::Engine::Postgres, 1));
        let pw = generate_password();
        assert_eq!(pw.len(), 32);
        assert_ne!(pw, generate_password(), "passwords are random");
        let s = desired_credentials_secret(&d, &resolved(&d), &pw).unwrap();
        assert_eq!(s.metadata.name.as_deref(), Some("orders-credentials"));
        assert_eq!(
            s.data.as_ref().unwrap()["password"],
            ByteString(pw.into_bytes())
        );
        assert!(s.metadata.owner_references.is_some());
    }

    #[test]
    fn endpoints_name_the_client_service() {
        let d = db("orders", spec(api::v1::Engine::Postgres, 1));
        assert_eq!(endpoints(&d, &resolved(&d)), vec!["orders.shop.svc:5432"]);
    }

    #[test]
    fn children_without_uid_are_refused() {
        let mut d = db("orders", spec(api::v1::Engine::Postgres, 1));
        let r = resolved(&d);
        d.metadata.uid = None;
        assert!(matches!(
            desired_statefulset(&d, &r),
            Err(Error::MissingMetadata("uid"))
        ));
    }
}
