//! AdmissionReview handling for `/validate` and `/mutate`: decode, decide, encode.
//!
//! Decoding keeps the request's `object` and `oldObject` as raw JSON: defaulting must patch
//! exactly what the API server sent (unknown fields included), and validation deserializes the
//! same JSON into `api::v1::Database`.
//!
//! What is answered how (the documented contract of this server):
//! - HTTP 400 ([`BadReview`]): the body is not an `admission.k8s.io/v1` `AdmissionReview`
//!   (not JSON, other apiVersion/kind, no `request`, request fields of the wrong type, object
//!   not a JSON object). There is no trustworthy `uid` to answer to, so no review is returned.
//! - HTTP 200, `allowed: false`, code 400 `BadRequest`: a well-formed review this webhook must
//!   not decide on: another kind or resource than `example.com` `databases`, a CREATE/UPDATE
//!   without `object` (or UPDATE without `oldObject`), or a `/mutate` for a version other than
//!   `v1` (defaults are defined for the hub version; register the webhook for `v1` with
//!   `matchPolicy: Equivalent`).
//! - HTTP 200, `allowed: false`, code 422 `Invalid`: a Database that breaks a rule, or an object
//!   that does not decode as a Database (e.g. `replicas: "three"`). The message lists every
//!   violation; `details.causes` carries one entry per field.
//! - HTTP 200, `allowed: true`, untouched: DELETE and CONNECT, and subresources (status).

use base64::Engine as _;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation as AdmissionOperation};
use kube::core::response::{StatusCause, StatusDetails};
use kube::core::{DynamicObject, Status, TypeMeta};
use serde_json::Value;

use api::catalog::Catalog;
use api::defaulting::{default_patch, default_patch_on_update, DefaultingContext};
use api::v1::Database;

use crate::namespaces::NamespaceCache;

/// `apiVersion` of the reviews we accept and answer.
pub const REVIEW_API_VERSION: &str = "admission.k8s.io/v1";
/// `kind` of the reviews we accept and answer.
pub const REVIEW_KIND: &str = "AdmissionReview";
/// The API group, kind and resource this webhook decides on.
pub const GROUP: &str = "example.com";
pub const KIND: &str = "Database";
pub const RESOURCE: &str = "databases";
/// The hub version; defaulting and validation are defined on it.
pub const HUB_API_VERSION: &str = "example.com/v1";

/// Which webhook is asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Webhook {
    Validate,
    Mutate,
}

/// The body could not be read as an AdmissionReview; answered with HTTP 400 and this message.
#[derive(Debug, thiserror::Error)]
pub enum BadReview {
    #[error("request body is not valid JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("request body must be a JSON object (an AdmissionReview)")]
    NotAnObject,
    #[error("expected apiVersion {REVIEW_API_VERSION:?} and kind {REVIEW_KIND:?}, got apiVersion {api_version:?} and kind {kind:?}")]
    WrongEnvelope { api_version: String, kind: String },
    #[error("AdmissionReview has no request")]
    MissingRequest,
    #[error("AdmissionReview request is malformed: {0}")]
    MalformedRequest(String),
}

/// A decided review, ready to send, with the facts the decision log line and metrics need.
#[derive(Debug)]
pub struct Decided {
    /// Encoded `AdmissionReview` response.
    pub body: Vec<u8>,
    pub allowed: bool,
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub operation: &'static str,
    /// Number of JSON-patch operations returned (mutate only).
    pub patch_ops: usize,
    pub warnings: usize,
}

/// A request split into its typed envelope and the raw objects.
struct Parsed {
    request: AdmissionRequest<DynamicObject>,
    object: Option<Value>,
    old_object: Option<Value>,
}

/// Decodes `body`, decides with the `api` rules, and encodes the response review.
pub fn review(
    webhook: Webhook,
    body: &[u8],
    catalog: &Catalog,
    namespaces: &NamespaceCache,
) -> Result<Decided, BadReview> {
    let parsed = parse(body)?;
    let (response, patch) = match webhook {
        Webhook::Validate => (decide_validate(&parsed, catalog), None),
        Webhook::Mutate => decide_mutate(&parsed, catalog, namespaces),
    };
    let req = &parsed.request;
    let allowed = response.allowed;
    let warnings = response.warnings.as_ref().map_or(0, Vec::len);
    let patch_ops = patch.as_ref().map_or(0, |p| p.0.len());
    let body = encode(response, patch.as_ref())
        .map_err(|e| BadReview::MalformedRequest(format!("response not encodable: {e}")))?;
    Ok(Decided {
        body,
        allowed,
        uid: req.uid.clone(),
        namespace: req.namespace.clone().unwrap_or_default(),
        name: object_name(&parsed),
        operation: operation_name(&req.operation),
        patch_ops,
        warnings,
    })
}

