//! Certificate generation and verification: a self-signed ECDSA P-256 CA, serving
//! certificates signed by it for the webhook Service, and whether a leaf chains to a bundle.
//! Reading existing certificates (expiry, issuer, fingerprint) lives in [`crate::pem`].
//!
//! Every certificate gets an explicit validity window: `not_before` lies [`CLOCK_SKEW`] in the
//! past so that API servers with a slightly slow clock accept a fresh certificate, and
//! `not_after` is `now + validity` (rcgen's own default runs to the year 4096). A serving
//! certificate never outlives the CA that signed it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use x509_parser::time::ASN1Time;

use crate::error::CertError;
use crate::pem::{cert_info_pem, parse_cert_der, parse_pem_chain};

/// How far in the past `not_before` is set, to tolerate clock skew between machines.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// Default CA lifetime: one year.
pub const DEFAULT_CA_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Default serving-certificate lifetime: 90 days.
pub const DEFAULT_LEAF_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);

/// A PEM certificate and its PEM (PKCS#8) private key. `Debug` never prints the key.
#[derive(Clone, PartialEq, Eq)]
pub struct PemPair {
    /// PEM `CERTIFICATE` block.
    pub cert_pem: String,
    /// PEM `PRIVATE KEY` block.
    pub key_pem: String,
}

impl fmt::Debug for PemPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fingerprint = cert_info_pem(&self.cert_pem)
            .map(|info| info.fingerprint)
            .unwrap_or_else(|_| "<unparseable>".to_string());
        f.debug_struct("PemPair")
            .field("fingerprint", &fingerprint)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// The names a webhook serving certificate must be valid for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingNames {
    /// DNS SANs.
    pub dns: Vec<String>,
    /// IP SANs.
    pub ips: Vec<IpAddr>,
}

impl ServingNames {
    /// `<svc>.<ns>.svc`, `<svc>.<ns>.svc.cluster.local`, `localhost` and IP `127.0.0.1`: the
    /// in-cluster Service names plus what a host-run server is reached by.
    pub fn for_service(service: &str, namespace: &str) -> Self {
        Self {
            dns: vec![
                format!("{service}.{namespace}.svc"),
                format!("{service}.{namespace}.svc.cluster.local"),
                "localhost".to_string(),
            ],
            ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        }
    }
}

