//! Certificate rotation under Database load, end to end against the local control plane: the
//! `admission` binary runs as a child process with **managed certificates** (its `certs`
//! manager creates the Secret in the test namespace, writes the files it serves and injects the
//! CA bundle into validating and mutating webhook configurations with `failurePolicy: Fail`
//! that select only this namespace). Two clients keep creating Databases and updating them
//! (more replicas, more storage) through the API server while a serving-certificate rotation and
//! then a full CA rotation are forced through the Secret's `certs.example.com/force-rotation`
//! annotation. Rotation phase timings are shortened with the `certs::CertConfig` flags so the
//! test takes well under a minute (about 10 s).
//!
//! The API server keeps one HTTP/2 connection to the webhook and opens a new one only when it
//! builds a new client (a changed caBundle or URL). A leaf rotation changes neither, so after
//! it the test re-points both configurations from `127.0.0.1` to `localhost` (caBundle kept)
//! and waits until the API server has opened a new connection (seen in `/proc/net/tcp`): the
//! rotated leaf is then verified by a real handshake, not only carried over an old session.
//!
//! Asserted: zero failed requests; at least `MIN_PER_PHASE` successful ones before, during each
//! rotation and after (the leaf phase: after the new connection); the leaf served on the TLS
//! handshake changed exactly twice; the final bundle (Secret and both injected caBundles) no
//! longer contains the first CA; every write passed both webhooks (`/metrics`). The counts are
//! printed (`--nocapture`) for the report.

mod cluster_support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::v1::Database;
use certs::pem::{cert_info_pem, fingerprint_sha256};
use certs::store::{split_pem_certs, StoredCerts, ANNOTATION_FORCE};
use cluster_support::{webhook_test_setup, Server};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::json;
use testkit::{wait_for, NotYet};

const TIMEOUT: Duration = Duration::from_secs(60);
const MANAGED_BY: &str = "admission-rotation-e2e-tests";
const CONFIG_PREFIX: &str = "admission-rot-";
const SECRET: &str = "db-operator-webhook-tls";
/// Successful Database writes required in every phase, so the test cannot pass vacuously.
const MIN_PER_PHASE: usize = 10;
const PHASES: [&str; 4] = ["before", "leaf rotation", "CA rotation", "after"];

/// Accepts any server certificate: the sampler only records which leaf is served (the API
/// server does the real verification against the injected bundle).
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Fingerprint of the leaf the server presents on a fresh TLS handshake.
async fn served_leaf(port: u16) -> std::io::Result<String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from("127.0.0.1").map_err(std::io::Error::other)?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
    leaf.map(|c| fingerprint_sha256(c.as_ref()))
        .ok_or_else(|| std::io::Error::other("no peer certificate"))
}

/// Client ports of the established connections to `port` (server side), from /proc/net/tcp:
/// tells when the API server opens new connections (each one a handshake with the then-served
/// leaf, verified against the then-injected bundle).
fn established_peers(port: u16) -> BTreeSet<u16> {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port_of = |addr: &str| u16::from_str_radix(addr.rsplit(':').next()?, 16).ok();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let established = *f.get(3)? == "01";
            (established && port_of(f.get(1)?)? == port).then_some(port_of(f.get(2)?)?)
        })
        .collect()
}

fn fingerprint(pem: &str) -> String {
    cert_info_pem(pem).unwrap().fingerprint
}

fn bundle_fingerprints(pem: &str) -> Vec<String> {
    split_pem_certs(pem)
        .iter()
        .map(|c| fingerprint(c))
        .collect()
}

/// Outcome of the load, by phase (index into `PHASES`) at the time each request finished.
#[derive(Default)]
struct Load {
    phase: AtomicUsize,
    ok: [AtomicUsize; 4],
    /// Connections to the server first seen in each phase (all from the API server).
    opened: [AtomicUsize; 4],
    failed: Mutex<Vec<String>>,
}

impl Load {
    fn ok_in(&self, phase: usize) -> usize {
        self.ok[phase].load(Ordering::Relaxed)
    }

    fn opened_in(&self, phase: usize) -> usize {
        self.opened[phase].load(Ordering::Relaxed)
    }

    /// Waits until `done` holds; times out with the per-phase counts.
    async fn wait_until(&self, what: &str, done: impl Fn(&Load) -> bool) {
        wait_for(TIMEOUT, what, || async {
            let counts: Vec<_> = (0..4).map(|p| (self.ok_in(p), self.opened_in(p))).collect();
            let failed = self.failed.lock().unwrap().clone();
            done(self).then_some(()).ok_or_else(|| {
                NotYet::new(format!(
                    "(writes ok, connections opened) by phase: {counts:?}; {} failed, first: {:?}",
                    failed.len(),
                    failed.first()
                ))
            })
        })
        .await
        .unwrap();
    }

