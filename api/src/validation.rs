//! Validation of Database objects for CREATE and UPDATE: a checklist of small pure rules.
//! (Work in progress: rule bodies are being filled in.)

use std::fmt;

use crate::catalog::Catalog;
use crate::v1;

/// One violated rule: where, what value, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path in dotted form, e.g. `spec.storageSize`.
    pub path: String,
    /// The offending value as the user wrote it.
    pub value: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The outcome of validation: errors deny, warnings are shown by kubectl.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Every violation found.
    pub errors: Vec<FieldError>,
    /// Advice that does not block the request.
    pub warnings: Vec<String>,
}

impl Verdict {
    /// True when there are no errors.
    pub fn allowed(&self) -> bool {
        self.errors.is_empty()
    }

    /// All errors joined into one message for the AdmissionResponse status.
    pub fn denial_message(&self) -> String {
        self.errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Validates `new` (and the transition from `old` on UPDATE).
pub fn validate(new: &v1::Database, old: Option<&v1::Database>, catalog: &Catalog) -> Verdict {
    let _ = (new, old, catalog);
    Verdict::default()
}
