//! Integration tests against the local control plane (`deploy/local/up`, via `testkit`):
//! concurrent managers converge on one Secret, deleted state is repaired without a restart,
//! and forced leaf and CA rotations keep the served certificate trusted by the injected bundle
//! at every moment.
//!
//! Each test uses a fresh namespace and its own cluster-scoped webhook configurations, named
//! after the namespace. Those configurations can never intercept anything: their rules name a
//! resource that does not exist and their namespace selector matches no namespace.

use std::sync::Arc;
use std::time::Duration;

use certs::generate::verify_against;
use certs::pem::cert_info_pem;
use certs::store::{StoredCerts, ANNOTATION_FORCE, ANNOTATION_PHASE};
use certs::{CertConfig, CertManager, ReloadingResolver};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use testkit::{cluster, wait_for, NotYet, TestNamespace};

const WAIT: Duration = Duration::from_secs(60);

/// A manager started by `Fixture::spawn_manager`: its task and the sender that stops it.
type RunningManager = (
    tokio::task::JoinHandle<()>,
    tokio::sync::oneshot::Sender<()>,
);

struct Fixture {
    ns: TestNamespace,
    config: CertConfig,
    cert_dir: tempfile::TempDir,
    /// Readiness handles of the managers started by `spawn_manager`.
    readiness: std::sync::Mutex<Vec<certs::Readiness>>,
}

impl Fixture {
    async fn new(prefix: &str) -> Fixture {
        Self::with_webhook(prefix, None).await
    }

    /// `live_port`: point the webhooks at a real server on 127.0.0.1:<port> for ConfigMaps
    /// labelled `certs-e2e=1` in the test namespace, with failurePolicy Fail.
    async fn with_webhook(prefix: &str, live_port: Option<u16>) -> Fixture {
        let ns = cluster().await.unwrap().namespace(prefix).await.unwrap();
        let cert_dir = tempfile::tempdir().unwrap();
        let name = format!("certs-it-{}", ns.name());
        let mut config = CertConfig::defaults();
        config.cert_namespace = ns.name().to_string();
        config.cert_secret = "webhook-tls".into();
        config.webhook_service = "webhook".into();
        config.validating_webhook_configs = vec![name.clone()];
        config.mutating_webhook_configs = vec![name.clone()];
        config.crd_name = String::new();
        config.cert_dir = cert_dir.path().to_path_buf();
        config.write_cert_dir = Some(true);
        config.bundle_propagation = Duration::from_secs(1);
        config.secret_propagation = Duration::from_secs(3);
        config.cert_resync = Duration::from_secs(5);
        let fixture = Fixture {
            ns,
            config,
            cert_dir,
            readiness: std::sync::Mutex::new(Vec::new()),
        };
        fixture.create_webhook_configs(live_port).await;
        fixture
    }

    fn name(&self) -> String {
        self.config.validating_webhook_configs[0].clone()
    }

    fn secrets(&self) -> Api<Secret> {
        self.ns.api()
    }

    fn validating(&self) -> Api<ValidatingWebhookConfiguration> {
        Api::all(self.ns.client())
    }

    fn mutating(&self) -> Api<MutatingWebhookConfiguration> {
        Api::all(self.ns.client())
    }

