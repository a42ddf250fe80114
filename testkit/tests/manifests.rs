//! The deployment manifests against the real API server and the real binaries.
//!
//! * Every object in every file under `deploy/operator`, `deploy/webhooks` and `deploy/crd` is
//!   server-side applied in dry-run mode with strict field validation, so schema errors, unknown
//!   fields, duplicate list keys and malformed RBAC rules fail here instead of at install time.
//! * `deploy/kustomization.yaml` installs exactly the operator, webhook and CRD manifests.
//! * `deploy/operator/rbac.yaml` allows every call the binaries make, and not much else.
//! * The operator pod passes the `restricted` Pod Security Standard its namespace enforces.
//! * The Deployment's container args parse with the real binaries' clap definitions.
//! * The Helm chart: `crds/database.yaml` is byte-identical to `deploy/crd/database.yaml`, every
//!   `.Values` path exists; with a helm binary, both value sets render objects the API server
//!   accepts and the default rendering mirrors `deploy/`.
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

/// The args of `container`, found in whichever of `deployments` runs it.
fn container_args(deployments: &[Value], container: &str) -> Vec<String> {
    deployments
        .iter()
        .flat_map(|d| {
            d["spec"]["template"]["spec"]["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .find(|c| c["name"] == container)
        .unwrap_or_else(|| panic!("no Deployment runs a container {container}"))["args"]
        .as_array()
        .unwrap_or_else(|| panic!("container {container} has no args"))
        .iter()
        .map(|a| a.as_str().expect("string arg").to_owned())
        .collect()
}

/// The Deployments of a set of objects.
fn deployments(objects: &[Value]) -> Vec<Value> {
    objects
        .iter()
        .filter(|o| o["kind"] == "Deployment")
        .cloned()
        .collect()
}

/// Needs `admission` and `reconciler` built into the same target dir (`cargo test --workspace`
/// builds them; `cargo build -p admission -p reconciler` otherwise). Skipped with a message
/// when they are missing or older than their sources, so a stale binary never decides.
#[tokio::test]
async fn deployment_args_parse_with_the_binaries_flags() {
    let cluster = cluster().await.unwrap();
    let deployments = deployments(&objects(
        cluster,
        "-f",
        &repo_root().join("deploy/operator/deployment.yaml"),
    ));
    assert_eq!(deployments.len(), 2, "admission and reconciler Deployments");

    let checked = check_container_args(&deployments, "deploy/operator/deployment.yaml");
    eprintln!("checked the args of {checked} of 2 containers");
}

/// Parses each container's args with the real binary (see [`clap_accepts`]); returns how many
/// containers were checked (binaries missing or stale are skipped with a message).
fn check_container_args(deployments: &[Value], origin: &str) -> usize {
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
        let args = container_args(deployments, container);
        if let Err(error) = clap_accepts(&binary, &args) {
            panic!("{container} rejects the args {args:?} of {origin}:\n{error}");
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
    checked
}

const CHART: &str = "deploy/helm/db-operator";

/// Dotted paths of every mapping key in a values file written in block style (list items are
/// leaves). Enough for our own values.yaml; not a general YAML parser.
fn values_paths(text: &str) -> BTreeSet<String> {
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut paths = BTreeSet::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('-') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let Some((key, _)) = trimmed.split_once(':') else {
            continue;
        };
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            continue;
        }
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        let path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).chain([key]).collect();
        paths.insert(path.join("."));
        stack.push((indent, key.to_owned()));
    }
    paths
}

/// Every `.Values.a.b` a template refers to.
fn values_references(template: &str) -> BTreeSet<String> {
    template
        .match_indices(".Values.")
        .map(|(at, m)| {
            template[at + m.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
                .collect::<String>()
                .trim_end_matches('.')
                .to_owned()
        })
        .filter(|path| !path.is_empty())
        .collect()
}

#[test]
fn values_paths_follow_indentation_and_skip_list_items() {
    let values = "a:\n  b: 1\n  # note\n  c:\n    - x\n    - y\nd: {}\n";
    let want: BTreeSet<String> = ["a", "a.b", "a.c", "d"].map(String::from).into();
    assert_eq!(values_paths(values), want);
    let refs = values_references("{{ .Values.a.b }} {{- with $.Values.d }}{{ .Values.a.c. }}");
    let want: BTreeSet<String> = ["a.b", "d", "a.c"].map(String::from).into();
    assert_eq!(refs, want);
}

/// Structural lint that needs no helm binary: Chart.yaml's required fields, the app version
/// matching the workspace version, and every `.Values` path the templates use defined in
/// values.yaml (a typo there renders silently as empty).
#[test]
fn helm_chart_is_consistent_with_its_values_and_the_workspace() {
    let root = repo_root();
    let chart = root.join(CHART);
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    };
    let chart_yaml = read(&chart.join("Chart.yaml"));
    let field = |name: &str| {
        chart_yaml
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.trim().trim_matches('"').to_owned())
            .unwrap_or_else(|| panic!("Chart.yaml has no {name}"))
    };
    assert_eq!(field("apiVersion"), "v2");
    assert_eq!(field("name"), "db-operator");
    assert!(!field("version").is_empty());
    let workspace_version = read(&root.join("Cargo.toml"))
        .lines()
        .skip_while(|l| l.trim() != "[workspace.package]")
        .find_map(|l| l.strip_prefix("version = "))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .expect("version in [workspace.package]");
    assert_eq!(
        field("appVersion"),
        workspace_version,
        "Chart.yaml appVersion (the default image tag) should follow the workspace version"
    );

    let defined = values_paths(&read(&chart.join("values.yaml")));
    let mut undefined = Vec::new();
    let templates = chart.join("templates");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&templates)
        .expect("templates dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert!(
        files.len() > 3,
        "templates missing in {}",
        templates.display()
    );
    for file in files {
        for path in values_references(&read(&file)) {
            if !defined.contains(&path) {
                undefined.push(format!("{}: .Values.{path}", file.display()));
            }
        }
    }
    assert!(
        undefined.is_empty(),
        "templates use values not defined in values.yaml:\n  {}",
        undefined.join("\n  ")
    );
}

