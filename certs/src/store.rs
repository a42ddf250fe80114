//! The Secret that holds the CA, the serving certificate and the CA bundle, and the
//! single-writer protocol around it.
//!
//! Layout (`type: kubernetes.io/tls`, so it mounts like any TLS Secret):
//!
//! | key             | content                                                           |
//! |-----------------|-------------------------------------------------------------------|
//! | `tls.crt`       | serving certificate (leaf)                                        |
//! | `tls.key`       | its key                                                           |
//! | `ca.crt`        | the CA that signed `tls.crt`                                      |
//! | `ca.key`        | its key (needed to issue the next leaf)                           |
//! | `ca-bundle.crt` | what clients must trust: `[ca]`, or old + new CA during rotation  |
//! | `next-ca.crt`/`next-ca.key` | the CA being rotated in (phase `BundlePublished` only) |
//!
//! Annotations `certs.example.com/phase` and `/phase-since` record the rotation phase;
//! `/force-rotation: leaf|ca` requests a rotation now (it is removed once acted on);
//! `/leaf-not-after`, `/ca-not-after` and `/leaf-fingerprint` are informational.
//!
//! Exactly one writer wins each change: the Secret is created only if absent (`409
//! AlreadyExists` means another replica won: re-read and adopt its content) and replaced only
//! with the `resourceVersion` it was read at (`409 Conflict` means someone wrote in between:
//! re-read and decide again). Several replicas started at once therefore converge on one
//! Secret, and a decision is always made on the latest content.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{ObjectMeta, PostParams};
use kube::Api;
use tracing::{info, warn};

use crate::error::{CertError, StoreError};
use crate::generate::{generate_ca, issue_serving_cert, verifies_against, PemPair, ServingNames};
use crate::metrics::{CertMetrics, RotationOutcome};
use crate::pem::{bundle_info, cert_info_pem};
use crate::resolver::certified_key_from_pem;
use crate::rotation::{
    next_action, Action, CertFacts, ForceRotation, LeafFacts, LeafReason, Observed, Phase,
    RotationPolicy,
};

/// Secret data key of the serving certificate.
pub const KEY_TLS_CRT: &str = "tls.crt";
/// Secret data key of the serving key.
pub const KEY_TLS_KEY: &str = "tls.key";
/// Secret data key of the signing CA certificate.
pub const KEY_CA_CRT: &str = "ca.crt";
/// Secret data key of the signing CA key.
pub const KEY_CA_KEY: &str = "ca.key";
/// Secret data key of the CA bundle to inject.
pub const KEY_CA_BUNDLE: &str = "ca-bundle.crt";
/// Secret data key of the CA being rotated in.
pub const KEY_NEXT_CA_CRT: &str = "next-ca.crt";
/// Secret data key of the key of the CA being rotated in.
pub const KEY_NEXT_CA_KEY: &str = "next-ca.key";
/// Rotation phase annotation.
pub const ANNOTATION_PHASE: &str = "certs.example.com/phase";
/// When the phase began (RFC 3339).
pub const ANNOTATION_PHASE_SINCE: &str = "certs.example.com/phase-since";
/// Set to `leaf` or `ca` to force a rotation.
pub const ANNOTATION_FORCE: &str = "certs.example.com/force-rotation";
/// Informational: expiry of the serving certificate.
pub const ANNOTATION_LEAF_NOT_AFTER: &str = "certs.example.com/leaf-not-after";
/// Informational: expiry of the signing CA.
pub const ANNOTATION_CA_NOT_AFTER: &str = "certs.example.com/ca-not-after";
/// Informational: SHA-256 of the serving certificate.
pub const ANNOTATION_LEAF_FINGERPRINT: &str = "certs.example.com/leaf-fingerprint";
/// Name used for the CA subject.
pub const CA_NAME: &str = "db-operator webhook";

const OUR_KEYS: [&str; 7] = [
    KEY_TLS_CRT,
    KEY_TLS_KEY,
    KEY_CA_CRT,
    KEY_CA_KEY,
    KEY_CA_BUNDLE,
    KEY_NEXT_CA_CRT,
    KEY_NEXT_CA_KEY,
];

/// The certificate content of the Secret, independent of Kubernetes object plumbing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredCerts {
    /// Signing CA.
    pub ca: Option<PemPair>,
    /// CA being rotated in.
    pub next_ca: Option<PemPair>,
    /// Serving certificate.
    pub leaf: Option<PemPair>,
    /// PEM bundle of the CAs clients must trust.
    pub bundle_pem: String,
    /// Rotation phase.
    pub phase: Phase,
    /// When the phase began.
    pub phase_since: Option<Timestamp>,
    /// Forced rotation request.
    pub force: Option<ForceRotation>,
}

