//! Pure status computation: from what was observed (StatefulSet status, pods, refusals,
//! problems) to `DatabaseStatus` with Ready/Available/Progressing/Degraded conditions.
//!
//! `lastTransitionTime` of a condition is carried over from the previous status unless the
//! condition's status flips, so recomputing an unchanged world yields an identical status and
//! the reconciler writes nothing.

use std::time::Duration;

use api::v1::{
    DatabaseStatus, Phase, CONDITION_AVAILABLE, CONDITION_BACKUP_FAILED, CONDITION_DEGRADED,
    CONDITION_PROGRESSING, CONDITION_READY,
};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::guard::{Refusal, REASON_INVALID_SPEC};

pub const REASON_ROLLOUT_STALLED: &str = "RolloutStalled";
pub const REASON_TERMINATING: &str = "Terminating";

/// Something wrong that is not a refusal: reported as Degraded, reconciliation goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

/// The parts of a StatefulSet's status the Database status is computed from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadStatus {
    pub generation: i64,
    pub observed_generation: i64,
    pub replicas: i32,
    pub ready_replicas: i32,
    pub updated_replicas: i32,
    pub current_revision: Option<String>,
    pub update_revision: Option<String>,
}

impl WorkloadStatus {
    pub fn from_statefulset(sts: &StatefulSet) -> Self {
        let st = sts.status.clone().unwrap_or_default();
        WorkloadStatus {
            generation: sts.metadata.generation.unwrap_or(0),
            observed_generation: st.observed_generation.unwrap_or(0),
            replicas: st.replicas,
            ready_replicas: st.ready_replicas.unwrap_or(0),
            updated_replicas: st.updated_replicas.unwrap_or(0),
            current_revision: st.current_revision,
            update_revision: st.update_revision,
        }
    }
}

/// Everything one status computation looks at.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub generation: Option<i64>,
    pub desired_replicas: i32,
    pub workload: Option<WorkloadStatus>,
    /// The spec was not acted on (invalid, or destructive vs. what runs).
    pub refusal: Option<Refusal>,
    /// A rolling update that stopped making progress.
    pub stalled_rollout: Option<String>,
    pub problems: Vec<Problem>,
    pub endpoints: Vec<String>,
    pub last_backup_time: Option<Time>,
    /// Set while the finalizer's cleanup runs: what it is doing or waiting for.
    pub terminating: Option<String>,
    /// A replica crashed or became unready while no rollout runs.
    pub unhealthy: Option<String>,
    /// The version every pod runs, when they all run the current template.
    pub running_version: Option<String>,
    /// What the data PVCs report.
    pub storage: Option<api::v1::StorageStatus>,
    /// With a backup schedule: the newest finished backup Job failed (`Some(message)`) or
    /// succeeded (`None`); unset without a schedule or before any backup finished.
    pub backup_failure: Option<Option<String>>,
}

pub const REASON_REPLICA_UNHEALTHY: &str = "ReplicaUnhealthy";
pub const REASON_BACKUP_FAILED: &str = "BackupFailed";

fn is_pod_ready(pod: &Pod) -> Option<(bool, Option<Timestamp>)> {
    let conds = pod.status.as_ref()?.conditions.as_ref()?;
    let ready = conds.iter().find(|c| c.type_ == "Ready")?;
    Some((
        ready.status == "True",
        ready.last_transition_time.as_ref().map(|t| t.0),
    ))
}

/// An updated pod that has not become Ready in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    pub pod: String,
    pub waited_secs: u64,
    /// What the kubelet says about the pod's unready containers (waiting reason, last exit code
    /// and termination message), when it says anything.
    pub why: Option<String>,
}

/// Longest termination message quoted in a status message (the kubelet keeps up to 4 KiB).
const MAX_QUOTED_MESSAGE: usize = 300;

