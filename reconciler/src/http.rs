//! The reconciler's `/healthz`, `/readyz` and `/metrics` endpoints: the shared
//! [`opkit::health`] server over the reconciler's [`Metrics`]. `/readyz` turns 200 once the
//! process has a working client and starts campaigning or reconciling.

use std::net::SocketAddr;
use std::sync::Arc;

pub use opkit::health::Health;

use crate::metrics::Metrics;

/// Health state whose `/metrics` encodes `metrics`; not ready yet.
pub fn health(metrics: Arc<Metrics>) -> Arc<Health> {
    Arc::new(Health::new(move || metrics.encode()))
}

/// Binds `addr` and serves in the background; returns the bound address.
pub async fn spawn(addr: SocketAddr, health: Arc<Health>) -> std::io::Result<SocketAddr> {
    opkit::health::spawn(addr, health).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Method, StatusCode};
    use http_body_util::BodyExt;
    use opkit::health::route;

    #[tokio::test]
    async fn metrics_are_the_reconcilers_and_readyz_waits() {
        let metrics = Arc::new(Metrics::new());
        metrics.leader.set(1);
        let h = health(metrics);
        assert_eq!(
            route(&h, &Method::GET, "/readyz").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let resp = route(&h, &Method::GET, "/metrics");
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("leader"), "{body}");
    }
}