fn parse(body: &[u8]) -> Result<Parsed, BadReview> {
    let mut review: Value = serde_json::from_slice(body).map_err(BadReview::NotJson)?;
    let envelope = review.as_object_mut().ok_or(BadReview::NotAnObject)?;
    let field = |name: &str| {
        envelope
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    if api_version != REVIEW_API_VERSION || kind != REVIEW_KIND {
        return Err(BadReview::WrongEnvelope { api_version, kind });
    }
    let mut request = match envelope.remove("request") {
        None | Some(Value::Null) => return Err(BadReview::MissingRequest),
        Some(r) => r,
    };
    let fields = request
        .as_object_mut()
        .ok_or_else(|| BadReview::MalformedRequest("request must be a JSON object".to_owned()))?;
    let object = take_object(fields, "object")?;
    let old_object = take_object(fields, "oldObject")?;
    let mut request: AdmissionRequest<DynamicObject> =
        serde_json::from_value(request).map_err(|e| BadReview::MalformedRequest(e.to_string()))?;
    request.types = TypeMeta {
        api_version: REVIEW_API_VERSION.to_owned(),
        kind: REVIEW_KIND.to_owned(),
    };
    Ok(Parsed {
        request,
        object,
        old_object,
    })
}

/// Removes `request.<key>`; null and absent are `None`, anything but an object is an error.
fn take_object(
    fields: &mut serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<Value>, BadReview> {
    match fields.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v)),
        Some(_) => Err(BadReview::MalformedRequest(format!(
            "request.{key} must be a JSON object"
        ))),
    }
}

fn operation_name(op: &AdmissionOperation) -> &'static str {
    match op {
        AdmissionOperation::Create => "CREATE",
        AdmissionOperation::Update => "UPDATE",
        AdmissionOperation::Delete => "DELETE",
        AdmissionOperation::Connect => "CONNECT",
    }
}

