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

use std::borrow::Cow;

use base64::Engine as _;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation as AdmissionOperation};
use kube::core::response::{StatusCause, StatusDetails};
use kube::core::{Status, TypeMeta};
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
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

/// The typed request without its objects: `object`/`oldObject` deserialize as [`Skipped`], so
/// the envelope costs no allocation per byte of the objects.
type Request = AdmissionRequest<Skipped>;

/// A review's `object` slot consumed without building anything (the raw JSON is kept in
/// [`Parsed`] instead). Implements `Resource` only because `AdmissionRequest` requires it.
#[derive(Clone, Debug, Default)]
pub struct Skipped {
    meta: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
}

impl<'de> Deserialize<'de> for Skipped {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(deserializer)?;
        Ok(Skipped::default())
    }
}

impl Serialize for Skipped {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_unit()
    }
}

impl kube::Resource for Skipped {
    type DynamicType = ();
    type Scope = kube::core::NamespaceResourceScope;
    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(KIND)
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(GROUP)
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(RESOURCE)
    }
    fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &self.meta
    }
    fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &mut self.meta
    }
}

/// A request split into its typed envelope and the raw objects, which borrow from the body:
/// nothing of the objects is copied or turned into a `serde_json::Value` tree here.
struct Parsed<'a> {
    request: Request,
    object: Option<&'a RawValue>,
    old_object: Option<&'a RawValue>,
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

/// The top level of an AdmissionReview, every member kept raw.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default, rename = "apiVersion")]
    api_version: Option<&'a RawValue>,
    #[serde(borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    request: Option<&'a RawValue>,
}

/// The objects of `request`, kept raw; every other member is skipped.
#[derive(Deserialize)]
struct Objects<'a> {
    #[serde(borrow, default)]
    object: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "oldObject")]
    old_object: Option<&'a RawValue>,
}

fn is_json_object(raw: &RawValue) -> bool {
    raw.get().trim_start().starts_with('{')
}

/// A JSON string member as a `String`; anything else (or absent) is empty, as before.
fn raw_str(raw: Option<&RawValue>) -> String {
    raw.and_then(|r| serde_json::from_str::<String>(r.get()).ok())
        .unwrap_or_default()
}

fn parse(body: &[u8]) -> Result<Parsed<'_>, BadReview> {
    // One pass validates the whole body as JSON without building anything.
    let whole: &RawValue = serde_json::from_slice(body).map_err(BadReview::NotJson)?;
    if !is_json_object(whole) {
        return Err(BadReview::NotAnObject);
    }
    let envelope: Envelope<'_> = serde_json::from_str(whole.get())
        .map_err(|e| BadReview::MalformedRequest(e.to_string()))?;
    let (api_version, kind) = (raw_str(envelope.api_version), raw_str(envelope.kind));
    if api_version != REVIEW_API_VERSION || kind != REVIEW_KIND {
        return Err(BadReview::WrongEnvelope { api_version, kind });
    }
    let request = match envelope.request {
        None => return Err(BadReview::MissingRequest),
        Some(r) if r.get().trim() == "null" => return Err(BadReview::MissingRequest),
        Some(r) => r,
    };
    if !is_json_object(request) {
        return Err(BadReview::MalformedRequest(
            "request must be a JSON object".to_owned(),
        ));
    }
    let objects: Objects<'_> = serde_json::from_str(request.get())
        .map_err(|e| BadReview::MalformedRequest(e.to_string()))?;
    for (key, raw) in [
        ("object", objects.object),
        ("oldObject", objects.old_object),
    ] {
        if raw.is_some_and(|r| !is_json_object(r)) {
            return Err(BadReview::MalformedRequest(format!(
                "request.{key} must be a JSON object"
            )));
        }
    }
    let mut request: Request = serde_json::from_str(request.get())
        .map_err(|e| BadReview::MalformedRequest(e.to_string()))?;
    request.types = TypeMeta {
        api_version: REVIEW_API_VERSION.to_owned(),
        kind: REVIEW_KIND.to_owned(),
    };
    Ok(Parsed {
        request,
        object: objects.object,
        old_object: objects.old_object,
    })
}

/// The member at `path` of a raw JSON object, found by skipping everything else (no tree is
/// built). `None` when absent or when something on the way is not an object.
fn lookup<'a>(raw: &'a RawValue, path: &[&str]) -> Option<&'a RawValue> {
    let mut node = raw;
    for key in path {
        let mut de = serde_json::Deserializer::from_str(node.get());
        node = FindMember(key).deserialize(&mut de).ok().flatten()?;
    }
    Some(node)
}