/// Creates a self-signed CA: ECDSA P-256, CA:TRUE (path length 0), keyCertSign + cRLSign,
/// valid from `now - CLOCK_SKEW` to `now + validity`. The common name carries the issue time so
/// that an old and a new CA are distinguishable in a bundle.
pub fn generate_ca(
    name: &str,
    now: jiff::Timestamp,
    validity: Duration,
) -> Result<PemPair, CertError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("{name} CA {}", now.as_second()));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial(&key, now));
    set_window(&mut params, window(now, validity, None)?)?;
    let cert = params.self_signed(&key)?;
    Ok(PemPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Issues a serving certificate for `names`, signed by `ca`, valid from `now - CLOCK_SKEW` to
/// `now + validity` but never past the CA's own expiry.
pub fn issue_serving_cert(
    ca: &PemPair,
    names: &ServingNames,
    now: jiff::Timestamp,
    validity: Duration,
) -> Result<PemPair, CertError> {
    let ca_info = cert_info_pem(&ca.cert_pem)?;
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        names
            .dns
            .first()
            .cloned()
            .unwrap_or_else(|| "webhook".to_string()),
    );
    params.distinguished_name = dn;
    params.subject_alt_names = names
        .dns
        .iter()
        .map(|d| Ok(SanType::DnsName(d.clone().try_into()?)))
        .chain(names.ips.iter().map(|ip| Ok(SanType::IpAddress(*ip))))
        .collect::<Result<Vec<_>, rcgen::Error>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial(&key, now));
    set_window(&mut params, window(now, validity, Some(ca_info.not_after))?)?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(PemPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// True if `leaf_pem` chains to one of the CA certificates in `bundle_pem` and is valid for
/// its first DNS name at `now`: the same check the API server makes when calling the webhook.
pub fn verifies_against(leaf_pem: &str, bundle_pem: &str, now: jiff::Timestamp) -> bool {
    verify_against(leaf_pem, bundle_pem, now).is_ok()
}

/// Like [`verifies_against`] but says why verification fails.
pub fn verify_against(
    leaf_pem: &str,
    bundle_pem: &str,
    now: jiff::Timestamp,
) -> Result<(), String> {
    let leaf_chain = parse_pem_chain(leaf_pem.as_bytes(), "leaf").map_err(|e| e.to_string())?;
    let leaf = leaf_chain.first().ok_or("no leaf certificate")?;
    let info = parse_cert_der(leaf, "leaf").map_err(|e| e.to_string())?;
    let name = info
        .dns_names
        .first()
        .ok_or("leaf has no DNS name")?
        .clone();
    let mut roots = rustls::RootCertStore::empty();
    for der in parse_pem_chain(bundle_pem.as_bytes(), "CA bundle").map_err(|e| e.to_string())? {
        roots.add(der).map_err(|e| e.to_string())?;
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .map_err(|e| e.to_string())?;
    let server_name = ServerName::try_from(name).map_err(|e| e.to_string())?;
    let secs = u64::try_from(now.as_second()).map_err(|e| e.to_string())?;
    verifier
        .verify_server_cert(
            &CertificateDer::from(leaf.to_vec()),
            &leaf_chain[1..],
            &server_name,
            &[],
            UnixTime::since_unix_epoch(Duration::from_secs(secs)),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn window(
    now: jiff::Timestamp,
    validity: Duration,
    cap: Option<jiff::Timestamp>,
) -> Result<(i64, i64), CertError> {
    let start = now.as_second() - secs(CLOCK_SKEW)?;
    let mut end = now.as_second() + secs(validity)?;
    if let Some(cap) = cap {
        end = end.min(cap.as_second());
    }
    if end <= now.as_second() {
        return Err(CertError::Validity(format!(
            "certificate would expire at {end}, not after now ({})",
            now.as_second()
        )));
    }
    Ok((start, end))
}

fn secs(d: Duration) -> Result<i64, CertError> {
    i64::try_from(d.as_secs()).map_err(|e| CertError::Validity(e.to_string()))
}

/// rcgen takes `time::OffsetDateTime`; x509-parser's `ASN1Time` converts a Unix timestamp to
/// one, so we need not depend on `time` directly.
fn set_window(params: &mut CertificateParams, (start, end): (i64, i64)) -> Result<(), CertError> {
    let at = |unix_seconds: i64| {
        ASN1Time::from_timestamp(unix_seconds)
            .map(|t| t.to_datetime())
            .map_err(|e| CertError::Validity(e.to_string()))
    };
    params.not_before = at(start)?;
    params.not_after = at(end)?;
    Ok(())
}

/// A positive 128-bit serial from the key and time; unique enough for a private CA.
fn random_serial(key: &KeyPair, now: jiff::Timestamp) -> SerialNumber {
    let mut hasher = Sha256::new();
    hasher.update(key.public_key_raw());
    hasher.update(now.as_nanosecond().to_be_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pem::bundle_info;

    const HOUR: Duration = Duration::from_secs(3600);

    fn now() -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000).unwrap()
    }

    #[test]
    fn ca_is_a_p256_ca_with_explicit_validity() {
        let ca = generate_ca("db-operator", now(), 10 * HOUR).unwrap();
        let info = cert_info_pem(&ca.cert_pem).unwrap();
        assert!(info.is_ca);
        assert_eq!(info.subject, info.issuer, "self-signed");
        assert_eq!(info.not_before.as_second(), now().as_second() - 300);
        assert_eq!(info.not_after.as_second(), now().as_second() + 36_000);
        assert!(ca.key_pem.contains("BEGIN PRIVATE KEY"));
        let key = KeyPair::from_pem(&ca.key_pem).unwrap();
        assert_eq!(key.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);
    }

    #[test]
    fn serving_cert_has_service_and_local_names() {
        let ca = generate_ca("db-operator", now(), 10 * HOUR).unwrap();
        let leaf = issue_serving_cert(
            &ca,
            &ServingNames::for_service("db-webhook", "db-system"),
            now(),
            HOUR,
        )
        .unwrap();
        let info = cert_info_pem(&leaf.cert_pem).unwrap();
        assert!(!info.is_ca);
        assert_eq!(
            info.dns_names,
            vec![
                "db-webhook.db-system.svc",
                "db-webhook.db-system.svc.cluster.local",
                "localhost"
            ]
        );
        assert_eq!(info.ip_addresses, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        assert_eq!(info.issuer, cert_info_pem(&ca.cert_pem).unwrap().subject);
        assert_eq!(info.not_after.as_second(), now().as_second() + 3600);
    }

    #[test]
    fn serving_cert_never_outlives_its_ca() {
        let ca = generate_ca("db-operator", now(), HOUR).unwrap();
        let leaf = issue_serving_cert(&ca, &ServingNames::for_service("s", "n"), now(), 100 * HOUR)
            .unwrap();
        assert_eq!(
            cert_info_pem(&leaf.cert_pem).unwrap().not_after,
            cert_info_pem(&ca.cert_pem).unwrap().not_after
        );
    }

    #[test]
    fn issuing_from_an_expired_ca_fails() {
        let ca = generate_ca("db-operator", now(), HOUR).unwrap();
        let later = jiff::Timestamp::from_second(now().as_second() + 7200).unwrap();
        let err =
            issue_serving_cert(&ca, &ServingNames::for_service("s", "n"), later, HOUR).unwrap_err();
        assert!(matches!(err, CertError::Validity(_)), "{err}");
    }

    #[test]
    fn serving_cert_verifies_only_against_its_own_ca() {
        let t = jiff::Timestamp::now();
        let ca = generate_ca("db-operator", t, HOUR).unwrap();
        let other = generate_ca("db-operator", t, HOUR).unwrap();
        let leaf = issue_serving_cert(&ca, &ServingNames::for_service("s", "n"), t, HOUR).unwrap();
        let cases = [
            ("own_ca", ca.cert_pem.clone(), true),
            ("other_ca", other.cert_pem.clone(), false),
            (
                "bundle_old_then_new",
                format!("{}{}", other.cert_pem, ca.cert_pem),
                true,
            ),
            (
                "bundle_new_then_old",
                format!("{}{}", ca.cert_pem, other.cert_pem),
                true,
            ),
        ];
        for (name, bundle, want) in cases {
            assert_eq!(
                verifies_against(&leaf.cert_pem, &bundle, t),
                want,
                "{name}: {:?}",
                verify_against(&leaf.cert_pem, &bundle, t)
            );
        }
        let after_expiry = jiff::Timestamp::from_second(t.as_second() + 2 * 3600).unwrap();
        assert!(!verifies_against(
            &leaf.cert_pem,
            &ca.cert_pem,
            after_expiry
        ));
    }

    #[test]
    fn two_cas_issued_in_the_same_second_are_distinct() {
        let a = generate_ca("db-operator", now(), HOUR).unwrap();
        let b = generate_ca("db-operator", now(), HOUR).unwrap();
        let (a, b) = (
            cert_info_pem(&a.cert_pem).unwrap(),
            cert_info_pem(&b.cert_pem).unwrap(),
        );
        assert_ne!(a.fingerprint, b.fingerprint);
    }

    #[test]
    fn bundle_lists_every_ca_in_order_and_rejects_empty_text() {
        let a = generate_ca("db-operator", now(), HOUR).unwrap();
        let b = generate_ca("db-operator", now(), HOUR).unwrap();
        let infos = bundle_info(&format!("{}{}", a.cert_pem, b.cert_pem)).unwrap();
        let fingerprints: Vec<_> = infos.into_iter().map(|i| i.fingerprint).collect();
        assert_eq!(
            fingerprints,
            vec![
                cert_info_pem(&a.cert_pem).unwrap().fingerprint,
                cert_info_pem(&b.cert_pem).unwrap().fingerprint
            ]
        );
        assert!(matches!(
            bundle_info(""),
            Err(CertError::NoCertificate { .. })
        ));
    }

    #[test]
    fn debug_output_never_contains_the_private_key() {
        let ca = generate_ca("db-operator", now(), HOUR).unwrap();
        let shown = format!("{ca:?}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    }
}
