//! The `admission` binary as it runs on a cluster, against the local control plane: started as
//! a child process with **managed certificates** (no certificate given: its `certs` manager
//! creates the Secret in the test namespace, writes the files it serves and injects the CA
//! bundle into webhook configurations registered without one), then called by the real API
//! server. Shows what a user of `kubectl` sees:
//!
//! * an invalid Database is denied by `kubectl apply` with every field error in the message;
//! * a valid one is stored with defaults filled;
//! * a server-side dry run (`dryRun=All`, `kubectl --dry-run=server`) returns the defaulted
//!   object and leaves nothing behind;
//! * warnings reach the client (`Warning:` lines on kubectl's stderr);
//! * the webhooks never see objects outside their scope: a Database in a namespace their
//!   selector does not match is stored untouched, a ConfigMap is never sent (request counters
//!   on `/metrics` do not move).
//!
//! `tests/cluster.rs` covers the rules through an in-process server with a fixed test CA
//! (production default, UPDATE rules); the `certs` crate's tests cover rotation under load and
//! repair of a deleted Secret or caBundle. The webhook configurations here select only this
//! test's namespace, so parallel tests are unaffected.

mod cluster_support;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use api::v1::Database;
use cluster_support::{database, database_webhook_configurations, webhook_test_setup, Server};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use testkit::{wait_for, NotYet};

const TIMEOUT: Duration = Duration::from_secs(90);
/// Label value of the configurations this file creates (distinct from `tests/cluster.rs`'s,
/// whose sweep would otherwise delete ours).
const MANAGED_BY: &str = "admission-e2e-tests";
const CONFIG_PREFIX: &str = "admission-e2e-";

fn kubectl_path() -> PathBuf {
    let dir = std::env::var_os("DBOP_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(".cache/db-operator/k8s/v1.36.3/bin")
        });
    let kubectl = dir.join("kubectl");
    assert!(
        kubectl.exists(),
        "kubectl not found at {} (run through deploy/local/test-env)",
        kubectl.display()
    );
    kubectl
}

