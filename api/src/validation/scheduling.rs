//! Checks for `spec.scheduling`: the values the kube-apiserver would reject when the reconciler
//! writes them into the StatefulSet's pod template. Catching them at admission gives the user an
//! error on the Database (with the field path), instead of a StatefulSet the reconciler can never
//! apply and a `Degraded` status.
//!
//! The rules follow `k8s.io/kubernetes/pkg/apis/core/validation` for the stable fields: label keys
//! are qualified names, values label values; toleration operators `Equal`/`Exists` and effects
//! `NoSchedule`/`PreferNoSchedule`/`NoExecute`; node-selector operators
//! `In`/`NotIn`/`Exists`/`DoesNotExist`/`Gt`/`Lt` with the values each needs; weights 1..100;
//! topology spread `maxSkew` > 0, `whenUnsatisfiable` `DoNotSchedule`/`ScheduleAnyway`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, NodeSelectorTerm, PodAffinityTerm, Toleration, TopologySpreadConstraint,
    WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::FieldError;
use crate::v1::Scheduling;

const TOLERATION_OPERATORS: [&str; 2] = ["Equal", "Exists"];
const TAINT_EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];
const NODE_SELECTOR_OPERATORS: [&str; 6] = ["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"];
const LABEL_SELECTOR_OPERATORS: [&str; 4] = ["In", "NotIn", "Exists", "DoesNotExist"];
const WHEN_UNSATISFIABLE: [&str; 2] = ["DoNotSchedule", "ScheduleAnyway"];
const INCLUSION_POLICIES: [&str; 2] = ["Honor", "Ignore"];
const WEIGHT_RANGE: std::ops::RangeInclusive<i32> = 1..=100;

/// Every problem in `scheduling`, with paths under `spec.scheduling`.
pub fn check(scheduling: &Scheduling) -> Vec<FieldError> {
    let base = "spec.scheduling";
    let mut errors = Vec::new();
    if let Some(selector) = &scheduling.node_selector {
        labels(&format!("{base}.nodeSelector"), selector, &mut errors);
    }
    for (i, t) in scheduling.tolerations.iter().flatten().enumerate() {
        toleration(&format!("{base}.tolerations[{i}]"), t, &mut errors);
    }
    if let Some(a) = &scheduling.affinity {
        affinity(&format!("{base}.affinity"), a, &mut errors);
    }
    let mut seen = Vec::new();
    for (i, c) in scheduling
        .topology_spread_constraints
        .iter()
        .flatten()
        .enumerate()
    {
        let path = format!("{base}.topologySpreadConstraints[{i}]");
        spread(&path, c, &mut errors);
        let pair = (c.topology_key.as_str(), c.when_unsatisfiable.as_str());
        if seen.contains(&pair) {
            errors.push(FieldError::new(
                path,
                format!("{}, {}", pair.0, pair.1),
                format!(
                    "a second constraint for topologyKey {:?} with whenUnsatisfiable {}; Kubernetes allows one per pair, merge them",
                    pair.0, pair.1
                ),
            ));
        }
        seen.push(pair);
    }
    errors
}

/// Kubernetes' qualified name: an optional DNS-1123 subdomain prefix and `/`, then 1-63
/// characters of `[A-Za-z0-9._-]` starting and ending with an alphanumeric.
pub fn qualified_name(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        if !dns1123_subdomain(p) {
            return Err(format!(
                "{s:?} has the prefix {p:?}, which is not a DNS subdomain (lowercase letters, digits, '-' and '.', at most 253 characters)"
            ));
        }
    }
    if name.is_empty() || name.len() > 63 || !name_chars(name) {
        return Err(format!(
            "{s:?} is not a qualified name: the name part must be 1-63 characters of letters, digits, '-', '_' and '.', starting and ending with a letter or digit (optionally after a DNS prefix and '/', e.g. example.com/role)"
        ));
    }
    Ok(())
}

