//! CRD generation from the Rust types. (Work in progress.)

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The Database CRD.
pub fn crd() -> CustomResourceDefinition {
    crate::v1::Database::crd()
}

/// The CRD as YAML.
pub fn crd_yaml() -> String {
    serde_yaml::to_string(&crd()).unwrap_or_default()
}
