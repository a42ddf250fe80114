//! The deployment manifests against the real API server and the real binaries.
//!
//! * Every object in every file under `deploy/operator`, `deploy/webhooks` and `deploy/crd` is
//!   server-side applied in dry-run mode with strict field validation, so schema errors, unknown
//!   fields, duplicate list keys and malformed RBAC rules fail here instead of at install time.
//! * `deploy/kustomization.yaml` installs exactly the operator, webhook and CRD manifests.
//! * The Helm chart's `crds/database.yaml` is byte-identical to `deploy/crd/database.yaml`.
//! * The Deployment's container args parse with the real binaries' clap definitions.
//!
//! YAML is turned into JSON by `kubectl create --dry-run=client -o json` (testkit has no YAML
//! parser, and kubectl is what users run); kubectl comes from `DBOP_BIN_DIR` (set by
//! `deploy/local/test-env`) or `PATH`.
//!
//! Run: `deploy/local/test-env -- cargo test -p testkit --test manifests`.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use serde_json::Value;
use testkit::{cluster, Cluster};

const OPERATOR_NAMESPACE: &str = "db-operator-system";
const FIELD_MANAGER: &str = "db-operator-manifests-test";
/// Objects are dry-run applied under `<name><suffix>` (see [`dry_run_name`]).
const DRY_RUN_SUFFIX: &str = "-dry-run-check";
/// Manifest directories a cluster install consists of.
const MANIFEST_DIRS: [&str; 3] = ["deploy/operator", "deploy/webhooks", "deploy/crd"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives one level below the repository root")
        .to_owned()
}

fn kubectl() -> PathBuf {
    std::env::var_os("DBOP_BIN_DIR")
        .map(|dir| PathBuf::from(dir).join("kubectl"))
        .filter(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("kubectl"))
}

/// The Kubernetes objects of a manifest file (`-f`) or kustomization directory (`-k`), as JSON.
fn objects(cluster: &Cluster, source_flag: &str, path: &Path) -> Vec<Value> {
    let output = Command::new(kubectl())
        .args([
            "create",
            "--dry-run=client",
            "-o",
            "json",
            "--validate=false",
        ])
        .arg(source_flag)
        .arg(path)
        .env("KUBECONFIG", cluster.kubeconfig_path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", kubectl().display()));
    assert!(
        output.status.success(),
        "kubectl could not read {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut objects = Vec::new();
    for value in serde_json::Deserializer::from_slice(&output.stdout).into_iter::<Value>() {
        let value = value.unwrap_or_else(|e| panic!("kubectl output for {}: {e}", path.display()));
        match value.get("kind").and_then(Value::as_str) {
            Some("List") => objects.extend(value["items"].as_array().cloned().unwrap_or_default()),
            _ => objects.push(value),
        }
    }
    objects
}

/// Every `.yaml`/`.yml`/`.json` file directly in `dir` except a kustomization, sorted.
fn manifest_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| {
            matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            ) && path.file_stem().and_then(|s| s.to_str()) != Some("kustomization")
        })
        .collect();
    files.sort();
    files
}

fn str_at<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `Kind namespace/name`, for messages and set comparisons.
fn describe(object: &Value) -> String {
    let ns = str_at(object, "/metadata/namespace");
    let name = str_at(object, "/metadata/name");
    let kind = str_at(object, "/kind");
    if ns.is_empty() {
        format!("{kind} {name}")
    } else {
        format!("{kind} {ns}/{name}")
    }
}

fn gvk(object: &Value) -> GroupVersionKind {
    let api_version = str_at(object, "/apiVersion");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    GroupVersionKind::gvk(group, version, str_at(object, "/kind"))
}

/// The name an object is dry-run applied under. Objects already installed under the real names
/// (deploy/local registers the webhook configurations with a `url` instead of a `service`)
/// would otherwise be merged into what is validated. A CRD's name is fixed by its group and
/// plural, and the operator Namespace has to be the real one for the namespaced objects.
fn dry_run_name(object: &Value) -> String {
    let name = str_at(object, "/metadata/name");
    match str_at(object, "/kind") {
        "CustomResourceDefinition" | "Namespace" => name.to_owned(),
        _ => format!("{name}{DRY_RUN_SUFFIX}"),
    }
}

