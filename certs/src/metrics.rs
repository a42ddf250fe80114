//! Prometheus metrics of certificate management, for the binary that embeds this crate to
//! register in its own registry (`CertMetrics::global().register(&mut registry)`):
//!
//! * `certificate_expiry_seconds{certificate="ca"|"leaf"}` (gauge): seconds until the signing
//!   CA of the Secret (set by the manager) and the serving certificate actually served (set by
//!   the resolver) expire, computed at scrape time; negative once expired. A series appears
//!   once the certificate is known (no CA series in cert-manager mode).
//! * `certificate_rotations_total{step, outcome}` (counter): Secret writes of the rotation
//!   state machine by step (`create`, `issue_leaf`, `start_ca_rotation`, `promote_next_ca`,
//!   `drop_old_ca`, `abort_ca_rotation`, `recover_ca`, `repair_bundle`) and outcome
//!   (`success`, `conflict` = another replica wrote first, `error`).
//! * `certificate_reloads_total{outcome}` (counter): certificate file reloads by outcome
//!   (`swapped`, `rejected_invalid`, `rejected_expired`, `rejected_not_yet_valid`); a rejected
//!   content is counted once, not at every poll.
//!
//! Every label combination is created up front so the series exist from the first scrape.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use jiff::Timestamp;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::rotation::Action;

/// Which certificate an expiry gauge is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Certificate {
    /// The Secret's signing CA.
    Ca,
    /// The serving certificate this process serves.
    Leaf,
}

impl Certificate {
    fn as_str(self) -> &'static str {
        match self {
            Certificate::Ca => "ca",
            Certificate::Leaf => "leaf",
        }
    }
}

/// Outcome of one rotation write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationOutcome {
    /// Written.
    Success,
    /// Another writer changed the Secret first; re-decided on its content.
    Conflict,
    /// Generating or writing failed.
    Error,
}

impl RotationOutcome {
    const ALL: [RotationOutcome; 3] = [
        RotationOutcome::Success,
        RotationOutcome::Conflict,
        RotationOutcome::Error,
    ];

    fn as_str(self) -> &'static str {
        match self {
            RotationOutcome::Success => "success",
            RotationOutcome::Conflict => "conflict",
            RotationOutcome::Error => "error",
        }
    }
}

/// Outcome of one certificate file reload that changed or was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// A new valid pair is served.
    Swapped,
    /// Unreadable, malformed or mismatched files.
    RejectedInvalid,
    /// The new certificate has already expired.
    RejectedExpired,
    /// The new certificate is not valid yet.
    RejectedNotYetValid,
}

impl ReloadResult {
    const ALL: [ReloadResult; 4] = [
        ReloadResult::Swapped,
        ReloadResult::RejectedInvalid,
        ReloadResult::RejectedExpired,
        ReloadResult::RejectedNotYetValid,
    ];

    fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Swapped => "swapped",
            ReloadResult::RejectedInvalid => "rejected_invalid",
            ReloadResult::RejectedExpired => "rejected_expired",
            ReloadResult::RejectedNotYetValid => "rejected_not_yet_valid",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RotationLabels {
    step: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExpiryLabels {
    certificate: &'static str,
}

/// Expiry times, turned into "seconds left" at each scrape.
#[derive(Debug, Default)]
struct Expiry {
    not_after: Mutex<BTreeMap<Certificate, Timestamp>>,
}

impl Collector for Expiry {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = Timestamp::now();
        let known: Vec<(Certificate, Timestamp)> = match self.not_after.lock() {
            Ok(map) => map.iter().map(|(k, v)| (*k, *v)).collect(),
            Err(_) => Vec::new(),
        };
        let mut family = encoder.encode_descriptor(
            "certificate_expiry_seconds",
            "Seconds until the certificate expires (ca: the Secret's signing CA, leaf: the served certificate); negative once expired",
            None,
            MetricType::Gauge,
        )?;
        for (certificate, not_after) in known {
            let seconds = not_after.duration_since(now).as_secs_f64();
            let labels = ExpiryLabels {
                certificate: certificate.as_str(),
            };
            ConstGauge::new(seconds).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Inner {
    expiry: Arc<Expiry>,
    rotations: Family<RotationLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
}

/// Handles to the certificate metrics; cheap to clone. The manager and the resolver record
/// into [`CertMetrics::global`] unless given another instance (tests).
#[derive(Debug, Clone)]
pub struct CertMetrics {
    inner: Arc<Inner>,
}

impl Default for CertMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl CertMetrics {
    /// A fresh, unregistered set of metrics with every series created.
    pub fn new() -> Self {
        let rotations = Family::<RotationLabels, Counter>::default();
        for step in Action::WRITE_LABELS {
            for outcome in RotationOutcome::ALL {
                drop(rotations.get_or_create(&RotationLabels {
                    step,
                    outcome: outcome.as_str(),
                }));
            }
        }
        let reloads = Family::<ReloadLabels, Counter>::default();
        for outcome in ReloadResult::ALL {
            drop(reloads.get_or_create(&ReloadLabels {
                outcome: outcome.as_str(),
            }));
        }
        Self {
            inner: Arc::new(Inner {
                expiry: Arc::new(Expiry::default()),
                rotations,
                reloads,
            }),
        }
    }

    /// The process-wide instance the admission server registers.
    pub fn global() -> &'static CertMetrics {
        static GLOBAL: OnceLock<CertMetrics> = OnceLock::new();
        GLOBAL.get_or_init(CertMetrics::new)
    }

    /// Adds these metrics to `registry` (under its prefix). May be called for several
    /// registries; they share the values.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "certificate_rotations",
            "Certificate Secret writes by rotation step and outcome",
            self.inner.rotations.clone(),
        );
        registry.register(
            "certificate_reloads",
            "Certificate file reloads that swapped or were refused, by outcome",
            self.inner.reloads.clone(),
        );
        registry.register_collector(Box::new(Arc::clone(&self.inner.expiry)));
    }

    /// Records when `certificate` expires.
    pub fn set_expiry(&self, certificate: Certificate, not_after: Timestamp) {
        if let Ok(mut map) = self.inner.expiry.not_after.lock() {
            map.insert(certificate, not_after);
        }
    }

    /// Counts one rotation write.
    pub fn rotation(&self, action: &Action, outcome: RotationOutcome) {
        self.inner
            .rotations
            .get_or_create(&RotationLabels {
                step: action.label(),
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// Counts one reload outcome.
    pub fn reload(&self, result: ReloadResult) {
        self.inner
            .reloads
            .get_or_create(&ReloadLabels {
                outcome: result.as_str(),
            })
            .inc();
    }

    /// Current value of a rotation counter (tests, diagnostics).
    pub fn rotations(&self, step: &str, outcome: RotationOutcome) -> u64 {
        let step = Action::WRITE_LABELS
            .into_iter()
            .find(|s| *s == step)
            .unwrap_or("");
        self.inner
            .rotations
            .get_or_create(&RotationLabels {
                step,
                outcome: outcome.as_str(),
            })
            .get()
    }

    /// Current value of a reload counter (tests, diagnostics).
    pub fn reloads(&self, result: ReloadResult) -> u64 {
        self.inner
            .reloads
            .get_or_create(&ReloadLabels {
                outcome: result.as_str(),
            })
            .get()
    }

    /// Prometheus text of these metrics alone, without a prefix (tests, diagnostics).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::default();
        self.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_exists_before_anything_happens_and_counts_after() {
        let metrics = CertMetrics::new();
        let text = metrics.encode().unwrap();
        for series in [
            r#"certificate_rotations_total{step="start_ca_rotation",outcome="success"} 0"#,
            r#"certificate_rotations_total{step="recover_ca",outcome="error"} 0"#,
            r#"certificate_reloads_total{outcome="rejected_expired"} 0"#,
            "# TYPE certificate_expiry_seconds gauge",
        ] {
            assert!(text.contains(series), "missing {series}:\n{text}");
        }
        assert!(!text.contains("certificate_expiry_seconds{"), "{text}");

        metrics.rotation(&Action::StartCaRotation, RotationOutcome::Success);
        metrics.reload(ReloadResult::RejectedExpired);
        let in_an_hour = Timestamp::now() + jiff::SignedDuration::from_secs(3600);
        metrics.set_expiry(Certificate::Ca, in_an_hour);
        let an_hour_ago = Timestamp::now() - jiff::SignedDuration::from_secs(3600);
        metrics.set_expiry(Certificate::Leaf, an_hour_ago);
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(
                r#"certificate_rotations_total{step="start_ca_rotation",outcome="success"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"certificate_reloads_total{outcome="rejected_expired"} 1"#),
            "{text}"
        );
        let gauge = |name: &str| -> f64 {
            let prefix = format!("certificate_expiry_seconds{{certificate=\"{name}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap_or_else(|| panic!("no {name} gauge in\n{text}"))
                .parse()
                .unwrap()
        };
        assert!((3590.0..=3600.0).contains(&gauge("ca")), "{text}");
        assert!((-3610.0..=-3599.0).contains(&gauge("leaf")), "{text}");
    }

    #[test]
    fn a_prefixed_registry_prefixes_every_family() {
        let mut registry = Registry::with_prefix("admission");
        let metrics = CertMetrics::new();
        metrics.set_expiry(Certificate::Leaf, Timestamp::now());
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for name in [
            "admission_certificate_expiry_seconds{",
            "admission_certificate_rotations_total{",
            "admission_certificate_reloads_total{",
        ] {
            assert!(text.contains(name), "missing {name}:\n{text}");
        }
    }
}
