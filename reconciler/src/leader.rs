//! Leader election on a `coordination.k8s.io/v1` Lease. kube 5 has no built-in elector, so this
//! follows client-go's protocol: the holder renews every retry period; anyone may take the
//! Lease once `renewTime + leaseDurationSeconds` has passed; every write is a replace carrying
//! the resourceVersion read, so two candidates can never both win (the loser gets 409).

use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::metrics::Metrics;

/// Timing and identity of the election.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    /// How long a Lease stays valid after its last renewal.
    pub lease_duration: Duration,
    /// A leader that could not renew for this long steps down.
    pub renew_deadline: Duration,
    /// Pause between acquire/renew attempts.
    pub retry_period: Duration,
}

/// What the holder of a Lease looks like to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseView {
    /// Nobody holds it, or the holder's renewal is older than the lease duration.
    Free,
    Ours,
    HeldByOther(String),
}

/// Pure decision: who holds `spec` at `now`.
pub fn view(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> LeaseView {
    let Some(spec) = spec else {
        return LeaseView::Free;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder.is_empty() {
        return LeaseView::Free;
    }
    if holder == me {
        return LeaseView::Ours;
    }
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    match spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) {
        Some(MicroTime(renewed)) if *renewed + duration > now => {
            LeaseView::HeldByOther(holder.to_owned())
        }
        _ => LeaseView::Free,
    }
}

/// Candidate for leadership.
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
}

impl LeaderElector {
    /// `client` should be dedicated to the Lease (see [`crate::client::build_lease_client`]):
    /// renewals must not queue behind reconcile traffic in a shared rate limiter.
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
        }
    }

    pub fn identity(&self) -> &str {
        &self.settings.identity
    }

    fn spec(&self, now: Timestamp, acquire: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            lease_duration_seconds: Some(self.settings.lease_duration.as_secs().max(1) as i32),
            acquire_time: Some(acquire.unwrap_or(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One attempt: returns whether we hold the Lease afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let pp = PostParams::default();
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(now, None, 0)),
            };
            return match self.api.create(&pp, &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let current = lease.spec.clone();
        let next = match view(current.as_ref(), &self.settings.identity, now) {
            LeaseView::HeldByOther(_) => return Ok(false),
            LeaseView::Ours => {
                let c = current.unwrap_or_default();
                self.spec(now, c.acquire_time, c.lease_transitions.unwrap_or(0))
            }
            LeaseView::Free => {
                let transitions = current.and_then(|c| c.lease_transitions).unwrap_or(0);
                self.spec(now, None, transitions.saturating_add(1))
            }
        };
        lease.spec = Some(next);
        // `replace` sends the resourceVersion we read: a concurrent writer makes this a 409.
        match self.api.replace(&self.settings.name, &pp, &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up (on graceful shutdown) so a follower need not wait for expiry.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            return Ok(());
        };
        let ours = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(self.settings.identity.as_str());
        if !ours {
            return Ok(());
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
        }
        self.api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }

    /// Campaigns forever, publishing leadership on `tx`.
    ///
    /// Every attempt has a deadline: while leading, the time left until the renew deadline
    /// (counted from the start of the last successful renewal, since that is the `renewTime`
    /// others see); while following, one renew deadline. A leader that has not renewed by the
    /// renew deadline publishes `false` at that moment, even if a request is still hanging, so
    /// it stops reconciling before the Lease (`renewTime + leaseDuration`, and
    /// renew deadline < lease duration) can expire for the others.
    pub async fn run(self, tx: watch::Sender<bool>, metrics: Option<std::sync::Arc<Metrics>>) {
        let deadline = self.settings.renew_deadline;
        let mut last_renewal: Option<Instant> = None;
        loop {
            let leading = *tx.borrow();
            let started = Instant::now();
            let budget = match (leading, last_renewal) {
                (true, Some(t)) => deadline.saturating_sub(t.elapsed()),
                _ => deadline,
            };
            let outcome = tokio::time::timeout(budget, self.try_acquire_or_renew()).await;
            match outcome {
                Ok(Ok(true)) => {
                    last_renewal = Some(started);
                    if !leading {
                        info!(identity = %self.settings.identity, lease = %self.settings.name, "acquired leadership");
                        tx.send_replace(true);
                    }
                }
                Ok(Ok(false)) => {
                    if leading {
                        warn!(identity = %self.settings.identity, "lost leadership to another replica");
                        tx.send_replace(false);
                    }
                    last_renewal = None;
                }
                Ok(Err(e)) => warn!(error = %e, "leader election request failed"),
                Err(_) => warn!(
                    timeout_ms = budget.as_millis() as u64,
                    "leader election request timed out"
                ),
            }
            let overdue = last_renewal.is_none_or(|t| t.elapsed() >= deadline);
            if *tx.borrow() && overdue {
                warn!(identity = %self.settings.identity, "could not renew within the renew deadline; stepping down");
                tx.send_replace(false);
                last_renewal = None;
            }
            if let Some(m) = &metrics {
                let now = *tx.borrow();
                if now != leading {
                    m.leader_transitions
                        .get_or_create(&crate::metrics::TransitionLabels {
                            to: if now { "leading" } else { "following" }.to_owned(),
                        })
                        .inc();
                }
                m.leader.set(i64::from(now));
            }
            // A leader never sleeps past its renew deadline.
            let pause = match (*tx.borrow(), last_renewal) {
                (true, Some(t)) => self
                    .settings
                    .retry_period
                    .min(deadline.saturating_sub(t.elapsed())),
                _ => self.settings.retry_period,
            };
            tokio::time::sleep(pause).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(duration),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            ..Default::default()
        }
    }

    #[test]
    fn lease_ownership_table() {
        let now = Timestamp::from_second(1_000).unwrap();
        let rows = [
            ("missing_lease_is_free", None, LeaseView::Free),
            (
                "empty_holder_is_free",
                Some(spec(None, 999, 15)),
                LeaseView::Free,
            ),
            (
                "own_lease_is_ours",
                Some(spec(Some("me"), 999, 15)),
                LeaseView::Ours,
            ),
            (
                "fresh_other_holder_keeps_it",
                Some(spec(Some("other"), 990, 15)),
                LeaseView::HeldByOther("other".to_owned()),
            ),
            (
                "expired_other_holder_is_free",
                Some(spec(Some("other"), 980, 15)),
                LeaseView::Free,
            ),
        ];
        for (name, s, expected) in rows {
            assert_eq!(view(s.as_ref(), "me", now), expected, "{name}");
        }
    }
}