/// Creates the operator namespace if it is missing (namespaced dry-runs need it to exist).
async fn ensure_operator_namespace(client: &kube::Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces
        .get_opt(OPERATOR_NAMESPACE)
        .await
        .expect("read the operator namespace")
        .is_none()
    {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(OPERATOR_NAMESPACE.to_owned()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        match namespaces.create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) => panic!("cannot create namespace {OPERATOR_NAMESPACE}: {e}"),
        }
    }
}

/// Server-side applies `object` in dry-run mode with strict field validation.
async fn dry_run_apply(client: &kube::Client, object: &Value) -> Result<(), String> {
    let gvk = gvk(object);
    let (resource, capabilities) = discovery::pinned_kind(client, &gvk)
        .await
        .map_err(|e| format!("the API server does not serve {gvk:?}: {e}"))?;
    let api: Api<DynamicObject> = match capabilities.scope {
        Scope::Namespaced => {
            let ns = str_at(object, "/metadata/namespace");
            if ns.is_empty() {
                return Err("namespaced object without metadata.namespace".to_owned());
            }
            Api::namespaced_with(client.clone(), ns, &resource)
        }
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    let name = dry_run_name(object);
    let mut body = object.clone();
    body["metadata"]["name"] = Value::String(name.clone());
    let params = PatchParams::apply(FIELD_MANAGER)
        .dry_run()
        .force()
        .validation_strict();
    api.patch(&name, &params, &Patch::Apply(&body))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn every_manifest_is_accepted_by_the_api_server() {
    let cluster = cluster().await.unwrap();
    let client = cluster.client().unwrap();
    ensure_operator_namespace(&client).await;

    let root = repo_root();
    let mut applied = Vec::new();
    let mut failures = Vec::new();
    for dir in MANIFEST_DIRS {
        let files = manifest_files(&root.join(dir));
        assert!(!files.is_empty(), "no manifests in {dir}");
        for file in files {
            let objects = objects(cluster, "-f", &file);
            let shown = file
                .strip_prefix(&root)
                .unwrap_or(&file)
                .display()
                .to_string();
            assert!(!objects.is_empty(), "{shown} holds no objects");
            for object in &objects {
                match dry_run_apply(&client, object).await {
                    Ok(()) => applied.push(format!("{shown}: {}", describe(object))),
                    Err(e) => failures.push(format!("{shown}: {}: {e}", describe(object))),
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "the API server rejected {} object(s):\n  {}\n(accepted: {})",
        failures.len(),
        failures.join("\n  "),
        applied.len()
    );
    eprintln!("accepted in dry-run:\n  {}", applied.join("\n  "));
}

/// The check above must be able to fail: an unknown field, an RBAC rule without verbs and a
/// Deployment whose selector misses its pods are refused.
#[tokio::test]
async fn dry_run_apply_refuses_invalid_objects() {
    let cluster = cluster().await.unwrap();
    let client = cluster.client().unwrap();
    ensure_operator_namespace(&client).await;
    let cases = [
        (
            "unknown_field_in_a_service",
            serde_json::json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "db-operator-webhook", "namespace": OPERATOR_NAMESPACE},
                "spec": {"ports": [{"port": 443, "targetPrt": 8443}]},
            }),
        ),
        (
            "rbac_rule_without_verbs",
            serde_json::json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "db-operator-reconciler"},
                "rules": [{"apiGroups": [""], "resources": ["pods"]}],
            }),
        ),
        (
            "deployment_selector_not_matching_its_pods",
            serde_json::json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "db-operator", "namespace": OPERATOR_NAMESPACE},
                "spec": {
                    "selector": {"matchLabels": {"app": "a"}},
                    "template": {
                        "metadata": {"labels": {"app": "b"}},
                        "spec": {"containers": [{"name": "a", "image": "x"}]},
                    },
                },
            }),
        ),
    ];
    for (behaviour, object) in cases {
        match dry_run_apply(&client, &object).await {
            Ok(()) => panic!("{behaviour}: the API server accepted an invalid object"),
            Err(e) => eprintln!("{behaviour}: refused as expected: {e}"),
        }
    }
}

#[tokio::test]
async fn kustomization_installs_exactly_the_operator_webhook_and_crd_manifests() {
    let cluster = cluster().await.unwrap();
    let root = repo_root();
    let mut expected = BTreeSet::new();
    for dir in ["deploy/operator", "deploy/webhooks"] {
        for file in manifest_files(&root.join(dir)) {
            expected.extend(objects(cluster, "-f", &file).iter().map(describe));
        }
    }
    expected.extend(
        objects(cluster, "-f", &root.join("deploy/crd/database.yaml"))
            .iter()
            .map(describe),
    );
    let installed: BTreeSet<String> = objects(cluster, "-k", &root.join("deploy"))
        .iter()
        .map(describe)
        .collect();
    let missing: Vec<_> = expected.difference(&installed).collect();
    let extra: Vec<_> = installed.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "deploy/kustomization.yaml is out of date: missing {missing:?}, not from the manifest files {extra:?}"
    );
}

