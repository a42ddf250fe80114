//! HTTP routing and input bounds for the admission server.
//!
//! Every request ends in a response with a meaningful status; nothing on this path unwraps or
//! panics (the `api` rules are additionally run under `catch_unwind`, so a bug there becomes a
//! 500 for one request rather than a dropped connection):
//!
//! | condition                                   | status |
//! |---------------------------------------------|--------|
//! | unknown path                                | 404    |
//! | wrong method (POST webhooks, GET probes)    | 405 + `Allow` |
//! | webhook body without `application/json`     | 415    |
//! | body over [`Limits::max_body_bytes`]        | 413 (checked on `Content-Length` and while reading) |
//! | body not received within the body timeout   | 408    |
//! | not an AdmissionReview / ConversionReview (or not UTF-8) | 400 + message |
//! | whole request over the request timeout      | 503    |
//! | more reviews (or review bytes) in flight than allowed | 429 + `Retry-After` |
//!
//! Work is bounded: at most [`Limits::max_in_flight`] reviews (and
//! [`Limits::max_in_flight_bytes`] of their bodies) are admitted at once; beyond that a review is
//! answered 429 at once, before its body is read. Decoding and rule evaluation run on tokio's
//! blocking pool, at most [`Limits::review_workers`] at a time, so the async workers that serve
//! `/healthz`, TLS and HTTP never run CPU-heavy work.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use api::catalog::Catalog;

use crate::conversion;
use crate::metrics::{Decision, Metrics, Operation};
use crate::namespaces::NamespaceCache;
use crate::review::{self, Webhook};

/// Bounds on every input and on shutdown.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest accepted request body (the API server's own limit is 3 MiB).
    pub max_body_bytes: usize,
    /// Time allowed for a TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Time allowed for HTTP/1 request headers (also closes idle keep-alive connections).
    pub header_read_timeout: Duration,
    /// Time allowed for receiving a request body once headers are in.
    pub body_read_timeout: Duration,
    /// Time allowed for a whole webhook request, body included.
    pub request_timeout: Duration,
    /// How long shutdown waits for in-flight requests before dropping connections.
    pub shutdown_grace: Duration,
    /// Reviews (validate, mutate, convert) admitted at once, reading, queued or evaluating;
    /// one more is answered 429 before its body is read.
    pub max_in_flight: usize,
    /// Body bytes (declared `Content-Length`, or `max_body_bytes` when not declared) of the
    /// reviews admitted at once; beyond it 429. Never below `max_body_bytes`.
    pub max_in_flight_bytes: usize,
    /// Reviews decoded and evaluated at once on the blocking pool (the CPU-heavy part).
    pub review_workers: usize,
    /// Open connections at once; a connection beyond it is accepted and closed at once.
    pub max_connections: usize,
    /// A connection with no request in flight for this long is closed (HTTP/1.1 keep-alive,
    /// HTTP/2 with GOAWAY; the API server reconnects on its next call).
    pub idle_timeout: Duration,
    /// Time from accepting a connection to its first request (TLS handshake included).
    pub first_request_timeout: Duration,
}

/// Default number of review workers: one per core, at least 2.
pub fn default_review_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 3 * 1024 * 1024,
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(9),
            shutdown_grace: Duration::from_secs(25),
            max_in_flight: 32,
            max_in_flight_bytes: 24 * 1024 * 1024,
            review_workers: default_review_workers(),
            max_connections: 256,
            idle_timeout: Duration::from_secs(120),
            first_request_timeout: Duration::from_secs(10),
        }
    }
}

/// Everything a request needs: the rules' catalog, namespace labels, metrics, bounds.
pub struct Admission {
    pub catalog: Catalog,
    pub namespaces: NamespaceCache,
    pub metrics: Metrics,
    pub limits: Limits,
    /// Set when shutdown begins: `/readyz` fails so endpoints drop this pod while it still serves.
    draining: std::sync::atomic::AtomicBool,
    /// Extra readiness condition (managed certificates: `certs::Readiness::check`).
    readiness_check: Option<ReadinessCheck>,
    /// One permit per review admitted ([`Limits::max_in_flight`]).
    in_flight: Arc<Semaphore>,
    /// One permit per KiB of review body admitted ([`Limits::max_in_flight_bytes`]).
    in_flight_kib: Arc<Semaphore>,
    in_flight_kib_total: usize,
    /// One permit per review being decoded/evaluated ([`Limits::review_workers`]).
    workers: Arc<Semaphore>,
}

