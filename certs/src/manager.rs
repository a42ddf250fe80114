//! The certificate manager loop: keep the Secret converged ([`crate::store`]), keep the CA
//! bundle injected ([`crate::inject`]), mirror the Secret into `--cert-dir` when running outside
//! a pod, and publish a readiness verdict for `/readyz`.
//!
//! It re-runs on every change of the Secret or of an injection target (watches), when the next
//! rotation step is due, and at least every `--cert-resync`. Every replica runs it; the
//! Secret's write protocol makes them agree, and their injections are identical.

use std::future::Future;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use tracing::{debug, info, warn};

use crate::config::CertConfig;
use crate::error::{CertError, StoreError};
use crate::generate::verify_against;
use crate::inject::{watch_named, InjectReport, Injector};
use crate::metrics::{CertMetrics, Certificate};
use crate::pem::cert_info_pem;
use crate::resolver::ReloadingResolver;
use crate::rotation::Action;
use crate::store::{self, converge, SecretStore, StoredCerts};

/// What the last sync saw, for readiness.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    synced: bool,
    /// `--manage-certs=false`: certificates come from elsewhere (cert-manager); only a valid
    /// loaded pair is required, which the resolver guarantees.
    unmanaged: bool,
    secret_leaf_pem: Option<String>,
    secret_leaf_fingerprint: Option<String>,
    /// When this process first saw the Secret's current leaf.
    leaf_seen_at: Option<Timestamp>,
    /// caBundles of every webhook entry of every present target.
    injected_bundles: Vec<String>,
    last_error: Option<String>,
}

/// Readiness verdict source, cheap to clone into the HTTP server.
#[derive(Debug, Clone)]
pub struct Readiness {
    snapshot: Arc<ArcSwap<Snapshot>>,
    /// How long a served leaf may lag the Secret's (kubelet Secret-volume sync).
    lag_tolerance: Duration,
}

impl Readiness {
    /// Ready when the served leaf is the Secret's leaf and verifies against every injected
    /// bundle (so the API server, which verifies with that bundle, accepts it).
    ///
    /// A served leaf that differs from the Secret's is tolerated for `--secret-propagation`
    /// after this process first saw the new leaf, provided the injected bundles still trust it:
    /// otherwise every replica would turn unready together at each rotation (the kubelet
    /// updates mounted Secrets with a delay), emptying the Service and failing admission.
    pub fn check(&self, resolver: &ReloadingResolver) -> Result<(), String> {
        self.check_served(
            &String::from_utf8_lossy(&resolver.current_cert_pem()),
            Timestamp::now(),
        )
    }

    /// [`check`](Self::check) for a given served chain PEM and time.
    pub fn check_served(&self, served_pem: &str, now: Timestamp) -> Result<(), String> {
        let snap = self.snapshot.load();
        if !snap.synced {
            return Err(snap
                .last_error
                .clone()
                .map(|e| format!("certificates not synced yet: {e}"))
                .unwrap_or_else(|| "certificates not synced yet".to_string()));
        }
        if snap.unmanaged {
            return Ok(());
        }
        for (i, bundle) in snap.injected_bundles.iter().enumerate() {
            verify_against(served_pem, bundle, now).map_err(|e| {
                format!("served certificate is not trusted by injected caBundle #{i}: {e}")
            })?;
        }
        let served_fp = cert_info_pem(served_pem)
            .map(|i| i.fingerprint)
            .map_err(|e| format!("served certificate unreadable: {e}"))?;
        if snap.secret_leaf_fingerprint.as_deref() == Some(served_fp.as_str()) {
            return Ok(());
        }
        let lagging_for = snap
            .leaf_seen_at
            .map(|seen| now.duration_since(seen).unsigned_abs())
            .unwrap_or(Duration::MAX);
        if lagging_for <= self.lag_tolerance {
            return Ok(());
        }
        Err(format!(
            "served certificate {served_fp} is not the Secret's {} (for {}s)",
            snap.secret_leaf_fingerprint.as_deref().unwrap_or("<none>"),
            lagging_for.as_secs()
        ))
    }

