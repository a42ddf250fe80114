//! Posts every fixture in `fixtures/{validate,mutate,convert}` to the real server over TLS, on
//! HTTP/1.1 and HTTP/2, and compares each response with the `<case>.expected.json` beside the
//! request. The format of expectations is described in `fixtures/README.md`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use admission::namespaces::NamespaceCache;
use admission::Limits;
use base64::Engine as _;
use common::*;
use http::StatusCode;
use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use serde_json::Value;

/// Namespaces known to the fixture server (see `fixtures/make_fixtures.py`).
const PRODUCTION_NS: &str = "payments-prod";
const PLAIN_NS: &str = "shop";

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

struct Fixture {
    name: String,
    request: Value,
    expected: Value,
}

fn load(dir: &str) -> Vec<Fixture> {
    let dir = fixtures_dir().join(dir);
    let mut fixtures = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".request.json"))
        else {
            continue;
        };
        let read = |p: &Path| -> Value {
            let text =
                std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        };
        let expected_path = dir.join(format!("{name}.expected.json"));
        assert!(
            expected_path.exists(),
            "{name}: no expected response beside the request"
        );
        fixtures.push(Fixture {
            name: name.to_owned(),
            request: read(&path),
            expected: read(&expected_path),
        });
    }
    fixtures.sort_by(|a, b| a.name.cmp(&b.name));
    fixtures
}

fn namespace(name: &str, labels: &[(&str, &str)]) -> PartialObjectMeta<Namespace> {
    let mut ns = PartialObjectMeta::<Namespace>::default();
    ns.metadata.name = Some(name.to_owned());
    ns.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    ns
}