fn object_name(parsed: &Parsed) -> String {
    if !parsed.request.name.is_empty() {
        return parsed.request.name.clone();
    }
    parsed
        .object
        .as_ref()
        .or(parsed.old_object.as_ref())
        .and_then(|o| o.pointer("/metadata/name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn deny(
    req: &AdmissionRequest<DynamicObject>,
    code: u16,
    reason: &str,
    message: &str,
) -> AdmissionResponse {
    let mut response = AdmissionResponse::from(req);
    response.allowed = false;
    response.result = Status::failure(message, reason).with_code(code);
    response
}

fn bad_request(req: &AdmissionRequest<DynamicObject>, message: &str) -> AdmissionResponse {
    deny(req, 400, "BadRequest", message)
}

/// The checks shared by both webhooks before any rule runs. `Some` is the final answer.
fn preflight(parsed: &Parsed) -> Option<AdmissionResponse> {
    let req = &parsed.request;
    if req.kind.group != GROUP || req.kind.kind != KIND || req.resource.resource != RESOURCE {
        let group = if req.kind.group.is_empty() {
            "core"
        } else {
            req.kind.group.as_str()
        };
        return Some(bad_request(
            req,
            &format!(
                "this webhook only admits {GROUP} {KIND} objects (resource {RESOURCE}); got kind {group}/{}/{} resource {}: check the webhook configuration rules",
                req.kind.version, req.kind.kind, req.resource.resource
            ),
        ));
    }
    if req.sub_resource.as_deref().is_some_and(|s| !s.is_empty()) {
        return Some(AdmissionResponse::from(req));
    }
    match req.operation {
        AdmissionOperation::Create | AdmissionOperation::Update => {}
        AdmissionOperation::Delete | AdmissionOperation::Connect => {
            return Some(AdmissionResponse::from(req))
        }
    }
    let op = operation_name(&req.operation);
    if parsed.object.is_none() {
        return Some(bad_request(
            req,
            &format!("{op} review carries no request.object"),
        ));
    }
    if req.operation == AdmissionOperation::Update && parsed.old_object.is_none() {
        return Some(bad_request(
            req,
            "UPDATE review carries no request.oldObject",
        ));
    }
    None
}

fn api_version_of(object: &Value) -> &str {
    object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Reads a raw object of any served version as the v1 hub type.
fn hub_database(object: &Value, which: &str) -> Result<Database, String> {
    let api_version = api_version_of(object);
    let hub = if api_version == HUB_API_VERSION {
        object.clone()
    } else {
        api::conversion::convert(object.clone(), HUB_API_VERSION)
            .map_err(|e| format!("{which} cannot be converted to {HUB_API_VERSION}: {e}"))?
    };
    serde_json::from_value(hub)
        .map_err(|e| format!("{which} is not a valid {HUB_API_VERSION} Database: {e}"))
}

fn decide_validate(parsed: &Parsed, catalog: &Catalog) -> AdmissionResponse {
    if let Some(answer) = preflight(parsed) {
        return answer;
    }
    let req = &parsed.request;
    let (Some(object), old_object) = (&parsed.object, &parsed.old_object) else {
        return bad_request(req, "review carries no request.object");
    };
    let new = match hub_database(object, "object") {
        Ok(db) => db,
        Err(message) => return deny(req, 422, "Invalid", &message),
    };
    let old = match old_object.as_ref().map(|o| hub_database(o, "oldObject")) {
        None => None,
        Some(Ok(db)) => Some(db),
        Some(Err(message)) => return deny(req, 422, "Invalid", &message),
    };
    let verdict = api::validation::validate(&new, old.as_ref(), catalog);
    let mut response = if verdict.allowed() {
        AdmissionResponse::from(req)
    } else {
        let mut denied = deny(req, 422, "Invalid", &verdict.denial_message());
        denied.result.details = Some(StatusDetails {
            name: object_name(parsed),
            group: GROUP.to_owned(),
            kind: KIND.to_owned(),
            uid: String::new(),
            causes: verdict
                .errors
                .iter()
                // kubectl prints causes as "<field>: <message>", so the message must not
                // repeat the path.
                .map(|e| StatusCause {
                    reason: "FieldValueInvalid".to_owned(),
                    message: e.message.clone(),
                    field: e.path.clone(),
                })
                .collect(),
            retry_after_seconds: 0,
        });
        denied
    };
    if !verdict.warnings.is_empty() {
        response.warnings = Some(verdict.warnings);
    }
    response
}

fn decide_mutate(
    parsed: &Parsed,
    catalog: &Catalog,
    namespaces: &NamespaceCache,
) -> (AdmissionResponse, Option<json_patch::Patch>) {
    if let Some(answer) = preflight(parsed) {
        return (answer, None);
    }
    let req = &parsed.request;
    let Some(object) = &parsed.object else {
        return (bad_request(req, "review carries no request.object"), None);
    };
    let api_version = api_version_of(object);
    if api_version != HUB_API_VERSION {
        return (
            bad_request(
                req,
                &format!(
                    "defaults are defined for {HUB_API_VERSION} objects, got apiVersion {api_version:?}: register the mutating webhook for version v1 with matchPolicy: Equivalent"
                ),
            ),
            None,
        );
    }
    let ctx = DefaultingContext {
        production_namespace: namespaces.production_namespace(req.namespace.as_deref()),
    };
    // On UPDATE an absent field keeps its stored value; only fields absent there too get the
    // CREATE default (a replace must never upgrade, scale down or shrink behind the user's back).
    let patch = match (&req.operation, &parsed.old_object) {
        (AdmissionOperation::Update, Some(old)) => {
            default_patch_on_update(object, old, catalog, &ctx)
        }
        _ => default_patch(object, catalog, &ctx),
    };
    let response = AdmissionResponse::from(req);
    if patch.0.is_empty() {
        (response, None)
    } else {
        (response, Some(patch))
    }
}

/// Serializes the response review. The patch is written as base64 (the wire form of Go's
/// `[]byte`, as the API server documents it) with `patchType: JSONPatch`.
fn encode(
    response: AdmissionResponse,
    patch: Option<&json_patch::Patch>,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut review = serde_json::to_value(response.into_review())?;
    if let Some(patch) = patch {
        let encoded = base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(patch)?);
        if let Some(r) = review.get_mut("response").and_then(Value::as_object_mut) {
            r.insert("patchType".to_owned(), Value::from("JSONPatch"));
            r.insert("patch".to_owned(), Value::from(encoded));
        }
    }
    serde_json::to_vec(&review)
}

/// Wraps objects in a v1 AdmissionReview request as the API server would send it (for `check`,
/// tests and the benchmark).
pub fn request_for(
    uid: &str,
    operation: &str,
    namespace: &str,
    object: Option<&Value>,
    old_object: Option<&Value>,
) -> Value {
    let name = object
        .or(old_object)
        .and_then(|o| o.pointer("/metadata/name"))
        .cloned()
        .unwrap_or(Value::from(""));
    serde_json::json!({
        "apiVersion": REVIEW_API_VERSION,
        "kind": REVIEW_KIND,
        "request": {
            "uid": uid,
            "kind": {"group": GROUP, "version": "v1", "kind": KIND},
            "resource": {"group": GROUP, "version": "v1", "resource": RESOURCE},
            "requestKind": {"group": GROUP, "version": "v1", "kind": KIND},
            "requestResource": {"group": GROUP, "version": "v1", "resource": RESOURCE},
            "name": name,
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
            "object": object,
            "oldObject": old_object,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": if operation == "UPDATE" { "UpdateOptions" } else { "CreateOptions" }},
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-z0-9.:/@* -]{0,12}".prop_map(Value::from),
            prop::sample::select(vec![
                "postgres",
                "mysql",
                "17.7.0",
                "8.4.7",
                "10Gi",
                "512Mi",
                "-1",
                "@daily",
                "0 2 * * *",
                "1e3",
                "100m",
            ])
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(
                    prop::sample::select(vec![
                        "spec",
                        "engine",
                        "version",
                        "replicas",
                        "storageSize",
                        "resources",
                        "requests",
                        "limits",
                        "cpu",
                        "memory",
                        "config",
                        "backupSchedule",
                        "storageClassName",
                        "metadata",
                        "name",
                        "apiVersion",
                        "kind",
                    ])
                    .prop_map(str::to_owned),
                    inner,
                    0..6,
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn database_like() -> impl Strategy<Value = Value> {
        (arbitrary_json(), prop::sample::select(vec!["example.com/v1", "example.com/v1beta1", "example.com/v1alpha1", "x/v9"]))
            .prop_map(|(spec, api_version)| {
                json!({"apiVersion": api_version, "kind": "Database", "metadata": {"name": "db", "namespace": "ns"}, "spec": spec})
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever the object holds, both webhooks answer with a review for the same uid.
        #[test]
        fn any_object_gets_an_answer_for_its_uid(
            object in prop_oneof![database_like(), arbitrary_json()],
            old in prop::option::of(database_like()),
            operation in prop::sample::select(vec!["CREATE", "UPDATE", "DELETE", "CONNECT"]),
        ) {
            let body = serde_json::to_vec(&request_for("u-1", operation, "ns", Some(&object), old.as_ref())).unwrap();
            for webhook in [Webhook::Validate, Webhook::Mutate] {
                match review(webhook, &body, &Catalog::builtin(), &NamespaceCache::Disabled) {
                    Ok(decided) => {
                        let answer: Value = serde_json::from_slice(&decided.body).unwrap();
                        prop_assert_eq!(&answer["response"]["uid"], "u-1");
                        prop_assert_eq!(answer["response"]["allowed"].as_bool(), Some(decided.allowed));
                    }
                    // Only a non-object `object` may be refused as malformed.
                    Err(BadReview::MalformedRequest(m)) => prop_assert!(!object.is_object(), "{m}"),
                    Err(other) => prop_assert!(false, "unexpected {other}"),
                }
            }
        }

        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn arbitrary_bodies_are_answered_or_refused(body in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = review(Webhook::Validate, &body, &Catalog::builtin(), &NamespaceCache::Disabled);
        }
    }

    #[test]
    fn patch_is_sent_as_base64_json_patch() {
        let object = json!({"apiVersion": "example.com/v1", "kind": "Database", "metadata": {"name": "db"}, "spec": {}});
        let body =
            serde_json::to_vec(&request_for("u", "CREATE", "ns", Some(&object), None)).unwrap();
        let decided = review(
            Webhook::Mutate,
            &body,
            &Catalog::builtin(),
            &NamespaceCache::Disabled,
        )
        .unwrap();
        let answer: Value = serde_json::from_slice(&decided.body).unwrap();
        assert_eq!(answer["response"]["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(answer["response"]["patch"].as_str().unwrap())
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(patch.0.len(), decided.patch_ops);
        assert!(decided.patch_ops > 0);
    }
}
