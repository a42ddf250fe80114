//! The operator as users run it, inside the local cluster: `deploy/local/up.d/10-operator` in
//! cluster mode installs the `deploy/` manifests (kustomize overlay) with an image that packs this
//! test build's own `admission` and `reconciler` binaries (no release build in the test run), on
//! the real node. Then `deploy/local/rotation-check` forces a leaf rotation and a CA rotation of the
//! admission server's certificates while a writer keeps creating and updating Databases through
//! the API server (every write passes both webhooks in the pod); each new certificate reaches the
//! pod through the kubelet's Secret-volume update. Asserted: zero failed writes, enough writes,
//! both rotations seen in what the pod serves. The script's report (counts, how long the kubelet
//! took) is printed (`--nocapture`). The operator is uninstalled afterwards, also on failure.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `target/debug`: this test binary lives in `target/debug/deps`, the workspace's binaries one up.
fn debug_bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/debug")
        .to_path_buf();
    for bin in ["admission", "reconciler"] {
        assert!(
            dir.join(bin).is_file(),
            "{} missing: run with `cargo test --workspace` (it builds both binaries)",
            dir.join(bin).display()
        );
    }
    dir
}

fn run(what: &str, cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn kubectl(args: &[&str]) -> String {
    let mut cmd = Command::new("kubectl");
    if let Ok(kubeconfig) = std::env::var("DBOP_KUBECONFIG") {
        cmd.arg(format!("--kubeconfig={kubeconfig}"));
    }
    run(&format!("kubectl {}", args.join(" ")), cmd.args(args))
}

fn operator_hook(mode: &str) -> Command {
    let mut cmd = Command::new(repo().join("deploy/local/up.d/10-operator"));
    cmd.env("DBOP_OPERATOR", mode);
    cmd
}

/// Removes the in-cluster operator (Deployments, webhooks) however the test ends: the other
/// test binaries run their own controllers and webhooks.
struct Uninstall;

impl Drop for Uninstall {
    fn drop(&mut self) {
        let _ = operator_hook("off").output();
    }
}

#[test]
fn in_cluster_admission_server_rotates_its_certificates_under_writes_with_zero_failures() {
    let _uninstall = Uninstall;
    run(
        "10-operator in cluster mode",
        operator_hook("cluster").env("DBOP_OPERATOR_BIN_DIR", debug_bin_dir()),
    );
    // The CA rotation waits for the bundle and for the Secret to reach every pod; the defaults
    // (30 s, 180 s) are shortened, still well above the kubelet's Secret-volume update (~10 s).
    let ns = "db-operator-system";
    kubectl(&[
        "-n",
        ns,
        "set",
        "env",
        "deployment/db-operator-admission",
        "DBOP_BUNDLE_PROPAGATION=10s",
        "DBOP_SECRET_PROPAGATION=45s",
    ]);
    kubectl(&[
        "-n",
        ns,
        "rollout",
        "status",
        "deployment/db-operator-admission",
        "--timeout=180s",
    ]);
    let report = run(
        "rotation-check",
        Command::new(repo().join("deploy/local/rotation-check")).arg("both"),
    );
    println!("{report}");
    let writes = report
        .lines()
        .find_map(|l| l.strip_prefix("writes: "))
        .unwrap_or_else(|| panic!("no writes line in:\n{report}"));
    let numbers: Vec<usize> = writes
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let [ok, failed] = numbers[..] else {
        panic!("unexpected writes line {writes:?}");
    };
    assert_eq!(
        failed, 0,
        "failed Database writes during the rotations:\n{report}"
    );
    assert!(
        ok >= 50,
        "only {ok} writes: the check proves little\n{report}"
    );
    assert!(
        report.matches("the pod serves a new leaf").count() >= 2,
        "a new leaf per rotation, seen in what the pod serves:\n{report}"
    );
    assert!(report.contains("leaf rotation done") && report.contains("ca rotation done"));
}