/// Seeks one member of a JSON object (first occurrence wins).
struct FindMember<'k>(&'k str);

/// Whether a map key equals the wanted name (escaped keys are compared unescaped).
struct KeyIs<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string key")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}

impl<'de> DeserializeSeed<'de> for FindMember<'_> {
    type Value = Option<&'de RawValue>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FindMember<'_> {
    type Value = Option<&'de RawValue>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(matches) = map.next_key_seed(KeyIs(self.0))? {
            if matches && found.is_none() {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
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

fn object_name(parsed: &Parsed<'_>) -> String {
    if !parsed.request.name.is_empty() {
        return parsed.request.name.clone();
    }
    raw_str(
        parsed
            .object
            .or(parsed.old_object)
            .and_then(|o| lookup(o, &["metadata", "name"])),
    )
}

fn deny(req: &Request, code: u16, reason: &str, message: &str) -> AdmissionResponse {
    let mut response = AdmissionResponse::from(req);
    response.allowed = false;
    response.result = Status::failure(message, reason).with_code(code);
    response
}

fn bad_request(req: &Request, message: &str) -> AdmissionResponse {
    deny(req, 400, "BadRequest", message)
}

/// The checks shared by both webhooks before any rule runs. `Some` is the final answer.
fn preflight(parsed: &Parsed<'_>) -> Option<AdmissionResponse> {
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

fn api_version_of(object: &RawValue) -> String {
    raw_str(lookup(object, &["apiVersion"]))
}

/// Reads a raw object of any served version as the v1 hub type: a v1 object is deserialized
/// straight from its text; other versions go through one `Value` for the conversion.
fn hub_database(object: &RawValue, which: &str) -> Result<Database, String> {
    let invalid =
        |e: serde_json::Error| format!("{which} is not a valid {HUB_API_VERSION} Database: {e}");
    if api_version_of(object) == HUB_API_VERSION {
        return serde_json::from_str(object.get()).map_err(invalid);
    }
    let value: Value = serde_json::from_str(object.get()).map_err(invalid)?;
    let hub = api::conversion::convert(value, HUB_API_VERSION)
        .map_err(|e| format!("{which} cannot be converted to {HUB_API_VERSION}: {e}"))?;
    serde_json::from_value(hub).map_err(invalid)
}

fn decide_validate(parsed: &Parsed<'_>, catalog: &Catalog) -> AdmissionResponse {
    if let Some(answer) = preflight(parsed) {
        return answer;
    }
    let req = &parsed.request;
    let (Some(object), old_object) = (parsed.object, parsed.old_object) else {
        return bad_request(req, "review carries no request.object");
    };
    let new = match hub_database(object, "object") {
        Ok(db) => db,
        Err(message) => return deny(req, 422, "Invalid", &message),
    };
    let old = match old_object.map(|o| hub_database(o, "oldObject")) {
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
    parsed: &Parsed<'_>,
    catalog: &Catalog,
    namespaces: &NamespaceCache,
) -> (AdmissionResponse, Option<json_patch::Patch>) {
    if let Some(answer) = preflight(parsed) {
        return (answer, None);
    }
    let req = &parsed.request;
    let Some(object) = parsed.object else {
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
    // Defaulting patches the raw JSON the API server sent (unknown fields included), so it
    // needs the object as a `Value`: one tree, built here from the borrowed text.
    // The error is the finished answer, returned once per request: its size does not matter.
    #[allow(clippy::result_large_err)]
    let tree = |raw: &RawValue, which: &str| {
        serde_json::from_str::<Value>(raw.get()).map_err(|e| {
            deny(
                req,
                422,
                "Invalid",
                &format!("{which} is not usable JSON: {e}"),
            )
        })
    };
    let object = match tree(object, "object") {
        Ok(v) => v,
        Err(answer) => return (answer, None),
    };
    let ctx = DefaultingContext {
        production_namespace: namespaces.production_namespace(req.namespace.as_deref()),
    };
    // On UPDATE an absent field keeps its stored value, never the CREATE default.
    let patch = match (
        req.operation == AdmissionOperation::Update,
        parsed.old_object,
    ) {
        (true, Some(old)) => match tree(old, "oldObject") {
            Ok(old) => default_patch_on_update(&object, &old, catalog, &ctx),
            Err(answer) => return (answer, None),
        },
        _ => default_patch(&object, catalog, &ctx),
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
