//! TLS material for the server: PEM file loading and the rustls `ServerConfig`.
//!
//! The server never holds a certificate directly; it asks an
//! `Arc<dyn rustls::server::ResolvesServerCert>` during each handshake. [`file_resolver`] is
//! the simple static implementation used until the `certs` crate's hot-reloading resolver is
//! wired in: replace the call to [`file_resolver`] in `main.rs` with that resolver and nothing
//! else changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ResolvesServerCert;
use rustls::sign::{CertifiedKey, SingleCertAndKey};

/// ALPN protocols we offer, most preferred first.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why the TLS certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("failed to read {what} file {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate file {path} is not valid PEM: {message}")]
    CertificatePem { path: PathBuf, message: String },
    #[error("certificate file {path} contains no CERTIFICATE block")]
    NoCertificate { path: PathBuf },
    #[error(
        "key file {path} contains no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {message}"
    )]
    Key { path: PathBuf, message: String },
    #[error("key file {key} does not belong to certificate {cert}: {message}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
    #[error("failed to build the TLS server configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The crypto provider used by the server and its tests (ring, as pinned by the workspace).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks a PEM certificate chain and private key: the chain is non-empty and the key
/// matches the leaf certificate. Called before binding so a bad file fails startup clearly.
pub fn load_certified_key(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_pem = std::fs::read(cert_path).map_err(|source| TlsError::Read {
        what: "certificate",
        path: cert_path.to_owned(),
        source,
    })?;
    let key_pem = std::fs::read(key_path).map_err(|source| TlsError::Read {
        what: "key",
        path: key_path.to_owned(),
        source,
    })?;
    certified_key_from_pem(&cert_pem, &key_pem, cert_path, key_path)
}

/// Same as [`load_certified_key`] for PEM already in memory (paths only label errors).
pub fn certified_key_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::CertificatePem {
            path: cert_path.to_owned(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key {
        path: key_path.to_owned(),
        message: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
            message: e.to_string(),
        },
        other => TlsError::Key {
            path: key_path.to_owned(),
            message: other.to_string(),
        },
    })
}

/// A resolver that always serves the certificate loaded from the given files.
///
/// Stand-in for the `certs` crate's hot-reloading resolver.
pub fn file_resolver(
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<dyn ResolvesServerCert>, TlsError> {
    let key = load_certified_key(cert_path, key_path)?;
    Ok(Arc::new(SingleCertAndKey::from(key)))
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

    fn self_signed() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn matching_cert_and_key_load() {
        let (cert, key) = self_signed();
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
        let (cert, _) = self_signed();
        let (_, other_key) = self_signed();
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
        let (_, key) = self_signed();
        let err = certified_key_from_pem(b"", key.as_bytes(), Path::new("c"), Path::new("k"))
            .unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
    }

    #[test]
    fn certificate_given_as_key_is_rejected() {
        let (cert, _) = self_signed();
        let err = certified_key_from_pem(
            cert.as_bytes(),
            cert.as_bytes(),
            Path::new("c"),
            Path::new("k"),
        )
        .unwrap_err();
        assert!(matches!(err, TlsError::Key { .. }), "{err}");
    }

    #[test]
    fn missing_file_names_the_path() {
        let err =
            load_certified_key(Path::new("/nonexistent/tls.crt"), Path::new("/x")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/tls.crt"), "{err}");
    }
}
