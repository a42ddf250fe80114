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
    let request: Value = request_json(body).unwrap_or_else(|e| {
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

/// The request as a `Value`, for checking the reply against it.
///
/// JSON's grammar allows lone UTF-16 surrogate escapes (`"\ud800"`) and numbers beyond `f64`
/// (`1e999`), which `serde_json::Value` cannot hold. The server reads only the fields it needs
/// (a skipped field is never decoded; a decoded one that cannot be read is a 422 denial), so
/// such a request is answered with a review; here a lone surrogate is read as U+FFFD (as Go's
/// `encoding/json` does) and an out-of-range number as 0. Anything else that is not JSON stays
/// an error.
fn request_json(body: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice(body).or_else(|strict| {
        let replaced = representable(body);
        serde_json::from_slice(&replaced).map_err(|_| strict)
    })
}

/// Replaces `\uD800`-`\uDFFF` escapes that are not a high+low pair with `\uFFFD` (inside
/// strings only: a `\\` escape is copied as it is, so `\\ud800` stays text) and numbers
/// beyond `f64` with `0`.
fn representable(body: &[u8]) -> Vec<u8> {
    fn hex4(b: &[u8]) -> Option<u16> {
        let digits = std::str::from_utf8(b.get(..4)?).ok()?;
        u16::from_str_radix(digits, 16).ok()
    }
    let surrogate = |u: u16| (0xD800..=0xDFFF).contains(&u);
    let mut out = Vec::with_capacity(body.len());
    let mut in_string = false;
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if !in_string {
            if b == b'-' || b.is_ascii_digit() {
                let len = body[i..]
                    .iter()
                    .take_while(|c| c.is_ascii_digit() || b"+-.eE".contains(c))
                    .count();
                let token = &body[i..i + len];
                let infinite = std::str::from_utf8(token)
                    .ok()
                    .and_then(|t| t.parse::<f64>().ok())
                    .is_some_and(f64::is_infinite);
                out.extend_from_slice(if infinite { b"0" } else { token });
                i += len;
                continue;
            }
            in_string = b == b'"';
            out.push(b);
            i += 1;
            continue;
        }
        match b {
            b'"' => {
                in_string = false;
                out.push(b);
                i += 1;
            }
            b'\\' if body.get(i + 1) == Some(&b'u') => {
                let Some(unit) = hex4(&body[i + 2..]) else {
                    out.extend_from_slice(&body[i..i + 2]);
                    i += 2;
                    continue;
                };
                let low = (body.get(i + 6..i + 8) == Some(b"\\u"))
                    .then(|| hex4(&body[i + 8..]))
                    .flatten();
                if (0xD800..0xDC00).contains(&unit)
                    && low.is_some_and(|l| (0xDC00..=0xDFFF).contains(&l))
                {
                    out.extend_from_slice(&body[i..i + 12]);
                    i += 12;
                } else if surrogate(unit) {
                    out.extend_from_slice(b"\\ufffd");
                    i += 6;
                } else {
                    out.extend_from_slice(&body[i..i + 6]);
                    i += 6;
                }
            }
            b'\\' => {
                out.extend_from_slice(&body[i..(i + 2).min(body.len())]);
                i += 2;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_json_reads_what_serde_cannot_hold_as_go_does_and_nothing_else() {
        let cases: &[(&str, &[u8], Option<Value>)] = &[
            (
                "plain_json",
                br#"{"a":"x"}"#,
                Some(serde_json::json!({"a": "x"})),
            ),
            (
                "lone_high_surrogate",
                br#"{"a":"x\ud800y"}"#,
                Some(serde_json::json!({"a": "x\u{fffd}y"})),
            ),
            (
                "lone_low_surrogate",
                br#"{"a":"\udc00"}"#,
                Some(serde_json::json!({"a": "\u{fffd}"})),
            ),
            (
                "surrogate_pair_kept",
                br#"{"a":"\ud83d\ude00","b":"\ud800"}"#,
                Some(serde_json::json!({"a": "\u{1f600}", "b": "\u{fffd}"})),
            ),
            (
                "escaped_backslash_is_text",
                br#"{"a":"\\ud800","b":1e999}"#,
                Some(serde_json::json!({"a": "\\ud800", "b": 0})),
            ),
            (
                "number_beyond_f64",
                br#"{"a":[-11e999,2e3]}"#,
                Some(serde_json::json!({"a": [0, 2000.0]})),
            ),
            ("not_json_stays_an_error", br#"{"a":"\ud800"#, None),
            ("invalid_escape_stays_an_error", br#"{"a":"\q"}"#, None),
        ];
        for (name, body, want) in cases {
            let got = request_json(body).ok();
            assert_eq!(&got, want, "{name}");
        }
    }
}
