//! Prometheus metrics for the webhook endpoints, served as text on `/metrics`.
//!
//! Two families, labelled by `operation` (validate, mutate, convert) and `decision` (allowed,
//! denied, error): `admission_requests_total` and `admission_request_duration_seconds`. Every
//! label combination is created up front so the series exist from the first scrape and the hot
//! path never takes the family lock.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Which webhook endpoint handled the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Validate,
    Mutate,
    Convert,
}

impl Operation {
    pub const ALL: [Operation; 3] = [Operation::Validate, Operation::Mutate, Operation::Convert];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Validate => "validate",
            Operation::Mutate => "mutate",
            Operation::Convert => "convert",
        }
    }
}

/// Outcome of a webhook request.
///
/// `Error` means the request could not be evaluated (bad input, timeout); the API server sees
/// a non-200 status for those.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Denied,
    Error,
}

impl Decision {
    pub const ALL: [Decision; 3] = [Decision::Allowed, Decision::Denied, Decision::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Denied => "denied",
            Decision::Error => "error",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    operation: &'static str,
    decision: &'static str,
}

/// Latency buckets from 50µs to 5s: webhook answers are expected in well under a millisecond.
const BUCKETS: [f64; 14] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0,
];

/// The registry plus pre-created handles for every (operation, decision) pair.
pub struct Metrics {
    registry: Registry,
    requests: [[Counter; 3]; 3],
    latency: [[Histogram; 3]; 3],
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("admission");
        let requests_family = Family::<Labels, Counter>::default();
        let latency_family =
            Family::<Labels, Histogram, _>::new_with_constructor(|| Histogram::new(BUCKETS));
        registry.register(
            "requests",
            "Webhook requests by operation and decision",
            requests_family.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Webhook request latency from headers received to response ready",
            latency_family.clone(),
        );
        // Certificate expiry, rotations and reloads (certs/src/metrics.rs).
        certs::CertMetrics::global().register(&mut registry);
        let labels = |o: Operation, d: Decision| Labels {
            operation: o.as_str(),
            decision: d.as_str(),
        };
        let requests = Operation::ALL
            .map(|o| Decision::ALL.map(|d| requests_family.get_or_create_owned(&labels(o, d))));
        let latency = Operation::ALL
            .map(|o| Decision::ALL.map(|d| latency_family.get_or_create_owned(&labels(o, d))));
        Metrics {
            registry,
            requests,
            latency,
        }
    }

    /// Records one finished webhook request.
    pub fn observe(&self, operation: Operation, decision: Decision, elapsed: Duration) {
        let (o, d) = (operation as usize, decision as usize);
        self.requests[o][d].inc();
        self.latency[o][d].observe(elapsed.as_secs_f64());
    }

    /// Prometheus text exposition of all metrics.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observed_requests_appear_with_operation_and_decision_labels() {
        let metrics = Metrics::new();
        metrics.observe(
            Operation::Mutate,
            Decision::Denied,
            Duration::from_micros(300),
        );
        metrics.observe(
            Operation::Mutate,
            Decision::Denied,
            Duration::from_micros(300),
        );
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(r#"admission_requests_total{operation="mutate",decision="denied"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"admission_requests_total{operation="validate",decision="allowed"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"admission_request_duration_seconds_bucket{le="0.0005",operation="mutate",decision="denied"} 2"#
            ),
            "{text}"
        );
    }
}