/// Why a pod's containers are not ready, from its container statuses: for each unready
/// container its waiting reason (`CrashLoopBackOff`, `ImagePullBackOff`, ...) and the last
/// termination's exit code and message (the server's own last log lines with
/// `terminationMessagePolicy: FallbackToLogsOnError`).
pub fn unready_reason(pod: &Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let parts: Vec<String> = statuses
        .iter()
        .filter(|c| !c.ready)
        .filter_map(|c| {
            let mut part = Vec::new();
            if let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
                if let Some(reason) = w.reason.as_deref() {
                    part.push(reason.to_owned());
                }
                if let Some(m) = w.message.as_deref().filter(|m| !m.is_empty()) {
                    part.push(quote(m));
                }
            }
            let terminated = c
                .state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .or_else(|| c.last_state.as_ref().and_then(|s| s.terminated.as_ref()));
            if let Some(t) = terminated {
                part.push(format!("last exit code {}", t.exit_code));
                if let Some(m) = t.message.as_deref().filter(|m| !m.trim().is_empty()) {
                    part.push(quote(m));
                }
            }
            (!part.is_empty()).then(|| format!("container {}: {}", c.name, part.join(", ")))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// A one-line excerpt of a (multi-line) message: its last lines, at most
/// [`MAX_QUOTED_MESSAGE`] characters.
fn quote(message: &str) -> String {
    let line = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= MAX_QUOTED_MESSAGE {
        format!("\"{line}\"")
    } else {
        let tail: String = chars[chars.len() - MAX_QUOTED_MESSAGE..].iter().collect();
        format!("\"...{tail}\"")
    }
}

/// Finds a pod already moved to the update revision that has not become Ready within
/// `timeout`: the rolling update is stuck on it.
pub fn stalled_pod(
    pods: &[Pod],
    update_revision: Option<&str>,
    timeout: Duration,
    now: Timestamp,
) -> Option<Stall> {
    let update_revision = update_revision?;
    let mut stalled: Vec<(String, u64, Option<String>)> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("controller-revision-hash"))
                .map(String::as_str)
                == Some(update_revision)
        })
        .filter_map(|p| {
            let (ready, transition) = is_pod_ready(p).unwrap_or((false, None));
            if ready {
                return None;
            }
            let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            let since = match (created, transition) {
                (Some(c), Some(t)) => Some(c.max(t)),
                (c, t) => c.or(t),
            }?;
            let waited = now.duration_since(since).as_secs().max(0) as u64;
            (waited >= timeout.as_secs()).then(|| {
                (
                    p.metadata.name.clone().unwrap_or_default(),
                    waited,
                    unready_reason(p),
                )
            })
        })
        .collect();
    stalled.sort();
    let (pod, waited_secs, why) = stalled.into_iter().next()?;
    Some(Stall {
        pod,
        waited_secs,
        why,
    })
}

/// The stalled-rollout message, as used by [`stalled_rollout`].
pub fn stall_message(stall: &Stall, timeout: Duration) -> String {
    let why = stall
        .why
        .as_deref()
        .map(|w| format!(" ({w})"))
        .unwrap_or_default();
    format!(
        "rolling update paused: updated pod {} has not become Ready for {}s (limit {}s){why}; \
         no further pods are updated until the pod template changes (fix or revert \
         spec.version, spec.config or spec.resources)",
        stall.pod,
        stall.waited_secs,
        timeout.as_secs()
    )
}

/// Message while a pause set earlier still holds (the pod may have become Ready since).
pub fn paused_message(pod: &str, timeout: Duration) -> String {
    format!(
        "rolling update paused: updated pod {pod} did not become Ready within {}s; no further \
         pods are updated until the pod template changes (fix or revert spec.version, \
         spec.config or spec.resources)",
        timeout.as_secs()
    )
}

/// Stalled-rollout message for the pods, if the rollout is stuck.
pub fn stalled_rollout(
    pods: &[Pod],
    update_revision: Option<&str>,
    timeout: Duration,
    now: Timestamp,
) -> Option<String> {
    stalled_pod(pods, update_revision, timeout, now).map(|s| stall_message(&s, timeout))
}

