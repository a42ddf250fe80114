//! Plan: a pure function from what a Database asks for and what was observed to what should be
//! done about it: which children to write, which PVCs to grow, which events to emit and the
//! status to report. No I/O happens here; [`crate::apply`] carries a plan out.

use std::time::Duration;

use api::catalog::Catalog;
use api::resolved::ResolvedSpec;
use api::v1::{Database, CONDITION_DEGRADED};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::runtime::events::EventType;
use kube::ResourceExt;
use serde::Serialize;

use crate::context::Settings;
use crate::desired::{self, claim_storage};
use crate::drift;
use crate::error::Error;
use crate::guard::{self, Refusal};
use crate::observe::Observed;
use crate::status::{self, Observation, Problem, WorkloadStatus};

pub const REASON_STORAGE_EXPANSION_NOT_ALLOWED: &str = "StorageExpansionNotAllowed";
pub const REASON_STORAGE_EXPANSION_PENDING: &str = "StorageExpansionPending";

/// An event the plan wants published once its writes are done.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedEvent {
    pub type_: EventType,
    pub reason: &'static str,
    pub action: &'static str,
    pub note: String,
}

/// One child: what it should be and what is there (ours, or absent).
#[derive(Debug, Clone)]
pub struct Child<K> {
    pub desired: K,
    pub observed: Option<K>,
}

impl<K: Serialize> Child<K> {
    /// Absent, or present but not satisfying the desired state.
    pub fn needs_write(&self) -> bool {
        self.observed
            .as_ref()
            .is_none_or(|o| !drift::is_satisfied_by(&self.desired, o))
    }
}

/// The credentials Secret: created once, its data never rewritten.
#[derive(Debug, Clone)]
pub enum SecretStep {
    /// Absent: create it with a fresh password.
    Create,
    /// Ours, but its labels or ownerReference were edited away: restore those (this metadata,
    /// which carries the Secret's uid as a precondition), never the data.
    RestoreMetadata(Box<Secret>),
    /// Ours and as it should be (this uid).
    Keep { uid: Option<String> },
}

/// The backup CronJob and its volume.
#[derive(Debug, Clone)]
pub enum BackupStep {
    /// No schedule and no CronJob of ours.
    Nothing,
    /// A schedule: the volume (created if absent, never rewritten) and the CronJob.
    Scheduled {
        create_pvc: Option<Box<PersistentVolumeClaim>>,
        cronjob: Box<Child<CronJob>>,
    },
    /// The schedule was removed: delete our CronJob (this uid).
    DeleteCronJob { uid: Option<String> },
}

/// The PodDisruptionBudget: kept in step with more than one replica, deleted at one.
#[derive(Debug, Clone)]
pub enum PdbStep {
    Nothing,
    Apply(Box<Child<k8s_openapi::api::policy::v1::PodDisruptionBudget>>),
    Delete { uid: Option<String> },
}

/// A data PVC to grow to the spec's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Growth {
    pub pvc: String,
    pub from: String,
    pub to: String,
}

/// What to do for a Database that is not being deleted.
#[derive(Debug, Clone)]
pub enum Plan {
    /// The spec is not acted on; only status (and a Warning when the reason is new).
    Refuse {
        observation: Box<Observation>,
        event: Option<PlannedEvent>,
    },
    /// Make the children match the spec.
    Act(Box<Actions>),
}

#[derive(Debug, Clone)]
pub struct Actions {
    pub resolved: ResolvedSpec,
    pub secret: SecretStep,
    pub config: Child<ConfigMap>,
    pub services: Vec<Child<Service>>,
    /// Without the credentials-uid annotation when the Secret is still to be created (the
    /// executor adds the new Secret's uid).
    pub statefulset: Child<StatefulSet>,
    pub backup: BackupStep,
    pub pdb: PdbStep,
    pub growth: Vec<Growth>,
    /// Published after the writes, in order.
    pub events: Vec<PlannedEvent>,
    /// Status inputs; `workload` is the observed one and is replaced by the StatefulSet the
    /// write returned when the StatefulSet is written.
    pub observation: Observation,
    /// The endpoints to report once the client Service exists (it may be created now).
    pub endpoints: Vec<String>,
}

impl Actions {
    /// How soon to look again, given the status computed from this plan.
    pub fn requeue(&self, settings: &Settings, ready: bool) -> Duration {
        if ready {
            settings.ready_requeue
        } else if self.observation.stalled_rollout.is_some() {
            settings.progress_requeue.max(Duration::from_secs(30))
        } else {
            settings.progress_requeue
        }
    }
}

/// The previous Degraded message, to emit warnings only when something new goes wrong.
fn previous_degraded_message(db: &Database) -> Option<String> {
    db.status
        .as_ref()
        .and_then(|s| status::find(s, CONDITION_DEGRADED))
        .filter(|c| c.status == "True")
        .map(|c| c.message.clone())
}

/// True when `message` is not already part of the Degraded condition (a new problem).
fn is_new(prev_degraded: Option<&str>, message: &str) -> bool {
    prev_degraded.is_none_or(|m| !m.contains(message))
}

