//! The Kubernetes client this controller uses: the default kube stack plus a client-side
//! request rate limit (token window, requests per second) and a log of every non-GET request
//! (mutations), which feeds a metric and lets tests prove an idle reconcile writes nothing.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use http::{Method, Request};
use kube::client::ClientBuilder;
use kube::{Client, Config};
use tower::limit::RateLimitLayer;
use tower::{Layer, Service};

use crate::metrics::{Metrics, VerbLabels};

/// Shared record of mutating requests (`"PATCH /apis/apps/v1/namespaces/x/statefulsets/y"`).
#[derive(Clone, Debug, Default)]
pub struct WriteLog {
    entries: Arc<Mutex<Vec<(SystemTime, String)>>>,
    metrics: Option<Arc<Metrics>>,
}

impl WriteLog {
    pub fn new(metrics: Option<Arc<Metrics>>) -> Self {
        WriteLog {
            entries: Arc::default(),
            metrics,
        }
    }

    fn record(&self, method: &Method, path: &str) {
        if let Some(m) = &self.metrics {
            m.api_writes
                .get_or_create(&VerbLabels {
                    verb: method.as_str().to_owned(),
                })
                .inc();
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: the log exists for tests and debugging, not as an audit trail.
        if entries.len() >= 10_000 {
            entries.drain(..5_000);
        }
        entries.push((SystemTime::now(), format!("{method} {path}")));
    }

    /// All recorded writes so far.
    pub fn entries(&self) -> Vec<String> {
        self.timed_entries().into_iter().map(|(_, e)| e).collect()
    }

    /// All recorded writes so far with the time each request was sent.
    pub fn timed_entries(&self) -> Vec<(SystemTime, String)> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Number of writes recorded so far.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Tower layer recording non-GET requests into a [`WriteLog`].
#[derive(Clone, Debug)]
pub struct WriteLogLayer {
    log: WriteLog,
}

impl WriteLogLayer {
    pub fn new(log: WriteLog) -> Self {
        WriteLogLayer { log }
    }
}

impl<S> Layer<S> for WriteLogLayer {
    type Service = WriteLogService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        WriteLogService {
            inner,
            log: self.log.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct WriteLogService<S> {
    inner: S,
    log: WriteLog,
}

impl<S, B> Service<Request<B>> for WriteLogService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let m = req.method();
        if m != Method::GET && m != Method::HEAD && m != Method::OPTIONS {
            self.log.record(m, req.uri().path());
        }
        self.inner.call(req)
    }
}

/// Builds the controller's client: kube's default stack, the write log, and at most `qps`
/// requests per second (watches count once, when they are opened).
pub fn build_client(config: Config, qps: u32, log: WriteLog) -> Result<Client, kube::Error> {
    let qps = u64::from(qps.max(1));
    let client = ClientBuilder::try_from(config)?
        .with_layer(&WriteLogLayer::new(log))
        .with_layer(&RateLimitLayer::new(qps, Duration::from_secs(1)))
        .build();
    Ok(client)
}

/// Builds the leader-election client: kube's default stack and the write log, but not the
/// reconcile traffic's rate limiter, so a busy controller can never delay its own renewals
/// (renewals are one GET and one PUT per retry period).
pub fn build_lease_client(config: Config, log: WriteLog) -> Result<Client, kube::Error> {
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&WriteLogLayer::new(log))
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::time::Instant;
    use tower::{service_fn, ServiceExt};

    fn req(method: Method, path: &str) -> Request<()> {
        Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap()
    }

    #[tokio::test]
    async fn only_mutating_requests_are_logged() {
        let log = WriteLog::new(Some(Arc::new(Metrics::new())));
        let inner = service_fn(|_r: Request<()>| async { Ok::<_, Infallible>(()) });
        let mut svc = WriteLogLayer::new(log.clone()).layer(inner);
        for (m, p) in [
            (Method::GET, "/api/v1/namespaces/a/pods"),
            (Method::PATCH, "/apis/apps/v1/namespaces/a/statefulsets/db"),
            (Method::POST, "/api/v1/namespaces/a/secrets"),
            (Method::DELETE, "/api/v1/namespaces/a/services/db"),
            (
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/a/leases/l",
            ),
        ] {
            svc.ready().await.unwrap().call(req(m, p)).await.unwrap();
        }
        assert_eq!(
            log.entries(),
            vec![
                "PATCH /apis/apps/v1/namespaces/a/statefulsets/db",
                "POST /api/v1/namespaces/a/secrets",
                "DELETE /api/v1/namespaces/a/services/db",
                "PUT /apis/coordination.k8s.io/v1/namespaces/a/leases/l",
            ]
        );
    }

    #[tokio::test]
    async fn requests_beyond_the_rate_wait_for_the_next_window() {
        let inner = service_fn(|_r: Request<()>| async { Ok::<_, Infallible>(()) });
        let mut svc = RateLimitLayer::new(2, Duration::from_millis(300)).layer(inner);
        let started = Instant::now();
        for _ in 0..3 {
            svc.ready()
                .await
                .unwrap()
                .call(req(Method::GET, "/"))
                .await
                .unwrap();
        }
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "third request must wait for the next window, took {:?}",
            started.elapsed()
        );
    }
}