    /// The Secret's leaf PEM as last synced (for tests and diagnostics).
    pub fn secret_leaf_pem(&self) -> Option<String> {
        self.snapshot.load().secret_leaf_pem.clone()
    }
}

/// What one [`CertManager::sync_once`] pass did.
#[derive(Debug, Clone)]
pub struct SyncReport {
    /// Secret content after the pass.
    pub certs: StoredCerts,
    /// Rotation steps this replica wrote.
    pub actions: Vec<Action>,
    /// Injection state after the pass.
    pub injection: InjectReport,
    /// Every injected bundle holds every CA of the Secret's bundle.
    pub injected: bool,
    /// When the next time-driven step is due.
    pub next_check: Timestamp,
}

/// Keeps certificates stored, rotated, injected and (outside a pod) written to disk.
pub struct CertManager {
    client: kube::Client,
    config: CertConfig,
    store: SecretStore,
    injector: Injector,
    readiness: Readiness,
    remembered: Option<StoredCerts>,
    injected: bool,
    metrics: CertMetrics,
}

impl CertManager {
    /// A manager for `config`; does nothing until [`sync_once`](Self::sync_once) or
    /// [`run`](Self::run).
    pub fn new(client: kube::Client, config: CertConfig) -> Self {
        Self {
            store: SecretStore::new(client.clone(), &config.cert_namespace, &config.cert_secret),
            injector: Injector::new(client.clone(), config.inject_targets()),
            readiness: Readiness {
                snapshot: Arc::new(ArcSwap::from_pointee(Snapshot::default())),
                lag_tolerance: config.secret_propagation,
            },
            client,
            config,
            remembered: None,
            injected: false,
            metrics: CertMetrics::global().clone(),
        }
    }

