//! The conversion webhook through a real API server: the `admission` binary as a child process
//! with **managed certificates** (`--crd-name databases.example.com`, so its manager injects the
//! CA bundle into the CRD's conversion webhook), and the conversion variant of the Database CRD
//! (`api::crd::crd_with_conversion`, served v1 + v1beta1 + v1alpha1, webhook URL
//! `https://127.0.0.1:<port>/convert`). What a user of the older versions sees:
//!
//! * a Database created as `v1alpha1` (`size`, `dbVersion`, `storage`, `backup`) or `v1beta1`
//!   reads back as v1 with the documented field mapping, and lists in the older versions work;
//! * a v1 Database with v1-only fields (`storageClassName`, `config`) read as v1beta1 carries them
//!   in the `example.com/v1-spec` stash; updating it through v1beta1 (replicas) keeps them, and
//!   the stash annotation never shows up in v1;
//! * edits through v1alpha1 land in v1, and the CRD's v1alpha1 schema still denies shrinking
//!   `storage` (its CEL rule, answered by the API server);
//! * every conversion went through this server's `/convert` (`/metrics` counter).
//!
//! The CRD is cluster-scoped and shared with every other cluster test binary, so the v1-only CRD
//! (`api::crd::crd()`) is put back before the scenario (a killed earlier run) and after it, also
//! when it panics (the scenario runs in its own task). Only one `#[tokio::test]` lives here, so
//! nothing in this binary races on the CRD.

mod cluster_support;

use std::collections::BTreeMap;
use std::time::Duration;

use api::crd::ConversionEndpoint;
use api::v1::{Database, Engine};
use cluster_support::{database, Server};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::ResourceExt;
use serde_json::{json, Value};
use testkit::{cluster, wait_for, Cluster, NotYet};

const TIMEOUT: Duration = Duration::from_secs(90);
const CRD_NAME: &str = "databases.example.com";
/// Field manager of both CRD installs (so the v1-only apply drops the older versions this file
/// added).
const FIELD_MANAGER: &str = "admission-conversion-tests";
const STASH: &str = "example.com/v1-spec";

fn resource(version: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", version, "Database"),
        "databases",
    )
}

fn served_versions(crd: &CustomResourceDefinition) -> Vec<String> {
    crd.spec
        .versions
        .iter()
        .filter(|v| v.served)
        .map(|v| v.name.clone())
        .collect()
}

fn conversion_ca_bundle(crd: &CustomResourceDefinition) -> Option<Vec<u8>> {
    crd.spec
        .conversion
        .as_ref()?
        .webhook
        .as_ref()?
        .client_config
        .as_ref()?
        .ca_bundle
        .as_ref()
        .map(|b| b.0.clone())
}

/// Puts the v1-only CRD back. The injected `caBundle` belongs to the certs manager's field
/// manager, so applying `crd()` alone would leave `spec.conversion.webhook` behind with the
/// strategy defaulted to `None`, which the API server rejects: the conversion block and the
/// older versions are first dropped with a merge patch, then `crd()` is applied as usual.
async fn restore_v1_only_crd(cluster: &Cluster) {
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client().unwrap());
    if let Some(current) = crds.get_opt(CRD_NAME).await.unwrap() {
        let converting = current
            .spec
            .conversion
            .as_ref()
            .is_some_and(|c| c.strategy != "None" || c.webhook.is_some());
        if converting || current.spec.versions.len() > 1 {
            let v1_only = serde_json::to_value(api::crd::crd()).unwrap();
            let patch = json!({"spec": {
                "conversion": {"strategy": "None", "webhook": null},
                "versions": v1_only["spec"]["versions"],
            }});
            crds.patch(CRD_NAME, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
        }
    }
    cluster
        .install_crd(&api::crd::crd(), FIELD_MANAGER)
        .await
        .unwrap();
    let restored = crds.get(CRD_NAME).await.unwrap();
    assert_eq!(served_versions(&restored), ["v1"]);
    assert_eq!(
        restored
            .spec
            .conversion
            .as_ref()
            .map(|c| c.strategy.as_str()),
        Some("None")
    );
}