/// Runs kubectl against the test cluster with `manifest` on stdin.
fn kubectl(kubeconfig: &std::path::Path, args: &[&str], manifest: &str) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifest.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_calls_the_binary_with_managed_certificates_as_kubectl_users_see_it() {
    let (cluster, client, ns) = webhook_test_setup(MANAGED_BY, CONFIG_PREFIX, "adm-e2e").await;
    let other = cluster.namespace("adm-e2e-other").await.unwrap();
    let config_name = format!("{CONFIG_PREFIX}{}", ns.name());
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = cluster.kubeconfig_path();

    // Registered without caBundle once the server's port is known; the server's certificate
    // manager watches them and injects the bundle.
    let vwc: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let mwc: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let server = {
        let server = Server::start_managed(
            cluster.kubeconfig_path(),
            ns.name(),
            &config_name,
            dir.path(),
            &[],
            TIMEOUT,
        )
        .await;
        let (validating, mutating) =
            database_webhook_configurations(&config_name, MANAGED_BY, server.port, ns.name(), None);
        vwc.create(&PostParams::default(), &validating)
            .await
            .unwrap();
        mwc.create(&PostParams::default(), &mutating).await.unwrap();
        server
    };

    // The manager created the Secret in the test namespace and injects its CA bundle (only
    // the CA) into both configurations; the server serves the Secret's leaf.
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
    wait_for(
        TIMEOUT,
        "caBundle injected into both configurations",
        || async {
            let v = vwc.get(&config_name).await?.webhooks.unwrap_or_default();
            let m = mwc.get(&config_name).await?.webhooks.unwrap_or_default();
            let injected = v
                .iter()
                .map(|w| w.client_config.ca_bundle.clone())
                .chain(m.iter().map(|w| w.client_config.ca_bundle.clone()))
                .all(|b| b.map(|b| b.0) == Some(bundle.clone()));
            injected
                .then_some(())
                .ok_or_else(|| NotYet::new("not yet injected"))
        },
    )
    .await
    .unwrap();

    let dbs: Api<Database> = ns.api();
    // The API server loads webhook configurations asynchronously: wait until our webhook
    // answers (a rule only the webhook has, so the CRD schema cannot answer first).
    let owned_key = database("owned-key", json!({"config": {"data_directory": "/tmp"}}));
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    wait_for(
        TIMEOUT,
        "the API server to call the validating webhook",
        || async {
            match dbs.create(&dry_run, &owned_key).await {
                Err(kube::Error::Api(status)) if status.message.contains("spec.config") => Ok(()),
                other => Err(NotYet::new(format!("{other:?}"))),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nserver log:\n{}", server.log_text()));

    // 1. kubectl apply of an invalid Database: denied, every field error in one message.
    let invalid = format!(
        "apiVersion: example.com/v1\nkind: Database\nmetadata:\n  name: orders-db\n  namespace: {}\n\
         spec:\n  engine: postgres\n  version: \"13.0.0\"\n  storageSize: 512Mi\n  backupSchedule: \"0 0 2 * * *\"\n\
         \x20 resources:\n    requests:\n      cpu: \"1\"\n    limits:\n      cpu: 500m\n",
        ns.name()
    );
    let out = kubectl(kubeconfig, &["apply", "-f", "-"], &invalid);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "invalid Database admitted: {stderr}");
    for fragment in [
        // kubectl prints a 422 with details.causes as one "* field: message" line a cause.
        "The Database \"orders-db\" is invalid",
        "spec.version: postgres 13 is no longer supported",
        "spec.storageSize: 512Mi is below the minimum of 1Gi",
        "spec.backupSchedule: \"0 0 2 * * *\" is not a valid schedule",
        "spec.resources.limits.cpu: limit 500m is less than the request 1",
    ] {
        assert!(
            stderr.contains(fragment),
            "{fragment:?} missing from {stderr}"
        );
    }
    assert!(dbs.get_opt("orders-db").await.unwrap().is_none());

    // 2. Server-side dry run: the answer is defaulted, nothing is stored.
    let previewed = dbs
        .create(&dry_run, &database("preview", json!({})))
        .await
        .unwrap();
    assert_eq!(previewed.spec.version.as_deref(), Some("17.7.0"));
    assert_eq!(previewed.spec.replicas, Some(1));
    let minimal = format!(
        "apiVersion: example.com/v1\nkind: Database\nmetadata:\n  name: kubectl-preview\n  namespace: {}\nspec: {{}}\n",
        ns.name()
    );
    let out = kubectl(
        kubeconfig,
        &["apply", "--dry-run=server", "-o", "json", "-f", "-"],
        &minimal,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["spec"]["storageSize"], "10Gi", "{shown}");
    assert!(dbs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());

    // 3. Warnings reach the client: kubectl prints them as "Warning:" lines.
    let unknown_param = format!(
        "apiVersion: example.com/v1\nkind: Database\nmetadata:\n  name: tuned\n  namespace: {}\n\
         spec:\n  config:\n    pg_stat_statements.max: \"5000\"\n",
        ns.name()
    );
    let out = kubectl(
        kubeconfig,
        &["apply", "--dry-run=server", "-f", "-"],
        &unknown_param,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("Warning:") && l.contains("pg_stat_statements.max")),
        "no warning on stderr: {stderr}"
    );
    assert!(dbs.get_opt("tuned").await.unwrap().is_none());

    // 4. A valid Database is stored with every default filled.
    let out = kubectl(
        kubeconfig,
        &["apply", "-f", "-"],
        &minimal.replace("kubectl-preview", "orders"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored = dbs.get("orders").await.unwrap();
    assert_eq!(
        serde_json::to_value(&stored.spec).unwrap(),
        json!({"engine": "postgres", "version": "17.7.0", "replicas": 1, "storageSize": "10Gi",
               "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}}})
    );

    // 5. Out of scope: neither a Database in another namespace (stored as sent, though the
    //    webhook would deny it) nor a ConfigMap in the selected namespace reaches the server.
    let before = server.requests_total().await;
    let elsewhere: Api<Database> = other.api();
    let stored = elsewhere
        .create(&PostParams::default(), &owned_key)
        .await
        .expect("a Database outside the selector is not sent to the webhook");
    assert_eq!(stored.spec.version, None, "not defaulted either");
    let config_maps: Api<ConfigMap> = ns.api();
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("settings".into());
    config_maps
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    // The API server calls webhooks synchronously: had it called ours, the counter moved.
    assert_eq!(
        server.requests_total().await,
        before,
        "{}",
        server.log_text()
    );

    vwc.delete(&config_name, &DeleteParams::default())
        .await
        .unwrap();
    mwc.delete(&config_name, &DeleteParams::default())
        .await
        .unwrap();
    drop(server);
    other.cleanup().await.unwrap();
    ns.cleanup().await.unwrap();
}
