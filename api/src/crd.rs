//! The Database CustomResourceDefinition, generated from the Rust types and then tightened with
//! what the API server can check on its own (so the rules hold even if the webhook is bypassed):
//!
//! - OpenAPI bounds and patterns: `replicas` 1..10, `version` `x.y.z`, `storageSize` a quantity
//!   string, `engine` enum, `config` at most 20 entries, string length limits (which also keep
//!   the CEL cost estimate low);
//! - CEL transition rules (`x-kubernetes-validations`): storage never shrinks (`quantity()`),
//!   the version never goes down (`semver()`, Kubernetes >= 1.33), the engine never changes, and
//!   `metadata.name` fits every child name;
//! - `status.conditions` as a map list keyed by `type` for server-side apply.
//!
//! Two manifests are generated and checked in (a test fails when either is stale):
//!
//! - `deploy/crd/database.yaml` ([`crd`]): v1 only, no conversion webhook needed;
//!   `cargo run -p api --bin crdgen > deploy/crd/database.yaml`
//! - `deploy/crd/database-with-conversion.yaml` ([`crd_with_conversion`]): v1 (storage) plus the
//!   deprecated v1beta1 and v1alpha1, converted by the admission server's `/convert` through the
//!   in-cluster webhook Service; `cargo run -p api --bin crdgen -- --with-conversion > ...`.
//!   `--conversion-url URL` points it at a local server instead (the caBundle is injected by the
//!   certs manager either way).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::{json, Value};

use crate::validation::{config::MAX_CONFIG_KEYS, MAX_NAME_LEN, REPLICAS_RANGE};

/// Kubernetes' quantity syntax as a regular expression (from `k8s.io/apimachinery` docs).
pub const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";
/// Strict `x.y.z` without leading zeros.
pub const VERSION_PATTERN: &str = r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$";

/// CEL (v1): storage never shrinks (guarded so that objects without the field, or with a value
/// the quantity library cannot read, never make the rule error out).
pub const CEL_STORAGE_NEVER_SHRINKS: &str = "!has(oldSelf.storageSize) || !isQuantity(oldSelf.storageSize) || (has(self.storageSize) && isQuantity(self.storageSize) && quantity(self.storageSize).compareTo(quantity(oldSelf.storageSize)) >= 0)";
/// CEL (v1): the version never goes down.
pub const CEL_VERSION_NEVER_DOWN: &str = "!has(oldSelf.version) || !isSemver(oldSelf.version) || (has(self.version) && isSemver(self.version) && semver(self.version).compareTo(semver(oldSelf.version)) >= 0)";
/// CEL (v1): the engine never changes once set.
pub const CEL_ENGINE_IMMUTABLE: &str =
    "!has(oldSelf.engine) || (has(self.engine) && self.engine == oldSelf.engine)";

fn cel_storage_never_shrinks(f: &str) -> String {
    format!("!has(oldSelf.{f}) || !isQuantity(oldSelf.{f}) || (has(self.{f}) && isQuantity(self.{f}) && quantity(self.{f}).compareTo(quantity(oldSelf.{f})) >= 0)")
}

fn cel_version_never_down(f: &str) -> String {
    format!("!has(oldSelf.{f}) || !isSemver(oldSelf.{f}) || (has(self.{f}) && isSemver(self.{f}) && semver(self.{f}).compareTo(semver(oldSelf.{f})) >= 0)")
}

fn cel_engine_immutable(f: &str) -> String {
    format!("!has(oldSelf.{f}) || (has(self.{f}) && self.{f} == oldSelf.{f})")
}

/// Where a served version keeps the fields the schema tightening talks about.
struct SpecFields {
    replicas: Option<&'static str>,
    version: &'static str,
    storage: &'static str,
    engine: Option<&'static str>,
}

const V1_FIELDS: SpecFields = SpecFields {
    replicas: Some("replicas"),
    version: "version",
    storage: "storageSize",
    engine: Some("engine"),
};
const V1ALPHA1_FIELDS: SpecFields = SpecFields {
    replicas: None, // `size` is a string in v1alpha1
    version: "dbVersion",
    storage: "storage",
    engine: None,
};

/// Where the API server reaches the conversion webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConversionEndpoint {
    /// An in-cluster Service.
    Service {
        /// Service namespace.
        namespace: String,
        /// Service name.
        name: String,
        /// Service port.
        port: i32,
        /// HTTP path.
        path: String,
    },
    /// A URL (local runs: `https://127.0.0.1:8443/convert`).
    Url(String),
}

