//! The `Database` API (`example.com`): versioned types with v1 as the hub, the version catalog,
//! and the pure rules over them — validation, defaulting, conversion, resolution for the
//! reconciler, and CRD generation.
//!
//! Everything here is pure: no I/O, no async, no clock unless a caller asks for "now". The
//! admission server and the reconciler both call these rules, so they can never disagree.
#![forbid(unsafe_code)]

pub mod catalog;
pub mod conversion;
pub mod crd;
pub mod defaulting;
pub mod quantity;
pub mod resolved;
pub mod v1;
pub mod v1alpha1;
pub mod v1beta1;
pub mod validation;

/// Annotation on a Database: when `"true"`, the reconciler deletes the PersistentVolumeClaims
/// when the Database is deleted. Without it the volumes (and the data) are kept.
pub const ANNOTATION_DELETE_PVCS: &str = "example.com/delete-pvcs-on-delete";

pub use catalog::Catalog;
pub use v1::{Database, DatabaseSpec, DatabaseStatus, Engine, Phase};
pub use validation::{FieldError, Verdict};