/// A label value: empty, or up to 63 characters like the name part of a qualified name.
pub fn label_value(s: &str) -> Result<(), String> {
    if s.is_empty() || (s.len() <= 63 && name_chars(s)) {
        return Ok(());
    }
    Err(format!(
        "{s:?} is not a label value: use at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
    ))
}

fn name_chars(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

fn dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn one_of(path: String, value: &str, allowed: &[&str], what: &str, errors: &mut Vec<FieldError>) {
    if !allowed.contains(&value) {
        errors.push(FieldError::new(
            path,
            value,
            format!(
                "{value:?} is not a {what}; use one of {} (case matters)",
                allowed.join(", ")
            ),
        ));
    }
}

fn labels(path: &str, map: &BTreeMap<String, String>, errors: &mut Vec<FieldError>) {
    for (key, value) in map {
        if let Err(m) = qualified_name(key) {
            errors.push(FieldError::new(path, key, format!("label key {m}")));
        }
        if let Err(m) = label_value(value) {
            errors.push(FieldError::new(format!("{path}.{key}"), value, m));
        }
    }
}

fn toleration(path: &str, t: &Toleration, errors: &mut Vec<FieldError>) {
    let key = t.key.as_deref().unwrap_or_default();
    let operator = t.operator.as_deref().unwrap_or("Equal");
    let value = t.value.as_deref().unwrap_or_default();
    let effect = t.effect.as_deref().unwrap_or_default();
    if !key.is_empty() {
        if let Err(m) = qualified_name(key) {
            errors.push(FieldError::new(format!("{path}.key"), key, m));
        }
    }
    if !TOLERATION_OPERATORS.contains(&operator) {
        one_of(
            format!("{path}.operator"),
            operator,
            &TOLERATION_OPERATORS,
            "toleration operator",
            errors,
        );
    } else if key.is_empty() && operator != "Exists" {
        errors.push(FieldError::new(
            format!("{path}.operator"),
            operator,
            "an empty key matches every taint and needs operator: Exists; set a key or use Exists",
        ));
    } else if operator == "Exists" && !value.is_empty() {
        errors.push(FieldError::new(
            format!("{path}.value"),
            value,
            "must be empty when operator is Exists (Exists matches any value); remove the value or use operator: Equal",
        ));
    } else if let Err(m) = label_value(value) {
        errors.push(FieldError::new(format!("{path}.value"), value, m));
    }
    if !effect.is_empty() {
        one_of(
            format!("{path}.effect"),
            effect,
            &TAINT_EFFECTS,
            "taint effect",
            errors,
        );
    }
    if let Some(seconds) = t.toleration_seconds {
        if effect != "NoExecute" {
            errors.push(FieldError::new(
                format!("{path}.tolerationSeconds"),
                seconds.to_string(),
                "only applies to effect NoExecute (how long the pod stays on a node that gets the taint); set effect: NoExecute or remove tolerationSeconds",
            ));
        }
    }
}

fn node_selector_term(path: &str, term: &NodeSelectorTerm, errors: &mut Vec<FieldError>) {
    for (i, r) in term.match_expressions.iter().flatten().enumerate() {
        requirement(
            &format!("{path}.matchExpressions[{i}]"),
            (&r.key, &r.operator, r.values.as_deref().unwrap_or_default()),
            &NODE_SELECTOR_OPERATORS,
            "node selector operator",
            errors,
        );
    }
    for (i, r) in term.match_fields.iter().flatten().enumerate() {
        let p = format!("{path}.matchFields[{i}]");
        if r.key != "metadata.name" {
            errors.push(FieldError::new(
                format!("{p}.key"),
                &r.key,
                "the only supported field is metadata.name",
            ));
        }
        let values = r.values.as_deref().unwrap_or_default();
        if !matches!(r.operator.as_str(), "In" | "NotIn") || values.len() != 1 {
            errors.push(FieldError::new(
                format!("{p}.operator"),
                &r.operator,
                "matchFields takes operator In or NotIn with exactly one node name",
            ));
        }
    }
}

fn label_selector(path: &str, s: &LabelSelector, errors: &mut Vec<FieldError>) {
    if let Some(m) = &s.match_labels {
        labels(&format!("{path}.matchLabels"), m, errors);
    }
    for (i, r) in s.match_expressions.iter().flatten().enumerate() {
        requirement(
            &format!("{path}.matchExpressions[{i}]"),
            (&r.key, &r.operator, r.values.as_deref().unwrap_or_default()),
            &LABEL_SELECTOR_OPERATORS,
            "label selector operator",
            errors,
        );
    }
}

/// One `key operator values` requirement of a node selector term or a label selector at `p`;
/// `operators` are the ones that kind of selector takes (`Gt`/`Lt` only in node selectors).
fn requirement(
    p: &str,
    (key, operator, values): (&str, &str, &[String]),
    operators: &[&str],
    what: &str,
    errors: &mut Vec<FieldError>,
) {
    if let Err(m) = qualified_name(key) {
        errors.push(FieldError::new(format!("{p}.key"), key, m));
    }
    match operator {
        "In" | "NotIn" if values.is_empty() => errors.push(FieldError::new(
            format!("{p}.values"),
            "",
            format!("operator {operator} needs at least one value"),
        )),
        "Exists" | "DoesNotExist" if !values.is_empty() => errors.push(FieldError::new(
            format!("{p}.values"),
            values.join(","),
            format!("must be empty for operator {operator}"),
        )),
        "Gt" | "Lt"
            if operators.contains(&operator)
                && (values.len() != 1 || values[0].parse::<i64>().is_err()) =>
        {
            errors.push(FieldError::new(
                format!("{p}.values"),
                values.join(","),
                format!("operator {operator} needs exactly one integer value"),
            ))
        }
        op => one_of(format!("{p}.operator"), op, operators, what, errors),
    }
    for (j, v) in values.iter().enumerate() {
        if let Err(m) = label_value(v) {
            errors.push(FieldError::new(format!("{p}.values[{j}]"), v, m));
        }
    }
}

fn weight(path: String, w: i32, errors: &mut Vec<FieldError>) {
    if !WEIGHT_RANGE.contains(&w) {
        errors.push(FieldError::new(
            path,
            w.to_string(),
            format!("{w} is out of range; use a weight from 1 to 100"),
        ));
    }
}

fn pod_affinity_term(path: &str, t: &PodAffinityTerm, errors: &mut Vec<FieldError>) {
    if t.topology_key.is_empty() {
        errors.push(FieldError::new(
            format!("{path}.topologyKey"),
            "",
            "is required: the node label that defines the domain, e.g. kubernetes.io/hostname or topology.kubernetes.io/zone",
        ));
    } else if let Err(m) = qualified_name(&t.topology_key) {
        errors.push(FieldError::new(
            format!("{path}.topologyKey"),
            &t.topology_key,
            m,
        ));
    }
    if let Some(s) = &t.label_selector {
        label_selector(&format!("{path}.labelSelector"), s, errors);
    }
    if let Some(s) = &t.namespace_selector {
        label_selector(&format!("{path}.namespaceSelector"), s, errors);
    }
}

fn pod_terms(
    path: &str,
    required: Option<&Vec<PodAffinityTerm>>,
    preferred: Option<&Vec<WeightedPodAffinityTerm>>,
    errors: &mut Vec<FieldError>,
) {
    for (i, t) in required.into_iter().flatten().enumerate() {
        pod_affinity_term(
            &format!("{path}.requiredDuringSchedulingIgnoredDuringExecution[{i}]"),
            t,
            errors,
        );
    }
    for (i, w) in preferred.into_iter().flatten().enumerate() {
        let p = format!("{path}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
        weight(format!("{p}.weight"), w.weight, errors);
        pod_affinity_term(
            &format!("{p}.podAffinityTerm"),
            &w.pod_affinity_term,
            errors,
        );
    }
}

fn affinity(path: &str, a: &Affinity, errors: &mut Vec<FieldError>) {
    if let Some(n) = &a.node_affinity {
        let p = format!("{path}.nodeAffinity");
        if let Some(required) = &n.required_during_scheduling_ignored_during_execution {
            let rp = format!("{p}.requiredDuringSchedulingIgnoredDuringExecution");
            if required.node_selector_terms.is_empty() {
                errors.push(FieldError::new(
                    format!("{rp}.nodeSelectorTerms"),
                    "",
                    "needs at least one term (the terms are ORed; an empty list matches no node)",
                ));
            }
            for (i, term) in required.node_selector_terms.iter().enumerate() {
                node_selector_term(&format!("{rp}.nodeSelectorTerms[{i}]"), term, errors);
            }
        }
        for (i, pref) in n
            .preferred_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
            .enumerate()
        {
            let pp = format!("{p}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
            weight(format!("{pp}.weight"), pref.weight, errors);
            node_selector_term(&format!("{pp}.preference"), &pref.preference, errors);
        }
    }
    if let Some(pa) = &a.pod_affinity {
        pod_terms(
            &format!("{path}.podAffinity"),
            pa.required_during_scheduling_ignored_during_execution
                .as_ref(),
            pa.preferred_during_scheduling_ignored_during_execution
                .as_ref(),
            errors,
        );
    }
    if let Some(pa) = &a.pod_anti_affinity {
        pod_terms(
            &format!("{path}.podAntiAffinity"),
            pa.required_during_scheduling_ignored_during_execution
                .as_ref(),
            pa.preferred_during_scheduling_ignored_during_execution
                .as_ref(),
            errors,
        );
    }
}

fn spread(path: &str, c: &TopologySpreadConstraint, errors: &mut Vec<FieldError>) {
    if c.max_skew < 1 {
        errors.push(FieldError::new(
            format!("{path}.maxSkew"),
            c.max_skew.to_string(),
            "must be at least 1 (the largest allowed difference in pod count between domains)",
        ));
    }
    if c.topology_key.is_empty() {
        errors.push(FieldError::new(
            format!("{path}.topologyKey"),
            "",
            "is required: the node label that defines the domain, e.g. topology.kubernetes.io/zone",
        ));
    } else if let Err(m) = qualified_name(&c.topology_key) {
        errors.push(FieldError::new(
            format!("{path}.topologyKey"),
            &c.topology_key,
            m,
        ));
    }
    one_of(
        format!("{path}.whenUnsatisfiable"),
        &c.when_unsatisfiable,
        &WHEN_UNSATISFIABLE,
        "whenUnsatisfiable value",
        errors,
    );
    if let Some(min) = c.min_domains {
        if min < 1 {
            errors.push(FieldError::new(
                format!("{path}.minDomains"),
                min.to_string(),
                "must be at least 1, or left out",
            ));
        } else if c.when_unsatisfiable != "DoNotSchedule" {
            errors.push(FieldError::new(
                format!("{path}.minDomains"),
                min.to_string(),
                "only applies with whenUnsatisfiable: DoNotSchedule",
            ));
        }
    }
    for (field, value) in [
        ("nodeAffinityPolicy", &c.node_affinity_policy),
        ("nodeTaintsPolicy", &c.node_taints_policy),
    ] {
        if let Some(v) = value {
            one_of(
                format!("{path}.{field}"),
                v,
                &INCLUSION_POLICIES,
                "policy",
                errors,
            );
        }
    }
    if let Some(s) = &c.label_selector {
        label_selector(&format!("{path}.labelSelector"), s, errors);
    }
    for (i, k) in c.match_label_keys.iter().flatten().enumerate() {
        if let Err(m) = qualified_name(k) {
            errors.push(FieldError::new(format!("{path}.matchLabelKeys[{i}]"), k, m));
        }
    }
}