impl Default for ConversionEndpoint {
    /// The webhook Service of `deploy/webhooks/`: `db-operator-webhook.db-operator-system:443/convert`.
    fn default() -> Self {
        ConversionEndpoint::Service {
            namespace: "db-operator-system".into(),
            name: "db-operator-webhook".into(),
            port: 443,
            path: "/convert".into(),
        }
    }
}

impl ConversionEndpoint {
    fn client_config(&self) -> Value {
        match self {
            ConversionEndpoint::Service {
                namespace,
                name,
                port,
                path,
            } => {
                json!({"service": {"namespace": namespace, "name": name, "port": port, "path": path}})
            }
            ConversionEndpoint::Url(url) => json!({"url": url}),
        }
    }
}

/// The Database CRD (v1 only, served and stored).
pub fn crd() -> CustomResourceDefinition {
    let generated = crate::v1::Database::crd();
    let mut value = match serde_json::to_value(&generated) {
        Ok(v) => v,
        Err(_) => return generated,
    };
    if let Some(version) = value.pointer_mut("/spec/versions/0") {
        tighten_version(version, &V1_FIELDS);
    }
    // The tightened schema has the same structure, so this only fails if the tightening is
    // broken, which the tests catch; fall back to the plain generated CRD rather than panic.
    serde_json::from_value(value).unwrap_or(generated)
}