/// The helm binary: `DBOP_HELM`, else `helm` on PATH; `None` when neither runs.
fn helm() -> Option<PathBuf> {
    let helm = std::env::var_os("DBOP_HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("helm"));
    Command::new(&helm)
        .arg("version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| helm)
}

/// `helm template` of the chart into the operator namespace, minus cert-manager's kinds
/// (their CRDs are not installed on the local cluster); returns the objects and the kinds left
/// out.
fn render_chart(
    cluster: &Cluster,
    helm: &Path,
    kube_version: &str,
    set: &[&str],
) -> (Vec<Value>, Vec<String>) {
    let mut command = Command::new(helm);
    command
        .args(["template", "db-operator"])
        .arg(repo_root().join(CHART))
        .args(["--namespace", OPERATOR_NAMESPACE])
        // Checked against Chart.yaml's kubeVersion; a helm built without release ldflags
        // would otherwise assume v1.20.
        .args(["--kube-version", kube_version]);
    for value in set {
        command.args(["--set", value]);
    }
    let output = command.output().expect("run helm");
    assert!(
        output.status.success(),
        "helm template {set:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rendered = String::from_utf8(output.stdout).expect("UTF-8 from helm");
    let mut kept = Vec::new();
    let mut left_out = Vec::new();
    for document in rendered.split("\n---") {
        let kind = document
            .lines()
            .find_map(|l| l.strip_prefix("kind: "))
            .unwrap_or("")
            .trim();
        let cert_manager = document
            .lines()
            .any(|l| l.trim() == "apiVersion: cert-manager.io/v1");
        if cert_manager {
            left_out.push(kind.to_owned());
        } else if !kind.is_empty() {
            kept.push(document.to_owned());
        }
    }
    let file = std::env::temp_dir().join(format!(
        "db-operator-chart-{}-{}.yaml",
        std::process::id(),
        set.join(",").replace(['/', '='], "_")
    ));
    std::fs::write(&file, kept.join("\n---\n")).expect("write rendered chart");
    let objects = objects(cluster, "-f", &file);
    let _ = std::fs::remove_file(&file);
    left_out.sort();
    (objects, left_out)
}

/// Objects without the labels and annotations only Helm adds, for comparing with kustomize.
fn without_helm_metadata(mut object: Value) -> Value {
    for key in ["labels", "annotations"] {
        if let Some(map) = object["metadata"][key].as_object_mut() {
            map.retain(|k, _| {
                !matches!(
                    k.as_str(),
                    "helm.sh/chart"
                        | "app.kubernetes.io/instance"
                        | "app.kubernetes.io/version"
                        | "app.kubernetes.io/managed-by"
                )
            });
        }
    }
    object
}

/// Needs a helm binary (`DBOP_HELM` or `helm` on PATH); skipped with a message otherwise.
/// Renders the chart with its defaults and with cert-manager enabled, dry-run applies every
/// rendered object, parses the Deployment args with the binaries, and checks the default
/// rendering installs the same objects, RBAC rules, webhook rules and container args as
/// `deploy/` (the chart mirrors it).
#[tokio::test]
async fn helm_chart_renders_objects_the_api_server_accepts() {
    let Some(helm) = helm() else {
        eprintln!("SKIPPED: no helm binary (set DBOP_HELM or put helm on PATH)");
        return;
    };
    let cluster = cluster().await.unwrap();
    let client = cluster.client().unwrap();
    ensure_operator_namespace(&client).await;

    let kube_version = client.apiserver_version().await.unwrap().git_version;
    let (defaults, left_out) = render_chart(cluster, &helm, &kube_version, &[]);
    assert!(
        left_out.is_empty(),
        "cert-manager objects by default: {left_out:?}"
    );
    let (with_cert_manager, left_out) =
        render_chart(cluster, &helm, &kube_version, &["certManager.enabled=true"]);
    assert_eq!(
        left_out,
        ["Certificate", "Certificate", "Issuer", "Issuer"],
        "certManager.enabled renders a CA chain and a serving Certificate"
    );

    let mut failures = Vec::new();
    for (mode, objects) in [("defaults", &defaults), ("certManager", &with_cert_manager)] {
        for object in objects {
            if let Err(e) = dry_run_apply(&client, object).await {
                failures.push(format!("{mode}: {}: {e}", describe(object)));
            }
        }
        let deployments = deployments(objects);
        assert_eq!(deployments.len(), 2, "the chart renders two Deployments");
        check_container_args(&deployments, &format!("the chart ({mode})"));
    }
    assert!(
        failures.is_empty(),
        "the API server rejected rendered objects:\n  {}",
        failures.join("\n  ")
    );
    let cert_manager_annotations = with_cert_manager
        .iter()
        .filter(|o| {
            o["kind"]
                .as_str()
                .is_some_and(|k| k.ends_with("WebhookConfiguration"))
        })
        .filter(|o| {
            o["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
                == "db-operator-system/db-operator-webhook"
        })
        .count();
    assert_eq!(
        cert_manager_annotations, 2,
        "inject-ca-from on both webhook configurations"
    );

    // The default rendering mirrors deploy/ (the CRD is in crds/, the Namespace is Helm's).
    let kustomize: Vec<Value> = objects(cluster, "-k", &repo_root().join("deploy"))
        .into_iter()
        .filter(|o| {
            !matches!(
                o["kind"].as_str(),
                Some("Namespace" | "CustomResourceDefinition")
            )
        })
        .collect();
    let by_name = |objects: &[Value]| -> std::collections::BTreeMap<String, Value> {
        objects
            .iter()
            .map(|o| (describe(o), without_helm_metadata(o.clone())))
            .collect()
    };
    let (chart, plain) = (by_name(&defaults), by_name(&kustomize));
    assert_eq!(
        chart.keys().collect::<Vec<_>>(),
        plain.keys().collect::<Vec<_>>(),
        "the chart and deploy/ install different objects"
    );
    for (name, object) in &plain {
        let rendered = &chart[name];
        for pointer in [
            "/rules",
            "/webhooks",
            "/spec/template/spec/containers",
            "/spec/template/spec/volumes",
            "/spec/template/spec/securityContext",
            "/spec/ports",
            "/spec/selector",
            "/spec/replicas",
            "/spec/strategy",
            "/spec/minAvailable",
            "/spec/template/spec/serviceAccountName",
            "/spec/podSelector",
            "/spec/policyTypes",
            "/spec/ingress",
            "/roleRef",
            "/subjects",
        ] {
            assert_eq!(
                rendered.pointer(pointer),
                object.pointer(pointer),
                "{name}{pointer}: the chart's default differs from deploy/"
            );
        }
    }
}

/// Which binary's ServiceAccount an [`Access`] row asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Admission,
    Reconciler,
}

impl Who {
    fn service_account(self) -> &'static str {
        match self {
            Who::Admission => "db-operator-admission",
            Who::Reconciler => "db-operator-reconciler",
        }
    }
}

/// One access check: may `who` do `verb` on `resource` (`group`, optional subresource) in
/// `namespace` (`OP` = the operator namespace, `None` = cluster scope), for object `name`
/// (empty = any)?
struct Access {
    behaviour: &'static str,
    who: Who,
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
    subresource: &'static str,
    namespace: Option<&'static str>,
    name: &'static str,
    allowed: bool,
}

/// Stands for the operator namespace in [`Access`] rows (the test's namespace at run time).
const OP: &str = "<operator namespace>";

use Who::{Admission as A, Reconciler as R};

#[rustfmt::skip]
const ACCESS: &[Access] = &[
    // reconciler (reconciler/src, reconciler/README.md)
    Access { behaviour: "reconciler_watches_databases_everywhere", who: R, verb: "watch", group: "example.com", resource: "databases", subresource: "", namespace: Some("tenant"), name: "", allowed: true },
    Access { behaviour: "reconciler_patches_finalizers", who: R, verb: "patch", group: "example.com", resource: "databases", subresource: "", namespace: Some("tenant"), name: "db", allowed: true },
    Access { behaviour: "reconciler_patches_status", who: R, verb: "patch", group: "example.com", resource: "databases", subresource: "status", namespace: Some("tenant"), name: "db", allowed: true },
    Access { behaviour: "reconciler_never_deletes_databases", who: R, verb: "delete", group: "example.com", resource: "databases", subresource: "", namespace: Some("tenant"), name: "db", allowed: false },
    Access { behaviour: "reconciler_creates_statefulsets_by_apply", who: R, verb: "create", group: "apps", resource: "statefulsets", subresource: "", namespace: Some("tenant"), name: "", allowed: true },
    Access { behaviour: "reconciler_watches_owned_secrets", who: R, verb: "watch", group: "", resource: "secrets", subresource: "", namespace: Some("tenant"), name: "", allowed: true },
    Access { behaviour: "reconciler_creates_credentials_secrets", who: R, verb: "create", group: "", resource: "secrets", subresource: "", namespace: Some("tenant"), name: "", allowed: true },
    Access { behaviour: "reconciler_never_replaces_secrets", who: R, verb: "update", group: "", resource: "secrets", subresource: "", namespace: Some(OP), name: "db-operator-webhook-tls", allowed: false },
    Access { behaviour: "reconciler_deletes_owned_cronjobs", who: R, verb: "delete", group: "batch", resource: "cronjobs", subresource: "", namespace: Some("tenant"), name: "db-backup", allowed: true },
    Access { behaviour: "reconciler_watches_backup_jobs", who: R, verb: "watch", group: "batch", resource: "jobs", subresource: "", namespace: Some("tenant"), name: "", allowed: true },
    Access { behaviour: "reconciler_never_creates_jobs", who: R, verb: "create", group: "batch", resource: "jobs", subresource: "", namespace: Some("tenant"), name: "", allowed: false },
    Access { behaviour: "reconciler_grows_pvcs", who: R, verb: "patch", group: "", resource: "persistentvolumeclaims", subresource: "", namespace: Some("tenant"), name: "data-db-0", allowed: true },
    Access { behaviour: "reconciler_lists_pods", who: R, verb: "list", group: "", resource: "pods", subresource: "", namespace: Some("tenant"), name: "", allowed: true },
    Access { behaviour: "reconciler_never_deletes_pods", who: R, verb: "delete", group: "", resource: "pods", subresource: "", namespace: Some("tenant"), name: "db-0", allowed: false },
    Access { behaviour: "reconciler_reads_storage_classes", who: R, verb: "get", group: "storage.k8s.io", resource: "storageclasses", subresource: "", namespace: None, name: "standard", allowed: true },
    Access { behaviour: "reconciler_never_changes_storage_classes", who: R, verb: "patch", group: "storage.k8s.io", resource: "storageclasses", subresource: "", namespace: None, name: "standard", allowed: false },
    Access { behaviour: "reconciler_records_events", who: R, verb: "create", group: "events.k8s.io", resource: "events", subresource: "", namespace: Some("tenant"), name: "", allowed: true },
    Access { behaviour: "reconciler_creates_its_lease", who: R, verb: "create", group: "coordination.k8s.io", resource: "leases", subresource: "", namespace: Some(OP), name: "", allowed: true },
    Access { behaviour: "reconciler_renews_its_lease", who: R, verb: "update", group: "coordination.k8s.io", resource: "leases", subresource: "", namespace: Some(OP), name: "db-operator-reconciler", allowed: true },
    Access { behaviour: "reconciler_cannot_take_other_leases", who: R, verb: "update", group: "coordination.k8s.io", resource: "leases", subresource: "", namespace: Some(OP), name: "kube-controller-manager", allowed: false },
    Access { behaviour: "reconciler_has_no_leases_elsewhere", who: R, verb: "update", group: "coordination.k8s.io", resource: "leases", subresource: "", namespace: Some("kube-system"), name: "db-operator-reconciler", allowed: false },
    Access { behaviour: "reconciler_cannot_inject_cabundles", who: R, verb: "patch", group: "admissionregistration.k8s.io", resource: "validatingwebhookconfigurations", subresource: "", namespace: None, name: "db-operator-validating", allowed: false },
    Access { behaviour: "reconciler_cannot_patch_the_crd", who: R, verb: "patch", group: "apiextensions.k8s.io", resource: "customresourcedefinitions", subresource: "", namespace: None, name: "databases.example.com", allowed: false },
    Access { behaviour: "reconciler_has_no_rbac_escalation", who: R, verb: "create", group: "rbac.authorization.k8s.io", resource: "clusterrolebindings", subresource: "", namespace: None, name: "", allowed: false },
    // admission server: namespace cache (admission/src/namespaces.rs)
    Access { behaviour: "admission_watches_namespaces", who: A, verb: "watch", group: "", resource: "namespaces", subresource: "", namespace: None, name: "", allowed: true },
    Access { behaviour: "admission_lists_namespaces", who: A, verb: "list", group: "", resource: "namespaces", subresource: "", namespace: None, name: "", allowed: true },
    Access { behaviour: "admission_never_changes_namespaces", who: A, verb: "patch", group: "", resource: "namespaces", subresource: "", namespace: None, name: "tenant", allowed: false },
    // certs manager inside the admission server (certs/src/{store,manager,inject}.rs)
    Access { behaviour: "certs_creates_its_secret", who: A, verb: "create", group: "", resource: "secrets", subresource: "", namespace: Some(OP), name: "", allowed: true },
    Access { behaviour: "certs_reads_its_secret", who: A, verb: "get", group: "", resource: "secrets", subresource: "", namespace: Some(OP), name: "db-operator-webhook-tls", allowed: true },
    Access { behaviour: "certs_replaces_its_secret", who: A, verb: "update", group: "", resource: "secrets", subresource: "", namespace: Some(OP), name: "db-operator-webhook-tls", allowed: true },
    Access { behaviour: "certs_watches_its_secret_by_name", who: A, verb: "watch", group: "", resource: "secrets", subresource: "", namespace: Some(OP), name: "db-operator-webhook-tls", allowed: true },
    Access { behaviour: "certs_injects_validating_cabundle", who: A, verb: "patch", group: "admissionregistration.k8s.io", resource: "validatingwebhookconfigurations", subresource: "", namespace: None, name: "db-operator-validating", allowed: true },
    Access { behaviour: "certs_reads_validating_configuration", who: A, verb: "get", group: "admissionregistration.k8s.io", resource: "validatingwebhookconfigurations", subresource: "", namespace: None, name: "db-operator-validating", allowed: true },
    Access { behaviour: "certs_injects_mutating_cabundle", who: A, verb: "patch", group: "admissionregistration.k8s.io", resource: "mutatingwebhookconfigurations", subresource: "", namespace: None, name: "db-operator-mutating", allowed: true },
    Access { behaviour: "certs_watches_the_crd_by_name", who: A, verb: "watch", group: "apiextensions.k8s.io", resource: "customresourcedefinitions", subresource: "", namespace: None, name: "databases.example.com", allowed: true },
    Access { behaviour: "certs_injects_crd_conversion_cabundle", who: A, verb: "patch", group: "apiextensions.k8s.io", resource: "customresourcedefinitions", subresource: "", namespace: None, name: "databases.example.com", allowed: true },
    Access { behaviour: "other_webhook_configurations_are_untouchable", who: A, verb: "patch", group: "admissionregistration.k8s.io", resource: "validatingwebhookconfigurations", subresource: "", namespace: None, name: "someone-elses", allowed: false },
    Access { behaviour: "webhook_configurations_cannot_be_listed_unnamed", who: A, verb: "list", group: "admissionregistration.k8s.io", resource: "mutatingwebhookconfigurations", subresource: "", namespace: None, name: "", allowed: false },
    Access { behaviour: "other_crds_are_untouchable", who: A, verb: "patch", group: "apiextensions.k8s.io", resource: "customresourcedefinitions", subresource: "", namespace: None, name: "other.example.com", allowed: false },
    Access { behaviour: "the_crd_cannot_be_deleted", who: A, verb: "delete", group: "apiextensions.k8s.io", resource: "customresourcedefinitions", subresource: "", namespace: None, name: "databases.example.com", allowed: false },
    // the admission account and Secrets: its own, nothing else
    Access { behaviour: "admission_cannot_read_secrets_in_other_namespaces", who: A, verb: "get", group: "", resource: "secrets", subresource: "", namespace: Some("tenant"), name: "db-credentials", allowed: false },
    Access { behaviour: "admission_cannot_list_secrets_cluster_wide", who: A, verb: "list", group: "", resource: "secrets", subresource: "", namespace: None, name: "", allowed: false },
    Access { behaviour: "admission_cannot_create_secrets_elsewhere", who: A, verb: "create", group: "", resource: "secrets", subresource: "", namespace: Some("tenant"), name: "", allowed: false },
    Access { behaviour: "admission_cannot_read_other_secrets_of_its_namespace", who: A, verb: "get", group: "", resource: "secrets", subresource: "", namespace: Some(OP), name: "someone-elses", allowed: false },
    Access { behaviour: "admission_cannot_delete_its_secret", who: A, verb: "delete", group: "", resource: "secrets", subresource: "", namespace: Some(OP), name: "db-operator-webhook-tls", allowed: false },
    // the admission account holds none of the reconciler's rights
    Access { behaviour: "admission_never_reads_databases", who: A, verb: "get", group: "example.com", resource: "databases", subresource: "", namespace: Some("tenant"), name: "db", allowed: false },
    Access { behaviour: "admission_never_creates_statefulsets", who: A, verb: "create", group: "apps", resource: "statefulsets", subresource: "", namespace: Some("tenant"), name: "", allowed: false },
    Access { behaviour: "admission_has_no_lease", who: A, verb: "create", group: "coordination.k8s.io", resource: "leases", subresource: "", namespace: Some(OP), name: "", allowed: false },
    Access { behaviour: "admission_records_no_events", who: A, verb: "create", group: "events.k8s.io", resource: "events", subresource: "", namespace: Some("tenant"), name: "", allowed: false },
    Access { behaviour: "admission_has_no_rbac_escalation", who: A, verb: "create", group: "rbac.authorization.k8s.io", resource: "clusterrolebindings", subresource: "", namespace: None, name: "", allowed: false },
];

/// Installs deploy/operator/rbac.yaml bound to the two ServiceAccounts in a fresh namespace
/// (which plays the operator namespace; cluster-scoped objects get that namespace as a name
/// suffix) and asks the API server, as each ServiceAccount, what it may do: every call its
/// binary makes is allowed, and a sample of what it never does is not. Also makes real calls:
/// the certs manager's name-selected lists (fieldSelector metadata.name) that `resourceNames`
/// relies on, and a read of a Secret in another namespace, which the admission account is
/// refused and the reconciler (credentials Secrets live in the Databases' namespaces) is not.
#[tokio::test]
async fn operator_rbac_allows_what_the_binaries_do_and_little_else() {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    use kube::api::{DeleteParams, ListParams};

    let cluster = cluster().await.unwrap();
    let ns = cluster.namespace("rbac").await.unwrap();
    let elsewhere = cluster.namespace("rbac-tenant").await.unwrap();
    let op = ns.name().to_owned();
    let admin = cluster.client().unwrap();
    let label = (testkit::MANAGED_BY_LABEL, testkit::MANAGED_BY_VALUE);

    let mut cluster_scoped: Vec<(String, String)> = Vec::new(); // (kind, name) to delete
    for mut object in objects(
        cluster,
        "-f",
        &repo_root().join("deploy/operator/rbac.yaml"),
    ) {
        let kind = str_at(&object, "/kind").to_owned();
        object["metadata"]["labels"][label.0] = Value::from(label.1);
        if object["metadata"].get("namespace").is_some() {
            object["metadata"]["namespace"] = Value::from(op.clone());
        } else {
            let name = format!("{}-{op}", str_at(&object, "/metadata/name"));
            object["metadata"]["name"] = Value::from(name.clone());
            cluster_scoped.push((kind.clone(), name));
        }
        if kind == "ClusterRoleBinding" {
            let role = format!("{}-{op}", str_at(&object, "/roleRef/name"));
            object["roleRef"]["name"] = Value::from(role);
        }
        let subjects = object.get_mut("subjects").and_then(Value::as_array_mut);
        for subject in subjects.into_iter().flatten() {
            subject["namespace"] = Value::from(op.clone());
        }
        let gvk = gvk(&object);
        let (resource, _) = discovery::pinned_kind(&admin, &gvk).await.unwrap();
        let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(admin.clone(), ns, &resource),
            None => Api::all_with(admin.clone(), &resource),
        };
        let name = str_at(&object, "/metadata/name").to_owned();
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("installing {kind} {name}: {e}"));
    }
    let sa: Api<ServiceAccount> = ns.api();
    for who in [Who::Admission, Who::Reconciler] {
        assert!(
            sa.get_opt(who.service_account()).await.unwrap().is_some(),
            "rbac.yaml creates the ServiceAccount {}",
            who.service_account()
        );
    }
    // Secrets to read for real: the certificate Secret and a credentials-like Secret elsewhere.
    let secret = |name: &str| -> Secret {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name}, "stringData": {"password": "s3cret"},
        }))
        .expect("a Secret")
    };
    ns.api::<Secret>()
        .create(&PostParams::default(), &secret("db-operator-webhook-tls"))
        .await
        .unwrap();
    elsewhere
        .api::<Secret>()
        .create(&PostParams::default(), &secret("db-credentials"))
        .await
        .unwrap();

    let as_admission = cluster
        .client_as_service_account(&op, Who::Admission.service_account())
        .unwrap();
    let as_reconciler = cluster
        .client_as_service_account(&op, Who::Reconciler.service_account())
        .unwrap();
    let client_of = |who: Who| match who {
        Who::Admission => as_admission.clone(),
        Who::Reconciler => as_reconciler.clone(),
    };
    let mut wrong = Vec::new();
    for row in ACCESS {
        let reviews: Api<SelfSubjectAccessReview> = Api::all(client_of(row.who));
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(row.verb.to_owned()),
                    group: Some(row.group.to_owned()),
                    resource: Some(row.resource.to_owned()),
                    subresource: Some(row.subresource.to_owned()).filter(|s| !s.is_empty()),
                    namespace: row
                        .namespace
                        .map(|n| if n == OP { op.clone() } else { n.to_owned() }),
                    name: Some(row.name.to_owned()).filter(|s| !s.is_empty()),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let answer = reviews
            .create(&PostParams::default(), &review)
            .await
            .unwrap();
        let allowed = answer.status.is_some_and(|s| s.allowed);
        if allowed != row.allowed {
            wrong.push(format!(
                "{} ({:?}): {} {}{} {:?} {:?}: allowed={allowed}",
                row.behaviour,
                row.who,
                row.verb,
                row.resource,
                row.subresource,
                row.namespace,
                row.name
            ));
        }
    }

    // Real calls. The certs manager's watches list by name; RBAC sees that as a named request.
    let by_name = |name: &str| ListParams::default().fields(&format!("metadata.name={name}"));
    let secrets_here = |who: Who| Api::<Secret>::namespaced(client_of(who), &op);
    let secrets_elsewhere = |who: Who| Api::<Secret>::namespaced(client_of(who), elsewhere.name());
    let hooks: Api<ValidatingWebhookConfiguration> = Api::all(as_admission.clone());
    let real_calls = [
        (
            "certs_lists_its_secret_by_name",
            secrets_here(Who::Admission)
                .list_metadata(&by_name("db-operator-webhook-tls"))
                .await
                .map(|_| ()),
            true,
        ),
        (
            "certs_reads_its_secret",
            secrets_here(Who::Admission)
                .get("db-operator-webhook-tls")
                .await
                .map(|_| ()),
            true,
        ),
        (
            "admission_cannot_list_the_operator_namespace_secrets",
            secrets_here(Who::Admission)
                .list_metadata(&ListParams::default())
                .await
                .map(|_| ()),
            false,
        ),
        (
            "admission_cannot_read_a_secret_in_another_namespace",
            secrets_elsewhere(Who::Admission)
                .get("db-credentials")
                .await
                .map(|_| ()),
            false,
        ),
        (
            "reconciler_reads_credentials_where_databases_live",
            secrets_elsewhere(Who::Reconciler)
                .get("db-credentials")
                .await
                .map(|_| ()),
            true,
        ),
        (
            "certs_lists_its_webhook_configuration_by_name",
            hooks
                .list_metadata(&by_name("db-operator-validating"))
                .await
                .map(|_| ()),
            true,
        ),
        (
            "webhook_configurations_cannot_be_listed_unnamed",
            hooks
                .list_metadata(&ListParams::default())
                .await
                .map(|_| ()),
            false,
        ),
    ];
    for (behaviour, result, allowed) in real_calls {
        let refused = matches!(&result, Err(kube::Error::Api(status)) if status.code == 403);
        let ok = if allowed { result.is_ok() } else { refused };
        if !ok {
            wrong.push(format!("{behaviour}: {result:?}"));
        }
    }

    for (kind, name) in &cluster_scoped {
        let result = match kind.as_str() {
            "ClusterRole" => Api::<ClusterRole>::all(admin.clone())
                .delete(name, &DeleteParams::default())
                .await
                .map(|_| ()),
            _ => Api::<ClusterRoleBinding>::all(admin.clone())
                .delete(name, &DeleteParams::default())
                .await
                .map(|_| ()),
        };
        if let Err(e) = result {
            eprintln!("cleanup of {kind} {name} failed: {e}");
        }
    }
    elsewhere.cleanup().await.unwrap();
    ns.cleanup().await.unwrap();
    assert!(
        wrong.is_empty(),
        "deploy/operator/rbac.yaml grants the wrong access:\n  {}",
        wrong.join("\n  ")
    );
}