    async fn create_webhook_configs(&self, live_port: Option<u16>) {
        let ns = self.ns.name().to_string();
        let entry = |hook: &str, path: &str| match live_port {
            Some(port) => json!({
                "name": hook,
                "clientConfig": {"url": format!("https://127.0.0.1:{port}/{path}")},
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"],
                           "operations": ["CREATE", "UPDATE"], "resources": ["configmaps"]}],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
                "objectSelector": {"matchLabels": {"certs-e2e": "1"}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
            }),
            None => json!({
                "name": hook,
                "clientConfig": {"url": format!("https://127.0.0.1:1/{path}")},
                "rules": [{"apiGroups": ["certs-it.invalid"], "apiVersions": ["v1"],
                           "operations": ["CREATE"], "resources": ["nothings"]}],
                "namespaceSelector": {"matchLabels": {"certs-it/never": "true"}},
                "failurePolicy": "Ignore",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 1,
            }),
        };
        let vwc: ValidatingWebhookConfiguration = serde_json::from_value(json!({
            "metadata": {"name": self.name()},
            "webhooks": [entry("a.certs-it.invalid", "validate"), entry("b.certs-it.invalid", "validate")],
        }))
        .unwrap();
        let mwc: MutatingWebhookConfiguration = serde_json::from_value(json!({
            "metadata": {"name": self.name()},
            "webhooks": [entry("m.certs-it.invalid", "mutate")],
        }))
        .unwrap();
        self.validating()
            .create(&PostParams::default(), &vwc)
            .await
            .unwrap();
        self.mutating()
            .create(&PostParams::default(), &mwc)
            .await
            .unwrap();
    }

    /// caBundles of every webhook entry, as PEM text.
    async fn injected_bundles(&self) -> Vec<String> {
        let text = |b: &Option<k8s_openapi::ByteString>| {
            b.as_ref()
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                .unwrap_or_default()
        };
        let validating = self.validating().get_opt(&self.name()).await.unwrap();
        let mutating = self.mutating().get_opt(&self.name()).await.unwrap();
        let validating = validating.and_then(|v| v.webhooks).unwrap_or_default();
        let mutating = mutating.and_then(|m| m.webhooks).unwrap_or_default();
        validating
            .iter()
            .map(|w| &w.client_config)
            .chain(mutating.iter().map(|w| &w.client_config))
            .map(|c| text(&c.ca_bundle))
            .collect()
    }

    async fn stored(&self) -> Option<StoredCerts> {
        self.secrets()
            .get_opt(&self.config.cert_secret)
            .await
            .unwrap()
            .map(|s| StoredCerts::from_secret(&s))
    }

    async fn annotate_secret(&self, key: &str, value: &str) {
        let patch = json!({"metadata": {"annotations": {key: value}}});
        self.secrets()
            .patch(
                &self.config.cert_secret,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .unwrap();
    }

    fn spawn_manager(&self) -> RunningManager {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let manager = CertManager::new(self.ns.client(), self.config.clone());
        self.readiness.lock().unwrap().push(manager.readiness());
        let task = tokio::spawn(manager.run(async move {
            let _ = rx.await;
        }));
        (task, tx)
    }

    async fn wait_injected(&self) -> StoredCerts {
        wait_for(
            WAIT,
            "the Secret's bundle injected into every webhook",
            || async {
                let stored = self
                    .stored()
                    .await
                    .ok_or_else(|| NotYet::new("no Secret"))?;
                let bundles = self.injected_bundles().await;
                if bundles.iter().all(|b| *b == stored.bundle_pem) && !bundles.is_empty() {
                    Ok(stored)
                } else {
                    Err(NotYet::new(format!(
                        "{} entries, bundle differs",
                        bundles.len()
                    )))
                }
            },
        )
        .await
        .unwrap()
    }

    /// A resolver serving the files the managers write, as the server does, reloading them every
    /// 100 ms until the returned sender is dropped.
    async fn reloading_resolver(
        &self,
    ) -> (Arc<ReloadingResolver>, tokio::sync::oneshot::Sender<()>) {
        let resolver = ReloadingResolver::from_files_when_ready(
            self.config.cert_path(),
            self.config.key_path(),
            WAIT,
        )
        .await
        .unwrap();
        let (reload_stop, rx) = tokio::sync::oneshot::channel::<()>();
        resolver.spawn_reload(Duration::from_millis(100), async move {
            let _ = rx.await;
        });
        (resolver, reload_stop)
    }

    async fn finish(self) {
        let dp = DeleteParams::default();
        let _ = self.validating().delete(&self.name(), &dp).await;
        let _ = self.mutating().delete(&self.name(), &dp).await;
        drop(self.cert_dir);
        self.ns.cleanup().await.unwrap();
    }
}

fn fingerprint(pem: &str) -> String {
    cert_info_pem(pem).unwrap().fingerprint
}

fn ca_fingerprint(stored: &StoredCerts) -> String {
    fingerprint(&stored.ca.as_ref().unwrap().cert_pem)
}

fn leaf_fingerprint(stored: &StoredCerts) -> String {
    fingerprint(&stored.leaf.as_ref().unwrap().cert_pem)
}