impl StoredCerts {
    /// Reads our keys and annotations from a Secret; missing or non-UTF-8 entries become `None`.
    pub fn from_secret(secret: &Secret) -> Self {
        let data = secret.data.clone().unwrap_or_default();
        let text = |key: &str| {
            data.get(key)
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
                .filter(|s| !s.trim().is_empty())
        };
        let pair = |crt: &str, key: &str| match (text(crt), text(key)) {
            (Some(cert_pem), Some(key_pem)) => Some(PemPair { cert_pem, key_pem }),
            _ => None,
        };
        let annotations = secret.metadata.annotations.clone().unwrap_or_default();
        Self {
            ca: pair(KEY_CA_CRT, KEY_CA_KEY),
            next_ca: pair(KEY_NEXT_CA_CRT, KEY_NEXT_CA_KEY),
            leaf: pair(KEY_TLS_CRT, KEY_TLS_KEY),
            bundle_pem: text(KEY_CA_BUNDLE).unwrap_or_default(),
            phase: annotations
                .get(ANNOTATION_PHASE)
                .and_then(|p| p.parse().ok())
                .unwrap_or_default(),
            phase_since: annotations
                .get(ANNOTATION_PHASE_SINCE)
                .and_then(|p| p.parse().ok()),
            force: annotations
                .get(ANNOTATION_FORCE)
                .and_then(|p| p.parse().ok()),
        }
    }