/// The operator pod, created (dry-run) from the Deployment's template in a namespace that
/// enforces the "restricted" Pod Security Standard, as deploy/operator/namespace.yaml does.
/// Without its securityContext the same pod is refused, so the check can fail.
#[tokio::test]
async fn operator_pod_meets_the_restricted_pod_security_standard() {
    use k8s_openapi::api::core::v1::{Pod, ServiceAccount};

    let cluster = cluster().await.unwrap();
    let ns = cluster.namespace("pss").await.unwrap();
    let admin = cluster.client().unwrap();
    let enforce = serde_json::json!({"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }}});
    Api::<Namespace>::all(admin.clone())
        .patch(ns.name(), &PatchParams::default(), &Patch::Merge(&enforce))
        .await
        .unwrap();
    let deployments = deployments(&objects(
        cluster,
        "-f",
        &repo_root().join("deploy/operator/deployment.yaml"),
    ));
    assert_eq!(deployments.len(), 2);
    let pods: Api<Pod> = ns.api();
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let mut violations = Vec::new();
    let mut admitted_insecure = Vec::new();
    for deployment in &deployments {
        let template = &deployment["spec"]["template"];
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(str_at(template, "/spec/serviceAccountName").to_owned()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        ns.api::<ServiceAccount>()
            .create(&PostParams::default(), &sa)
            .await
            .unwrap();
        let pod_from = |spec: Value| -> Pod {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": str_at(deployment, "/metadata/name"), "labels": template["metadata"]["labels"]},
                "spec": spec,
            }))
            .expect("a Pod")
        };
        if let Err(e) = pods
            .create(&dry_run, &pod_from(template["spec"].clone()))
            .await
        {
            violations.push(format!("{}: {e}", describe(deployment)));
        }
        let mut insecure = template["spec"].clone();
        if let Some(map) = insecure.as_object_mut() {
            map.remove("securityContext");
        }
        for container in insecure["containers"].as_array_mut().into_iter().flatten() {
            if let Some(map) = container.as_object_mut() {
                map.remove("securityContext");
            }
        }
        if pods.create(&dry_run, &pod_from(insecure)).await.is_ok() {
            admitted_insecure.push(describe(deployment));
        }
    }
    ns.cleanup().await.unwrap();
    assert!(
        violations.is_empty(),
        "the operator pods violate the restricted Pod Security Standard: {violations:?}"
    );
    assert!(
        admitted_insecure.is_empty(),
        "pods without securityContext were admitted: restricted is not enforced: {admitted_insecure:?}"
    );
}