/// Plans the reconcile of a Database that is not being deleted and has no name conflicts.
pub fn plan(
    db: &Database,
    observed: &Observed,
    catalog: &Catalog,
    settings: &Settings,
    now: Timestamp,
) -> Result<Plan, Error> {
    let name = db.name_any();
    let observed_sts = observed.statefulset.ours();
    let prev_degraded = previous_degraded_message(db);

    // Guard: the API rules and destructive changes vs. what runs. Refused specs are not acted on.
    let resolved = match guard::check_spec(db, catalog) {
        Ok(r) => r,
        Err(refusal) => return Ok(refuse(db, refusal, observed_sts, None, prev_degraded)),
    };
    let destructive = guard::destructive_changes(&resolved, &observed.shape(), catalog);
    if !destructive.is_empty() {
        let refusal = Refusal {
            reason: guard::REASON_DESTRUCTIVE_CHANGE,
            message: format!("change not applied: {}", destructive.join("; ")),
        };
        return Ok(refuse(
            db,
            refusal,
            observed_sts,
            Some(&resolved),
            prev_degraded,
        ));
    }
    let mut events = Vec::new();

    let secret = match observed.secret.ours() {
        None => SecretStep::Create,
        Some(existing) => {
            let mut meta_only = desired::desired_credentials_secret(db, &resolved, "")?;
            meta_only.data = None;
            meta_only.type_ = None;
            if drift::is_satisfied_by(&meta_only, existing) {
                SecretStep::Keep {
                    uid: existing.metadata.uid.clone(),
                }
            } else {
                meta_only.metadata.uid = existing.metadata.uid.clone();
                SecretStep::RestoreMetadata(Box::new(meta_only))
            }
        }
    };
    let credentials_uid = observed.secret.ours().and_then(|s| s.metadata.uid.clone());

    let config = Child {
        desired: desired::desired_configmap(db, &resolved)?,
        observed: observed.config.ours().cloned(),
    };
    let services = desired::desired_services(db, &resolved)?
        .into_iter()
        .zip(observed.services.iter())
        .map(|(svc, (_, found))| Child {
            desired: svc,
            observed: found.ours().cloned(),
        })
        .collect();

    let mut sts = desired::desired_statefulset(db, &resolved)?;
    if let Some(uid) = credentials_uid {
        set_annotation(&mut sts.metadata, desired::ANNOTATION_CREDENTIALS_UID, uid);
    }
    keep_claim_templates(&mut sts, observed_sts);

    // Stalled rollouts: detected only while the running template is the current one, and then
    // paused with a partition at the stuck pod until the template changes.
    let template_current = match (
        sts.spec.as_ref(),
        observed_sts.and_then(|o| o.spec.as_ref()),
    ) {
        (Some(d), Some(o)) => drift::is_satisfied_by(&d.template, &o.template),
        _ => false,
    };
    let observed_pause = observed_sts.and_then(observed_pause);
    let workload = observed_sts.map(WorkloadStatus::from_statefulset);
    let stall = match &workload {
        Some(w)
            // Only once the StatefulSet controller has observed the current template: until
            // then updateRevision (and the pods labelled with it) may still be the old one.
            if template_current
                && w.observed_generation >= w.generation
                && w.update_revision.is_some()
                && (w.current_revision != w.update_revision || w.ready_replicas < w.replicas) =>
        {
            status::stalled_pod(
                &observed.pods,
                w.update_revision.as_deref(),
                settings.rollout_timeout,
                now,
            )
        }
        _ => None,
    };
    // A pause holds back a rolling update (pods on the old revision still to replace). Without
    // one (the Database being created, every pod on the current revision), a pod that is slow
    // to become Ready is reported as stalled while it is, and nothing is held back afterwards.
    let rolling = workload
        .as_ref()
        .is_some_and(|w| w.update_revision.is_some() && w.current_revision != w.update_revision);
    let pause = if rolling {
        status::rollout_pause(template_current, observed_pause.clone(), stall.as_ref())
    } else {
        None
    };
    if let Some((pod, partition)) = &pause {
        if let Some(ru) = sts
            .spec
            .as_mut()
            .and_then(|s| s.update_strategy.as_mut())
            .and_then(|u| u.rolling_update.as_mut())
        {
            ru.partition = Some(*partition);
        }
        set_annotation(
            &mut sts.metadata,
            desired::ANNOTATION_ROLLOUT_PAUSED,
            pod.clone(),
        );
        if observed_pause.is_none() {
            events.push(PlannedEvent {
                type_: EventType::Warning,
                reason: "RolloutPaused",
                action: "RollingUpdate",
                note: format!(
                    "rolling update paused at pod {pod} (partition {partition}): it did not become Ready within {}s",
                    settings.rollout_timeout.as_secs()
                ),
            });
        }
    }
    let stalled = match (&stall, &pause) {
        (Some(s), _) => Some(status::stall_message(s, settings.rollout_timeout)),
        (None, Some((pod, _))) => Some(status::paused_message(pod, settings.rollout_timeout)),
        _ => None,
    };
    let statefulset = Child {
        desired: sts,
        observed: observed_sts.cloned(),
    };
    if statefulset.needs_write() {
        if let Some(o) = observed_sts {
            let old_version = o.annotations().get(desired::ANNOTATION_VERSION).cloned();
            let new_version = resolved.version.to_string();
            if old_version.as_deref() != Some(new_version.as_str()) {
                events.push(PlannedEvent {
                    type_: EventType::Normal,
                    reason: "RollingUpdate",
                    action: "UpdateStatefulSet",
                    note: format!(
                        "rolling {name} from version {} to {new_version} one pod at a time",
                        old_version.unwrap_or_else(|| "unknown".to_owned()),
                    ),
                });
            }
        }
    }
    if let Some(msg) = &stalled {
        if is_new(prev_degraded.as_deref(), msg) {
            events.push(PlannedEvent {
                type_: EventType::Warning,
                reason: status::REASON_ROLLOUT_STALLED,
                action: "RollingUpdate",
                note: msg.clone(),
            });
        }
    }

    let backup = match desired::desired_backup_cronjob(db, &resolved)? {
        Some(cj) => BackupStep::Scheduled {
            create_pvc: match observed.backup_pvc {
                crate::ownership::Found::Absent => {
                    desired::desired_backup_pvc(db, &resolved)?.map(Box::new)
                }
                _ => None,
            },
            cronjob: Box::new(Child {
                desired: cj,
                observed: observed.cronjob.ours().cloned(),
            }),
        },
        None => match observed.cronjob.ours() {
            Some(cj) => BackupStep::DeleteCronJob {
                uid: cj.metadata.uid.clone(),
            },
            None => BackupStep::Nothing,
        },
    };

    let pdb = match (desired::desired_pdb(db, &resolved)?, observed.pdb.ours()) {
        (Some(want), have) => PdbStep::Apply(Box::new(Child {
            desired: want,
            observed: have.cloned(),
        })),
        (None, Some(have)) => PdbStep::Delete {
            uid: have.metadata.uid.clone(),
        },
        (None, None) => PdbStep::Nothing,
    };
    let (growth, problems) = plan_growth(&resolved, &observed.pvcs, &observed.expandable);
    for p in &problems {
        if is_new(prev_degraded.as_deref(), &p.message) {
            events.push(PlannedEvent {
                type_: EventType::Warning,
                reason: p.reason,
                action: "ExpandStorage",
                note: p.message.clone(),
            });
        }
    }
    let scheduled = resolved.backup_schedule.is_some();
    let last_backup_time = if scheduled {
        last_successful_backup(&observed.backup_jobs)
    } else {
        None
    };
    let backup_failure = if scheduled {
        newest_backup_outcome(&observed.backup_jobs)
    } else {
        None
    };
    events.extend(backup_events(
        db,
        last_backup_time.as_ref(),
        backup_failure.as_ref(),
    ));
    let unhealthy = match (&stall, &workload) {
        (None, Some(w)) if w.current_revision == w.update_revision => {
            unhealthy_replicas(&observed.pods)
        }
        _ => None,
    };
    if let Some(msg) = &unhealthy {
        if is_new(prev_degraded.as_deref(), msg) {
            events.push(PlannedEvent {
                type_: EventType::Warning,
                reason: status::REASON_REPLICA_UNHEALTHY,
                action: "Observe",
                note: msg.clone(),
            });
        }
    }
    let running_version = match (&workload, observed_sts) {
        (Some(w), Some(o))
            if template_current
                && w.observed_generation >= w.generation
                && w.update_revision.is_some()
                && w.current_revision == w.update_revision
                && w.updated_replicas >= w.replicas =>
        {
            o.annotations().get(desired::ANNOTATION_VERSION).cloned()
        }
        _ => None,
    };
    let endpoints = desired::endpoints(db, &resolved);
    let service_exists = observed.services[0].1.ours().is_some();
    let observation = Observation {
        generation: db.metadata.generation,
        desired_replicas: resolved.replicas,
        workload,
        refusal: None,
        stalled_rollout: stalled,
        problems,
        endpoints: if service_exists {
            endpoints.clone()
        } else {
            Vec::new()
        },
        last_backup_time,
        terminating: None,
        unhealthy,
        running_version,
        storage: storage_status(&observed.pvcs),
        backup_failure,
    };
    Ok(Plan::Act(Box::new(Actions {
        resolved,
        secret,
        config,
        services,
        statefulset,
        backup,
        pdb,
        growth,
        events,
        observation,
        endpoints,
    })))
}

