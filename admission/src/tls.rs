//! TLS for the server: the rustls `ServerConfig` and admission-worded errors for unusable
//! certificate files.
//!
//! The server never holds a certificate directly; it asks an
//! `Arc<dyn rustls::server::ResolvesServerCert>` during each handshake. In `serve` that is the
//! `certs` crate's [`certs::ReloadingResolver`], which also does all PEM parsing and key checks;
//! this module only translates its errors into messages that name the `--tls-cert`/`--tls-key`
//! files, and builds the rustls configuration (protocol versions, ALPN).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use certs::CertError;
use rustls::crypto::CryptoProvider;
use rustls::server::ResolvesServerCert;
use rustls::sign::CertifiedKey;

/// ALPN protocols we offer, most preferred first.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why the TLS certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate file {cert} contains no CERTIFICATE block")]
    NoCertificate { cert: PathBuf },
    #[error("key file {key} does not belong to certificate {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("cannot serve certificate {cert} with key {key}: {source}")]
    Files {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: Box<CertError>,
    },
    #[error("failed to build the TLS server configuration: {0}")]
    Config(#[from] rustls::Error),
}

impl TlsError {
    /// Words a `certs` error about the pair `cert`/`key` for the operator who passed them.
    pub fn from_cert_error(cert: &Path, key: &Path, source: CertError) -> Self {
        match source {
            CertError::NoCertificate { .. } => TlsError::NoCertificate {
                cert: cert.to_owned(),
            },
            CertError::KeyMismatch { .. } => TlsError::Mismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
            },
            source => TlsError::Files {
                cert: cert.to_owned(),
                key: key.to_owned(),
                source: Box::new(source),
            },
        }
    }
}

/// The crypto provider used by the server and its tests (ring, as pinned by the workspace).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Checks PEM already in memory (a non-empty chain and a key matching the leaf) with the
/// `certs` crate's validation; the paths only label errors.
pub fn certified_key_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let what = format!("{} / {}", cert_path.display(), key_path.display());
    certs::resolver::certified_key_from_pem(cert_pem, key_pem, &what)
        .map_err(|e| TlsError::from_cert_error(cert_path, key_path, e))
}

/// Loads `cert_path`/`key_path` into a resolver that re-reads them (by content) on every
/// reload tick, so a certificate rotated on disk is served without a restart. Fails before the
/// port is bound when the files are missing or do not form a valid pair.
pub fn reloading_resolver(
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<certs::ReloadingResolver>, TlsError> {
    certs::ReloadingResolver::from_files(cert_path, key_path)
        .map_err(|e| TlsError::from_cert_error(cert_path, key_path, e))
}

/// The server TLS configuration: TLS 1.3 and 1.2, no client auth, ALPN `h2` then `http/1.1`,
/// certificates from `resolver` at every handshake.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (String, String) {
        let dev = crate::devcert::generate(&["localhost".to_owned()], 1).unwrap();
        (dev.cert_pem, dev.key_pem)
    }

    #[test]
    fn matching_cert_and_key_load() {
        let (cert, key) = pair();
        let loaded = certified_key_from_pem(
            cert.as_bytes(),
            key.as_bytes(),
            Path::new("c"),
            Path::new("k"),
        );
        assert!(loaded.is_ok(), "{loaded:?}");
    }

    #[test]
    fn key_of_another_certificate_is_rejected_with_both_paths() {
        let (cert, _) = pair();
        let (_, other_key) = pair();
        let err = certified_key_from_pem(
            cert.as_bytes(),
            other_key.as_bytes(),
            Path::new("tls.crt"),
            Path::new("tls.key"),
        )
        .unwrap_err();
        assert!(matches!(err, TlsError::Mismatch { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("tls.crt") && msg.contains("tls.key"), "{msg}");
    }

    #[test]
    fn empty_certificate_file_is_rejected() {
        let (_, key) = pair();
        let err = certified_key_from_pem(b"", key.as_bytes(), Path::new("c"), Path::new("k"))
            .unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
    }

    #[test]
    fn certificate_given_as_key_is_rejected() {
        let (cert, _) = pair();
        let err = certified_key_from_pem(
            cert.as_bytes(),
            cert.as_bytes(),
            Path::new("c"),
            Path::new("k"),
        )
        .unwrap_err();
        assert!(matches!(err, TlsError::Files { .. }), "{err}");
        assert!(err.to_string().contains("private key"), "{err}");
    }

    #[test]
    fn missing_file_names_the_path() {
        let err =
            reloading_resolver(Path::new("/nonexistent/tls.crt"), Path::new("/x")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/tls.crt"), "{err}");
    }

    #[tokio::test]
    async fn rotated_files_are_served_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = ["localhost".to_owned()];
        let first =
            crate::devcert::write(dir.path(), &crate::devcert::generate(&hosts, 1).unwrap())
                .unwrap();
        let resolver = reloading_resolver(&first.cert, &first.key).unwrap();
        let before = resolver.fingerprint();
        crate::devcert::write(dir.path(), &crate::devcert::generate(&hosts, 1).unwrap()).unwrap();
        assert!(matches!(
            resolver.reload_from_files().await,
            certs::ReloadOutcome::Swapped { .. }
        ));
        assert_ne!(resolver.fingerprint(), before);
    }
}
