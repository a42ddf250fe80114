//! Defaulting: RFC 6902 `add` operations against the raw request object, only where a field is
//! absent (or JSON `null`, which Kubernetes treats as absent).
//!
//! The patch is built from the raw JSON, never by diffing a re-serialised typed object, so fields
//! this version of the types does not know survive untouched. Operations come in a fixed order,
//! parents are created (`/spec`, `/spec/resources`, `/spec/resources/requests`) before their
//! children, and applying the patch then defaulting again gives an empty patch.
//!
//! Defaults: `engine: postgres`; `version`: the catalog default for the engine in effect (skipped
//! when the engine is not a known value — validation reports it); `replicas: 1`, or 3 when the
//! namespace is a production namespace; `storageSize: 10Gi`; `resources.requests.cpu: 100m` and
//! `resources.requests.memory: 256Mi` where absent. When the user set a *limit* below that default
//! and no request, the request defaults to the limit instead (as Kubernetes itself does for
//! requests), so defaulting never creates a request that validation would deny.
//!
//! On UPDATE, [`default_patch_on_update`] fills absent fields from the stored object first, so a
//! full replace never silently upgrades, scales down, shrinks or re-sizes an existing database;
//! it also keeps a stored `storageClassName` (which cannot change once volumes exist).

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use serde_json::{json, Map, Value};

use crate::catalog::Catalog;
use crate::quantity;
use crate::v1::Engine;

/// Default engine.
pub const DEFAULT_ENGINE: Engine = Engine::Postgres;
/// Default replicas outside production namespaces.
pub const DEFAULT_REPLICAS: i32 = 1;
/// Default replicas in production namespaces.
pub const DEFAULT_PRODUCTION_REPLICAS: i32 = 3;
/// Default volume size.
pub const DEFAULT_STORAGE_SIZE: &str = "10Gi";
/// Default CPU request.
pub const DEFAULT_CPU_REQUEST: &str = "100m";
/// Default memory request.
pub const DEFAULT_MEMORY_REQUEST: &str = "256Mi";

/// What the server knows about the request's namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefaultingContext {
    /// `Some(true)` when the namespace carries the label `environment: production`; `None` when
    /// the server runs without cluster access, in which case the production rule is skipped and
    /// replicas default to 1.
    pub production_namespace: Option<bool>,
}

impl DefaultingContext {
    /// The replicas default for this namespace.
    pub fn default_replicas(&self) -> i32 {
        if self.production_namespace == Some(true) {
            DEFAULT_PRODUCTION_REPLICAS
        } else {
            DEFAULT_REPLICAS
        }
    }
}

/// RFC 6902 `add` ops only, against the raw object JSON, only for absent fields; deterministic.
/// A non-object input or a non-object `spec` yields an empty patch (validation reports those).
///
/// Use this for CREATE. For UPDATE prefer [`default_patch_on_update`], which fills absent fields
/// from the stored object instead of the defaults.
pub fn default_patch(object: &Value, catalog: &Catalog, ctx: &DefaultingContext) -> Patch {
    build_patch(object, None, catalog, ctx)
}

/// Like [`default_patch`], but a field absent from `object` that the stored `old_object` has
/// takes the stored value rather than the default.
///
/// Without this, a full replace (`kubectl replace`, a PUT from a client that dropped defaulted
/// fields) of a Database created before a catalog change would silently pick up the *new*
/// default version (a major upgrade), reset `replicas` to 1 or `storageSize` to 10Gi (denied as a
/// shrink), or change resource requests and roll the pods. Same guarantees: `add` only, absent
/// fields only, deterministic, idempotent.
pub fn default_patch_on_update(
    object: &Value,
    old_object: &Value,
    catalog: &Catalog,
    ctx: &DefaultingContext,
) -> Patch {
    build_patch(object, Some(old_object), catalog, ctx)
}

/// The stored value at `/spec/<path...>` of the old object, unless absent or null.
fn old_value<'a>(old: Option<&'a Value>, path: &[&str]) -> Option<&'a Value> {
    let mut node = old?.get("spec")?;
    for key in path {
        node = node.get(key)?;
    }
    (!node.is_null()).then_some(node)
}

