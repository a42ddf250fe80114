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
pub struct RequestLabels {
    /// `reconcile` (the rate-limited client) or `lease` (leader election's own client)
    pub client: String,
    pub verb: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    /// `leading` or `following`
    pub to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
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
    /// Every API request by client and Kubernetes verb, reads included.
    pub api_requests: Family<RequestLabels, Counter<u64, AtomicU64>>,
    /// Leadership gained (`leading`) and lost (`following`).
    pub leader_transitions: Family<TransitionLabels, Counter>,
    /// Databases in the controller's cache by `status.phase` (`Unknown` before the first status).
    pub databases: Family<PhaseLabels, Gauge>,
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
        let api_requests = Family::<RequestLabels, Counter<u64, AtomicU64>>::default();
        let leader_transitions = Family::<TransitionLabels, Counter>::default();
        let databases = Family::<PhaseLabels, Gauge>::default();
        registry.register(
            "api_requests",
            "API requests sent, by client (reconcile, lease) and Kubernetes verb (get, list, watch, create, patch, update, delete)",
            api_requests.clone(),
        );
        registry.register(
            "leader_transitions",
            "Times this replica started leading or stopped",
            leader_transitions.clone(),
        );
        registry.register(
            "databases",
            "Databases in the controller's cache, by status.phase",
            databases.clone(),
        );
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
            api_requests,
            leader_transitions,
            databases,
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

    /// Sets the by-phase gauges from the phases of the Databases in the cache.
    pub fn set_phases(&self, phases: impl Iterator<Item = Option<api::v1::Phase>>) {
        use api::v1::Phase;
        let label = |p: Option<Phase>| p.map_or_else(|| "Unknown".to_owned(), |p| p.to_string());
        let mut counts: std::collections::BTreeMap<String, i64> = [
            Some(Phase::Pending),
            Some(Phase::Running),
            Some(Phase::Failed),
            Some(Phase::Terminating),
            None,
        ]
        .into_iter()
        .map(|p| (label(p), 0))
        .collect();
        for p in phases {
            *counts.entry(label(p)).or_default() += 1;
        }
        for (phase, n) in counts {
            self.databases.get_or_create(&PhaseLabels { phase }).set(n);
        }
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

    #[test]
    fn databases_are_counted_by_phase_with_zeroes_for_the_empty_ones() {
        let m = Metrics::new();
        use api::v1::Phase;
        m.set_phases([Some(Phase::Running), Some(Phase::Running), None].into_iter());
        let text = m.encode();
        for line in [
            "db_operator_databases{phase=\"Running\"} 2",
            "db_operator_databases{phase=\"Unknown\"} 1",
            "db_operator_databases{phase=\"Failed\"} 0",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        m.set_phases([Some(Phase::Failed)].into_iter());
        assert!(m
            .encode()
            .contains("db_operator_databases{phase=\"Running\"} 0"));
    }
}