/// Pods that crashed or turned unready while no rollout runs: `pod (why)` for each.
fn unhealthy_replicas(pods: &[k8s_openapi::api::core::v1::Pod]) -> Option<String> {
    let bad: Vec<String> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            let st = p.status.as_ref();
            let ready = st
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                .is_some_and(|c| c.status == "True");
            let restarted = st
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.restart_count > 0 && !c.ready));
            !ready && restarted
        })
        .map(|p| match status::unready_reason(p) {
            Some(why) => format!("{} ({why})", p.name_any()),
            None => p.name_any(),
        })
        .collect();
    (!bad.is_empty()).then(|| {
        format!(
            "replica {} crashed and is not ready (no rollout is running)",
            bad.join(", ")
        )
    })
}

/// The smallest capacity the data PVCs report, and whether one asks for more than it has.
fn storage_status(pvcs: &[PersistentVolumeClaim]) -> Option<api::v1::StorageStatus> {
    if pvcs.is_empty() {
        return None;
    }
    let capacity = |p: &PersistentVolumeClaim| {
        p.status
            .as_ref()?
            .capacity
            .as_ref()?
            .get("storage")
            .cloned()
    };
    // Nothing to report until a claim is bound and reports a capacity.
    let smallest = pvcs
        .iter()
        .filter_map(|p| {
            let q = capacity(p)?;
            Some((api::quantity::parse_bytes(&q).ok()?, q.0))
        })
        .min_by_key(|(bytes, _)| *bytes)
        .map(|(_, text)| text)?;
    let resize_pending = pvcs.iter().any(|p| {
        let asked = claim_storage(p).and_then(|q| api::quantity::parse_bytes(q).ok());
        let has = capacity(p).and_then(|q| api::quantity::parse_bytes(&q).ok());
        let resizing = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter().any(|c| {
                    c.status == "True"
                        && (c.type_ == "Resizing" || c.type_ == "FileSystemResizePending")
                })
            });
        resizing || matches!((asked, has), (Some(a), Some(h)) if a > h)
    });
    Some(api::v1::StorageStatus {
        capacity: Some(smallest),
        resize_pending,
    })
}