/// The admission pod mounts exactly `tls.crt` and `tls.key` of the certificate Secret (never
/// `ca.key`), the reconciler pod mounts no Secret at all, and each Deployment runs under its own
/// ServiceAccount; in `deploy/` and in the chart's default and cert-manager renderings.
#[tokio::test]
async fn only_the_serving_pair_is_mounted_and_each_binary_has_its_own_account() {
    let cluster = cluster().await.unwrap();
    let mut sources = vec![(
        "deploy/operator/deployment.yaml".to_owned(),
        objects(
            cluster,
            "-f",
            &repo_root().join("deploy/operator/deployment.yaml"),
        ),
    )];
    if let Some(helm) = helm() {
        let client = cluster.client().unwrap();
        let kube_version = client.apiserver_version().await.unwrap().git_version;
        for set in [&[][..], &["certManager.enabled=true"][..]] {
            let (objects, _) = render_chart(cluster, &helm, &kube_version, set);
            sources.push((format!("the chart {set:?}"), objects));
        }
    } else {
        eprintln!(
            "SKIPPED the chart renderings: no helm binary (set DBOP_HELM or put helm on PATH)"
        );
    }
    for (origin, objects) in sources {
        let deployments = deployments(&objects);
        let by_container = |name: &str| {
            deployments
                .iter()
                .find(|d| {
                    d["spec"]["template"]["spec"]["containers"]
                        .as_array()
                        .is_some_and(|c| c.iter().any(|c| c["name"] == name))
                })
                .unwrap_or_else(|| panic!("{origin}: no Deployment runs {name}"))
                .clone()
        };
        let (admission, reconciler) = (by_container("admission"), by_container("reconciler"));
        let spec = |d: &Value| d["spec"]["template"]["spec"].clone();
        assert_eq!(
            spec(&admission)["containers"].as_array().map(Vec::len),
            Some(1),
            "{origin}: the admission pod runs only the admission server"
        );
        assert_eq!(
            str_at(&spec(&admission), "/serviceAccountName"),
            "db-operator-admission",
            "{origin}"
        );
        assert_eq!(
            str_at(&spec(&reconciler), "/serviceAccountName"),
            "db-operator-reconciler",
            "{origin}"
        );
        let secret_volumes = |d: &Value| -> Vec<Value> {
            spec(d)["volumes"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|v| v.get("secret").is_some() || v.get("projected").is_some())
                .collect()
        };
        assert_eq!(
            secret_volumes(&reconciler),
            Vec::<Value>::new(),
            "{origin}: reconciler mounts no Secret"
        );
        let volumes = secret_volumes(&admission);
        assert_eq!(volumes.len(), 1, "{origin}: one Secret volume: {volumes:?}");
        let items: Vec<(&str, &str)> = volumes[0]["secret"]["items"]
            .as_array()
            .unwrap_or_else(|| panic!("{origin}: the Secret volume has no items: the whole Secret (with ca.key) is mounted"))
            .iter()
            .map(|i| (str_at(i, "/key"), str_at(i, "/path")))
            .collect();
        assert_eq!(
            items,
            [("tls.crt", "tls.crt"), ("tls.key", "tls.key")],
            "{origin}: only the serving pair is mounted"
        );
    }
}

