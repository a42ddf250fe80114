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
            Error::MissingMetadata(_) | Error::Serialize { .. } => true,
            Error::Stale(_) => false,
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