fn build_patch(
    object: &Value,
    old: Option<&Value>,
    catalog: &Catalog,
    ctx: &DefaultingContext,
) -> Patch {
    let mut ops = Vec::new();
    let Some(root) = object.as_object() else {
        return Patch(ops);
    };
    let empty = Map::new();
    let spec = match root.get("spec") {
        None | Some(Value::Null) => {
            add(&mut ops, &["spec"], json!({}));
            &empty
        }
        Some(Value::Object(m)) => m,
        Some(_) => return Patch(ops),
    };

    let old_engine = old_value(old, &["engine"]);
    let engine = match present(spec, "engine") {
        None => {
            let value = old_engine
                .cloned()
                .unwrap_or_else(|| json!(DEFAULT_ENGINE.as_str()));
            let engine = serde_json::from_value::<Engine>(value.clone()).ok();
            add(&mut ops, &["spec", "engine"], value);
            engine
        }
        Some(v) => serde_json::from_value::<Engine>(v.clone()).ok(),
    };
    if present(spec, "version").is_none() {
        if let Some(engine) = engine {
            // The stored version only makes sense for the stored engine (absent means postgres).
            let stored_engine = old_engine
                .map(|v| serde_json::from_value::<Engine>(v.clone()).ok())
                .unwrap_or(Some(DEFAULT_ENGINE));
            let value = old_value(old, &["version"])
                .filter(|_| stored_engine == Some(engine))
                .cloned()
                .unwrap_or_else(|| json!(catalog.default_version(engine).to_string()));
            add(&mut ops, &["spec", "version"], value);
        }
    }
    if present(spec, "replicas").is_none() {
        let value = old_value(old, &["replicas"])
            .cloned()
            .unwrap_or_else(|| json!(ctx.default_replicas()));
        add(&mut ops, &["spec", "replicas"], value);
    }
    if present(spec, "storageSize").is_none() {
        let value = old_value(old, &["storageSize"])
            .cloned()
            .unwrap_or_else(|| json!(DEFAULT_STORAGE_SIZE));
        add(&mut ops, &["spec", "storageSize"], value);
    }
    // No default on CREATE (the cluster's default class applies); on UPDATE the stored class is
    // kept, because the volumes already exist in it and it cannot change.
    if present(spec, "storageClassName").is_none() {
        if let Some(class) = old_value(old, &["storageClassName"]) {
            add(&mut ops, &["spec", "storageClassName"], class.clone());
        }
    }

    let resources = match present(spec, "resources") {
        None => {
            add(&mut ops, &["spec", "resources"], json!({}));
            Some(&empty)
        }
        Some(Value::Object(m)) => Some(m),
        Some(_) => None,
    };
    if let Some(resources) = resources {
        let limits = present(resources, "limits").and_then(Value::as_object);
        let requests = match present(resources, "requests") {
            None => {
                add(&mut ops, &["spec", "resources", "requests"], json!({}));
                Some(&empty)
            }
            Some(Value::Object(m)) => Some(m),
            Some(_) => None,
        };
        if let Some(requests) = requests {
            for (name, default) in [
                ("cpu", DEFAULT_CPU_REQUEST),
                ("memory", DEFAULT_MEMORY_REQUEST),
            ] {
                if present(requests, name).is_none() {
                    let candidate = old_value(old, &["resources", "requests", name])
                        .cloned()
                        .unwrap_or_else(|| json!(default));
                    let value = limit_below(limits, name, &candidate)
                        .map(Value::String)
                        .unwrap_or(candidate);
                    add(&mut ops, &["spec", "resources", "requests", name], value);
                }
            }
        }
    }
    Patch(ops)
}

/// The field's value unless it is absent or `null`.
fn present<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).filter(|v| !v.is_null())
}

/// The user's limit for `name` as written, when it parses and is below `candidate` (the request
/// defaulting would otherwise add).
fn limit_below(
    limits: Option<&Map<String, Value>>,
    name: &str,
    candidate: &Value,
) -> Option<String> {
    let limit_text = quantity_text(limits?.get(name)?)?;
    let limit = quantity::parse(&limit_text).ok()?;
    let candidate = quantity::parse(&quantity_text(candidate)?).ok()?;
    (limit < candidate && !limit.is_negative()).then_some(limit_text)
}