/// A synced namespace cache as a cluster with these namespaces would produce.
fn namespace_cache() -> NamespaceCache {
    let (store, mut writer) = reflector::store();
    writer.apply_watcher_event(&Event::Init);
    writer.apply_watcher_event(&Event::InitApply(namespace(
        PRODUCTION_NS,
        &[("environment", "production")],
    )));
    writer.apply_watcher_event(&Event::InitApply(namespace(
        PLAIN_NS,
        &[("environment", "dev")],
    )));
    writer.apply_watcher_event(&Event::InitDone);
    NamespaceCache::Watched {
        store,
        synced: Arc::new(AtomicBool::new(true)),
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The checks every review response shares: HTTP 200 (else `Err` with that one mismatch, as
/// nothing else is worth comparing), the `api_version`/`kind` envelope and the echoed uid.
fn envelope_mismatches(
    request: &Value,
    status: StatusCode,
    body: &Value,
    api_version: &str,
    kind: &str,
) -> Result<Vec<String>, Vec<String>> {
    if status != StatusCode::OK {
        return Err(vec![format!("HTTP status {status}, expected 200")]);
    }
    let mut out = Vec::new();
    if body["apiVersion"] != api_version || body["kind"] != kind {
        let version = api_version.rsplit('/').next().unwrap_or(api_version);
        out.push(format!("not a {version} {kind}: {body}"));
    }
    let response = &body["response"];
    if response["uid"] != request["request"]["uid"] {
        out.push(format!("uid {} does not echo the request", response["uid"]));
    }
    Ok(out)
}

/// One mismatch per expected `fragments` entry that `message` lacks.
fn missing_fragments(message: &str, fragments: Vec<String>) -> Vec<String> {
    fragments
        .into_iter()
        .filter(|fragment| !message.contains(fragment))
        .map(|fragment| format!("message lacks {fragment:?}: {message:?}"))
        .collect()
}

/// Every way `answer` differs from `expected` for an AdmissionReview fixture.
fn admission_mismatches(
    request: &Value,
    expected: &Value,
    status: StatusCode,
    body: &Value,
) -> Vec<String> {
    let mut out = match envelope_mismatches(
        request,
        status,
        body,
        "admission.k8s.io/v1",
        "AdmissionReview",
    ) {
        Ok(out) => out,
        Err(out) => return out,
    };
    let response = &body["response"];
    let Some(allowed) = expected["allowed"].as_bool() else {
        return vec!["expectation lacks `allowed`".to_owned()];
    };
    if response["allowed"] != allowed {
        out.push(format!(
            "allowed is {}, expected {allowed}; status {}",
            response["allowed"], response["status"]
        ));
    }
    if let Some(status) = expected.get("status") {
        for key in ["code", "reason"] {
            if let Some(want) = status.get(key) {
                if &response["status"][key] != want {
                    out.push(format!(
                        "status.{key} is {}, expected {want}",
                        response["status"][key]
                    ));
                }
            }
        }
    }
    let message = response["status"]["message"].as_str().unwrap_or_default();
    let fragments = strings(expected.get("messageContains"));
    if !allowed && fragments.is_empty() {
        out.push("a denial expectation must name message fragments".to_owned());
    }
    out.extend(missing_fragments(message, fragments));
    match (expected.get("patch"), response.get("patch")) {
        (None, None) => {}
        (None, Some(p)) => out.push(format!("unexpected patch {p}")),
        (Some(want), None) => out.push(format!("no patch, expected {want}")),
        (Some(want), Some(got)) => {
            if response["patchType"] != "JSONPatch" {
                out.push(format!("patchType is {}", response["patchType"]));
            }
            let decoded = got
                .as_str()
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
            match decoded {
                None => out.push(format!("patch is not base64 JSON: {got}")),
                Some(patch) if &patch != want => {
                    out.push(format!("patch is {patch}, expected {want}"))
                }
                Some(patch) => {
                    // The API server applies it to the object it sent: it must apply cleanly.
                    let mut object = request["request"]["object"].clone();
                    match serde_json::from_value::<json_patch::Patch>(patch) {
                        Ok(p) => {
                            if let Err(e) = json_patch::patch(&mut object, &p) {
                                out.push(format!("patch does not apply to the object: {e}"));
                            }
                        }
                        Err(e) => out.push(format!("patch is not RFC 6902: {e}")),
                    }
                }
            }
        }
    }
    let warnings = strings(response.get("warnings"));
    let exact = expected.get("warnings").map(|w| strings(Some(w)));
    let contains = strings(expected.get("warningsContain"));
    if let Some(exact) = exact {
        if warnings != exact {
            out.push(format!("warnings are {warnings:?}, expected {exact:?}"));
        }
    } else if contains.is_empty() && !warnings.is_empty() {
        out.push(format!("unexpected warnings {warnings:?}"));
    }
    for fragment in contains {
        if !warnings.iter().any(|w| w.contains(&fragment)) {
            out.push(format!("no warning contains {fragment:?}: {warnings:?}"));
        }
    }
    out
}

/// Every way `answer` differs from `expected` for a ConversionReview fixture.
fn conversion_mismatches(
    request: &Value,
    expected: &Value,
    status: StatusCode,
    body: &Value,
) -> Vec<String> {
    let mut out = match envelope_mismatches(
        request,
        status,
        body,
        "apiextensions.k8s.io/v1",
        "ConversionReview",
    ) {
        Ok(out) => out,
        Err(out) => return out,
    };
    let response = &body["response"];
    let Some(result) = expected["result"].as_str() else {
        return vec!["expectation lacks `result`".to_owned()];
    };
    if response["result"]["status"] != result {
        out.push(format!(
            "result is {}, expected {result}",
            response["result"]
        ));
    }
    if let Some(want) = expected.get("convertedObjects") {
        if &response["convertedObjects"] != want {
            out.push(format!(
                "convertedObjects are {}, expected {want}",
                response["convertedObjects"]
            ));
        }
    } else if result == "Success" {
        out.push("a Success expectation must list convertedObjects".to_owned());
    }
    let message = response["result"]["message"].as_str().unwrap_or_default();
    out.extend(missing_fragments(
        message,
        strings(expected.get("messageContains")),
    ));
    out
}

type Check = fn(&Value, &Value, StatusCode, &Value) -> Vec<String>;

async fn run(dir: &str, path: &str, check: Check, minimum: usize) {
    let fixtures = load(dir);
    assert!(
        fixtures.len() >= minimum,
        "expected at least {minimum} fixtures in fixtures/{dir}, found {}",
        fixtures.len()
    );
    let server = TestServer::start_with(Limits::default(), namespace_cache()).await;
    let mut h1 = server.h1().await;
    let mut h2 = server.h2().await;
    let mut failures = Vec::new();
    for fixture in &fixtures {
        let body = serde_json::to_vec(&fixture.request).unwrap();
        let over_h1 = send_h1(&mut h1, post_json(path, body.clone())).await;
        let over_h2 = send_h2(
            &mut h2,
            request_h2("POST", path, Some("application/json"), full(body)),
        )
        .await;
        for (protocol, answer) in [("HTTP/1.1", &over_h1), ("HTTP/2", &over_h2)] {
            let json: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
            for problem in check(&fixture.request, &fixture.expected, answer.status, &json) {
                failures.push(format!("{dir}/{} ({protocol}): {problem}", fixture.name));
            }
        }
    }
    server.stop().await;
    assert!(
        failures.is_empty(),
        "{} fixture mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn every_validate_fixture_gets_its_expected_answer_over_tls() {
    run("validate", "/validate", admission_mismatches, 40).await;
}

#[tokio::test]
async fn every_mutate_fixture_gets_its_expected_answer_over_tls() {
    run("mutate", "/mutate", admission_mismatches, 12).await;
}

#[tokio::test]
async fn every_convert_fixture_gets_its_expected_answer_over_tls() {
    run("convert", "/convert", conversion_mismatches, 4).await;
}

/// The comparison must be able to fail: wrong expectations against a real answer are caught.
#[test]
fn wrong_expectations_are_reported() {
    let request = serde_json::json!({"request": {"uid": "u1", "object": {"spec": {}}}});
    let patch = serde_json::json!([{"op": "add", "path": "/spec/replicas", "value": 1}]);
    let encoded = base64::engine::general_purpose::STANDARD.encode(patch.to_string());
    let body = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "response": {"uid": "u1", "allowed": true, "status": {}, "patchType": "JSONPatch",
                     "patch": encoded, "warnings": ["spec.config: x not checked"]}
    });
    let right =
        serde_json::json!({"allowed": true, "patch": patch, "warningsContain": ["not checked"]});
    assert_eq!(
        admission_mismatches(&request, &right, StatusCode::OK, &body),
        Vec::<String>::new()
    );
    let wrong = [
        serde_json::json!({"allowed": false, "messageContains": ["x"], "patch": patch, "warningsContain": ["not checked"]}),
        serde_json::json!({"allowed": true, "patch": [{"op": "add", "path": "/spec/replicas", "value": 3}], "warningsContain": ["not checked"]}),
        serde_json::json!({"allowed": true, "warningsContain": ["not checked"]}),
        serde_json::json!({"allowed": true, "patch": patch}),
        serde_json::json!({"allowed": true, "patch": patch, "warnings": []}),
        serde_json::json!({"allowed": true, "patch": patch, "warningsContain": ["deprecated"]}),
    ];
    for expected in wrong {
        assert!(
            !admission_mismatches(&request, &expected, StatusCode::OK, &body).is_empty(),
            "not caught: {expected}"
        );
    }
    assert!(!admission_mismatches(&request, &right, StatusCode::BAD_REQUEST, &body).is_empty());
}

/// Every rule of `api::validation::RULES` has at least one denied and one allowed fixture
/// (tagged in `rules`), so a new rule cannot ship without fixtures.
#[test]
fn every_validation_rule_has_a_denied_and_an_allowed_fixture() {
    let fixtures = load("validate");
    let rule_names: Vec<&str> = api::validation::RULES
        .iter()
        .map(|(name, _)| *name)
        .collect();
    let mut missing = Vec::new();
    for rule in &rule_names {
        for allowed in [false, true] {
            let covered = fixtures.iter().any(|f| {
                f.expected["allowed"] == allowed
                    && strings(f.expected.get("rules")).iter().any(|r| r == rule)
            });
            if !covered {
                missing.push(format!(
                    "{rule}: no {} fixture",
                    if allowed { "allowed" } else { "denied" }
                ));
            }
        }
    }
    for f in &fixtures {
        for tag in strings(f.expected.get("rules")) {
            if !rule_names.contains(&tag.as_str()) {
                missing.push(format!("{}: tags unknown rule {tag}", f.name));
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}