/// Stops every manager, then waits up to 10 s for each task to end cleanly.
async fn stop_managers(managers: impl IntoIterator<Item = RunningManager>) {
    let tasks: Vec<_> = managers
        .into_iter()
        .map(|(task, stop)| {
            stop.send(()).unwrap();
            task
        })
        .collect();
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn two_managers_started_at_once_end_with_one_consistent_secret() {
    let fx = Fixture::new("certs-race").await;
    let mut a = CertManager::new(fx.ns.client(), fx.config.clone());
    let mut b = CertManager::new(fx.ns.client(), fx.config.clone());
    let (ra, rb) = tokio::join!(a.sync_once(), b.sync_once());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());

    let stored = fx.stored().await.unwrap();
    assert_eq!(
        ra.certs, stored,
        "manager A ended on different content than the Secret"
    );
    assert_eq!(
        rb.certs, stored,
        "manager B ended on different content than the Secret"
    );
    let creates = [&ra, &rb]
        .iter()
        .filter(|r| r.actions.contains(&certs::rotation::Action::Create))
        .count();
    assert_eq!(
        creates, 1,
        "exactly one replica creates the Secret: {:?} / {:?}",
        ra.actions, rb.actions
    );

    // Both inject the same bundle; a second pass finds nothing to do.
    let injected = fx.wait_injected().await;
    assert_eq!(injected, stored);
    let (ra, rb) = tokio::join!(a.sync_once(), b.sync_once());
    assert!(ra.unwrap().actions.is_empty());
    assert!(rb.unwrap().actions.is_empty());
    assert_eq!(
        fx.stored().await.unwrap(),
        stored,
        "an idle pass must not rewrite the Secret"
    );
    fx.finish().await;
}

#[tokio::test]
async fn deleted_ca_bundle_and_secret_are_repaired_without_restart() {
    let fx = Fixture::new("certs-repair").await;
    let manager = fx.spawn_manager();
    let original = fx.wait_injected().await;

    // Someone strips the caBundle from one webhook entry (and takes ownership of the field).
    let patch = json!([{"op": "remove", "path": "/webhooks/1/clientConfig/caBundle"}]);
    fx.validating()
        .patch(
            &fx.name(),
            &PatchParams::default(),
            &Patch::<()>::Json(serde_json::from_value(patch).unwrap()),
        )
        .await
        .unwrap();
    let repaired = fx.wait_injected().await;
    assert_eq!(repaired.bundle_pem, original.bundle_pem);

    // Someone deletes the Secret: it comes back with the same CA, so the injected bundle that
    // API servers already use stays valid (no trust gap).
    fx.secrets()
        .delete(&fx.config.cert_secret, &DeleteParams::default())
        .await
        .unwrap();
    let restored = wait_for(WAIT, "the Secret to be recreated", || async {
        let stored = fx.stored().await.ok_or_else(|| NotYet::new("absent"))?;
        Ok(stored)
    })
    .await
    .unwrap();
    assert_eq!(ca_fingerprint(&restored), ca_fingerprint(&original));
    fx.wait_injected().await;

    stop_managers([manager]).await;
    fx.finish().await;
}

