//! `admission check` as a CI pipeline uses it: every sample manifest under
//! `fixtures/manifests` gets the exit code its name promises (`valid-*` 0, `invalid-*` 1),
//! updates are checked against their old manifest, and unreadable input exits 3.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/manifests")
}

fn check(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_admission"))
        .arg("check")
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("run admission check")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn sample_manifests_get_the_exit_code_their_name_promises() {
    let mut seen = (0, 0);
    for entry in std::fs::read_dir(manifests()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".yaml") {
            continue;
        }
        let out = check(&["-f", path.to_str().unwrap()]);
        let text = stdout(&out);
        if name.starts_with("valid-") {
            seen.0 += 1;
            assert_eq!(out.status.code(), Some(0), "{name}:\n{text}");
            assert!(text.contains("result: allowed"), "{name}:\n{text}");
            assert!(!text.contains("error:"), "{name}:\n{text}");
        } else if name.starts_with("invalid-") {
            seen.1 += 1;
            assert_eq!(out.status.code(), Some(1), "{name}:\n{text}");
            assert!(text.contains("result: denied"), "{name}:\n{text}");
            assert!(text.contains("error: "), "{name}:\n{text}");
        } else {
            panic!("{name}: sample manifests are named valid-* or invalid-*");
        }
    }
    assert!(
        seen.0 >= 3 && seen.1 >= 3,
        "too few sample manifests: {seen:?}"
    );
}

#[test]
fn updates_are_checked_against_the_old_manifest() {
    let dir = manifests().join("update");
    let cases = [
        (
            "storage-shrink",
            1,
            "spec.storageSize: cannot shrink from 20Gi to 10Gi",
        ),
        ("storage-grow", 0, "growing from 20Gi to 40Gi"),
        (
            "version-skip",
            1,
            "cannot upgrade from 15.14.0 to 17.7.0 in one step",
        ),
        ("version-upgrade", 0, "result: allowed"),
        (
            "replace-keeps-stored-values",
            0,
            r#"{"op":"add","path":"/spec/version","value":"16.4.0"},{"op":"add","path":"/spec/replicas","value":3},{"op":"add","path":"/spec/storageSize","value":"20Gi"}"#,
        ),
    ];
    for (case, code, fragment) in cases {
        let new = dir.join(format!("{case}.new.yaml"));
        let old = dir.join(format!("{case}.old.yaml"));
        let out = check(&["-f", new.to_str().unwrap(), "--old", old.to_str().unwrap()]);
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(code), "{case}:\n{text}");
        assert!(
            text.contains(fragment),
            "{case} lacks {fragment:?}:\n{text}"
        );
    }
}

#[test]
fn minimal_manifest_prints_the_full_defaulting_patch_as_json() {
    let path = manifests().join("valid-postgres-minimal.yaml");
    let out = check(&["-f", path.to_str().unwrap(), "-o", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["allowed"], true);
    let paths: Vec<&str> = report["patch"]
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "/spec/engine",
            "/spec/version",
            "/spec/replicas",
            "/spec/storageSize",
            "/spec/resources",
            "/spec/resources/requests",
            "/spec/resources/requests/cpu",
            "/spec/resources/requests/memory"
        ]
    );
    assert_eq!(report["patch"][2]["value"], 1);
}

#[test]
fn production_flag_defaults_three_replicas() {
    let path = manifests().join("valid-postgres-minimal.yaml");
    let out = check(&["-f", path.to_str().unwrap(), "-o", "json", "--production"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["patch"][2],
        serde_json::json!({"op": "add", "path": "/spec/replicas", "value": 3})
    );
}

#[test]
fn unreadable_input_exits_3_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        "apiVersion: example.com/v1\nkind: Database\nspec: [unclosed\n",
    )
    .unwrap();
    let configmap = dir.path().join("configmap.yaml");
    std::fs::write(
        &configmap,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
    )
    .unwrap();
    let two = dir.path().join("two.yaml");
    std::fs::write(
        &two,
        "apiVersion: example.com/v1\nkind: Database\nmetadata: {name: a}\n---\napiVersion: example.com/v1\nkind: Database\nmetadata: {name: b}\n",
    )
    .unwrap();
    let missing = dir.path().join("missing.yaml");
    let valid = manifests().join("valid-postgres-minimal.yaml");
    let cases: [(Vec<&Path>, &str); 5] = [
        (vec![&two], "check one Database per file"),
        (vec![&broken], "not valid YAML"),
        (vec![&configmap], "not a Database manifest"),
        (vec![&missing], "cannot read"),
        (vec![&valid, &configmap], "not a Database manifest"),
    ];
    for (files, fragment) in cases {
        let mut args = vec!["-f", files[0].to_str().unwrap()];
        if let Some(old) = files.get(1) {
            args.extend(["--old", old.to_str().unwrap()]);
        }
        let out = check(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {stderr}");
        assert!(stderr.contains(fragment), "{args:?}: {stderr}");
    }
}

#[test]
fn other_documents_beside_the_database_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bundle.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: example.com/v1\nkind: Database\nmetadata: {name: orders, namespace: shop}\nspec: {replicas: 0}\n",
    )
    .unwrap();
    let out = check(&["-f", file.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("error: spec.replicas: 0 is out of range"),
        "{text}"
    );
}

#[test]
fn replacement_catalog_changes_defaults_and_bad_catalog_is_unreadable() {
    let builtin = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../api/src/catalog.yaml"),
    )
    .unwrap();
    assert!(
        builtin.contains("default: \"17.7.0\""),
        "built-in catalog changed shape"
    );
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog.yaml");
    std::fs::write(
        &catalog,
        builtin.replace("default: \"17.7.0\"", "default: \"16.10.0\""),
    )
    .unwrap();
    let manifest = manifests().join("valid-postgres-minimal.yaml");
    let out = check(&[
        "-f",
        manifest.to_str().unwrap(),
        "-o",
        "json",
        "--catalog",
        catalog.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["patch"][1]["value"], "16.10.0");

    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "engines: 5\n").unwrap();
    let out = check(&[
        "-f",
        manifest.to_str().unwrap(),
        "--catalog",
        broken.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("failed to load catalog"));
}
