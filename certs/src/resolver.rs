//! A rustls [`ResolvesServerCert`] whose certificate can be swapped atomically while the server
//! runs, plus a poller that re-reads the certificate files and swaps in a new, valid pair.
//!
//! Why poll contents instead of watching mtimes or inotify events: Kubernetes updates a mounted
//! Secret by writing a new timestamped directory and atomically re-pointing the `..data`
//! symlink; the visible `tls.crt`/`tls.key` symlinks never change, so inotify on them and their
//! mtimes miss the rotation. Reading two small files every few seconds is cheap and always right.
//!
//! A pair is swapped in only if the chain parses, the key parses, the key matches the leaf, and
//! the leaf is valid now (not expired, not before its `not_before`). A half-written update (new
//! cert, old key) or an expired certificate is therefore rejected, logged once (an expired or
//! not-yet-valid one at error level) and counted in `certificate_reloads_total`, and retried on
//! the next poll, while the old pair keeps serving. Existing TLS connections are never touched: the
//! resolver is consulted only during new handshakes.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::error::CertError;
use crate::metrics::{CertMetrics, Certificate, ReloadResult};
use crate::pem::{fingerprint_sha256, parse_cert_der, parse_pem_chain, parse_private_key};

/// One validated certificate chain and key, with the bytes it was loaded from.
struct Served {
    certified: Arc<CertifiedKey>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    fingerprint: String,
    not_after: Option<jiff::Timestamp>,
}

/// Where the resolver reloads from.
#[derive(Debug, Clone)]
struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
}

impl CertFiles {
    /// Both paths, so an error about the pair (e.g. a key mismatch) names both files.
    fn describe(&self) -> String {
        format!("{} + {}", self.cert.display(), self.key.display())
    }
}

/// Outcome of one reload attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The files hold the pair already being served.
    Unchanged,
    /// A new pair was validated and is now served; carries the new leaf fingerprint.
    Swapped {
        /// SHA-256 of the new leaf certificate (hex).
        fingerprint: String,
    },
    /// The files changed but the new content is invalid; the old pair keeps serving.
    Rejected {
        /// Why the new content was rejected.
        reason: String,
    },
}

/// Serves the current certificate to every new TLS handshake; swappable at runtime.
pub struct ReloadingResolver {
    current: ArcSwap<Served>,
    files: Option<CertFiles>,
    /// Digest of the last content we rejected, so a bad file is logged once, not every poll.
    last_rejected: Mutex<Option<[u8; 32]>>,
    metrics: CertMetrics,
}

impl fmt::Debug for ReloadingResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.current.load();
        f.debug_struct("ReloadingResolver")
            .field("fingerprint", &current.fingerprint)
            .field("not_after", &current.not_after)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.load().certified))
    }
}

impl ReloadingResolver {
    /// Loads and validates `cert_path` (PEM chain, leaf first) and `key_path` (PEM key).
    ///
    /// Fails with a message naming the file and the problem: unreadable, no certificate, no key,
    /// unsupported key, or a key that does not match the leaf. Reads synchronously: call it at
    /// startup, before binding the listener.
    pub fn from_files(
        cert_path: impl Into<PathBuf>,
        key_path: impl Into<PathBuf>,
    ) -> Result<Arc<Self>, CertError> {
        Self::from_files_with_metrics(cert_path, key_path, CertMetrics::global().clone())
    }