/// The Database CRD serving v1 (storage), v1beta1 and v1alpha1 (both deprecated), converted by
/// the webhook at `endpoint` (`/convert` of the admission server). The `caBundle` is left out:
/// the certs manager injects it.
pub fn crd_with_conversion(endpoint: &ConversionEndpoint) -> CustomResourceDefinition {
    let hub = crd();
    let Ok(mut value) = serde_json::to_value(&hub) else {
        return hub;
    };
    let older = [
        (crate::v1beta1::Database::crd(), &V1_FIELDS, "v1beta1"),
        (
            crate::v1alpha1::Database::crd(),
            &V1ALPHA1_FIELDS,
            "v1alpha1",
        ),
    ];
    let mut extra = Vec::new();
    for (generated, fields, name) in older {
        let Ok(mut v) = serde_json::to_value(&generated) else {
            return hub;
        };
        let Some(version) = v.pointer_mut("/spec/versions/0") else {
            return hub;
        };
        tighten_version(version, fields);
        set(version, "storage", json!(false));
        set(version, "deprecated", json!(true));
        set(
            version,
            "deprecationWarning",
            json!(format!(
                "example.com/{name} Database is deprecated; use example.com/v1"
            )),
        );
        let columns = match name {
            "v1alpha1" => json!([
                {"name": "Size", "type": "string", "jsonPath": ".spec.size"},
                {"name": "Version", "type": "string", "jsonPath": ".spec.dbVersion"},
                {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
            ]),
            _ => value
                .pointer("/spec/versions/0/additionalPrinterColumns")
                .cloned()
                .unwrap_or_else(|| json!([])),
        };
        set(version, "additionalPrinterColumns", columns);
        extra.push(version.take());
    }
    if let Some(versions) = value
        .pointer_mut("/spec/versions")
        .and_then(Value::as_array_mut)
    {
        versions.extend(extra);
    }
    if let Some(spec) = value.get_mut("spec") {
        set(
            spec,
            "conversion",
            json!({
                "strategy": "Webhook",
                "webhook": {
                    "conversionReviewVersions": ["v1"],
                    "clientConfig": endpoint.client_config(),
                },
            }),
        );
    }
    serde_json::from_value(value).unwrap_or(hub)
}

const YAML_HEADER: &str = "# Generated by `cargo run -p api --bin crdgen`; do not edit.\n";

fn to_yaml(crd: &CustomResourceDefinition, command: &str) -> String {
    match serde_yaml::to_string(crd) {
        Ok(body) => format!("{YAML_HEADER}# Regenerate: {command}\n{body}"),
        Err(e) => format!("# failed to render the CRD: {e}\n"),
    }
}

/// The CRD as YAML, exactly as checked in under `deploy/crd/database.yaml`.
pub fn crd_yaml() -> String {
    to_yaml(
        &crd(),
        "cargo run -p api --bin crdgen > deploy/crd/database.yaml",
    )
}

/// [`crd_with_conversion`] as YAML; with the default endpoint this is the checked-in
/// `deploy/crd/database-with-conversion.yaml`.
pub fn crd_with_conversion_yaml(endpoint: &ConversionEndpoint) -> String {
    to_yaml(
        &crd_with_conversion(endpoint),
        "cargo run -p api --bin crdgen -- --with-conversion > deploy/crd/database-with-conversion.yaml",
    )
}

fn tighten_version(version: &mut Value, fields: &SpecFields) {
    let Some(root) = version.pointer_mut("/schema/openAPIV3Schema") else {
        return;
    };
    set(
        root,
        "x-kubernetes-validations",
        json!([{
            "rule": format!("!has(self.metadata.name) || self.metadata.name.size() <= {MAX_NAME_LEN}"),
            "message": format!("metadata.name may have at most {MAX_NAME_LEN} characters so that the backup CronJob <name>-backup fits the 52-character CronJob limit"),
            "reason": "FieldValueInvalid",
        }]),
    );
    if let Some(spec) = root.pointer_mut("/properties/spec") {
        tighten_spec(spec, fields);
    }
    if let Some(conditions) = root.pointer_mut("/properties/status/properties/conditions") {
        set(conditions, "x-kubernetes-list-type", json!("map"));
        set(conditions, "x-kubernetes-list-map-keys", json!(["type"]));
    }
}

fn tighten_spec(spec: &mut Value, fields: &SpecFields) {
    let mut rules = vec![
        json!({
            "rule": cel_storage_never_shrinks(fields.storage),
            "message": format!("{} cannot shrink; storage can only grow", fields.storage),
            "fieldPath": format!(".{}", fields.storage),
            "reason": "FieldValueForbidden",
        }),
        json!({
            "rule": cel_version_never_down(fields.version),
            "message": format!("{} cannot go down; an older engine cannot read data written by a newer one", fields.version),
            "fieldPath": format!(".{}", fields.version),
            "reason": "FieldValueForbidden",
        }),
    ];
    if let Some(engine) = fields.engine {
        rules.push(json!({
            "rule": cel_engine_immutable(engine),
            "message": format!("{engine} cannot change after creation"),
            "fieldPath": format!(".{engine}"),
            "reason": "FieldValueForbidden",
        }));
    }
    set(spec, "x-kubernetes-validations", Value::Array(rules));
    let Some(props) = spec.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    // Absent and null mean the same here; without `nullable` the API server prunes nulls, so CEL
    // `has()` and the webhook see one representation.
    for prop in props.values_mut() {
        if let Some(p) = prop.as_object_mut() {
            p.remove("nullable");
        }
    }
    if let Some(Value::Object(sched)) = spec_props_pointer(props, "/scheduling/properties") {
        for prop in sched.values_mut() {
            if let Some(p) = prop.as_object_mut() {
                p.remove("nullable");
            }
        }
    }
    if let Some(p) = fields.replicas.and_then(|f| props.get_mut(f)) {
        set(p, "minimum", json!(REPLICAS_RANGE.start()));
        set(p, "maximum", json!(REPLICAS_RANGE.end()));
    }
    if let Some(p) = props.get_mut(fields.version) {
        set(p, "pattern", json!(VERSION_PATTERN));
        set(p, "maxLength", json!(32));
    }
    if let Some(p) = props.get_mut(fields.storage).and_then(Value::as_object_mut) {
        // A string (not int-or-string) so CEL's quantity() applies; our types always write strings.
        p.remove("x-kubernetes-int-or-string");
        p.insert("type".into(), json!("string"));
        p.insert("pattern".into(), json!(QUANTITY_PATTERN));
        p.insert("maxLength".into(), json!(64));
    }
    if let Some(p) = props.get_mut("storageClassName") {
        set(p, "maxLength", json!(253));
    }
    if let Some(p) = props.get_mut("backupSchedule") {
        set(p, "maxLength", json!(256));
        set(p, "minLength", json!(1));
    }
    if let Some(p) = props.get_mut("config") {
        set(p, "maxProperties", json!(MAX_CONFIG_KEYS));
        if let Some(values) = p.get_mut("additionalProperties") {
            set(
                values,
                "maxLength",
                json!(crate::validation::config::MAX_VALUE_LEN),
            );
        }
    }
    // The upstream Quantity description is a page long; repeating it twice in our CRD helps nobody.
    for map in ["limits", "requests"] {
        let ptr = format!("/resources/properties/{map}/additionalProperties");
        if let Some(Value::Object(q)) = spec_props_pointer(props, &ptr) {
            q.insert(
                "description".into(),
                json!("A Kubernetes quantity such as 500m, 2, 256Mi or 4Gi."),
            );
        }
    }
}

fn spec_props_pointer<'a>(
    props: &'a mut serde_json::Map<String, Value>,
    ptr: &str,
) -> Option<&'a mut Value> {
    let mut parts = ptr.trim_start_matches('/').splitn(2, '/');
    let first = parts.next()?;
    let rest = parts.next().map(|r| format!("/{r}")).unwrap_or_default();
    props.get_mut(first)?.pointer_mut(&rest)
}