    /// Records into `metrics` instead of [`CertMetrics::global`].
    pub fn with_metrics(mut self, metrics: CertMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The readiness handle for `/readyz`.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// One full pass: converge the Secret, write files (outside a pod), inject the bundle.
    /// Call it once before loading the resolver from `--cert-dir` when running outside a pod,
    /// so the files exist.
    pub async fn sync_once(&mut self) -> Result<SyncReport, StoreError> {
        let result = self.sync_inner().await;
        if let Err(err) = &result {
            let mut snap = (**self.readiness.snapshot.load()).clone();
            snap.last_error = Some(err.to_string());
            self.readiness.snapshot.store(Arc::new(snap));
        }
        result
    }

    async fn sync_inner(&mut self) -> Result<SyncReport, StoreError> {
        self.config.validate()?;
        let names = self.config.serving_names();
        let policy = self.config.policy();
        let converged = converge(
            &self.store,
            &names,
            &policy,
            self.injected,
            self.remembered.as_ref(),
            Timestamp::now,
            &self.metrics,
        )
        .await?;
        let certs = converged.current.certs;
        if let Some(info) = certs
            .ca
            .as_ref()
            .and_then(|c| cert_info_pem(&c.cert_pem).ok())
        {
            self.metrics.set_expiry(Certificate::Ca, info.not_after);
        }
        self.remembered = Some(certs.clone());
        if self.config.writes_cert_dir() {
            write_cert_dir(&self.config.cert_dir, &certs).map_err(|source| {
                StoreError::Material {
                    name: self.store.qualified_name(),
                    source,
                }
            })?;
        }
        let injection = self.injector.inject(&certs.bundle_pem).await?;
        let injected = injection.all_contain(&certs.bundle_fingerprints());
        self.injected = injected;

        let previous = self.readiness.snapshot.load();
        let leaf_pem = certs.leaf.as_ref().map(|l| l.cert_pem.clone());
        let leaf_fp = leaf_pem
            .as_deref()
            .and_then(|p| cert_info_pem(p).ok())
            .map(|i| i.fingerprint);
        let leaf_seen_at = if previous.secret_leaf_fingerprint == leaf_fp {
            previous.leaf_seen_at
        } else {
            Some(Timestamp::now())
        };
        self.readiness.snapshot.store(Arc::new(Snapshot {
            synced: true,
            unmanaged: false,
            secret_leaf_pem: leaf_pem,
            secret_leaf_fingerprint: leaf_fp,
            leaf_seen_at,
            injected_bundles: injection
                .targets
                .iter()
                .filter(|t| t.present)
                .flat_map(|t| t.bundles.iter().cloned())
                .collect(),
            last_error: None,
        }));
        Ok(SyncReport {
            certs,
            actions: converged.actions,
            injection,
            injected,
            next_check: converged.next_check,
        })
    }

    /// Runs until `shutdown` completes. Errors are logged and retried with backoff; the loop
    /// itself only returns on shutdown. With `--manage-certs=false` it just waits.
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        if !self.config.manage_certs {
            info!("certificate management disabled (--manage-certs=false); serving files from --cert-dir only");
            self.readiness.snapshot.store(Arc::new(Snapshot {
                synced: true,
                unmanaged: true,
                ..Snapshot::default()
            }));
            shutdown.await;
            return;
        }
        let secrets: Api<Secret> =
            Api::namespaced(self.client.clone(), &self.config.cert_namespace);
        let mut secret_changes = watch_named(secrets, &self.config.cert_secret);
        let mut target_changes = self.injector.changes();
        if let Err(error) = self.config.validate() {
            // Nothing can be fixed by retrying; /readyz reports the reason.
            tracing::error!(%error, "certificate management cannot start");
            let _ = self.sync_once().await;
            shutdown.await;
            return;
        }
        let mut failures: u32 = 0;
        loop {
            let delay = match self.sync_once().await {
                Ok(report) => {
                    failures = 0;
                    let until_due = report
                        .next_check
                        .duration_since(Timestamp::now())
                        .try_into()
                        .unwrap_or(Duration::ZERO);
                    debug!(
                        phase = %report.certs.phase,
                        injected = report.injected,
                        actions = report.actions.len(),
                        next_check = %report.next_check,
                        "certificate sync done"
                    );
                    // A floor keeps a not-yet-injected rotation from spinning.
                    until_due.clamp(Duration::from_millis(500), self.config.cert_resync)
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let backoff = Duration::from_millis(500)
                        .saturating_mul(2u32.saturating_pow(failures.min(6)))
                        .min(Duration::from_secs(30));
                    warn!(%error, failures, retry_in_ms = backoff.as_millis() as u64, "certificate sync failed");
                    backoff
                }
            };
            tokio::select! {
                () = &mut shutdown => {
                    info!("certificate manager stopping");
                    return;
                }
                () = tokio::time::sleep(delay) => {}
                Some(()) = secret_changes.next() => debug!("certificate Secret changed"),
                Some(()) = target_changes.next() => debug!("injection target changed"),
            }
        }
    }
}

/// Runs a [`CertManager`] for `config` until `shutdown` completes.
pub async fn run(
    client: kube::Client,
    config: CertConfig,
    shutdown: impl Future<Output = ()> + Send,
) {
    CertManager::new(client, config).run(shutdown).await;
}