    /// [`from_files`](Self::from_files) recording into `metrics` instead of the global ones.
    pub fn from_files_with_metrics(
        cert_path: impl Into<PathBuf>,
        key_path: impl Into<PathBuf>,
        metrics: CertMetrics,
    ) -> Result<Arc<Self>, CertError> {
        let files = CertFiles {
            cert: cert_path.into(),
            key: key_path.into(),
        };
        let cert_pem = read_file(&files.cert)?;
        let key_pem = read_file(&files.key)?;
        let served = validate_pair(cert_pem, key_pem, &files.describe(), jiff::Timestamp::now())?;
        if let Some(not_after) = served.not_after {
            metrics.set_expiry(Certificate::Leaf, not_after);
        }
        info!(
            cert = %files.cert.display(),
            fingerprint = %served.fingerprint,
            not_after = ?served.not_after,
            "loaded serving certificate"
        );
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(served),
            files: Some(files),
            last_rejected: Mutex::new(None),
            metrics,
        }))
    }

    /// Like [`from_files`](Self::from_files) but retries every 500 ms until the files hold a
    /// valid pair or `timeout` passes (then returns the last error). For a pod whose Secret
    /// volume is `optional` and not yet populated, or a host run whose manager writes the files.
    pub async fn from_files_when_ready(
        cert_path: impl Into<PathBuf>,
        key_path: impl Into<PathBuf>,
        timeout: Duration,
    ) -> Result<Arc<Self>, CertError> {
        let (cert_path, key_path) = (cert_path.into(), key_path.into());
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match Self::from_files(&cert_path, &key_path) {
                Ok(resolver) => return Ok(resolver),
                Err(err) if tokio::time::Instant::now() >= deadline => return Err(err),
                Err(err) => {
                    debug!(error = %err, "certificate files not ready yet");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Builds a resolver from in-memory PEM (chain and key); it has no files to reload, but
    /// [`replace_pem`](Self::replace_pem) swaps it.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<Self>, CertError> {
        let served = validate_in_memory(cert_pem, key_pem)?;
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(served),
            files: None,
            last_rejected: Mutex::new(None),
            metrics: CertMetrics::global().clone(),
        }))
    }

    /// Validates a new pair and, if valid and different from the current one, swaps it in.
    ///
    /// Returns `Ok(true)` if the served certificate changed, `Ok(false)` if the pair was already
    /// being served, and an error (leaving the current pair in place) if it is invalid.
    pub fn replace_pem(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<bool, CertError> {
        let current = self.current.load();
        if current.cert_pem == cert_pem && current.key_pem == key_pem {
            return Ok(false);
        }
        let served = validate_in_memory(cert_pem, key_pem)?;
        self.swap_in(served);
        Ok(true)
    }

    /// Re-reads the files once and swaps in the new pair if it is valid and different.
    ///
    /// Never fails: unreadable or invalid content yields [`ReloadOutcome::Rejected`] (logged once
    /// per distinct content) and the current pair keeps serving. A resolver built with
    /// [`from_pem`](Self::from_pem) always reports `Unchanged`.
    pub async fn reload_from_files(&self) -> ReloadOutcome {
        let Some(files) = &self.files else {
            return ReloadOutcome::Unchanged;
        };
        let (cert_pem, key_pem) = match (
            tokio::fs::read(&files.cert).await,
            tokio::fs::read(&files.key).await,
        ) {
            (Ok(c), Ok(k)) => (c, k),
            (Err(source), _) => {
                return self.note_rejected(None, read_error(&files.cert, source));
            }
            (_, Err(source)) => {
                return self.note_rejected(None, read_error(&files.key, source));
            }
        };
        {
            let current = self.current.load();
            if current.cert_pem == cert_pem && current.key_pem == key_pem {
                return ReloadOutcome::Unchanged;
            }
        }
        let digest = content_digest(&cert_pem, &key_pem);
        match validate_pair(cert_pem, key_pem, &files.describe(), jiff::Timestamp::now()) {
            Ok(served) => {
                let fingerprint = served.fingerprint.clone();
                self.swap_in(served);
                if let Ok(mut last) = self.last_rejected.lock() {
                    *last = None;
                }
                ReloadOutcome::Swapped { fingerprint }
            }
            Err(err) => self.note_rejected(Some(digest), err),
        }
    }

    /// Spawns a task that calls [`reload_from_files`](Self::reload_from_files) every `interval`
    /// until `shutdown` completes. A few seconds is a good interval; the cost is two small reads.
    pub fn spawn_reload(
        self: &Arc<Self>,
        interval: Duration,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            if this.files.is_none() {
                debug!("resolver has no files; reload task not needed");
                shutdown.await;
                return;
            }
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tokio::pin!(shutdown);
            loop {
                tokio::select! {
                    () = &mut shutdown => {
                        debug!("certificate reload task stopping");
                        return;
                    }
                    _ = ticker.tick() => {
                        this.reload_from_files().await;
                    }
                }
            }
        })
    }

    /// DER of the leaf certificate currently served.
    pub fn current_leaf_der(&self) -> CertificateDer<'static> {
        let current = self.current.load();
        // validate_pair guarantees a non-empty chain.
        current
            .certified
            .cert
            .first()
            .cloned()
            .unwrap_or_else(|| CertificateDer::from(Vec::new()))
    }

    /// PEM of the chain currently served, exactly as loaded.
    pub fn current_cert_pem(&self) -> Vec<u8> {
        self.current.load().cert_pem.clone()
    }

    /// SHA-256 fingerprint (lowercase hex) of the leaf currently served.
    pub fn fingerprint(&self) -> String {
        self.current.load().fingerprint.clone()
    }

    /// Expiry of the leaf currently served.
    pub fn not_after(&self) -> Option<jiff::Timestamp> {
        self.current.load().not_after
    }

    /// A rustls server configuration (ring provider, TLS 1.2 and 1.3, no client auth, ALPN
    /// `h2` and `http/1.1`) that serves through this resolver.
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    fn swap_in(&self, served: Served) {
        if let Some(not_after) = served.not_after {
            self.metrics.set_expiry(Certificate::Leaf, not_after);
        }
        self.metrics.reload(ReloadResult::Swapped);
        let old = self.current.swap(Arc::new(served));
        let new = self.current.load();
        info!(
            old_fingerprint = %old.fingerprint,
            new_fingerprint = %new.fingerprint,
            not_after = ?new.not_after,
            "serving certificate swapped"
        );
    }

    fn note_rejected(&self, digest: Option<[u8; 32]>, err: CertError) -> ReloadOutcome {
        let reason = err.to_string();
        let first_time = match self.last_rejected.lock() {
            Ok(mut last) => {
                let key = digest.unwrap_or_else(|| Sha256::digest(reason.as_bytes()).into());
                let first = *last != Some(key);
                *last = Some(key);
                first
            }
            Err(_) => true,
        };
        if first_time {
            let serving = self.current.load();
            match err {
                CertError::Expired { .. } | CertError::NotYetValid { .. } => {
                    let result = if matches!(err, CertError::Expired { .. }) {
                        ReloadResult::RejectedExpired
                    } else {
                        ReloadResult::RejectedNotYetValid
                    };
                    self.metrics.reload(result);
                    error!(
                        error = %reason,
                        serving = %serving.fingerprint,
                        serving_not_after = ?serving.not_after,
                        "new certificate files hold a certificate outside its validity period; refused, keeping the current certificate"
                    );
                }
                _ => {
                    self.metrics.reload(ReloadResult::RejectedInvalid);
                    warn!(
                        error = %reason,
                        serving = %serving.fingerprint,
                        "new certificate files rejected; keeping the current certificate"
                    );
                }
            }
        }
        ReloadOutcome::Rejected { reason }
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|source| read_error(path, source))
}

