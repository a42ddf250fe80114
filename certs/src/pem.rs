//! Reading certificates and keys: PEM text to DER chains and private keys, and what a DER
//! certificate says (validity, CA flag, names, fingerprint). [`crate::generate`] (which writes
//! certificates) and [`crate::resolver`] (which serves them) both read through here, so
//! neither depends on the other.

use std::net::IpAddr;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;
use x509_parser::time::ASN1Time;

use crate::error::CertError;

/// What we need to know about an existing certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Start of validity.
    pub not_before: jiff::Timestamp,
    /// End of validity.
    pub not_after: jiff::Timestamp,
    /// BasicConstraints CA:TRUE.
    pub is_ca: bool,
    /// Subject DN (RFC 4514 string).
    pub subject: String,
    /// Issuer DN (RFC 4514 string).
    pub issuer: String,
    /// SHA-256 of the DER, lowercase hex.
    pub fingerprint: String,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// IP SANs.
    pub ip_addresses: Vec<IpAddr>,
}

/// SHA-256 of a DER certificate, lowercase hex: the identity we compare certificates by.
pub fn fingerprint_sha256(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Parses one DER certificate. `what` names its source in errors.
pub fn parse_cert_der(der: &[u8], what: &str) -> Result<CertInfo, CertError> {
    let invalid = |message: String| CertError::InvalidCertificate {
        what: what.to_string(),
        message,
    };
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| invalid(e.to_string()))?;
    let validity = cert.validity();
    let ts = |t: ASN1Time| {
        jiff::Timestamp::from_second(t.timestamp()).map_err(|e| invalid(e.to_string()))
    };
    let mut dns_names = Vec::new();
    let mut ip_addresses = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => dns_names.push((*dns).to_string()),
                GeneralName::IPAddress(bytes) => {
                    if let Ok(octets) = <[u8; 4]>::try_from(*bytes) {
                        ip_addresses.push(IpAddr::from(octets));
                    } else if let Ok(octets) = <[u8; 16]>::try_from(*bytes) {
                        ip_addresses.push(IpAddr::from(octets));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(CertInfo {
        not_before: ts(validity.not_before)?,
        not_after: ts(validity.not_after)?,
        is_ca: cert.is_ca(),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        fingerprint: fingerprint_sha256(der),
        dns_names,
        ip_addresses,
    })
}

/// Parses the first certificate of a PEM text.
pub fn cert_info_pem(pem: &str) -> Result<CertInfo, CertError> {
    let chain = parse_pem_chain(pem.as_bytes(), "PEM certificate")?;
    let first = chain.first().ok_or_else(|| CertError::NoCertificate {
        what: "PEM certificate".to_string(),
    })?;
    parse_cert_der(first, "PEM certificate")
}

/// Parses every certificate of a PEM bundle (e.g. `ca-bundle.crt` holding old and new CA).
pub fn bundle_info(pem: &str) -> Result<Vec<CertInfo>, CertError> {
    parse_pem_chain(pem.as_bytes(), "CA bundle")?
        .iter()
        .map(|der| parse_cert_der(der, "CA bundle"))
        .collect()
}

/// Parses every CERTIFICATE block of a PEM text, in order (leaf first by convention).
pub fn parse_pem_chain(
    pem_text: &[u8],
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let chain = CertificateDer::pem_slice_iter(pem_text)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|source| CertError::Pem {
            what: what.to_string(),
            source,
        })?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate {
            what: what.to_string(),
        });
    }
    Ok(chain)
}

/// Parses the first private key of a PEM text (PKCS#8, PKCS#1 or SEC1).
pub fn parse_private_key(key_pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, CertError> {
    match PrivateKeyDer::from_pem_slice(key_pem) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => Err(CertError::NoPrivateKey {
            what: what.to_string(),
        }),
        Err(source) => Err(CertError::Pem {
            what: what.to_string(),
            source,
        }),
    }
}