/// `admission_requests_total{operation="convert",decision="allowed"}` from `/metrics`.
async fn conversions_allowed(server: &Server) -> f64 {
    cluster_support::https_get(server.port, "/metrics")
        .await
        .1
        .lines()
        .filter(|l| {
            l.starts_with("admission_requests_total")
                && l.contains(r#"operation="convert""#)
                && l.contains(r#"decision="allowed""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_converts_databases_between_versions_through_the_binary() {
    let cluster = cluster().await.unwrap();
    // A run killed before its cleanup may have left the CRD pointing at a dead webhook.
    restore_v1_only_crd(cluster).await;
    let outcome = tokio::spawn(scenario(cluster)).await;
    // The scenario's task has ended (the server is killed), panicked or not: put the CRD back.
    restore_v1_only_crd(cluster).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
    // With the v1-only CRD back, v1 reads work without any webhook.
    let dbs: Api<Database> = Api::all(cluster.client().unwrap());
    dbs.list(&Default::default()).await.unwrap();
}

async fn scenario(cluster: &'static Cluster) {
    let client = cluster.client().unwrap();
    let ns = cluster.namespace("adm-conv").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // No webhook configuration of that name exists: only the CRD gets a caBundle.
    let config_name = format!("admission-conversion-unused-{}", ns.name());
    let server = Server::start_managed(
        cluster.kubeconfig_path(),
        ns.name(),
        &config_name,
        dir.path(),
        &["--crd-name", CRD_NAME],
        TIMEOUT,
    )
    .await;

    // 1. The conversion CRD, pointing at this server, without caBundle.
    let crd = api::crd::crd_with_conversion(&ConversionEndpoint::Url(format!(
        "https://127.0.0.1:{}/convert",
        server.port
    )));
    assert_eq!(served_versions(&crd), ["v1", "v1beta1", "v1alpha1"]);
    let conversion = crd.spec.conversion.as_ref().unwrap();
    assert_eq!(conversion.strategy, "Webhook");
    assert_eq!(conversion_ca_bundle(&crd), None);
    cluster.install_crd(&crd, FIELD_MANAGER).await.unwrap();

    // 2. The manager injects the Secret's CA bundle into the CRD's conversion clientConfig.
    let secrets: Api<Secret> = ns.api();
    let secret = wait_for(TIMEOUT, "the certificate Secret", || async {
        secrets
            .get_opt("db-operator-webhook-tls")
            .await?
            .ok_or_else(|| NotYet::new("absent"))
    })
    .await
    .unwrap();
    let bundle = secret.data.as_ref().unwrap()["ca-bundle.crt"].0.clone();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    wait_for(TIMEOUT, "caBundle injected into the CRD", || async {
        let stored = crds.get(CRD_NAME).await?;
        (conversion_ca_bundle(&stored).as_ref() == Some(&bundle))
            .then_some(())
            .ok_or_else(|| NotYet::new("not yet injected"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nserver log:\n{}", server.log_text()));
    let conversions_before = conversions_allowed(&server).await;

    let alpha_api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns.name(), &resource("v1alpha1"));
    let beta_api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns.name(), &resource("v1beta1"));
    let v1_api: Api<Database> = ns.api();

    // 3. Created as v1alpha1 (storing it needs a conversion to v1, so retry until the API server
    // has loaded the injected bundle), read back as v1 with the documented mapping.
    let alpha: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "example.com/v1alpha1", "kind": "Database",
        "metadata": {"name": "alpha"},
        "spec": {"size": "3", "dbVersion": "16.4.0", "storage": "20Gi", "backup": true},
    }))
    .unwrap();
    wait_for(TIMEOUT, "a v1alpha1 Database to be stored", || async {
        match alpha_api.create(&PostParams::default(), &alpha).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(NotYet::new(format!("{e}"))),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nserver log:\n{}", server.log_text()));
    let alpha_v1 = v1_api.get("alpha").await.unwrap();
    assert_eq!(alpha_v1.spec.replicas, Some(3), "size -> replicas");
    assert_eq!(alpha_v1.spec.version.as_deref(), Some("16.4.0"));
    assert_eq!(
        alpha_v1.spec.storage_size.as_ref().map(|q| q.0.as_str()),
        Some("20Gi")
    );
    assert_eq!(
        alpha_v1.spec.backup_schedule.as_deref(),
        Some("@daily"),
        "backup: true means a daily schedule"
    );
    assert_eq!(alpha_v1.spec.engine, None);
    assert!(!alpha_v1.annotations().contains_key(STASH));

    // Created as v1beta1: the shared fields arrive unchanged, v1-only fields stay absent.
    let beta: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "example.com/v1beta1", "kind": "Database",
        "metadata": {"name": "beta"},
        "spec": {"engine": "mysql", "replicas": 2, "version": "8.4.7", "storageSize": "5Gi",
                 "backupSchedule": "0 3 * * *",
                 "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}}},
    }))
    .unwrap();
    beta_api
        .create(&PostParams::default(), &beta)
        .await
        .unwrap();
    let beta_v1 = v1_api.get("beta").await.unwrap();
    assert_eq!(beta_v1.spec.engine, Some(Engine::Mysql));
    assert_eq!(beta_v1.spec.replicas, Some(2));
    assert_eq!(beta_v1.spec.version.as_deref(), Some("8.4.7"));
    assert_eq!(
        beta_v1.spec.storage_size.as_ref().map(|q| q.0.as_str()),
        Some("5Gi")
    );
    assert_eq!(beta_v1.spec.backup_schedule.as_deref(), Some("0 3 * * *"));
    let requests = beta_v1
        .spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .unwrap();
    assert_eq!(requests["cpu"].0, "250m");
    assert_eq!(requests["memory"].0, "512Mi");
    assert_eq!(beta_v1.spec.storage_class_name, None);
    assert_eq!(beta_v1.spec.config, None);
    assert!(!beta_v1.annotations().contains_key(STASH));

    // The v1beta1 object read as v1alpha1: the shape a v1alpha1 client knows, and the engine
    // (which v1alpha1 cannot hold) in the stash.
    let beta_alpha = alpha_api.get("beta").await.unwrap();
    assert_eq!(beta_alpha.data["spec"]["size"], "2");
    assert_eq!(beta_alpha.data["spec"]["dbVersion"], "8.4.7");
    assert_eq!(beta_alpha.data["spec"]["storage"], "5Gi");
    assert_eq!(beta_alpha.data["spec"]["backup"], true);
    assert!(beta_alpha.annotations()[STASH].contains("mysql"));

    // 4. A v1 Database with v1-only fields, read as v1beta1 and updated through v1beta1.
    let gamma = database(
        "gamma",
        json!({"engine": "postgres", "replicas": 1, "version": "17.7.0", "storageSize": "10Gi",
               "storageClassName": "fast", "config": {"max_connections": "200", "work_mem": "8MB"}}),
    );
    v1_api.create(&PostParams::default(), &gamma).await.unwrap();
    let mut gamma_beta = beta_api.get("gamma").await.unwrap();
    assert_eq!(
        gamma_beta.types.as_ref().unwrap().api_version,
        "example.com/v1beta1"
    );
    let spec = gamma_beta.data["spec"].as_object().unwrap();
    assert!(
        !spec.contains_key("storageClassName") && !spec.contains_key("config"),
        "v1beta1 has no storageClassName/config: {spec:?}"
    );
    assert_eq!(spec["replicas"], 1);
    let stash: Value = serde_json::from_str(&gamma_beta.annotations()[STASH]).unwrap();
    assert_eq!(stash["storageClassName"], "fast");

    gamma_beta.data["spec"]["replicas"] = json!(3);
    beta_api
        .replace("gamma", &PostParams::default(), &gamma_beta)
        .await
        .unwrap_or_else(|e| panic!("update through v1beta1: {e}"));
    let gamma_v1 = v1_api.get("gamma").await.unwrap();
    assert_eq!(gamma_v1.spec.replicas, Some(3), "the v1beta1 edit is kept");
    assert_eq!(
        gamma_v1.spec.storage_class_name.as_deref(),
        Some("fast"),
        "storageClassName survives a v1beta1 update"
    );
    let expected_config: BTreeMap<String, String> = [
        ("max_connections".to_owned(), "200".to_owned()),
        ("work_mem".to_owned(), "8MB".to_owned()),
    ]
    .into();
    assert_eq!(gamma_v1.spec.config, Some(expected_config));
    assert!(
        !gamma_v1.annotations().contains_key(STASH),
        "the stash never shows in v1: {:?}",
        gamma_v1.annotations()
    );

    // Edits through v1alpha1 land in v1; the CRD's v1alpha1 schema keeps the storage rule.
    let mut alpha_alpha = alpha_api.get("alpha").await.unwrap();
    let mut shrink = alpha_alpha.clone();
    shrink.data["spec"]["storage"] = json!("10Gi");
    match alpha_api
        .replace("alpha", &PostParams::default(), &shrink)
        .await
    {
        Err(kube::Error::Api(s)) => assert!(
            s.code == 422 && s.message.contains("storage cannot shrink"),
            "{s:?}"
        ),
        other => panic!("shrinking storage through v1alpha1 was not denied: {other:?}"),
    }
    alpha_alpha.data["spec"]["size"] = json!("4");
    alpha_alpha.data["spec"]["storage"] = json!("30Gi");
    alpha_api
        .replace("alpha", &PostParams::default(), &alpha_alpha)
        .await
        .unwrap_or_else(|e| panic!("update through v1alpha1: {e}"));
    let alpha_v1 = v1_api.get("alpha").await.unwrap();
    assert_eq!(alpha_v1.spec.replicas, Some(4));
    assert_eq!(
        alpha_v1.spec.storage_size.as_ref().map(|q| q.0.as_str()),
        Some("30Gi")
    );
    assert_eq!(alpha_v1.spec.backup_schedule.as_deref(), Some("@daily"));

    // Lists in an older version convert every item.
    let listed = alpha_api.list(&Default::default()).await.unwrap();
    let mut sizes: Vec<(String, Value)> = listed
        .items
        .iter()
        .map(|o| (o.name_any(), o.data["spec"]["size"].clone()))
        .collect();
    sizes.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        sizes,
        [
            ("alpha".to_owned(), json!("4")),
            ("beta".to_owned(), json!("2")),
            ("gamma".to_owned(), json!("3")),
        ]
    );

    // All of it went through this server's /convert.
    let conversions = conversions_allowed(&server).await - conversions_before;
    assert!(
        conversions >= 5.0,
        "expected the API server to call /convert, saw {conversions} conversions"
    );
    println!("conversion reviews answered by the server: {conversions}");

    drop(server);
    ns.cleanup().await.unwrap();
}
