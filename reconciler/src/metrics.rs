//! Prometheus metrics: reconcile counts by result, durations, errors by label, reconciles in
//! flight (kube-runtime 5 does not expose its internal queue depth), leader status, and
//! non-GET API requests made by this process.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `success` or `error`
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    pub verb: String,
}

/// All metrics of the process, registered in one registry.
#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Family<ResultLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: Histogram,
    pub in_flight: Gauge,
    pub leader: Gauge,
    pub api_writes: Family<VerbLabels, Counter<u64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("db_operator");
        let reconciles = Family::<ResultLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let in_flight = Gauge::default();
        let leader = Gauge::default();
        let api_writes = Family::<VerbLabels, Counter<u64, AtomicU64>>::default();
        registry.register("reconcile", "Reconciles by result", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconcile errors by kind",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            duration.clone(),
        );
        registry.register(
            "reconcile_in_flight",
            "Reconciles currently running (queue depth is not exposed by kube-runtime)",
            in_flight.clone(),
        );
        registry.register(
            "leader",
            "1 when this replica holds the leader Lease",
            leader.clone(),
        );
        registry.register(
            "api_write_requests",
            "Non-GET requests sent to the API server",
            api_writes.clone(),
        );
        Metrics {
            registry,
            reconciles,
            errors,
            duration,
            in_flight,
            leader,
            api_writes,
        }
    }

    pub fn observe_reconcile(&self, result: &str, took: Duration) {
        self.reconciles
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
        self.duration.observe(took.as_secs_f64());
    }

    pub fn observe_error(&self, label: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                error: label.to_owned(),
            })
            .inc();
    }

    /// Total reconciles so far, all results.
    pub fn reconcile_count(&self) -> u64 {
        ["success", "error"]
            .iter()
            .map(|r| {
                self.reconciles
                    .get_or_create(&ResultLabels {
                        result: (*r).to_owned(),
                    })
                    .get()
            })
            .sum()
    }

    /// Text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_contains_reconcile_error_and_leader_series() {
        let m = Metrics::new();
        m.observe_reconcile("success", Duration::from_millis(20));
        m.observe_error("conflict");
        m.leader.set(1);
        let text = m.encode();
        assert!(
            text.contains("db_operator_reconcile_total{result=\"success\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("db_operator_reconcile_errors_total{error=\"conflict\"} 1"),
            "{text}"
        );
        assert!(text.contains("db_operator_leader 1"), "{text}");
        assert!(
            text.contains("db_operator_reconcile_duration_seconds_bucket"),
            "{text}"
        );
        assert_eq!(m.reconcile_count(), 1);
    }
}