/// StatefulSet ordinal of a pod name (`<sts>-<ordinal>`).
pub fn pod_ordinal(pod: &str) -> Option<i32> {
    pod.rsplit_once('-')?.1.parse().ok()
}

/// Decides whether the rollout is paused, returning `(pod, partition)`. A pause holds while the
/// pod template is unchanged (`template_current`): once set on a stall it survives the pod
/// turning Ready later, so a flapping pod cannot silently continue a bad rollout; any template
/// change (the user fixing or reverting the spec) lifts it.
pub fn rollout_pause(
    template_current: bool,
    observed_pause: Option<(String, i32)>,
    stall: Option<&Stall>,
) -> Option<(String, i32)> {
    if !template_current {
        return None;
    }
    observed_pause.or_else(|| {
        let s = stall?;
        Some((s.pod.clone(), pod_ordinal(&s.pod)?))
    })
}

/// True when the workload runs exactly the desired spec with every replica ready.
fn converged(w: &WorkloadStatus, desired: i32) -> bool {
    w.observed_generation >= w.generation
        && w.replicas == desired
        && w.ready_replicas == desired
        && w.updated_replicas == desired
        && (w.update_revision.is_none() || w.current_revision == w.update_revision)
}

fn condition(type_: &str, status: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: None,
        last_transition_time: Time(Timestamp::UNIX_EPOCH),
    }
}

