//! One fuzz input through the server's own request handling, with the reply checked.
//!
//! Shared by the coverage-guided fuzz target (`fuzz/`, libFuzzer) and the smoke test in the
//! normal test suite (`tests/fuzz_smoke.rs`). The first byte of an input picks the target, the
//! rest is the raw body (or manifest):
//!
//! | first byte % 4 | target |
//! |---|---|
//! | 0 | `/validate` body ([`router::answer`], what the server runs on its blocking pool) |
//! | 1 | `/mutate` body |
//! | 2 | `/convert` body |
//! | 3 | `check`'s YAML input (the manifest file of `admission check -f`) |
//!
//! [`exercise`] panics when a reply breaks the contract, so the fuzzer records it as a crash:
//! a 500 (a panic in the rules, caught by the router) or any status but 200/400/413/422, a 200
//! that is not a well-formed `AdmissionReview`/`ConversionReview` for the request's `uid`, or a
//! `/mutate` patch that is not add-only or does not apply to the object it was computed for.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use base64::Engine as _;
use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::Value;

use api::catalog::Catalog;

use crate::metrics::Operation;
use crate::namespaces::NamespaceCache;
use crate::router::{self, Admission, Limits};

/// Which handler an input went to (for counting in the driver scripts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Validate,
    Mutate,
    Convert,
    CheckYaml,
}

impl Target {
    pub fn of(input: &[u8]) -> Target {
        match input.first().map_or(0, |b| b % 4) {
            0 => Target::Validate,
            1 => Target::Mutate,
            2 => Target::Convert,
            _ => Target::CheckYaml,
        }
    }
}

fn app() -> &'static Admission {
    static APP: OnceLock<Admission> = OnceLock::new();
    APP.get_or_init(|| {
        Admission::new(
            Catalog::builtin(),
            NamespaceCache::Disabled,
            Limits::default(),
        )
    })
}

/// Runs one input; panics if the reply breaks the contract (see the module docs).
pub fn exercise(input: &[u8]) -> Target {
    let target = Target::of(input);
    let body = input.get(1..).unwrap_or_default();
    match target {
        Target::Validate => webhook(Operation::Validate, body),
        Target::Mutate => webhook(Operation::Mutate, body),
        Target::Convert => webhook(Operation::Convert, body),
        Target::CheckYaml => check_yaml(body),
    }
    target
}

fn webhook(operation: Operation, body: &[u8]) {
    let (response, _) = router::answer(app(), operation, body, Instant::now());
    let status = response.status();
    let bytes = match futures::executor::block_on(response.into_body().collect()) {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    match status {
        StatusCode::OK => {}
        StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => return,
        other => panic!(
            "{} answered {other}: {}",
            operation.as_str(),
            String::from_utf8_lossy(&bytes)
        ),
    }
    let reply: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{} reply is not JSON: {e}", operation.as_str()));
    let request: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "{} answered 200 to a body that is not JSON: {e}",
            operation.as_str()
        )
    });
    let uid = request.pointer("/request/uid");
    let response = &reply["response"];
    assert_eq!(
        response.get("uid"),
        uid,
        "{}: reply uid differs from the request's",
        operation.as_str()
    );
    match operation {
        Operation::Convert => {
            assert_eq!(reply["apiVersion"], "apiextensions.k8s.io/v1");
            assert_eq!(reply["kind"], "ConversionReview");
            let status = response.pointer("/result/status").and_then(Value::as_str);
            assert!(
                matches!(status, Some("Success" | "Failure")),
                "convert: result.status {status:?}"
            );
            if status == Some("Success") {
                let objects = request
                    .pointer("/request/objects")
                    .and_then(Value::as_array);
                let converted = response.get("convertedObjects").and_then(Value::as_array);
                assert_eq!(
                    objects.map(Vec::len),
                    converted.map(Vec::len),
                    "convert: converted object count differs"
                );
            }
        }
        Operation::Validate | Operation::Mutate => {
            assert_eq!(reply["apiVersion"], "admission.k8s.io/v1");
            assert_eq!(reply["kind"], "AdmissionReview");
            assert!(
                response.get("allowed").is_some_and(Value::is_boolean),
                "{}: no boolean allowed",
                operation.as_str()
            );
            if let Some(patch) = response.get("patch") {
                check_patch(&request, response, patch);
            }
        }
    }
}

/// A `/mutate` patch: base64 JSON Patch, `add` operations only, applying cleanly.
fn check_patch(request: &Value, response: &Value, patch: &Value) {
    assert_eq!(response["patchType"], "JSONPatch");
    let encoded = patch
        .as_str()
        .unwrap_or_else(|| panic!("patch is not a string"));
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap_or_else(|e| panic!("patch is not base64: {e}"));
    let ops: json_patch::Patch =
        serde_json::from_slice(&decoded).unwrap_or_else(|e| panic!("patch is not JSON Patch: {e}"));
    assert!(
        ops.0
            .iter()
            .all(|op| matches!(op, json_patch::PatchOperation::Add(_))),
        "defaulting emitted an operation other than add: {ops:?}"
    );
    let mut object = request
        .pointer("/request/object")
        .cloned()
        .unwrap_or_else(|| panic!("patch for a review without an object"));
    json_patch::patch(&mut object, &ops)
        .unwrap_or_else(|e| panic!("defaulting patch does not apply: {e}: {ops:?}"));
}

/// `check -f FILE`: any text is a report or one of the documented errors, never a panic.
fn check_yaml(text: &[u8]) {
    thread_local! {
        static FILE: PathBuf = {
            let dir = std::env::temp_dir().join(format!("admission-fuzz-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&dir);
            dir.join(format!("{:?}.yaml", std::thread::current().id()).replace(['(', ')'], ""))
        };
    }
    FILE.with(|path| {
        let written = std::fs::File::create(path).and_then(|mut f| f.write_all(text));
        if written.is_err() {
            return;
        }
        // Ok(report) or Err(CheckError): both are answers; the fuzzer looks for panics.
        let _ = crate::check::check_files(path, None, &app().catalog, false);
    });
}