fn read_error(path: &Path, source: std::io::Error) -> CertError {
    CertError::Read {
        path: path.to_path_buf(),
        source,
    }
}

fn content_digest(cert_pem: &[u8], key_pem: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update((cert_pem.len() as u64).to_be_bytes());
    hasher.update(cert_pem);
    hasher.update(key_pem);
    hasher.finalize().into()
}

/// Parses a chain and key and checks that the key belongs to the leaf, giving the rustls
/// [`CertifiedKey`] to serve.
pub fn certified_key_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    what: &str,
) -> Result<CertifiedKey, CertError> {
    let chain = parse_pem_chain(cert_pem, what)?;
    for der in &chain {
        parse_cert_der(der, what)?;
    }
    let key = parse_private_key(key_pem, what)?;
    let provider = rustls::crypto::ring::default_provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|source| CertError::UnsupportedKey {
            what: what.to_string(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(CertError::KeyMismatch {
                what: what.to_string(),
            })
        }
        // The ring provider always knows the public key, so "unknown" means an odd key type;
        // treat it like rustls' own `CertifiedKey::from_der` does and accept it.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(other) => Err(CertError::InvalidCertificate {
            what: what.to_string(),
            message: other.to_string(),
        }),
    }
}

/// [`validate_pair`] for PEM handed over in memory (`from_pem`, `replace_pem`).
fn validate_in_memory(cert_pem: &[u8], key_pem: &[u8]) -> Result<Served, CertError> {
    validate_pair(
        cert_pem.to_vec(),
        key_pem.to_vec(),
        "in-memory certificate",
        jiff::Timestamp::now(),
    )
}

