//! ConversionReview handling for `/convert` (apiextensions.k8s.io/v1), through
//! `api::conversion::convert`.
//!
//! A body that is not a v1 ConversionReview with a request is answered with HTTP 400. A
//! well-formed review whose objects cannot all be converted gets `result.status: Failure` with
//! a message naming the first failing object, and no converted objects (the API server requires
//! all or nothing).

use kube::core::conversion::{ConversionRequest, ConversionResponse, ConversionReview};
use kube::core::Status;
use serde_json::Value;

/// `apiVersion` of the ConversionReviews we accept and answer.
pub const CONVERSION_API_VERSION: &str = "apiextensions.k8s.io/v1";
/// `kind` of the ConversionReviews we accept and answer.
pub const CONVERSION_KIND: &str = "ConversionReview";

/// The body could not be read as a ConversionReview; answered with HTTP 400.
#[derive(Debug, thiserror::Error)]
pub enum BadConversionReview {
    #[error("request body is not a ConversionReview: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error("expected apiVersion {CONVERSION_API_VERSION:?} and kind {CONVERSION_KIND:?}, got apiVersion {api_version:?} and kind {kind:?}")]
    WrongEnvelope { api_version: String, kind: String },
    #[error("ConversionReview has no request")]
    MissingRequest,
    #[error("response not encodable: {0}")]
    Encode(#[source] serde_json::Error),
}

/// A finished conversion with what the log line and metrics need.
#[derive(Debug)]
pub struct Converted {
    pub body: Vec<u8>,
    pub success: bool,
    pub uid: String,
    pub desired_api_version: String,
    pub objects: usize,
    pub message: String,
}

/// Decodes, converts every object to `desiredAPIVersion`, encodes the response review.
pub fn convert_review(body: &[u8]) -> Result<Converted, BadConversionReview> {
    let review: ConversionReview =
        serde_json::from_slice(body).map_err(BadConversionReview::Malformed)?;
    if review.types.api_version != CONVERSION_API_VERSION || review.types.kind != CONVERSION_KIND {
        return Err(BadConversionReview::WrongEnvelope {
            api_version: review.types.api_version,
            kind: review.types.kind,
        });
    }
    let mut request =
        ConversionRequest::from_review(review).map_err(|_| BadConversionReview::MissingRequest)?;
    let uid = request.uid.clone();
    let desired = request.desired_api_version.clone();
    let objects = std::mem::take(&mut request.objects);
    let count = objects.len();
    let response = ConversionResponse::for_request(request);
    let (response, success, message) = match convert_all(objects, &desired) {
        Ok(converted) => (response.success(converted), true, String::new()),
        Err(message) => (
            response.failure(Status::failure(&message, "Invalid").with_code(422)),
            false,
            message,
        ),
    };
    let body = serde_json::to_vec(&response.into_review()).map_err(BadConversionReview::Encode)?;
    Ok(Converted {
        body,
        success,
        uid,
        desired_api_version: desired,
        objects: count,
        message,
    })
}

fn convert_all(objects: Vec<Value>, desired: &str) -> Result<Vec<Value>, String> {
    objects
        .into_iter()
        .enumerate()
        .map(|(i, object)| {
            let name = object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("<unnamed>")
                .to_owned();
            api::conversion::convert(object, desired)
                .map_err(|e| format!("object {i} ({name}) cannot be converted to {desired}: {e}"))
        })
        .collect()
}

/// Wraps objects in a ConversionReview request (for tests and fixtures).
pub fn request_for(uid: &str, desired_api_version: &str, objects: Vec<Value>) -> Value {
    serde_json::json!({
        "apiVersion": CONVERSION_API_VERSION,
        "kind": CONVERSION_KIND,
        "request": {"uid": uid, "desiredAPIVersion": desired_api_version, "objects": objects},
    })
}