fn quantity_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn add(ops: &mut Vec<PatchOperation>, path: &[&str], value: Value) {
    ops.push(PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(path.iter().copied()),
        value,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ctx(production: Option<bool>) -> DefaultingContext {
        DefaultingContext {
            production_namespace: production,
        }
    }

    fn patch_json(object: &Value, c: DefaultingContext) -> Value {
        serde_json::to_value(default_patch(object, &Catalog::builtin(), &c)).unwrap()
    }

    fn apply(object: &Value, c: DefaultingContext) -> Value {
        let mut doc = object.clone();
        json_patch::patch(&mut doc, &default_patch(object, &Catalog::builtin(), &c)).unwrap();
        doc
    }

    fn db(spec: Value) -> Value {
        json!({"apiVersion": "example.com/v1", "kind": "Database", "metadata": {"name": "db1", "namespace": "ns"}, "spec": spec})
    }

    #[test]
    fn empty_spec_gets_every_default_in_a_fixed_order() {
        assert_eq!(
            patch_json(&db(json!({})), ctx(None)),
            json!([
                {"op": "add", "path": "/spec/engine", "value": "postgres"},
                {"op": "add", "path": "/spec/version", "value": "17.7.0"},
                {"op": "add", "path": "/spec/replicas", "value": 1},
                {"op": "add", "path": "/spec/storageSize", "value": "10Gi"},
                {"op": "add", "path": "/spec/resources", "value": {}},
                {"op": "add", "path": "/spec/resources/requests", "value": {}},
                {"op": "add", "path": "/spec/resources/requests/cpu", "value": "100m"},
                {"op": "add", "path": "/spec/resources/requests/memory", "value": "256Mi"},
            ])
        );
    }

    #[test]
    fn missing_spec_is_created_before_its_fields() {
        let obj =
            json!({"apiVersion": "example.com/v1", "kind": "Database", "metadata": {"name": "x"}});
        let p = patch_json(&obj, ctx(None));
        assert_eq!(p[0], json!({"op": "add", "path": "/spec", "value": {}}));
        let out = apply(&obj, ctx(None));
        assert_eq!(out["spec"]["engine"], "postgres");
        assert_eq!(out["spec"]["resources"]["requests"]["memory"], "256Mi");
    }

    #[test]
    fn null_spec_and_null_fields_count_as_absent() {
        let out = apply(&db(Value::Null), ctx(None));
        assert_eq!(out["spec"]["replicas"], 1);
        let out = apply(&db(json!({"replicas": null, "resources": null})), ctx(None));
        assert_eq!(out["spec"]["replicas"], 1);
        assert_eq!(out["spec"]["resources"]["requests"]["cpu"], "100m");
    }

    #[test]
    fn version_default_follows_the_users_engine() {
        let out = apply(&db(json!({"engine": "mysql"})), ctx(None));
        assert_eq!(out["spec"]["version"], "8.4.7");
        assert_eq!(out["spec"]["engine"], "mysql");
    }

    #[test]
    fn unknown_engine_gets_no_version_default() {
        let out = apply(&db(json!({"engine": "oracle"})), ctx(None));
        assert_eq!(out["spec"]["engine"], "oracle");
        assert!(out["spec"].get("version").is_none());
        assert_eq!(out["spec"]["replicas"], 1);
    }

    #[test]
    fn replicas_default_depends_on_the_namespace() {
        let cases = [(None, 1), (Some(false), 1), (Some(true), 3)];
        for (production, want) in cases {
            assert_eq!(
                apply(&db(json!({})), ctx(production))["spec"]["replicas"],
                want,
                "{production:?}"
            );
        }
    }

    #[test]
    fn user_values_are_never_changed() {
        let spec = json!({
            "engine": "mysql", "version": "8.0.44", "replicas": 5, "storageSize": "50Gi",
            "resources": {"requests": {"cpu": "2", "memory": "4Gi"}}
        });
        assert_eq!(patch_json(&db(spec), ctx(Some(true))), json!([]));
    }

    #[test]
    fn only_missing_requests_are_added_next_to_user_values() {
        let spec = json!({"resources": {"requests": {"cpu": "1"}, "limits": {"memory": "2Gi"}}});
        let out = apply(&db(spec), ctx(None));
        assert_eq!(
            out["spec"]["resources"],
            json!({"requests": {"cpu": "1", "memory": "256Mi"}, "limits": {"memory": "2Gi"}})
        );
    }

    #[test]
    fn a_limit_below_the_default_becomes_the_request() {
        let spec = json!({"resources": {"limits": {"cpu": "50m", "memory": "128Mi"}}});
        let out = apply(&db(spec), ctx(None));
        assert_eq!(
            out["spec"]["resources"]["requests"],
            json!({"cpu": "50m", "memory": "128Mi"})
        );
        let spec = json!({"resources": {"limits": {"cpu": "4", "memory": "8Gi"}}});
        let out = apply(&db(spec), ctx(None));
        assert_eq!(
            out["spec"]["resources"]["requests"],
            json!({"cpu": "100m", "memory": "256Mi"})
        );
    }

    #[test]
    fn unknown_fields_survive_defaulting() {
        let obj = json!({
            "apiVersion": "example.com/v1", "kind": "Database",
            "metadata": {"name": "x", "annotations": {"a/b~c": "1"}},
            "spec": {"futureField": {"x": 1}, "resources": {"claims": [{"name": "gpu"}]}},
            "status": {"phase": "Running"}
        });
        let out = apply(&obj, ctx(None));
        assert_eq!(out["spec"]["futureField"], json!({"x": 1}));
        assert_eq!(out["spec"]["resources"]["claims"], json!([{"name": "gpu"}]));
        assert_eq!(out["metadata"], obj["metadata"]);
        assert_eq!(out["status"], obj["status"]);
    }

    #[test]
    fn non_object_spec_or_resources_is_left_for_validation() {
        assert_eq!(patch_json(&db(json!("oops")), ctx(None)), json!([]));
        assert_eq!(patch_json(&json!([1, 2]), ctx(None)), json!([]));
        let out = apply(&db(json!({"resources": "big"})), ctx(None));
        assert_eq!(out["spec"]["resources"], "big");
        let out = apply(&db(json!({"resources": {"requests": 7}})), ctx(None));
        assert_eq!(out["spec"]["resources"]["requests"], 7);
    }

    #[test]
    fn on_update_absent_fields_take_the_stored_values_not_the_defaults() {
        let old = db(
            json!({"engine": "mysql", "version": "8.0.44", "replicas": 3, "storageSize": "50Gi", "storageClassName": "fast",
            "resources": {"requests": {"cpu": "2", "memory": "4Gi"}}}),
        );
        let new = db(json!({"config": {"max_connections": "100"}}));
        let mut out = new.clone();
        let p = default_patch_on_update(&new, &old, &Catalog::builtin(), &ctx(Some(true)));
        assert!(p.0.iter().all(|op| matches!(op, PatchOperation::Add(_))));
        json_patch::patch(&mut out, &p).unwrap();
        assert_eq!(out["spec"]["engine"], "mysql");
        assert_eq!(out["spec"]["version"], "8.0.44"); // not the catalog default 8.4.7
        assert_eq!(out["spec"]["replicas"], 3);
        assert_eq!(out["spec"]["storageSize"], "50Gi"); // not 10Gi, which would be a shrink
        assert_eq!(out["spec"]["storageClassName"], "fast");
        assert_eq!(
            out["spec"]["resources"]["requests"],
            json!({"cpu": "2", "memory": "4Gi"})
        );
        assert_eq!(out["spec"]["config"], json!({"max_connections": "100"}));
        assert!(
            default_patch_on_update(&out, &old, &Catalog::builtin(), &ctx(Some(true)))
                .0
                .is_empty()
        );
    }

    #[test]
    fn on_update_user_values_still_win_and_engine_change_gets_its_own_default_version() {
        let old = db(json!({"engine": "postgres", "version": "16.4.0", "replicas": 3}));
        let new = db(
            json!({"engine": "mysql", "replicas": 5, "resources": {"limits": {"memory": "128Mi"}}}),
        );
        let mut out = new.clone();
        json_patch::patch(
            &mut out,
            &default_patch_on_update(&new, &old, &Catalog::builtin(), &ctx(None)),
        )
        .unwrap();
        assert_eq!(out["spec"]["version"], "8.4.7");
        assert_eq!(out["spec"]["replicas"], 5);
        assert_eq!(out["spec"]["resources"]["requests"]["memory"], "128Mi");
    }

    #[test]
    fn every_operation_is_an_add() {
        let p = default_patch(&db(json!({})), &Catalog::builtin(), &ctx(Some(true)));
        assert!(p.0.iter().all(|op| matches!(op, PatchOperation::Add(_))));
    }

    fn arb_json_leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            "[a-z0-9~/.]{0,6}".prop_map(Value::from),
        ]
    }

    fn arb_maybe<T: Strategy<Value = Value> + 'static>(
        s: T,
    ) -> impl Strategy<Value = Option<Value>> {
        prop::option::of(prop_oneof![s.boxed(), arb_json_leaf().boxed()])
    }

    fn arb_quantity_map() -> impl Strategy<Value = Value> {
        prop::collection::btree_map(
            prop_oneof![
                Just("cpu".to_string()),
                Just("memory".to_string()),
                "[a-z~/]{1,5}"
            ],
            prop_oneof![
                Just(json!("50m")),
                Just(json!("4Gi")),
                Just(json!("64Mi")),
                arb_json_leaf()
            ],
            0..3,
        )
        .prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    fn arb_object() -> impl Strategy<Value = Value> {
        let resources = (
            arb_maybe(arb_quantity_map()),
            arb_maybe(arb_quantity_map()),
            arb_maybe(arb_json_leaf()),
        )
            .prop_map(|(req, lim, extra)| {
                let mut m = Map::new();
                if let Some(v) = req {
                    m.insert("requests".into(), v);
                }
                if let Some(v) = lim {
                    m.insert("limits".into(), v);
                }
                if let Some(v) = extra {
                    m.insert("x~y/z".into(), v);
                }
                Value::Object(m)
            });
        let spec = (
            arb_maybe(prop_oneof![
                Just(json!("postgres")),
                Just(json!("mysql")),
                Just(json!("db2"))
            ]),
            arb_maybe(Just(json!("16.4.0"))),
            arb_maybe((0i32..12).prop_map(Value::from)),
            arb_maybe(Just(json!("20Gi"))),
            arb_maybe(resources),
            arb_maybe(arb_json_leaf()),
        )
            .prop_map(|(engine, version, replicas, storage, resources, unknown)| {
                let mut m = Map::new();
                for (k, v) in [
                    ("engine", engine),
                    ("version", version),
                    ("replicas", replicas),
                    ("storageSize", storage),
                    ("resources", resources),
                    ("unknown/~field", unknown),
                ] {
                    if let Some(v) = v {
                        m.insert(k.into(), v);
                    }
                }
                Value::Object(m)
            });
        (arb_maybe(spec), any::<bool>()).prop_map(|(spec, status)| {
            let mut obj = json!({"apiVersion": "example.com/v1", "kind": "Database", "metadata": {"name": "p"}});
            if let Some(s) = spec { obj["spec"] = s; }
            if status { obj["status"] = json!({"phase": "Running"}); }
            obj
        })
    }

    /// Every (path, value) of `v` that is not null, as JSON pointers.
    fn leaves(v: &Value, prefix: String, out: &mut Vec<(String, Value)>) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    let tok = k.replace('~', "~0").replace('/', "~1");
                    leaves(child, format!("{prefix}/{tok}"), out);
                }
            }
            Value::Null => {}
            other => out.push((prefix, other.clone())),
        }
    }

    proptest! {
        #[test]
        fn defaulting_is_idempotent_and_never_removes_or_changes_values(
            obj in arb_object(),
            old in prop::option::of(arb_object()),
            production in prop::option::of(any::<bool>()),
        ) {
            let c = ctx(production);
            let catalog = Catalog::builtin();
            let run = |o: &Value| match &old {
                None => default_patch(o, &catalog, &c),
                Some(old) => default_patch_on_update(o, old, &catalog, &c),
            };
            let patch = run(&obj);
            prop_assert!(patch.0.iter().all(|op| matches!(op, PatchOperation::Add(_))));
            // deterministic
            prop_assert_eq!(&patch, &run(&obj));
            let mut out = obj.clone();
            json_patch::patch(&mut out, &patch).unwrap();
            // idempotent
            prop_assert!(run(&out).0.is_empty(), "second patch not empty for {}", out);
            // every non-null leaf of the input is unchanged in the output
            let mut before = Vec::new();
            leaves(&obj, String::new(), &mut before);
            for (ptr, value) in before {
                prop_assert_eq!(out.pointer(&ptr), Some(&value), "{} changed", ptr);
            }
        }
    }
}