/// Polls the served certificate (through the resolver reloading the cert dir, as the server
/// does) and the injected bundles until `done`, asserting at every sample that every webhook
/// entry's bundle trusts the served leaf. Returns the number of samples and phases seen.
async fn watch_trust_until(
    fx: &Fixture,
    resolver: &Arc<ReloadingResolver>,
    done: impl Fn(&StoredCerts, &ReloadingResolver) -> bool,
) -> (usize, Vec<String>) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut samples = 0;
    let mut phases: Vec<String> = Vec::new();
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "rotation did not finish; phases seen {phases:?}"
        );
        let served = String::from_utf8(resolver.current_cert_pem()).unwrap();
        let now = jiff::Timestamp::now();
        for (i, bundle) in fx.injected_bundles().await.iter().enumerate() {
            if let Err(e) = verify_against(&served, bundle, now) {
                panic!(
                    "sample {samples}: webhook entry {i} would reject the served certificate: {e}"
                );
            }
        }
        // /readyz must not flap during a rotation: an unready replica leaves the Service.
        for (i, readiness) in fx.readiness.lock().unwrap().iter().enumerate() {
            if let Err(e) = readiness.check(resolver) {
                panic!("sample {samples}: manager {i} reports not ready: {e}");
            }
        }
        samples += 1;
        let secret = fx.secrets().get(&fx.config.cert_secret).await.unwrap();
        let phase = secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_PHASE).cloned())
            .unwrap_or_default();
        if phases.last() != Some(&phase) {
            phases.push(phase);
        }
        if done(&StoredCerts::from_secret(&secret), resolver) {
            return (samples, phases);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn forced_leaf_rotation_keeps_the_ca_and_the_bundle_valid() {
    let fx = Fixture::new("certs-leaf").await;
    let manager = fx.spawn_manager();
    let before = fx.wait_injected().await;
    let (resolver, _reload_stop) = fx.reloading_resolver().await;
    let old_leaf = leaf_fingerprint(&before);
    assert_eq!(resolver.fingerprint(), old_leaf);

    fx.annotate_secret(ANNOTATION_FORCE, "leaf").await;
    let (samples, _) = watch_trust_until(&fx, &resolver, |stored, resolver| {
        let leaf = leaf_fingerprint(stored);
        leaf != old_leaf && resolver.fingerprint() == leaf && stored.force.is_none()
    })
    .await;
    let after = fx.stored().await.unwrap();
    assert_eq!(after.ca, before.ca, "a leaf rotation keeps the CA");
    assert_eq!(after.bundle_pem, before.bundle_pem);
    eprintln!("leaf rotation: {samples} samples, zero untrusted");

    stop_managers([manager]).await;
    fx.finish().await;
}

#[tokio::test]
async fn forced_ca_rotation_overlaps_and_keeps_the_bundle_valid_throughout() {
    let fx = Fixture::new("certs-ca").await;
    let manager = fx.spawn_manager();
    let before = fx.wait_injected().await;
    let (resolver, _reload_stop) = fx.reloading_resolver().await;
    let old_ca = ca_fingerprint(&before);

    fx.annotate_secret(ANNOTATION_FORCE, "ca").await;
    let (samples, phases) = watch_trust_until(&fx, &resolver, |stored, resolver| {
        let ca = ca_fingerprint(stored);
        ca != old_ca
            && stored.phase == certs::rotation::Phase::Stable
            && stored.bundle_fingerprints() == vec![ca]
            && resolver.fingerprint() == leaf_fingerprint(stored)
    })
    .await;
    for phase in ["BundlePublished", "LeafRotated"] {
        assert!(
            phases.iter().any(|p| p == phase),
            "phase {phase} never observed: {phases:?}"
        );
    }
    let after = fx.wait_injected().await;
    assert_eq!(
        after.bundle_fingerprints().len(),
        1,
        "old CA dropped after the overlap"
    );
    assert_eq!(after.force, None);
    eprintln!("CA rotation: {samples} samples, phases {phases:?}, zero untrusted");

    stop_managers([manager]).await;
    fx.finish().await;
}

#[tokio::test]
async fn crd_conversion_webhook_gets_the_bundle_only_while_strategy_is_webhook() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let mut fx = Fixture::new("certs-crd").await;
    let group = format!("{}.certs-it.example", fx.ns.name());
    let crd_name = format!("widgets.{group}");
    let crds: Api<CustomResourceDefinition> = Api::all(fx.ns.client());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": crd_name},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                          "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
            "conversion": {"strategy": "Webhook", "webhook": {
                "conversionReviewVersions": ["v1"],
                "clientConfig": {"url": "https://127.0.0.1:1/convert"}}},
        }
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    fx.config.crd_name = crd_name.clone();

    let mut manager = CertManager::new(fx.ns.client(), fx.config.clone());
    let report = manager.sync_once().await.unwrap();
    let bundle = |crd: &CustomResourceDefinition| {
        crd.spec
            .conversion
            .as_ref()
            .and_then(|c| c.webhook.as_ref())
            .and_then(|w| w.client_config.as_ref())
            .and_then(|c| c.ca_bundle.as_ref())
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
    };
    let stored = crds.get(&crd_name).await.unwrap();
    assert_eq!(bundle(&stored), Some(report.certs.bundle_pem.clone()));
    assert_eq!(
        stored
            .spec
            .conversion
            .as_ref()
            .unwrap()
            .webhook
            .as_ref()
            .unwrap()
            .client_config
            .as_ref()
            .unwrap()
            .url
            .as_deref(),
        Some("https://127.0.0.1:1/convert"),
        "injection must not touch the rest of clientConfig"
    );
    assert!(report.injected);

    // Conversion switched off by its owner: we do not fight it and do not re-add the webhook.
    let off = json!({"spec": {"conversion": {"strategy": "None", "webhook": null}}});
    crds.patch(&crd_name, &PatchParams::default(), &Patch::Merge(&off))
        .await
        .unwrap();
    manager.sync_once().await.unwrap();
    let stored = crds.get(&crd_name).await.unwrap();
    assert_eq!(stored.spec.conversion.as_ref().unwrap().strategy, "None");
    assert_eq!(bundle(&stored), None);

    let _ = crds.delete(&crd_name, &DeleteParams::default()).await;
    fx.finish().await;
}

