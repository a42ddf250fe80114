//! Defaulting: RFC 6902 `add` operations for absent fields of the raw request object.
//! (Work in progress.)

use crate::catalog::Catalog;

/// What the server knows about the request's namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefaultingContext {
    /// `Some(true)` when the namespace is labelled `environment: production`; `None` when the
    /// server runs without cluster access (the replicas-by-environment rule is skipped).
    pub production_namespace: Option<bool>,
}

/// RFC 6902 `add` ops only, against the raw object JSON, only for absent fields; deterministic.
pub fn default_patch(
    object: &serde_json::Value,
    catalog: &Catalog,
    ctx: &DefaultingContext,
) -> json_patch::Patch {
    let _ = (object, catalog, ctx);
    json_patch::Patch(Vec::new())
}