/// A readiness condition besides the namespace cache; `Err` says why not ready.
pub type ReadinessCheck = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("namespaces", &self.namespaces)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Admission {
    pub fn new(catalog: Catalog, namespaces: NamespaceCache, limits: Limits) -> Self {
        let kib_total = kib(limits.max_in_flight_bytes.max(limits.max_body_bytes));
        Admission {
            catalog,
            namespaces,
            metrics: Metrics::new(),
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
            in_flight_kib: Arc::new(Semaphore::new(kib_total)),
            in_flight_kib_total: kib_total,
            workers: Arc::new(Semaphore::new(limits.review_workers.max(1))),
            limits,
            draining: std::sync::atomic::AtomicBool::new(false),
            readiness_check: None,
        }
    }

    /// Reviews admitted right now (reading, queued or evaluating).
    pub fn reviews_in_flight(&self) -> usize {
        self.limits.max_in_flight.max(1) - self.in_flight.available_permits()
    }

    /// Adds a readiness condition: `/readyz` also requires `check` to pass (with managed
    /// certificates, that the served certificate is the Secret's and the caBundle trusts it).
    pub fn with_readiness_check(
        mut self,
        check: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.readiness_check = Some(Box::new(check));
        self
    }

    /// Marks the server as shutting down: `/readyz` answers 503 from now on.
    pub fn begin_draining(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Ready to take traffic: not shutting down, namespace cache synced, and the extra
    /// condition (if any) passes.
    pub fn is_ready(&self) -> Result<(), String> {
        if self.draining.load(std::sync::atomic::Ordering::Acquire) {
            Err("not ready: shutting down".to_owned())
        } else if !self.namespaces.is_ready() {
            Err("not ready: namespace cache has not synced".to_owned())
        } else if let Some(check) = &self.readiness_check {
            check().map_err(|reason| format!("not ready: {reason}"))
        } else {
            Ok(())
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Webhook(Operation),
    Healthz,
    Readyz,
    Metrics,
}

fn route(path: &str) -> Option<Route> {
    Some(match path {
        "/validate" => Route::Webhook(Operation::Validate),
        "/mutate" => Route::Webhook(Operation::Mutate),
        "/convert" => Route::Webhook(Operation::Convert),
        "/healthz" => Route::Healthz,
        "/readyz" => Route::Readyz,
        "/metrics" => Route::Metrics,
        _ => return None,
    })
}

/// Response body type of the server.
pub type ResponseBody = Full<Bytes>;

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn text(status: StatusCode, message: impl std::fmt::Display) -> Response<ResponseBody> {
    respond(status, "text/plain; charset=utf-8", format!("{message}\n"))
}

fn method_not_allowed(allow: &'static str) -> Response<ResponseBody> {
    let mut response = text(
        StatusCode::METHOD_NOT_ALLOWED,
        format_args!("method not allowed; use {allow}"),
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

/// Handles one request. Never fails: every problem is an HTTP status.
pub async fn handle<B>(app: &Arc<Admission>, req: Request<B>) -> Response<ResponseBody>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let start = Instant::now();
    let path = req.uri().path();
    let Some(route) = route(path) else {
        return text(StatusCode::NOT_FOUND, format_args!("no such path: {path}"));
    };
    let probe_method = matches!(*req.method(), Method::GET | Method::HEAD);
    match route {
        Route::Healthz | Route::Readyz | Route::Metrics if !probe_method => {
            method_not_allowed("GET, HEAD")
        }
        Route::Healthz => text(StatusCode::OK, "ok"),
        Route::Readyz => match app.is_ready() {
            Ok(()) => text(StatusCode::OK, "ready"),
            Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, reason),
        },
        Route::Metrics => match app.metrics.encode() {
            Ok(body) => respond(
                StatusCode::OK,
                opkit::health::OPENMETRICS_CONTENT_TYPE,
                body,
            ),
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format_args!("metrics: {e}"),
            ),
        },
        Route::Webhook(operation) => {
            let (response, decision) = match tokio::time::timeout(
                app.limits.request_timeout,
                webhook(app, operation, req, start),
            )
            .await
            {
                Ok(done) => done,
                Err(_) => {
                    tracing::warn!(
                        webhook = operation.as_str(),
                        timeout_ms = app.limits.request_timeout.as_millis() as u64,
                        "request timed out"
                    );
                    (
                        text(StatusCode::SERVICE_UNAVAILABLE, "request timed out"),
                        Decision::Error,
                    )
                }
            };
            app.metrics.observe(operation, decision, start.elapsed());
            response
        }
    }
}

fn is_json(content_type: Option<&HeaderValue>) -> bool {
    content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

fn kib(bytes: usize) -> usize {
    bytes.div_ceil(1024).max(1)
}

/// 429 with `Retry-After`: the API server (and any client) may try again shortly.
fn overloaded(message: impl std::fmt::Display) -> Response<ResponseBody> {
    let mut response = text(StatusCode::TOO_MANY_REQUESTS, message);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The permits a review holds from admission until its evaluation ends (also past a request
/// timeout: the blocking work cannot be cancelled, so its share stays counted until it returns).
struct Admitted {
    _review: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
}

// The error is the finished HTTP answer, returned once per request.
#[allow(clippy::result_large_err)]
fn admit(app: &Admission, declared: Option<u64>) -> Result<Admitted, Response<ResponseBody>> {
    let Ok(review) = app.in_flight.clone().try_acquire_owned() else {
        return Err(overloaded(format_args!(
            "too many reviews in flight (limit {}); retry shortly",
            app.limits.max_in_flight
        )));
    };
    let bytes = declared.map_or(app.limits.max_body_bytes, |n| {
        usize::try_from(n).unwrap_or(usize::MAX)
    });
    let want = kib(bytes).min(app.in_flight_kib_total);
    let Some(bytes) = u32::try_from(want)
        .ok()
        .and_then(|n| app.in_flight_kib.clone().try_acquire_many_owned(n).ok())
    else {
        return Err(overloaded(format_args!(
            "too many review bytes in flight (limit {} bytes); retry shortly",
            app.in_flight_kib_total * 1024
        )));
    };
    Ok(Admitted {
        _review: review,
        _bytes: bytes,
    })
}

/// Reads the body into one buffer (sized from `Content-Length` when declared), at most `max`.
async fn read_body<B>(
    body: B,
    declared: Option<u64>,
    max: usize,
) -> Result<Vec<u8>, Response<ResponseBody>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let capacity = declared.map_or(0, |n| usize::try_from(n).unwrap_or(max).min(max));
    let mut buf = Vec::with_capacity(capacity);
    let mut body = std::pin::pin!(body);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            let e: Box<dyn std::error::Error + Send + Sync> = e.into();
            text(
                StatusCode::BAD_REQUEST,
                format_args!("failed to read request body: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Err(too_large(max));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
}

async fn webhook<B>(
    app: &Arc<Admission>,
    operation: Operation,
    req: Request<B>,
    start: Instant,
) -> (Response<ResponseBody>, Decision)
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let error = |response| (response, Decision::Error);
    if req.method() != Method::POST {
        return error(method_not_allowed("POST"));
    }
    if !is_json(req.headers().get(CONTENT_TYPE)) {
        return error(text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content type must be application/json",
        ));
    }
    let max = app.limits.max_body_bytes;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return error(too_large(max));
    }
    let admitted = match admit(app, declared) {
        Ok(admitted) => admitted,
        Err(response) => {
            tracing::warn!(
                webhook = operation.as_str(),
                in_flight = app.reviews_in_flight(),
                "review refused: server at its in-flight limit"
            );
            return error(response);
        }
    };
    let body = match tokio::time::timeout(
        app.limits.body_read_timeout,
        read_body(req.into_body(), declared, max),
    )
    .await
    {
        Ok(Ok(body)) => body,
        Ok(Err(response)) => return error(response),
        Err(_) => {
            return error(text(
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time",
            ))
        }
    };
    // Queue for a worker; the queue is bounded by the in-flight limit above.
    let Ok(worker) = app.workers.clone().acquire_owned().await else {
        return error(text(StatusCode::SERVICE_UNAVAILABLE, "server is stopping"));
    };
    let task_app = app.clone();
    let evaluated = tokio::task::spawn_blocking(move || {
        let _held = (worker, admitted);
        answer(&task_app, operation, &body, start)
    })
    .await;
    match evaluated {
        Ok(done) => done,
        Err(_) => internal_error(operation.as_str()),
    }
}

/// Decodes and decides one webhook body: the synchronous, CPU-bound part of `/validate`,
/// `/mutate` and `/convert`, run on the blocking pool by the server and called directly by
/// the fuzz targets. Panics in the rules become a 500 for this request.
pub fn answer(
    app: &Admission,
    operation: Operation,
    body: &[u8],
    start: Instant,
) -> (Response<ResponseBody>, Decision) {
    // JSON text is UTF-8 (RFC 8259 §8.1). Checked once up front: the decoders skip the fields
    // they do not need without looking inside their strings.
    if let Err(e) = std::str::from_utf8(body) {
        let message = format!(
            "request body is not valid JSON: not UTF-8 at byte {}",
            e.valid_up_to()
        );
        return (text(StatusCode::BAD_REQUEST, message), Decision::Error);
    }
    match operation {
        Operation::Validate => admission(app, Webhook::Validate, body, start),
        Operation::Mutate => admission(app, Webhook::Mutate, body, start),
        Operation::Convert => convert(body, start),
    }
}

fn too_large(max: usize) -> Response<ResponseBody> {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format_args!("request body exceeds {max} bytes"),
    )
}

fn internal_error(what: &str) -> (Response<ResponseBody>, Decision) {
    tracing::error!(webhook = what, "rule evaluation panicked; answering 500");
    (
        text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error while evaluating the review",
        ),
        Decision::Error,
    )
}

fn admission(
    app: &Admission,
    webhook: Webhook,
    body: &[u8],
    start: Instant,
) -> (Response<ResponseBody>, Decision) {
    let name = match webhook {
        Webhook::Validate => "validate",
        Webhook::Mutate => "mutate",
    };
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        review::review(webhook, body, &app.catalog, &app.namespaces)
    }));
    match outcome {
        Ok(Ok(decided)) => {
            tracing::info!(
                webhook = name,
                uid = %decided.uid,
                namespace = %decided.namespace,
                name = %decided.name,
                operation = decided.operation,
                allowed = decided.allowed,
                patch_ops = decided.patch_ops,
                warnings = decided.warnings,
                latency_us = start.elapsed().as_micros() as u64,
                "admission decision"
            );
            let decision = if decided.allowed {
                Decision::Allowed
            } else {
                Decision::Denied
            };
            (
                respond(StatusCode::OK, "application/json", decided.body),
                decision,
            )
        }
        Ok(Err(bad)) => {
            tracing::warn!(webhook = name, error = %bad, latency_us = start.elapsed().as_micros() as u64, "malformed review");
            (text(StatusCode::BAD_REQUEST, &bad), Decision::Error)
        }
        Err(_) => internal_error(name),
    }
}

fn convert(body: &[u8], start: Instant) -> (Response<ResponseBody>, Decision) {
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| conversion::convert_review(body)));
    match outcome {
        Ok(Ok(converted)) => {
            tracing::info!(
                webhook = "convert",
                uid = %converted.uid,
                desired_api_version = %converted.desired_api_version,
                objects = converted.objects,
                allowed = converted.success,
                failure = %converted.message,
                latency_us = start.elapsed().as_micros() as u64,
                "conversion decision"
            );
            let decision = if converted.success {
                Decision::Allowed
            } else {
                Decision::Denied
            };
            (
                respond(StatusCode::OK, "application/json", converted.body),
                decision,
            )
        }
        Ok(Err(bad)) => {
            tracing::warn!(webhook = "convert", error = %bad, latency_us = start.elapsed().as_micros() as u64, "malformed conversion review");
            (text(StatusCode::BAD_REQUEST, &bad), Decision::Error)
        }
        Err(_) => internal_error("convert"),
    }
}