/// Computes the full status. `now` is only used for conditions whose status flips.
pub fn compute(prev: Option<&DatabaseStatus>, obs: &Observation, now: Timestamp) -> DatabaseStatus {
    let desired = obs.desired_replicas;
    let ready = obs.workload.as_ref().map_or(0, |w| w.ready_replicas);
    let is_converged = obs.workload.as_ref().is_some_and(|w| converged(w, desired));
    let invalid = obs
        .refusal
        .as_ref()
        .is_some_and(|r| r.reason == REASON_INVALID_SPEC);

    let mut problems: Vec<Problem> = Vec::new();
    if let Some(r) = &obs.refusal {
        problems.push(Problem {
            reason: r.reason,
            message: r.message.clone(),
        });
    }
    if let Some(msg) = &obs.stalled_rollout {
        problems.push(Problem {
            reason: REASON_ROLLOUT_STALLED,
            message: msg.clone(),
        });
    }
    if let Some(msg) = &obs.unhealthy {
        problems.push(Problem {
            reason: REASON_REPLICA_UNHEALTHY,
            message: msg.clone(),
        });
    }
    problems.extend(obs.problems.iter().cloned());
    let problem_message = problems
        .iter()
        .map(|p| p.message.as_str())
        .collect::<Vec<_>>()
        .join("; ");

    // Until a first replica is ready, a Database that has never run is still being created
    // (the StatefulSet's revisions and counts move meanwhile, the reason does not).
    let never_ran = prev.and_then(|s| s.phase) != Some(Phase::Running) && ready == 0;
    let progress_reason = match &obs.workload {
        None => "Creating",
        Some(_) if never_ran => "Creating",
        Some(w) if w.update_revision.is_some() && w.current_revision != w.update_revision => {
            "RollingUpdate"
        }
        Some(w) if w.updated_replicas < w.replicas => "RollingUpdate",
        Some(_) => "Scaling",
    };
    let progress_message = format!("{ready}/{desired} replicas ready");

    let ready_cond = if let Some(msg) = &obs.terminating {
        condition(CONDITION_READY, false, REASON_TERMINATING, msg.clone())
    } else if let Some(p) = problems.first() {
        condition(CONDITION_READY, false, p.reason, problem_message.clone())
    } else if is_converged {
        condition(
            CONDITION_READY,
            true,
            "AllReplicasReady",
            format!("all {desired} replicas ready and up to date"),
        )
    } else {
        condition(
            CONDITION_READY,
            false,
            "ReplicasNotReady",
            progress_message.clone(),
        )
    };
    let available = if ready >= 1 {
        condition(
            CONDITION_AVAILABLE,
            true,
            "MinimumReplicasAvailable",
            format!("{ready}/{desired} replicas ready to serve clients"),
        )
    } else {
        condition(
            CONDITION_AVAILABLE,
            false,
            "NoReplicasReady",
            "no replica is ready to serve clients".to_owned(),
        )
    };
    let progressing = if let Some(msg) = &obs.terminating {
        condition(CONDITION_PROGRESSING, true, REASON_TERMINATING, msg.clone())
    } else if let Some(r) = &obs.refusal {
        condition(CONDITION_PROGRESSING, false, r.reason, r.message.clone())
    } else if let Some(msg) = &obs.stalled_rollout {
        condition(
            CONDITION_PROGRESSING,
            false,
            REASON_ROLLOUT_STALLED,
            msg.clone(),
        )
    } else if let Some(msg) = &obs.unhealthy {
        condition(
            CONDITION_PROGRESSING,
            false,
            REASON_REPLICA_UNHEALTHY,
            msg.clone(),
        )
    } else if is_converged {
        condition(
            CONDITION_PROGRESSING,
            false,
            "Reconciled",
            "desired state reached".to_owned(),
        )
    } else {
        condition(
            CONDITION_PROGRESSING,
            true,
            progress_reason,
            progress_message.clone(),
        )
    };
    let degraded = match problems.first() {
        Some(p) => condition(CONDITION_DEGRADED, true, p.reason, problem_message.clone()),
        None => condition(
            CONDITION_DEGRADED,
            false,
            "AsExpected",
            "no problems detected".to_owned(),
        ),
    };

    let backup = obs.backup_failure.as_ref().map(|failure| match failure {
        Some(msg) => condition(
            CONDITION_BACKUP_FAILED,
            true,
            REASON_BACKUP_FAILED,
            msg.clone(),
        ),
        None => condition(
            CONDITION_BACKUP_FAILED,
            false,
            "BackupSucceeded",
            "the most recent backup succeeded".to_owned(),
        ),
    });
    let conditions = [ready_cond, available, progressing, degraded]
        .into_iter()
        .chain(backup)
        .map(|mut c| {
            c.observed_generation = obs.generation;
            let previous = prev.and_then(|s| s.conditions.iter().find(|p| p.type_ == c.type_));
            c.last_transition_time = match previous {
                Some(p) if p.status == c.status => p.last_transition_time.clone(),
                _ => Time(Timestamp::from_second(now.as_second()).unwrap_or(now)),
            };
            c
        })
        .collect();

    let phase = if obs.terminating.is_some() {
        Phase::Terminating
    } else if invalid {
        Phase::Failed
    } else if ready >= 1 {
        Phase::Running
    } else {
        Phase::Pending
    };

    let message = if let Some(msg) = &obs.terminating {
        msg.clone()
    } else if !problems.is_empty() {
        problem_message
    } else if is_converged {
        format!("all {desired} replicas ready")
    } else {
        format!(
            "{progress_message}; {}",
            progress_reason_text(progress_reason)
        )
    };

    let last_backup_time = match (
        prev.and_then(|s| s.last_backup_time.clone()),
        obs.last_backup_time.clone(),
    ) {
        (Some(a), Some(b)) => Some(if a.0 >= b.0 { a } else { b }),
        (a, b) => a.or(b),
    };

    DatabaseStatus {
        conditions,
        ready_replicas: Some(ready),
        observed_generation: obs.generation,
        phase: Some(phase),
        last_backup_time,
        endpoints: obs.endpoints.clone(),
        message: Some(message),
        version: obs
            .running_version
            .clone()
            .or_else(|| prev.and_then(|s| s.version.clone())),
        storage: obs.storage.clone(),
    }
}

fn progress_reason_text(reason: &str) -> &'static str {
    match reason {
        "Creating" => "creating resources",
        "RollingUpdate" => "rolling update in progress",
        _ => "scaling in progress",
    }
}