/// A minimal admission webhook over TLS through `resolver`: allows everything, answers one
/// request per connection (`Connection: close`) so that every API server call makes a new
/// handshake with whatever certificate is current. Records the leaf served at each accept.
async fn serve_allow_all(
    listener: tokio::net::TcpListener,
    resolver: Arc<ReloadingResolver>,
    served: Arc<std::sync::Mutex<Vec<String>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = resolver.server_config().unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let acceptor = acceptor.clone();
        let resolver = Arc::clone(&resolver);
        let served = Arc::clone(&served);
        tokio::spawn(async move {
            let fp = resolver.fingerprint();
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            served.lock().unwrap().push(fp);
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            let (head_end, content_length) = loop {
                let Ok(n) = tls.read(&mut chunk).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..pos]).to_ascii_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    break (pos + 4, len);
                }
            };
            while buf.len() < head_end + content_length {
                let Ok(n) = tls.read(&mut chunk).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let review: serde_json::Value =
                serde_json::from_slice(&buf[head_end..head_end + content_length])
                    .unwrap_or_default();
            let body = json!({
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {"uid": review["request"]["uid"], "allowed": true},
            })
            .to_string();
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(response.as_bytes()).await;
            let _ = tls.shutdown().await;
        });
    }
}

/// Waits until the webhook has taken at least 10 more calls than the `since` already recorded
/// in `served`.
async fn wait_webhook_calls(served: &std::sync::Mutex<Vec<String>>, since: usize, what: &str) {
    wait_for(WAIT, what, || async {
        let n = served.lock().unwrap().len() - since;
        if n >= 10 {
            Ok(())
        } else {
            Err(NotYet::new(format!("{n} calls")))
        }
    })
    .await
    .unwrap();
}

/// The acceptance scenario for certificates: a client keeps creating and updating
/// objects through the API server, which calls our webhook (failurePolicy Fail) over TLS with
/// the injected caBundle, while a leaf rotation and then a full CA rotation are forced.
#[tokio::test]
async fn rotations_under_load_through_the_api_server_fail_zero_requests() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let fx = Fixture::with_webhook("certs-e2e", Some(port)).await;
    let manager = fx.spawn_manager();
    let before = fx.wait_injected().await;
    let (resolver, _reload_stop) = fx.reloading_resolver().await;
    let served = Arc::new(std::sync::Mutex::new(Vec::new()));
    tokio::spawn(serve_allow_all(
        listener,
        Arc::clone(&resolver),
        Arc::clone(&served),
    ));

    let load = Load::start(&fx);
    // Load is flowing through the webhook before we rotate.
    wait_webhook_calls(&served, 0, "webhook calls under load").await;

    let old_leaf = leaf_fingerprint(&before);
    fx.annotate_secret(ANNOTATION_FORCE, "leaf").await;
    let (_, _) = watch_trust_until(&fx, &resolver, |stored, resolver| {
        let leaf = leaf_fingerprint(stored);
        leaf != old_leaf && resolver.fingerprint() == leaf
    })
    .await;
    let old_ca = ca_fingerprint(&before);
    fx.annotate_secret(ANNOTATION_FORCE, "ca").await;
    let (_, phases) = watch_trust_until(&fx, &resolver, |stored, resolver| {
        let ca = ca_fingerprint(stored);
        ca != old_ca
            && stored.phase == certs::rotation::Phase::Stable
            && resolver.fingerprint() == leaf_fingerprint(stored)
    })
    .await;
    fx.wait_injected().await;
    // Keep the load on the final state for a moment (new CA only in the bundle).
    let calls_before = served.lock().unwrap().len();
    wait_webhook_calls(&served, calls_before, "webhook calls after the CA rotation").await;
    let (ok, failed) = load.stop().await;
    let leaves: std::collections::BTreeSet<String> =
        served.lock().unwrap().iter().cloned().collect();
    eprintln!(
        "e2e: {} requests ok, {} failed, {} webhook handshakes, {} distinct leaves served, phases {phases:?}",
        ok,
        failed.len(),
        served.lock().unwrap().len(),
        leaves.len()
    );
    assert!(
        failed.is_empty(),
        "{} requests failed, first: {:?}",
        failed.len(),
        failed.first()
    );
    assert!(
        leaves.len() >= 3,
        "original, leaf-rotated and CA-rotated leaves must all have served calls"
    );

    stop_managers([manager]).await;
    fx.finish().await;
}

