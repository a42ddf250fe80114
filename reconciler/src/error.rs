//! Errors of the reconciler, classified as transient (retry with backoff) or permanent
//! (surface in status, do not hot-loop), each with a stable metric label.

use kube::core::Status;

/// Everything that can go wrong while reconciling one Database.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("failed to {action} {kind} {namespace}/{name}: {source}")]
    Kube {
        action: &'static str,
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// The Database object lacks something the API server always sets (namespace, uid).
    #[error("Database is missing metadata.{0}")]
    MissingMetadata(&'static str),
    /// A guarded patch found the object changed since it was read (JSON-patch `test` failed,
    /// which the API server reports as 422): retry with a fresh copy.
    #[error("{0} changed since it was read; retrying with a fresh copy")]
    Stale(String),
    /// Objects with the names of this Database's children exist without its controller
    /// ownerReference: they are left untouched and reported (retried with backoff).
    #[error("{0}")]
    NameConflict(String),
    /// Admission (a webhook or policy) denied adding or removing the cleanup finalizer.
    #[error("{action} the cleanup finalizer of Database {namespace}/{name} was denied: {message}")]
    FinalizerDenied {
        action: &'static str,
        namespace: String,
        name: String,
        message: String,
    },
    /// Building a desired object failed (should not happen with valid input).
    #[error("failed to serialize {kind}: {source}")]
    Serialize {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// Shorthand for wrapping an API error with what we were doing.
    pub fn kube(
        action: &'static str,
        kind: &'static str,
        namespace: &str,
        name: &str,
        source: kube::Error,
    ) -> Self {
        Error::Kube {
            action,
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source: Box::new(source),
        }
    }

    /// The API status of a failed call, if the server answered.
    pub fn api_status(&self) -> Option<&Status> {
        match self {
            Error::Kube { source, .. } => match source.as_ref() {
                kube::Error::Api(status) => Some(status),
                _ => None,
            },
            _ => None,
        }
    }

    /// One-line message for status conditions and events: the API server's own message rather
    /// than the full debug dump of its Status.
    pub fn summary(&self) -> String {
        match self {
            Error::Kube {
                action,
                kind,
                namespace,
                name,
                source,
            } => match source.as_ref() {
                kube::Error::Api(s) => format!(
                    "failed to {action} {kind} {namespace}/{name}: {} ({} {})",
                    s.message, s.code, s.reason
                ),
                other => format!("failed to {action} {kind} {namespace}/{name}: {other}"),
            },
            other => other.to_string(),
        }
    }

    /// Permanent errors will not go away by retrying: RBAC denials, rejected (invalid) objects,
    /// bad requests. Everything else (network, 5xx, 409 conflicts, 429) is transient.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::MissingMetadata(_) | Error::Serialize { .. } | Error::FinalizerDenied { .. } => {
                true
            }
            Error::Stale(_) | Error::NameConflict(_) => false,
            Error::Kube { .. } => matches!(
                self.api_status().map(|s| s.code),
                Some(400 | 403 | 405 | 413 | 415 | 422)
            ),
        }
    }

    /// Low-cardinality label for the `reconcile_errors_total` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::MissingMetadata(_) => "missing_metadata",
            Error::Serialize { .. } => "serialize",
            Error::Stale(_) => "stale_object",
            Error::NameConflict(_) => "name_conflict",
            Error::FinalizerDenied { .. } => "finalizer_denied",
            Error::Kube { source, .. } => match source.as_ref() {
                kube::Error::Api(status) => match status.code {
                    403 => "forbidden",
                    404 => "not_found",
                    409 => "conflict",
                    422 => "invalid",
                    429 => "throttled",
                    400..=499 => "client_error",
                    500..=599 => "server_error",
                    _ => "api_error",
                },
                _ => "transport",
            },
        }
    }
}

/// True when the error is an API 404.
pub fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 404)
}

/// A failed finalizer JSON patch (`test` op first) classified: the `test` failing (the cached
/// Database is stale, retry) or admission denying the change (report it, do not call it stale).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinalizerPatchFailure {
    Stale,
    Denied(String),
    Other,
}