/// Marks an existing status with a problem that stopped the reconcile (e.g. a 403): Ready
/// False and Degraded True with the problem, everything else as it was.
pub fn with_problem(
    prev: Option<&DatabaseStatus>,
    generation: Option<i64>,
    problem: &Problem,
    now: Timestamp,
) -> DatabaseStatus {
    let mut out = prev.cloned().unwrap_or_default();
    for (type_, status) in [(CONDITION_READY, false), (CONDITION_DEGRADED, true)] {
        let mut c = condition(type_, status, problem.reason, problem.message.clone());
        c.observed_generation = generation;
        let previous = out.conditions.iter().position(|p| p.type_ == type_);
        c.last_transition_time = match previous.map(|i| &out.conditions[i]) {
            Some(p) if p.status == c.status => p.last_transition_time.clone(),
            _ => Time(Timestamp::from_second(now.as_second()).unwrap_or(now)),
        };
        match previous {
            Some(i) => out.conditions[i] = c,
            None => out.conditions.push(c),
        }
    }
    out.message = Some(problem.message.clone());
    out.observed_generation = generation;
    out
}

/// Looks a condition up by type.
pub fn find<'a>(status: &'a DatabaseStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::REASON_DESTRUCTIVE_CHANGE;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use std::collections::BTreeMap;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn workload(replicas: i32, ready: i32, updated: i32, cur: &str, upd: &str) -> WorkloadStatus {
        WorkloadStatus {
            generation: 2,
            observed_generation: 2,
            replicas,
            ready_replicas: ready,
            updated_replicas: updated,
            current_revision: Some(cur.to_owned()),
            update_revision: Some(upd.to_owned()),
        }
    }

    fn obs(desired: i32, w: Option<WorkloadStatus>) -> Observation {
        Observation {
            generation: Some(4),
            desired_replicas: desired,
            workload: w,
            endpoints: vec!["orders.shop.svc:5432".to_owned()],
            ..Default::default()
        }
    }

    fn cond<'a>(s: &'a DatabaseStatus, t: &str) -> (&'a str, &'a str) {
        let c = find(s, t).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn all_replicas_ready_is_ready_available_running() {
        let s = compute(None, &obs(3, Some(workload(3, 3, 3, "a", "a"))), ts(100));
        assert_eq!(cond(&s, CONDITION_READY), ("True", "AllReplicasReady"));
        assert_eq!(cond(&s, CONDITION_AVAILABLE).0, "True");
        assert_eq!(cond(&s, CONDITION_PROGRESSING).0, "False");
        assert_eq!(cond(&s, CONDITION_DEGRADED).0, "False");
        assert_eq!(s.phase, Some(Phase::Running));
        assert_eq!(s.ready_replicas, Some(3));
        assert_eq!(s.observed_generation, Some(4));
        assert_eq!(s.endpoints, vec!["orders.shop.svc:5432"]);
    }

    #[test]
    fn status_table() {
        // (behaviour, observation, ready, progressing reason, degraded, phase)
        let mut refused = obs(3, Some(workload(3, 3, 3, "a", "a")));
        refused.refusal = Some(Refusal {
            reason: REASON_DESTRUCTIVE_CHANGE,
            message: "spec.storageSize: cannot shrink".to_owned(),
        });
        let mut invalid = obs(3, None);
        invalid.refusal = Some(Refusal {
            reason: REASON_INVALID_SPEC,
            message: "spec.replicas: must be 1..=10".to_owned(),
        });
        let mut stalled = obs(3, Some(workload(3, 2, 1, "a", "b")));
        stalled.stalled_rollout = Some("rolling update halted".to_owned());
        let rows: Vec<(&str, Observation, &str, &str, &str, Phase)> = vec![
            (
                "nothing_created_yet_is_pending",
                obs(1, None),
                "False",
                "Creating",
                "False",
                Phase::Pending,
            ),
            (
                "a_statefulset_without_a_ready_pod_is_still_creating",
                obs(1, Some(workload(1, 0, 0, "a", "b"))),
                "False",
                "Creating",
                "False",
                Phase::Pending,
            ),
            (
                "scaling_up_is_progressing",
                obs(3, Some(workload(1, 1, 1, "a", "a"))),
                "False",
                "Scaling",
                "False",
                Phase::Running,
            ),
            (
                "new_revision_rolling_is_progressing",
                obs(3, Some(workload(3, 2, 1, "a", "b"))),
                "False",
                "RollingUpdate",
                "False",
                Phase::Running,
            ),
            (
                "destructive_change_is_degraded_not_failed",
                refused,
                "False",
                REASON_DESTRUCTIVE_CHANGE,
                "True",
                Phase::Running,
            ),
            (
                "invalid_spec_is_failed",
                invalid,
                "False",
                REASON_INVALID_SPEC,
                "True",
                Phase::Failed,
            ),
            (
                "stalled_rollout_is_degraded",
                stalled,
                "False",
                REASON_ROLLOUT_STALLED,
                "True",
                Phase::Running,
            ),
        ];
        for (name, o, ready, progressing, degraded, phase) in rows {
            let s = compute(None, &o, ts(100));
            assert_eq!(cond(&s, CONDITION_READY).0, ready, "{name}");
            assert_eq!(cond(&s, CONDITION_PROGRESSING).1, progressing, "{name}");
            assert_eq!(cond(&s, CONDITION_DEGRADED).0, degraded, "{name}");
            assert_eq!(s.phase, Some(phase), "{name}");
        }
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let o = obs(3, Some(workload(3, 3, 3, "a", "a")));
        let first = compute(None, &o, ts(100));
        let again = compute(Some(&first), &o, ts(500));
        assert_eq!(first, again, "unchanged world yields identical status");
        let mut scaled = obs(3, Some(workload(3, 2, 3, "a", "a")));
        scaled.generation = Some(4);
        let after = compute(Some(&first), &scaled, ts(900));
        let ready = find(&after, CONDITION_READY).unwrap();
        assert_eq!(ready.last_transition_time.0, ts(900), "Ready flipped");
        let avail = find(&after, CONDITION_AVAILABLE).unwrap();
        assert_eq!(
            avail.last_transition_time.0,
            ts(100),
            "Available did not flip"
        );
    }

    #[test]
    fn terminating_overrides_phase_and_message() {
        let mut o = obs(3, Some(workload(3, 3, 3, "a", "a")));
        o.terminating = Some("waiting for 2 pods to terminate".to_owned());
        let s = compute(None, &o, ts(1));
        assert_eq!(s.phase, Some(Phase::Terminating));
        assert_eq!(
            s.message.as_deref(),
            Some("waiting for 2 pods to terminate")
        );
        assert_eq!(cond(&s, CONDITION_READY), ("False", REASON_TERMINATING));
    }

    fn pod(name: &str, rev: &str, ready: bool, created: i64, transition: i64) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.to_owned());
        p.metadata.labels = Some(BTreeMap::from([(
            "controller-revision-hash".to_owned(),
            rev.to_owned(),
        )]));
        p.metadata.creation_timestamp = Some(Time(ts(created)));
        p.status = Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "Ready".to_owned(),
                status: if ready { "True" } else { "False" }.to_owned(),
                last_transition_time: Some(Time(ts(transition))),
                ..Default::default()
            }]),
            ..Default::default()
        });
        p
    }

    #[test]
    fn unready_containers_are_explained_from_their_statuses() {
        use k8s_openapi::api::core::v1::{
            ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
        };
        let status = |name: &str, ready: bool, waiting: Option<&str>, last: Option<(i32, &str)>| {
            ContainerStatus {
                name: name.to_owned(),
                ready,
                state: waiting.map(|r| ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some(r.to_owned()),
                        message: None,
                    }),
                    ..Default::default()
                }),
                last_state: last.map(|(code, message)| ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: code,
                        message: Some(message.to_owned()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }
        };
        let with = |statuses: Vec<ContainerStatus>| {
            let mut p = pod("orders-0", "a", false, 0, 0);
            if let Some(s) = p.status.as_mut() {
                s.container_statuses = Some(statuses);
            }
            p
        };
        let long = format!("{}FATAL: the end", "x".repeat(1000));
        let rows: Vec<(&str, Pod, Option<String>)> =
            vec![
            ("no_statuses_says_nothing", pod("orders-0", "a", false, 0, 0), None),
            (
                "ready_containers_are_left_out",
                with(vec![status("postgres", true, None, None)]),
                None,
            ),
            (
                "crash_loop_quotes_the_last_exit",
                with(vec![status(
                    "postgres",
                    false,
                    Some("CrashLoopBackOff"),
                    Some((1, "LOG: starting\nFATAL:  invalid value for parameter \"wal_level\"\n")),
                )]),
                Some(
                    "container postgres: CrashLoopBackOff, last exit code 1, \"LOG: starting | \
                     FATAL:  invalid value for parameter \"wal_level\"\""
                        .to_owned(),
                ),
            ),
            (
                "image_pull_without_a_previous_run",
                with(vec![status("postgres", false, Some("ErrImageNeverPull"), None)]),
                Some("container postgres: ErrImageNeverPull".to_owned()),
            ),
            (
                "long_messages_keep_their_end",
                with(vec![status("postgres", false, None, Some((2, &long)))]),
                Some(format!(
                    "container postgres: last exit code 2, \"...{}FATAL: the end\"",
                    "x".repeat(MAX_QUOTED_MESSAGE - "FATAL: the end".len())
                )),
            ),
        ];
        for (name, p, want) in rows {
            assert_eq!(unready_reason(&p), want, "{name}");
        }
    }

    #[test]
    fn updated_pod_not_ready_past_timeout_stalls_rollout() {
        let timeout = Duration::from_secs(300);
        let pods = vec![
            pod("orders-2", "b", false, 1000, 1000),
            pod("orders-1", "a", true, 0, 0),
        ];
        assert!(
            stalled_rollout(&pods, Some("b"), timeout, ts(1200)).is_none(),
            "within budget"
        );
        let msg = stalled_rollout(&pods, Some("b"), timeout, ts(1400)).unwrap();
        assert!(msg.contains("orders-2"), "{msg}");
        let healthy = vec![pod("orders-2", "b", true, 1000, 1010)];
        assert!(stalled_rollout(&healthy, Some("b"), timeout, ts(5000)).is_none());
        let old_rev_unready = vec![pod("orders-1", "a", false, 0, 0)];
        assert!(stalled_rollout(&old_rev_unready, Some("b"), timeout, ts(5000)).is_none());
    }

    #[test]
    fn rollout_pause_holds_until_the_template_changes() {
        let stall = Stall {
            pod: "orders-2".to_owned(),
            waited_secs: 400,
            why: None,
        };
        let rows = [
            (
                "stall_pauses_at_the_stuck_ordinal",
                true,
                None,
                Some(&stall),
                Some(("orders-2", 2)),
            ),
            (
                "pause_survives_the_pod_turning_ready",
                true,
                Some(("orders-2", 2)),
                None,
                Some(("orders-2", 2)),
            ),
            (
                "template_change_lifts_the_pause",
                false,
                Some(("orders-2", 2)),
                Some(&stall),
                None,
            ),
            ("no_stall_no_pause", true, None, None, None),
        ];
        for (name, current, observed, st, expected) in rows {
            let observed = observed.map(|(p, o): (&str, i32)| (p.to_owned(), o));
            let got = rollout_pause(current, observed, st);
            assert_eq!(got, expected.map(|(p, o)| (p.to_owned(), o)), "{name}");
        }
        assert_eq!(pod_ordinal("my-db-10"), Some(10));
        assert_eq!(pod_ordinal("nodash"), None);
    }

    #[test]
    fn last_backup_time_never_moves_backwards() {
        let mut o = obs(1, None);
        o.last_backup_time = Some(Time(ts(50)));
        let prev = DatabaseStatus {
            last_backup_time: Some(Time(ts(80))),
            ..Default::default()
        };
        let s = compute(Some(&prev), &o, ts(100));
        assert_eq!(s.last_backup_time, Some(Time(ts(80))));
    }
}