    /// Writes our keys and annotations into `secret`, leaving other keys, labels and
    /// annotations as they are.
    pub fn write_into(&self, secret: &mut Secret) {
        secret.type_ = Some("kubernetes.io/tls".to_string());
        let data = secret.data.get_or_insert_with(BTreeMap::new);
        for key in OUR_KEYS {
            data.remove(key);
        }
        let mut put = |key: &str, value: &str| {
            data.insert(key.to_string(), ByteString(value.as_bytes().to_vec()));
        };
        // tls.crt/tls.key must exist for a kubernetes.io/tls Secret.
        put(KEY_TLS_CRT, self.leaf.as_ref().map_or("", |l| &l.cert_pem));
        put(KEY_TLS_KEY, self.leaf.as_ref().map_or("", |l| &l.key_pem));
        if let Some(ca) = &self.ca {
            put(KEY_CA_CRT, &ca.cert_pem);
            put(KEY_CA_KEY, &ca.key_pem);
        }
        if let Some(next) = &self.next_ca {
            put(KEY_NEXT_CA_CRT, &next.cert_pem);
            put(KEY_NEXT_CA_KEY, &next.key_pem);
        }
        put(KEY_CA_BUNDLE, &self.bundle_pem);

        let annotations = secret
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new);
        annotations.insert(ANNOTATION_PHASE.to_string(), self.phase.to_string());
        match self.phase_since {
            Some(since) => {
                annotations.insert(ANNOTATION_PHASE_SINCE.to_string(), since.to_string())
            }
            None => annotations.remove(ANNOTATION_PHASE_SINCE),
        };
        match self.force {
            Some(force) => {
                annotations.insert(ANNOTATION_FORCE.to_string(), force.as_str().to_string())
            }
            None => annotations.remove(ANNOTATION_FORCE),
        };
        let leaf_info = self
            .leaf
            .as_ref()
            .and_then(|l| cert_info_pem(&l.cert_pem).ok());
        let ca_info = self
            .ca
            .as_ref()
            .and_then(|c| cert_info_pem(&c.cert_pem).ok());
        for (key, value) in [
            (
                ANNOTATION_LEAF_NOT_AFTER,
                leaf_info.as_ref().map(|i| i.not_after.to_string()),
            ),
            (
                ANNOTATION_LEAF_FINGERPRINT,
                leaf_info.as_ref().map(|i| i.fingerprint.clone()),
            ),
            (
                ANNOTATION_CA_NOT_AFTER,
                ca_info.map(|i| i.not_after.to_string()),
            ),
        ] {
            match value {
                Some(v) => annotations.insert(key.to_string(), v),
                None => annotations.remove(key),
            };
        }
    }

    /// Fingerprints of the CAs in the bundle (unparsable bundle: empty).
    pub fn bundle_fingerprints(&self) -> Vec<String> {
        bundle_info(&self.bundle_pem)
            .map(|infos| infos.into_iter().map(|i| i.fingerprint).collect())
            .unwrap_or_default()
    }

    /// Parses the content into the facts the rotation decision needs.
    pub fn observe(&self, names: &ServingNames, bundle_injected: bool, now: Timestamp) -> Observed {
        let ca_facts = |pair: &Option<PemPair>| {
            let pair = pair.as_ref()?;
            let info = cert_info_pem(&pair.cert_pem).ok()?;
            // An expired CA can sign nothing the API server accepts: unusable like a broken one.
            if !info.is_ca || info.not_after <= now {
                return None;
            }
            certified_key_from_pem(pair.cert_pem.as_bytes(), pair.key_pem.as_bytes(), "CA").ok()?;
            Some((
                CertFacts {
                    not_after: info.not_after,
                },
                info.fingerprint,
            ))
        };
        let ca = ca_facts(&self.ca);
        let next_ca = ca_facts(&self.next_ca);
        let leaf = self.leaf.as_ref().and_then(|leaf| {
            let info = cert_info_pem(&leaf.cert_pem).ok()?;
            let key_ok =
                certified_key_from_pem(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes(), "leaf")
                    .is_ok();
            let chains = self
                .ca
                .as_ref()
                .is_some_and(|ca| verifies_against(&leaf.cert_pem, &ca.cert_pem, now));
            Some(LeafFacts {
                not_after: info.not_after,
                // An expired leaf fails verification; it is reissued either way.
                valid_for_ca: key_ok && (chains || info.not_after <= now),
                has_required_names: names.dns.iter().all(|d| info.dns_names.contains(d))
                    && names.ips.iter().all(|ip| info.ip_addresses.contains(ip)),
            })
        });
        let bundle = self.bundle_fingerprints();
        let ca_fp = ca.as_ref().map(|(_, fp)| fp.clone());
        let next_fp = next_ca.as_ref().map(|(_, fp)| fp.clone());
        let bundle_has_live_ca = self
            .live_bundle_cas(now)
            .iter()
            .any(|pem| cert_info_pem(pem).ok().map(|i| i.fingerprint).as_ref() != next_fp.as_ref());
        Observed {
            exists: true,
            bundle_has_live_ca,
            bundle_has_ca: ca_fp.as_ref().is_some_and(|fp| bundle.contains(fp)),
            bundle_has_next_ca: next_fp.as_ref().is_some_and(|fp| bundle.contains(fp)),
            bundle_has_others: bundle
                .iter()
                .any(|fp| Some(fp) != ca_fp.as_ref() && Some(fp) != next_fp.as_ref()),
            ca: ca.map(|(facts, _)| facts),
            next_ca: next_ca.map(|(facts, _)| facts),
            leaf,
            phase: self.phase,
            phase_since: self.phase_since,
            force: self.force,
            bundle_injected,
        }
    }

    /// Carries out `action`, returning the new content. `Wait` returns a clone.
    pub fn apply(
        &self,
        action: &Action,
        names: &ServingNames,
        policy: &RotationPolicy,
        now: Timestamp,
    ) -> Result<StoredCerts, CertError> {
        let mut next = self.clone();
        let missing_ca = || CertError::NoCertificate {
            what: "Secret ca.crt/ca.key".to_string(),
        };
        match action {
            Action::Wait { .. } => {}
            Action::Create => {
                let ca = generate_ca(CA_NAME, now, policy.ca_validity)?;
                next.leaf = Some(issue_serving_cert(&ca, names, now, policy.leaf_validity)?);
                next.bundle_pem = ca.cert_pem.clone();
                next.ca = Some(ca);
                next.next_ca = None;
                next.force = None;
                next.set_phase(Phase::Stable, now);
            }
            Action::IssueLeaf(reason) => {
                let ca = self.ca.as_ref().ok_or_else(missing_ca)?;
                next.leaf = Some(issue_serving_cert(ca, names, now, policy.leaf_validity)?);
                if *reason == LeafReason::Forced {
                    next.force = None;
                }
            }
            Action::StartCaRotation => {
                let ca = self.ca.as_ref().ok_or_else(missing_ca)?;
                let new_ca = generate_ca(CA_NAME, now, policy.ca_validity)?;
                next.bundle_pem = join_pem(&[&ca.cert_pem, &new_ca.cert_pem]);
                next.next_ca = Some(new_ca);
                if next.force == Some(ForceRotation::Ca) {
                    next.force = None;
                }
                next.set_phase(Phase::BundlePublished, now);
            }
            Action::PromoteNextCa => {
                let new_ca = self.next_ca.clone().ok_or_else(missing_ca)?;
                next.leaf = Some(issue_serving_cert(
                    &new_ca,
                    names,
                    now,
                    policy.leaf_validity,
                )?);
                next.ca = Some(new_ca);
                next.next_ca = None;
                next.set_phase(Phase::LeafRotated, now);
            }
            Action::RecoverCa => {
                // The unusable CA stays in ca.crt/ca.key (for diagnosis) until the promotion
                // replaces it; what the API server trusts today stays in the bundle.
                let new_ca = generate_ca(CA_NAME, now, policy.ca_validity)?;
                let mut parts = self.live_bundle_cas(now);
                parts.push(new_ca.cert_pem.clone());
                next.bundle_pem = join_pem(&parts.iter().map(String::as_str).collect::<Vec<_>>());
                next.next_ca = Some(new_ca);
                if next.force == Some(ForceRotation::Ca) {
                    next.force = None;
                }
                next.set_phase(Phase::BundlePublished, now);
            }
            Action::DropOldCa | Action::AbortCaRotation => {
                let ca = self.ca.as_ref().ok_or_else(missing_ca)?;
                next.bundle_pem = ca.cert_pem.clone();
                next.next_ca = None;
                next.set_phase(Phase::Stable, now);
            }
            Action::RepairBundle => {
                let mut parts = self.live_bundle_cas(now);
                let have = |parts: &[String], pem: &str| {
                    let fp = cert_info_pem(pem).map(|i| i.fingerprint).ok();
                    parts
                        .iter()
                        .any(|p| cert_info_pem(p).map(|i| i.fingerprint).ok() == fp)
                };
                for pair in [&self.ca, &self.next_ca].into_iter().flatten() {
                    // A garbled ca.crt must not make the whole bundle unparsable.
                    let live_ca =
                        cert_info_pem(&pair.cert_pem).is_ok_and(|i| i.is_ca && i.not_after > now);
                    if live_ca && !have(&parts, &pair.cert_pem) {
                        parts.push(pair.cert_pem.clone());
                    }
                }
                next.bundle_pem = join_pem(&parts.iter().map(String::as_str).collect::<Vec<_>>());
            }
        }
        Ok(next)
    }

    /// The bundle's CA certificates that are still valid at `now`, as PEM blocks.
    fn live_bundle_cas(&self, now: Timestamp) -> Vec<String> {
        split_pem_certs(&self.bundle_pem)
            .into_iter()
            .filter(|pem| cert_info_pem(pem).is_ok_and(|i| i.is_ca && i.not_after > now))
            .collect()
    }

    fn set_phase(&mut self, phase: Phase, now: Timestamp) {
        self.phase = phase;
        self.phase_since = Some(now);
    }

    /// True if `other` holds usable certificates for `names` (used to restore a deleted
    /// Secret from memory rather than minting a new CA that nobody trusts yet).
    pub fn is_usable(&self, names: &ServingNames, now: Timestamp) -> bool {
        let observed = self.observe(names, true, now);
        observed.ca.is_some()
            && observed
                .leaf
                .as_ref()
                .is_some_and(|l| l.valid_for_ca && l.not_after > now)
            && observed.bundle_has_ca
    }
}

