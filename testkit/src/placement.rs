//! Where test pods land. The local cluster has one real node (kubelet + containerd, pods run)
//! and kwok's fake nodes, tainted `kwok.x-k8s.io/node=fake:NoSchedule` and labelled `type=kwok`,
//! so only pods that ask for them go there (deploy/local/README.md). Tests that need no running
//! process (scale, ownership, status plumbing) put their pods on kwok with these.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;

/// The label every kwok node carries.
pub const KWOK_NODE_LABEL: (&str, &str) = ("type", "kwok");

/// Selects kwok's fake nodes.
pub fn kwok_node_selector() -> BTreeMap<String, String> {
    [(KWOK_NODE_LABEL.0.to_owned(), KWOK_NODE_LABEL.1.to_owned())].into()
}

/// Tolerates kwok's taint.
pub fn kwok_tolerations() -> Vec<Toleration> {
    vec![Toleration {
        key: Some("kwok.x-k8s.io/node".into()),
        operator: Some("Equal".into()),
        value: Some("fake".into()),
        effect: Some("NoSchedule".into()),
        ..Toleration::default()
    }]
}
