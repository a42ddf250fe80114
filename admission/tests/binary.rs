//! The `admission` binary end to end: `dev-cert` writes usable material, `serve` checks TLS
//! files before taking the port, serves over TLS, and exits cleanly on SIGTERM.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;

fn admission() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_admission"));
    cmd.env("RUST_LOG", "info");
    cmd
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn bad_tls_files_fail_startup_before_the_port_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let status = admission()
        .args(["dev-cert", "--out"])
        .arg(dir.path().join("a"))
        .status()
        .unwrap();
    assert!(status.success());
    admission()
        .args(["dev-cert", "--out"])
        .arg(dir.path().join("b"))
        .status()
        .unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let cases = [
        (
            dir.path().join("a/tls.crt"),
            dir.path().join("missing.key"),
            "missing.key",
        ),
        (
            dir.path().join("a/tls.crt"),
            dir.path().join("b/tls.key"),
            "does not belong to certificate",
        ),
        (
            dir.path().join("a/tls.key"),
            dir.path().join("a/tls.key"),
            "contains no CERTIFICATE",
        ),
    ];
    for (cert, key, fragment) in cases {
        let out = admission()
            .args(["serve", "--no-cluster", "--listen", &listen, "--tls-cert"])
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(fragment), "{fragment:?} not in {stderr}");
        assert!(
            !stderr.contains("listening"),
            "bound before failing: {stderr}"
        );
    }
    std::net::TcpListener::bind(&listen).expect("the port was never taken");
}

#[tokio::test]
async fn serve_answers_over_tls_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let out = admission()
        .args(["dev-cert", "--days", "2", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    let child = admission()
        .args(["--log-format", "json", "serve", "--no-cluster", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--tls-cert")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("tls.key"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut served = Served(child);
    let ca = std::fs::read_to_string(dir.path().join("ca.crt")).unwrap();
    let client = TestServer::external(format!("127.0.0.1:{port}").parse().unwrap(), ca);

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut h1 = loop {
        let config = client.client_config(rustls::ALL_VERSIONS, &[b"http/1.1"]);
        if client.tls_connect_with(config).await.is_ok() {
            break client.h1().await;
        }
        assert!(Instant::now() < deadline, "server did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let answer = send_h1(&mut h1, request("GET", "/readyz", None, empty())).await;
    assert_eq!(answer.status, StatusCode::OK);
    let review = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/validate/storage_shrink_is_denied.request.json"),
    )
    .unwrap();
    let answer = send_h1(&mut h1, post_json("/validate", review)).await;
    assert_eq!(answer.json()["response"]["allowed"], false);
    drop(h1);

    let pid = served.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let exit = tokio::task::spawn_blocking(move || {
        let status = served.0.wait().unwrap();
        let mut logs = String::new();
        if let Some(mut stderr) = served.0.stderr.take() {
            std::io::Read::read_to_string(&mut stderr, &mut logs).unwrap();
        }
        (status, logs)
    });
    let (status, logs) = tokio::time::timeout(Duration::from_secs(10), exit)
        .await
        .expect("exits within 10s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}\n{logs}");
    // One JSON line per decision, with the fields the issue asks for.
    let decision = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "admission decision")
        .unwrap_or_else(|| panic!("no decision line in\n{logs}"));
    for field in [
        "uid",
        "namespace",
        "name",
        "operation",
        "allowed",
        "latency_us",
    ] {
        assert!(
            decision.get(field).is_some(),
            "{field} missing from {decision}"
        );
    }
    assert_eq!(decision["allowed"], false);
    assert!(
        logs.contains("SIGTERM received") && logs.contains("admission server stopped"),
        "{logs}"
    );
}