fn join_pem(parts: &[&str]) -> String {
    let mut out = String::new();
    for part in parts {
        out.push_str(part.trim_end());
        out.push('\n');
    }
    out
}

/// Splits a PEM text into its CERTIFICATE blocks (as PEM text).
pub fn split_pem_certs(pem: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut inside = false;
    for line in pem.lines() {
        if line.starts_with("-----BEGIN CERTIFICATE-----") {
            inside = true;
            current.clear();
        }
        if inside {
            current.push_str(line);
            current.push('\n');
        }
        if line.starts_with("-----END CERTIFICATE-----") && inside {
            inside = false;
            out.push(std::mem::take(&mut current));
        }
    }
    out
}

/// A Secret as read, with the version to write against.
#[derive(Debug, Clone)]
pub struct Current {
    /// The raw Secret (kept so replaces preserve foreign keys, labels and annotations).
    pub secret: Secret,
    /// Our content.
    pub certs: StoredCerts,
}

/// Result of a write.
#[derive(Debug, Clone)]
pub enum Write {
    /// We wrote it; this is the stored object.
    Written(Box<Current>),
    /// Someone else wrote first (AlreadyExists, Conflict, or deleted meanwhile): re-read.
    Lost,
}

/// Reads and writes the certificate Secret with create-if-absent and resourceVersion
/// preconditions.
#[derive(Clone)]
pub struct SecretStore {
    api: Api<Secret>,
    namespace: String,
    name: String,
}

impl SecretStore {
    /// A store for `namespace/name`.
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// `namespace/name`.
    pub fn qualified_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The Secret's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn kube_err(&self, action: &'static str, source: kube::Error) -> StoreError {
        StoreError::Kube {
            action,
            kind: "Secret",
            name: self.qualified_name(),
            source: Box::new(source),
        }
    }

    /// Reads the Secret; `None` if it does not exist.
    pub async fn read(&self) -> Result<Option<Current>, StoreError> {
        let secret = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.kube_err("get", e))?;
        Ok(secret.map(|secret| Current {
            certs: StoredCerts::from_secret(&secret),
            secret,
        }))
    }

    /// Creates the Secret unless it exists.
    pub async fn create(&self, certs: &StoredCerts) -> Result<Write, StoreError> {
        let mut secret = Secret {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_string(),
                    "db-operator-certs".to_string(),
                )])),
                ..ObjectMeta::default()
            },
            ..Secret::default()
        };
        certs.write_into(&mut secret);
        match self.api.create(&PostParams::default(), &secret).await {
            Ok(secret) => Ok(Write::Written(Box::new(Current {
                certs: StoredCerts::from_secret(&secret),
                secret,
            }))),
            Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(Write::Lost),
            Err(e) => Err(self.kube_err("create", e)),
        }
    }

    /// Replaces the Secret only if it is still at `current`'s resourceVersion.
    pub async fn replace(
        &self,
        current: &Current,
        certs: &StoredCerts,
    ) -> Result<Write, StoreError> {
        let mut secret = current.secret.clone();
        // The read resourceVersion stays in metadata: it is the precondition.
        certs.write_into(&mut secret);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &secret)
            .await
        {
            Ok(secret) => Ok(Write::Written(Box::new(Current {
                certs: StoredCerts::from_secret(&secret),
                secret,
            }))),
            Err(kube::Error::Api(status)) if status.is_conflict() || status.is_not_found() => {
                Ok(Write::Lost)
            }
            Err(e) => Err(self.kube_err("replace", e)),
        }
    }
}