/// Two replicas running side by side through a forced CA rotation: they never start two
/// different rotations (at most one next CA is ever published) and end on one CA.
#[tokio::test]
async fn two_running_managers_rotate_the_ca_once() {
    let fx = Fixture::new("certs-pair").await;
    let managers = [fx.spawn_manager(), fx.spawn_manager()];
    let before = fx.wait_injected().await;
    let old_ca = ca_fingerprint(&before);

    fx.annotate_secret(ANNOTATION_FORCE, "ca").await;
    let cas_seen = std::sync::Mutex::new(std::collections::BTreeSet::new());
    let after = wait_for(WAIT, "the CA rotation to settle", || async {
        let stored = fx.stored().await.ok_or_else(|| NotYet::new("no Secret"))?;
        cas_seen
            .lock()
            .unwrap()
            .extend(stored.bundle_fingerprints());
        let ca = ca_fingerprint(&stored);
        if ca != old_ca && stored.phase == certs::rotation::Phase::Stable {
            Ok(stored)
        } else {
            Err(NotYet::new(format!("phase {}", stored.phase)))
        }
    })
    .await
    .unwrap();
    let cas_seen = cas_seen.into_inner().unwrap();
    assert_eq!(
        cas_seen.len(),
        2,
        "exactly the old and one new CA may ever appear in the bundle: {cas_seen:?}"
    );
    assert_eq!(after.bundle_fingerprints().len(), 1);
    fx.wait_injected().await;

    stop_managers(managers).await;
    fx.finish().await;
}

/// Two clients creating and updating labelled ConfigMaps as fast as they can, through the API
/// server and therefore through the webhook of `Fixture::with_webhook` (failurePolicy Fail).
struct Load {
    running: Arc<std::sync::atomic::AtomicBool>,
    ok: Arc<std::sync::atomic::AtomicUsize>,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(fx: &Fixture) -> Load {
        use k8s_openapi::api::core::v1::ConfigMap;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let running = Arc::new(AtomicBool::new(true));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let mut workers = Vec::new();
        for worker in 0..2 {
            let cms: Api<ConfigMap> = fx.ns.api();
            let (running, ok, failed) =
                (Arc::clone(&running), Arc::clone(&ok), Arc::clone(&failed));
            workers.push(tokio::spawn(async move {
                let mut i = 0u32;
                while running.load(Ordering::Relaxed) {
                    let name = format!("load-{worker}-{}", i % 20);
                    let cm: ConfigMap = serde_json::from_value(json!({
                        "metadata": {"name": name, "labels": {"certs-e2e": "1"}},
                        "data": {"i": i.to_string()},
                    }))
                    .unwrap();
                    let pp = PatchParams::apply("certs-e2e-load");
                    match cms.patch(&name, &pp, &Patch::Apply(&cm)).await {
                        Ok(_) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failed
                            .lock()
                            .unwrap()
                            .push(format!("{}: {e}", jiff::Timestamp::now())),
                    }
                    i += 1;
                }
            }));
        }
        Load {
            running,
            ok,
            failed,
            workers,
        }
    }

