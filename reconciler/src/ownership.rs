//! Ownership is a hard line: a child name is ours only if the object under it carries this
//! Database's controller ownerReference (or, for the unowned backup PVC, was created by this
//! operator for a Database of this name). Anything else under one of our names is a
//! conflict: it is reported, never modified, adopted or deleted.

use api::v1::Database;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use crate::desired::{
    COMPONENT_BACKUP, LABEL_COMPONENT, LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGED_BY,
};

pub const REASON_NAME_CONFLICT: &str = "NameConflict";

/// True when `meta` has a controller ownerReference to `db` (matched by uid).
pub fn controlled_by(meta: &ObjectMeta, db: &Database) -> bool {
    let Some(uid) = db.metadata.uid.as_deref() else {
        return false;
    };
    meta.owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid == uid)
}

/// The backup PVC is deliberately not owned (backups outlive the Database, like data PVCs, and
/// a re-created Database of the same name picks them up again). It counts as ours when this
/// operator created it for a Database of this name: our managed-by, instance and component
/// labels. A user's PVC that happens to be named `<name>-backups` has none of them.
pub fn backup_pvc_is_ours(pvc: &PersistentVolumeClaim, db_name: &str) -> bool {
    let labels = pvc.labels();
    labels.get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGED_BY)
        && labels.get(LABEL_INSTANCE).map(String::as_str) == Some(db_name)
        && labels.get(LABEL_COMPONENT).map(String::as_str) == Some(COMPONENT_BACKUP)
}

/// An object under one of our names that is not ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub kind: &'static str,
    pub name: String,
}

/// What was found under one child name.
#[derive(Debug, Clone)]
pub enum Found<K> {
    Absent,
    Ours(K),
    Foreign,
}

impl<K> Found<K> {
    /// Classifies an observed object with `is_ours`.
    pub fn classify(observed: Option<K>, is_ours: impl FnOnce(&K) -> bool) -> Self {
        match observed {
            None => Found::Absent,
            Some(o) if is_ours(&o) => Found::Ours(o),
            Some(_) => Found::Foreign,
        }
    }

    /// The object if it is ours.
    pub fn ours(&self) -> Option<&K> {
        match self {
            Found::Ours(o) => Some(o),
            _ => None,
        }
    }

    pub fn is_foreign(&self) -> bool {
        matches!(self, Found::Foreign)
    }
}

/// Status/event message for a set of conflicts, with what the user does about it.
pub fn conflict_message(db_name: &str, conflicts: &[Conflict]) -> String {
    let list = conflicts
        .iter()
        .map(|c| format!("{} {}", c.kind, c.name))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "name conflict: {list} already exist(s) without Database {db_name}'s controller ownerReference; \
         the operator does not modify, adopt or delete them and creates nothing for this Database \
         until they are gone. Rename or delete them (or use another Database name); reconciling \
         resumes by itself"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::tests::{db, spec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use std::collections::BTreeMap;

    fn owner(uid: &str, controller: Option<bool>) -> OwnerReference {
        OwnerReference {
            api_version: "example.com/v1".into(),
            kind: "Database".into(),
            name: "orders".into(),
            uid: uid.into(),
            controller,
            ..Default::default()
        }
    }

    #[test]
    fn only_our_controller_reference_makes_an_object_ours() {
        let d = db("orders", spec(api::v1::Engine::Postgres, 1));
        let uid = d.metadata.uid.clone().unwrap();
        let rows = [
            ("no_owner_is_foreign", vec![], false),
            (
                "our_controller_ref_is_ours",
                vec![owner(&uid, Some(true))],
                true,
            ),
            (
                "our_non_controller_ref_is_foreign",
                vec![owner(&uid, None)],
                false,
            ),
            (
                "other_database_controller_is_foreign",
                vec![owner("other-uid", Some(true))],
                false,
            ),
        ];
        for (name, refs, want) in rows {
            let meta = ObjectMeta {
                owner_references: Some(refs),
                ..Default::default()
            };
            assert_eq!(controlled_by(&meta, &d), want, "{name}");
        }
    }

    #[test]
    fn backup_pvc_is_ours_only_with_all_our_labels() {
        let ours = BTreeMap::from([
            (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
            (LABEL_INSTANCE.to_owned(), "orders".to_owned()),
            (LABEL_COMPONENT.to_owned(), COMPONENT_BACKUP.to_owned()),
        ]);
        let mut other_instance = ours.clone();
        other_instance.insert(LABEL_INSTANCE.to_owned(), "shop".to_owned());
        let mut no_manager = ours.clone();
        no_manager.remove(LABEL_MANAGED_BY);
        let rows = [
            ("our_labels_are_ours", Some(ours), true),
            ("unlabelled_is_foreign", None, false),
            ("other_instance_is_foreign", Some(other_instance), false),
            ("missing_managed_by_is_foreign", Some(no_manager), false),
        ];
        for (name, labels, want) in rows {
            let pvc = PersistentVolumeClaim {
                metadata: ObjectMeta {
                    labels,
                    ..Default::default()
                },
                ..Default::default()
            };
            assert_eq!(backup_pvc_is_ours(&pvc, "orders"), want, "{name}");
        }
    }

    #[test]
    fn conflict_message_names_kind_and_name_and_the_way_out() {
        let m = conflict_message(
            "shop",
            &[
                Conflict {
                    kind: "Service",
                    name: "shop".into(),
                },
                Conflict {
                    kind: "ConfigMap",
                    name: "shop-config".into(),
                },
            ],
        );
        assert!(m.contains("Service shop, ConfigMap shop-config"), "{m}");
        assert!(m.contains("Rename or delete them"), "{m}");
    }
}