/// Writes `tls.crt`, `tls.key`, `ca.crt` and `ca-bundle.crt` into `dir`, each atomically
/// (temp file + rename) and only when changed; the key is written before the certificate so a
/// reader polling in between sees at worst a mismatched pair, which it rejects and retries.
pub fn write_cert_dir(dir: &Path, certs: &StoredCerts) -> Result<(), CertError> {
    let write_err = |path: &Path, source| CertError::Write {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| write_err(dir, e))?;
    let Some(leaf) = &certs.leaf else {
        return Ok(());
    };
    let ca = certs.ca.as_ref().map(|c| c.cert_pem.as_str()).unwrap_or("");
    for (name, content, mode) in [
        (store::KEY_TLS_KEY, leaf.key_pem.as_str(), 0o600),
        (store::KEY_TLS_CRT, leaf.cert_pem.as_str(), 0o644),
        (store::KEY_CA_CRT, ca, 0o644),
        (store::KEY_CA_BUNDLE, certs.bundle_pem.as_str(), 0o644),
    ] {
        let path = dir.join(name);
        if std::fs::read(&path).is_ok_and(|old| old == content.as_bytes()) {
            continue;
        }
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(&tmp)
                .map_err(|e| write_err(&tmp, e))?
        };
        file.write_all(content.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| write_err(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| write_err(&path, e))?;
        debug!(path = %path.display(), "wrote certificate file");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{generate_ca, issue_serving_cert, ServingNames};
    use crate::rotation::RotationPolicy;

    fn readiness(snapshot: Snapshot, tolerance: Duration) -> Readiness {
        Readiness {
            snapshot: Arc::new(ArcSwap::from_pointee(snapshot)),
            lag_tolerance: tolerance,
        }
    }

    #[test]
    fn readiness_table() {
        let now = Timestamp::now();
        let names = ServingNames::for_service("s", "n");
        let hour = Duration::from_secs(3600);
        let ca = generate_ca("t", now, hour).unwrap();
        let other_ca = generate_ca("t", now, hour).unwrap();
        let old_leaf = issue_serving_cert(&ca, &names, now, hour).unwrap().cert_pem;
        let new_leaf = issue_serving_cert(&ca, &names, now, hour).unwrap().cert_pem;
        let fp = |p: &str| cert_info_pem(p).unwrap().fingerprint;
        let synced = |bundles: Vec<String>, seen_secs_ago: i64| Snapshot {
            synced: true,
            unmanaged: false,
            secret_leaf_pem: Some(new_leaf.clone()),
            secret_leaf_fingerprint: Some(fp(&new_leaf)),
            leaf_seen_at: Some(Timestamp::from_second(now.as_second() - seen_secs_ago).unwrap()),
            injected_bundles: bundles,
            last_error: None,
        };
        let cases: Vec<(&str, Snapshot, &str, bool)> = vec![
            (
                "not_synced_is_unready",
                Snapshot::default(),
                &new_leaf,
                false,
            ),
            (
                "serving_secret_leaf_with_issuer_injected_is_ready",
                synced(vec![ca.cert_pem.clone()], 999),
                &new_leaf,
                true,
            ),
            (
                "no_injection_targets_is_ready",
                synced(vec![], 999),
                &new_leaf,
                true,
            ),
            (
                "bundle_without_issuer_is_unready",
                synced(vec![other_ca.cert_pem.clone()], 999),
                &new_leaf,
                false,
            ),
            (
                "one_webhook_entry_without_issuer_is_unready",
                synced(vec![ca.cert_pem.clone(), String::new()], 999),
                &new_leaf,
                false,
            ),
            (
                "old_leaf_within_propagation_delay_is_ready",
                synced(vec![ca.cert_pem.clone()], 10),
                &old_leaf,
                true,
            ),
            (
                "old_leaf_after_propagation_delay_is_unready",
                synced(vec![ca.cert_pem.clone()], 999),
                &old_leaf,
                false,
            ),
        ];
        for (name, snap, served, want) in cases {
            let got = readiness(snap, Duration::from_secs(60)).check_served(served, now);
            assert_eq!(got.is_ok(), want, "{name}: {got:?}");
        }
    }

    #[test]
    fn cert_dir_is_written_atomically_and_loadable() {
        let dir = tempfile::tempdir().unwrap();
        let names = ServingNames::for_service("s", "n");
        let certs = StoredCerts::default()
            .apply(
                &Action::Create,
                &names,
                &RotationPolicy::default(),
                Timestamp::now(),
            )
            .unwrap();
        write_cert_dir(dir.path(), &certs).unwrap();
        let resolver =
            ReloadingResolver::from_files(dir.path().join("tls.crt"), dir.path().join("tls.key"))
                .unwrap();
        assert_eq!(
            resolver.current_cert_pem(),
            certs.leaf.as_ref().unwrap().cert_pem.as_bytes()
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("tls.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "key must not be group/world readable");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("ca-bundle.crt")).unwrap(),
            certs.bundle_pem
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