    /// Stops the clients; returns (requests ok, failures).
    async fn stop(self) -> (usize, Vec<String>) {
        use std::sync::atomic::Ordering;
        self.running.store(false, Ordering::Relaxed);
        for w in self.workers {
            w.await.unwrap();
        }
        let failed = self.failed.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failed)
    }
}

/// Starts a manager for `config` recording into `metrics`, registered for readiness checks.
fn spawn_manager_with(
    fx: &Fixture,
    config: CertConfig,
    metrics: certs::CertMetrics,
) -> RunningManager {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let manager = CertManager::new(fx.ns.client(), config).with_metrics(metrics);
    fx.readiness.lock().unwrap().push(manager.readiness());
    let task = tokio::spawn(manager.run(async move {
        let _ = rx.await;
    }));
    (task, tx)
}

/// The rotation livelock and the clock, end to end. The Secret holds a CA with 10 s left
/// (a cluster that was switched off), less than the leaf's 12 s renew window, so every leaf it
/// can issue is already "expiring": the CA must rotate first. Then, with validities of
/// seconds (leaf 30 s renewed 12 s before expiry, CA 60 s renewed 35 s before), the clock
/// alone drives a leaf renewal and a second full CA rotation, while two clients keep writing
/// through the API server, which calls the webhook (failurePolicy Fail, one handshake per
/// call) with the injected caBundle. Zero requests may fail.
#[tokio::test]
async fn short_validities_rotate_a_dying_ca_first_then_by_the_clock_fail_zero_requests() {
    use certs::metrics::RotationOutcome;
    use certs::rotation::{Action, RotationPolicy};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let fx = Fixture::with_webhook("certs-clock", Some(port)).await;
    let mut config = fx.config.clone();
    config.leaf_validity = Duration::from_secs(30);
    config.leaf_renew_before = Duration::from_secs(12);
    config.ca_validity = Duration::from_secs(60);
    config.ca_renew_before = Duration::from_secs(35);
    config.validate().unwrap();

    let dying_policy = RotationPolicy {
        ca_validity: Duration::from_secs(10),
        ..config.policy()
    };
    let dying = StoredCerts::default()
        .apply(
            &Action::Create,
            &config.serving_names(),
            &dying_policy,
            jiff::Timestamp::now(),
        )
        .unwrap();
    let mut secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(config.cert_secret.clone()),
            ..Default::default()
        },
        ..Secret::default()
    };
    dying.write_into(&mut secret);
    fx.secrets()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let dying_ca = ca_fingerprint(&dying);

    let metrics = certs::CertMetrics::new();
    let manager = spawn_manager_with(&fx, config.clone(), metrics.clone());
    fx.wait_injected().await;
    let (resolver, _reload_stop) = fx.reloading_resolver().await;
    let served = Arc::new(std::sync::Mutex::new(Vec::new()));
    tokio::spawn(serve_allow_all(
        listener,
        Arc::clone(&resolver),
        Arc::clone(&served),
    ));
    let load = Load::start(&fx);
    wait_webhook_calls(&served, 0, "webhook calls under load").await;

    let cas = std::sync::Mutex::new(std::collections::BTreeSet::from([dying_ca.clone()]));
    let (samples, phases) = watch_trust_until(&fx, &resolver, |stored, resolver| {
        let ca = ca_fingerprint(stored);
        let mut cas = cas.lock().unwrap();
        cas.insert(ca);
        cas.len() >= 3
            && stored.phase == certs::rotation::Phase::Stable
            && resolver.fingerprint() == leaf_fingerprint(stored)
            && metrics.rotations("issue_leaf", RotationOutcome::Success) >= 1
    })
    .await;
    let calls_before = served.lock().unwrap().len();
    wait_webhook_calls(&served, calls_before, "webhook calls after the rotations").await;
    let (ok, failed) = load.stop().await;

    let leaves: std::collections::BTreeSet<String> =
        served.lock().unwrap().iter().cloned().collect();
    let count = |step: &str| metrics.rotations(step, RotationOutcome::Success);
    eprintln!(
        "clock-driven: {ok} requests ok, {} failed, {} webhook handshakes, {} distinct leaves served, \
         {} CAs, {samples} samples, phases {phases:?}; writes: start_ca_rotation {}, promote_next_ca {}, \
         drop_old_ca {}, issue_leaf {}",
        failed.len(),
        served.lock().unwrap().len(),
        leaves.len(),
        cas.lock().unwrap().len(),
        count("start_ca_rotation"),
        count("promote_next_ca"),
        count("drop_old_ca"),
        count("issue_leaf"),
    );
    assert!(
        failed.is_empty(),
        "{} requests failed, first: {:?}",
        failed.len(),
        failed.first()
    );
    assert!(count("start_ca_rotation") >= 2 && count("promote_next_ca") >= 2);
    assert!(count("drop_old_ca") >= 2);
    assert!(
        leaves.len() >= 3,
        "dying, first-rotation and later leaves served"
    );
    assert_eq!(metrics.rotations("issue_leaf", RotationOutcome::Error), 0);

    stop_managers([manager]).await;
    fx.finish().await;
}

