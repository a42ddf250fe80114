//! Proves the local control plane is a real Kubernetes: controllers, scheduler, kwok nodes,
//! garbage collection, RBAC and CRDs all behave as in a production cluster.
//! Needs `deploy/local/up` (started automatically by `testkit::cluster()` when not running).
use std::time::Duration;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec, Pod,
    PodSpec, PodTemplateSpec, Secret, ServiceAccount, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, ObjectMeta,
    PostParams,
};
use kube::runtime::conditions;
use serde_json::json;
use testkit::{await_condition, cluster, wait_for, NotYet};

const TIMEOUT: Duration = Duration::from_secs(120);

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    }
}

#[tokio::test]
async fn api_server_reports_the_pinned_version() {
    let cluster = cluster().await.unwrap();
    let version = cluster.client().unwrap().apiserver_version().await.unwrap();
    assert_eq!(version.git_version, "v1.36.3");
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "36")
    );
}

#[tokio::test]
async fn statefulset_with_volume_claims_gets_ready_pods_on_a_kwok_node() {
    let ns = cluster()
        .await
        .unwrap()
        .namespace("statefulset")
        .await
        .unwrap();
    let labels = std::collections::BTreeMap::from([("app".to_owned(), "web".to_owned())]);
    let sts = StatefulSet {
        metadata: meta("web"),
        spec: Some(StatefulSetSpec {
            replicas: Some(2),
            service_name: Some("web".into()),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "db".into(),
                        image: Some("registry.k8s.io/pause:3.10".into()),
                        volume_mounts: Some(vec![VolumeMount {
                            name: "data".into(),
                            mount_path: "/data".into(),
                            ..VolumeMount::default()
                        }]),
                        ..Container::default()
                    }],
                    // kwok's fake nodes are tainted (deploy/local/README.md): tolerate and select them.
                    node_selector: Some(testkit::kwok_node_selector()),
                    tolerations: Some(testkit::kwok_tolerations()),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: meta("data"),
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    storage_class_name: Some("standard".into()),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some([("storage".to_owned(), Quantity("1Gi".into()))].into()),
                        ..VolumeResourceRequirements::default()
                    }),
                    ..PersistentVolumeClaimSpec::default()
                }),
                ..PersistentVolumeClaim::default()
            }]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    };
    let statefulsets: Api<StatefulSet> = ns.api();
    statefulsets
        .create(&PostParams::default(), &sts)
        .await
        .unwrap();

    await_condition(
        &statefulsets,
        "web",
        TIMEOUT,
        "StatefulSet web to have 2 ready replicas",
        |s: Option<&StatefulSet>| {
            s.and_then(|s| s.status.as_ref())
                .and_then(|st| st.ready_replicas)
                == Some(2)
        },
    )
    .await
    .unwrap();

    let pods: Api<Pod> = ns.api();
    let pods = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    let mut names: Vec<_> = pods
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["web-0", "web-1"]);
    for pod in &pods.items {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or_default();
        assert!(
            node.starts_with("kwok-node-"),
            "pod {:?} scheduled on {node:?}",
            pod.metadata.name
        );
        assert_eq!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Running")
        );
    }

    let claims: Api<PersistentVolumeClaim> = ns.api();
    let volumes: Api<PersistentVolume> = Api::all(ns.client());
    for claim in ["data-web-0", "data-web-1"] {
        // The PV controller records the binding in the claim's status on its own schedule,
        // which can trail the pod starting (the scheduler reads the PV's claimRef).
        let pvc = wait_for(
            Duration::from_secs(30),
            &format!("claim {claim} Bound"),
            || async {
                let pvc = claims.get(claim).await.map_err(NotYet::from)?;
                match pvc.status.as_ref().and_then(|s| s.phase.as_deref()) {
                    Some("Bound") => Ok(pvc),
                    other => Err(NotYet::new(format!("phase {other:?}"))),
                }
            },
        )
        .await
        .unwrap();
        let pv_name = pvc
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .unwrap();
        let pv = volumes.get(&pv_name).await.unwrap();
        assert_eq!(
            pv.spec
                .as_ref()
                .and_then(|s| s.storage_class_name.as_deref()),
            Some("standard")
        );
    }
    ns.cleanup().await.unwrap();
}

#[tokio::test]
async fn deleting_an_owner_garbage_collects_its_dependents() {
    let ns = cluster()
        .await
        .unwrap()
        .namespace("garbage-collector")
        .await
        .unwrap();
    let config_maps: Api<ConfigMap> = ns.api();
    let secrets: Api<Secret> = ns.api();
    let owner = config_maps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: meta("owner"),
                ..ConfigMap::default()
            },
        )
        .await
        .unwrap();
    let owned_by = OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: "owner".into(),
        uid: owner.metadata.uid.clone().unwrap(),
        ..OwnerReference::default()
    };
    let dependent = Secret {
        metadata: ObjectMeta {
            owner_references: Some(vec![owned_by]),
            ..meta("dependent")
        },
        ..Secret::default()
    };
    secrets
        .create(&PostParams::default(), &dependent)
        .await
        .unwrap();
    let unowned = Secret {
        metadata: meta("unowned"),
        ..Secret::default()
    };
    secrets
        .create(&PostParams::default(), &unowned)
        .await
        .unwrap();

    config_maps
        .delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    await_condition(
        &secrets,
        "dependent",
        Duration::from_secs(60),
        "the garbage collector to delete Secret dependent",
        |s: Option<&Secret>| s.is_none(),
    )
    .await
    .unwrap();
    assert!(
        secrets.get_opt("unowned").await.unwrap().is_some(),
        "a Secret without owner must survive"
    );
    ns.cleanup().await.unwrap();
}

