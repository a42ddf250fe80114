//! The Kubernetes client this controller uses: the default kube stack plus a client-side
//! request rate limit (token window, requests per second) and a log of every request by verb
//! (`get`, `list`, `watch`, `create`, `patch`, ...), which feeds the `api_requests` metric and
//! lets tests prove an idle reconcile makes no request at all.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use http::{Method, Request};
use kube::client::ClientBuilder;
use kube::{Client, Config};
use tower::limit::RateLimitLayer;
use tower::{Layer, Service};

use crate::metrics::{Metrics, RequestLabels, VerbLabels};

/// The Kubernetes verb of a request: `watch` and `list` for collections, `get` for one
/// object, and `create`, `update`, `patch`, `delete` for writes.
pub fn verb(method: &Method, path: &str, query: Option<&str>) -> &'static str {
    match *method {
        Method::POST => return "create",
        Method::PUT => return "update",
        Method::PATCH => return "patch",
        Method::DELETE => return "delete",
        Method::GET | Method::HEAD => {}
        _ => return "other",
    }
    if query.is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1")) {
        return "watch";
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // `/api/v1/...` or `/apis/<group>/<version>/...`
    let rest = match segments.first() {
        Some(&"api") => segments.get(2..),
        Some(&"apis") => segments.get(3..),
        _ => None,
    }
    .unwrap_or_default();
    let rest = match rest {
        ["namespaces", _ns, more @ ..] if !more.is_empty() => more,
        other => other,
    };
    if rest.len() == 1 {
        "list"
    } else {
        "get"
    }
}

/// Shared record of the requests made: every request with its verb, and the mutating ones
/// (`"PATCH /apis/apps/v1/namespaces/x/statefulsets/y"`) on their own.
#[derive(Clone, Debug, Default)]
pub struct WriteLog {
    entries: Arc<Mutex<Vec<(SystemTime, String)>>>,
    requests: Arc<Mutex<Vec<String>>>,
    metrics: Option<Arc<Metrics>>,
    /// The `client` label of the metric.
    client: &'static str,
}

/// Keeps a test/debug log bounded: it is not an audit trail.
fn push_bounded<T>(log: &Mutex<Vec<T>>, item: T) {
    let mut entries = log.lock().unwrap_or_else(|p| p.into_inner());
    if entries.len() >= 10_000 {
        entries.drain(..5_000);
    }
    entries.push(item);
}

impl WriteLog {
    /// The reconcile client's log.
    pub fn new(metrics: Option<Arc<Metrics>>) -> Self {
        Self::for_client(metrics, "reconcile")
    }

    /// A log whose requests are counted under `client` (`lease` for leader election).
    pub fn for_client(metrics: Option<Arc<Metrics>>, client: &'static str) -> Self {
        WriteLog {
            entries: Arc::default(),
            requests: Arc::default(),
            metrics,
            client,
        }
    }

    fn record(&self, method: &Method, path: &str, query: Option<&str>) {
        let verb = verb(method, path, query);
        if let Some(m) = &self.metrics {
            m.api_requests
                .get_or_create(&RequestLabels {
                    client: self.client.to_owned(),
                    verb: verb.to_owned(),
                })
                .inc();
        }
        push_bounded(&self.requests, format!("{verb} {path}"));
        if !matches!(verb, "get" | "list" | "watch") {
            if let Some(m) = &self.metrics {
                m.api_writes
                    .get_or_create(&VerbLabels {
                        verb: method.as_str().to_owned(),
                    })
                    .inc();
            }
            push_bounded(
                &self.entries,
                (SystemTime::now(), format!("{method} {path}")),
            );
        }
    }

    /// Every request recorded so far, reads included (`"list /api/v1/pods"`).
    pub fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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
        self.log
            .record(req.method(), req.uri().path(), req.uri().query());
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

    #[test]
    fn verbs_are_told_from_method_path_and_query() {
        let rows = [
            (Method::GET, "/api/v1/namespaces/a/pods", None, "list"),
            (
                Method::GET,
                "/api/v1/namespaces/a/pods",
                Some("watch=true&resourceVersion=5"),
                "watch",
            ),
            (Method::GET, "/api/v1/namespaces/a/pods/p", None, "get"),
            (
                Method::GET,
                "/apis/apps/v1/namespaces/a/statefulsets",
                None,
                "list",
            ),
            (
                Method::GET,
                "/apis/apps/v1/namespaces/a/statefulsets/s",
                None,
                "get",
            ),
            (
                Method::GET,
                "/apis/apps/v1/statefulsets",
                Some("labelSelector=x"),
                "list",
            ),
            (
                Method::GET,
                "/apis/storage.k8s.io/v1/storageclasses/standard",
                None,
                "get",
            ),
            (Method::GET, "/api/v1/namespaces/a", None, "get"),
            (Method::GET, "/api/v1/namespaces", None, "list"),
            (
                Method::GET,
                "/apis/example.com/v1/namespaces/a/databases/d/status",
                None,
                "get",
            ),
            (Method::POST, "/api/v1/namespaces/a/secrets", None, "create"),
            (
                Method::PATCH,
                "/api/v1/namespaces/a/services/s",
                None,
                "patch",
            ),
            (
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/a/leases/l",
                None,
                "update",
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/a/services/s",
                None,
                "delete",
            ),
        ];
        for (m, path, query, want) in rows {
            assert_eq!(verb(&m, path, query), want, "{m} {path} {query:?}");
        }
    }

    #[tokio::test]
    async fn reads_are_logged_as_requests_but_not_as_writes() {
        let log = WriteLog::new(Some(Arc::new(Metrics::new())));
        let inner = service_fn(|_r: Request<()>| async { Ok::<_, Infallible>(()) });
        let mut svc = WriteLogLayer::new(log.clone()).layer(inner);
        for (m, p) in [
            (Method::GET, "/api/v1/namespaces/a/pods?watch=true"),
            (Method::GET, "/api/v1/namespaces/a/pods/p"),
            (Method::PATCH, "/apis/apps/v1/namespaces/a/statefulsets/db"),
        ] {
            svc.ready().await.unwrap().call(req(m, p)).await.unwrap();
        }
        assert_eq!(
            log.requests(),
            vec![
                "watch /api/v1/namespaces/a/pods",
                "get /api/v1/namespaces/a/pods/p",
                "patch /apis/apps/v1/namespaces/a/statefulsets/db",
            ]
        );
        assert_eq!(
            log.entries(),
            vec!["PATCH /apis/apps/v1/namespaces/a/statefulsets/db"]
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
