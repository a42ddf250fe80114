//! The reconciler's own gate in front of every action. The admission webhook can be bypassed
//! (or not installed), so before touching anything the reconciler re-runs the shared API rules
//! and compares the spec with what actually runs: shrinking storage, downgrading or switching
//! engines, or moving to another storage class would destroy data and is refused, not acted on.

use api::catalog::Catalog;
use api::resolved::ResolvedSpec;
use api::v1::Database;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::engine;

/// Why nothing was done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Condition reason (`InvalidSpec`, `DestructiveChangeRefused`).
    pub reason: &'static str,
    pub message: String,
}

pub const REASON_INVALID_SPEC: &str = "InvalidSpec";
pub const REASON_DESTRUCTIVE_CHANGE: &str = "DestructiveChangeRefused";

/// What is actually running, read from the StatefulSet and its PVCs.
#[derive(Debug, Clone, Default)]
pub struct ObservedShape {
    /// `example.com/engine` annotation of the StatefulSet.
    pub engine: Option<String>,
    /// `example.com/version` annotation of the StatefulSet.
    pub version: Option<semver::Version>,
    /// storageClassName of the StatefulSet's data claim template.
    pub storage_class: Option<String>,
    /// Storage of the data claim template.
    pub template_storage: Option<Quantity>,
    /// Requested storage of each existing data PVC, by name.
    pub pvc_storage: Vec<(String, Quantity)>,
}

/// Runs the shared validation and resolves defaults. `Err` means the spec must not be acted on.
pub fn check_spec(db: &Database, catalog: &Catalog) -> Result<ResolvedSpec, Refusal> {
    let verdict = api::validation::validate(db, None, catalog);
    if !verdict.allowed() {
        return Err(Refusal {
            reason: REASON_INVALID_SPEC,
            message: format!("spec refused: {}", verdict.denial_message()),
        });
    }
    api::resolved::resolve(db, catalog).map_err(|errors| Refusal {
        reason: REASON_INVALID_SPEC,
        message: format!(
            "spec refused: {}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ),
    })
}

fn bytes(q: &Quantity) -> Option<u128> {
    api::quantity::parse_bytes(q).ok()
}

/// Every destructive difference between the resolved spec and what runs, as messages that say
/// how to fix it. Empty means it is safe to act.
pub fn destructive_changes(
    resolved: &ResolvedSpec,
    observed: &ObservedShape,
    catalog: &Catalog,
) -> Vec<String> {
    let mut out = Vec::new();
    let want_engine = engine::short_name(&resolved.engine);
    if let Some(running) = &observed.engine {
        if running != want_engine {
            out.push(format!(
                "spec.engine: cannot change from {running} to {want_engine} on existing data; \
                 create a new Database instead"
            ));
        }
    }
    if let (Some(running), true) = (
        &observed.version,
        observed.engine.as_deref() == Some(want_engine),
    ) {
        if running != &resolved.version
            && !catalog.upgrade_allowed(resolved.engine, running, &resolved.version)
        {
            out.push(format!(
                "spec.version: cannot change from {running} to {}; only upgrades the catalog allows \
                 (no downgrades, no skipped majors) are performed; set spec.version back to {running}",
                resolved.version
            ));
        }
    }
    if let (Some(running), Some(wanted)) = (&observed.storage_class, &resolved.storage_class_name) {
        if running != wanted {
            out.push(format!(
                "spec.storageClassName: cannot change from {running} to {wanted}; the volumes of a \
                 running database cannot move to another class"
            ));
        }
    }
    if let Some(want) = bytes(&resolved.storage_size) {
        let current = observed
            .template_storage
            .iter()
            .chain(observed.pvc_storage.iter().map(|(_, q)| q))
            .filter_map(|q| bytes(q).map(|b| (b, q)))
            .max_by_key(|(b, _)| *b);
        if let Some((have, q)) = current {
            if want < have {
                out.push(format!(
                    "spec.storageSize: cannot shrink from {} to {}; storage can only grow",
                    q.0, resolved.storage_size.0
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::tests::{db, resolved, spec};
    use api::v1::Engine;

    fn running(version: &str, storage: &str) -> ObservedShape {
        ObservedShape {
            engine: Some("postgres".to_owned()),
            version: Some(semver::Version::parse(version).unwrap()),
            storage_class: None,
            template_storage: Some(Quantity(storage.to_owned())),
            pvc_storage: vec![("data-orders-0".to_owned(), Quantity(storage.to_owned()))],
        }
    }

    fn resolved_with(version: &str, storage: &str) -> ResolvedSpec {
        let mut s = spec(Engine::Postgres, 1);
        s.version = Some(version.to_owned());
        s.storage_size = Some(Quantity(storage.to_owned()));
        resolved(&db("orders", s))
    }

    #[test]
    fn storage_shrink_is_refused() {
        let r = resolved_with("16.4.0", "10Gi");
        let out = destructive_changes(&r, &running("16.4.0", "20Gi"), &Catalog::builtin());
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(
            out[0].contains("cannot shrink from 20Gi to 10Gi"),
            "{out:?}"
        );
    }

    #[test]
    fn storage_growth_and_same_size_in_other_units_are_allowed() {
        let c = Catalog::builtin();
        assert!(destructive_changes(
            &resolved_with("16.4.0", "30Gi"),
            &running("16.4.0", "20Gi"),
            &c
        )
        .is_empty());
        assert!(destructive_changes(
            &resolved_with("16.4.0", "20480Mi"),
            &running("16.4.0", "20Gi"),
            &c
        )
        .is_empty());
    }

    #[test]
    fn version_downgrade_is_refused() {
        let r = resolved_with("15.8.0", "10Gi");
        let out = destructive_changes(&r, &running("16.4.0", "10Gi"), &Catalog::builtin());
        assert!(out.iter().any(|m| m.starts_with("spec.version")), "{out:?}");
    }

    #[test]
    fn engine_switch_is_refused() {
        let mut s = spec(Engine::Mysql, 1);
        s.storage_size = Some(Quantity("10Gi".to_owned()));
        let r = resolved(&db("orders", s));
        let out = destructive_changes(&r, &running("16.4.0", "10Gi"), &Catalog::builtin());
        assert!(out.iter().any(|m| m.starts_with("spec.engine")), "{out:?}");
    }

    #[test]
    fn storage_class_change_is_refused() {
        let mut s = spec(Engine::Postgres, 1);
        s.storage_class_name = Some("fast".to_owned());
        let r = resolved(&db("orders", s));
        let mut observed = running(&r.version.to_string(), "10Gi");
        observed.storage_class = Some("standard".to_owned());
        let out = destructive_changes(&r, &observed, &Catalog::builtin());
        assert!(
            out.iter().any(|m| m.starts_with("spec.storageClassName")),
            "{out:?}"
        );
    }

    #[test]
    fn fresh_database_has_nothing_to_refuse() {
        let r = resolved_with("16.4.0", "10Gi");
        assert!(destructive_changes(&r, &ObservedShape::default(), &Catalog::builtin()).is_empty());
    }

    #[test]
    fn invalid_spec_is_refused_with_the_api_message() {
        let mut s = spec(Engine::Postgres, 1);
        s.replicas = Some(0);
        let refusal = check_spec(&db("orders", s), &Catalog::builtin()).unwrap_err();
        assert_eq!(refusal.reason, REASON_INVALID_SPEC);
        assert!(refusal.message.contains("replicas"), "{}", refusal.message);
    }
}