fn set(target: &mut Value, key: &str, value: Value) {
    if let Some(obj) = target.as_object_mut() {
        obj.insert(key.to_string(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Value {
        let crd = serde_json::to_value(crd()).unwrap();
        crd.pointer("/spec/versions/0/schema/openAPIV3Schema")
            .unwrap()
            .clone()
    }

    #[test]
    fn checked_in_crds_match_the_generated_ones() {
        let cases = [
            ("database.yaml", crd_yaml(), "cargo run -p api --bin crdgen > deploy/crd/database.yaml"),
            (
                "database-with-conversion.yaml",
                crd_with_conversion_yaml(&ConversionEndpoint::default()),
                "cargo run -p api --bin crdgen -- --with-conversion > deploy/crd/database-with-conversion.yaml",
            ),
        ];
        for (file, generated, command) in cases {
            let path = format!("{}/../deploy/crd/{file}", env!("CARGO_MANIFEST_DIR"));
            let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                checked_in == generated,
                "deploy/crd/{file} is stale or missing; regenerate it with\n    {command}"
            );
        }
    }

    #[test]
    fn v1_cel_rules_are_the_documented_ones() {
        assert_eq!(
            cel_storage_never_shrinks("storageSize"),
            CEL_STORAGE_NEVER_SHRINKS
        );
        assert_eq!(cel_version_never_down("version"), CEL_VERSION_NEVER_DOWN);
        assert_eq!(cel_engine_immutable("engine"), CEL_ENGINE_IMMUTABLE);
    }

    #[test]
    fn conversion_crd_serves_every_version_with_v1_as_storage() {
        let crd =
            serde_json::to_value(crd_with_conversion(&ConversionEndpoint::default())).unwrap();
        let versions = crd["spec"]["versions"].as_array().unwrap();
        let summary: Vec<(&str, bool, bool, bool)> = versions
            .iter()
            .map(|v| {
                (
                    v["name"].as_str().unwrap(),
                    v["served"].as_bool().unwrap(),
                    v["storage"].as_bool().unwrap(),
                    v["deprecated"].as_bool().unwrap_or(false),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("v1", true, true, false),
                ("v1beta1", true, false, true),
                ("v1alpha1", true, false, true)
            ]
        );
        assert_eq!(crd["spec"]["conversion"]["strategy"], "Webhook");
        assert_eq!(
            crd["spec"]["conversion"]["webhook"]["conversionReviewVersions"],
            json!(["v1"])
        );
        assert_eq!(
            crd["spec"]["conversion"]["webhook"]["clientConfig"]["service"],
            json!({"namespace": "db-operator-system", "name": "db-operator-webhook", "port": 443, "path": "/convert"})
        );
        let alpha_rules = versions[2]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["x-kubernetes-validations"]
            .to_string();
        assert!(
            alpha_rules.contains("quantity(self.storage)")
                && alpha_rules.contains("semver(self.dbVersion)")
        );
        let url = crd_with_conversion(&ConversionEndpoint::Url(
            "https://127.0.0.1:8443/convert".into(),
        ));
        let url = serde_json::to_value(url).unwrap();
        assert_eq!(
            url["spec"]["conversion"]["webhook"]["clientConfig"],
            json!({"url": "https://127.0.0.1:8443/convert"})
        );
    }

    #[test]
    fn crd_has_names_scope_subresource_and_printer_columns() {
        let crd = serde_json::to_value(crd()).unwrap();
        assert_eq!(crd["metadata"]["name"], "databases.example.com");
        assert_eq!(crd["spec"]["names"]["shortNames"], json!(["db"]));
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        let v = &crd["spec"]["versions"][0];
        assert_eq!(
            (
                v["name"].as_str(),
                v["served"].as_bool(),
                v["storage"].as_bool()
            ),
            (Some("v1"), Some(true), Some(true))
        );
        assert_eq!(v["subresources"]["status"], json!({}));
        let columns: Vec<&str> = v["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(columns, ["Replicas", "Ready", "Version", "Phase", "Age"]);
    }

    #[test]
    fn schema_carries_bounds_and_patterns() {
        let spec = &schema()["properties"]["spec"]["properties"];
        assert_eq!(spec["replicas"]["minimum"].as_f64(), Some(1.0));
        assert_eq!(spec["replicas"]["maximum"].as_f64(), Some(10.0));
        assert_eq!(spec["version"]["pattern"], VERSION_PATTERN);
        assert_eq!(spec["engine"]["enum"], json!(["postgres", "mysql"]));
        assert_eq!(spec["config"]["maxProperties"], 20);
        assert_eq!(spec["storageSize"]["type"], "string");
        assert_eq!(spec["storageSize"]["pattern"], QUANTITY_PATTERN);
        assert!(spec["storageSize"]
            .get("x-kubernetes-int-or-string")
            .is_none());
        assert!(spec
            .as_object()
            .unwrap()
            .values()
            .all(|p| p.get("nullable").is_none()));
    }

    #[test]
    fn schema_has_cel_backstops_for_storage_version_and_engine() {
        let rules: Vec<String> = schema()["properties"]["spec"]["x-kubernetes-validations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["rule"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            rules,
            [
                CEL_STORAGE_NEVER_SHRINKS,
                CEL_VERSION_NEVER_DOWN,
                CEL_ENGINE_IMMUTABLE
            ]
        );
        assert!(CEL_STORAGE_NEVER_SHRINKS
            .contains("quantity(self.storageSize).compareTo(quantity(oldSelf.storageSize)) >= 0"));
        assert!(CEL_VERSION_NEVER_DOWN
            .contains("semver(self.version).compareTo(semver(oldSelf.version)) >= 0"));
    }

    #[test]
    fn version_and_quantity_patterns_agree_with_the_rust_parsers() {
        // The CEL rules call quantity()/semver() only on values these patterns admitted.
        let version_re = |s: &str| {
            let parts: Vec<&str> = s.split('.').collect();
            parts.len() == 3
                && parts.iter().all(|p| {
                    !p.is_empty()
                        && p.bytes().all(|b| b.is_ascii_digit())
                        && (p.len() == 1 || !p.starts_with('0'))
                })
        };
        for s in [
            "17.7.0",
            "8.4.7",
            "0.0.0",
            "017.1.0",
            "17.7",
            "17.7.0-rc1",
            "v17.7.0",
        ] {
            assert_eq!(version_re(s), crate::catalog::parse_xyz(s).is_some(), "{s}");
        }
    }

    /// Structural schema: every node has a type (or int-or-string / preserve-unknown-fields), and
    /// no `nullable` sits next to a missing type.
    #[test]
    fn schema_is_structural() {
        fn walk(path: &str, node: &Value) {
            let obj = node.as_object().unwrap();
            let typed = obj.contains_key("type")
                || obj.get("x-kubernetes-int-or-string") == Some(&json!(true))
                || obj.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
            assert!(typed, "{path} has no type");
            for forbidden in ["anyOf", "oneOf", "allOf", "$ref", "definitions"] {
                assert!(!obj.contains_key(forbidden), "{path} uses {forbidden}");
            }
            if let Some(props) = obj.get("properties").and_then(Value::as_object) {
                for (k, v) in props {
                    walk(&format!("{path}.{k}"), v);
                }
            }
            for key in ["items", "additionalProperties"] {
                if let Some(v) = obj.get(key).filter(|v| v.is_object()) {
                    walk(&format!("{path}[{key}]"), v);
                }
            }
        }
        walk("openAPIV3Schema", &schema());
        let all =
            serde_json::to_value(crd_with_conversion(&ConversionEndpoint::default())).unwrap();
        for v in all["spec"]["versions"].as_array().unwrap() {
            walk(v["name"].as_str().unwrap(), &v["schema"]["openAPIV3Schema"]);
        }
    }
}