#[tokio::test]
async fn service_account_is_allowed_only_what_its_role_grants() {
    let cluster = cluster().await.unwrap();
    let ns = cluster.namespace("rbac").await.unwrap();
    let accounts: Api<ServiceAccount> = ns.api();
    accounts
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: meta("reader"),
                ..ServiceAccount::default()
            },
        )
        .await
        .unwrap();
    let role = Role {
        metadata: meta("configmap-reader"),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: vec!["get".into(), "list".into()],
            ..PolicyRule::default()
        }]),
    };
    ns.api::<Role>()
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding = RoleBinding {
        metadata: meta("reader-reads-configmaps"),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: "configmap-reader".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "reader".into(),
            namespace: Some(ns.name().into()),
            ..Subject::default()
        }]),
    };
    ns.api::<RoleBinding>()
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();

    let reader = cluster
        .client_as_service_account(ns.name(), "reader")
        .unwrap();
    let reader_config_maps: Api<ConfigMap> = Api::namespaced(reader.clone(), ns.name());
    let reader_secrets: Api<Secret> = Api::namespaced(reader.clone(), ns.name());
    let elsewhere: Api<ConfigMap> = Api::namespaced(reader, "default");

    // RBAC caches are eventually consistent; the grant is visible within seconds.
    wait_for(
        Duration::from_secs(30),
        "the reader to be allowed to list ConfigMaps",
        || async {
            reader_config_maps
                .list(&ListParams::default())
                .await
                .map(|_| ())
                .map_err(NotYet::from)
        },
    )
    .await
    .unwrap();

    let forbidden = |result: Result<_, kube::Error>| matches!(result, Err(kube::Error::Api(s)) if s.code == 403);
    assert!(
        forbidden(
            reader_config_maps
                .create(
                    &PostParams::default(),
                    &ConfigMap {
                        metadata: meta("x"),
                        ..ConfigMap::default()
                    }
                )
                .await
                .map(|_| ())
        ),
        "create is not granted"
    );
    assert!(
        forbidden(
            reader_secrets
                .list(&ListParams::default())
                .await
                .map(|_| ())
        ),
        "secrets are not granted"
    );
    assert!(
        forbidden(elsewhere.list(&ListParams::default()).await.map(|_| ())),
        "the Role grants nothing outside its namespace"
    );
    ns.cleanup().await.unwrap();
}

#[tokio::test]
async fn custom_resource_definition_installs_and_serves_its_resource() {
    let cluster = cluster().await.unwrap();
    let ns = cluster.namespace("crd").await.unwrap();
    // CRDs are cluster-scoped: a group per test namespace keeps parallel runs apart.
    let group = format!("{}.testkit.example.com", ns.name());
    let crd_name = format!("widgets.{group}");
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": crd_name },
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": { "plural": "widgets", "singular": "widget", "kind": "Widget" },
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": { "spec": {
                        "type": "object",
                        "properties": { "size": { "type": "integer", "minimum": 1 } }
                    } }
                } }
            }]
        }
    }))
    .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(ns.client());
    crds.create(&PostParams::default(), &crd).await.unwrap();
    await_condition(
        &crds,
        &crd_name,
        Duration::from_secs(60),
        "the Widget CRD to be established",
        conditions::is_crd_established(),
    )
    .await
    .unwrap();

    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(&group, "v1", "Widget"));
    let widgets: Api<DynamicObject> = Api::namespaced_with(ns.client(), ns.name(), &resource);
    let widget =
        |size: i64| DynamicObject::new("w", &resource).data(json!({ "spec": { "size": size } }));
    // Discovery of a new resource takes a moment after Established.
    let created = wait_for(
        Duration::from_secs(30),
        "the API server to serve widgets",
        || async {
            widgets
                .create(&PostParams::default(), &widget(3))
                .await
                .map_err(NotYet::from)
        },
    )
    .await
    .unwrap();
    assert_eq!(created.data["spec"]["size"], 3);
    assert_eq!(widgets.get("w").await.unwrap().data["spec"]["size"], 3);
    // The schema is enforced by the server.
    let invalid = DynamicObject::new("w2", &resource).data(json!({ "spec": { "size": 0 } }));
    let err = widgets
        .create(&PostParams::default(), &invalid)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 422),
        "{err}"
    );

    crds.delete(&crd_name, &DeleteParams::default())
        .await
        .unwrap();
    ns.cleanup().await.unwrap();
}