/// Admission denials carry the plugin's own wording ("admission webhook \"x\" denied the
/// request: ...", "ValidatingAdmissionPolicy 'p' with binding 'b' denied request: ..."), with
/// any 4xx code the webhook chose, including 422. A failed JSON-patch `test` is a 422 from the
/// patch machinery itself, which never says "denied".
pub fn classify_finalizer_patch_error(err: &kube::Error) -> FinalizerPatchFailure {
    match err {
        kube::Error::Api(s) if (400..500).contains(&s.code) && is_admission_denial(&s.message) => {
            FinalizerPatchFailure::Denied(s.message.clone())
        }
        kube::Error::Api(s) if s.code == 422 => FinalizerPatchFailure::Stale,
        _ => FinalizerPatchFailure::Other,
    }
}

fn is_admission_denial(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    (m.contains("admission webhook") && m.contains("denied"))
        || (m.contains("validatingadmissionpolicy") && m.contains("denied"))
        || m.contains("denied the request")
}

/// True when the error is an API 409 AlreadyExists.
pub fn is_already_exists(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_err(code: u16, reason: &str) -> Error {
        Error::kube(
            "apply",
            "StatefulSet",
            "ns",
            "db",
            kube::Error::Api(Status::failure("boom", reason).with_code(code).boxed()),
        )
    }

    #[test]
    fn forbidden_and_invalid_are_permanent_conflicts_and_outages_are_transient() {
        let rows = [
            (403, "Forbidden", true, "forbidden"),
            (422, "Invalid", true, "invalid"),
            (400, "BadRequest", true, "client_error"),
            (409, "Conflict", false, "conflict"),
            (429, "TooManyRequests", false, "throttled"),
            (500, "InternalError", false, "server_error"),
            (503, "ServiceUnavailable", false, "server_error"),
            (404, "NotFound", false, "not_found"),
        ];
        for (code, reason, permanent, label) in rows {
            let e = api_err(code, reason);
            assert_eq!(e.is_permanent(), permanent, "code {code}");
            assert_eq!(e.metric_label(), label, "code {code}");
        }
    }

    #[test]
    fn stale_object_is_transient() {
        let e = Error::Stale("Database ns/db".to_owned());
        assert!(!e.is_permanent());
        assert_eq!(e.metric_label(), "stale_object");
    }

    #[test]
    fn finalizer_patch_failures_are_classified() {
        let api = |code: u16, reason: &str, msg: &str| {
            kube::Error::Api(Status::failure(msg, reason).with_code(code).boxed())
        };
        let rows = [
            (
                "failed_test_op_is_stale",
                api(422, "Invalid", "the server rejected our request due to an error in our request"),
                FinalizerPatchFailure::Stale,
            ),
            (
                "webhook_denial_with_422_is_denied",
                api(422, "Invalid", "admission webhook \"validate.example.com\" denied the request: finalizers are frozen"),
                FinalizerPatchFailure::Denied("admission webhook \"validate.example.com\" denied the request: finalizers are frozen".into()),
            ),
            (
                "webhook_denial_with_403_is_denied",
                api(403, "Forbidden", "admission webhook \"v\" denied the request: no"),
                FinalizerPatchFailure::Denied("admission webhook \"v\" denied the request: no".into()),
            ),
            (
                "policy_denial_is_denied",
                api(422, "Invalid", "ValidatingAdmissionPolicy 'p' with binding 'b' denied request: no finalizers"),
                FinalizerPatchFailure::Denied("ValidatingAdmissionPolicy 'p' with binding 'b' denied request: no finalizers".into()),
            ),
            ("outage_is_other", api(503, "ServiceUnavailable", "etcd down"), FinalizerPatchFailure::Other),
        ];
        for (name, err, want) in rows {
            assert_eq!(classify_finalizer_patch_error(&err), want, "{name}");
        }
    }

    #[test]
    fn error_message_names_the_object_and_action() {
        let e = api_err(403, "Forbidden");
        let msg = e.to_string();
        assert!(msg.contains("failed to apply StatefulSet ns/db"), "{msg}");
        assert_eq!(
            e.summary(),
            "failed to apply StatefulSet ns/db: boom (403 Forbidden)"
        );
    }
}
