//! Against the local control plane (`testkit::cluster()`, started by `deploy/local/up` when not
//! running): the namespace cache follows real Namespace labels, and the API server itself calls
//! this server as the validating and mutating webhook for Databases, so `kubectl apply` gets our
//! defaults and our denials.
//!
//! The webhook configurations only select this test's namespace, so other tests are unaffected.

mod cluster_support;
mod common;

use std::time::Duration;

use admission::namespaces::NamespaceCache;
use admission::Limits;
use api::v1::Database;
use base64::Engine as _;
use cluster_support::{database, database_webhook_configurations, webhook_test_setup};
use common::TestServer;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;
use testkit::{cluster, wait_for, NotYet};

const TIMEOUT: Duration = Duration::from_secs(60);

async fn label_production(client: kube::Client, namespace: &str, production: bool) {
    let value = if production {
        json!("production")
    } else {
        json!(null)
    };
    Api::<Namespace>::all(client)
        .patch(
            namespace,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"environment": value}}})),
        )
        .await
        .unwrap();
}

async fn wait_production(cache: &NamespaceCache, namespace: &str, want: Option<bool>) {
    wait_for(TIMEOUT, "namespace cache to see the label", || async {
        match cache.production_namespace(Some(namespace)) {
            got if got == want => Ok(()),
            got => Err(NotYet::new(format!("production_namespace={got:?}"))),
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_cache_follows_the_production_label() {
    let cluster = cluster().await.unwrap();
    let ns = cluster.namespace("adm-nscache").await.unwrap();
    let client = cluster.client().unwrap();
    let (cache, task) = NamespaceCache::watch(client.clone());
    wait_for(TIMEOUT, "namespace cache to sync", || async {
        if cache.is_ready() {
            Ok(())
        } else {
            Err(NotYet::new("not synced"))
        }
    })
    .await
    .unwrap();
    wait_production(&cache, ns.name(), Some(false)).await;
    label_production(client.clone(), ns.name(), true).await;
    wait_production(&cache, ns.name(), Some(true)).await;
    label_production(client.clone(), ns.name(), false).await;
    wait_production(&cache, ns.name(), Some(false)).await;
    task.abort();
    ns.cleanup().await.unwrap();
}

const MANAGED_BY: &str = "admission-tests";
const CONFIG_PREFIX: &str = "admission-test-";

fn denial(result: Result<Database, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(status)) => status.message,
        Ok(db) => panic!(
            "expected a denial, {} was admitted: {:?}",
            db.name_any(),
            db.spec
        ),
        Err(other) => panic!("expected a denial, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_defaults_and_denies_databases_through_the_webhooks() {
    let (_, client, ns) = webhook_test_setup(MANAGED_BY, CONFIG_PREFIX, "adm-webhook").await;
    let (cache, watch) = NamespaceCache::watch(client.clone());
    let server = TestServer::start_with(Limits::default(), cache.clone()).await;
    let port = server.addr.port();
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(&server.ca_pem);
    let config_name = format!("{CONFIG_PREFIX}{}", ns.name());

    let (validating, mutating) = database_webhook_configurations(
        &config_name,
        MANAGED_BY,
        port,
        ns.name(),
        Some(ca_bundle.as_str()),
    );
    let vwc: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let mwc: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    vwc.create(&PostParams::default(), &validating)
        .await
        .unwrap();
    mwc.create(&PostParams::default(), &mutating).await.unwrap();

    let dbs: Api<Database> = ns.api();
    // The API server picks up new webhook configurations asynchronously: wait for our denial.
    // (Rules the CRD schema or its CEL backstops also enforce are answered by the API server
    // before validating webhooks run, so the probes use rules only the webhook has.)
    let invalid = database("owned-key", json!({"config": {"data_directory": "/tmp"}}));
    let message = wait_for(TIMEOUT, "the validating webhook to be called", || async {
        match dbs
            .create(
                &PostParams {
                    dry_run: true,
                    ..PostParams::default()
                },
                &invalid,
            )
            .await
        {
            Err(kube::Error::Api(status)) if status.message.contains("spec.config") => {
                Ok(status.message)
            }
            other => Err(NotYet::new(format!("{other:?}"))),
        }
    })
    .await
    .unwrap();
    assert!(
        message.contains("admission webhook \"validate.databases.example.com\" denied the request: spec.config.data_directory"),
        "{message}"
    );

    // Defaults come from /mutate, in a namespace without the production label.
    let created = dbs
        .create(&PostParams::default(), &database("orders", json!({})))
        .await
        .unwrap();
    let spec = serde_json::to_value(&created.spec).unwrap();
    assert_eq!(
        spec,
        json!({"engine": "postgres", "version": "17.7.0", "replicas": 1, "storageSize": "10Gi",
               "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}}})
    );

    // Labelled production: 3 replicas, read from the watch-fed cache.
    label_production(client.clone(), ns.name(), true).await;
    wait_production(&cache, ns.name(), Some(true)).await;
    let prod = dbs
        .create(
            &PostParams::default(),
            &database("ledger", json!({"engine": "mysql"})),
        )
        .await
        .unwrap();
    assert_eq!(
        (prod.spec.replicas, prod.spec.version.as_deref()),
        (Some(3), Some("8.4.7"))
    );

    // Every violation in one answer.
    let message = denial(
        dbs.create(
            &PostParams::default(),
            &database(
                "several",
                json!({"version": "8.4.7", "storageSize": "512Mi", "backupSchedule": "0 0 2 * * *"}),
            ),
        )
        .await,
    );
    for fragment in [
        "spec.version: 8.4.7 is a mysql version; set spec.engine: mysql",
        "spec.storageSize: 512Mi is below the minimum of 1Gi",
        "six fields",
    ] {
        assert!(
            message.contains(fragment),
            "{fragment:?} missing from {message}"
        );
    }

    // UPDATE rules see the stored object as oldObject: 16 -> 18 skips a line.
    let old = dbs
        .create(
            &PostParams::default(),
            &database("billing", json!({"version": "16.10.0"})),
        )
        .await
        .unwrap();
    let mut skipping = old.clone();
    skipping.spec.version = Some("18.1.0".into());
    let message = denial(
        dbs.replace("billing", &PostParams::default(), &skipping)
            .await,
    );
    assert!(
        message.contains("cannot upgrade from 16.10.0 to 18.1.0 in one step"),
        "{message}"
    );
    let mut upgrading = old;
    upgrading.spec.version = Some("17.7.0".into());
    dbs.replace("billing", &PostParams::default(), &upgrading)
        .await
        .unwrap();

    vwc.delete(&config_name, &DeleteParams::default())
        .await
        .unwrap();
    mwc.delete(&config_name, &DeleteParams::default())
        .await
        .unwrap();
    server.stop().await;
    watch.abort();
    ns.cleanup().await.unwrap();
}