/// A CA key damaged in the Secret is not swapped for a new CA at once (the API server would
/// reject the served leaf until the new bundle and leaf propagate): the new CA is published
/// beside the old one first, the leaf switched after propagation, the old CA dropped last,
/// while the load through the API server fails zero requests.
#[tokio::test]
async fn corrupted_ca_key_is_replaced_through_the_overlap_fail_zero_requests() {
    use certs::metrics::RotationOutcome;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let fx = Fixture::with_webhook("certs-corrupt", Some(port)).await;
    let metrics = certs::CertMetrics::new();
    let manager = spawn_manager_with(&fx, fx.config.clone(), metrics.clone());
    let before = fx.wait_injected().await;
    let (resolver, _reload_stop) = fx.reloading_resolver().await;
    let served = Arc::new(std::sync::Mutex::new(Vec::new()));
    tokio::spawn(serve_allow_all(
        listener,
        Arc::clone(&resolver),
        Arc::clone(&served),
    ));
    let load = Load::start(&fx);
    wait_webhook_calls(&served, 0, "webhook calls under load").await;

    let old_ca = ca_fingerprint(&before);
    let old_leaf = leaf_fingerprint(&before);
    let creates_before = metrics.rotations("create", RotationOutcome::Success);
    // Someone edits the Secret and garbles the CA key (base64 of "not a key").
    let garbage = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n";
    let patch = json!({"stringData": {"ca.key": garbage}});
    fx.secrets()
        .patch(
            &fx.config.cert_secret,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let saw_overlap = std::sync::atomic::AtomicBool::new(false);
    let (samples, phases) = watch_trust_until(&fx, &resolver, |stored, resolver| {
        if stored.bundle_fingerprints().len() == 2
            && stored.bundle_fingerprints().contains(&old_ca)
            && leaf_fingerprint(stored) == old_leaf
        {
            // New CA published while the old leaf is still served: the overlap.
            saw_overlap.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let ca = ca_fingerprint(stored);
        ca != old_ca
            && stored.phase == certs::rotation::Phase::Stable
            && stored.bundle_fingerprints() == vec![ca]
            && resolver.fingerprint() == leaf_fingerprint(stored)
    })
    .await;
    let calls_before = served.lock().unwrap().len();
    wait_webhook_calls(
        &served,
        calls_before,
        "webhook calls after the CA replacement",
    )
    .await;
    let (ok, failed) = load.stop().await;
    eprintln!(
        "corrupted CA: {ok} requests ok, {} failed, {samples} samples, phases {phases:?}",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} requests failed, first: {:?}",
        failed.len(),
        failed.first()
    );
    assert!(
        saw_overlap.load(std::sync::atomic::Ordering::Relaxed),
        "the new CA was never published beside the old one before the leaf switched: {phases:?}"
    );
    for phase in ["BundlePublished", "LeafRotated"] {
        assert!(
            phases.iter().any(|p| p == phase),
            "phase {phase} never observed: {phases:?}"
        );
    }
    assert_eq!(metrics.rotations("recover_ca", RotationOutcome::Success), 1);
    assert_eq!(
        metrics.rotations("create", RotationOutcome::Success),
        creates_before,
        "no immediate swap to a fresh CA"
    );

    stop_managers([manager]).await;
    fx.finish().await;
}
