//! The small plain-HTTP server for `/healthz` and `/livez` (liveness), `/readyz` (readiness)
//! and `/metrics` (OpenMetrics text). HTTP/1.1 and HTTP/2 (h2c), each connection bounded to
//! 30 seconds. Readiness is one flag the binary sets once it can do its work.
//!
//! The admission server answers the same probe paths on its TLS webhook port instead (the
//! Deployment probes it there, and its readiness has reasons); it shares
//! [`OPENMETRICS_CONTENT_TYPE`] with this server.

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

/// Content type of a Prometheus/OpenMetrics text exposition.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long one connection may stay open.
const CONNECTION_LIMIT: Duration = Duration::from_secs(30);

/// Encodes the process's metrics registry.
type EncodeMetrics = Box<dyn Fn() -> String + Send + Sync>;

/// What the endpoints report.
pub struct Health {
    ready: AtomicBool,
    metrics: EncodeMetrics,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("ready", &self.is_ready())
            .finish_non_exhaustive()
    }
}

impl Health {
    /// Not ready until [`Health::set_ready`]; `/metrics` answers what `metrics` encodes.
    pub fn new(metrics: impl Fn() -> String + Send + Sync + 'static) -> Self {
        Health {
            ready: AtomicBool::new(false),
            metrics: Box::new(metrics),
        }
    }

    /// Whether `/readyz` answers 200.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

fn text(status: StatusCode, body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
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
            if health.is_ready() {
                text(StatusCode::OK, "ok\n".into(), "text/plain")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "starting\n".into(),
                    "text/plain",
                )
            }
        }
        "/metrics" => text(StatusCode::OK, (health.metrics)(), OPENMETRICS_CONTENT_TYPE),
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
            match tokio::time::timeout(CONNECTION_LIMIT, conn).await {
                Ok(Err(e)) => debug!(%peer, error = %e, "health connection error"),
                Err(_) => debug!(%peer, "health connection closed after 30s"),
                Ok(Ok(())) => {}
            }
        });
    }
}

/// Binds `addr` and serves in the background; returns the bound address.
pub async fn spawn(addr: SocketAddr, health: Arc<Health>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(serve(listener, health));
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content_type(resp: &Response<Full<Bytes>>) -> &str {
        resp.headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    #[test]
    fn readyz_follows_readiness_and_metrics_are_exposed() {
        let h = Health::new(|| "# EOF\n".to_owned());
        let cases = [
            (Method::GET, "/healthz", StatusCode::OK, "text/plain"),
            (Method::HEAD, "/livez", StatusCode::OK, "text/plain"),
            (
                Method::GET,
                "/readyz",
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
            ),
            (
                Method::GET,
                "/metrics",
                StatusCode::OK,
                OPENMETRICS_CONTENT_TYPE,
            ),
            (Method::GET, "/nope", StatusCode::NOT_FOUND, "text/plain"),
            (
                Method::POST,
                "/healthz",
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
            ),
        ];
        for (method, path, status, ct) in cases {
            let resp = route(&h, &method, path);
            assert_eq!(resp.status(), status, "{method} {path}");
            assert_eq!(content_type(&resp), ct, "{method} {path}");
        }
        h.set_ready(true);
        assert_eq!(route(&h, &Method::GET, "/readyz").status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn serves_over_tcp() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let health = Arc::new(Health::new(|| "# EOF\n".to_owned()));
        health.set_ready(true);
        let addr = spawn(([127, 0, 0, 1], 0).into(), health).await.unwrap();
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("ok\n"), "{answer}");
    }
}
