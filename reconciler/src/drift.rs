//! Semantic drift detection: does the observed object already contain everything the desired
//! object says? Fields the API server or other actors add (defaults, status, clusterIP, extra
//! labels) are ignored; any field we set that differs, is missing or was removed is drift.
//!
//! This is what makes an idle reconcile write nothing, and a hand edit get put back.

use serde::Serialize;
use serde_json::Value;

/// True when every field set in `desired` has the same value in `observed`.
pub fn is_satisfied_by<D: Serialize, O: Serialize>(desired: &D, observed: &O) -> bool {
    match (
        serde_json::to_value(desired),
        serde_json::to_value(observed),
    ) {
        (Ok(d), Ok(o)) => contains(&d, &o),
        _ => false,
    }
}

/// Recursive subset check. Arrays must have the same length and match element-wise (order is
/// meaningful for containers, env, ports as we render them).
pub fn contains(desired: &Value, observed: &Value) -> bool {
    match (desired, observed) {
        (Value::Object(d), Value::Object(o)) => d.iter().all(|(k, dv)| match o.get(k) {
            Some(ov) => contains(dv, ov),
            None => is_empty(dv),
        }),
        (Value::Array(d), Value::Array(o)) => {
            d.len() == o.len() && d.iter().zip(o).all(|(dv, ov)| contains(dv, ov))
        }
        (Value::Array(d), Value::Null) => d.is_empty(),
        (Value::String(d), Value::String(o)) => d == o || same_quantity(d, o),
        (d, o) => d == o,
    }
}

/// Path of the first field where `observed` does not satisfy `desired` (for logs).
pub fn first_difference(desired: &Value, observed: &Value) -> Option<String> {
    fn walk(d: &Value, o: &Value, path: &mut String) -> bool {
        match (d, o) {
            (Value::Object(dm), Value::Object(om)) => {
                for (k, dv) in dm {
                    let len = path.len();
                    path.push('.');
                    path.push_str(k);
                    let found = match om.get(k) {
                        Some(ov) => walk(dv, ov, path),
                        None => !is_empty(dv),
                    };
                    if found {
                        return true;
                    }
                    path.truncate(len);
                }
                false
            }
            (Value::Array(da), Value::Array(oa)) if da.len() == oa.len() => {
                for (i, (dv, ov)) in da.iter().zip(oa).enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    if walk(dv, ov, path) {
                        return true;
                    }
                    path.truncate(len);
                }
                false
            }
            _ => !contains(d, o),
        }
    }
    let mut path = String::new();
    walk(desired, observed, &mut path).then_some(path)
}

/// The API server drops empty maps/lists and nulls, and `omitempty` drops zero values of
/// non-pointer fields (`readOnly: false`), whose absence then means that same zero value.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Object(m) => m.values().all(is_empty),
        Value::Array(a) => a.is_empty(),
    }
}

/// The API server canonicalises quantities (`1.5Gi` becomes `1536Mi`, `0.5` becomes `500m`).
fn same_quantity(a: &str, b: &str) -> bool {
    let looks_like_quantity = |s: &str| {
        s.len() < 40
            && s.starts_with(|c: char| c.is_ascii_digit() || c == '.' || c == '-' || c == '+')
    };
    looks_like_quantity(a)
        && looks_like_quantity(b)
        && api::quantity::compare(a, b).is_ok_and(|o| o == std::cmp::Ordering::Equal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_added_fields_are_not_drift() {
        let desired = json!({"spec": {"replicas": 3, "ports": [{"port": 5432}]}});
        let observed = json!({
            "metadata": {"resourceVersion": "7", "managedFields": []},
            "spec": {"replicas": 3, "ports": [{"port": 5432, "protocol": "TCP"}], "clusterIP": "10.0.0.1"},
            "status": {"readyReplicas": 1}
        });
        assert!(contains(&desired, &observed));
    }

    #[test]
    fn changed_or_removed_fields_are_drift() {
        let desired = json!({"spec": {"replicas": 3, "labels": {"a": "b"}}});
        let rows = [
            (
                "replicas_changed",
                json!({"spec": {"replicas": 1, "labels": {"a": "b"}}}),
            ),
            (
                "label_removed",
                json!({"spec": {"replicas": 3, "labels": {}}}),
            ),
            (
                "label_changed",
                json!({"spec": {"replicas": 3, "labels": {"a": "c"}}}),
            ),
            ("object_missing", json!({})),
        ];
        for (name, observed) in rows {
            assert!(!contains(&desired, &observed), "{name} must count as drift");
        }
    }

    #[test]
    fn first_difference_names_the_drifted_field() {
        let desired = json!({"spec": {"replicas": 3, "ports": [{"port": 1}, {"port": 2}]}});
        let observed = json!({"spec": {"replicas": 3, "ports": [{"port": 1}, {"port": 9}]}});
        assert_eq!(
            first_difference(&desired, &observed).as_deref(),
            Some(".spec.ports[1].port")
        );
        assert_eq!(first_difference(&desired, &desired), None);
    }

    #[test]
    fn extra_list_element_is_drift() {
        let desired = json!({"env": [{"name": "A"}]});
        let observed = json!({"env": [{"name": "A"}, {"name": "B"}]});
        assert!(!contains(&desired, &observed));
    }

    #[test]
    fn canonicalised_quantities_are_equal() {
        assert!(contains(
            &json!({"storage": "1.5Gi"}),
            &json!({"storage": "1536Mi"})
        ));
        assert!(!contains(
            &json!({"storage": "2Gi"}),
            &json!({"storage": "1536Mi"})
        ));
        assert!(!contains(
            &json!({"name": "orders"}),
            &json!({"name": "orders2"})
        ));
        assert!(contains(&json!({"cpu": "0.5"}), &json!({"cpu": "500m"})));
        assert!(!contains(&json!({"cpu": "0.5"}), &json!({"cpu": "600m"})));
    }

    #[test]
    fn empty_desired_collections_match_absent_ones() {
        assert!(contains(&json!({"a": {}, "b": [], "c": null}), &json!({})));
    }

    #[test]
    fn omitted_zero_values_are_not_drift_but_changed_ones_are() {
        assert!(contains(
            &json!({"readOnly": false, "n": 0, "s": ""}),
            &json!({})
        ));
        assert!(!contains(&json!({"readOnly": true}), &json!({})));
        assert!(!contains(
            &json!({"readOnly": false}),
            &json!({"readOnly": true})
        ));
    }
}