    /// Waits until the current phase has seen `MIN_PER_PHASE` successful writes.
    async fn wait_enough(&self) {
        let phase = self.phase.load(Ordering::Relaxed);
        self.wait_until("successful writes in this phase", |l| {
            l.ok_in(phase) >= MIN_PER_PHASE
        })
        .await;
    }
}

/// One client: creates a Database, then updates it three times through merge patches (more
/// replicas, more storage), then the next one. Every write passes both webhooks.
async fn client_loop(dbs: Api<Database>, worker: usize, load: Arc<Load>, running: Arc<AtomicBool>) {
    let mut i = 0usize;
    while running.load(Ordering::Relaxed) {
        let (name, step) = (format!("load-{worker}-{}", i / 4), i % 4);
        let result = if step == 0 {
            let db = Database::new(&name, serde_json::from_value(json!({})).unwrap());
            dbs.create(&PostParams::default(), &db).await.map(drop)
        } else {
            let patch =
                json!({"spec": {"replicas": 1 + step, "storageSize": format!("{}Gi", 10 + step)}});
            dbs.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(drop)
        };
        let phase = load.phase.load(Ordering::Relaxed);
        match result {
            Ok(()) => {
                load.ok[phase].fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => load
                .failed
                .lock()
                .unwrap()
                .push(format!("{} {name} step {step}: {e}", PHASES[phase])),
        }
        i += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_leaf_and_ca_rotations_under_database_writes_fail_zero_requests() {
    let (cluster, client, ns) = webhook_test_setup(MANAGED_BY, CONFIG_PREFIX, "adm-rot").await;
    let config_name = format!("{CONFIG_PREFIX}{}", ns.name());
    let dir = tempfile::tempdir().unwrap();
    // The API server reloads webhook configurations within about a second; the host server's
    // files are written by its own manager (no kubelet delay), so the rotation phases can be short.
    let server = Server::start_managed(
        cluster.kubeconfig_path(),
        ns.name(),
        &config_name,
        dir.path(),
        &[
            "--cert-reload-interval",
            "200ms",
            "--bundle-propagation",
            "4s",
            "--secret-propagation",
            "4s",
        ],
        TIMEOUT,
    )
    .await;

    // Both configurations registered without caBundle: the server's manager injects it.
    let webhook = |name: &str, path: &str| {
        json!({
            "name": name,
            "clientConfig": {"url": format!("https://127.0.0.1:{}{path}", server.port)},
            "rules": [{"apiGroups": ["example.com"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                       "resources": ["databases"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns.name()}},
            "matchPolicy": "Equivalent", "failurePolicy": "Fail", "sideEffects": "None",
            "admissionReviewVersions": ["v1"], "timeoutSeconds": 5,
        })
    };
    let config = |kind: &str, hook: serde_json::Value| {
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
            "metadata": {"name": config_name, "labels": {"app.kubernetes.io/managed-by": MANAGED_BY}},
            "webhooks": [hook],
        })
    };
    let vwc: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let mwc: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let validating = config(
        "ValidatingWebhookConfiguration",
        webhook("validate.databases.example.com", "/validate"),
    );
    let mutating = config(
        "MutatingWebhookConfiguration",
        webhook("default.databases.example.com", "/mutate"),
    );
    let pp = PostParams::default();
    vwc.create(&pp, &serde_json::from_value(validating).unwrap())
        .await
        .unwrap();
    mwc.create(&pp, &serde_json::from_value(mutating).unwrap())
        .await
        .unwrap();

    let secrets: Api<Secret> = ns.api();
    let stored = || async {
        let secret = secrets.get_opt(SECRET).await?;
        secret
            .map(|s| StoredCerts::from_secret(&s))
            .ok_or_else(|| NotYet::new("no Secret"))
    };
    // Injected caBundles of every entry in both configurations.
    let injected = || async {
        let v = vwc
            .get(&config_name)
            .await
            .unwrap()
            .webhooks
            .unwrap_or_default();
        let m = mwc
            .get(&config_name)
            .await
            .unwrap()
            .webhooks
            .unwrap_or_default();
        let v = v.into_iter().map(|w| w.client_config.ca_bundle);
        let bundles = v.chain(m.into_iter().map(|w| w.client_config.ca_bundle));
        bundles
            .map(|b| {
                b.map(|b| String::from_utf8_lossy(&b.0).into_owned())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
    };
    let first = wait_for(TIMEOUT, "the Secret's bundle injected", || async {
        let stored = stored().await?;
        let ok = injected().await.iter().all(|b| *b == stored.bundle_pem);
        ok.then_some(stored)
            .ok_or_else(|| NotYet::new("not injected"))
    })
    .await
    .unwrap();
    let first_ca = fingerprint(&first.ca.as_ref().unwrap().cert_pem);
    let first_leaf = fingerprint(&first.leaf.as_ref().unwrap().cert_pem);

    // The API server loads webhook configurations asynchronously: wait until the validating
    // webhook answers (a rule only the webhook has, so the CRD schema cannot answer first).
    let dbs: Api<Database> = ns.api();
    let owned_key = Database::new(
        "owned-key",
        serde_json::from_value(json!({"config": {"data_directory": "/tmp"}})).unwrap(),
    );
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    wait_for(TIMEOUT, "the API server to call the webhook", || async {
        match dbs.create(&dry_run, &owned_key).await {
            Err(kube::Error::Api(status)) if status.message.contains("spec.config") => Ok(()),
            other => Err(NotYet::new(format!("{other:?}"))),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nserver log:\n{}", server.log_text()));

    let metrics_before = server.requests_total().await;
    let load = Arc::new(Load::default());
    // Sampler: the leaf presented on a fresh handshake every 100 ms, recorded when it changes;
    // and the connections the API server has open to the server, counted when first seen.
    let running = Arc::new(AtomicBool::new(true));
    let served = Arc::new(Mutex::new(vec![served_leaf(server.port).await.unwrap()]));
    let sampler = {
        let (running, served, port) = (Arc::clone(&running), Arc::clone(&served), server.port);
        let load = Arc::clone(&load);
        tokio::spawn(async move {
            let mut handshake_errors = Vec::new();
            let mut known = BTreeSet::new();
            while running.load(Ordering::Relaxed) {
                // Read 100 ms after our own last handshake closed: only others' connections.
                for peer in established_peers(port) {
                    if known.insert(peer) {
                        let phase = load.phase.load(Ordering::Relaxed);
                        load.opened[phase].fetch_add(1, Ordering::Relaxed);
                    }
                }
                match served_leaf(port).await {
                    Ok(leaf) => {
                        let mut served = served.lock().unwrap();
                        if served.last() != Some(&leaf) {
                            served.push(leaf);
                        }
                    }
                    Err(e) => handshake_errors.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            handshake_errors
        })
    };
    let served_now = || served.lock().unwrap().last().cloned().unwrap_or_default();
    assert_eq!(
        served_now(),
        first_leaf,
        "the server serves the Secret's leaf"
    );

    let workers: Vec<_> = (0..2)
        .map(|w| {
            tokio::spawn(client_loop(
                ns.api(),
                w,
                Arc::clone(&load),
                Arc::clone(&running),
            ))
        })
        .collect();
    let started = std::time::Instant::now();
    load.wait_enough().await;

    // Phase 1: forced serving-certificate rotation, until the new leaf is served.
    let force = |kind: &'static str| {
        let secrets = secrets.clone();
        async move {
            let patch = json!({"metadata": {"annotations": {ANNOTATION_FORCE: kind}}});
            secrets
                .patch(SECRET, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
        }
    };
    load.phase.store(1, Ordering::Relaxed);
    force("leaf").await;
    let second_leaf = wait_for(TIMEOUT, "the rotated leaf served", || async {
        let stored = stored().await?;
        let leaf = fingerprint(&stored.leaf.as_ref().unwrap().cert_pem);
        let ca = fingerprint(&stored.ca.as_ref().unwrap().cert_pem);
        assert_eq!(ca, first_ca, "a leaf rotation keeps the CA");
        (leaf != first_leaf && served_now() == leaf)
            .then_some(leaf)
            .ok_or_else(|| NotYet::new(format!("phase {}", stored.phase)))
    })
    .await
    .unwrap();
    // The API server keeps its established connection across a leaf rotation (the bundle did
    // not change), so by itself it would not handshake with the rotated leaf at all here.
    // Re-pointing both configurations at `localhost` (a name the leaf carries; the injected
    // caBundle untouched) makes it open a new connection, which verifies the rotated leaf
    // against the unchanged bundle while the load keeps going.
    let (ok_at_switch, opened_at_switch) = (load.ok_in(1), load.opened_in(1));
    let to_localhost = |path: &str| {
        let url = format!("https://localhost:{}{path}", server.port);
        let ops = json!([{"op": "replace", "path": "/webhooks/0/clientConfig/url", "value": url}]);
        Patch::Json::<()>(serde_json::from_value(ops).unwrap())
    };
    let pp = PatchParams::default();
    vwc.patch(&config_name, &pp, &to_localhost("/validate"))
        .await
        .unwrap();
    mwc.patch(&config_name, &pp, &to_localhost("/mutate"))
        .await
        .unwrap();
    load.wait_until("a new API-server connection, then writes through it", |l| {
        l.opened_in(1) > opened_at_switch && l.ok_in(1) >= ok_at_switch + MIN_PER_PHASE
    })
    .await;

    // Phase 2: forced CA rotation through all its phases: the new-CA leaf is served and the
    // old CA has left the Secret's bundle and both injected caBundles.
    load.phase.store(2, Ordering::Relaxed);
    force("ca").await;
    let phases_seen = Mutex::new(Vec::<String>::new());
    let last = wait_for(TIMEOUT, "the CA rotation to finish", || async {
        let stored = stored().await?;
        {
            let mut seen = phases_seen.lock().unwrap();
            let phase = stored.phase.to_string();
            if seen.last() != Some(&phase) {
                seen.push(phase);
            }
        }
        let ca = fingerprint(&stored.ca.as_ref().unwrap().cert_pem);
        let leaf = fingerprint(&stored.leaf.as_ref().unwrap().cert_pem);
        let done = ca != first_ca
            && stored.phase == certs::rotation::Phase::Stable
            && bundle_fingerprints(&stored.bundle_pem) == [ca]
            && served_now() == leaf
            && injected().await.iter().all(|b| *b == stored.bundle_pem);
        if done {
            Ok(stored)
        } else {
            Err(NotYet::new(format!("phase {}", stored.phase)))
        }
    })
    .await
    .unwrap();
    let phases_seen = phases_seen.into_inner().unwrap();
    load.wait_enough().await;

    // Phase 3: the final state (new CA only) keeps serving. Each bundle change gives the API
    // server a new client and connection (old+new bundle, then new only): wait for the second,
    // then for writes through it.
    load.phase.store(3, Ordering::Relaxed);
    load.wait_until("the API-server connection for the final bundle", |l| {
        l.opened_in(2) + l.opened_in(3) >= 2
    })
    .await;
    let ok_at_final = load.ok_in(3);
    load.wait_until("writes with the final bundle", |l| {
        l.ok_in(3) >= ok_at_final + MIN_PER_PHASE
    })
    .await;
    running.store(false, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let handshake_errors = sampler.await.unwrap();
    let metrics_delta = server.requests_total().await - metrics_before;

    let served = served.lock().unwrap().clone();
    let failed = load.failed.lock().unwrap().clone();
    let per_phase: Vec<String> = (0..4)
        .map(|p| format!("{} {}", PHASES[p], load.ok_in(p)))
        .collect();
    let opened: Vec<usize> = load
        .opened
        .iter()
        .map(|n| n.load(Ordering::Relaxed))
        .collect();
    let ok: usize = (0..4).map(|p| load.ok_in(p)).sum();
    eprintln!(
        "rotation e2e: {ok} Database writes ok ({}), {} failed, {metrics_delta} webhook calls, \
         {} distinct leaves served, API-server connections opened per phase {opened:?}, CA rotation phases {phases_seen:?}, {} sampler handshake \
         errors, {:.1}s",
        per_phase.join(", "),
        failed.len(),
        served.len(),
        handshake_errors.len(),
        started.elapsed().as_secs_f64(),
    );
    assert!(
        failed.is_empty(),
        "{} requests failed, first: {:?}\nserver log:\n{}",
        failed.len(),
        failed.first(),
        server.log_text()
    );
    for (p, name) in PHASES.iter().enumerate() {
        assert!(
            load.ok_in(p) >= MIN_PER_PHASE,
            "phase {name}: {per_phase:?}"
        );
    }
    // Every accepted write passed the mutating and the validating webhook.
    assert!(
        metrics_delta >= 2.0 * ok as f64,
        "{metrics_delta} webhook calls for {ok} writes"
    );
    let last_leaf = fingerprint(&last.leaf.as_ref().unwrap().cert_pem);
    assert_eq!(
        served,
        [first_leaf, second_leaf, last_leaf],
        "served leaves in order"
    );
    assert!(handshake_errors.is_empty(), "{handshake_errors:?}");
    for bundle in std::iter::once(last.bundle_pem.clone()).chain(injected().await) {
        assert!(
            !bundle_fingerprints(&bundle).contains(&first_ca),
            "first CA still in {bundle}"
        );
    }
    assert!(
        phases_seen.iter().any(|p| p == "LeafRotated"),
        "CA rotation phases observed: {phases_seen:?}"
    );

    vwc.delete(&config_name, &DeleteParams::default())
        .await
        .unwrap();
    mwc.delete(&config_name, &DeleteParams::default())
        .await
        .unwrap();
    drop(server);
    ns.cleanup().await.unwrap();
}