#[test]
fn helm_chart_crd_is_identical_to_deploy_crd() {
    let root = repo_root();
    let read = |rel: &str| {
        std::fs::read(root.join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
    };
    let generated = read("deploy/crd/database.yaml");
    let chart = read("deploy/helm/db-operator/crds/database.yaml");
    assert!(
        generated == chart,
        "deploy/helm/db-operator/crds/database.yaml differs from deploy/crd/database.yaml; \
         copy it: cp deploy/crd/database.yaml deploy/helm/db-operator/crds/database.yaml"
    );
}

/// Where cargo put this test binary's sibling binaries: `<target>/<profile>`.
fn profile_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // <target>/<profile>/deps/manifests-<hash>
    Some(exe.parent()?.parent()?.to_owned())
}

/// Newest modification time of the Rust sources a binary is built from.
fn newest_source(dirs: &[&str]) -> std::time::SystemTime {
    fn walk(dir: &Path, newest: &mut std::time::SystemTime) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, newest);
            } else if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
                *newest = (*newest).max(modified);
            }
        }
    }
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    for dir in dirs {
        walk(&repo_root().join(dir), &mut newest);
    }
    newest
}

/// The built binary, if present and not older than its sources.
fn fresh_binary(name: &str, sources: &[&str]) -> Result<PathBuf, String> {
    let path = profile_dir()
        .ok_or("cannot locate the target directory")?
        .join(name);
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .map_err(|_| format!("{} is not built", path.display()))?;
    if built < newest_source(sources) {
        return Err(format!(
            "{} is older than its sources (cargo build -p {name})",
            path.display()
        ));
    }
    Ok(path)
}

/// Runs `binary <args> --help`: clap parses every argument in order (unknown flags and bad
/// values are errors) and only then acts on `--help`, which skips the required-argument
/// check and exits 0. So exit 0 means every arg is accepted by the real definition.
fn clap_accepts(binary: &Path, args: &[String]) -> Result<(), String> {
    let output = Command::new(binary)
        .args(args)
        .arg("--help")
        .env_clear()
        .output()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn container_args(deployment: &Value, container: &str) -> Vec<String> {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == container)
        .unwrap_or_else(|| panic!("no container {container} in the Deployment"))["args"]
        .as_array()
        .unwrap_or_else(|| panic!("container {container} has no args"))
        .iter()
        .map(|a| a.as_str().expect("string arg").to_owned())
        .collect()
}

/// Needs `admission` and `reconciler` built into the same target dir (`cargo test --workspace`
/// builds them; `cargo build -p admission -p reconciler` otherwise). Skipped with a message
/// when they are missing or older than their sources, so a stale binary never decides.
#[tokio::test]
async fn deployment_args_parse_with_the_binaries_flags() {
    let cluster = cluster().await.unwrap();
    let deployment = objects(
        cluster,
        "-f",
        &repo_root().join("deploy/operator/deployment.yaml"),
    )
    .into_iter()
    .find(|o| o["kind"] == "Deployment")
    .expect("a Deployment in deploy/operator/deployment.yaml");

    let binaries = [
        ("admission", vec!["admission/src", "certs/src", "api/src"]),
        ("reconciler", vec!["reconciler/src", "api/src"]),
    ];
    let mut checked = 0;
    for (container, sources) in binaries {
        let binary = match fresh_binary(container, &sources) {
            Ok(path) => path,
            Err(why) => {
                eprintln!("SKIPPED checking the {container} container's args: {why}");
                continue;
            }
        };
        let args = container_args(&deployment, container);
        if let Err(error) = clap_accepts(&binary, &args) {
            panic!("{container} rejects the Deployment's args {args:?}:\n{error}");
        }
        // The same check must catch a flag the binary does not have.
        let mut wrong = args.clone();
        wrong.push("--no-such-flag=1".to_owned());
        assert!(
            clap_accepts(&binary, &wrong).is_err(),
            "{container}: an unknown flag was accepted; the check is not checking"
        );
        checked += 1;
    }
    eprintln!("checked the args of {checked} of 2 containers");
}
