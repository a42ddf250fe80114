//! Small HTTP server for `/healthz` (liveness), `/readyz` (readiness) and `/metrics`
//! (Prometheus text format). HTTP/1.1 and HTTP/2 (h2c), bounded per-connection time.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tracing::{debug, info};

use crate::metrics::Metrics;

/// What the endpoints report.
#[derive(Debug)]
pub struct Health {
    /// Set once the process has a working client and has started campaigning/reconciling.
    pub ready: AtomicBool,
    pub metrics: Arc<Metrics>,
}

impl Health {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Health {
            ready: AtomicBool::new(false),
            metrics,
        }
    }
}

fn text(status: StatusCode, body: String, content_type: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

/// Routes one request.
pub fn route(health: &Health, method: &Method, path: &str) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
            "text/plain",
        );
    }
    match path {
        "/healthz" | "/livez" => text(StatusCode::OK, "ok\n".into(), "text/plain"),
        "/readyz" => {
            if health.ready.load(Ordering::Relaxed) {
                text(StatusCode::OK, "ok\n".into(), "text/plain")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "starting\n".into(),
                    "text/plain",
                )
            }
        }
        "/metrics" => text(
            StatusCode::OK,
            health.metrics.encode(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into(), "text/plain"),
    }
}

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, health: Arc<Health>) -> std::io::Result<()> {
    info!(addr = ?listener.local_addr().ok(), "health and metrics server listening");
    loop {
        let (stream, peer) = listener.accept().await?;
        let health = health.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let resp = route(&health, req.method(), req.uri().path());
                async move { Ok::<_, Infallible>(resp) }
            });
            let builder = Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            match tokio::time::timeout(Duration::from_secs(30), conn).await {
                Ok(Err(e)) => debug!(%peer, error = %e, "health connection error"),
                Err(_) => debug!(%peer, "health connection closed after 30s"),
                Ok(Ok(())) => {}
            }
        });
    }
}

/// Binds `addr` and serves in the background.
pub async fn spawn(addr: SocketAddr, health: Arc<Health>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(serve(listener, health));
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readyz_follows_readiness_and_metrics_are_exposed() {
        let h = Health::new(Arc::new(Metrics::new()));
        assert_eq!(route(&h, &Method::GET, "/healthz").status(), StatusCode::OK);
        assert_eq!(
            route(&h, &Method::GET, "/readyz").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        h.ready.store(true, Ordering::Relaxed);
        assert_eq!(route(&h, &Method::GET, "/readyz").status(), StatusCode::OK);
        assert_eq!(route(&h, &Method::GET, "/metrics").status(), StatusCode::OK);
        assert_eq!(
            route(&h, &Method::GET, "/nope").status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            route(&h, &Method::POST, "/healthz").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