/// What one [`converge`] call did.
#[derive(Debug, Clone)]
pub struct Converged {
    /// The Secret as stored now.
    pub current: Current,
    /// Steps this replica wrote, in order.
    pub actions: Vec<Action>,
    /// When the next time-driven step is due.
    pub next_check: Timestamp,
}

/// Reads the Secret and applies rotation steps until none is due, writing each with a
/// precondition and re-deciding after every lost race.
///
/// `remembered` is the last content this process saw: if the Secret was deleted, it is
/// restored from memory (when still usable) so the CA already injected stays valid.
pub async fn converge(
    store: &SecretStore,
    names: &ServingNames,
    policy: &RotationPolicy,
    bundle_injected: bool,
    remembered: Option<&StoredCerts>,
    now: impl Fn() -> Timestamp,
    metrics: &CertMetrics,
) -> Result<Converged, StoreError> {
    const MAX_STEPS: u32 = 16;
    let material = |source| StoreError::Material {
        name: store.qualified_name(),
        source,
    };
    policy.validate()?;
    let mut actions = Vec::new();
    let mut lost = 0;
    // Injection was observed for the bundle read at the start; once this pass changes the
    // bundle, the new one is not injected yet, whatever bundle_propagation says.
    let mut bundle_injected = bundle_injected;
    let mut current = store.read().await?;
    let initial_bundle = current.as_ref().map(|c| c.certs.bundle_pem.clone());
    for _ in 0..MAX_STEPS {
        let t = now();
        let Some(cur) = current.take() else {
            let certs = match remembered.filter(|r| r.is_usable(names, t)) {
                Some(r) => {
                    warn!(secret = %store.qualified_name(), "certificate Secret missing; restoring it from memory");
                    r.clone()
                }
                None => {
                    info!(secret = %store.qualified_name(), "certificate Secret missing; generating a new CA and serving certificate");
                    StoredCerts::default()
                        .apply(&Action::Create, names, policy, t)
                        .map_err(|e| {
                            metrics.rotation(&Action::Create, RotationOutcome::Error);
                            material(e)
                        })?
                }
            };
            let written = store.create(&certs).await.inspect_err(|_| {
                metrics.rotation(&Action::Create, RotationOutcome::Error);
            })?;
            match written {
                Write::Written(written) => {
                    metrics.rotation(&Action::Create, RotationOutcome::Success);
                    actions.push(Action::Create);
                    current = Some(*written);
                }
                Write::Lost => {
                    metrics.rotation(&Action::Create, RotationOutcome::Conflict);
                    lost += 1;
                    info!(secret = %store.qualified_name(), "another writer created the Secret first; adopting it");
                    current = store.read().await?;
                }
            }
            continue;
        };
        if Some(&cur.certs.bundle_pem) != initial_bundle.as_ref() {
            bundle_injected = false;
        }
        let observed = cur.certs.observe(names, bundle_injected, t);
        let action = next_action(&observed, t, policy);
        if let Action::Wait { until } = action {
            return Ok(Converged {
                current: cur,
                actions,
                next_check: until,
            });
        }
        if matches!(action, Action::RecoverCa | Action::Create) {
            warn!(secret = %store.qualified_name(), ?action, phase = %cur.certs.phase,
                "the Secret's CA is unusable (missing, unparsable, key mismatch or expired); replacing it");
        }
        let certs = cur.certs.apply(&action, names, policy, t).map_err(|e| {
            metrics.rotation(&action, RotationOutcome::Error);
            material(e)
        })?;
        let written = store.replace(&cur, &certs).await.inspect_err(|_| {
            metrics.rotation(&action, RotationOutcome::Error);
        })?;
        match written {
            Write::Written(written) => {
                metrics.rotation(&action, RotationOutcome::Success);
                info!(secret = %store.qualified_name(), ?action, phase = %certs.phase, "certificate Secret updated");
                actions.push(action);
                current = Some(*written);
            }
            Write::Lost => {
                metrics.rotation(&action, RotationOutcome::Conflict);
                lost += 1;
                info!(secret = %store.qualified_name(), ?action, "Secret changed while deciding; re-reading");
                current = store.read().await?;
            }
        }
    }
    Err(StoreError::TooManyConflicts {
        name: store.qualified_name(),
        attempts: lost,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn names() -> ServingNames {
        ServingNames::for_service("db-webhook", "db-system")
    }

    fn policy() -> RotationPolicy {
        RotationPolicy {
            ca_validity: Duration::from_secs(3600),
            leaf_validity: Duration::from_secs(900),
            ca_renew_before: Duration::from_secs(1200),
            leaf_renew_before: Duration::from_secs(300),
            bundle_propagation: Duration::from_secs(5),
            secret_propagation: Duration::from_secs(10),
        }
    }

    fn created(now: Timestamp) -> StoredCerts {
        StoredCerts::default()
            .apply(&Action::Create, &names(), &policy(), now)
            .unwrap()
    }

    fn leaf_verifies(certs: &StoredCerts, now: Timestamp) -> bool {
        verifies_against(
            &certs.leaf.as_ref().unwrap().cert_pem,
            &certs.bundle_pem,
            now,
        )
    }

    #[test]
    fn secret_round_trip_preserves_content_and_foreign_keys() {
        let now = Timestamp::now();
        let mut certs = created(now);
        certs.force = Some(ForceRotation::Leaf);
        let mut secret = Secret {
            data: Some(BTreeMap::from([(
                "someone-else".to_string(),
                ByteString(b"keep me".to_vec()),
            )])),
            metadata: ObjectMeta {
                annotations: Some(BTreeMap::from([("team".to_string(), "db".to_string())])),
                ..ObjectMeta::default()
            },
            ..Secret::default()
        };
        certs.write_into(&mut secret);
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(StoredCerts::from_secret(&secret), certs);
        let data = secret.data.as_ref().unwrap();
        assert_eq!(data["someone-else"].0, b"keep me");
        assert!(!data.contains_key(KEY_NEXT_CA_CRT));
        let annotations = secret.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations["team"], "db");
        assert_eq!(annotations[ANNOTATION_PHASE], "Stable");
        assert_eq!(annotations[ANNOTATION_FORCE], "leaf");

        certs.force = None;
        certs.write_into(&mut secret);
        assert!(!secret
            .metadata
            .annotations
            .unwrap()
            .contains_key(ANNOTATION_FORCE));
    }

    #[test]
    fn fresh_secret_needs_nothing_until_renewal() {
        let now = Timestamp::now();
        let certs = created(now);
        assert!(leaf_verifies(&certs, now));
        let observed = certs.observe(&names(), true, now);
        assert!(observed.bundle_has_ca && !observed.bundle_has_others);
        assert!(matches!(
            next_action(&observed, now, &policy()),
            Action::Wait { .. }
        ));
        assert!(certs.is_usable(&names(), now));
    }

    #[test]
    fn observe_flags_broken_content() {
        let now = Timestamp::now();
        let good = created(now);
        let other = created(now);
        let cases: Vec<(&str, StoredCerts, Action)> = vec![
            (
                "leaf_from_foreign_ca_is_reissued",
                StoredCerts {
                    leaf: other.leaf.clone(),
                    ..good.clone()
                },
                Action::IssueLeaf(LeafReason::Invalid),
            ),
            (
                "leaf_key_swapped_is_reissued",
                StoredCerts {
                    leaf: Some(PemPair {
                        cert_pem: good.leaf.clone().unwrap().cert_pem,
                        key_pem: other.leaf.clone().unwrap().key_pem,
                    }),
                    ..good.clone()
                },
                Action::IssueLeaf(LeafReason::Invalid),
            ),
            (
                "ca_key_swapped_is_replaced_with_overlap",
                StoredCerts {
                    ca: Some(PemPair {
                        cert_pem: good.ca.clone().unwrap().cert_pem,
                        key_pem: other.ca.clone().unwrap().key_pem,
                    }),
                    ..good.clone()
                },
                Action::RecoverCa,
            ),
            (
                "emptied_bundle_is_repaired",
                StoredCerts {
                    bundle_pem: String::new(),
                    ..good.clone()
                },
                Action::RepairBundle,
            ),
            (
                "service_renamed_reissues_leaf",
                good.clone(),
                Action::IssueLeaf(LeafReason::NamesChanged),
            ),
        ];
        for (name, certs, want) in cases {
            let names = if name == "service_renamed_reissues_leaf" {
                ServingNames::for_service("renamed", "db-system")
            } else {
                names()
            };
            let observed = certs.observe(&names, true, now);
            assert_eq!(next_action(&observed, now, &policy()), want, "{name}");
            let fixed = certs.apply(&want, &names, &policy(), now).unwrap();
            let after = next_action(&fixed.observe(&names, true, now), now, &policy());
            assert!(
                matches!(after, Action::Wait { .. }),
                "{name}: after repair {after:?}"
            );
        }
    }

    #[test]
    fn forced_leaf_rotation_keeps_ca_and_clears_the_request() {
        let now = Timestamp::now();
        let mut certs = created(now);
        certs.force = Some(ForceRotation::Leaf);
        let action = next_action(&certs.observe(&names(), true, now), now, &policy());
        assert_eq!(action, Action::IssueLeaf(LeafReason::Forced));
        let next = certs.apply(&action, &names(), &policy(), now).unwrap();
        assert_eq!(next.ca, certs.ca);
        assert_eq!(next.bundle_pem, certs.bundle_pem);
        assert_ne!(next.leaf, certs.leaf);
        assert_eq!(next.force, None);
        assert!(leaf_verifies(&next, now));
    }

    #[test]
    fn forced_ca_rotation_keeps_every_served_leaf_valid_against_the_bundle() {
        let start = Timestamp::now();
        let mut certs = created(start);
        certs.force = Some(ForceRotation::Ca);
        let original_ca = certs.ca.clone();
        // Leaves a lagging replica might still serve at each point.
        let mut served: Vec<PemPair> = vec![certs.leaf.clone().unwrap()];
        let mut now = start;
        let mut steps = Vec::new();
        for _ in 0..10 {
            let action = next_action(&certs.observe(&names(), true, now), now, &policy());
            if let Action::Wait { until } = action {
                if certs.phase == Phase::Stable && !steps.is_empty() {
                    break;
                }
                now = until;
                continue;
            }
            steps.push(action.clone());
            let next = certs.apply(&action, &names(), &policy(), now).unwrap();
            // The bundle published by this step must accept every leaf that may still be
            // served (the previous ones until the old CA is dropped) and the new one.
            if action == Action::DropOldCa {
                served.retain(|l| Some(l) == next.leaf.as_ref());
            }
            served.push(next.leaf.clone().unwrap());
            for leaf in &served {
                assert!(
                    verifies_against(&leaf.cert_pem, &next.bundle_pem, now),
                    "after {action:?} a served leaf is not trusted"
                );
            }
            certs = next;
        }
        assert_eq!(
            steps,
            vec![
                Action::StartCaRotation,
                Action::PromoteNextCa,
                Action::DropOldCa
            ]
        );
        assert_ne!(certs.ca, original_ca);
        assert_eq!(certs.bundle_fingerprints().len(), 1);
        assert_eq!(certs.force, None);
        assert_eq!(certs.next_ca, None);
    }

    fn advance(now: Timestamp, secs: f64) -> Timestamp {
        now + jiff::SignedDuration::from_secs_f64(secs)
    }

    /// Runs a Secret through the rotation steps with a simulated clock, as the manager would:
    /// a step that changes the bundle is injected only at the next pass, and a pass never comes
    /// sooner than 500 ms after a wait. At every instant the Secret's leaf, and every leaf it
    /// held within `secret_propagation` (what lagging replicas may still serve), must verify
    /// against the Secret's bundle. Returns the steps taken.
    fn simulate(
        mut certs: StoredCerts,
        policy: &RotationPolicy,
        start: Timestamp,
        seconds: f64,
    ) -> Vec<(f64, Action)> {
        let mut now = start;
        let mut injected = true;
        let mut steps = Vec::new();
        let mut recent: Vec<(Timestamp, PemPair)> = vec![(now, certs.leaf.clone().unwrap())];
        let mut writes_without_time_passing = 0;
        while now < advance(start, seconds) {
            let observed = certs.observe(&names(), injected, now);
            let action = next_action(&observed, now, policy);
            let elapsed = now.duration_since(start).as_secs_f64();
            if let Action::Wait { until } = action {
                now = until.max(advance(now, 0.5));
                injected = true;
                writes_without_time_passing = 0;
                continue;
            }
            writes_without_time_passing += 1;
            assert!(
                writes_without_time_passing <= 3,
                "livelock at +{elapsed:.1}s: {steps:?}"
            );
            let next = certs.apply(&action, &names(), policy, now).unwrap();
            if next.bundle_pem != certs.bundle_pem {
                injected = false;
            }
            if next.leaf != certs.leaf {
                recent.push((now, next.leaf.clone().unwrap()));
            }
            recent.retain(|(since, leaf)| {
                Some(leaf) == next.leaf.as_ref()
                    || now.duration_since(*since).unsigned_abs() < policy.secret_propagation
            });
            for (_, leaf) in &recent {
                assert!(
                    verifies_against(&leaf.cert_pem, &next.bundle_pem, now),
                    "+{elapsed:.1}s after {action:?}: a leaf that may be served is not trusted: {:?}",
                    crate::generate::verify_against(&leaf.cert_pem, &next.bundle_pem, now)
                );
            }
            steps.push((elapsed, action));
            certs = next;
        }
        steps
    }

    /// The rotation livelock: a CA with less time left than the leaf's renew window. Every
    /// leaf it can issue is already "expiring"; the CA must rotate first, and from then on
    /// leaves and CAs keep rotating on their own with validities of seconds.
    #[test]
    fn short_validities_rotate_the_ca_first_and_never_livelock() {
        let policy = RotationPolicy {
            ca_validity: Duration::from_secs(75),
            leaf_validity: Duration::from_secs(30),
            ca_renew_before: Duration::from_secs(40),
            leaf_renew_before: Duration::from_secs(12),
            bundle_propagation: Duration::from_secs(1),
            secret_propagation: Duration::from_secs(3),
        };
        policy.validate().unwrap();
        let start = Timestamp::now();
        // Left over from a cluster that was switched off: the CA has 10 s left.
        let dying = StoredCerts::default()
            .apply(
                &Action::Create,
                &names(),
                &RotationPolicy {
                    ca_validity: Duration::from_secs(10),
                    ..policy.clone()
                },
                start,
            )
            .unwrap();
        let steps = simulate(dying, &policy, start, 200.0);
        let count = |want: &Action| steps.iter().filter(|(_, a)| a == want).count();
        assert_eq!(
            steps.first().map(|(_, a)| a),
            Some(&Action::StartCaRotation),
            "{steps:?}"
        );
        assert!(count(&Action::PromoteNextCa) >= 3, "{steps:?}");
        assert!(count(&Action::DropOldCa) >= 3, "{steps:?}");
        assert!(
            count(&Action::IssueLeaf(LeafReason::Expiring)) >= 3,
            "{steps:?}"
        );
        // Promotions happen before the old CA expires: 10 s for the first one.
        assert!(steps
            .iter()
            .any(|(t, a)| *a == Action::PromoteNextCa && *t < 10.0));
    }

    #[test]
    fn unusable_ca_is_replaced_through_the_overlap_not_swapped() {
        type Break = fn(&mut StoredCerts, &StoredCerts);
        let cases: Vec<(&str, Break, Option<Action>)> = vec![
            (
                "ca_key_garbled",
                |c, _| {
                    c.ca.as_mut().unwrap().key_pem =
                        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"
                            .into()
                },
                Some(Action::RecoverCa),
            ),
            (
                "ca_key_of_another_ca",
                |c, other| c.ca.as_mut().unwrap().key_pem = other.ca.clone().unwrap().key_pem,
                Some(Action::RecoverCa),
            ),
            (
                "ca_cert_garbled",
                |c, _| {
                    c.ca.as_mut().unwrap().cert_pem =
                        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into()
                },
                Some(Action::RecoverCa),
            ),
            ("ca_missing", |c, _| c.ca = None, Some(Action::RecoverCa)),
            (
                "ca_and_bundle_garbled",
                |c, _| {
                    c.ca = None;
                    c.bundle_pem = "junk".into();
                },
                None,
            ),
        ];
        let policy = policy();
        for (name, damage, want) in cases {
            let start = Timestamp::now();
            let good = created(start);
            let other = created(start);
            let mut broken = good.clone();
            damage(&mut broken, &other);
            let first = next_action(&broken.observe(&names(), true, start), start, &policy);
            let Some(want) = want else {
                assert_eq!(first, Action::Create, "{name}: nothing trusted is left");
                continue;
            };
            assert_eq!(first, want, "{name}");
            let published = broken.apply(&first, &names(), &policy, start).unwrap();
            assert_eq!(
                published.leaf, good.leaf,
                "{name}: the leaf is not switched yet"
            );
            assert_eq!(published.phase, Phase::BundlePublished, "{name}");
            assert_eq!(
                published.bundle_fingerprints().len(),
                2,
                "{name}: old + new"
            );
            assert!(leaf_verifies(&published, start), "{name}");

            let steps = simulate(published, &policy, start, 30.0);
            let actions: Vec<&Action> = steps.iter().map(|(_, a)| a).collect();
            assert_eq!(
                actions,
                [&Action::PromoteNextCa, &Action::DropOldCa],
                "{name}: {steps:?}"
            );
            // Promotion waited for injection and bundle_propagation (5 s).
            assert!(steps[0].0 >= 5.0, "{name}: {steps:?}");
            // The old CA was kept for secret_propagation (10 s) after the new leaf.
            assert!(steps[1].0 - steps[0].0 >= 10.0, "{name}: {steps:?}");
        }
    }

    #[test]
    fn split_pem_certs_finds_each_block() {
        let now = Timestamp::now();
        let (a, b) = (created(now), created(now));
        let bundle = join_pem(&[&a.bundle_pem, &b.bundle_pem]);
        let parts = split_pem_certs(&bundle);
        assert_eq!(parts.len(), 2);
        assert_eq!(
            cert_info_pem(&parts[1]).unwrap(),
            cert_info_pem(&b.bundle_pem).unwrap()
        );
    }
}