/// A valid pair whose leaf is inside its validity period at `now`.
fn validate_pair(
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    what: &str,
    now: jiff::Timestamp,
) -> Result<Served, CertError> {
    let certified = certified_key_from_pem(&cert_pem, &key_pem, what)?;
    let leaf = certified
        .cert
        .first()
        .ok_or_else(|| CertError::NoCertificate {
            what: what.to_string(),
        })?;
    let info = parse_cert_der(leaf, what)?;
    if info.not_after <= now {
        return Err(CertError::Expired {
            what: what.to_string(),
            not_after: info.not_after,
            now,
        });
    }
    if info.not_before > now {
        return Err(CertError::NotYetValid {
            what: what.to_string(),
            not_before: info.not_before,
            now,
        });
    }
    Ok(Served {
        fingerprint: fingerprint_sha256(leaf),
        not_after: Some(info.not_after),
        certified: Arc::new(certified),
        cert_pem,
        key_pem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{generate_ca, issue_serving_cert, PemPair, ServingNames};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn ca() -> PemPair {
        generate_ca("test", jiff::Timestamp::now(), Duration::from_secs(3600)).unwrap()
    }

    fn leaf(ca: &PemPair) -> PemPair {
        issue_serving_cert(
            ca,
            &ServingNames::for_service("webhook", "ops"),
            jiff::Timestamp::now(),
            Duration::from_secs(600),
        )
        .unwrap()
    }

    fn write_pair(dir: &Path, pair: &PemPair) {
        std::fs::write(dir.join("tls.crt"), &pair.cert_pem).unwrap();
        std::fs::write(dir.join("tls.key"), &pair.key_pem).unwrap();
    }

    fn fp(pair: &PemPair) -> String {
        crate::pem::cert_info_pem(&pair.cert_pem)
            .unwrap()
            .fingerprint
    }

    async fn wait_for_fingerprint(resolver: &ReloadingResolver, want: &str) {
        for _ in 0..200 {
            if resolver.fingerprint() == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "resolver never served {want}; serving {}",
            resolver.fingerprint()
        );
    }

    #[test]
    fn invalid_inputs_are_rejected_with_a_clear_error() {
        let ca = ca();
        let a = leaf(&ca);
        let b = leaf(&ca);
        let cases: Vec<(&str, Vec<u8>, Vec<u8>, &str)> = vec![
            (
                "empty_cert",
                vec![],
                a.key_pem.clone().into(),
                "no PEM CERTIFICATE",
            ),
            (
                "key_in_cert_file",
                a.key_pem.clone().into(),
                a.key_pem.clone().into(),
                "no PEM CERTIFICATE",
            ),
            (
                "empty_key",
                a.cert_pem.clone().into(),
                vec![],
                "no private key",
            ),
            (
                "cert_in_key_file",
                a.cert_pem.clone().into(),
                a.cert_pem.clone().into(),
                "no private key",
            ),
            (
                "key_of_other_cert",
                a.cert_pem.clone().into(),
                b.key_pem.clone().into(),
                "does not match",
            ),
            (
                "truncated_cert",
                a.cert_pem.as_bytes()[..a.cert_pem.len() / 2].to_vec(),
                a.key_pem.clone().into(),
                "malformed PEM",
            ),
        ];
        for (name, cert, key, want) in cases {
            let err = ReloadingResolver::from_pem(&cert, &key)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(want),
                "{name}: error {err:?} should contain {want:?}"
            );
        }
    }

    #[tokio::test]
    async fn waiting_for_files_succeeds_once_they_appear_and_times_out_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let err = ReloadingResolver::from_files_when_ready(&cert, &key, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("tls.crt"), "{err}");

        let pair = leaf(&ca());
        let path = dir.path().to_path_buf();
        let writer = {
            let pair = pair.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                write_pair(&path, &pair);
            })
        };
        let resolver =
            ReloadingResolver::from_files_when_ready(&cert, &key, Duration::from_secs(10))
                .await
                .unwrap();
        writer.await.unwrap();
        assert_eq!(resolver.fingerprint(), fp(&pair));
    }

    #[test]
    fn missing_file_error_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let err =
            ReloadingResolver::from_files(dir.path().join("nope.crt"), dir.path().join("nope.key"))
                .unwrap_err()
                .to_string();
        assert!(err.contains("nope.crt"), "{err}");
    }

    #[tokio::test]
    async fn rotation_on_disk_is_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca();
        let (first, second) = (leaf(&ca), leaf(&ca));
        write_pair(dir.path(), &first);
        let resolver =
            ReloadingResolver::from_files(dir.path().join("tls.crt"), dir.path().join("tls.key"))
                .unwrap();
        assert_eq!(resolver.fingerprint(), fp(&first));
        assert_eq!(resolver.reload_from_files().await, ReloadOutcome::Unchanged);

        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = resolver.spawn_reload(Duration::from_millis(20), async move {
            let _ = rx.await;
        });
        write_pair(dir.path(), &second);
        wait_for_fingerprint(&resolver, &fp(&second)).await;
        assert_eq!(resolver.current_cert_pem(), second.cert_pem.as_bytes());
        tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn kubernetes_symlink_swap_is_picked_up() {
        // Mimic the kubelet's atomic writer: tls.crt -> ..data/tls.crt, ..data -> ..v1; an update
        // writes ..v2 and renames a new ..data symlink over the old one. File mtimes of the
        // visible names never change.
        let dir = tempfile::tempdir().unwrap();
        let ca = ca();
        let (first, second) = (leaf(&ca), leaf(&ca));
        for (version, pair) in [("..v1", &first), ("..v2", &second)] {
            std::fs::create_dir(dir.path().join(version)).unwrap();
            write_pair(&dir.path().join(version), pair);
        }
        std::os::unix::fs::symlink("..v1", dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/tls.crt", dir.path().join("tls.crt")).unwrap();
        std::os::unix::fs::symlink("..data/tls.key", dir.path().join("tls.key")).unwrap();
        let resolver =
            ReloadingResolver::from_files(dir.path().join("tls.crt"), dir.path().join("tls.key"))
                .unwrap();
        assert_eq!(resolver.fingerprint(), fp(&first));

        std::os::unix::fs::symlink("..v2", dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        assert_eq!(
            resolver.reload_from_files().await,
            ReloadOutcome::Swapped {
                fingerprint: fp(&second)
            }
        );
        assert_eq!(resolver.fingerprint(), fp(&second));
    }

    #[tokio::test]
    async fn invalid_or_half_written_files_keep_serving_the_old_cert() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca();
        let (first, second) = (leaf(&ca), leaf(&ca));
        write_pair(dir.path(), &first);
        let resolver =
            ReloadingResolver::from_files(dir.path().join("tls.crt"), dir.path().join("tls.key"))
                .unwrap();

        // Half-written rotation: new certificate, old key.
        std::fs::write(dir.path().join("tls.crt"), &second.cert_pem).unwrap();
        assert!(
            matches!(resolver.reload_from_files().await, ReloadOutcome::Rejected { reason } if reason.contains("does not match"))
        );
        assert_eq!(resolver.fingerprint(), fp(&first));

        // Garbage and a deleted key also keep the old certificate.
        std::fs::write(
            dir.path().join("tls.crt"),
            "-----BEGIN CERTIFICATE-----\nnot base64!\n",
        )
        .unwrap();
        assert!(matches!(
            resolver.reload_from_files().await,
            ReloadOutcome::Rejected { .. }
        ));
        std::fs::remove_file(dir.path().join("tls.key")).unwrap();
        assert!(
            matches!(resolver.reload_from_files().await, ReloadOutcome::Rejected { reason } if reason.contains("tls.key"))
        );
        assert_eq!(resolver.fingerprint(), fp(&first));

        // Once the pair is complete it is served.
        write_pair(dir.path(), &second);
        assert_eq!(
            resolver.reload_from_files().await,
            ReloadOutcome::Swapped {
                fingerprint: fp(&second)
            }
        );
    }

    /// Captures what the resolver logs (on this thread) for the assertions below.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn expired_or_not_yet_valid_reloads_are_refused_logged_and_counted() {
        let logs = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer({
                let logs = logs.clone();
                move || logs.clone()
            })
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let now = jiff::Timestamp::now();
        let hours = |h: i64| now + jiff::SignedDuration::from_hours(h);
        let names = ServingNames::for_service("webhook", "ops");
        let ca = generate_ca("test", hours(-3), Duration::from_secs(10 * 3600)).unwrap();
        let issue = |at: jiff::Timestamp| {
            issue_serving_cert(&ca, &names, at, Duration::from_secs(3600)).unwrap()
        };
        let (current, expired, future, next) =
            (issue(now), issue(hours(-2)), issue(hours(2)), issue(now));

        let dir = tempfile::tempdir().unwrap();
        write_pair(dir.path(), &current);
        let metrics = CertMetrics::new();
        let resolver = ReloadingResolver::from_files_with_metrics(
            dir.path().join("tls.crt"),
            dir.path().join("tls.key"),
            metrics.clone(),
        )
        .unwrap();
        let cases = [
            (
                "already_expired",
                &expired,
                "certificate expired at",
                ReloadResult::RejectedExpired,
            ),
            (
                "not_yet_valid",
                &future,
                "certificate is not valid before",
                ReloadResult::RejectedNotYetValid,
            ),
        ];
        for (name, pair, want, counter) in cases {
            write_pair(dir.path(), pair);
            for _ in 0..3 {
                let outcome = resolver.reload_from_files().await;
                assert!(
                    matches!(&outcome, ReloadOutcome::Rejected { reason } if reason.contains(want)),
                    "{name}: {outcome:?}"
                );
            }
            assert_eq!(
                resolver.fingerprint(),
                fp(&current),
                "{name}: keeps serving"
            );
            assert_eq!(
                metrics.reloads(counter),
                1,
                "{name}: counted once per content"
            );
            let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
            let lines: Vec<&str> = text.lines().filter(|l| l.contains(want)).collect();
            assert_eq!(lines.len(), 1, "{name}: logged once:\n{text}");
            assert!(
                lines[0].contains("ERROR"),
                "{name}: at error level: {}",
                lines[0]
            );
        }
        assert_eq!(metrics.reloads(ReloadResult::RejectedInvalid), 0);
        assert_eq!(metrics.reloads(ReloadResult::Swapped), 0);

        write_pair(dir.path(), &next);
        assert_eq!(
            resolver.reload_from_files().await,
            ReloadOutcome::Swapped {
                fingerprint: fp(&next)
            }
        );
        assert_eq!(metrics.reloads(ReloadResult::Swapped), 1);
        let gauge = metrics.encode().unwrap();
        assert!(
            gauge.contains("certificate_expiry_seconds{certificate=\"leaf\"} 3"),
            "{gauge}"
        );

        // At startup the same check applies: an expired pair is an error, not served.
        write_pair(dir.path(), &expired);
        let err =
            ReloadingResolver::from_files(dir.path().join("tls.crt"), dir.path().join("tls.key"))
                .unwrap_err();
        assert!(matches!(err, CertError::Expired { .. }), "{err}");
    }

    #[test]
    fn replace_pem_swaps_only_valid_new_pairs() {
        let ca = ca();
        let (first, second) = (leaf(&ca), leaf(&ca));
        let resolver =
            ReloadingResolver::from_pem(first.cert_pem.as_bytes(), first.key_pem.as_bytes())
                .unwrap();
        assert!(!resolver
            .replace_pem(first.cert_pem.as_bytes(), first.key_pem.as_bytes())
            .unwrap());
        assert!(resolver
            .replace_pem(second.cert_pem.as_bytes(), first.key_pem.as_bytes())
            .is_err());
        assert_eq!(resolver.fingerprint(), fp(&first));
        assert!(resolver
            .replace_pem(second.cert_pem.as_bytes(), second.key_pem.as_bytes())
            .unwrap());
        assert_eq!(resolver.fingerprint(), fp(&second));
        assert_eq!(
            crate::pem::fingerprint_sha256(&resolver.current_leaf_der()),
            fp(&second)
        );
    }

    /// An echo server over TLS that serves through `resolver`.
    async fn echo_server(resolver: Arc<ReloadingResolver>) -> std::net::SocketAddr {
        let config = Arc::new(resolver.server_config().unwrap());
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = [0u8; 64];
                    while let Ok(n) = tls.read(&mut buf).await {
                        if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn connect(
        addr: std::net::SocketAddr,
        bundle_pem: &str,
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        for der in parse_pem_chain(bundle_pem.as_bytes(), "bundle").unwrap() {
            roots.add(der).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("webhook.ops.svc").unwrap();
        connector.connect(name, tcp).await.unwrap()
    }

    fn peer_fingerprint(tls: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
        let certs = tls.get_ref().1.peer_certificates().unwrap();
        crate::pem::fingerprint_sha256(&certs[0])
    }

    async fn echo(tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>, msg: &[u8]) {
        tls.write_all(msg).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        tls.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, msg);
    }

    #[tokio::test]
    async fn tls_handshake_sees_new_cert_after_reload_and_old_connections_keep_working() {
        let dir = tempfile::tempdir().unwrap();
        let old_ca = ca();
        let new_ca = ca();
        let first = leaf(&old_ca);
        let second = leaf(&new_ca);
        let bundle = format!("{}{}", old_ca.cert_pem, new_ca.cert_pem);
        write_pair(dir.path(), &first);
        let resolver =
            ReloadingResolver::from_files(dir.path().join("tls.crt"), dir.path().join("tls.key"))
                .unwrap();
        let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
        let _task = resolver.spawn_reload(Duration::from_millis(20), async move {
            let _ = rx.await;
        });
        let addr = echo_server(Arc::clone(&resolver)).await;

        let mut before = connect(addr, &bundle).await;
        assert_eq!(peer_fingerprint(&before), fp(&first));
        echo(&mut before, b"ping-1").await;

        write_pair(dir.path(), &second);
        wait_for_fingerprint(&resolver, &fp(&second)).await;

        let mut after = connect(addr, &bundle).await;
        assert_eq!(peer_fingerprint(&after), fp(&second));
        echo(&mut after, b"ping-2").await;
        // The connection made before the rotation is unaffected.
        echo(&mut before, b"ping-3").await;
        assert_eq!(peer_fingerprint(&before), fp(&first));
    }
}
