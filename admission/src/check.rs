//! `admission check`: the webhook's defaulting and validation, offline, for CI pipelines.
//!
//! The manifest (and the optional old manifest for an update) is defaulted exactly as
//! `/mutate` would, the patch applied, and the result validated exactly as `/validate` would.
//! The old manifest is defaulted too, because a stored object has been through `/mutate`.
//! Without a cluster the production-namespace replicas rule is skipped unless `--production`
//! says the target namespace is labelled `environment: production`.

use std::path::{Path, PathBuf};

use serde::{Deserialize as _, Serialize};
use serde_json::Value;

use api::catalog::Catalog;
use api::defaulting::{default_patch, default_patch_on_update, DefaultingContext};
use api::v1::Database;

use crate::review::HUB_API_VERSION;

/// Exit code when the manifest is allowed.
pub const EXIT_ALLOWED: u8 = 0;
/// Exit code when the manifest would be denied.
pub const EXIT_DENIED: u8 = 1;
/// Exit code when an input cannot be read as a Database manifest (clap uses 2 for usage).
pub const EXIT_UNREADABLE: u8 = 3;

/// An input that cannot be evaluated at all.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid YAML: {message}")]
    Yaml { path: PathBuf, message: String },
    #[error("{path} is not a Database manifest: {message}")]
    NotDatabase { path: PathBuf, message: String },
}

/// What the webhooks would answer.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub allowed: bool,
    /// The JSON patch `/mutate` would return (empty when nothing is defaulted).
    pub patch: json_patch::Patch,
    pub warnings: Vec<String>,
    pub errors: Vec<String>,
}

/// Reads the files and evaluates them.
pub fn check_files(
    new: &Path,
    old: Option<&Path>,
    catalog: &Catalog,
    production: bool,
) -> Result<CheckReport, CheckError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| CheckError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let new_manifest = manifest(&read(new)?, new)?;
    let old_manifest = match old {
        Some(path) => Some(manifest(&read(path)?, path)?),
        None => None,
    };
    let ctx = DefaultingContext {
        production_namespace: production.then_some(true),
    };
    let old_db = match old_manifest {
        Some(old_value) => {
            let path = old.unwrap_or(new);
            let (defaulted, _) = defaulted(old_value, None, catalog, &ctx);
            Some(serde_json::from_value::<Database>(defaulted).map_err(|e| {
                CheckError::NotDatabase {
                    path: path.to_owned(),
                    message: e.to_string(),
                }
            })?)
        }
        None => None,
    };
    Ok(evaluate(new_manifest, old_db.as_ref(), catalog, &ctx))
}

/// Finds the one Database in a YAML stream (other kinds, e.g. a Namespace in the same file,
/// are ignored) and converts it to v1 when it is written in another served version.
fn manifest(text: &str, path: &Path) -> Result<Value, CheckError> {
    let not_database = |message: String| CheckError::NotDatabase {
        path: path.to_owned(),
        message,
    };
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value = Value::deserialize(document).map_err(|e| CheckError::Yaml {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    let kind_of = |v: &Value| {
        (
            v.get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            v.get("kind")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        )
    };
    let mut databases: Vec<Value> = documents
        .iter()
        .filter(|v| {
            let (api_version, kind) = kind_of(v);
            kind == "Database" && api_version.starts_with("example.com/")
        })
        .cloned()
        .collect();
    let value = match (databases.len(), documents.first()) {
        (1, _) => databases.remove(0),
        (0, Some(first)) if documents.len() == 1 => {
            let (api_version, kind) = kind_of(first);
            return Err(not_database(format!(
                "expected apiVersion example.com/v1 and kind Database, got apiVersion {api_version:?} and kind {kind:?}"
            )));
        }
        (0, _) => {
            return Err(not_database(format!(
                "none of its {} YAML documents is an example.com Database",
                documents.len()
            )))
        }
        (n, _) => {
            return Err(not_database(format!(
                "it holds {n} Database documents; check one Database per file"
            )))
        }
    };
    if kind_of(&value).0 == HUB_API_VERSION {
        Ok(value)
    } else {
        api::conversion::convert(value, HUB_API_VERSION).map_err(|e| not_database(e.to_string()))
    }
}

/// Applies the defaulting patch to `object` (on an update, fields absent from `object` take the
/// stored values of `old` first, exactly as `/mutate` does); returns the defaulted object and the
/// patch.
fn defaulted(
    mut object: Value,
    old: Option<&Value>,
    catalog: &Catalog,
    ctx: &DefaultingContext,
) -> (Value, Result<json_patch::Patch, String>) {
    let patch = match old {
        Some(old) => default_patch_on_update(&object, old, catalog, ctx),
        None => default_patch(&object, catalog, ctx),
    };
    match json_patch::patch(&mut object, &patch) {
        Ok(()) => (object, Ok(patch)),
        Err(e) => (object, Err(format!("defaulting patch does not apply: {e}"))),
    }
}

/// Defaulting then validation of an already parsed v1 manifest.
pub fn evaluate(
    new: Value,
    old: Option<&Database>,
    catalog: &Catalog,
    ctx: &DefaultingContext,
) -> CheckReport {
    let old_value = old.and_then(|o| serde_json::to_value(o).ok());
    let (defaulted_new, patch) = defaulted(new, old_value.as_ref(), catalog, ctx);
    let patch = match patch {
        Ok(patch) => patch,
        Err(message) => {
            return CheckReport {
                allowed: false,
                patch: json_patch::Patch(Vec::new()),
                warnings: Vec::new(),
                errors: vec![message],
            }
        }
    };
    let db = match serde_json::from_value::<Database>(defaulted_new) {
        Ok(db) => db,
        Err(e) => {
            return CheckReport {
                allowed: false,
                patch,
                warnings: Vec::new(),
                errors: vec![format!(
                    "object is not a valid {HUB_API_VERSION} Database: {e}"
                )],
            }
        }
    };
    let verdict = api::validation::validate(&db, old, catalog);
    CheckReport {
        allowed: verdict.allowed(),
        patch,
        errors: verdict.errors.iter().map(ToString::to_string).collect(),
        warnings: verdict.warnings,
    }
}

impl CheckReport {
    /// Human-readable report: the patch as one JSON line, then warnings, errors, verdict.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let patch = serde_json::to_string(&self.patch).unwrap_or_else(|e| format!("<{e}>"));
        let _ = writeln!(out, "patch: {patch}");
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        for e in &self.errors {
            let _ = writeln!(out, "error: {e}");
        }
        if self.allowed {
            let _ = writeln!(out, "result: allowed");
        } else {
            let _ = writeln!(out, "result: denied ({} error(s))", self.errors.len());
        }
        out
    }

    pub fn exit_code(&self) -> u8 {
        if self.allowed {
            EXIT_ALLOWED
        } else {
            EXIT_DENIED
        }
    }
}
