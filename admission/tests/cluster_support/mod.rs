//! Helpers shared by the tests that run the admission server against the local control plane
//! (`cluster.rs`, `cluster_e2e.rs`, `rotation_e2e.rs`, `conversion_e2e.rs`): the `admission`
//! binary as a child process with managed certificates, probes over TLS, and cleanup of webhook
//! configurations that a panicked run left behind.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use api::v1::{Database, DatabaseSpec};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams};
use kube::ResourceExt;
use serde_json::json;

/// The `admission` binary as a child process; killed on drop so a failed test leaves no process
/// behind.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `admission serve` on a free loopback port with managed certificates: the Secret in
    /// `namespace`, files under `dir/certs`, caBundle injected into the validating and mutating
    /// configurations named `config`. `extra_args` are appended (e.g. short rotation timings);
    /// the CRD is left alone (`--crd-name=`) unless `extra_args` names one with `--crd-name`.
    /// Waits up to `timeout` for `/readyz`.
    pub async fn start_managed(
        kubeconfig: &Path,
        namespace: &str,
        config: &str,
        dir: &Path,
        extra_args: &[&str],
        timeout: Duration,
    ) -> Server {
        let port = free_port();
        let log = dir.join("admission.log");
        let names_crd = extra_args.iter().any(|a| a.starts_with("--crd-name"));
        let child = Command::new(env!("CARGO_BIN_EXE_admission"))
            .env("RUST_LOG", "info")
            .env_remove("POD_NAMESPACE")
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--manage-certs=true", "--cert-namespace", namespace])
            .arg("--cert-dir")
            .arg(dir.join("certs"))
            .arg("--write-cert-dir=true")
            .args((!names_crd).then_some("--crd-name="))
            .args(["--validating-webhook-configs", config])
            .args(["--mutating-webhook-configs", config])
            .args(["--shutdown-grace", "2s"])
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("admission starts");
        let mut server = Server { child, port, log };
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("admission exited with {status}:\n{}", server.log_text());
            }
            let (code, body) = https_get(port, "/readyz").await;
            if code == 200 {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "/readyz still {code} {body} after {timeout:?}; server log:\n{}",
                server.log_text()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `admission_requests_total` summed over every label set, from `/metrics`.
    pub async fn requests_total(&self) -> f64 {
        https_get(self.port, "/metrics")
            .await
            .1
            .lines()
            .filter(|l| l.starts_with("admission_requests_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// `(status, body)` of a GET over TLS without verifying the certificate (probes only need the
/// body).
pub async fn https_get(port: u16, path: &str) -> (u16, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sk", "--max-time", "5", "-w", "\n%{http_code}"])
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .await
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn database(name: &str, spec: serde_json::Value) -> Database {
    let spec: DatabaseSpec = serde_json::from_value(spec).unwrap();
    Database::new(name, spec)
}

/// Common start of every test that registers webhooks: the cluster, an admin client, the
/// Database CRD installed, leftovers of panicked runs swept (configurations labelled
/// `managed_by`, named `<prefix><namespace>`), and a fresh namespace named `<ns_prefix>-...`.
pub async fn webhook_test_setup(
    managed_by: &str,
    prefix: &str,
    ns_prefix: &str,
) -> (
    &'static testkit::Cluster,
    kube::Client,
    testkit::TestNamespace,
) {
    let cluster = testkit::cluster().await.unwrap();
    let client = cluster.client().unwrap();
    cluster
        .install_crd(&api::crd::crd(), "admission-tests")
        .await
        .unwrap();
    sweep_leftover_configurations(client.clone(), managed_by, prefix).await;
    let ns = cluster.namespace(ns_prefix).await.unwrap();
    (cluster, client, ns)
}

/// Deletes webhook configurations labelled `app.kubernetes.io/managed-by=<managed_by>` whose
/// test namespace (the name after `prefix`) is gone: dead weight from a run that panicked
/// before its cleanup. Each test file uses its own label, so no file sweeps another's.
pub async fn sweep_leftover_configurations(client: kube::Client, managed_by: &str, prefix: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let selector =
        ListParams::default().labels(&format!("app.kubernetes.io/managed-by={managed_by}"));
    let vwc: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let mwc: Api<MutatingWebhookConfiguration> = Api::all(client);
    let mut names: Vec<String> = vwc
        .list(&selector)
        .await
        .unwrap()
        .iter()
        .map(|c| c.name_any())
        .collect();
    names.extend(
        mwc.list(&selector)
            .await
            .unwrap()
            .iter()
            .map(|c| c.name_any()),
    );
    for name in names {
        let namespace = name.trim_start_matches(prefix);
        if namespaces.get_opt(namespace).await.unwrap().is_none() {
            let _ = vwc.delete(&name, &DeleteParams::default()).await;
            let _ = mwc.delete(&name, &DeleteParams::default()).await;
        }
    }
}

/// A webhook entry for Databases (CREATE and UPDATE, v1) in `namespace` only, calling
/// `https://127.0.0.1:<port><path>` with failurePolicy Fail. `ca_bundle: None` registers it
/// without a `caBundle`, for the server's certificate manager to inject.
pub fn database_webhook(
    name: &str,
    path: &str,
    port: u16,
    namespace: &str,
    ca_bundle: Option<&str>,
) -> serde_json::Value {
    let mut client_config = json!({"url": format!("https://127.0.0.1:{port}{path}")});
    if let Some(ca_bundle) = ca_bundle {
        client_config["caBundle"] = json!(ca_bundle);
    }
    json!({
        "name": name,
        "clientConfig": client_config,
        "rules": [{"apiGroups": ["example.com"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                   "resources": ["databases"], "scope": "Namespaced"}],
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        "matchPolicy": "Equivalent",
        "failurePolicy": "Fail",
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": 5,
    })
}

/// The validating (`validate.databases.example.com` at `/validate`) and mutating
/// (`default.databases.example.com` at `/mutate`) configurations named `config_name`, labelled
/// `app.kubernetes.io/managed-by=<managed_by>`, each with one [`database_webhook`] entry.
pub fn database_webhook_configurations(
    config_name: &str,
    managed_by: &str,
    port: u16,
    namespace: &str,
    ca_bundle: Option<&str>,
) -> (ValidatingWebhookConfiguration, MutatingWebhookConfiguration) {
    let configuration = |kind: &str, webhook: serde_json::Value| {
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
            "metadata": {"name": config_name, "labels": {"app.kubernetes.io/managed-by": managed_by}},
            "webhooks": [webhook],
        })
    };
    let validating = configuration(
        "ValidatingWebhookConfiguration",
        database_webhook(
            "validate.databases.example.com",
            "/validate",
            port,
            namespace,
            ca_bundle,
        ),
    );
    let mutating = configuration(
        "MutatingWebhookConfiguration",
        database_webhook(
            "default.databases.example.com",
            "/mutate",
            port,
            namespace,
            ca_bundle,
        ),
    );
    (
        serde_json::from_value(validating).unwrap(),
        serde_json::from_value(mutating).unwrap(),
    )
}