/// When a backup Job finished (completion, or its Failed condition), and whether it failed
/// (with the reason the Job gives).
fn finished(job: &k8s_openapi::api::batch::v1::Job) -> Option<(Timestamp, Option<String>)> {
    let st = job.status.as_ref()?;
    if st.succeeded.unwrap_or(0) > 0 {
        return Some((st.completion_time.as_ref()?.0, None));
    }
    let failed = st
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Failed" && c.status == "True")?;
    let at = failed
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
        .or_else(|| st.start_time.as_ref().map(|t| t.0))?;
    let why = [failed.reason.as_deref(), failed.message.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(": ");
    Some((
        at,
        Some(format!(
            "backup Job {} failed{}",
            job.name_any(),
            if why.is_empty() {
                String::new()
            } else {
                format!(" ({why})")
            }
        )),
    ))
}

/// The newest finished backup: `Some(None)` succeeded, `Some(Some(why))` failed.
fn newest_backup_outcome(jobs: &[k8s_openapi::api::batch::v1::Job]) -> Option<Option<String>> {
    jobs.iter()
        .filter_map(finished)
        .max_by_key(|(at, _)| *at)
        .map(|(_, failure)| failure)
}

/// A Normal event for a backup newer than the status knows, a Warning for a newly failed one.
fn backup_events(
    db: &Database,
    last_success: Option<&Time>,
    failure: Option<&Option<String>>,
) -> Vec<PlannedEvent> {
    let prev = db.status.as_ref();
    let mut out = Vec::new();
    if let Some(t) = last_success {
        if prev
            .and_then(|s| s.last_backup_time.as_ref())
            .is_none_or(|p| p.0 < t.0)
        {
            out.push(PlannedEvent {
                type_: EventType::Normal,
                reason: "BackupSucceeded",
                action: "Backup",
                note: format!("backup completed at {}", t.0),
            });
        }
    }
    if let Some(Some(why)) = failure {
        let already = prev
            .and_then(|s| status::find(s, api::v1::CONDITION_BACKUP_FAILED))
            .is_some_and(|c| c.status == "True" && &c.message == why);
        if !already {
            out.push(PlannedEvent {
                type_: EventType::Warning,
                reason: status::REASON_BACKUP_FAILED,
                action: "Backup",
                note: why.clone(),
            });
        }
    }
    out
}

fn set_annotation(meta: &mut ObjectMeta, key: &str, value: String) {
    meta.annotations
        .get_or_insert_with(Default::default)
        .insert(key.to_owned(), value);
}

/// volumeClaimTemplates are immutable: keep what exists; growth is done on the PVCs.
fn keep_claim_templates(sts: &mut StatefulSet, observed: Option<&StatefulSet>) {
    let Some(observed_templates) = observed
        .and_then(|o| o.spec.as_ref())
        .and_then(|s| s.volume_claim_templates.clone())
    else {
        return;
    };
    if let Some(spec) = sts.spec.as_mut() {
        spec.volume_claim_templates = Some(
            observed_templates
                .into_iter()
                .map(|mut t| {
                    t.status = None;
                    t.metadata = ObjectMeta {
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
}

/// The pause recorded on the running StatefulSet: the stuck pod and the partition.
fn observed_pause(sts: &StatefulSet) -> Option<(String, i32)> {
    let pod = sts
        .annotations()
        .get(desired::ANNOTATION_ROLLOUT_PAUSED)?
        .clone();
    let partition = sts
        .spec
        .as_ref()?
        .update_strategy
        .as_ref()?
        .rolling_update
        .as_ref()?
        .partition?;
    Some((pod, partition))
}

/// Completion time of the newest successful backup Job.
pub fn last_successful_backup(jobs: &[k8s_openapi::api::batch::v1::Job]) -> Option<Time> {
    jobs.iter()
        .filter_map(|j| j.status.as_ref())
        .filter(|s| s.succeeded.unwrap_or(0) > 0)
        .filter_map(|s| s.completion_time.clone())
        .max_by_key(|t| t.0)
}

/// Which data PVCs to grow to `spec.storageSize`, and what prevents growing the others (never
/// shrinks: the guard refused that already).
pub fn plan_growth(
    resolved: &ResolvedSpec,
    pvcs: &[PersistentVolumeClaim],
    expandable: &std::collections::BTreeMap<String, bool>,
) -> (Vec<Growth>, Vec<Problem>) {
    let mut growth = Vec::new();
    let mut problems = Vec::new();
    let want = resolved.storage_bytes;
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
        let known = class.as_ref().and_then(|c| expandable.get(c)).copied();
        if known.is_none() {
            problems.push(Problem {
                reason: REASON_STORAGE_EXPANSION_NOT_ALLOWED,
                message: format!(
                    "cannot grow PVC {pvc_name} from {} to {}: StorageClass {} is not known to the operator (it does not exist, or the operator may not read StorageClasses)",
                    have_q.0,
                    resolved.storage_size.0,
                    class.as_deref().unwrap_or("<none>"),
                ),
            });
            continue;
        }
        if known != Some(true) {
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
        growth.push(Growth {
            pvc: pvc_name,
            from: have_q.0.clone(),
            to: resolved.storage_size.0.clone(),
        });
    }
    (growth, problems)
}

/// Refuses to act: status says why, with a Warning when the reason is new.
fn refuse(
    db: &Database,
    refusal: Refusal,
    sts: Option<&StatefulSet>,
    resolved: Option<&ResolvedSpec>,
    prev_degraded: Option<String>,
) -> Plan {
    let event =
        (prev_degraded.as_deref() != Some(refusal.message.as_str())).then(|| PlannedEvent {
            type_: EventType::Warning,
            reason: refusal.reason,
            action: "Reconcile",
            note: refusal.message.clone(),
        });
    let desired_replicas = resolved
        .map(|r| r.replicas)
        .or_else(|| sts.and_then(|s| s.spec.as_ref()).and_then(|s| s.replicas))
        .unwrap_or(0);
    let observation = Observation {
        generation: db.metadata.generation,
        desired_replicas,
        workload: sts.map(WorkloadStatus::from_statefulset),
        refusal: Some(refusal),
        endpoints: resolved
            .map(|r| desired::endpoints(db, r))
            .unwrap_or_default(),
        ..Default::default()
    };
    Plan::Refuse {
        observation: Box::new(observation),
        event,
    }
}

// ---------------------------------------------------------------------------------------------
// Cleanup

pub const REASON_CLEANUP_BLOCKED: &str = "CleanupBlocked";

/// True when the Database asks for its PVCs to be deleted with it.
pub fn delete_pvcs_requested(db: &Database) -> bool {
    db.annotations()
        .get(api::ANNOTATION_DELETE_PVCS)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Which step of the ordered cleanup a deletion belongs to (each has its own event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The clients' Service first: no new connections.
    ClientService,
    /// Then the workload, waiting for its pods to be gone.
    StatefulSet,
    /// Then everything else (and the PVCs when asked).
    Rest,
}

/// One object to delete, with the uid it must still have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    pub stage: Stage,
    pub kind: &'static str,
    pub name: String,
    pub uid: Option<String>,
}

/// One pass of cleanup.
#[derive(Debug, Clone, Default)]
pub struct CleanupPlan {
    /// In order.
    pub deletes: Vec<Deletion>,
    /// What cleanup still waits for: status Terminating with this (or blocked past the timeout).
    pub waiting: Option<Observation>,
    /// A Warning to publish (cleanup blocked, when newly so).
    pub event: Option<PlannedEvent>,
    /// Everything is gone: release the Database.
    pub remove_finalizer: bool,
}

/// Pods cleanup waits for: those of a StatefulSet `<name>`, except pods whose controller is a
/// StatefulSet of that name that is not ours (a foreign workload's pods are not our business).
pub fn pods_to_wait_for<'a>(
    pods: &'a [k8s_openapi::api::core::v1::Pod],
    sts_name: &str,
    foreign_sts_uid: Option<&str>,
) -> Vec<&'a k8s_openapi::api::core::v1::Pod> {
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

fn deletion<K: kube::Resource>(
    stage: Stage,
    kind: &'static str,
    name: String,
    obj: Option<&K>,
) -> Option<Deletion> {
    let obj = obj?;
    if obj.meta().deletion_timestamp.is_some() {
        return None;
    }
    Some(Deletion {
        stage,
        kind,
        name,
        uid: obj.meta().uid.clone(),
    })
}

/// Plans one pass of the ordered cleanup: the client Service, then the StatefulSet (waiting
/// until its pods are gone), then the headless Service, backup CronJob, ConfigMap and Secret,
/// then the PVCs only if the Database asks for it; the finalizer goes when all of that is done.
pub fn plan_cleanup(
    db: &Database,
    observed: &Observed,
    cleanup_timeout: Duration,
    now: Timestamp,
) -> CleanupPlan {
    let name = db.name_any();
    let mut plan = CleanupPlan::default();
    let [(client_name, client), (headless_name, headless)] = &observed.services;
    plan.deletes.extend(deletion(
        Stage::ClientService,
        "Service",
        client_name.clone(),
        client.ours(),
    ));
    let sts = observed.statefulset.ours();
    plan.deletes.extend(deletion(
        Stage::StatefulSet,
        "StatefulSet",
        name.clone(),
        sts,
    ));
    let pods = pods_to_wait_for(
        &observed.pods,
        &name,
        observed.foreign_statefulset_uid.as_deref(),
    );
    if sts.is_some() || !pods.is_empty() {
        let waiting = format!(
            "cleanup: waiting for StatefulSet {name} and its {} pod(s) to terminate",
            pods.len()
        );
        let (observation, event) = wait(db, sts, waiting, cleanup_timeout, now);
        plan.waiting = Some(observation);
        plan.event = event;
        return plan;
    }
    plan.deletes.extend(deletion(
        Stage::Rest,
        "Service",
        headless_name.clone(),
        headless.ours(),
    ));
    plan.deletes.extend(deletion(
        Stage::Rest,
        "CronJob",
        desired::backup_cronjob_name(&name),
        observed.cronjob.ours(),
    ));
    plan.deletes.extend(deletion(
        Stage::Rest,
        "PodDisruptionBudget",
        name.clone(),
        observed.pdb.ours(),
    ));
    plan.deletes.extend(deletion(
        Stage::Rest,
        "ConfigMap",
        desired::config_map_name(&name),
        observed.config.ours(),
    ));
    plan.deletes.extend(deletion(
        Stage::Rest,
        "Secret",
        desired::credentials_secret_name(&name),
        observed.secret.ours(),
    ));
    // PVCs only on request; they are not owned, so they are matched by our labels.
    if delete_pvcs_requested(db) {
        for pvc in &observed.labelled_pvcs {
            plan.deletes.extend(deletion(
                Stage::Rest,
                "PersistentVolumeClaim",
                pvc.name_any(),
                Some(pvc),
            ));
        }
    }
    plan.remove_finalizer = true;
    plan
}

/// Terminating status while waiting; past the cleanup timeout, blocked (and a Warning when the
/// message is new).
fn wait(
    db: &Database,
    sts: Option<&StatefulSet>,
    waiting: String,
    cleanup_timeout: Duration,
    now: Timestamp,
) -> (Observation, Option<PlannedEvent>) {
    let waited = db
        .metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| now.duration_since(t.0).as_secs().max(0) as u64)
        .unwrap_or(0);
    let mut problems = Vec::new();
    let mut event = None;
    if waited >= cleanup_timeout.as_secs() {
        let message = format!(
            "cleanup blocked: still {} after more than {}s; check the pods' finalizers and node status",
            waiting.trim_start_matches("cleanup: "),
            cleanup_timeout.as_secs()
        );
        let already = db
            .status
            .as_ref()
            .and_then(|s| s.message.as_deref())
            .is_some_and(|m| m == message);
        if !already {
            event = Some(PlannedEvent {
                type_: EventType::Warning,
                reason: REASON_CLEANUP_BLOCKED,
                action: "Cleanup",
                note: message.clone(),
            });
        }
        problems.push(Problem {
            reason: REASON_CLEANUP_BLOCKED,
            message,
        });
    }
    let message = problems.first().map_or(waiting, |p| p.message.clone());
    let observation = Observation {
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
    (observation, event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::tests::{db, spec};
    use crate::ownership::Found;
    use api::v1::Engine;
    use k8s_openapi::api::apps::v1::StatefulSetStatus;
    use k8s_openapi::api::core::v1::{
        PersistentVolumeClaimSpec, PersistentVolumeClaimStatus, Pod, PodCondition, PodStatus,
        VolumeResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use std::collections::BTreeMap;

    const TIMEOUT: Duration = Duration::from_secs(300);

    fn settings() -> Settings {
        Settings {
            rollout_timeout: TIMEOUT,
            ..Settings::default()
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_second(2_000_000_000).unwrap()
    }

    fn ago(secs: i64) -> Time {
        Time(now() - jiff::SignedDuration::from_secs(secs))
    }

    fn with_uid<K: kube::Resource>(mut k: K, uid: &str) -> K {
        k.meta_mut().uid = Some(uid.to_owned());
        k.meta_mut().resource_version = Some("1".to_owned());
        k
    }

    fn act(plan: Plan) -> Actions {
        match plan {
            Plan::Act(a) => *a,
            Plan::Refuse { observation, .. } => panic!("refused: {:?}", observation.refusal),
        }
    }

    /// What the caches hold once everything planned for `d` exists, the StatefulSet with
    /// `ready` of its replicas ready on revision `rev` (updated to `update_rev`).
    fn running(d: &Database, ready: i32, rev: &str, update_rev: &str) -> Observed {
        let first = act(plan(
            d,
            &Observed::nothing(&d.name_any()),
            &Catalog::builtin(),
            &settings(),
            now(),
        )
        .unwrap());
        let mut observed = Observed::nothing(&d.name_any());
        let secret = with_uid(
            desired::desired_credentials_secret(d, &first.resolved, "pw").unwrap(),
            "secret-uid",
        );
        let mut sts = with_uid(first.statefulset.desired.clone(), "sts-uid");
        sts.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(
                desired::ANNOTATION_CREDENTIALS_UID.to_owned(),
                "secret-uid".to_owned(),
            );
        sts.metadata.generation = Some(1);
        sts.status = Some(StatefulSetStatus {
            observed_generation: Some(1),
            replicas: first.resolved.replicas,
            ready_replicas: Some(ready),
            updated_replicas: Some(ready),
            current_revision: Some(rev.to_owned()),
            update_revision: Some(update_rev.to_owned()),
            ..Default::default()
        });
        observed.statefulset = Found::Ours(sts);
        observed.secret = Found::Ours(secret);
        observed.config = Found::Ours(with_uid(first.config.desired.clone(), "cm-uid"));
        for (i, svc) in first.services.iter().enumerate() {
            observed.services[i].1 = Found::Ours(with_uid(svc.desired.clone(), "svc-uid"));
        }
        observed
    }

    fn pod(name: &str, rev: &str, ready: bool, since_secs: i64) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.to_owned());
        p.metadata.creation_timestamp = Some(ago(since_secs));
        p.metadata.labels = Some(BTreeMap::from([(
            "controller-revision-hash".to_owned(),
            rev.to_owned(),
        )]));
        p.metadata.owner_references = Some(vec![OwnerReference {
            kind: "StatefulSet".into(),
            name: "orders".into(),
            uid: "sts-uid".into(),
            controller: Some(true),
            ..Default::default()
        }]);
        p.status = Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                last_transition_time: Some(ago(since_secs)),
                ..Default::default()
            }]),
            ..Default::default()
        });
        p
    }

    fn partition(a: &Actions) -> Option<i32> {
        a.statefulset
            .desired
            .spec
            .as_ref()?
            .update_strategy
            .as_ref()?
            .rolling_update
            .as_ref()?
            .partition
    }

    fn reasons(a: &Actions) -> Vec<&'static str> {
        a.events.iter().map(|e| e.reason).collect()
    }

    #[test]
    fn a_database_seen_for_the_first_time_creates_every_child_and_nothing_else() {
        let d = db("orders", spec(Engine::Postgres, 2));
        let a = act(plan(
            &d,
            &Observed::nothing("orders"),
            &Catalog::builtin(),
            &settings(),
            now(),
        )
        .unwrap());
        assert!(matches!(a.secret, SecretStep::Create));
        assert!(a.config.needs_write());
        assert!(a.services.iter().all(Child::needs_write));
        assert!(a.statefulset.needs_write());
        assert!(matches!(a.backup, BackupStep::Nothing));
        assert!(a.growth.is_empty());
        assert_eq!(reasons(&a), Vec::<&str>::new());
        assert_eq!(a.observation.workload, None);
    }

    #[test]
    fn rollout_table() {
        // (behaviour, pods, observed pause, template changed, want stalled message,
        //  want partition, want events)
        struct Row {
            behaviour: &'static str,
            ready: i32,
            pods: Vec<Pod>,
            paused_at: Option<(&'static str, i32)>,
            change_template: bool,
            stalled: Option<&'static str>,
            partition: Option<i32>,
            events: Vec<&'static str>,
            writes_statefulset: bool,
        }
        let rows = [
            Row {
                behaviour: "idle: every pod ready on the current revision, nothing is written",
                ready: 2,
                pods: vec![pod("orders-0", "r1", true, 900), pod("orders-1", "r1", true, 900)],
                paused_at: None,
                change_template: false,
                stalled: None,
                partition: Some(0),
                events: vec![],
                writes_statefulset: false,
            },
            Row {
                behaviour: "progress: the updated pod is not ready yet but within the timeout",
                ready: 1,
                pods: vec![pod("orders-0", "r1", true, 900), pod("orders-1", "r2", false, 60)],
                paused_at: None,
                change_template: false,
                stalled: None,
                partition: Some(0),
                events: vec![],
                writes_statefulset: false,
            },
            Row {
                behaviour: "stall: the updated pod is unready past the timeout, the rollout pauses at it",
                ready: 1,
                pods: vec![pod("orders-0", "r1", true, 900), pod("orders-1", "r2", false, 400)],
                paused_at: None,
                change_template: false,
                stalled: Some("updated pod orders-1 has not become Ready for 400s"),
                partition: Some(1),
                events: vec!["RolloutPaused", status::REASON_ROLLOUT_STALLED],
                writes_statefulset: true,
            },
            Row {
                behaviour: "creating: a first pod slow past the timeout is stalled, but nothing is paused",
                ready: 0,
                pods: vec![pod("orders-0", "r1", false, 400)],
                paused_at: None,
                change_template: false,
                stalled: Some("updated pod orders-0 has not become Ready for 400s"),
                partition: Some(0),
                events: vec![status::REASON_ROLLOUT_STALLED],
                writes_statefulset: false,
            },
            Row {
                behaviour: "paused: the pause holds while the template is unchanged, even once the pod is ready",
                ready: 2,
                pods: vec![pod("orders-0", "r1", true, 900), pod("orders-1", "r2", true, 10)],
                paused_at: Some(("orders-1", 1)),
                change_template: false,
                stalled: Some("updated pod orders-1 did not become Ready within 300s"),
                partition: Some(1),
                events: vec![status::REASON_ROLLOUT_STALLED],
                writes_statefulset: false,
            },
            Row {
                behaviour: "resume: a template change (the user's fix) lifts the pause",
                ready: 1,
                pods: vec![pod("orders-0", "r1", true, 900), pod("orders-1", "r2", false, 4000)],
                paused_at: Some(("orders-1", 1)),
                change_template: true,
                stalled: None,
                partition: Some(0),
                events: vec![],
                writes_statefulset: true,
            },
        ];
        for row in rows {
            let mut d = db("orders", spec(Engine::Postgres, 2));
            let (rev, update) = if row.ready == 0 || (row.ready == 2 && row.paused_at.is_none()) {
                ("r1", "r1")
            } else {
                ("r1", "r2")
            };
            let mut observed = running(&d, row.ready, rev, update);
            if let Found::Ours(sts) = &mut observed.statefulset {
                if let Some((pod, p)) = row.paused_at {
                    sts.metadata
                        .annotations
                        .get_or_insert_with(Default::default)
                        .insert(
                            desired::ANNOTATION_ROLLOUT_PAUSED.to_owned(),
                            pod.to_owned(),
                        );
                    if let Some(ru) = sts
                        .spec
                        .as_mut()
                        .and_then(|s| s.update_strategy.as_mut())
                        .and_then(|u| u.rolling_update.as_mut())
                    {
                        ru.partition = Some(p);
                    }
                }
            }
            observed.pods = row.pods;
            if row.change_template {
                d.spec.config = Some(BTreeMap::from([("work_mem".to_owned(), "8MB".to_owned())]));
            }
            let a = act(plan(&d, &observed, &Catalog::builtin(), &settings(), now()).unwrap());
            match (row.stalled, &a.observation.stalled_rollout) {
                (None, None) => {}
                (Some(want), Some(got)) => {
                    assert!(got.contains(want), "{}: {got}", row.behaviour)
                }
                (want, got) => panic!("{}: stalled {got:?}, want {want:?}", row.behaviour),
            }
            assert_eq!(partition(&a), row.partition, "{}", row.behaviour);
            assert_eq!(reasons(&a), row.events, "{}", row.behaviour);
            assert_eq!(
                a.statefulset.needs_write(),
                row.writes_statefulset,
                "{}",
                row.behaviour
            );
            if !row.writes_statefulset && !row.change_template {
                assert!(
                    matches!(a.secret, SecretStep::Keep { .. }),
                    "{}",
                    row.behaviour
                );
                assert!(!a.config.needs_write(), "{}", row.behaviour);
                assert!(
                    !a.services.iter().any(Child::needs_write),
                    "{}",
                    row.behaviour
                );
            }
        }
    }

    fn crashed(mut p: Pod) -> Pod {
        use k8s_openapi::api::core::v1::{ContainerState, ContainerStateWaiting, ContainerStatus};
        if let Some(st) = p.status.as_mut() {
            st.container_statuses = Some(vec![ContainerStatus {
                name: "postgres".into(),
                ready: false,
                restart_count: 3,
                state: Some(ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some("CrashLoopBackOff".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]);
        }
        p
    }

    fn condition<'a>(st: &'a api::v1::DatabaseStatus, type_: &str) -> (&'a str, &'a str) {
        let c = status::find(st, type_).expect(type_);
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn status_tells_the_truth_about_what_runs() {
        let d = db("orders", spec(Engine::Postgres, 2));
        // A replica that crashed while no rollout runs: Degraded, not Progressing.
        let mut observed = running(&d, 1, "r1", "r1");
        observed.pods = vec![
            pod("orders-0", "r1", true, 900),
            crashed(pod("orders-1", "r1", false, 30)),
        ];
        let a = act(plan(&d, &observed, &Catalog::builtin(), &settings(), now()).unwrap());
        let st = status::compute(None, &a.observation, now());
        assert_eq!(
            condition(&st, CONDITION_DEGRADED),
            ("True", status::REASON_REPLICA_UNHEALTHY)
        );
        assert_eq!(
            condition(&st, "Progressing"),
            ("False", status::REASON_REPLICA_UNHEALTHY)
        );
        assert!(
            st.message
                .as_deref()
                .unwrap_or("")
                .contains("orders-1 (container postgres: CrashLoopBackOff"),
            "{st:?}"
        );
        assert_eq!(reasons(&a), vec![status::REASON_REPLICA_UNHEALTHY]);

        // All pods on the current template: the version is the StatefulSet's; the endpoints
        // are reported because the client Service exists.
        let converged = running(&d, 2, "r1", "r1");
        let a = act(plan(&d, &converged, &Catalog::builtin(), &settings(), now()).unwrap());
        let st = status::compute(None, &a.observation, now());
        assert_eq!(
            st.version.as_deref(),
            Some(a.resolved.version.to_string().as_str())
        );
        assert_eq!(st.endpoints, vec!["orders.shop.svc:5432"]);

        // Mid-rollout to another version: the status keeps the version the pods still run.
        let mut newer = d.clone();
        newer.spec.config = Some(BTreeMap::from([("work_mem".to_owned(), "8MB".to_owned())]));
        let prev = api::v1::DatabaseStatus {
            version: Some("15.0.0".to_owned()),
            ..Default::default()
        };
        let a = act(plan(
            &newer,
            &running(&newer, 1, "r1", "r2"),
            &Catalog::builtin(),
            &settings(),
            now(),
        )
        .unwrap());
        assert_eq!(
            status::compute(Some(&prev), &a.observation, now())
                .version
                .as_deref(),
            Some("15.0.0")
        );

        // Nothing exists yet: no endpoints until the client Service does.
        let first = act(plan(
            &d,
            &Observed::nothing("orders"),
            &Catalog::builtin(),
            &settings(),
            now(),
        )
        .unwrap());
        assert!(first.observation.endpoints.is_empty());
        assert_eq!(first.endpoints, vec!["orders.shop.svc:5432"]);
    }

    #[test]
    fn storage_status_reports_the_smallest_capacity_and_pending_resizes() {
        let with_capacity = |mut p: PersistentVolumeClaim, cap: &str| {
            if let Some(st) = p.status.as_mut() {
                st.capacity = Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(cap.to_owned()),
                )]));
            }
            p
        };
        let done = [with_capacity(
            pvc("data-orders-0", "grows", "10Gi", true),
            "10Gi",
        )];
        assert_eq!(
            storage_status(&done),
            Some(api::v1::StorageStatus {
                capacity: Some("10Gi".into()),
                resize_pending: false
            })
        );
        let growing = [
            with_capacity(pvc("data-orders-0", "grows", "20Gi", true), "10Gi"),
            with_capacity(pvc("data-orders-1", "grows", "20Gi", true), "20Gi"),
        ];
        assert_eq!(
            storage_status(&growing),
            Some(api::v1::StorageStatus {
                capacity: Some("10Gi".into()),
                resize_pending: true
            })
        );
        assert_eq!(storage_status(&[]), None);
        assert_eq!(
            storage_status(&[pvc("data-orders-0", "grows", "10Gi", false)]),
            None,
            "not bound yet: nothing to report"
        );
    }

    #[test]
    fn backup_outcomes_set_the_condition_and_are_announced_once() {
        use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
        let job = |name: &str, ok: bool, secs: i64| Job {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            spec: None,
            status: Some(JobStatus {
                succeeded: ok.then_some(1),
                completion_time: ok.then(|| ago(secs)),
                conditions: (!ok).then(|| {
                    vec![JobCondition {
                        type_: "Failed".into(),
                        status: "True".into(),
                        reason: Some("BackoffLimitExceeded".into()),
                        message: Some("Job has reached the specified backoff limit".into()),
                        last_transition_time: Some(ago(secs)),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        };
        let mut s = spec(Engine::Postgres, 1);
        s.backup_schedule = Some("0 3 * * *".to_owned());
        let mut d = db("orders", s);
        let mut observed = running(&d, 1, "r1", "r1");
        observed.backup_jobs = vec![
            job("orders-backup-1", true, 600),
            job("orders-backup-2", false, 60),
        ];
        let a = act(plan(&d, &observed, &Catalog::builtin(), &settings(), now()).unwrap());
        let st = status::compute(None, &a.observation, now());
        assert_eq!(
            condition(&st, api::v1::CONDITION_BACKUP_FAILED),
            ("True", status::REASON_BACKUP_FAILED)
        );
        assert!(status::find(&st, api::v1::CONDITION_BACKUP_FAILED)
            .unwrap()
            .message
            .contains("orders-backup-2 failed (BackoffLimitExceeded"));
        assert_eq!(
            st.last_backup_time,
            Some(ago(600)),
            "only a succeeded Job counts"
        );
        assert_eq!(
            reasons(&a),
            vec!["BackupSucceeded", status::REASON_BACKUP_FAILED]
        );
        d.status = Some(st);
        let again = act(plan(&d, &observed, &Catalog::builtin(), &settings(), now()).unwrap());
        assert_eq!(reasons(&again), Vec::<&str>::new(), "said once");
        // A later success clears the condition.
        observed.backup_jobs.push(job("orders-backup-3", true, 5));
        let later = act(plan(&d, &observed, &Catalog::builtin(), &settings(), now()).unwrap());
        let st = status::compute(d.status.as_ref(), &later.observation, now());
        assert_eq!(
            condition(&st, api::v1::CONDITION_BACKUP_FAILED),
            ("False", "BackupSucceeded")
        );
        assert_eq!(reasons(&later), vec!["BackupSucceeded"]);
    }

    fn pvc(name: &str, class: &str, size: &str, bound: bool) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                storage_class_name: Some(class.to_owned()),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_owned(),
                        Quantity(size.to_owned()),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: Some(PersistentVolumeClaimStatus {
                phase: Some(if bound { "Bound" } else { "Pending" }.to_owned()),
                ..Default::default()
            }),
        }
    }

    /// (behaviour, claim, grown from, problem reason and text)
    type GrowthRow = (
        &'static str,
        PersistentVolumeClaim,
        Option<&'static str>,
        Option<(&'static str, &'static str)>,
    );

    /// (behaviour, Database, observed, deletes, waits, releases the finalizer)
    type CleanupRow = (
        &'static str,
        Database,
        Observed,
        Vec<&'static str>,
        bool,
        bool,
    );

    #[test]
    fn pvc_growth_table() {
        let d = db("orders", spec(Engine::Postgres, 1)); // 10Gi
        let resolved = crate::desired::tests::resolved(&d);
        let classes = BTreeMap::from([("grows".to_owned(), true), ("fixed".to_owned(), false)]);
        let rows: [GrowthRow; 5] = [
            (
                "allowed: a bound claim on an expandable class is grown",
                pvc("data-orders-0", "grows", "5Gi", true),
                Some("5Gi"),
                None,
            ),
            (
                "refused: the class does not allow expansion",
                pvc("data-orders-0", "fixed", "5Gi", true),
                None,
                Some((
                    REASON_STORAGE_EXPANSION_NOT_ALLOWED,
                    "does not allow volume expansion",
                )),
            ),
            (
                "refused: the class is unknown",
                pvc("data-orders-0", "gone", "5Gi", true),
                None,
                Some((
                    REASON_STORAGE_EXPANSION_NOT_ALLOWED,
                    "is not known to the operator",
                )),
            ),
            (
                "pending: the claim is not bound yet",
                pvc("data-orders-0", "grows", "5Gi", false),
                None,
                Some((REASON_STORAGE_EXPANSION_PENDING, "not bound yet")),
            ),
            (
                "nothing: the claim is already as large",
                pvc("data-orders-0", "fixed", "10Gi", true),
                None,
                None,
            ),
        ];
        for (behaviour, claim, grows_from, problem) in rows {
            let (growth, problems) = plan_growth(&resolved, &[claim], &classes);
            let want_growth: Vec<Growth> = grows_from
                .map(|from| Growth {
                    pvc: "data-orders-0".to_owned(),
                    from: from.to_owned(),
                    to: "10Gi".to_owned(),
                })
                .into_iter()
                .collect();
            assert_eq!(growth, want_growth, "{behaviour}");
            match (problem, problems.as_slice()) {
                (None, []) => {}
                (Some((reason, text)), [p]) => {
                    assert_eq!(p.reason, reason, "{behaviour}");
                    assert!(p.message.contains(text), "{behaviour}: {}", p.message);
                }
                (want, got) => panic!("{behaviour}: problems {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn growth_problems_are_warned_about_once() {
        let mut d = db("orders", spec(Engine::Postgres, 1));
        let mut observed = running(&d, 1, "r1", "r1");
        observed.pvcs = vec![pvc("data-orders-0", "fixed", "5Gi", true)];
        observed.expandable = BTreeMap::from([("fixed".to_owned(), false)]);
        let a = act(plan(&d, &observed, &Catalog::builtin(), &settings(), now()).unwrap());
        assert_eq!(reasons(&a), vec![REASON_STORAGE_EXPANSION_NOT_ALLOWED]);
        // The status now says so: the next plan does not warn again.
        d.status = Some(status::compute(None, &a.observation, now()));
        let again = act(plan(&d, &observed, &Catalog::builtin(), &settings(), now()).unwrap());
        assert_eq!(reasons(&again), Vec::<&str>::new());
    }

    fn deleting(annotations: &[(&str, &str)]) -> Database {
        let mut d = db("orders", spec(Engine::Postgres, 1));
        d.metadata.deletion_timestamp = Some(ago(10));
        d.metadata.finalizers = Some(vec![crate::FINALIZER.to_owned()]);
        d.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        d
    }

    fn deletes(p: &CleanupPlan) -> Vec<String> {
        p.deletes
            .iter()
            .map(|d| format!("{:?} {} {}", d.stage, d.kind, d.name))
            .collect()
    }

    #[test]
    fn cleanup_ordering_table() {
        let d = deleting(&[]);
        let everything = running(&d, 1, "r1", "r1");
        let without_workload = |mut o: Observed| {
            o.statefulset = Found::Absent;
            o.services[0].1 = Found::Absent;
            o.pods.clear();
            o
        };
        let mut claims = without_workload(everything.clone());
        claims.labelled_pvcs = vec![with_uid(
            pvc("data-orders-0", "fixed", "10Gi", true),
            "pvc-uid",
        )];
        let mut foreign = without_workload(everything.clone());
        foreign.foreign_statefulset_uid = Some("theirs".to_owned());
        let mut their_pod = pod("orders-0", "r1", true, 10);
        if let Some(r) = their_pod.metadata.owner_references.as_mut() {
            r[0].uid = "theirs".to_owned();
        }
        foreign.pods = vec![their_pod];
        let mut pods_left = without_workload(everything.clone());
        pods_left.pods = vec![pod("orders-0", "r1", false, 10)];
        let mut svc_deleting = everything.clone();
        if let Found::Ours(s) = &mut svc_deleting.services[0].1 {
            s.metadata.deletion_timestamp = Some(ago(1));
        }
        let rows: Vec<CleanupRow> = vec![
            (
                "first pass: the client Service, then the StatefulSet, then wait for the pods",
                d.clone(),
                everything.clone(),
                vec![
                    "ClientService Service orders",
                    "StatefulSet StatefulSet orders",
                ],
                true,
                false,
            ),
            (
                "an object already being deleted is not deleted again",
                d.clone(),
                svc_deleting,
                vec!["StatefulSet StatefulSet orders"],
                true,
                false,
            ),
            (
                "the StatefulSet is gone but a pod is still there: wait",
                d.clone(),
                pods_left,
                vec![],
                true,
                false,
            ),
            (
                "workload gone: the rest, PVCs kept, then the finalizer",
                d.clone(),
                without_workload(everything.clone()),
                vec![
                    "Rest Service orders-headless",
                    "Rest ConfigMap orders-config",
                    "Rest Secret orders-credentials",
                ],
                false,
                true,
            ),
            (
                "PVCs are deleted only when the annotation asks",
                deleting(&[(api::ANNOTATION_DELETE_PVCS, "true")]),
                claims.clone(),
                vec![
                    "Rest Service orders-headless",
                    "Rest ConfigMap orders-config",
                    "Rest Secret orders-credentials",
                    "Rest PersistentVolumeClaim data-orders-0",
                ],
                false,
                true,
            ),
            (
                "a foreign StatefulSet's pods do not hold cleanup up",
                d.clone(),
                foreign,
                vec![
                    "Rest Service orders-headless",
                    "Rest ConfigMap orders-config",
                    "Rest Secret orders-credentials",
                ],
                false,
                true,
            ),
        ];
        for (behaviour, d, observed, want, waits, releases) in rows {
            let p = plan_cleanup(&d, &observed, TIMEOUT, now());
            assert_eq!(deletes(&p), want, "{behaviour}");
            assert_eq!(p.waiting.is_some(), waits, "{behaviour}");
            assert_eq!(p.remove_finalizer, releases, "{behaviour}");
            assert!(p.event.is_none(), "{behaviour}");
            assert!(
                p.deletes.iter().all(|d| d.uid.is_some()),
                "{behaviour}: deletes carry uids"
            );
        }
    }

    #[test]
    fn cleanup_waiting_past_the_timeout_is_blocked_and_warned_once() {
        let mut d = deleting(&[]);
        d.metadata.deletion_timestamp = Some(ago(301));
        let mut observed = running(&d, 1, "r1", "r1");
        observed.pods = vec![pod("orders-0", "r1", true, 900)];
        let p = plan_cleanup(&d, &observed, TIMEOUT, now());
        let event = p.event.clone().expect("a warning");
        assert_eq!(event.reason, REASON_CLEANUP_BLOCKED);
        assert!(event.note.contains("1 pod(s)"), "{}", event.note);
        let waiting = p.waiting.expect("waiting");
        d.status = Some(status::compute(None, &waiting, now()));
        let again = plan_cleanup(&d, &observed, TIMEOUT, now());
        assert!(again.event.is_none(), "already said");
    }

    #[test]
    fn cleanup_waits_only_for_pods_of_our_statefulset() {
        let mut ours = pod("ours-0", "r1", true, 1);
        ours.metadata.owner_references.as_mut().unwrap()[0].uid = "our-sts".into();
        let mut theirs = pod("foreign-0", "r1", true, 1);
        theirs.metadata.owner_references.as_mut().unwrap()[0].uid = "foreign-sts".into();
        let mut other = pod("other-sts-0", "r1", true, 1);
        other.metadata.owner_references.as_mut().unwrap()[0].name = "billing".into();
        let mut bare = pod("bare", "r1", true, 1);
        bare.metadata.owner_references = None;
        let pods = [ours, theirs, other, bare];
        let names = |v: Vec<&Pod>| v.iter().map(|p| p.name_any()).collect::<Vec<_>>();
        assert_eq!(
            names(pods_to_wait_for(&pods, "orders", None)),
            ["ours-0", "foreign-0"]
        );
        assert_eq!(
            names(pods_to_wait_for(&pods, "orders", Some("foreign-sts"))),
            ["ours-0"]
        );
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
            let mut d = db("orders", spec(Engine::Postgres, 1));
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