/// The shipped webhook configurations (deploy/webhooks, rules and matchConditions as they are)
/// registered for a fresh namespace, pointed at an endpoint where nothing listens, with
/// failurePolicy Fail, on the real API server: while the admission server is "down", a spec
/// change is refused, but adding a finalizer, writing status, deleting, and removing the
/// finalizer of the deleted Database all succeed.
#[tokio::test]
async fn deletion_finalizers_and_status_pass_while_the_webhook_is_down() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{ApiResource, DeleteParams};

    let cluster = cluster().await.unwrap();
    let admin = cluster.client().unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    if crds
        .get_opt("databases.example.com")
        .await
        .unwrap()
        .is_none()
    {
        let crd = objects(cluster, "-f", &repo_root().join("deploy/crd/database.yaml"))
            .into_iter()
            .next()
            .expect("the CRD");
        let crd: CustomResourceDefinition = serde_json::from_value(crd).unwrap();
        cluster.install_crd(&crd, FIELD_MANAGER).await.unwrap();
    }
    let ns = cluster.namespace("webhook-down").await.unwrap();
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Database"),
        "databases",
    );
    let dbs: Api<DynamicObject> = Api::namespaced_with(admin.clone(), ns.name(), &resource);
    let db: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "example.com/v1", "kind": "Database",
        "metadata": {"name": "orders", "namespace": ns.name()},
        "spec": {},
    }))
    .unwrap();
    dbs.create(&PostParams::default(), &db).await.unwrap();

    // Register both configurations exactly as shipped, except where they point and which
    // namespace they intercept.
    let mut registered: Vec<(ApiResource, String)> = Vec::new();
    for file in [
        "deploy/webhooks/validating.yaml",
        "deploy/webhooks/mutating.yaml",
    ] {
        for mut object in objects(cluster, "-f", &repo_root().join(file)) {
            let name = format!("{}-{}", str_at(&object, "/metadata/name"), ns.name());
            object["metadata"]["name"] = Value::from(name.clone());
            for hook in object["webhooks"].as_array_mut().into_iter().flatten() {
                assert_eq!(hook["failurePolicy"], "Fail", "{file}");
                assert!(
                    hook["matchConditions"].is_array(),
                    "{file}: no matchConditions"
                );
                let path = str_at(hook, "/clientConfig/service/path").to_owned();
                hook["clientConfig"] =
                    serde_json::json!({"url": format!("https://127.0.0.1:1{path}")});
                hook["namespaceSelector"] = serde_json::json!({
                    "matchLabels": {"kubernetes.io/metadata.name": ns.name()}
                });
            }
            let (resource, _) = discovery::pinned_kind(&admin, &gvk(&object)).await.unwrap();
            Api::<DynamicObject>::all_with(admin.clone(), &resource)
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&object),
                )
                .await
                .unwrap_or_else(|e| panic!("registering {file}: {e}"));
            registered.push((resource, name));
        }
    }

    let merge = |patch: Value| {
        let dbs = dbs.clone();
        async move {
            dbs.patch("orders", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
        }
    };
    // The API server picks the configurations up within a second or two.
    let refused_spec = testkit::wait_for(
        std::time::Duration::from_secs(30),
        "the dead webhook to refuse a spec change",
        || async {
            match merge(serde_json::json!({"spec": {"replicas": 2}})).await {
                Err(kube::Error::Api(status)) if status.message.contains("webhook") => {
                    Ok(status.message)
                }
                other => Err(testkit::NotYet::new(format!("{other:?}"))),
            }
        },
    )
    .await;

    let text = |r: Result<(), kube::Error>| r.map_err(|e| e.to_string());
    let steps: Vec<(&str, Result<(), String>)> = vec![
        (
            "finalizer_added",
            text(
                merge(serde_json::json!({"metadata": {"finalizers": ["example.com/test-hold"]}}))
                    .await,
            ),
        ),
        (
            "status_written",
            text(
                dbs.patch_status(
                    "orders",
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"status": {"observedGeneration": 1}})),
                )
                .await
                .map(|_| ()),
            ),
        ),
        (
            "label_change_still_goes_through_the_webhook",
            match merge(serde_json::json!({"metadata": {"labels": {"team": "shop"}}})).await {
                Err(kube::Error::Api(status)) if status.message.contains("webhook") => Ok(()),
                Ok(()) => Err("accepted although the webhook is down".to_owned()),
                Err(e) => Err(e.to_string()),
            },
        ),
        (
            "deleted",
            text(
                dbs.delete("orders", &DeleteParams::default())
                    .await
                    .map(|_| ()),
            ),
        ),
        (
            "finalizer_removed_during_deletion",
            text(merge(serde_json::json!({"metadata": {"finalizers": null}})).await),
        ),
    ];
    let gone = testkit::wait_for(
        std::time::Duration::from_secs(30),
        "the deleted Database to disappear",
        || async {
            match dbs.get_opt("orders").await {
                Ok(None) => Ok(()),
                other => Err(testkit::NotYet::new(format!("{other:?}"))),
            }
        },
    )
    .await;

    for (resource, name) in &registered {
        let _ = Api::<DynamicObject>::all_with(admin.clone(), resource)
            .delete(name, &DeleteParams::default())
            .await;
    }
    ns.cleanup().await.unwrap();
    let refused_spec = refused_spec.expect("a spec change is refused while the webhook is down");
    eprintln!("spec change refused as expected: {refused_spec}");
    let failed: Vec<String> = steps
        .iter()
        .filter_map(|(step, result)| result.as_ref().err().map(|e| format!("{step}: {e}")))
        .collect();
    assert!(
        failed.is_empty(),
        "wrong outcome with the webhook down:\n  {}",
        failed.join("\n  ")
    );
    gone.expect("the Database is gone once its finalizer is removed");
}
